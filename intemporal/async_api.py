"""What an async workflow awaits on its own run: durable timers and signal waits.

    @intemporal.workflow
    async def expense(report: dict) -> str:
        try:
            decision = await intemporal.wait_for_signal_async("approve", timeout=3 * 86400)
        except intemporal.SignalTimeout:
            return "expired"
        await intemporal.sleep_async(60)          # durable: a crash does not restart it
        return decision["by"]

The same operations as `intemporal.sleep` and `intemporal.wait_for_signal`, with the same
journal records, awaited on the run's event loop instead of blocking a thread (see
`intemporal.async_replay` for how an async run numbers and replays its operations).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .async_replay import AsyncRunContext, never
from .events import CANCEL_DELIVERED, SIGNAL_WAIT
from .replay import NOT_READY, TIMED_OUT, RunContext, current
from .workflow_api import begin_signal_wait, replayed_signal, signal_timed_out, start_timer


def _async_ctx(what: str, ctx: RunContext | None) -> AsyncRunContext:
    if not isinstance(ctx, AsyncRunContext):
        where = "outside an async workflow" if ctx is None else "in a plain (def) workflow"
        raise RuntimeError(f"intemporal.{what}() is for async workflows; called {where}")
    return ctx


async def sleep_async(seconds: float) -> None:
    """Sleep durably in an async workflow (`await intemporal.sleep_async(5)`).

    `seconds` may be a float. The fire time is journaled once: after a crash only the rest is
    waited. A sleeping run holds no thread. Outside a workflow it is `asyncio.sleep`.
    Raises `Cancelled` if the run is cancelled while it sleeps.
    """
    ctx = current()
    if ctx is None:
        await asyncio.sleep(seconds)
        return
    actx = _async_ctx("sleep_async", ctx)
    seq, rec, fire_at = start_timer(actx, seconds, deliver=False)
    if rec is not None and (rec["type"] == CANCEL_DELIVERED or actx.deliveries.expects(seq)):
        await actx.replay_outcome(seq, rec)  # fired (or cancelled) before: in its turn
        return
    await actx.wait(seq, "intemporal.sleep", fire_at, never)
    await actx.deliveries.turn(seq)


async def wait_for_signal_async(name: str, timeout: float | None = None) -> Any:
    """Return the payload of the oldest unconsumed signal `name`, awaiting one if needed.

    `intemporal.wait_for_signal` for async workflows: signals sent before the wait are
    queued FIFO per name; each wait consumes one. With a `timeout` (seconds) that passes,
    raises `SignalTimeout`; a cancellation raises `Cancelled`. A waiting run holds no thread.
    """
    actx = _async_ctx("wait_for_signal_async", current())
    seq, rec, deadline, take = begin_signal_wait(actx, name, timeout, deliver=False)
    op = f"intemporal.signal:{name}"
    if rec is not None and rec["type"] == CANCEL_DELIVERED:
        return await actx.replay_outcome(seq, rec)
    if rec is not None and rec["type"] != SIGNAL_WAIT:
        await actx.deliveries.turn(seq)
        return replayed_signal(actx, name, rec)
    value = NOT_READY
    if rec is None:
        value = take()  # already queued: consume it without recording a wait
        if value is NOT_READY:
            actx.append({"type": SIGNAL_WAIT, "seq": seq, "name": op, "deadline": deadline})
    if value is NOT_READY:
        value = await actx.wait(seq, op, deadline, take)
    if value is TIMED_OUT:
        error = signal_timed_out(actx, seq, name, timeout)
        await actx.deliveries.turn(seq)
        raise error
    await actx.deliveries.turn(seq)
    return value
