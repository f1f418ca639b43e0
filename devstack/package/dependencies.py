"""The Lambda's third-party wheels: requirements pinned to the tested venv, and the downloaded wheels
kept per requirements.txt so a code change does not download them again."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from devstack.package.inputs import ROOT, stage_config

DEPENDENCY_CACHE = ROOT / ".chalice" / "deployments"


def pinned_requirements(text: str) -> str:
    """requirements.txt with every requirement pinned to the version installed in this venv, so the
    Lambda ships exactly what the tests ran against (a dev tool's cap, e.g. aws-sam-translator's
    `pydantic~=2.13`, would otherwise test one version and ship another). A requirement that is not
    installed here keeps its range (and `make package` then ships what pip picks)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
            version = metadata.version(req.name)
        except (InvalidRequirement, metadata.PackageNotFoundError):
            lines.append(line)
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        marker = f"; {req.marker}" if req.marker else ""
        lines.append(f"{req.name}{extras}=={version}{marker}")
    return "\n".join(lines) + "\n"


def _deployment_packager(project: Path, stage: str) -> tuple[Any, str]:
    from chalice.deploy.packager import LambdaDeploymentPackager
    from chalice.utils import UI, OSUtils

    config = stage_config(stage, project)
    packager = LambdaDeploymentPackager(osutils=OSUtils(), dependency_builder=None,  # type: ignore[arg-type]
                                        ui=UI(out=io.StringIO()), architecture=config.lambda_architecture)
    return packager, config.lambda_python_version


def _chalice_cache_zip(project: Path, stage: str) -> Path:
    """The zip `chalice package` looks for (and writes) in .chalice/deployments/ for this source."""
    packager, python_version = _deployment_packager(project, stage)
    return Path(packager.deployment_package_filename(str(project), python_version))


def _dependencies_zip(project: Path, stage: str) -> Path:
    """Where a zip with the wheels for this requirements.txt (+ runtime, architecture) is kept."""
    config = stage_config(stage, project)
    digest = hashlib.md5((project / "requirements.txt").read_bytes(), usedforsecurity=False).hexdigest()
    return DEPENDENCY_CACHE / f"deps-{digest}-{config.lambda_python_version}-{config.lambda_architecture}.zip"


def seed_chalice_cache(project: Path, stage: str) -> bool:
    """Chalice keys its cached zip on requirements.txt *and* the app's source, so any code change
    means a fresh download of every wheel (20-50 s, and impossible offline). When the wheels for this
    requirements.txt were fetched before, put the zip chalice is about to look for in place with
    chalice's own `inject_latest_app`; it then prints 'Reusing existing deployment package'."""
    if (project / "vendor").exists():
        return False  # vendored files are not swapped by inject_latest_app
    target = _chalice_cache_zip(project, stage)
    deps = _dependencies_zip(project, stage)
    if target.exists() or not deps.exists():
        return False
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(deps, partial)
    _deployment_packager(project, stage)[0].inject_latest_app(str(partial), str(project))
    partial.replace(target)
    return True


def remember_dependencies(project: Path, stage: str) -> None:
    """Keeps the zip chalice just built as this requirements.txt's wheels (for `seed_chalice_cache`)."""
    built = _chalice_cache_zip(project, stage)
    deps = _dependencies_zip(project, stage)
    if built.exists() and not deps.exists() and not (project / "vendor").exists():
        partial = deps.with_name(f".{deps.name}.{os.getpid()}.tmp")
        shutil.copyfile(built, partial)
        partial.replace(deps)


def forget_dependencies(project: Path, stage: str) -> None:
    for stale in (_dependencies_zip(project, stage), _chalice_cache_zip(project, stage)):
        stale.unlink(missing_ok=True)


def prune_dependency_cache(keep: int = 2) -> None:
    """Keep the newest few zips of each kind (per-source ones are ~16 MB and one per code change)."""
    if not DEPENDENCY_CACHE.is_dir():
        return
    every = list(DEPENDENCY_CACHE.glob("*.zip"))
    for kind in ([p for p in every if p.name.startswith("deps-")],
                 [p for p in every if not p.name.startswith("deps-")]):
        for stale in sorted(kind, key=lambda p: p.stat().st_mtime, reverse=True)[keep:]:
            with contextlib.suppress(OSError):
                stale.unlink()


def package_index_reachable(timeout: float = 3.0) -> bool:
    """Whether pip's index answers; packaging downloads the Lambda's wheels from it."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path).exists()
    host, port = parsed.hostname or "pypi.org", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
