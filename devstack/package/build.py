"""`make package STAGE=…`: the deployable CloudFormation/SAM template and zip in `build/<stage>/`.

One build: snapshot, infra merge, `chalice package` (under the project lock, with the dependency
cache), functions merge, the invariants, bytecode into the zip, cfn-lint, `manifest.json`; and the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devstack.package.bytecode import compile_bytecode
from devstack.package.checks import check_template, run_cfn_lint
from devstack.package.dependencies import (
    forget_dependencies,
    prune_dependency_cache,
    remember_dependencies,
    seed_chalice_cache,
)
from devstack.package.inputs import BUILD_DIR, DEFAULT_REGION, PackagingError, deep_merge, load_json, stage_config
from devstack.package.snapshot import fingerprint, snapshot_project
from devstack.package.template import build_functions_merge, build_infra_merge, function_kind, functions_of


@dataclass
class PackageResult:
    stage: str
    out_dir: str
    template: str
    fingerprint: str
    template_only: bool
    zip_bytes: int = 0
    unzipped_bytes: int = 0
    files: int = 0
    chalice_seconds: float = 0.0
    total_seconds: float = 0.0
    reused_dependency_cache: bool = False
    functions: dict[str, str] = field(default_factory=dict)
    lint: str = "not run"
    # Bytecode compiled at package time (compile_bytecode): files, growth of the zip, seconds.
    pyc_files: int = 0
    pyc_zip_bytes: int = 0
    pyc_seconds: float = 0.0


# -- running chalice package ----------------------------------------------------------------------

@contextlib.contextmanager
def project_lock() -> Iterator[None]:
    """Serialises packaging in this tree: chalice writes its dependency zip in place, so a second run
    could otherwise 'reuse' a half-written one."""
    BUILD_DIR.mkdir(exist_ok=True)
    with (BUILD_DIR / ".package.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def chalice_command() -> list[str]:
    script = Path(sys.executable).with_name("chalice")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from chalice.cli import main; sys.exit(main())"]


def run_chalice_package(project: Path, stage: str, merge_file: Path, out: Path) -> tuple[float, str]:
    env = dict(os.environ)
    if not (env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")):
        env["AWS_DEFAULT_REGION"] = DEFAULT_REGION
    env.pop("AWS_ENDPOINT_URL", None)
    cmd = [*chalice_command(), "--project-dir", str(project), "package", "--stage", stage,
           "--merge-template", str(merge_file), str(out)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise PackagingError(f"chalice package failed (exit {proc.returncode}):\n{output}")
    return seconds, output


def package(stage: str, out_dir: Path | None = None, *, source: Path | None = None, lint: bool = True,
            check: bool = True, template_only: bool = False,
            refresh_dependencies: bool = False) -> PackageResult:
    """Build `out_dir` (default `build/<stage>/`): sam.json, deployment.zip, the two merge files and
    manifest.json. `source` is a `snapshot_project` to build from (one is taken when omitted; pass
    the same one to build several stages from one state). `check=False` leaves the invariants to the
    caller (the tests assert each one). `template_only` packages the app without its dependencies
    and keeps no zip (template checks when the package index is unreachable). The wheels are
    downloaded once per requirements.txt; `refresh_dependencies` downloads them again."""
    started = time.monotonic()
    out = (out_dir or BUILD_DIR / stage).resolve()
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"package-{stage}-", dir=BUILD_DIR) as tmp_name:
        tmp = Path(tmp_name)
        project = source or snapshot_project(tmp / "src", with_dependencies=not template_only)
        stage_config(stage, project)  # fail fast on an unknown stage
        digest = fingerprint(project)
        staging = tmp / "out"
        staging.mkdir()
        infra_file = staging / "infra-merge.json"
        infra_file.write_text(json.dumps(build_infra_merge(stage, project), indent=2) + "\n")
        with project_lock():
            if refresh_dependencies and not template_only:
                forget_dependencies(project, stage)
            seeded = not template_only and seed_chalice_cache(project, stage)
            chalice_seconds, chalice_output = run_chalice_package(project, stage, infra_file, staging)
            if not template_only:
                remember_dependencies(project, stage)
                prune_dependency_cache()

        sam_file = staging / "sam.json"
        generated = load_json(sam_file)
        functions_merge = build_functions_merge(generated, stage, project)
        (staging / "functions-merge.json").write_text(json.dumps(functions_merge, indent=2) + "\n")
        template = deep_merge(functions_merge, generated)
        sam_file.write_text(json.dumps(template, indent=2) + "\n")

        problems = check_template(template) if check else []
        if problems:
            raise PackagingError("the packaged template breaks deploy invariants:\n  - "
                                 + "\n  - ".join(problems))

        result = PackageResult(
            stage=stage, out_dir=str(out), template=str(out / "sam.json"), fingerprint=digest,
            template_only=template_only, chalice_seconds=round(chalice_seconds, 1),
            reused_dependency_cache=seeded or "Reusing existing deployment package" in chalice_output,
            functions={n: function_kind(n, f) for n, f in functions_of(template).items()})
        zip_path = staging / "deployment.zip"
        if template_only:
            zip_path.unlink(missing_ok=True)  # app-only code would fail at import: never deploy it
        else:
            compile_started = time.monotonic()
            result.pyc_files, result.pyc_zip_bytes = compile_bytecode(
                zip_path, stage_config(stage, project).lambda_python_version)
            result.pyc_seconds = round(time.monotonic() - compile_started, 1)
            with zipfile.ZipFile(zip_path) as archive:
                infos = archive.infolist()
            result.zip_bytes = zip_path.stat().st_size
            result.unzipped_bytes = sum(i.file_size for i in infos)
            result.files = len(infos)

        with project_lock():
            if out.exists():
                shutil.rmtree(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), str(out))

    if lint:
        code, output = run_cfn_lint(out / "sam.json")
        result.lint = f"exit {code}" + (f"\n{output}" if output else "")
        if code & 3:
            write_manifest(out, result, started)
            raise PackagingError(f"cfn-lint found errors in {out / 'sam.json'}:\n{output}")
    write_manifest(out, result, started)
    return result


def write_manifest(out: Path, result: PackageResult, started: float) -> None:
    result.total_seconds = round(time.monotonic() - started, 1)
    (out / "manifest.json").write_text(json.dumps(asdict(result), indent=2) + "\n")


def fresh_build(stage: str, out_dir: Path | None = None) -> Path | None:
    """`out_dir/sam.json` if it was built from the current inputs, else None."""
    out = out_dir or BUILD_DIR / stage
    try:
        manifest = load_json(out / "manifest.json")
    except (OSError, ValueError):
        return None
    if manifest.get("stage") != stage or manifest.get("fingerprint") != fingerprint():
        return None
    sam = out / "sam.json"
    return sam if sam.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.package", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json (dev, prod)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default build/<stage>)")
    parser.add_argument("--no-lint", action="store_true", help="skip cfn-lint")
    parser.add_argument("--refresh-dependencies", action="store_true",
                        help="download the Lambda's wheels again instead of reusing the cached ones")
    parser.add_argument("--template-only", action="store_true",
                        help="no dependencies, no zip: the template alone, without the package index")
    args = parser.parse_args(argv)
    try:
        result = package(args.stage, args.out, lint=not args.no_lint, template_only=args.template_only,
                         refresh_dependencies=args.refresh_dependencies)
    except PackagingError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    rel = os.path.relpath(result.out_dir, Path.cwd())
    print(f"{rel}/sam.json: {len(result.functions)} functions "
          f"({', '.join(f'{n}={k}' for n, k in sorted(result.functions.items()))})")
    if result.template_only:
        print(f"{rel}: template only (no deployment.zip)")
    else:
        print(f"{rel}/deployment.zip: {result.zip_bytes / 1e6:.1f} MB zipped, "
              f"{result.unzipped_bytes / 1e6:.1f} MB unzipped, {result.files} files, of which "
              f"{result.pyc_files} unchecked-hash .pyc (+{result.pyc_zip_bytes / 1e6:.1f} MB, "
              f"{result.pyc_seconds:.1f}s)")
    cache = ("none: template only" if result.template_only else
             "reused" if result.reused_dependency_cache else "downloaded from the package index")
    print(f"chalice package: {result.chalice_seconds:.1f}s (dependencies {cache}); "
          f"total {result.total_seconds:.1f}s; cfn-lint: {result.lint}")
    return 0
