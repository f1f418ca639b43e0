"""Lambda package size: the zip `make package STAGE=prod` builds, zipped and unzipped, and what fills it.

Reuses `build/prod/` when its manifest fingerprint matches the current sources (the same freshness
rule `make package` and the template tests use); otherwise runs `python -m devstack.package --stage
prod` (what `make package STAGE=prod` runs). Prints one markdown section on stdout.

Usage: .venv/bin/python bench/package/bench_package.py [--stage prod] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import package_build, table

MB = 1_000_000
# Lambda's limits for a direct zip upload and for the unzipped function (layers included).
ZIP_LIMIT = 50 * 2**20
UNZIPPED_LIMIT = 250 * 2**20
TOP = 12


def _top_level(name: str) -> str:
    """The distribution-ish unit a zip member belongs to (`pydantic_core/...` → `pydantic_core`)."""
    head = name.split("/", 1)[0]
    if head.endswith((".dist-info", ".data")):
        return "(package metadata: *.dist-info)"
    if "/" not in name:
        return head  # app.py and other top-level files
    return head + "/"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--rebuild", action="store_true", help="package again even if build/<stage> is fresh")
    args = parser.parse_args()

    out, how = package_build(args.stage, rebuild=args.rebuild)
    zip_path = out / "deployment.zip"
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
    zipped = zip_path.stat().st_size
    unzipped = sum(i.file_size for i in infos)
    by_unit_raw: Counter[str] = Counter()
    by_unit_zip: Counter[str] = Counter()
    for info in infos:
        unit = _top_level(info.filename)
        by_unit_raw[unit] += info.file_size
        by_unit_zip[unit] += info.compress_size
    manifest = json.loads((out / "manifest.json").read_text())
    functions = manifest.get("functions", {})

    print(f"## Lambda package (stage `{args.stage}`)\n")
    print(f"`build/{args.stage}/deployment.zip`: {how}. One zip is shared by all "
          f"{len(functions)} functions ({', '.join(sorted(functions))}).\n")
    print(table(("", "size", "Lambda limit", "share of limit"), [
        ("zipped", f"{zipped / MB:.1f} MB", "50 MiB (direct upload)", f"{zipped / ZIP_LIMIT:.0%}"),
        ("unzipped", f"{unzipped / MB:.1f} MB", "250 MiB (incl. layers)", f"{unzipped / UNZIPPED_LIMIT:.0%}"),
        ("files", len(infos), "", "")], "lrrr"))
    print(f"\nLargest parts (top {TOP} of {len(by_unit_raw)}, unzipped):\n")
    print(table(("part", "unzipped MB", "zipped MB", "share of unzipped"),
                [(f"`{unit}`", f"{size / MB:.1f}", f"{by_unit_zip[unit] / MB:.1f}", f"{size / unzipped:.0%}")
                 for unit, size in by_unit_raw.most_common(TOP)], "lrrr"))
    app_units = [u for u in by_unit_raw if u in ("app.py", "chalicelib/")]
    app_bytes = sum(by_unit_raw[u] for u in app_units)
    has_boto = any(i.filename.startswith(("boto3/", "botocore/")) for i in infos)
    runtime = "" if has_boto else "; boto3/botocore are not in it (the Lambda runtime provides them)"
    print(f"\nThe app itself (`app.py`, `chalicelib/`) is {app_bytes / MB:.2f} MB; the rest is the wheels of "
          f"`requirements.txt`{runtime}. The vendor SDKs ride along for the worker and the connection test "
          "but are imported only there (see the cold-start table); `cryptography` is PyJWT's RS256 for "
          "JWKS tokens. Both figures are far from Lambda's limits, so no layer split is needed; a smaller "
          "zip would mainly shorten the code download of a cold start.\n")


if __name__ == "__main__":
    main()
