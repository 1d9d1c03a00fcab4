"""The journal's vocabulary: event types, the format version, and `fold()` over a run's events.

A run's journal is a list of events (dicts JSON can hold), each with a `type` named here
and a `ts`. The first is always `RUN_STARTED`, which carries `version`, the journal format
(`JOURNAL_VERSION`): a journal written by a newer intemporal is refused, both versions
named, instead of being misread. Every later event carries `owner`: the id of the engine
that executed that step (`Engine.engine_id`, unique per engine object), so a journal shows
which worker did what and that two never wrote it at once; a reader that predates the
field ignores it (the format version stays 1). Inbox messages (`SIGNAL`, `CANCEL`,
`CHILD_DONE`) are events too, kept apart from the journal.

    state = fold(store.read("order-42"))
    state.status, state.queue, state.parent, state.wake_at, state.steps

Pure: no I/O, no clock, nothing imported but the error tree. A store folds on read (the
file store), or keeps the fold's fields beside the journal (a database).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from .errors import JournalCorrupted

Event = dict[str, Any]

#: the journal format this intemporal writes; a journal with a higher one is refused
JOURNAL_VERSION = 1
#: the field naming the engine that appended an event (all events after `run_started`)
OWNER = "owner"
#: `run_started` field: the engine that began executing the run when it was started
EXECUTOR = "executor"

# -- the journal: the run's own events ---------------------------------------------------------
RUN_STARTED = "run_started"  # first line: workflow, args, code reference, queue, parent
RUN_COMPLETED = "run_completed"  # the workflow returned: `result`
RUN_FAILED = "run_failed"  # the workflow raised: `error` (a resume may retry it)
RUN_CANCELLED = "run_cancelled"  # the run ended on cancellation: `error`
RUN_SUSPENDED = "run_suspended"  # waiting without a thread: `reason`, `until` (wake-up time)
RUN_RESUMED = "run_resumed"  # a failed run resumed: its failed step is retried
RUN_RECOVERED = "run_recovered"  # a run whose previous owner died, taken over: `after`
ACTIVITY_COMPLETED = "activity_completed"  # seq, name, result
ACTIVITY_FAILED = "activity_failed"  # seq, name, error: retries exhausted
ATTEMPT_FAILED = "attempt_failed"  # seq, name, attempt, error, retry_in (seconds)
CHILD_STARTED = "child_started"  # seq, name, child_id
TIMER_STARTED = "timer_started"  # seq, name, fire_at
SIGNAL_WAIT = "signal_wait"  # seq, name, deadline
SIGNAL_RECEIVED = "signal_received"  # seq, name, signal, signal_id, payload
SIGNAL_TIMEOUT = "signal_timeout"  # seq, name, timeout
EVENT_SET = "event_set"  # seq, key, value (`set_event`)
SIDE_EFFECT = "side_effect"  # seq, name, result (`side_effect`, `now`, `uuid4`)
JOIN_ANY = "join_any"  # seq, name, index
CANCEL_DELIVERED = "cancel_delivered"  # seq, name: where the workflow got `Cancelled`
COMPENSATION_STARTED = "compensation_started"  # seq, name: a saga undoes a step
PATCH = "patch"  # patch_id, at (the step before it): `patched()` took the new path here
RUN_STUCK = "run_stuck"  # recoveries: recovered too often without progress; parked
RUN_FORKED = "run_forked"  # from_run, from_step: the events above are a copy of that run's

# -- the inbox: messages from any process --------------------------------------------------------
SIGNAL = "signal"  # name, payload, signal_id
CANCEL = "cancel"  # a cancellation request
CHILD_DONE = "child_done"  # child_id: a child run finished
TERMINATE = "terminate"  # reason: end the run at once, without compensations


def result_event(
    seq: int, name: str, attempts: int, started: int, result: Any, ts: int, owner: str
) -> Event:
    """An activity's result as the journal holds it (`ACTIVITY_COMPLETED`), from what a run
    context hands `Lease.append_result`: `started` and `ts` in whole microseconds since
    the epoch (seconds in the event), `result` stored as `codec.encode` made it."""
    return {
        "type": ACTIVITY_COMPLETED,
        "seq": seq,
        "name": name,
        "attempts": attempts,
        "started": started / 1_000_000,
        "result": result,
        "ts": ts / 1_000_000,
        OWNER: owner,
    }


class RunStatus(StrEnum):
    """The state of a run; the values are the lower-case names (`RunStatus.COMPLETED == "completed"`)."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Not a state a run goes through (iterating lists the six above): it marks, in
    #: listings only, a run whose journal cannot be read; `RunInfo.error` says why.
    UNREADABLE: ClassVar[RunStatus]
    #: A pseudo-state too (iterating lists the six above): a run recovered after a crash
    #: more than `Engine(max_recoveries=...)` times without progress, parked until a
    #: person resumes it (`engine.resume`, `intemporal resume RUN`).
    STUCK: ClassVar[RunStatus]

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> RunStatus | None:
        return {"unreadable": cls.UNREADABLE, "stuck": cls.STUCK}.get(str(value))

    @property
    def finished(self) -> bool:
        """True for the terminal states, which nothing changes any more."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


# A pseudo-member, as `enum.Flag` makes them: an instance outside the six listed states.
RunStatus.UNREADABLE = str.__new__(RunStatus, "unreadable")
RunStatus.UNREADABLE._name_, RunStatus.UNREADABLE._value_ = "UNREADABLE", "unreadable"
RunStatus.STUCK = str.__new__(RunStatus, "stuck")
RunStatus.STUCK._name_, RunStatus.STUCK._value_ = "STUCK", "stuck"


#: the events that end an execution, and the status each one gives the run
TERMINAL_EVENTS: dict[str, RunStatus] = {
    RUN_COMPLETED: RunStatus.COMPLETED,
    RUN_FAILED: RunStatus.FAILED,
    RUN_CANCELLED: RunStatus.CANCELLED,
}

#: the events that end a run for good; a failed run may still be resumed
FINAL_EVENTS = frozenset({RUN_COMPLETED, RUN_CANCELLED})

#: the events that start an execution again after the run stopped
RESTART_EVENTS = frozenset({RUN_RESUMED, RUN_RECOVERED, RUN_FORKED})


def check_version(first: Event) -> None:
    """Raise `JournalCorrupted` if `first` (a `run_started`) was written by a newer format.

    A journal without `version` predates the field: version 1.
    """
    version = first.get("version", 1)
    if not isinstance(version, int) or version > JOURNAL_VERSION:
        raise JournalCorrupted(
            f"of run {first.get('run_id', '?')!r}",
            1,
            f"journal format version {version!r} is newer than this intemporal reads "
            f"({JOURNAL_VERSION}): upgrade intemporal to read or resume this run",
        )


@dataclass(slots=True)
class RunState:
    """What a run's events say about it, without running anything (`fold`).

    `status` ignores ownership (a run is RUNNING from its first step until it ends or
    waits, whether or not a process executes it now); `wake_at` is the epoch time a
    waiting run's timer fires (None: it waits for a message only); `steps` counts
    completed activities; `outcome` is the event that ended the run (or {}); `owner`
    the engine that parked a waiting run, where it recorded one; `code_version` the
    `Engine(version=...)` that started it (None: none recorded); `priority` and
    `start_at` (epoch seconds, None: at once) order and delay its start in its queue.
    """

    run_id: str = ""
    workflow: str = "?"
    status: RunStatus = RunStatus.PENDING
    queue: str | None = None
    parent: str | None = None
    wake_at: float | None = None
    steps: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    owner: str | None = None
    last: str = ""
    outcome: Event = field(default_factory=dict)
    code_version: str | None = None
    priority: int = 0
    start_at: float | None = None


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState:
    """Fold `events` (oldest first) onto `state` (None: a run not yet started); a new state.

    Raises `JournalCorrupted` on a `run_started` of a newer journal format.
    """
    s = RunState() if state is None else replace(state, outcome=dict(state.outcome))
    for ev in events:
        t = ev["type"]
        s.last = t
        s.updated_at = ev.get("ts", s.updated_at)
        if t == RUN_STARTED:
            check_version(ev)
            s.run_id = ev.get("run_id", s.run_id)
            s.workflow = ev.get("workflow", "?")
            s.queue, s.parent = ev.get("queue"), ev.get("parent")
            s.priority, s.start_at = ev.get("priority", 0), ev.get("start_at")
            s.created_at = ev.get("ts", 0.0)
            s.code_version = ev.get("code_version")
            continue
        if t != RUN_SUSPENDED:
            s.wake_at = None
        if t in TERMINAL_EVENTS:
            s.status = TERMINAL_EVENTS[t]
            s.outcome = ev
        elif t == RUN_STUCK:
            s.status = RunStatus.STUCK
            s.outcome = ev
        elif t == RUN_SUSPENDED:
            s.status = RunStatus.WAITING
            s.owner, s.wake_at = ev.get("owner"), ev.get("until")
        elif t in RESTART_EVENTS:
            s.status = RunStatus.RUNNING
            s.outcome = {}
        elif t == ACTIVITY_COMPLETED:
            s.steps += 1
            s.status = RunStatus.RUNNING
        elif "seq" in ev:
            s.status = RunStatus.RUNNING
    return s


def failures_to_retry(events: list[Event]) -> tuple[set[int], dict[int, Event]]:
    """What `run_resumed` markers retry: activity failures (the indexes of their events),
    and child runs ({seq: the parent's `run_failed` error}).

    Every resume of a failed run retries the step that failed it, however many resumes
    failed before: the operation right before a `run_failed`, when it is an activity
    failure with the same error, or a child run (retried if it failed with that error,
    `replay.RunContext.retries_child`). Failures the workflow handled (caught, or compensated
    after) stay part of its history.
    """
    out: set[int] = set()
    children: dict[int, Event] = {}
    last_op: tuple[int, Event] | None = None
    pending: tuple[int, Event] | None = None  # (index of the failed operation, run_failed)
    for i, ev in enumerate(events):
        t = ev["type"]
        if t == RUN_FAILED and last_op is not None:
            op, run_err = last_op[1], ev.get("error") or {}
            retried = op["type"] == CHILD_STARTED or same_error(op.get("error"), run_err)
            pending = (last_op[0], run_err) if retried else None
        elif t == RUN_RESUMED and pending is not None:
            op = events[pending[0]]
            if op["type"] == CHILD_STARTED:
                children[op["seq"]] = pending[1]
            elif op["type"] == ACTIVITY_FAILED:
                out.add(pending[0])
            pending = None
        elif "seq" in ev and t != ATTEMPT_FAILED:
            last_op = (i, ev)
    return out, children


def same_error(a: Event | None, b: Event | None) -> bool:
    """Whether two recorded errors have the same type and message."""
    a, b = a or {}, b or {}
    return bool(a) and (a.get("type"), a.get("message")) == (b.get("type"), b.get("message"))


def with_signal_id(message: Event) -> Event:
    """`message`, with a fresh `signal_id` if it is a signal without one.

    A run takes each signal id once (a retried send is not a second signal): a signal sent
    without an id gets its own, so two of them are two signals, not one.
    """
    if message.get("type") == SIGNAL and not message.get("signal_id"):
        return {**message, "signal_id": uuid.uuid4().hex}
    return message
