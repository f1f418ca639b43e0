"""Paths and helpers shared by the local-stack processes: stack.json, the dev JWT secret, env."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"
# Tests that start a second stack point this elsewhere so they never clobber a developer's stack.
STACK_FILE = Path(os.environ.get("EVAL_STACK_FILE", str(LOCAL_DIR / "stack.json")))
SECRET_FILE = LOCAL_DIR / "dev_jwt_secret"


def dev_jwt_secret() -> str:
    """The local stack's HS256 secret: generated once per checkout, never committed."""
    LOCAL_DIR.mkdir(exist_ok=True)
    if not SECRET_FILE.exists():
        SECRET_FILE.write_text(secrets.token_urlsafe(48))
        SECRET_FILE.chmod(0o600)
    return SECRET_FILE.read_text().strip()


def chalice_stage_env(stage: str) -> dict[str, str]:
    """Top-level plus stage environment variables from .chalice/config.json, as Lambda gets them."""
    config: dict[str, Any] = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


def read_stack() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(STACK_FILE.read_text())
    return data


def stack_env(stack: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment for a process that talks to the running local stack (CLI tools, tests)."""
    stack = stack or read_stack()
    env = dict(stack.get("env", {}))
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    return env


def apply_env(env: dict[str, str]) -> None:
    os.environ.update(env)
