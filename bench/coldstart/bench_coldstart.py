"""Cold-start import cost: median of N fresh interpreters importing the API handler module, the
worker module, and the bare floor (`import chalice, boto3, pydantic`). Prints a markdown section."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "floor: import chalice, boto3, pydantic": "import chalice, boto3, pydantic",
    "API handler: import app": "import app",
    "worker: import app + worker path (SDKs, judge runner)":
        "import app; import chalicelib.worker.jobs; import chalicelib.adapters.judge_models as j; "
        "import anthropic, openai",
}


def _time_import(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - start


def _sdk_loaded_by_app() -> list[str]:
    out = subprocess.run([sys.executable, "-c", "import sys, app; print(','.join(m for m in ('anthropic', 'openai') "
                          "if m in sys.modules))"], cwd=ROOT, check=True, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return [m for m in out.stdout.strip().split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    baseline = statistics.median(_time_import("pass") for _ in range(args.runs))
    rows = []
    medians: dict[str, float] = {}
    for label, code in CASES.items():
        _time_import(code)  # warm the .pyc cache; Lambda ships compiled bytecode too
        samples = [_time_import(code) - baseline for _ in range(args.runs)]
        medians[label] = statistics.median(samples)
        rows.append((label, medians[label], min(samples), max(samples)))
    floor = medians["floor: import chalice, boto3, pydantic"]
    print("## Cold start (imports)\n")
    print(f"Median of {args.runs} fresh interpreters, minus the bare interpreter start "
          f"({baseline * 1000:.0f} ms); warm .pyc.\n")
    print("| module | median ms | min ms | max ms | × floor |")
    print("|---|---:|---:|---:|---:|")
    for label, med, lo, hi in rows:
        print(f"| {label} | {med * 1000:.0f} | {lo * 1000:.0f} | {hi * 1000:.0f} | {med / floor:.2f} |")
    loaded = _sdk_loaded_by_app()
    api_ratio = medians["API handler: import app"] / floor
    print(f"\nTarget: API handler ≤ 1.3 × floor → **{api_ratio:.2f} ×** "
          f"({'met' if api_ratio <= 1.3 else 'NOT met'}). Vendor SDKs imported by `import app`: "
          f"{', '.join(loaded) if loaded else 'none'}.\n")


if __name__ == "__main__":
    main()
