"""The time an engine and its runs see: the real clock, or a virtual one for tests.

Every durable time (a journal's `ts`, a timer's fire time, a signal wait's deadline, a
retry's due time, `intemporal.now()`) is read from the engine's clock, and every wait on
a timer goes through it, so `intemporal.testing` can swap in a `VirtualClock` that skips
ahead instead of waiting.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from fractions import Fraction

INLINE_WAIT = 1.0  # a wait shorter than this keeps its thread; a longer one suspends the run


def stamp(seconds: float) -> float:
    """`round(seconds, 6)`, as a journal's times are, without its trip through decimal
    digits (~1 µs a call, twice per step on the hot path): the whole seconds apart, the
    rest to the microsecond; the same float, a tie or a time past 2**33 s handed to `round`."""
    if -_BIG < seconds < _BIG:
        whole = int(seconds)
        micros = (seconds - whole) * 1e6  # exact but for the product's last bit
        near = round(micros)
        if abs(micros - near) != 0.5:
            return (whole * 1_000_000 + near) / 1e6
    return round(seconds, 6)


_BIG = float(1 << 33)
_US_EXACT = float(1 << 32)  # below: round(seconds * 1e6) is the exact product's


class Clock:
    """Real time: `time()` is `time.time()`, `wait()` really waits.

    `inline_wait` (seconds): a run waiting less than this keeps its thread; a longer wait
    suspends it.
    """

    inline_wait = INLINE_WAIT

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "time" in own and "stamp" not in own:
            cls.stamp = Clock._stamp_of_time  # type: ignore[method-assign]  # its own time
        if ("time" in own or "stamp" in own) and "stamp_us" not in own:
            cls.stamp_us = Clock._stamp_us_of_stamp  # type: ignore[method-assign]

    def stamp(self) -> float:
        """Now, to the microsecond, as a journal's times are (`round(time(), 6)`, read from
        the nanosecond clock without a trip through decimal digits: ~0.5 µs less a call)."""
        return (time.time_ns() + 500) // 1000 / 1e6

    def stamp_us(self) -> int:
        """Now, in whole microseconds since the epoch: `stamp_us() / 1_000_000` is a `stamp()`.
        What an activity's result line is stamped with (its digits are the line's text)."""
        return (time.time_ns() + 500) // 1000

    def _stamp_of_time(self) -> float:
        return stamp(self.time())

    def _stamp_us_of_stamp(self) -> int:
        seconds = self.stamp()
        if -_US_EXACT < seconds < _US_EXACT:
            return round(seconds * 1e6)
        # From 2**32 s on the product's rounding can pass a half and the float's neighbours
        # are ~1 µs apart or more: the exact product's, which `us / 1_000_000` (an int
        # division, correctly rounded) reads back as `seconds`.
        return round(Fraction(seconds) * 1_000_000)

    @property
    def skipped(self) -> float:
        """Seconds of time skipped so far: always 0 for real time."""
        return 0.0

    def time(self) -> float:
        """Now, in seconds since the epoch."""
        return time.time()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for `event`; True if it is set."""
        return event.wait(seconds)

    @contextlib.contextmanager
    def awaited(self) -> Iterator[None]:
        """Mark a caller waiting for a run's result, while the block lasts (no-op here)."""
        yield

    def skip_to(self, due: float | None) -> bool:
        """Move time to `due` if waiting for it is all that is left to do; real time never skips."""
        return False


class VirtualClock(Clock):
    """Time for tests: waits complete at once and move the clock forward instead.

    It starts at the real time and follows it, plus an offset that grows each time a wait
    is skipped. Every run wait suspends the run (`inline_wait = 0`); while someone waits
    for a run's result (`awaited()`) and no run executes, the engine moves the clock to
    the next due timer (`skip_to`), so a three-day timeout passes in milliseconds.
    A retry backoff waited on an activity thread moves the clock by its length.
    """

    inline_wait = 0.0

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._offset = 0.0
        self._waiters = 0

    @property
    def skipped(self) -> float:
        """Seconds of virtual time skipped so far."""
        return self._offset

    def time(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (negative values are ignored)."""
        with self._mutex:
            self._offset += max(0.0, seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if not event.is_set():
            self.advance(seconds)
        return event.is_set()

    @contextlib.contextmanager
    def awaited(self) -> Iterator[None]:
        with self._mutex:
            self._waiters += 1
        try:
            yield
        finally:
            with self._mutex:
                self._waiters -= 1

    def skip_to(self, due: float | None) -> bool:
        if due is None or self._waiters == 0:
            return False
        self.advance(due - self.time())
        return True


def check_seconds(value: object, what: str) -> float | None:
    """`value` (a number or a `timedelta`) as a positive, finite number of seconds (None stays None).

    `what` names the option in the error: `TypeError` for a value that is not a number,
    `ValueError` for one that is not above 0 or not finite.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {value!r}")
    if not 0 < value < float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds above 0, not {value!r}")
    return float(value)
