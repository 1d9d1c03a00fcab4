"""The per-run context: sequence numbers, the recorded journal, and durable activity calls.

Every durable operation a workflow performs gets the next sequence number, in program
order. If the journal already holds an event at that number (the run is being replayed
after a crash or a suspension) its recorded result is returned without running anything;
a recorded name that differs from what the code now asks for raises
`NonDeterminismError`. Otherwise the operation runs and its outcome is appended to the
journal before the workflow proceeds.

The workflow function runs top to bottom once per execution: replay happens only when a
run starts again, so a run of N activities costs O(N), not O(N^2).

An activity's outcome is appended without a sync: it becomes durable with the run's next
effect outside itself (`RunContext.before_effect`), or with the next record appended with
a sync (a timer, a signal wait, the run's end...), whichever comes first. In between, only
the workflow's own deterministic code runs: after a power cut there, the activity, never
acknowledged, runs again and the workflow replays to the same point. So a run of K
sequential activities costs K syncs in fsync mode: its end shares the last one's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, cast

from .activity_steps import ActivitySteps, Retry
from .attempts import WorkflowInfo, attempting, current_run, run_attempt
from .clock import INLINE_WAIT, Clock
from .codec import decode, encode, is_exact_json
from .deadlines import DEADLINE_PASSED, overdue
from .errors import (
    Cancelled,
    IntemporalError,
    NonDeterminismError,
    RemoteError,
    SerializationError,
    StoreFailure,
    Terminated,
    _Shutdown,
    _Wait,
)
from .events import (
    ATTEMPT_FAILED,
    CANCEL,
    CANCEL_DELIVERED,
    CHILD_STARTED,
    SIGNAL,
    SIGNAL_RECEIVED,
    TERMINATE,
    check_version,
    failures_to_retry,
    same_error,
)
from .failures import rebuild_error
from .observe import (
    ActivityFinished,
    ActivityStarted,
    CancelDelivered,
    ChildStarted,
    Observers,
)
from .run_journal import _Submitted
from .store.base import Event, Lease, RunInfo, RunStatus


class Named(Protocol):
    """A workflow as a run context sees one (`intemporal.Workflow`): its name."""

    @property
    def name(self) -> str: ...


def current() -> RunContext | None:
    """The context of the workflow running on this thread, or None outside workflows."""
    return cast("RunContext | None", current_run())  # only run contexts are set


def activity_context() -> RunContext | None:
    """The context of the run whose activity is executing on this thread, if any."""
    return cast("RunContext | None", attempting())  # set by `run_attempt` only


class Host(Protocol):
    """What a run context needs from the engine that executes it."""

    codec: str
    sync: bool
    observer: Observers
    clock: Clock
    engine_id: str  # stamped on every event an execution appends (`owner`)

    @property
    def closing(self) -> bool: ...

    def pause(self, ctx: RunContext, seconds: float) -> None:
        """Wait `seconds`, returning early (and raising) on shutdown or cancellation."""

    def run_child(
        self,
        ctx: RunContext,
        seq: int,
        wf: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: bool,
    ) -> Any:
        """Create (once) and execute child run `<ctx.run_id>/<seq>`; with `wait`, return its result."""

    def submit_activity(self, job: Callable[[], None]) -> None:
        """Run `job` on a thread of the engine's activity pool."""

    def child_result(self, ctx: RunContext, seq: int) -> Any:
        """The result of child `<ctx.run_id>/<seq>` if finished, else raise `ChildNotFinished`."""


def _is_cancelled_error(err: dict[str, Any]) -> bool:
    return err.get("type") == "Cancelled" and err.get("module") == Cancelled.__module__


class RunContext(ActivitySteps):
    """One execution of one run: its lease on the journal and the replay position."""

    host: Host

    def __init__(
        self,
        host: Host,
        lease: Lease,
        events: list[Event],
        protocols: dict[type, Any] | None = None,
    ) -> None:
        first = events[0]
        check_version(first)
        self.host, self.lease = host, lease
        self.observer: Observers = host.observer
        self.run_id: str = lease.run_id
        self.workflow: str = first.get("workflow", "?")
        self.parent: str | None = first.get("parent")
        self.protocols = protocols or {}
        self.seq = 0
        self.poisoned: IntemporalError | None = None  # the run stops here, unrecorded
        self.store_failed: StoreFailure | None = None  # once set, nothing more is written
        # a cancellation came in (set on any thread, read on the run's: a plain flag that
        # each step reads without a call)
        self.cancel_requested = False
        self.wake = threading.Event()  # set to cut a pause short: cancellation, shutdown
        self.thread = threading.get_ident()  # the workflow's own thread: it may park the run
        self.cancel_delivered = False
        self.cancel_reason: str | None = None  # "timed out": said by `Cancelled`, recorded
        self.deadline: float | None = first.get("deadline")  # epoch s: `deadlines.py`
        self.terminated: Terminated | None = None  # `engine.terminate()`: raised at once
        self.signals: dict[str, deque[Event]] = {}  # unconsumed signals, FIFO per name
        self._seen_signals: set[str] = set()
        self.inflight: set[Any] = set()  # futures of submitted activities not yet finished
        # Written before this execution's first event, if it writes any (`run_recovered`):
        # an execution that stops unrecorded (non-determinism) leaves the journal as it was.
        self.marker: Event | None = None
        self._marker_lock = threading.Lock()
        self._unsynced = _Submitted()  # .on: this thread executes a submitted activity
        # The workflow took an activity's outcome appended without a sync since the last
        # synced line: the run's next effect syncs it first (`before_effect`). Set and
        # cleared on the workflow's thread (or event loop) only, set once the line is
        # written, cleared before a sync is asked for.
        self.unsynced_results = False
        self.untaken_results = False  # the same for submitted ones not taken: `before_release`
        # fsync mode on a store whose sync costs what a synced append does: activity
        # outcomes are appended unsynced (`Lease.defer_sync`); else synced as they come
        self.deferring = host.sync and lease.defer_sync
        self.events = events
        self._index(events)

    def _index(self, events: list[Event]) -> None:
        forgotten, self.retry_children = failures_to_retry(events)
        last_forgotten = {events[i]["seq"]: i for i in sorted(forgotten)}
        self.recorded: dict[int, Event] = {}
        self.lines: dict[int, int] = {}  # seq -> journal line of its record (1-based)
        self.failed_attempts: dict[int, int] = {}
        self.retry_at: dict[int, float] = {}  # when a resumed retry is due (epoch seconds)
        self.consumed_signals: set[str] = set()
        for i, ev in enumerate(events):
            seq = ev.get("seq")
            if seq is None:
                continue
            if ev["type"] == SIGNAL_RECEIVED:
                self.consumed_signals.add(ev["signal_id"])
            if ev["type"] == ATTEMPT_FAILED:
                self.failed_attempts[seq] = ev["attempt"]
                self.retry_at[seq] = ev.get("ts", 0.0) + ev.get("retry_in", 0.0)
                if i < last_forgotten.get(seq, -1):
                    del self.failed_attempts[seq], self.retry_at[seq]  # a fresh budget
            elif i not in forgotten:
                self.recorded[seq] = ev
                self.lines[seq] = i + 1
        self.last_recorded = max(self.recorded, default=0)

    def next(self, name: str, deliver: bool = True) -> tuple[int, Event | None]:
        """Take the next sequence number for operation `name`; return it and its record.

        With `deliver=False` (an async workflow's call, cancelled at its await instead) a
        pending cancellation is left pending and a recorded one is returned as the record.
        """
        if self.store_failed is not None:
            raise self.store_failed
        if self.poisoned is not None:
            raise self.poisoned
        if self.terminated is not None:
            raise self.terminated
        seq = self.seq = self.seq + 1
        rec = self.recorded.get(seq)
        if rec is not None:
            if rec["type"] == CANCEL_DELIVERED:
                if not deliver:
                    return seq, rec
                raise self._cancelled(seq, True)
            if rec.get("name") != name:
                self.poisoned = NonDeterminismError(seq, str(rec.get("name", rec["type"])), name)
                raise self.poisoned
            return seq, rec
        if self.host.closing:
            raise _Shutdown("the engine is shutting down")
        if deliver and self.cancel_requested and not self.cancel_delivered:
            self.cancel_delivered = True
            self.append({"type": CANCEL_DELIVERED, "seq": seq, "name": "intemporal.cancel"})
            raise self._cancelled(seq, False)
        if self.marker is not None:  # executing anew from here: a recovery is journaled first
            with self._marker_lock:
                marker, self.marker = self.marker, None
            if marker is not None:
                self.append(marker, False)
        return seq, None

    def _cancelled(self, seq: int, replaying: bool) -> Cancelled:
        """The cancellation delivered at step `seq`, observers told: the error to raise."""
        self.cancel_delivered = True
        if self.observer.on_cancelled:
            self.observer.on_cancelled(CancelDelivered(self.run_id, seq, replaying))
        return Cancelled(f"run {self.run_id!r} {self.cancel_reason or 'was cancelled'}")

    def check_complete(self) -> None:
        """Raise `NonDeterminismError` if the workflow returned before replaying its journal."""
        if self.poisoned is not None:
            raise self.poisoned
        if self.seq < self.last_recorded:
            rec = self.recorded.get(self.seq + 1) or self.recorded[self.last_recorded]
            self.poisoned = NonDeterminismError(
                self.seq + 1, str(rec.get("name", rec["type"])), "<workflow returned>"
            )
            raise self.poisoned

    def replayed(self, rec: Event) -> Any:
        """The recorded outcome of an operation: its value, or its exception raised again."""
        err = rec.get("error")
        if err is not None:
            if _is_cancelled_error(err):
                self.cancel_delivered = True
            try:
                exc = rebuild_error(err, self.host.codec, self.at(rec))
            except RemoteError as bad:
                why = f"{bad.reason}; recorded at {self.at(rec)}: the run stops here, unrecorded"
                self.halt(RemoteError(bad.type_name, bad.message, why))
            except SerializationError as bad:
                self.halt(bad)
            raise exc
        return self.value(rec.get("result"), rec)

    def at(self, rec: Event) -> str:
        """Where a record is, for messages: "step 3 of run 'r' (journal line 4)"."""
        seq = rec.get("seq")
        line = self.lines.get(seq, "?") if isinstance(seq, int) else "?"
        return f"step {seq} of run {self.run_id!r} (journal line {line})"

    def value(self, data: Any, where: str | Event) -> Any:
        """A stored value decoded with the engine's codec; one that cannot be read (or that
        `codec="json"` refuses) stops the run here, unrecorded. `where` names it: a text,
        or the record that holds it."""
        if type(data) is not dict:
            return data  # plain JSON: the hot path of a replay
        text = self.at(where) if isinstance(where, dict) else where
        try:
            return decode(data, self.host.codec, f"the value at {text}")
        except SerializationError as exc:
            self.halt(exc)

    def halt(self, error: IntemporalError) -> NoReturn:
        """Stop the run with `error`: replaying on would change what the workflow saw.

        Later operations raise it again, and the engine records no verdict: the run stays
        resumable once the cause (missing code, a refused value) is fixed.
        """
        self.poisoned = error
        raise error

    # -- activities ---------------------------------------------------------------------
    def call_activity(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry,
        timeout: float | None,
    ) -> Any:
        """Run activity `name` durably: replay its record, or execute it with retries."""
        seq, rec = self.next(name)
        if rec is not None:
            obs = self.observer
            if obs.on_activity_started or obs.on_activity_finished:
                self._replay_observed(seq, name, rec)
            return self.replayed(rec)
        return self.execute_activity(seq, name, fn, args, kwargs, retry, timeout)

    def _replay_observed(self, seq: int, name: str, rec: Event) -> None:
        """Tell observers about a replayed activity (its error, if it failed, is rebuilt)."""
        attempts = rec.get("attempts", 1)
        if self.observer.on_activity_started:
            self.observer.on_activity_started(ActivityStarted(self.run_id, name, seq, 1, True))
        if self.observer.on_activity_finished:
            err = rec.get("error")
            exc = rebuild_error(err, "json", self.at(rec)) if err else None  # never unpickles
            self.observer.on_activity_finished(
                ActivityFinished(self.run_id, name, seq, attempts, 0.0, exc, True)
            )

    def execute_activity(
        self,
        seq: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry,
        timeout: float | None,
        sync: bool | None = None,
    ) -> Any:
        """Execute activity `name` as operation `seq` with retries; journal its outcome.
        `sync=False` (a submitted one): runs on a thread of the activity pool, which never
        syncs; like every outcome, synced by the run's next effect (`before_effect`).

        `ActivitySteps.retrying` written out for this thread: the same steps without a
        generator to drive, which costs ~1.4 µs per activity on this, the hot path.
        """
        if sync is False:
            self._unsynced.on = True
            try:
                return self.execute_activity(seq, name, fn, args, kwargs, retry, timeout)
            finally:
                self._unsynced.on = False
        attempt = self.failed_attempts.get(seq, 0) + 1
        if attempt > 1:
            self.host.pause(self, self.backoff_left(seq, retry, attempt))
        first_started = started = self.attempt_started(seq, name, attempt)
        while True:
            try:
                result = run_attempt(fn, args, kwargs, timeout, (self, name, seq, attempt))
                # (`encode` checks this first: one call less for the usual value)
                value = result if is_exact_json(result) else encode(result, self.host.codec)
            except Exception as exc:
                delay = self.attempt_failed(seq, name, attempt, exc, retry)
                if delay is not None:
                    self.host.pause(self, delay)
                    if not self._cancel_pending():
                        attempt += 1
                        started = self.attempt_started(seq, name, attempt)
                        continue
                    exc = Cancelled(f"run {self.run_id!r} was cancelled")
                self.activity_failed(seq, name, attempt, (started, first_started), exc)
                raise exc
            self._journal_outcome(seq, name, attempt, (started, first_started), value)
            return result

    def _cancel_pending(self) -> bool:
        return self.cancel_requested and not self.cancel_delivered

    # -- other operations, provided by the engine's features -----------------------------
    def protocol_impl(self, proto: type) -> Any:
        """The implementation of `proto` registered for this run at start."""
        try:
            return self.protocols[proto]
        except KeyError:
            raise RuntimeError(
                f"no implementation of {proto.__qualname__} for run {self.run_id!r}: "
                f"pass protocols={{{proto.__qualname__}: Impl()}} to start/resume"
            ) from None

    def call_child(
        self,
        wf: Named,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: bool = True,
    ) -> Any:
        """Run `wf` as the durable child run `"<run_id>/<seq>"`; return its result when `wait`."""
        seq, rec = self.next(wf.name)
        if rec is None:
            cid = child_id(self.run_id, seq)
            self.append({"type": CHILD_STARTED, "seq": seq, "name": wf.name, "child_id": cid})
        if self.observer.on_child_started:
            cid = child_id(self.run_id, seq)
            self.observer.on_child_started(ChildStarted(self.run_id, cid, wf.name, rec is not None))
        self.before_effect()  # replayed: what was taken before it may still be pending
        try:
            return self.host.run_child(self, seq, wf, args, kwargs, wait)
        except Cancelled:
            self.child_cancelled()
            raise

    def child_cancelled(self) -> None:
        """A child's `Cancelled` reaches this run: if this run is being cancelled too (its
        deadline passed, which the child shared, or a cancel cascaded down), that was its
        own delivery, so its compensations that follow run normally."""
        if self.deadline is not None and self.deadline <= self.host.clock.time():
            self.expire()
        if self.cancel_requested:
            self.cancel_delivered = True

    def expire(self) -> None:
        """The run's deadline passed: request its cancellation, with the reason "timed out"
        (`deadlines.py` calls it when the deadline's timer fires)."""
        if not self.cancel_requested:
            self.cancel_reason = DEADLINE_PASSED
        self.cancel_requested = True
        self.wake.set()

    # -- waiting ----------------------------------------------------------------------------
    def deliver(self, messages: list[Event]) -> bool:
        """Take inbox messages (signals, cancellation) in; tell whether any matters to the run."""
        news = False
        for msg in messages:
            kind = msg.get("type")
            if kind == CANCEL:
                news = news or not self.cancel_requested
                self.cancel_requested = True
            elif kind == TERMINATE:
                self.terminated, news = Terminated(msg.get("reason")), True
            elif kind == SIGNAL:
                sid = msg.get("signal_id") or ""
                if sid in self._seen_signals:
                    continue  # the same signal_id sent twice is delivered once
                self._seen_signals.add(sid)
                if sid not in self.consumed_signals:
                    self.signals.setdefault(msg["name"], deque()).append(msg)
                    news = True
            else:
                news = True  # a child finished, or something a newer engine understands
        if news:
            self.wake.set()
        return news

    def look(
        self, seq: int, name: str, until: float | None, ready: Callable[[], Any]
    ) -> tuple[Any, float | None]:
        """One look of a wait at operation `seq`: `(value, None)` once `ready()` gives a
        value (or `TIMED_OUT` once `until` passes); else `(NOT_READY, seconds left or None)`.
        Cancellation is delivered here, recorded at `seq`; a closing engine raises `_Shutdown`.
        """
        self.wake.clear()  # before looking, so a poke after the look is not lost
        value, now = ready(), self.host.clock.time()
        late = overdue(self, until, now)  # timed out before this wait ended: cancelled below
        if value is not NOT_READY and not late:
            return value, None
        remaining = None if until is None else until - now
        if remaining is not None and remaining <= 0 and not late:
            return TIMED_OUT, None
        if self.terminated is not None:
            raise self.terminated
        if self._cancel_pending():
            self.cancel_delivered = True
            self.append({"type": CANCEL_DELIVERED, "seq": seq, "name": name})
            raise self._cancelled(seq, False)
        if self.host.closing:
            raise _Shutdown("the engine is shutting down")
        return NOT_READY, remaining

    def block(
        self, seq: int, name: str, until: float | None, ready: Callable[[], Any], hold: bool = False
    ) -> Any:
        """Wait at operation `seq` until `ready()` gives a value (returned) or `until` passes.

        Returns `TIMED_OUT` when `until` passes. A short wait (or one that must `hold` its
        thread, such as waiting for activities running beside it) keeps the thread; a long
        one raises `_Wait` and the engine executes the run again when it is due or poked.
        Cancellation is delivered here, recorded at `seq`.
        """
        while True:
            value, remaining = self.look(seq, name, until, ready)
            if value is not NOT_READY:
                return value
            if hold:
                self.wake.wait(
                    min(remaining, INLINE_WAIT) if remaining is not None else INLINE_WAIT
                )
                continue
            if remaining is None or remaining > self.host.clock.inline_wait:
                raise _Wait(name, until)
            self.wake.wait(remaining)

    def pop_signal(self, name: str) -> Event | None:
        """The oldest unconsumed signal called `name`, taken off its queue; None if none."""
        queue = self.signals.get(name)
        return queue.popleft() if queue else None

    def retries_child(self, seq: int, info: RunInfo) -> bool:
        """Whether this resume retries child run `info` (at `seq`): it failed this run."""
        failure = self.retry_children.get(seq)
        return info.status is RunStatus.FAILED and same_error(info.raw.get("error"), failure)

    def info(self) -> WorkflowInfo:
        """What this run knows about itself."""
        return WorkflowInfo(self.run_id, self.workflow, self.parent, seq=self.seq)


class ChildNotFinished(Exception):
    """Raised by the engine's `child_result` when a child run has not finished yet."""


NOT_READY: Any = object()  # `block`'s "keep waiting"
TIMED_OUT: Any = object()  # `block`'s "the deadline passed"


def child_id(parent: str, seq: int) -> str:
    """The id of the child run started at operation `seq` of run `parent`."""
    return f"{parent}/{seq}"
