"""Cold-starts one deployed Lambda handler the way the Python runtime does, in a fresh interpreter.

Run by the deploy rehearsal (`devstack/rehearsal.py`) as `python -I <copy of this file>` with exactly
the deployed function's environment and the extracted deployment package as the working directory
(Lambda's /var/task). Standard library only at import: everything else must come from the package.
Reads {"handler", "code_dir", "event", "context"} as JSON on stdin, imports the handler module, calls
it once, and prints one line `REHEARSAL-RESULT <json>` after whatever the handler printed (its logs
and EMF metrics, which the rehearsal checks).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any

MARKER = "REHEARSAL-RESULT "


class LambdaContext:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.function_name = spec["function_name"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(spec["memory_mb"])
        self.invoked_function_arn = spec["function_arn"]
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = spec.get("log_group", "")
        self.log_stream_name = "rehearsal"
        self._deadline = time.monotonic() + float(spec["timeout_seconds"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    spec = json.loads(sys.stdin.read())
    # The runtime puts the task root first; nothing of the repository is on the path (python -I).
    sys.path.insert(0, spec["code_dir"])
    result: dict[str, Any] = {"ok": False}
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        module_name, _, attribute = spec["handler"].rpartition(".")
        module = importlib.import_module(module_name)
        handler = getattr(module, attribute)
        # Wall and CPU (user + system, this process) of the import and of the first invocation, taken
        # before anything else happens, so the interpreter's start and teardown are in neither.
        imported, cpu_imported = time.perf_counter(), time.process_time()
        result["import_seconds"] = round(imported - started, 3)
        result["import_cpu_seconds"] = round(cpu_imported - cpu_started, 4)
        context = LambdaContext(spec["context"])
        result["request_id"] = context.aws_request_id
        invoked, cpu_invoked = time.perf_counter(), time.process_time()
        response = handler(spec["event"], context)
        result["invoke_cpu_seconds"] = round(time.process_time() - cpu_invoked, 4)
        result["invoke_seconds"] = round(time.perf_counter() - invoked, 3)
        result["modules_loaded"] = len(sys.modules)
        result["response"] = response if isinstance(response, dict | list | str | int | None) else repr(response)
        result["ok"] = True
    except BaseException as exc:  # report everything, including SystemExit from a bad config
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
    # Modules whose bytecode was not on disk were compiled from source in this cold start.
    result["compiled_at_start"] = sorted(name for name, mod in list(sys.modules.items())
                                         if (getattr(mod, "__file__", None) or "").endswith(".py")
                                         and getattr(mod, "__cached__", None)
                                         and not os.path.exists(mod.__cached__))
    result["package_modules"] = sorted({name.split(".")[0] for name, mod in list(sys.modules.items())
                                        if (getattr(mod, "__file__", None) or "").startswith(spec["code_dir"])})
    sys.stdout.flush()
    print(MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
