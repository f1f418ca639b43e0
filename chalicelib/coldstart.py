"""A Lambda process's cold start: the garbage collector held off while the process loads its code.

The first request of a cold API container imports its route module, the models and services behind it,
boto3's service models and the token library; the worker's first judge call imports a vendor SDK (a
thousand modules, most of a second). That is a few hundred thousand objects living as long as the
process. CPython's collector scans them again each time its young generation fills, and its full scans
grow with everything loaded so far, yet none of it is garbage. So the collector is held off while that
code loads; then what was loaded moves to the permanent generation (`gc.freeze()`), which later
collections skip, and collection resumes. Cyclic garbage made meanwhile is kept for good, so only what
a process does once belongs here. Measured in bench/coldstart (bench/RESULTS.md).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

_first_done = False


@contextmanager
def collection_held() -> Iterator[None]:
    """No collection inside; then everything alive is frozen and collection resumes."""
    if not gc.isenabled():  # someone outside holds it: leave the decision to them
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def first_request_loads_code(event: Any, get_response: Callable[[Any], T]) -> T:
    """Chalice middleware: the process's first request runs with collection held, later ones as they are."""
    global _first_done
    if _first_done:
        return get_response(event)
    _first_done = True
    with collection_held():
        return get_response(event)
