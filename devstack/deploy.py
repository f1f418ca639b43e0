"""`make deploy STAGE=… ARTIFACT_BUCKET=… PARAMS="…"`: the README's deploy command sequence, run.

The packaged template (~140 KB) is over CloudFormation's 51,200-byte inline limit, so both the code
and the template go through an S3 artifact bucket in the stack's region (`--s3-bucket` on both
commands). `commands()` is the one source of the sequence: `make deploy` runs it, `--dry-run`
prints it, and `tests/unit/test_readme.py` checks the README shows the same commands.
Needs the AWS CLI (v1 or v2) with credentials allowed to create the stack's resources.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys

from devstack import package as pkg

CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND")


def commands(stage: str, bucket: str, parameters: list[str], stack: str | None = None,
             prefix: str = "eval-runner") -> list[list[str]]:
    stack = stack or f"eval-runner-{stage}"
    packaged = f"build/{stage}/packaged.json"
    return [
        ["make", "package", f"STAGE={stage}"],
        ["aws", "cloudformation", "package", "--template-file", f"build/{stage}/sam.json", "--use-json",
         "--s3-bucket", bucket, "--s3-prefix", f"{prefix}/{stage}", "--output-template-file", packaged],
        ["aws", "cloudformation", "deploy", "--template-file", packaged, "--stack-name", stack,
         "--s3-bucket", bucket, "--s3-prefix", f"{prefix}/{stage}", "--capabilities", *CAPABILITIES,
         "--no-fail-on-empty-changeset", *(["--parameter-overrides", *parameters] if parameters else [])],
        ["aws", "cloudformation", "describe-stacks", "--stack-name", stack, "--query", "Stacks[0].Outputs",
         "--output", "table"],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--artifact-bucket", default="", help="an S3 bucket in the stack's region")
    parser.add_argument("--stack-name")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("parameters", nargs="*", metavar="Key=Value",
                        help="stack parameters, e.g. JwksUrl=… JwtIssuer=… JwtAudience=…")
    args = parser.parse_args(argv)
    if not args.artifact_bucket:
        print("deploy: name an S3 bucket for the artifacts: make deploy STAGE=prod ARTIFACT_BUCKET=my-bucket "
              "PARAMS=\"JwksUrl=… JwtIssuer=… JwtAudience=…\" (create one with `aws s3 mb s3://my-bucket`)",
              file=sys.stderr)
        return 2
    bad = [p for p in args.parameters if "=" not in p]
    if bad:
        print(f"deploy: parameters are Key=Value, got {bad}", file=sys.stderr)
        return 2
    sequence = commands(args.stage, args.artifact_bucket, args.parameters, args.stack_name)
    if args.dry_run:
        for command in sequence:
            print(shlex.join(command))
        return 0
    if shutil.which("aws") is None:
        print("deploy: the AWS CLI (`aws`) is not on PATH; install it, or run the commands from "
              "`python -m devstack.deploy --dry-run …` another way", file=sys.stderr)
        return 2
    pkg.stage_config(args.stage)  # an unknown stage fails before anything is uploaded
    for command in sequence:
        print(f"$ {shlex.join(command)}", flush=True)
        if command[0] == "make":
            code = pkg.main(["--stage", args.stage])
        else:
            code = subprocess.run(command, check=False).returncode
        if code != 0:
            print(f"deploy: `{shlex.join(command[:3])}` failed (exit {code})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
