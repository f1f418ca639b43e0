"""One consistent copy of the package's inputs (others keep editing the tree) and its fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devstack.package.dependencies import DEPENDENCY_CACHE, pinned_requirements
from devstack.package.inputs import BUILD_DIR, ROOT

# The modules that shape the output: a change to any of them makes earlier builds stale.
_PACKAGER_DIR = Path(__file__).resolve().parent


def _is_source(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"


def input_files(root: Path = ROOT) -> list[Path]:
    """What the package is built from, relative to `root`: what chalice zips (app.py, chalicelib/,
    vendor/, requirements.txt), its config and policies, and infra/."""
    files = [Path("app.py"), Path("requirements.txt")]
    files += sorted(p.relative_to(root) for p in (root / ".chalice").glob("*.json"))
    for tree in ("chalicelib", "vendor", "infra"):
        if (root / tree).is_dir():
            files += sorted(p.relative_to(root) for p in (root / tree).rglob("*") if _is_source(p))
    return [p for p in files if (root / p).is_file()]


def fingerprint(root: Path = ROOT) -> str:
    """Decides whether a build is fresh: the inputs plus this packager's modules."""
    digest = hashlib.sha256()
    for module in sorted(_PACKAGER_DIR.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    for rel in input_files(root):
        data = (root / rel).read_bytes()
        if rel == Path("requirements.txt"):
            data = pinned_requirements(data.decode()).encode()
        digest.update(str(rel).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def snapshot_project(dest: Path, *, with_dependencies: bool = True) -> Path:
    """A copy of the inputs in `dest/project`, so a build sees one consistent state of a tree others
    keep editing, and no `__pycache__` ends up in the zip or in chalice's cache key. The dependency
    cache `.chalice/deployments/` stays shared (chalice keys it on content)."""
    project = dest / "project"
    project.mkdir(parents=True)
    for rel in input_files(ROOT):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, project / rel)
    if with_dependencies:
        (project / "requirements.txt").write_text(pinned_requirements((ROOT / "requirements.txt").read_text()))
        DEPENDENCY_CACHE.mkdir(parents=True, exist_ok=True)
        (project / ".chalice" / "deployments").symlink_to(DEPENDENCY_CACHE, target_is_directory=True)
    else:
        # Without the wheels `chalice package` runs offline; the zip is then useless and not kept.
        (project / "requirements.txt").write_text("")
    return project


@contextlib.contextmanager
def project_snapshot(*, with_dependencies: bool = True) -> Iterator[Path]:
    """`snapshot_project` in a temporary directory under build/ (same filesystem as the tree, so
    chalice's cache key, which depends on directory listing order, matches `make package`'s)."""
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snapshot-", dir=BUILD_DIR) as tmp:
        yield snapshot_project(Path(tmp), with_dependencies=with_dependencies)
