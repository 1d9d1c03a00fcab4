"""Executing runs: one claimed run on a pool thread, top to bottom, then its bookkeeping.

A run executes on one pool thread holding its store lease from start to stop; activities
run inline on that thread unless they have a timeout or were submitted. A run that waits
(a long sleep, a signal, a child run) gives its thread and its lease back: the engine
parks it (`parking.py`) and executes it again, replaying its journal, when its timer is
due or a message reaches its inbox. `Executor` is a part of `intemporal.Engine`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from ..api import Workflow, is_async
from ..async_replay import AsyncRunContext
from ..attempts import _current
from ..clock import Clock
from ..codec import encode
from ..control import first_died, recoveries, restart_kind, stuck_event, terminated
from ..deadlines import arm, deadline_for, wake_by
from ..errors import (
    Cancelled,
    ContinueAsNew,
    RunStuck,
    SerializationError,
    StoreFailure,
    Suspend,
    Terminated,
    _Shutdown,
    _Wait,
    store_call,
    store_error,
)
from ..events import (
    CHILD_DONE,
    FINAL_EVENTS,
    OWNER,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_RECOVERED,
    RUN_RESUMED,
    RUN_SUSPENDED,
    TERMINAL_EVENTS,
)
from ..failures import encode_error
from ..handle import DONE, EngineCalls, Execution, chain_end, final_outcome
from ..lineage import continue_run, stamp
from ..observe import (
    Observers,
    RunCreated,
    RunFinished,
    RunResumed,
    RunStarted,
    RunStopped,
    RunSuspended,
)
from ..replay import ChildNotFinished, RunContext, child_id
from ..runs import check_same_run, first_event
from ..store import Event, Lease, RunStatus, Store
from .aio import LoopThread, Steps, drive, drive_async

if TYPE_CHECKING:
    from ..parking import Parking


def _on_loop_thread(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether this thread runs `loop` (where blocking on it would never return)."""
    try:
        return loop is not None and asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def closed_error() -> RuntimeError:
    return RuntimeError("the engine is closed; start a new Engine to run more work")


class Executor:
    """The engine's executing half: the `Host` a `RunContext` calls, and each execution."""

    store: Store
    clock: Clock
    codec: str
    sync: bool
    threads: int
    observer: Observers
    engine_id: str
    version: str | None
    max_recoveries: int
    halted: dict[str, BaseException]
    changed: threading.Condition
    _mutex: threading.RLock
    _closing: threading.Event
    _pool: ThreadPoolExecutor
    _activity_pool: ThreadPoolExecutor | None
    _active: dict[str, Execution]
    _sleeping: dict[str, tuple[Any, float | None]]
    _parking: Parking
    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: LoopThread | None
    _async_runs: set[concurrent.futures.Future[None]]

    if TYPE_CHECKING:
        from .queues import QueueRuntime

        _queue_rt: QueueRuntime

        def poke(self, run_id: str) -> None: ...
        def _hold(self) -> str: ...

    @property
    def _calls(self) -> EngineCalls:
        return cast(EngineCalls, self)  # the `Engine` this executor is a part of

    #: True once `close()` began (with `_closing` set): runs stop at their next durable
    #: operation. A plain attribute: every step of every run reads it (no call)
    closing: bool = False

    def pause(self, ctx: RunContext, seconds: float) -> None:
        """Wait `seconds` (a retry backoff), cut short by cancellation or shutdown; a long one
        on the workflow's thread parks the run (its attempt count is journaled) instead."""
        parkable = seconds > self.clock.inline_wait and threading.get_ident() == ctx.thread
        if parkable and not ctx._cancel_pending() and not self.closing:
            raise _Wait("retry backoff", round(self.clock.time() + seconds, 6))
        if seconds > 0:
            ctx.wake.clear()  # then look: a close() or cancel() after the look sets it again
            if not ctx._cancel_pending() and not self.closing:
                self.clock.wait(ctx.wake, seconds)
        if self.closing:
            raise _Shutdown("the engine is shutting down")

    def submit_activity(self, job: Any) -> None:
        """Run a submitted activity on the activity pool (never the run pool: no deadlock)."""
        with self._mutex:
            if self._activity_pool is None:
                self._activity_pool = ThreadPoolExecutor(
                    max(self.threads, 4), thread_name_prefix="intemporal-activity"
                )
        self._activity_pool.submit(job)

    def _launch(
        self, exe: Execution, events: list[Event] | None, lease: Lease | None = None
    ) -> Execution:
        with self._mutex:
            running = self._active.get(exe.run_id)
            if self.closing and lease is not None:
                lease.release()
            if self.closing:
                raise closed_error()
            if running is not None:
                self._join(running, lease)
                return running
            if exe.start_at is not None and exe.start_at > self.clock.time():
                if lease is not None:
                    lease.release()
                self._parking.park(exe, exe.start_at)  # start(delay=): pending until then,
                exe.done.set()  # unclaimed; a message executes it at once (`_relaunch`)
                self._parking.start()
                return exe
            self._active[exe.run_id] = exe
            exe.claiming = lease is None
            self._sleeping.pop(exe.run_id, None)
            self.halted.pop(exe.run_id, None)
        if is_async(exe.wf.fn):
            self._on_loop(exe, events, lease)
        else:
            self._pool.submit(self._execute, exe, events, lease)
        self._parking.start()
        return exe

    @staticmethod
    def _join(running: Execution, lease: Lease | None) -> None:
        """Under the mutex: `lease`, a claim of a run executing here, goes to `running` if
        its thread is claiming the run now (a claim that `lease` makes fail), else released."""
        if lease is not None and running.claiming and running.handoff is None:
            running.handoff = lease
        elif lease is not None:
            lease.release()

    def _claim_queued(self, exe: Execution) -> Lease | None:
        """Claim a run launched here without a lease; None if another process holds it. An
        adopter here (a `poke`, `recover`) holding the claim then hands its lease over
        (`_join`), or, if this claim gave up first, finds the run not executing here."""
        lease = None
        try:
            lease = self.store.claim(exe.run_id)
        finally:
            with self._mutex:
                handed, exe.handoff, exe.claiming = exe.handoff, None, False
                if lease is None and handed is None and self._active.get(exe.run_id) is exe:
                    del self._active[exe.run_id]  # given up: whoever holds it executes it
        if handed is not None and lease is not None:  # both cannot hold it: never happens
            handed.release()
        return lease if lease is not None else handed

    def _on_loop(
        self, exe: Execution, events: list[Event] | None, lease: Lease | None
    ) -> concurrent.futures.Future[None]:
        """Execute an async run as a task on the engine's event loop."""
        with self._mutex:
            if self._loop is None:
                self._loop_thread = LoopThread()
                self._loop = self._loop_thread.loop
            loop = self._loop
        steps = self._execution(exe, events, lease)
        future = asyncio.run_coroutine_threadsafe(drive_async(steps), loop)
        with self._mutex:
            self._async_runs.add(future)
        future.add_done_callback(self._async_runs.discard)
        return future

    def _stop_loop(self) -> None:
        """Wait for the async runs (they stop at their next await), then stop our loop."""
        concurrent.futures.wait(list(self._async_runs))
        with self._mutex:
            thread, self._loop_thread = self._loop_thread, None
        if thread is not None:
            thread.stop()

    def _execute_here(
        self, exe: Execution, events: list[Event] | None, lease: Lease | None = None
    ) -> bool:
        """Execute on the calling thread (claimed by the caller: `lease`); False if it is already."""
        with self._mutex:
            running = self._active.get(exe.run_id)
            admitted = not self.closing and running is None
            if admitted:
                self._active[exe.run_id] = exe
                self.halted.pop(exe.run_id, None)
            elif running is not None and not self.closing:
                self._join(running, lease)
                lease = None
        if not admitted:
            if lease is not None:
                lease.release()
            if self.closing:
                raise closed_error()
            return False
        self._parking.start()
        if is_async(exe.wf.fn):  # executed on the loop, waited for here
            if _on_loop_thread(self._loop):
                self._stopped(exe)
                if lease is not None:
                    lease.release()
                raise RuntimeError(
                    "a blocking call would wait on its own event loop: use "
                    "`await AsyncEngine.run(...)` or `await handle.result_async()`"
                )
            self._on_loop(exe, events, lease).result()
        else:
            self._execute(exe, events, lease)
        return True

    def _execute(
        self, exe: Execution, events: list[Event] | None, lease: Lease | None = None
    ) -> None:
        drive(self._execution(exe, events, lease))

    def _execution(
        self, exe: Execution, events: list[Event] | None, lease: Lease | None = None
    ) -> Steps:
        """One execution of a run, as steps (`runtime/aio.py`): it yields only to await an
        async workflow."""
        try:
            with store_call(exe.run_id, f"claim run {exe.run_id!r}"):
                if lease is None:
                    lease = self._claim_queued(exe)
                    # Claimed only now: another engine (an idempotent start of the same id,
                    # a worker's look) may have executed it since `events` were read.
                    events = None
                if lease is not None and events is None:
                    events = self.store.read(exe.run_id)
            if lease is None or events is None:  # another process owns it: the handle
                exe.finish("stopped")  # follows the store
                return
            yield from self._run_body(exe, lease, events)
        except StoreFailure as failure:  # the store failed: the caller gets why, not a hang
            exe.finish("error", failure.error)
        except BaseException as exc:  # KeyboardInterrupt & co: raised to the waiting handle
            exe.finish("error", exc)
        finally:
            if lease is not None:
                self._let_go(exe, lease)
            if exe.ctx is not None and self.observer.on_run_stopped:
                kind, value = exe.outcome or ("stopped", None)
                why = value if kind == "error" and not exe.terminal else None  # not a shutdown
                self.observer.on_run_stopped(RunStopped(exe.run_id, exe.ctx.workflow, why))
            self._stopped(exe)

    @staticmethod
    def _let_go(exe: Execution, lease: Lease) -> None:
        """Release a run's lease once its last outcomes are durable: a run that parks (a
        timer, a signal, a child) or stops unended (shutdown, an interrupt, divergent
        code) is let go to whoever claims it next only with what it took on disk."""
        ctx = exe.ctx
        try:
            if ctx is not None and ctx.store_failed is None:
                ctx.before_release()
        except StoreFailure as failure:  # the run stops unrecorded: resumable, said why
            exe.finish("error", failure.error)
        finally:
            try:
                lease.release()
            except Exception as exc:  # a last sync failed: the run may not be durable
                exe.finish("error", store_error(exc, f"sync run {exe.run_id!r}", exe.run_id))

    def _with_headers(self, first: Event) -> Event:
        """`first` (a new run's `run_started`) with the observers' `headers`, if any."""
        if self.observer.headers:
            rec = RunCreated(first["run_id"], first["workflow"], first.get("parent"))
            headers = self.observer.headers(rec)
            if headers:
                first["headers"] = headers
        return first

    def _stopped(self, exe: Execution) -> None:
        """Bookkeeping once an execution ends: park a waiting run, wake a parent, notify."""
        kind, value = exe.outcome or ("stopped", None)
        with self._mutex:
            if self._active.get(exe.run_id) is exe:  # not one that took over (`_claim_queued`)
                del self._active[exe.run_id]
            if kind == "error" and isinstance(value, BaseException) and not exe.terminal:
                self.halted[exe.run_id] = value  # unrecorded: its handles raise it
            if isinstance(value, _Wait) and not self.closing:
                if exe.rewake:
                    exe.rewake = False
                    exe.done.set()
                    self._relaunch(exe)
                else:
                    # A parked run keeps its id, code and arguments, nothing of its last
                    # execution: not its context (journal, futures), not the traceback of
                    # the suspension (the workflow's frames and their locals).
                    exe.ctx, exe.outcome = None, ("stopped", None)
                    self._parking.park(exe, value.until)
            exe.done.set()
            exe.done = DONE  # set for good: one shared event, not a lock and a condition each
            self.changed.notify_all()
        self._queue_rt.kick()  # a slot of its queue may be free: look now, not at the next poll
        if exe.terminal and exe.parent and not exe.inline:
            try:  # the parent may wait for this child, here or in another process
                self.store.send(
                    exe.parent,
                    {"type": CHILD_DONE, "child_id": exe.run_id, "ts": self.clock.time()},
                )
                self.poke(exe.parent)
            except Exception:  # a parent that was deleted: nobody waits any more
                pass

    def _relaunch(self, exe: Execution) -> None:
        fresh = Execution(exe.run_id, exe.wf, exe.args, exe.kwargs, exe.protocols, exe.parent)
        if not self.closing:
            self._launch(fresh, None)

    def _run_body(self, exe: Execution, lease: Lease, events: list[Event]) -> Steps:
        last = events[-1]["type"]
        if last in FINAL_EVENTS:
            exe.finish("stopped")  # finished by someone else meanwhile
            return
        # Resuming a failed run retries what failed. A run that stopped with neither a
        # verdict nor a suspension (its process died, or was stopped mid-run) says so in
        # its journal, with its first new event (`RunContext.marker`).
        after = restart_kind(last)
        if after == "crash" and recoveries(events) >= self.max_recoveries:
            with store_call(exe.run_id, f"write the journal of run {exe.run_id!r}"):
                lease.append(
                    {**stuck_event(recoveries(events)), "ts": self.clock.time()}, self.sync
                )
            exe.finish("error", RunStuck(exe.run_id, recoveries(events)))  # parked: for a person
            return
        if len(events) > 1 and after == "failure":
            resumed: Event = {
                "type": RUN_RESUMED,
                "ts": round(self.clock.time(), 6),
                OWNER: self.engine_id,
            }
            with store_call(exe.run_id, f"write the journal of run {exe.run_id!r}"):
                lease.append(resumed, self.sync)
            events.append(resumed)
        ctx: RunContext
        if is_async(exe.wf.fn):
            loop = asyncio.get_running_loop()
            ctx = AsyncRunContext(self, lease, events, exe.protocols, loop, self._child_ended)
        else:
            ctx = RunContext(self, lease, events, exe.protocols)
        exe.ctx = ctx
        if after == "crash" and (len(events) > 1 or first_died(events[0], self.engine_id)):
            ctx.marker = {"type": RUN_RECOVERED, "after": last}
            # The execution that died may have left lines unsynced (results appended before
            # its next effect, a journal `run()` created): durable before this one's first.
            ctx.unsynced_results = ctx.deferring
        obs, workflow = self.observer, ctx.workflow
        queue, headers = events[0].get("queue"), events[0].get("headers") or {}
        if len(events) == 1 and obs.on_run_started:
            obs.on_run_started(RunStarted(exe.run_id, workflow, ctx.parent, queue, headers=headers))
        elif len(events) > 1 and obs.on_run_resumed:
            obs.on_run_resumed(
                RunResumed(exe.run_id, workflow, after, True, queue, ctx.parent, headers)
            )
        with exe.inbox_lock, store_call(exe.run_id, f"read the inbox of run {exe.run_id!r}"):
            messages, exe.inbox_cursor = self.store.inbox(exe.run_id)
            ctx.deliver(messages)  # a poke meanwhile waits: it must not deliver out of order
        if ctx.terminated is not None:  # while no process executed it
            self._terminated(exe, ctx, events, ctx.terminated)
            return
        timer = arm(ctx, self.clock)  # a deadline that passed: cancellation requested now
        if ctx.cancel_requested and len(events) == 1:
            exc = Cancelled(
                f"run {exe.run_id!r} {ctx.cancel_reason or 'was cancelled'} before it started"
            )
            reason = {"reason": ctx.cancel_reason} if ctx.cancel_reason else {}
            ctx.append({"type": RUN_CANCELLED, "error": encode_error(exc, self.codec), **reason})
            exe.finish("error", exc, terminal=True)
            self._finished(exe, events, RunStatus.CANCELLED, exc)
            return
        start_at = events[0].get("start_at")  # start(delay=...): pending, parked until then
        if len(events) == 1 and start_at is not None and start_at > self.clock.time():
            exe.finish("stopped", _Wait("delayed start", start_at))
            if timer is not None:
                timer.cancel()
            return
        token = _current.set(ctx)
        try:
            try:
                if isinstance(ctx, AsyncRunContext):
                    result = yield ctx.run_workflow(exe.wf.fn, exe.args, exe.kwargs)
                else:
                    result = exe.wf.fn(*exe.args, **exe.kwargs)
                continued = None
            except ContinueAsNew as again:
                result, continued = None, again
            ctx.check_complete()
            self._wait_inflight(ctx)
            if continued is not None:
                nxt = continue_run(self, ctx, events, exe.wf, exe.protocols, continued)
                exe.finish("continued", nxt, terminal=True)
                self._finished(exe, events, RunStatus.COMPLETED, None)
                then = Execution(nxt, exe.wf, continued.args, continued.kwargs, exe.protocols)
                then.parent = exe.parent
                queue = events[0].get("queue")
                if exe.parent is None and queue and self._queue_rt.limited(queue) is not None:
                    self._queue_rt.started(queue)  # pending: its queue's gate admits it
                elif not self.closing:  # else it stays pending, for a worker to take
                    self._launch(then, None)
                return
            try:
                value = encode(result, self.codec)
            except SerializationError as exc:
                raise SerializationError(
                    f"the result of workflow {exe.wf.name!r} cannot be stored: {exc}"
                ) from exc
            ctx.append({"type": RUN_COMPLETED, "result": value})
            exe.finish("ok", result, terminal=True)
            self._finished(exe, events, RunStatus.COMPLETED, None)
        except Terminated as exc:
            self._wait_inflight(ctx)
            if ctx.store_failed is not None:
                raise ctx.store_failed from None
            self._terminated(exe, ctx, events, exc)
        except Suspend as exc:
            self._wait_inflight(ctx)
            if ctx.store_failed is not None or isinstance(exc, StoreFailure):
                raise ctx.store_failed or exc from None  # `_execute` reports it
            if isinstance(exc, _Wait):
                exc.until = wake_by(exc.until, ctx)  # a deadline wakes it to be cancelled
                with store_call(exe.run_id, "mark this engine alive in the store"):
                    owner = self._hold()
                ctx.append(
                    {
                        "type": RUN_SUSPENDED,
                        "reason": exc.reason,
                        "until": exc.until,
                        "owner": owner,
                    },
                    False,
                )
                if obs.on_run_suspended:
                    obs.on_run_suspended(RunSuspended(exe.run_id, workflow, exc.reason, exc.until))
            exe.finish("stopped", exc)
        except BaseException as exc:
            self._wait_inflight(ctx)
            if ctx.store_failed is not None:  # the workflow caught it: still no verdict
                raise ctx.store_failed from None
            if ctx.poisoned is not None:  # never record a verdict reached by divergent code
                exe.finish("error", ctx.poisoned)
            elif isinstance(exc, Exception):
                kind = RUN_CANCELLED if isinstance(exc, Cancelled) else RUN_FAILED
                why = (
                    {"reason": ctx.cancel_reason}
                    if kind == RUN_CANCELLED and ctx.cancel_reason
                    else {}
                )
                ctx.append({"type": kind, "error": encode_error(exc, self.codec), **why})
                exe.finish("error", exc, terminal=True)
                self._finished(exe, events, TERMINAL_EVENTS[kind], exc)
            else:
                exe.finish("error", exc)  # KeyboardInterrupt & co: raised to the waiter, resumable
        finally:
            _current.reset(token)
            if timer is not None:
                timer.cancel()

    def _terminated(
        self, exe: Execution, ctx: RunContext, events: list[Event], exc: Terminated
    ) -> None:
        """End a run that `engine.terminate()` stopped: CANCELLED, nothing compensated."""
        event, error = terminated(exe.run_id, exc.reason, self.codec)
        ctx.append(event)
        exe.finish("error", error, terminal=True)
        self._finished(exe, events, RunStatus.CANCELLED, error)

    def _finished(
        self, exe: Execution, events: list[Event], status: RunStatus, exc: BaseException | None
    ) -> None:
        if self.observer.on_run_finished:
            now = self.clock.time()
            took = now - events[0].get("ts", now)
            wf = events[0].get("workflow", "?")
            self.observer.on_run_finished(RunFinished(exe.run_id, wf, status, took, exc))

    @staticmethod
    def _wait_inflight(ctx: RunContext) -> None:
        # Submitted activities append to this lease: let them finish before it is released.
        for fut in list(ctx.inflight):
            fut._done.wait()

    def run_child(
        self,
        ctx: RunContext,
        seq: int,
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: bool,
    ) -> Any:
        """Create child run `<parent>/<seq>` once, execute it, and return its result if `wait`.

        A child the parent waits for runs inline on the parent's thread (no hand-off, no
        pool deadlock); if it must wait itself, the parent waits for it without a thread.
        """
        cid = child_id(ctx.run_id, seq)
        now = self.clock.time()
        first = first_event(cid, wf, args, kwargs, self.codec, None, ctx.protocols, ctx.run_id, now)
        stamp(first, self.version, deadline_for(now, None, wf.timeout, ctx.deadline))
        with store_call(cid, f"create child run {cid!r}"):
            fresh = not self.store.exists(cid)
            fresh = fresh and self.store.create(
                cid,
                self._with_headers(first),
                self.sync,
                self.engine_id,  # executed here
            )
            if not fresh:  # made by an earlier execution, or a run someone else put at that id
                check_same_run(cid, self.store.read(cid)[0], wf, parent=ctx.run_id)
            info = chain_end(self.store.summary, self.store.summary(cid))
        if info.run_id != cid and not info.status.finished:  # it continued as new: wait
            raise _Wait(f"child {info.run_id}", None)
        if info.status.finished and not (wait and ctx.retries_child(seq, info)):
            return final_outcome(info, self._calls, ctx) if wait else None
        exe = Execution(cid, wf, args, kwargs, ctx.protocols, ctx.run_id)
        with self._mutex:
            idle = cid not in self._active and not self.closing
        if not wait:
            if idle:
                self._launch(exe, None)
            return None
        exe.inline = True
        lease = None
        if idle and cid not in self._sleeping:
            with store_call(cid, f"claim child run {cid!r}"):
                lease = self.store.claim(cid, self.engine_id)
        if lease is not None and self._execute_here(exe, None, lease):
            kind, value = exe.outcome or ("stopped", None)
            if exe.terminal and kind == "ok":
                return value
            if exe.terminal and isinstance(value, BaseException):
                raise value
            exe.raise_halt()  # stopped unrecorded (the store, an interrupt): so does the parent
        raise _Wait(f"child {cid}", None)

    def _child_ended(self, cid: str) -> float | None:
        """When child run `cid` finished (epoch seconds), or None if it has not."""
        try:
            info = self.store.summary(cid)
        except Exception:  # recorded, never created (or unreadable): not finished
            return None
        return info.updated_at if info.status.finished else None

    def child_result(self, ctx: RunContext, seq: int) -> Any:
        """The result of child `<parent>/<seq>` if it finished; else raise `ChildNotFinished`."""
        cid = child_id(ctx.run_id, seq)
        with store_call(cid, f"read child run {cid!r}"):
            info = chain_end(self.store.summary, self.store.summary(cid))
        if not info.status.finished:
            raise ChildNotFinished(info.run_id)
        return final_outcome(info, self._calls, ctx)
