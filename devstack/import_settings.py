"""`python -m devstack.import_settings FILE --tenant acme [--user import]`: apply a .NET appsettings
`Evals:ServerRunner` section to the local stack through the settings service (same validation, secret
writes and audit as `PUT /admin/settings/eval-runner`). Prints a summary; never prints a key.

Accepted shape (key names case-insensitive, as .NET configuration binding is):
  {"Evals": {"ServerRunner": {"Anthropic": {"ApiKey": "...", "Model": "...", "BaseUrl": "..."},
                              "OpenAI": {...}, "RunTimeoutSeconds": 300}}}
An empty or missing ApiKey leaves the stored key alone (appsettings files often ship "" placeholders).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chalicelib.domain.errors import DomainError
from chalicelib.domain.principal import SAFE_ID, Principal
from chalicelib.domain.settings import VENDORS, EvalRunnerSettingsUpdate, EvalRunnerSettingsView
from chalicelib.services.admin_settings import AdminSettingsService

_VENDOR_SECTIONS = {"anthropic": "anthropic", "openai": "openai"}
_BLOCK_FIELDS = {"apikey": "api_key", "model": "model", "baseurl": "base_url"}
_STACK_KEYS = {"aws_endpoint_url": "AWS_ENDPOINT_URL", "region": "AWS_REGION", "table_name": "EVAL_TABLE_NAME",
               "bucket": "EVAL_BUCKET_NAME", "queue_url": "EVAL_QUEUE_URL", "kms_key_id": "EVAL_KMS_KEY_ID"}


class SettingsFileError(ValueError):
    """The file does not have the expected shape; the message names the offending keys."""


def _section(data: Any, name: str, where: str) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        raise SettingsFileError(f"{where} must be a JSON object")
    for key, value in data.items():
        if key.lower() == name.lower():
            if value is None:
                return None
            if not isinstance(value, dict):
                raise SettingsFileError(f"{where}:{key} must be a JSON object")
            return value
    return None


def _placeholder(target: str, value: Any) -> bool:
    """An empty ApiKey/BaseUrl means "not set" in appsettings, not "remove" or "invalid"."""
    blank = value is None or (isinstance(value, str) and not value.strip())
    return target in ("api_key", "base_url") and blank


def translate_dotnet_settings(data: Any) -> dict[str, Any]:
    """The PUT body equivalent of an appsettings document (validation is left to the service)."""
    evals = _section(data, "Evals", "the file")
    runner = _section(evals, "ServerRunner", "Evals") if evals is not None else None
    if runner is None:
        raise SettingsFileError("the file has no Evals:ServerRunner section")
    body: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in runner.items():
        lowered = key.lower()
        if lowered == "runtimeoutseconds":
            # .NET binds numbers from strings ("300" from environment-style files); do the same here.
            body["run_timeout_seconds"] = int(value) if isinstance(value, str) and value.isdigit() else value
        elif lowered in _VENDOR_SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise SettingsFileError(f"Evals:ServerRunner:{key} must be a JSON object")
            block: dict[str, Any] = {}
            for field_key, field_value in value.items():
                target = _BLOCK_FIELDS.get(field_key.lower())
                if target is None:
                    unknown.append(f"Evals:ServerRunner:{key}:{field_key}")
                elif _placeholder(target, field_value):
                    continue
                else:
                    block[target] = field_value.strip() if isinstance(field_value, str) else field_value
            if block:
                body[_VENDOR_SECTIONS[lowered]] = block
        else:
            unknown.append(f"Evals:ServerRunner:{key}")
    if unknown:
        raise SettingsFileError(f"unknown settings: {', '.join(unknown)} (expected ApiKey, Model, BaseUrl, "
                           "RunTimeoutSeconds)")
    return body


def import_settings(service: AdminSettingsService, *, tenant: str, user: str,
                    data: Any) -> EvalRunnerSettingsView:
    """Apply an appsettings document as `user` (an admin of `tenant`); raises SettingsFileError, pydantic
    ValidationError or DomainError like the API would."""
    update = EvalRunnerSettingsUpdate.model_validate(translate_dotnet_settings(data))
    principal = Principal(tenant=tenant, user=user, roles=("admin",))
    return service.update_eval_runner_settings(principal, update, None, action="import")


def summary(view: EvalRunnerSettingsView, tenant: str) -> str:
    lines = [f"tenant {tenant}: settings version {view.version}, run_timeout_seconds {view.run_timeout_seconds}"]
    for vendor in VENDORS:
        block = getattr(view, vendor)
        state = "enabled" if block.enabled else "disabled"
        lines.append(f"  {vendor}: {state}, model {block.model or '-'}, key {block.api_key_hint or '-'}, "
                     f"base_url {block.base_url or 'default'}, status {block.status}")
    return "\n".join(lines)


def local_stack_env(stack_file: Path) -> dict[str, str]:
    """Environment for talking to the running local stack: its `env` map, then its top-level keys."""
    from devstack.common import stack_env

    if not stack_file.exists():
        raise SystemExit(f"{stack_file} not found: start the local stack first (make run)")
    stack: dict[str, Any] = json.loads(stack_file.read_text())
    env = dict(os.environ)
    env.update(stack_env(stack))
    for key, var in _STACK_KEYS.items():
        if stack.get(key):
            env[var] = str(stack[key])
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    stage = env.get("STAGE", "dev")
    env.setdefault("EVAL_SECRET_PREFIX", f"eval-runner/{stage}/tenant/")
    env.setdefault("DEV_JWT_SECRET", "unused-by-the-importer")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="appsettings JSON file with an Evals:ServerRunner section")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--user", default="import", help="recorded as the author in the audit trail")
    parser.add_argument("--stack", type=Path, default=None, help="stack.json (default .local/stack.json)")
    args = parser.parse_args(argv)
    for name in ("tenant", "user"):
        if not SAFE_ID.match(getattr(args, name)):
            print(f"--{name} must be letters, digits and . _ @ + = - (max 128)", file=sys.stderr)
            return 2
    try:
        data = json.loads(args.file.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"{args.file} is not valid JSON (comments and trailing commas are not supported)", file=sys.stderr)
        return 2

    from chalicelib.config import runtime_config_from_env
    from chalicelib.observability import logger
    from chalicelib.wiring import Container
    from devstack.common import STACK_FILE

    logger.setLevel("WARNING")  # stdout carries only the summary
    env = local_stack_env(args.stack or STACK_FILE)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    container = Container(runtime_config_from_env(env))
    try:
        view = import_settings(container.admin_settings, tenant=args.tenant, user=args.user, data=data)
    except SettingsFileError as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            print(f"invalid {'.'.join(str(p) for p in err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"import refused ({exc.code}): {exc.message}", file=sys.stderr)
        return 1 if exc.status >= 500 else 2
    print(summary(view, args.tenant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
