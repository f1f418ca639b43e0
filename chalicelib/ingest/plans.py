"""Rendering to-do lists (Claude Code `TodoWrite`, Codex `update_plan`) as markdown checklists."""

from __future__ import annotations

from typing import Any

_BOX = {"completed": "[x]", "in_progress": "[ ]", "pending": "[ ]"}


def render_checklist(items: Any, *, text_key: str, explanation: Any = None) -> str | None:
    """`- [x] done` / `- [ ] step (in progress)` lines; None when there is nothing to render."""
    if not isinstance(items, list):
        return None
    lines: list[str] = []
    if isinstance(explanation, str) and explanation.strip():
        lines.extend([explanation.strip(), ""])
    rendered = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        text = item.get(text_key)
        if not isinstance(text, str) or not text.strip():
            continue
        status = item.get("status")
        status = status if isinstance(status, str) else "pending"
        box = _BOX.get(status, "[ ]")
        suffix = "" if status in ("completed", "pending") else f" ({status.replace('_', ' ')})"
        lines.append(f"- {box} {text.strip()}{suffix}")
        rendered += 1
    return "\n".join(lines) if rendered else None
