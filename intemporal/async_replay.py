"""The run context of an async workflow: durable operations as awaitables on an event loop.

    @intemporal.workflow
    async def crawl(urls: list[str]) -> list[bytes]:
        pages = await asyncio.gather(*(fetch(u) for u in urls))   # durable, in parallel
        await intemporal.sleep_async(5)
        return pages

The journal and the replay rules are the ones of `replay.py`; what differs is when things
happen, because several parts of one run (tasks) run at once:

- **Sequence numbers are taken at the call**, in program order: `fetch(u)` takes its number
  when it is called, before anything awaits it, so `asyncio.gather(fetch(a), fetch(b))`
  numbers `a` then `b` whatever order asyncio starts or finishes them in (even
  `asyncio.as_completed`, which wraps its arguments in a set). Nothing executes before
  the awaitable is awaited (or wrapped in a task): `fetch(a)` alone runs nothing.
- **Outcomes are delivered one at a time, in journal order.** Every completion (an activity's
  result or error, a signal taken, a timeout, a delivered cancellation) is journaled first,
  then handed to the task awaiting it only after the previous one was handed over and the
  run settled (no operation taken for a few loop turns). A replay hands the recorded
  outcomes over in the same order, so `asyncio.wait(..., return_when=FIRST_COMPLETED)`
  sees the same winner and the workflow takes the same branch. A timer's or a child run's
  end is not journaled in the parent: a replay places it by time, before the first event
  journaled after it fired (a race decided within a few milliseconds may replay either way).
  A replay whose code awaits its recorded steps in another order (it waits for an outcome
  queued behind one nothing awaits) raises `NonDeterminismError` after `STALL` seconds
  without a step, instead of hanging; the journal is left as it is.
- **Cancellation is delivered at an await**: the wait in progress (a sleep, a signal wait)
  raises `Cancelled`, and every async activity in flight is cancelled through its task
  (journaled as failed with `Cancelled`); a sync activity in flight sees it with
  `heartbeat()`. Calls made afterwards run normally (compensations).

An async run holds no thread while it waits: it is a task on the loop. Async activities run
on the loop (a task each, so a timeout or a cancellation stops them); plain activities run
on the engine's activity threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .activity_steps import Retry, Steps, advance
from .attempts import Step, enter_attempt, run_attempt
from .deadlines import wake_by
from .errors import ActivityTimeout, Cancelled, NonDeterminismError, _Shutdown
from .events import (
    ACTIVITY_COMPLETED,
    ACTIVITY_FAILED,
    CANCEL_DELIVERED,
    CHILD_STARTED,
    SIGNAL_RECEIVED,
    SIGNAL_TIMEOUT,
    TIMER_STARTED,
)
from .observe import ChildStarted
from .replay import NOT_READY, ChildNotFinished, Host, Named, RunContext, child_id
from .store.base import Event, Lease

QUIET_TURNS = 8  # loop turns without a new operation after which a run counts as settled
VIRTUAL_POLL = 0.01  # seconds between looks of a signal wait on a virtual clock, unawaited
STALL = 5.0  # seconds a replay may wait for a recorded step that nothing awaits
COMPLETIONS = {
    ACTIVITY_COMPLETED,
    ACTIVITY_FAILED,
    SIGNAL_RECEIVED,
    SIGNAL_TIMEOUT,
    CANCEL_DELIVERED,
}


class Deliveries:
    """The outcomes of one async run, handed to the operations awaiting them one at a time.

    `order` (sequence numbers) is the journal's order of the outcomes recorded so far; a
    new outcome joins the queue when its operation asks for its turn (`turn`). The head is
    handed over once its operation awaits it and the run has settled since the previous
    hand-over (or its start): `progress()` (a counter of operations taken) did not move
    for QUIET_TURNS loop turns.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        order: list[int],
        progress: Callable[[], int],
        stalled: Callable[[int], BaseException],
    ) -> None:
        self.loop, self.progress, self.stalled = loop, progress, stalled
        self.queue: collections.deque[int] = collections.deque(order)
        self.queued = set(order)
        self.awaiting: dict[int, asyncio.Future[None]] = {}
        self.dropped: set[int] = set()  # awaiting tasks cancelled by the workflow itself
        self._seen, self._quiet, self._pumping, self._settled = -1, 0, False, False

    def expects(self, seq: int) -> bool:
        """Whether `seq`'s outcome was recorded before this execution (it has a place)."""
        return seq in self.queued

    async def turn(self, seq: int) -> None:
        """Wait until the outcome of operation `seq` may be handed over."""
        if seq not in self.queued:
            self.queued.add(seq)
            self.queue.append(seq)
        fut = self.loop.create_future()
        self.awaiting[seq] = fut
        self._kick()
        try:
            await fut
        except asyncio.CancelledError:  # the workflow cancelled this await: skip its turn
            if not fut.done() or fut.cancelled():
                self.awaiting.pop(seq, None)
                self.dropped.add(seq)
                self._kick()
            raise

    def _kick(self) -> None:
        if not self._pumping:
            self._pumping = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pumping = False
        while self.queue and self.queue[0] in self.dropped:
            self.dropped.discard(self.queue.popleft())
        now = self.progress()
        if not self._settled:  # since the last hand-over (or the start)
            if now != self._seen:
                self._seen, self._quiet = now, 0
            if self._quiet < QUIET_TURNS:
                self._quiet += 1
                self._kick()
                return
            self._settled = True
        if not self.queue:
            return
        fut = self.awaiting.pop(self.queue[0], None)
        if fut is None:  # not awaited yet: its `turn` kicks again
            if self.awaiting:  # ... unless the run waits behind it for good
                self.loop.call_later(STALL, self._check, self.queue[0], now)
            return
        self.queue.popleft()
        fut.set_result(None)
        self._settled, self._seen = False, -1  # settle again before the next one
        self._kick()

    def _check(self, head: int, progress: int) -> None:
        """A replay that took no step for STALL seconds while awaiting outcomes queued after
        one nothing awaits (the code now awaits in another order) stops, unrecorded."""
        stuck = self.queue and self.queue[0] == head and head not in self.awaiting
        if not stuck or self.progress() != progress or not self.awaiting:
            return
        error = self.stalled(head)
        for fut in self.awaiting.values():
            if not fut.done():
                fut.set_exception(error)
        self.awaiting.clear()


class LoopWake(threading.Event):
    """A run's wake-up (`RunContext.wake`) that also wakes the run's waiters on its loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, notify: Callable[[], None]) -> None:
        super().__init__()
        self._loop, self._notify = loop, notify

    def set(self) -> None:
        super().set()
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits on it any more
            self._loop.call_soon_threadsafe(self._notify)


class AsyncRunContext(RunContext):
    """One execution of an async workflow: `RunContext` with awaitable operations."""

    is_async = True

    def __init__(
        self,
        host: Host,
        lease: Lease,
        events: list[Event],
        protocols: dict[type, Any] | None,
        loop: asyncio.AbstractEventLoop,
        ended: Callable[[str], float | None],
    ) -> None:
        super().__init__(host, lease, events, protocols)
        self.loop = loop
        self.wake = LoopWake(loop, self._notify)
        self.ticks = 0  # operations taken so far: how `Deliveries` sees the run settle
        self.finished = False  # the workflow returned: no more operations
        self._waiters: set[asyncio.Future[None]] = set()
        self._attempts: set[asyncio.Task[Any]] = set()  # async activity attempts in flight
        self._cancelling: set[asyncio.Task[Any]] = set()  # ... cancelled with the run
        self._live: set[asyncio.Task[Any]] = set()  # tasks inside an operation that executes
        order = self._order(events, ended)
        self.deliveries = Deliveries(loop, order, lambda: self.ticks, self._stalled)

    def idle(self) -> bool:
        """Whether no activity of the run executes now: its tasks only wait (a signal, a
        timer, a child run, their turn)."""
        return not self._live and not self._attempts

    def _stalled(self, seq: int) -> BaseException:
        rec = self.recorded[seq]
        name = str(rec.get("name", rec["type"]))
        self.poisoned = NonDeterminismError(seq, name, "<not awaited: another step awaited first>")
        return self.poisoned

    def _order(self, events: list[Event], ended: Callable[[str], float | None]) -> list[int]:
        """The recorded outcomes' sequence numbers in the order the run first saw them."""
        now = self.host.clock.time()
        keyed: list[tuple[tuple[int, int], int]] = []
        for seq, rec in self.recorded.items():
            line, kind = self.lines[seq], rec["type"]
            if kind in COMPLETIONS:
                keyed.append(((line, 0), seq))
                continue
            fired = rec.get("fire_at") if kind == TIMER_STARTED else None
            if kind == CHILD_STARTED:
                fired = ended(rec["child_id"])
            if fired is not None and fired <= now:  # placed before what was journaled after
                after = (i for i in range(line, len(events)) if events[i].get("ts", 0) > fired)
                keyed.append(((next(after, len(events)) + 1, -1), seq))
        return [seq for _, seq in sorted(keyed)]

    # -- taking operations ------------------------------------------------------------------
    def next(self, name: str, deliver: bool = True) -> tuple[int, Event | None]:
        if self.finished:
            raise _Shutdown(f"the workflow of run {self.run_id!r} returned")
        self.ticks += 1
        return super().next(name, deliver)

    def block(
        self, seq: int, name: str, until: float | None, ready: Callable[[], Any], hold: bool = False
    ) -> Any:
        raise TypeError(f"{name} would block the event loop of async workflow run {self.run_id!r}")

    def call_activity(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry,
        timeout: float | None,
    ) -> Coroutine[Any, Any, Any]:
        """Take activity `name`'s sequence number now; return the awaitable of its outcome."""
        seq, rec = self.next(name, deliver=False)
        if rec is not None:
            if rec["type"] != CANCEL_DELIVERED:
                obs = self.observer
                if obs.on_activity_started or obs.on_activity_finished:
                    self._replay_observed(seq, name, rec)
            return self.replay_outcome(seq, rec)

        def attempt(n: int) -> Awaitable[Any]:
            return self._attempt_async(seq, name, n, fn, args, kwargs, timeout)

        def execute() -> Awaitable[Any]:  # `execute_activity`, on the loop
            return run_steps_async(self.retrying(seq, name, retry, attempt, self._pause))

        return self.live(seq, name, execute)

    def call_child(
        self, wf: Named, args: tuple[Any, ...], kwargs: dict[str, Any], wait: bool = True
    ) -> Coroutine[Any, Any, Any]:
        """Take child run `"<run_id>/<seq>"`'s number now; return the awaitable of its result."""
        seq, rec = self.next(wf.name, deliver=False)
        cid = child_id(self.run_id, seq)
        if rec is None:
            self.append({"type": CHILD_STARTED, "seq": seq, "name": wf.name, "child_id": cid})
        if self.observer.on_child_started:
            self.observer.on_child_started(ChildStarted(self.run_id, cid, wf.name, rec is not None))
        return self._child(seq, rec, wf, args, kwargs)

    async def _child(
        self, seq: int, rec: Event | None, wf: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if rec is not None and rec["type"] == CANCEL_DELIVERED:
            return await self.replay_outcome(seq, rec)
        self.before_effect()  # the outcomes taken so far are durable before it starts
        self.host.run_child(self, seq, wf, args, kwargs, False)  # created once, started here

        def outcome() -> Any:
            try:
                return ("ok", self.host.child_result(self, seq))
            except ChildNotFinished:
                return NOT_READY
            except Exception as exc:
                return ("error", exc)

        while (ended := outcome()) is NOT_READY:  # the child's end pokes this run
            if self.host.closing:
                raise _Shutdown("the engine is shutting down")
            await self.changed(None)
        await self.deliveries.turn(seq)
        if ended[0] == "error":
            if isinstance(ended[1], Cancelled):
                self.child_cancelled()  # this run's own cancellation, if it has one pending
            raise ended[1]
        return ended[1]

    # -- outcomes -----------------------------------------------------------------------------
    async def replay_outcome(self, seq: int, rec: Event) -> Any:
        """A recorded outcome, handed over in its turn: its value, or its exception raised."""
        await self.deliveries.turn(seq)
        if rec["type"] == CANCEL_DELIVERED:
            raise self._cancelled(seq, True)
        return self.replayed(rec)

    async def live(self, seq: int, name: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """Execute operation `seq` (`work` journals its outcome), then hand it over in turn.

        A cancellation still pending is delivered here instead, journaled at `seq`.
        """
        task = asyncio.current_task()
        if task is not None:
            self._live.add(task)
        try:
            if self._cancel_pending():
                self.cancel_delivered = True
                self.append({"type": CANCEL_DELIVERED, "seq": seq, "name": name})
                await self.deliveries.turn(seq)
                raise self._cancelled(seq, False)
            try:
                value = await work()
            except Exception:
                await self.deliveries.turn(seq)
                raise
            await self.deliveries.turn(seq)
            return value
        finally:
            if task is not None:
                self._live.discard(task)

    async def wait(self, seq: int, name: str, until: float | None, ready: Callable[[], Any]) -> Any:
        """`block()` for the loop: wait at `seq` until `ready()` gives a value (returned; it
        journals it) or `until` passes (`TIMED_OUT`). The caller then takes its turn.
        A cancellation is delivered here: journaled at `seq`, raised in its turn."""
        while True:
            try:
                value, remaining = self.look(seq, name, until, ready)
            except Cancelled:
                await self.deliveries.turn(seq)
                raise
            if value is not NOT_READY:
                return value
            clock = self.host.clock
            advance = getattr(clock, "advance", None)
            due = wake_by(until, self)  # the run's deadline, if sooner, ends the wait too
            if advance is not None and due is not None:
                # A virtual clock (intemporal.testing): a timer is skipped at once; a signal
                # wait's timeout (or the run's deadline) once someone awaits the run's result
                # (a signal may come first).
                if ready is not never and clock.skip_to(due):
                    continue
                if ready is never:
                    advance(due - clock.time())
                    continue
                remaining = VIRTUAL_POLL if remaining is None else min(remaining, VIRTUAL_POLL)
            await self.changed(remaining)

    # -- waking -------------------------------------------------------------------------------
    async def changed(self, timeout: float | None) -> None:
        """Wait up to `timeout` seconds (None: no limit) for the run's wake-up."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.add(fut)
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(max(timeout, 0.0), _resolve, fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if timer is not None:
                timer.cancel()

    def _notify(self) -> None:
        """On the loop: wake every waiter; a cancellation cancels the async attempts in flight."""
        for fut in list(self._waiters):
            _resolve(fut)
        if self._cancel_pending() or self.terminated is not None:
            for task in self._attempts - self._cancelling:
                self._cancelling.add(task)
                task.cancel()

    # -- activities -------------------------------------------------------------------------------
    async def _attempt_async(
        self,
        seq: int,
        name: str,
        attempt: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        step: Step = (self, name, seq, attempt)
        if not inspect.iscoroutinefunction(fn):  # a plain function: on an activity thread
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()

            def job() -> None:
                try:
                    done.set_result(run_attempt(fn, args, kwargs, timeout, step))
                except BaseException as exc:
                    done.set_exception(exc)

            self.host.submit_activity(job)
            result = await asyncio.wrap_future(done)
            if inspect.iscoroutine(result):  # a protocol stub whose implementation is async
                result = await result
            return result
        context = contextvars.copy_context()
        context.run(enter_attempt, step)
        task = self.loop.create_task(fn(*args, **kwargs), context=context)
        self._attempts.add(task)
        try:
            finished, _ = await asyncio.wait({task}, timeout=timeout)
            if not finished:
                task.cancel()
                await asyncio.wait({task})
                raise ActivityTimeout(f"activity {name!r} timed out after {timeout} s")
            if task.cancelled() and task in self._cancelling:
                if self.terminated is not None:
                    raise self.terminated  # the run ends now: nothing more is journaled
                raise self._cancelled(seq, False)
            return task.result()
        finally:
            self._attempts.discard(task)
            self._cancelling.discard(task)
            if not task.done():  # the workflow cancelled its await: stop the attempt too
                task.cancel()

    async def _pause(self, seconds: float) -> None:
        """A retry backoff: cut short by cancellation; a closing engine raises `_Shutdown`."""
        until = self.host.clock.time() + seconds
        while (left := until - self.host.clock.time()) > 0 and not self._cancel_pending():
            if self.host.closing:
                break
            advance = getattr(self.host.clock, "advance", None)
            if advance is not None:
                advance(left)
                break
            await self.changed(left)
        if self.host.closing:
            raise _Shutdown("the engine is shutting down")

    # -- the workflow -----------------------------------------------------------------------------
    async def run_workflow(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Await the workflow; then cancel the operations still executing in tasks it left
        behind (as `asyncio.run` does: the loser of a race it did not cancel, the rest of an
        `asyncio.wait(..., timeout=)`), and let them end (they journal to this run's lease)
        before the run's verdict is written. A run stopped unfinished (the engine closing)
        cancels nothing: what is in flight then runs again on resume."""
        ended = False
        try:
            value = await fn(*args, **kwargs)
            ended = True
            return value
        except Exception:
            ended = True
            raise
        finally:
            self.finished = True
            others = self._live - {asyncio.current_task()}
            for task in others if ended else ():
                task.cancel()
            if others:
                await asyncio.wait(others)


async def run_steps_async(steps: Steps) -> Any:
    """`run_steps` on the loop: each call's awaitable is awaited (a cancellation thrown in too)."""
    finished, step = advance(steps, None, None)
    while not finished:
        try:
            value, error = await step(), None
        except (Exception, asyncio.CancelledError) as exc:
            value, error = None, exc
        finished, step = advance(steps, value, error)
    return step


def never() -> Any:
    """`ready` of a timer: nothing but time ends the wait."""
    return NOT_READY


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
