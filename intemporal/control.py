"""Stopping runs that must not go on: `engine.terminate()`, and the limit on recoveries.

    engine.terminate("order-42", reason="duplicate order")   # CANCELLED now, nothing undone
    Engine(max_recoveries=50)    # a run whose executions keep dying is parked as "stuck"

`terminate` ends a run at once: no `Cancelled` is delivered, so no saga compensates and no
`except` in the workflow runs; the run ends `cancelled`, its `run_cancelled` event saying
`terminated` and the reason. A run nobody executes (pending, waiting, orphaned) is ended
by the caller itself; one that a live process executes gets a `terminate` message and
stops at its next durable operation (an activity in flight finishes first).

A run recovered after a crash journals `run_recovered` before it executes anything new.
When `max_recoveries` of them follow one another without progress (no step recorded in
between), the next recovery parks the run instead (`run_stuck`, `RunStatus.STUCK`): a
poison input that kills its process each time stops being retried until a person resumes
it (`intemporal resume RUN`), which starts the count again.
"""

from __future__ import annotations

import contextlib

from .errors import Cancelled, RunNotFound
from .events import (
    CHILD_DONE,
    CHILD_STARTED,
    EXECUTOR,
    OWNER,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_FORKED,
    RUN_RECOVERED,
    RUN_RESUMED,
    RUN_STARTED,
    RUN_STUCK,
    RUN_SUSPENDED,
    TERMINAL_EVENTS,
    TERMINATE,
    Event,
)
from .failures import encode_error
from .store import Store

#: `Engine(max_recoveries=...)`'s default: DBOS parks a workflow after 100 attempts
MAX_RECOVERIES = 50


def restart_kind(last: str) -> str:
    """Why a run executes again, from the last event of its journal: "failure" (a failed or
    stuck run resumed), "waiting" (woken), "fork" (a fork's first execution) or "crash"."""
    if last in (RUN_FAILED, RUN_STUCK):
        return "failure"
    return {RUN_SUSPENDED: "waiting", RUN_FORKED: "fork"}.get(last, "crash")


def recoveries(events: list[Event]) -> int:
    """How many recoveries after a crash followed one another at the end of the journal,
    without a step recorded in between (a person's resume starts the count again)."""
    n = 0
    for ev in reversed(events):
        kind = ev["type"]
        if kind == RUN_RECOVERED:
            n += 1
        elif "seq" in ev or kind in (RUN_RESUMED, RUN_STARTED, RUN_FORKED):
            break
    return n


def first_died(started: Event, engine_id: str) -> bool:
    """Whether a run with only its `run_started` was begun by another engine (which died or
    stopped before its first step was journaled): executing it now is a recovery."""
    return started.get(EXECUTOR) not in (None, engine_id)


def stuck_event(count: int) -> Event:
    """The `run_stuck` event that parks a run after `count` recoveries without progress."""
    return {"type": RUN_STUCK, "recoveries": count}


def terminated(run_id: str, reason: str | None, codec: str) -> tuple[Event, Cancelled]:
    """The `run_cancelled` event of a terminated run, and the error its handles raise."""
    said = f": {reason}" if reason else ""
    error = Cancelled(f"run {run_id!r} was terminated{said}")
    event: Event = {
        "type": RUN_CANCELLED,
        "error": encode_error(error, codec),
        "reason": reason or "terminated",
        "terminated": True,
    }
    return event, error


def check_reason(reason: object) -> str | None:
    """`reason` if it is None or a string; `TypeError` otherwise."""
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"a reason is a string, not {reason!r}")
    return reason


def terminate_run(
    store: Store, run_id: str, reason: str | None, owner: str, codec: str, now: float, sync: bool
) -> list[str]:
    """End run `run_id` and its unfinished child runs at once (see the module's docstring).

    Returns the ids of the runs that were sent a `terminate` message (a live process
    executes them): the caller wakes them. Raises `RunNotFound` for an unknown id; a
    finished run is left as it is.
    """
    events = store.read(run_id)
    if events[-1]["type"] in TERMINAL_EVENTS:
        return []
    messaged: list[str] = []
    lease = store.claim(run_id, owner)
    if lease is None:  # executing elsewhere (or here): it stops at its next operation
        store.send(run_id, {"type": TERMINATE, "reason": reason, "ts": round(now, 6)})
        messaged.append(run_id)
    else:
        try:
            events = store.read(run_id)
            if events[-1]["type"] not in TERMINAL_EVENTS:
                event, _ = terminated(run_id, reason, codec)
                lease.append({**event, "ts": round(now, 6), OWNER: owner}, sync)
                parent = events[0].get("parent")
                if parent:  # a parent waiting for it wakes up to its end
                    with contextlib.suppress(RunNotFound):
                        store.send(parent, {"type": CHILD_DONE, "child_id": run_id, "ts": now})
                    messaged.append(parent)
        finally:
            lease.release()
    for ev in events:
        if ev["type"] == CHILD_STARTED:
            with contextlib.suppress(RunNotFound):  # recorded, never created
                messaged += terminate_run(store, ev["child_id"], reason, owner, codec, now, sync)
    return messaged
