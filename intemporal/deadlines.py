"""Deadlines of whole runs: `engine.start(..., timeout=s)` and `@workflow(timeout=s)`.

A run's deadline is an epoch time recorded in its `run_started` (`deadline`), so it survives
a crash: whichever process executes the run next sees it. When it passes, the run gets
`intemporal.Cancelled` at its next durable operation (at once if it sleeps or waits), so
its sagas roll back, and it ends `cancelled` with the reason "timed out". A child run
inherits what is left of its parent's time (or its own timeout, if that ends sooner).

    first["deadline"] = deadline_for(now, start_timeout, wf.timeout, parent_deadline)
    timer = arm(ctx, clock)        # while the run executes; `timer.cancel()` after
"""

from __future__ import annotations

import threading
from typing import Protocol

from .clock import Clock

#: the reason recorded in `run_cancelled` (and said by `Cancelled`) when a deadline passed
DEADLINE_PASSED = "timed out"


class Timed(Protocol):
    """What this module reads of a run's context (`replay.RunContext`, which sits above)."""

    deadline: float | None  # epoch seconds, from `run_started`
    cancel_delivered: bool

    def expire(self) -> None: ...


#: seconds: a deadline further away than this (some 31 years) arms no timer
TIMER_MAX = 1e9


def deadline_for(
    now: float,
    timeout: float | None,
    workflow_timeout: float | None = None,
    inherited: float | None = None,
) -> float | None:
    """The deadline (epoch seconds) of a run created at `now`, or None for none.

    `timeout`: the start's (seconds), which wins over the workflow's `workflow_timeout`;
    `inherited`: the parent's deadline, which a child never outlives.
    """
    own = timeout if timeout is not None else workflow_timeout
    found = [t for t in (None if own is None else now + own, inherited) if t is not None]
    return round(min(found), 6) if found else None


def wake_by(until: float | None, ctx: Timed) -> float | None:
    """When a run suspending now must be executed again: at `until` (None: on a message
    only), or at its deadline if that comes first and its cancellation is not delivered."""
    deadline = ctx.deadline
    if deadline is None or ctx.cancel_delivered:
        return until
    return deadline if until is None else min(until, deadline)


def overdue(ctx: Timed, until: float | None, now: float) -> bool:
    """Whether the run's deadline passed before a wait that ends at `until` (epoch seconds;
    None: on a message only) ended, looked at `now`: then its cancellation, "timed out",
    comes first, whatever the wait finds (a run executed again after both its deadline and
    its timer passed, say after its process died, is timed out, not woken by the timer)."""
    deadline = ctx.deadline
    if deadline is None or ctx.cancel_delivered or now < deadline:
        return False
    if until is not None and until < deadline:
        return False  # the timer was due first: the wait ended before the deadline
    expire(ctx)
    return True


def expire(ctx: Timed) -> None:
    """Request the cancellation of a run whose deadline passed, with the reason "timed out"."""
    ctx.expire()


def arm(ctx: Timed, clock: Clock) -> threading.Timer | None:
    """Watch the deadline of the run `ctx` executes: expired now if it has passed, else a
    timer that expires it while it executes (cancel the timer when the execution stops)."""
    if ctx.deadline is None:
        return None
    left = ctx.deadline - clock.time()
    if left <= 0:
        expire(ctx)
        return None
    if left > TIMER_MAX:  # no execution lasts that long; a timer that far cannot be waited on
        return None
    timer = threading.Timer(left, expire, (ctx,))
    timer.daemon = True
    timer.start()
    return timer
