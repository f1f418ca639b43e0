"""What a package is built from: the project's paths, the stage's chalice config, Chalice's deep merge."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = ROOT / "infra"
INFRA_TEMPLATE = INFRA_DIR / "eval-runner.json"
STAGE_OVERLAYS = INFRA_DIR / "stages.json"
CHALICE_OVERLAY = INFRA_DIR / "chalice-overlay.json"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"
BUILD_DIR = ROOT / "build"
DEFAULT_REGION = "us-east-1"


class PackagingError(RuntimeError):
    """The template could not be built, or it breaks one of the invariants of `checks.check_template`."""


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def deep_merge(patch: Any, base: Any) -> Any:
    """Chalice's `--merge-template` semantics, so both merges behave the same way."""
    from chalice.package import TemplateDeepMerger

    return TemplateDeepMerger().merge(copy.deepcopy(patch), copy.deepcopy(base))


def stage_config(stage: str, root: Path = ROOT) -> Any:
    """The chalice Config for `stage`, resolved the way `chalice package` resolves it."""
    from chalice.cli.factory import CLIFactory

    stages = load_json(root / ".chalice" / "config.json").get("stages", {})
    if stage not in stages:
        raise PackagingError(f"stage {stage!r} is not in .chalice/config.json (known: "
                             f"{', '.join(sorted(stages))})")
    return CLIFactory(project_dir=str(root)).create_config_obj(chalice_stage_name=stage)
