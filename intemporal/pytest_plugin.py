"""The pytest plugin of intemporal: the fixture `intemporal_engine`.

Registered as a `pytest11` entry point, so installing intemporal makes it available:

    def test_checkout(intemporal_engine: intemporal.Engine) -> None:
        assert intemporal_engine.run(checkout, "order-42", 100) == [...]

Each test gets its own engine on a memory store with time skipping
(`intemporal.testing.engine()`), closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import testing
from .engine import Engine


@pytest.fixture
def intemporal_engine() -> Iterator[Engine]:
    """An `Engine` on a fresh memory store whose waits complete at once (virtual clock)."""
    with testing.engine() as engine:
        yield engine
