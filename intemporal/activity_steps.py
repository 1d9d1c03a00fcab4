"""The steps of an activity's retries as the journal records them, for sync and async runs.

`ActivitySteps` is a part of a run context (`intemporal.replay.RunContext`): what an
attempt's start, failure, retry backoff and final outcome write to the journal and tell
observers. The loop that calls them is the run's own: a thread's in `replay.py`, an event
loop's in `async_replay.py`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from .codec import encode
from .errors import Cancelled, SerializationError
from .events import ACTIVITY_FAILED, ATTEMPT_FAILED
from .failures import encode_error
from .observe import ActivityFinished, ActivityStarted, AttemptFailed, Observers
from .run_journal import JournalHost, RunJournal


class Retry(Protocol):
    """What an activity's retry policy (`intemporal.RetryPolicy`) tells a run context."""

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether attempt `attempt`, which raised `exc`, is retried."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt`."""


class _Host(JournalHost, Protocol):
    codec: str


# What an activity's retries ask their driver to do: each is a call without arguments (an
# attempt, a backoff) whose value is sent back, or whose exception is thrown back, in.
Steps = Generator[Callable[[], Any], Any, Any]


def advance(steps: Steps, value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Send `value` (or throw `error`) into `steps`: `(False, next call)`, or `(True, result)`."""
    try:
        return False, steps.throw(error) if error is not None else steps.send(value)
    except StopIteration as stop:
        return True, stop.value


def run_steps(steps: Steps) -> Any:
    """Drive `steps` on this thread: make each call, hand its outcome back; return the result."""
    try:
        step = next(steps)
        while True:
            try:
                value = step()
            except Exception as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(value)
    except StopIteration as stop:
        return stop.value


class ActivitySteps(RunJournal):
    """The journal's side of an activity's attempts (a part of `RunContext`)."""

    host: _Host
    observer: Observers
    retry_at: dict[int, float]
    failed_attempts: dict[int, int]
    cancel_delivered: bool

    if TYPE_CHECKING:
        deferring: bool

        def _cancel_pending(self) -> bool: ...

    def retrying(
        self,
        seq: int,
        name: str,
        retry: Retry,
        attempt: Callable[[int], Any],
        pause: Callable[[float], Any],
    ) -> Steps:
        """Activity `name`'s attempts with retries, as steps for a driver (`run_steps`, or an
        event loop's): `attempt(n)` runs attempt n, `pause(s)` waits out a backoff. Every
        attempt's failure and the outcome are journaled; returns the result or raises."""
        n = self.failed_attempts.get(seq, 0) + 1
        if n > 1:  # resumed in the middle of retries: wait out the rest of the backoff
            yield functools.partial(pause, self.backoff_left(seq, retry, n))
        first_started = self.host.clock.stamp_us()
        while True:
            times = (self.attempt_started(seq, name, n), first_started)
            try:
                result = yield functools.partial(attempt, n)
                value = encode(result, self.host.codec)
            except Exception as exc:
                delay = self.attempt_failed(seq, name, n, exc, retry)
                if delay is not None:
                    yield functools.partial(pause, delay)
                    if not self._cancel_pending():
                        n += 1
                        continue
                    exc = Cancelled(f"run {self.run_id!r} was cancelled")
                self.activity_failed(seq, name, n, times, exc)
                raise exc
            except asyncio.CancelledError as exc:  # an async workflow cancelled its await
                self.activity_failed(seq, name, n, times, exc)
                raise
            self._journal_outcome(seq, name, n, times, value)
            return result

    def backoff_left(self, seq: int, retry: Retry, attempt: int) -> float:
        """Seconds left of the backoff before attempt `attempt` of a run resumed mid-retries:
        the rest of the recorded one, or the current policy's, if the code now asks less."""
        left = self.retry_at.get(seq, 0.0) - self.host.clock.time()
        return min(left, retry.delay(attempt - 1))

    def before_release(self) -> None:
        """`before_effect`, with the outcomes of submitted activities the workflow has not
        taken yet (appended unsynced since the last synced line, `untaken_results`) made
        durable too: called before the run's lease is let go (it parks or stops), as the
        execution that claims it next takes them as recorded."""
        if self.untaken_results:
            self.untaken_results = False
            self.unsynced_results = True
        self.before_effect()

    def attempt_started(self, seq: int, name: str, attempt: int) -> int:
        """Make the outcomes taken so far durable (the attempt is an effect: `before_effect`),
        tell observers attempt `attempt` of activity `name` starts; return the time (whole
        microseconds since the epoch: `Clock.stamp_us`)."""
        if self.unsynced_results:
            self.before_effect()
        if self.observer.on_activity_started:
            self.observer.on_activity_started(ActivityStarted(self.run_id, name, seq, attempt))
        return self.host.clock.stamp_us()

    def attempt_failed(
        self, seq: int, name: str, attempt: int, exc: Exception, retry: Retry
    ) -> float | None:
        """Journal failed attempt `attempt` if it is retried and return the backoff (seconds);
        None if it is not (cancelled, unstorable, or the policy says no)."""
        cancelled = isinstance(exc, Cancelled) or self._cancel_pending()
        retry_it = not cancelled and not isinstance(exc, SerializationError)
        if not (retry_it and retry.retries(exc, attempt)):
            return None
        delay = retry.delay(attempt)
        error = encode_error(exc, self.host.codec)
        self.append(
            {"type": ATTEMPT_FAILED, "seq": seq, "name": name, "attempt": attempt}
            | {"error": error, "retry_in": delay}
        )
        if self.observer.on_attempt_failed:
            self.observer.on_attempt_failed(
                AttemptFailed(self.run_id, name, seq, attempt, exc, delay)
            )
        return delay

    def activity_failed(
        self, seq: int, name: str, attempts: int, times: tuple[int, int], exc: BaseException
    ) -> None:
        """Journal that activity `name` failed with `exc` after `attempts`.
        `times`: when its last attempt and its first one started (whole µs)."""
        if isinstance(exc, Cancelled):
            self.cancel_delivered = True
        self._journal_outcome(seq, name, attempts, times, encode_error(exc, self.host.codec), exc)

    def _journal_outcome(
        self,
        seq: int,
        name: str,
        attempts: int,
        times: tuple[int, int],
        stored: Any,
        exc: BaseException | None = None,
    ) -> None:
        """Journal activity `name`'s outcome: its result (`stored`, as `encode` made it), or
        with `exc` its failure (`stored`: the error encoded); tell observers."""
        started, first_started = times
        sync = False if self.deferring else None  # unsynced: durable with the run's next
        if exc is None:  # effect or its end (`RunContext.before_effect`)
            self.append_result(seq, name, attempts, started, stored, sync)
        else:
            event = {"type": ACTIVITY_FAILED, "seq": seq, "name": name, "attempts": attempts}
            self.append(event | {"started": started / 1_000_000, "error": stored}, sync)
        if self.deferring:  # a submitted activity's is taken by the workflow later
            if not self.submitted():  # (`DurableFuture.result`)
                self.unsynced_results = True
            else:  # or, not taken yet, synced when the run is let go (`before_release`)
                self.untaken_results = True
        if self.observer.on_activity_finished:
            took = self.host.clock.time() - first_started / 1_000_000
            self.observer.on_activity_finished(
                ActivityFinished(self.run_id, name, seq, attempts, took, exc)
            )
