"""Fixtures of the worker tests: a fake vendor in this process and a container tuned for short runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.fake_vendor import FakeVendor
from tests.api.worker_kit import TEST_TUNING
from tests.fakevendor import running_fake_vendor


@pytest.fixture(scope="session")
def warm_vendor_sdks() -> None:
    # A warm worker container has the vendor SDKs imported; on a cold one the import (seconds on a busy
    # CI box) counts against the run's budget, which would make the short-deadline tests flaky.
    import anthropic  # noqa: F401
    import openai  # noqa: F401


@pytest.fixture
def fake(warm_vendor_sdks: None) -> Iterator[FakeVendor]:
    with running_fake_vendor() as vendor:
        yield vendor


@pytest.fixture
def worker(container: Any) -> Any:
    container.judge_tuning = TEST_TUNING
    return container
