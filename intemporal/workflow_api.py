"""What a workflow calls on its own run: timers, signals, events, recorded values, fan-out.

    @intemporal.workflow
    def expense(report: dict) -> str:
        intemporal.set_event("state", "waiting for approval")
        try:
            decision = intemporal.wait_for_signal("approve", timeout=3 * 86400)
        except intemporal.SignalTimeout:
            return "expired"
        intemporal.sleep(60)                       # durable: a crash does not restart it
        return decision["by"]

Each of these is a durable operation with a sequence number: recorded once, replayed after.
Outside a workflow they behave plainly (`sleep` sleeps, `now` reads the clock) where that
makes sense, and raise `RuntimeError` where it does not.
"""

from __future__ import annotations

import threading
import time
import uuid as _uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, ParamSpec, TypeVar

from .api import Activity, Workflow, stub
from .attempts import WorkflowInfo, step_info
from .codec import encode
from .errors import Cancelled, SignalTimeout
from .events import (
    EVENT_SET,
    JOIN_ANY,
    SIDE_EFFECT,
    SIGNAL_RECEIVED,
    SIGNAL_TIMEOUT,
    SIGNAL_WAIT,
    TIMER_STARTED,
)
from .observe import SignalReceived, TimerStarted
from .replay import NOT_READY, TIMED_OUT, ChildNotFinished, RunContext, current
from .store.base import Event

T = TypeVar("T")
P = ParamSpec("P")


def _ctx(what: str) -> RunContext:
    ctx = current()
    if ctx is None:
        raise RuntimeError(f"intemporal.{what}() can only be called inside a workflow")
    return ctx


def run_id() -> str:
    """The id of the run this workflow (or activity) executes in."""
    return _here("run_id").run_id


def info() -> WorkflowInfo:
    """The current run and step: `.run_id`, `.workflow`, `.parent`, `.activity`, `.seq`, `.attempt`.

    Inside an activity (on its own thread, or the thread of its timeout) `.activity` is its
    name, `.seq` its sequence number and `.attempt` its attempt, from 1; inside a workflow
    `.activity` and `.attempt` are None. Outside both it raises `RuntimeError`.
    """
    return _here("info")


def _here(what: str) -> WorkflowInfo:
    ctx, step = current(), step_info()
    if ctx is not None:
        return ctx.info()
    if step is not None:
        return step
    raise RuntimeError(f"intemporal.{what}() can only be called inside a workflow or an activity")


# -- timers ------------------------------------------------------------------------------------
def sleep(seconds: float) -> None:
    """Sleep durably: the fire time is journaled once, so after a crash only the rest is waited.

    A long sleep holds no thread: the run is suspended and woken when the timer fires.
    In an async workflow, `await intemporal.sleep_async(seconds)` instead.
    """
    ctx = current()
    if ctx is None:
        time.sleep(seconds)
        return
    _not_async(ctx, "sleep", "await intemporal.sleep_async(seconds)")
    seq, _, fire_at = start_timer(ctx, seconds)
    ctx.block(seq, "intemporal.sleep", fire_at, lambda: NOT_READY)


def start_timer(
    ctx: RunContext, seconds: float, deliver: bool = True
) -> tuple[int, Event | None, float]:
    """Take a timer's sequence number and journal its fire time once: `(seq, record, fire_at)`."""
    name = "intemporal.sleep"
    seq, rec = ctx.next(name, deliver)
    if rec is None:
        fire_at = round(ctx.host.clock.time() + max(0.0, seconds), 6)
        ctx.append(
            {
                "type": TIMER_STARTED,
                "seq": seq,
                "name": name,
                "fire_at": fire_at,
                "seconds": seconds,
            }
        )
    else:
        fire_at = rec.get("fire_at", 0.0)  # none in a recorded cancellation (async runs)
    if ctx.observer.on_timer_started and (rec is None or rec["type"] == TIMER_STARTED):
        replaying = rec is not None
        ctx.observer.on_timer_started(TimerStarted(ctx.run_id, seq, seconds, fire_at, replaying))
    return seq, rec, fire_at


def _not_async(ctx: RunContext, what: str, instead: str) -> None:
    """Refuse a call that would block an async workflow's event loop, naming what to use."""
    if getattr(ctx, "is_async", False):
        raise TypeError(
            f"intemporal.{what}() would block the event loop of async workflow run "
            f"{ctx.run_id!r}; use {instead}"
        )


# -- signals ------------------------------------------------------------------------------------
def _observe_signal(ctx: RunContext, name: str, signal_id: str | None, replaying: bool) -> None:
    if ctx.observer.on_signal_received:
        ctx.observer.on_signal_received(SignalReceived(ctx.run_id, name, signal_id, replaying))


def wait_for_signal(name: str, timeout: float | None = None) -> Any:
    """Return the payload of the oldest unconsumed signal `name`, waiting for one if needed.

    Signals sent before the wait are queued FIFO per name; each wait consumes one. With a
    `timeout` (seconds) that passes, raises `SignalTimeout`. A waiting run holds no thread.
    In an async workflow, `await intemporal.wait_for_signal_async(name, timeout)` instead.
    """
    ctx = _ctx("wait_for_signal")
    _not_async(ctx, "wait_for_signal", "await intemporal.wait_for_signal_async(name)")
    seq, rec, deadline, take = begin_signal_wait(ctx, name, timeout)
    if rec is not None and rec["type"] != SIGNAL_WAIT:
        return replayed_signal(ctx, name, rec)
    if rec is None:
        value = take()  # already queued: consume it without recording a wait
        if value is not NOT_READY:
            return value
        ctx.append(
            {
                "type": SIGNAL_WAIT,
                "seq": seq,
                "name": f"intemporal.signal:{name}",
                "deadline": deadline,
            }
        )
    value = ctx.block(seq, f"intemporal.signal:{name}", deadline, take)
    if value is TIMED_OUT:
        raise signal_timed_out(ctx, seq, name, timeout)
    return value


def begin_signal_wait(
    ctx: RunContext, name: str, timeout: float | None, deliver: bool = True
) -> tuple[int, Event | None, float | None, Callable[[], Any]]:
    """Take a signal wait's sequence number: `(seq, record, deadline, take)`; `take()` consumes
    the oldest queued signal `name` (journaled) and returns its payload, or `NOT_READY`."""
    op = f"intemporal.signal:{name}"
    seq, rec = ctx.next(op, deliver)
    if rec is not None:
        deadline = rec.get("deadline")
    else:
        deadline = None if timeout is None else round(ctx.host.clock.time() + timeout, 6)

    def take() -> Any:
        msg = ctx.pop_signal(name)
        if msg is None:
            return NOT_READY
        where = f"signal {name!r} in the inbox of run {ctx.run_id!r}"
        value = ctx.value(msg.get("payload"), where)  # refused: stops the run, signal kept
        ctx.append(
            {
                "type": SIGNAL_RECEIVED,
                "seq": seq,
                "name": op,
                "signal": name,
                "signal_id": msg.get("signal_id"),
                "payload": msg.get("payload"),
            }
        )
        _observe_signal(ctx, name, msg.get("signal_id"), False)
        return value

    return seq, rec, deadline, take


def replayed_signal(ctx: RunContext, name: str, rec: Event) -> Any:
    """The recorded outcome of a signal wait: its payload, or `SignalTimeout` raised again."""
    if rec["type"] == SIGNAL_TIMEOUT:
        raise SignalTimeout(f"no signal {name!r} within {rec.get('timeout')} s")
    _observe_signal(ctx, name, rec.get("signal_id"), True)
    return ctx.value(rec.get("payload"), rec)


def signal_timed_out(ctx: RunContext, seq: int, name: str, timeout: float | None) -> SignalTimeout:
    """Journal that the wait for signal `name` at `seq` timed out; return the error to raise."""
    op = f"intemporal.signal:{name}"
    ctx.append({"type": SIGNAL_TIMEOUT, "seq": seq, "name": op, "timeout": timeout})
    return SignalTimeout(f"no signal {name!r} within {timeout} s")


# -- events --------------------------------------------------------------------------------------
def set_event(key: str, value: Any) -> None:
    """Publish `value` under `key`, readable from outside with `engine.get_event(run_id, key)`."""
    ctx = _ctx("set_event")
    op = f"intemporal.set_event:{key}"
    seq, rec = ctx.next(op)
    if rec is None:
        ctx.append(
            {
                "type": EVENT_SET,
                "seq": seq,
                "name": op,
                "key": key,
                "value": encode(value, ctx.host.codec),
            }
        )


# -- recorded values ------------------------------------------------------------------------------
def side_effect(fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)` once and record its value; a replay returns the recorded value."""
    ctx = current()
    if ctx is None:
        return fn(*args)
    op = f"intemporal.side_effect:{getattr(fn, '__qualname__', 'fn')}"
    seq, rec = ctx.next(op)
    if rec is not None:
        return ctx.replayed(rec)
    ctx.before_effect()  # `fn` may act on the world: what was taken before it is durable
    value = fn(*args)
    ctx.append(
        {"type": SIDE_EFFECT, "seq": seq, "name": op, "result": encode(value, ctx.host.codec)}
    )
    return value


def now() -> datetime:
    """The current time (UTC), recorded once: a replay sees the same instant."""
    ctx = current()
    if ctx is None:
        return datetime.now(UTC)
    seq, rec = ctx.next("intemporal.now")
    if rec is None:
        ts = ctx.host.clock.time()
        ctx.append({"type": SIDE_EFFECT, "seq": seq, "name": "intemporal.now", "result": ts})
    else:
        ts = rec["result"]
    return datetime.fromtimestamp(ts, UTC)


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded once: a replay sees the same value."""
    ctx = current()
    if ctx is None:
        return _uuid.uuid4()
    seq, rec = ctx.next("intemporal.uuid4")
    if rec is None:
        value = _uuid.uuid4().hex
        ctx.append({"type": SIDE_EFFECT, "seq": seq, "name": "intemporal.uuid4", "result": value})
    else:
        value = rec["result"]
    return _uuid.UUID(value)


# -- fan-out ------------------------------------------------------------------------------------------
class DurableFuture(Generic[T]):
    """The pending result of `intemporal.submit(...)`: an activity or a child run."""

    def __init__(self, ctx: RunContext, seq: int) -> None:
        self.ctx, self.seq = ctx, seq
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._child: Callable[[], Any] | None = None
        self._fresh = False  # an activity executed now: its outcome was appended unsynced

    def _set(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error
        self._done.set()
        self.ctx.wake.set()  # join_any waits on the run's wake-up

    def done(self) -> bool:
        """True once the result is known (for a child run: once it has finished)."""
        if self._child is not None and not self._done.is_set():
            self._poll_child(wait=False)
        return self._done.is_set()

    def _poll_child(self, wait: bool) -> None:
        assert self._child is not None
        try:
            value = self._child() if wait else self.ctx.host.child_result(self.ctx, self.seq)
        except BaseException as exc:
            if not wait and isinstance(exc, ChildNotFinished):
                return
            if isinstance(exc, Exception):
                if isinstance(exc, Cancelled):
                    self.ctx.child_cancelled()
                self._set(error=exc)
                return
            raise
        self._set(value)

    def _wait(self) -> None:
        if self._child is not None and not self._done.is_set():
            self._poll_child(wait=True)
        self._done.wait()

    def result(self) -> T:
        """Wait for the result and return it, or raise the activity's or child's exception."""
        self._wait()
        if self._fresh:  # taken: its record is made durable by the run's next effect, or end
            self.ctx.unsynced_results = True
        if self._error is not None:
            raise self._error
        return self._value


def submit(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> DurableFuture[T]:
    """Start an activity (or a child workflow) without waiting; returns its `DurableFuture[T]`.

    `fn` is an activity, a child `@workflow`, or any callable (run as an activity); its
    arguments are checked against its signature by type checkers.
    Each gets its sequence number now, in program order, so replay is deterministic
    whatever order they finish in. Outside a workflow, `fn` runs at once.
    """
    ctx = _ctx("submit")
    _not_async(ctx, "submit", "the awaitable the call returns, with asyncio.gather or asyncio.wait")
    if isinstance(fn, Workflow):
        seq = ctx.seq + 1
        ctx.call_child(fn, args, kwargs, wait=False)
        fut: DurableFuture[T] = DurableFuture(ctx, seq)
        fut._child = lambda: ctx.host.run_child(ctx, seq, fn, args, kwargs, True)
        return fut
    act = fn if isinstance(fn, Activity) else stub(fn)
    seq, rec = ctx.next(act.name)
    fut = DurableFuture(ctx, seq)
    if rec is not None:
        try:
            fut._set(ctx.replayed(rec))
        except Exception as exc:
            fut._set(error=exc)
        return fut

    fut._fresh = True

    def job() -> None:
        try:
            fut._set(
                ctx.execute_activity(
                    seq, act.name, act.fn, args, kwargs, act.retry, act.timeout, sync=False
                )
            )
        except BaseException as exc:
            fut._set(error=exc)
        finally:
            ctx.inflight.discard(fut)

    ctx.before_effect()  # the outcomes taken so far are durable before this one executes
    ctx.inflight.add(fut)
    ctx.host.submit_activity(job)
    return fut


def join_all(futures: Sequence[DurableFuture[T]]) -> list[T]:
    """Wait for every future; return their results in order (raising the first error, in order).

    Futures of one result type `T` give a `list[T]`. The results are made durable
    together, by the run's next effect (an activity, a wait, a child run) or its end: one
    sync for the whole fan-out and what follows it.
    """
    for f in futures:
        f._wait()
    return [f.result() for f in futures]


def join_any(futures: Sequence[DurableFuture[T]]) -> tuple[int, T]:
    """Wait for the first future to finish; return `(index, result)`.

    The choice is recorded, so a replay returns the same index whatever the timing.
    """
    if not futures:
        raise ValueError("join_any() needs at least one future")
    ctx = _ctx("join_any")
    _not_async(ctx, "join_any", "asyncio.wait(..., return_when=asyncio.FIRST_COMPLETED)")
    op = "intemporal.join_any"
    seq, rec = ctx.next(op)
    if rec is not None:
        index = rec["index"]
    else:

        def first_done() -> Any:
            for i, f in enumerate(futures):
                if f.done():
                    return i
            return NOT_READY

        # Submitted activities report to the workflow's thread and lease: hold the thread
        # while waiting for them. Child runs alone are waited for without a thread, as
        # `result()` does: a child's end wakes the run, which replays to here (holding it
        # would deadlock a pool of N threads under N such parents).
        only_children = all(f._child is not None for f in futures)
        index = ctx.block(seq, op, None, first_done, hold=not only_children)
        ctx.append({"type": JOIN_ANY, "seq": seq, "name": op, "index": index})
    return index, futures[index].result()
