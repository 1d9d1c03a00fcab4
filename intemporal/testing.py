"""Testing workflows: an engine on a memory store whose waits complete at once.

    import intemporal.testing

    def test_approval_expires() -> None:
        with intemporal.testing.engine() as engine:
            assert engine.run(expense, report) == "expired"   # a 3-day timeout, in ms

With `time_skipping=True` the engine runs on a `VirtualClock`: while a test waits for a
run's result (`engine.run`, `handle.result`) and no run is executing, time jumps to the
next due timer, so durable sleeps, signal-wait timeouts and retry backoffs complete at
once, and `intemporal.now()` in the workflow moves forward by the time skipped. A signal
sent before waiting for the result is delivered first, as in real time.

With pytest installed, the fixture `intemporal_engine` gives one such engine per test
(`intemporal.pytest_plugin`, registered as a `pytest11` entry point).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .clock import VirtualClock
from .engine import Engine
from .store import MemoryStore

__all__ = ["VirtualClock", "engine"]


@contextlib.contextmanager
def engine(*, time_skipping: bool = True, **engine_options: Any) -> Iterator[Engine]:
    """An `Engine` on a fresh `MemoryStore`, closed when the block ends.

    `time_skipping=True` (default): timers, signal-wait timeouts and retry backoffs
    complete at once on a virtual clock (`engine.clock`, a `VirtualClock`; its `skipped`
    is the virtual time skipped, in seconds); `False`: real time. `engine_options` are
    `Engine`'s (`threads=`, `codec=`, ...; `store=` replaces the memory store). Raises
    `TypeError` for an option `Engine` does not take.
    """
    options: dict[str, Any] = {"store": MemoryStore(), "threads": 4, **engine_options}
    if time_skipping:
        options["clock"] = VirtualClock()
    eng = Engine(**options)
    try:
        yield eng
    finally:
        eng.close()
