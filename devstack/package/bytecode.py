"""Bytecode compiled into the deployment zip at package time (Lambda's code directory is read-only,
so without it every cold start compiles every module from source)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from devstack.package.inputs import PackagingError


def compile_bytecode(zip_path: Path, python_version: str) -> tuple[int, int]:
    """Adds `__pycache__/*.cpython-3XX.pyc` for every module of the deployment zip, compiled by this
    interpreter, which must be the Lambda runtime's version (a pyc of another minor version is
    ignored, i.e. dead weight). Unchecked-hash pycs (PEP 552): Python uses them without comparing the
    source's mtime, which Lambda's extraction does not preserve reliably, and never tries to rewrite
    them (the code directory is read-only, so a stale-looking timestamp pyc would mean compiling every
    module on every cold start). Returns (pyc files, bytes the zip grew by)."""
    import importlib.util
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if runtime != python_version:
        raise PackagingError(f"packaging runs on {runtime} but the Lambda runtime is {python_version}: run "
                             f"`make package` with Python {python_version[6:]} so the bytecode matches")
    before = zip_path.stat().st_size
    partial = zip_path.with_name(zip_path.name + ".pyc.tmp")
    compiled = 0
    with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        names = set(source.namelist())
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data)
            if not info.filename.endswith(".py"):
                continue
            folder, _, module = info.filename.rpartition("/")
            pyc_name = f"{folder + '/' if folder else ''}__pycache__/{module[:-3]}.{sys.implementation.cache_tag}.pyc"
            if pyc_name in names:
                continue
            try:
                code = compile(data, f"/var/task/{info.filename}", "exec", dont_inherit=True)
            except SyntaxError:
                continue  # e.g. a vendored file for another Python version: never imported here either
            pyc = zipfile.ZipInfo(pyc_name, date_time=info.date_time)
            pyc.external_attr = info.external_attr
            pyc.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(pyc, _code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False))
            compiled += 1
    partial.replace(zip_path)
    return compiled, zip_path.stat().st_size - before
