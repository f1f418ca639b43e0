"""Fixtures of the API tests: a fake vendor in this process, a container tuned for short worker runs, a
settable clock for the daemon-protocol tests, an in-memory daemon directory for the dispatch tests and a
member token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.fake_vendor import FakeVendor
from tests.api.daemon_kit import FrozenClock
from tests.api.dispatch_kit import FakeDaemons, install_daemons
from tests.api.worker_kit import TEST_TUNING
from tests.conftest import mint
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


@pytest.fixture
def clock(container: Any) -> FrozenClock:
    c = FrozenClock()
    container.clock = c
    return c


@pytest.fixture
def daemons(container: Any) -> FakeDaemons:
    fake = FakeDaemons()
    install_daemons(container, fake)
    return fake


@pytest.fixture
def alice() -> str:
    return mint("acme", "alice", [])
