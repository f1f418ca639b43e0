"""Session-scoped real local stack for the end-to-end tests (HTTP only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import LocalStack, start_stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(Path(tmp_path_factory.mktemp("stack")))
    yield stack
    leftovers = stack.stop()
    assert not leftovers, f"processes left running after the stack stopped: {leftovers}"
