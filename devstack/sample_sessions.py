"""A small native session trace for tests, benchmarks and demos: a task, a plan, Bash calls with their
results and the agent's answer."""

from __future__ import annotations

from typing import Any


def sample_trace(n_tools: int = 8, output: str = "1 passed") -> list[dict[str, Any]]:
    """A task, a plan, `n_tools` Bash calls with their results, the answer."""
    ts = "2025-06-01T10:{:02d}:{:02d}.000Z"
    entries: list[dict[str, Any]] = [
        {"kind": "user_message", "timestamp": ts.format(0, 0), "text": "Fix the failing login test in src/auth.py"},
        {"kind": "plan", "timestamp": ts.format(0, 1), "text": "1. reproduce 2. fix src/auth.py 3. run tests"},
    ]
    for i in range(n_tools):
        entries += [
            {"kind": "tool_invocation", "timestamp": ts.format(1 + i // 30, (2 * i) % 60), "tool": "Bash",
             "call_id": f"c{i}", "arguments": {"command": f"pytest tests/test_auth_{i}.py"}},
            {"kind": "tool_result", "timestamp": ts.format(1 + i // 30, (2 * i + 1) % 60), "tool": "Bash",
             "call_id": f"c{i}", "output": output},
        ]
    entries.append({"kind": "assistant_message", "timestamp": ts.format(59, 59), "text": "Fixed src/auth.py."})
    return entries
