"""The observer seam: hooks an engine calls as runs and their steps start, fail and end.

    from intemporal.observe import ActivityFinished

    class Timings(intemporal.Observer):
        def on_activity_finished(self, rec: ActivityFinished) -> None:
            if not rec.replaying:
                metrics.observe(rec.activity, rec.duration)

    engine = intemporal.Engine(observers=[Timings()])

Every hook is a no-op here: override the ones you need. Each gets a small frozen record
whose `replaying` says whether the operation is being replayed from the journal (a run
executing again after a suspension or a crash) rather than happening now: a tracer skips
those, a step counter may not. Hooks run on the run's thread, so they should be quick; an
observer that raises is logged on the `intemporal.observe` logger and ignored: it never
breaks a run. Every engine also has a `LoggingObserver`, which logs on the `intemporal`
logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import RunStatus

log = logging.getLogger("intemporal")
_failures = logging.getLogger("intemporal.observe")


@dataclass(frozen=True, slots=True)
class RunCreated:
    """A run is about to be recorded (`parent`: the run starting it as a child, or None).

    An observer's `headers` answers it on the creating thread: the caller's, or the parent
    workflow's.
    """

    run_id: str
    workflow: str
    parent: str | None = None
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run's first execution begins; `headers` are those journaled at its creation."""

    run_id: str
    workflow: str
    parent: str | None = None
    queue: str | None = None
    replaying: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunResumed:
    """A run executes again, replaying its journal first.

    `after`: "waiting" (a timer, a signal or a child), "failure" (a failed run resumed), or
    "crash" (its previous execution stopped unrecorded: its process died, or was stopped).
    """

    run_id: str
    workflow: str
    after: str
    replaying: bool = True
    queue: str | None = None
    parent: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunSuspended:
    """A run gives its thread back to wait; `until` is the epoch time it is due (or None)."""

    run_id: str
    workflow: str
    reason: str
    until: float | None
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run ended: `status` is COMPLETED, FAILED or CANCELLED; `error` what it raised."""

    run_id: str
    workflow: str
    status: RunStatus
    duration: float
    error: BaseException | None = None
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class RunStopped:
    """An execution of a run ended, whatever the end: after `RunFinished` or `RunSuspended`,
    or unrecorded (`error`: its engine shut down, the store failed, an interrupt; else None).
    Told on the thread that executed it, once per `RunStarted` or `RunResumed`."""

    run_id: str
    workflow: str
    error: BaseException | None = None
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class ActivityStarted:
    """An activity (step `seq` of a run) begins an attempt, or is replayed."""

    run_id: str
    activity: str
    seq: int
    attempt: int
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt failed and will be retried in `retry_in` seconds."""

    run_id: str
    activity: str
    seq: int
    attempt: int
    error: BaseException
    retry_in: float
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class ActivityFinished:
    """An activity ended after `attempts` attempts: `error` None when it succeeded.

    `duration` is seconds from its first attempt here to the end (0.0 when replayed).
    """

    run_id: str
    activity: str
    seq: int
    attempts: int
    duration: float
    error: BaseException | None = None
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A workflow took signal `name` (sent with `signal_id`)."""

    run_id: str
    name: str
    signal_id: str | None
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class TimerStarted:
    """A workflow sleeps durably (step `seq`): `seconds` long, due at `fire_at` (epoch seconds)."""

    run_id: str
    seq: int
    seconds: float
    fire_at: float
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class CancelDelivered:
    """A requested cancellation reached the workflow at step `seq` (it raises `Cancelled`)."""

    run_id: str
    seq: int
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class ChildStarted:
    """A workflow started child run `child_id` of workflow `workflow`."""

    run_id: str
    child_id: str
    workflow: str
    replaying: bool = False


@dataclass(frozen=True, slots=True)
class Compensation:
    """A saga begins compensating: `compensations` are the activities it will run, in order."""

    run_id: str
    compensations: tuple[str, ...]
    replaying: bool = False


class Observer:
    """Hooks called as runs execute; each does nothing here: override the ones you need."""

    def on_run_started(self, rec: RunStarted) -> None:
        """A run's first execution begins."""

    def on_run_resumed(self, rec: RunResumed) -> None:
        """A run executes again (after waiting, a failure, or a crash)."""

    def on_run_suspended(self, rec: RunSuspended) -> None:
        """A run waits without a thread."""

    def on_run_finished(self, rec: RunFinished) -> None:
        """A run completed, failed or was cancelled."""

    def on_run_stopped(self, rec: RunStopped) -> None:
        """An execution ended (finished, suspended, or stopped unrecorded): its thread is free."""

    def on_activity_started(self, rec: ActivityStarted) -> None:
        """An activity attempt begins (or is replayed)."""

    def on_attempt_failed(self, rec: AttemptFailed) -> None:
        """An activity attempt failed and will be retried."""

    def on_activity_finished(self, rec: ActivityFinished) -> None:
        """An activity ended: succeeded, or failed for good."""

    def on_signal_received(self, rec: SignalReceived) -> None:
        """A workflow took a signal."""

    def on_timer_started(self, rec: TimerStarted) -> None:
        """A workflow sleeps durably."""

    def on_cancelled(self, rec: CancelDelivered) -> None:
        """A cancellation reached the workflow."""

    def on_child_started(self, rec: ChildStarted) -> None:
        """A workflow started a child run."""

    def on_compensation(self, rec: Compensation) -> None:
        """A saga begins compensating."""

    def headers(self, rec: RunCreated) -> Mapping[str, str] | None:
        """Strings to journal with a new run (its first event's `headers`, a JSON object),
        handed back to each execution of it as `RunStarted.headers` / `RunResumed.headers`,
        in any process: a trace context, say. Observers' headers are merged; None adds none."""
        return None


HOOKS = (*(name for name in vars(Observer) if name.startswith("on_")), "headers")


class Observers:
    """The fan-out an engine calls: per hook, a function, or None when no observer has it.

    Callers build a record only when the hook is not None, so an engine whose observers
    leave a hook alone pays nothing for it on the hot path.
    """

    def __init__(self, observers: Sequence[Observer]) -> None:
        for hook in HOOKS:
            setattr(self, hook, _fan_out(hook, observers))

    on_run_started: Callable[[RunStarted], None] | None
    on_run_resumed: Callable[[RunResumed], None] | None
    on_run_suspended: Callable[[RunSuspended], None] | None
    on_run_finished: Callable[[RunFinished], None] | None
    on_run_stopped: Callable[[RunStopped], None] | None
    on_activity_started: Callable[[ActivityStarted], None] | None
    on_attempt_failed: Callable[[AttemptFailed], None] | None
    on_activity_finished: Callable[[ActivityFinished], None] | None
    on_signal_received: Callable[[SignalReceived], None] | None
    on_timer_started: Callable[[TimerStarted], None] | None
    on_cancelled: Callable[[CancelDelivered], None] | None
    on_child_started: Callable[[ChildStarted], None] | None
    on_compensation: Callable[[Compensation], None] | None
    headers: Callable[[RunCreated], dict[str, str]] | None


def _fan_out(hook: str, observers: Sequence[Observer]) -> Callable[[Any], Any] | None:
    base = getattr(Observer, hook)
    calls = [getattr(o, hook) for o in observers if getattr(type(o), hook, base) is not base]
    if not calls:
        return None

    def call(rec: Any) -> None:
        for fn in calls:
            try:
                fn(rec)
            except Exception:  # an observer never breaks a run
                _failures.exception("observer %r raised in %s; ignored", fn.__self__, hook)

    def merge(rec: Any) -> dict[str, str]:
        merged: dict[str, str] = {}
        for fn in calls:
            try:
                merged.update(fn(rec) or {})
            except Exception:  # an observer never breaks a run
                _failures.exception("observer %r raised in %s; ignored", fn.__self__, hook)
        return merged

    return merge if hook == "headers" else call


NO_OBSERVERS = Observers(())


class LoggingObserver(Observer):
    """Logs on the `intemporal` logger: run starts and ends and resumes after a crash at
    INFO, each failed activity attempt with its retry delay at WARNING. Replays are quiet."""

    def on_run_started(self, rec: RunStarted) -> None:
        log.info("run %r (%s) started", rec.run_id, rec.workflow)

    def on_run_resumed(self, rec: RunResumed) -> None:
        if rec.after == "crash":
            log.info(
                "run %r (%s) resumed after a crash: its previous execution stopped unrecorded",
                rec.run_id,
                rec.workflow,
            )

    def on_run_finished(self, rec: RunFinished) -> None:
        why = f": {type(rec.error).__name__}: {rec.error}" if rec.error is not None else ""
        log.info(
            "run %r (%s) %s in %.3f s%s", rec.run_id, rec.workflow, rec.status, rec.duration, why
        )

    def on_attempt_failed(self, rec: AttemptFailed) -> None:
        if rec.replaying:
            return
        log.warning(
            "activity %s (step %d of run %r) failed on attempt %d: %s: %s; retrying in %.3g s",
            rec.activity,
            rec.seq,
            rec.run_id,
            rec.attempt,
            type(rec.error).__name__,
            rec.error,
            rec.retry_in,
        )
