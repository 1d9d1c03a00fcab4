"""The engine: starts runs, executes them on threads, suspends, wakes, resumes and recovers them.

    with intemporal.Engine(store=".intemporal", threads=8) as engine:
        handle = engine.start(booking, order, run_id="order-42")   # returns at once
        result = handle.result(timeout=60)

A run executes on one pool thread, top to bottom, holding its store lease from start to
stop; activities run inline on that thread unless they have a timeout or were submitted.
A run that waits (a long sleep, a signal, a child run) gives its thread and its lease back:
the engine parks it (`parking.py`) and executes it again, replaying its journal, when its
timer is due or a message reaches its inbox.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .api import Workflow, require_workflow
from .clock import Clock
from .codec import encode
from .errors import (
    Cancelled,
    IntemporalError,
    RunNotFound,
    SerializationError,
    StoreFailure,
    Suspend,
    _Shutdown,
    _Wait,
    store_call,
    store_error,
)
from .failures import encode_error
from .handle import RunHandle, _Execution, final_outcome, wait_for_event
from .loader import load_workflow
from .parking import Parking
from .replay import ChildNotFinished, RunContext, _current, child_id, current
from .runs import check_same_run, first_event, new_run_id, rebuild_protocols, recorded_args
from .start_api import StartAPI, StartOptions
from .store import Event, Lease, RunInfo, RunStatus, Store, check_run_id, open_store
from .store.base import FINAL_EVENTS, TERMINAL_EVENTS

log = logging.getLogger("intemporal")


def _closed() -> RuntimeError:
    return RuntimeError("the engine is closed; start a new Engine to run more work")


class Engine(StartAPI):
    """Runs workflows durably on a thread pool over a `Store`.

    `store`: a directory path (`FileStore`), a `Store`, a URL, or None for
    `$INTEMPORAL_HOME`, else the nearest `.intemporal` directory in the current folder or
    a parent (as git finds `.git`), else `./.intemporal` (the `intemporal` command's rule). `durability="fsync"` makes an activity done
    once its result is on disk; `"flush"` once the OS has it (survives a killed process,
    not a power cut). `codec="auto"` stores JSON where a value round-trips exactly, else
    a pickle (executing a run unpickles: trust the store as code); `"json"` never writes
    nor reads a pickle (`DillRefused`). `worker=False` makes a client that records runs
    without executing them. Leaving `with` stops taking work, lets in-flight activities
    finish and leaves every unfinished run durable and resumable. `clock`: the time source
    (default the real one; `intemporal.testing` passes a virtual one that skips waits).
    `strict=True` refuses a store others may write (`UnsafeStore`).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        threads: int = 8,
        queues: list[str] | None = None,
        worker: bool = True,
        durability: str = "fsync",
        codec: str = "auto",
        clock: Clock | None = None,
        strict: bool = False,
    ) -> None:
        if durability not in ("fsync", "flush"):
            raise ValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
        if codec not in ("auto", "json"):
            raise ValueError(f"codec must be 'auto' or 'json', not {codec!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.store = open_store(store, strict=strict)
        self.clock = clock or Clock()
        self._owns_store = not isinstance(store, Store)  # opened from a path: ours to close
        self.threads, self.queues, self.worker = threads, queues, worker
        self.durability, self.codec, self.sync = durability, codec, durability == "fsync"
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="intemporal-run")
        self._activity_pool: ThreadPoolExecutor | None = None
        self._active: dict[str, _Execution] = {}
        self._mutex = threading.RLock()
        self.changed = threading.Condition(self._mutex)  # notified whenever an execution stops
        self._closing = threading.Event()
        self.adopted: collections.deque[RunHandle[Any]] = collections.deque(maxlen=10_000)
        """Handles of runs this worker took as clients recorded them (for `intemporal worker`)."""
        self.halted: dict[str, BaseException] = {}
        """Run id -> the error its execution here stopped on, unrecorded (a store failure, the
        workflow's KeyboardInterrupt): handles raise it, `recover()` leaves it to `resume()`."""
        self._parking = Parking(
            self.store,
            self._mutex,
            self._closing,
            on_message=self.poke,
            on_due=self._relaunch,
            held=lambda: list(self._active) + list(self._sleeping),
            clock=self.clock,
            busy=lambda: bool(self._active),
        )
        self._sleeping = self._parking.parked  # run id -> (execution, due): parked runs
        self.engine_id = uuid.uuid4().hex[:16]
        self._release_hold: Any = None

    # -- Host protocol, used by RunContext ------------------------------------------------
    @property
    def closing(self) -> bool:
        """True once `close()` began: runs stop at their next durable operation."""
        return self._closing.is_set()

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

    # -- starting and resuming (`start` and `run` are typed in `start_api.py`) --------------
    def _start(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: StartOptions,
        inline: bool,
    ) -> RunHandle[Any]:
        wf = require_workflow(fn, "engine.start()")
        run_id = check_run_id(opts.run_id) if opts.run_id is not None else new_run_id()
        protocols, queue = opts.protocols, opts.queue
        if self.worker and self.closing:  # before anything is written: nobody would run it
            raise _closed()
        now = self.clock.time()
        start_at = None if opts.delay is None else round(now + opts.delay, 6)
        first = first_event(run_id, wf, args, kwargs, self.codec, queue, protocols, now=now)
        if start_at is not None:
            first["start_at"] = start_at
        exe = _Execution(run_id, wf, args, kwargs, protocols)
        exe.start_at = start_at
        if inline and self.worker and current() is None:
            # `run()` waits anyway: execute on the caller's thread, no pool hand-off; the
            # run is durable by its first durable step, before `run()` can return.
            with store_call(run_id, f"create run {run_id!r}", caller=True, started=False):
                lease = self.store.create_claimed(run_id, first, self.sync)
            if lease is not None:
                self._execute_here(exe, [first], lease)
                return RunHandle(self, run_id, exe)
        elif self._create(run_id, first):
            if not self.worker:
                self.store.notify(run_id)  # so a running worker takes it without polling
                return RunHandle(self, run_id)
            return RunHandle(self, run_id, self._launch(exe, [first]))
        return self._existing(run_id, wf, protocols)

    def _create(self, run_id: str, first: Event) -> bool:
        with store_call(run_id, f"create run {run_id!r}", caller=True, started=False):
            return self.store.create(run_id, first, self.sync)

    def _existing(
        self, run_id: str, wf: Workflow[Any, Any], protocols: dict[type, Any]
    ) -> RunHandle[Any]:
        check_same_run(run_id, self.store.read(run_id)[0], wf)
        info = self.store.summary(run_id)
        left_behind = info.status in (RunStatus.PENDING, RunStatus.RUNNING) or info.orphaned
        busy = run_id in self._active or run_id in self._sleeping
        if self.worker and left_behind and not busy and not self.store.is_claimed(run_id):
            return self.resume(run_id, protocols=protocols or None)
        return RunHandle(self, run_id, self._active.get(run_id))

    def resume(
        self,
        run_id: str,
        *,
        protocols: Mapping[Any, Any] | None = None,
        imports: list[str] | None = None,
    ) -> RunHandle[Any]:
        """Continue a run that is not completed (crashed, failed, waiting, or left behind).

        Completed activities are not run again; the one in flight at a crash runs again.
        A completed or cancelled run is left as it is; a failed one is retried from its
        failed step with a fresh retry budget.
        """
        check_run_id(run_id)
        with store_call(run_id, f"read the journal of run {run_id!r}", caller=True):
            events = self.store.read(run_id)
        if events[-1]["type"] in FINAL_EVENTS:
            return RunHandle(self, run_id)
        with self._mutex:
            if run_id in self._active:
                return RunHandle(self, run_id, self._active[run_id])
        first = events[0]
        wf = load_workflow(first, imports, copies=self.codec == "auto")
        args, kwargs = recorded_args(first, self.codec)
        impls = rebuild_protocols(first) if protocols is None else dict(protocols)
        exe = _Execution(run_id, wf, args, kwargs, impls, first.get("parent"))
        exe.start_at = first.get("start_at")
        return RunHandle(self, run_id, self._launch(exe, None))

    def recover(self) -> list[RunHandle[Any]]:
        """Resume every unfinished run that no live process owns; return their handles.

        From then on the engine also follows the store's doorbell, so it takes new pending
        runs recorded by clients (`Engine(worker=False)`) of the queues it serves.
        """
        self._parking.start()
        handles = []
        for run_id in list(self.store.unfinished()):
            if run_id in self._active or run_id in self._sleeping or run_id in self.halted:
                continue
            try:
                info = self.store.summary(run_id)
                parked = info.status is RunStatus.WAITING and not info.orphaned  # a live engine's
                if info.status.finished or parked or self.store.is_claimed(run_id):
                    continue
                if self._serves(run_id):
                    handles.append(self.resume(run_id))
            except Exception as exc:  # one unreadable or unloadable run must not stop the rest
                log.warning("cannot recover run %r: %s", run_id, exc)
        return handles

    def _launch(self, exe: _Execution, events: list[Event] | None) -> _Execution:
        with self._mutex:
            if self.closing:
                raise _closed()
            running = self._active.get(exe.run_id)
            if running is not None:
                return running
            if exe.start_at is not None and exe.start_at > self.clock.time():
                self._parking.park(exe, exe.start_at)  # start(delay=): pending until then,
                exe.done.set()  # unclaimed; a message executes it at once (`_relaunch`)
                self._parking.start()
                return exe
            self._active[exe.run_id] = exe
            self._sleeping.pop(exe.run_id, None)
            self.halted.pop(exe.run_id, None)
        self._pool.submit(self._execute, exe, events)
        self._parking.start()
        return exe

    def _execute_here(
        self, exe: _Execution, events: list[Event] | None, lease: Lease | None = None
    ) -> bool:
        """Execute on the calling thread (claimed by the caller: `lease`); False if it is already."""
        with self._mutex:
            admitted = not self.closing and exe.run_id not in self._active
            if admitted:
                self._active[exe.run_id] = exe
                self.halted.pop(exe.run_id, None)
        if not admitted:
            if lease is not None:
                lease.release()
            if self.closing:
                raise _closed()
            return False
        self._parking.start()
        self._execute(exe, events, lease)
        return True

    def _execute(
        self, exe: _Execution, events: list[Event] | None, lease: Lease | None = None
    ) -> None:
        try:
            with store_call(exe.run_id, f"claim run {exe.run_id!r}"):
                if lease is None:
                    lease = self.store.claim(exe.run_id)
                if lease is not None and events is None:
                    events = self.store.read(exe.run_id)
            if lease is None or events is None:  # another process owns it: the handle
                exe.finish("stopped")  # follows the store
                return
            self._run_body(exe, lease, events)
        except StoreFailure as failure:  # the store failed: the caller gets why, not a hang
            exe.finish("error", failure.error)
        except BaseException as exc:  # KeyboardInterrupt & co: raised to the waiting handle
            exe.finish("error", exc)
        finally:
            if lease is not None:
                try:
                    lease.release()
                except Exception as exc:  # a last sync failed: the run may not be durable
                    exe.finish("error", store_error(exc, f"sync run {exe.run_id!r}", exe.run_id))
            self._stopped(exe)

    def _stopped(self, exe: _Execution) -> None:
        """Bookkeeping once an execution ends: park a waiting run, wake a parent, notify."""
        kind, value = exe.outcome or ("stopped", None)
        with self._mutex:
            self._active.pop(exe.run_id, None)
            if kind == "error" and isinstance(value, BaseException) and not exe.terminal:
                self.halted[exe.run_id] = value  # unrecorded: its handles raise it
            if isinstance(value, _Wait) and not self.closing:
                if exe.rewake:
                    exe.rewake = False
                    exe.done.set()
                    self._relaunch(exe)
                else:
                    self._parking.park(exe, value.until)
            exe.done.set()
            self.changed.notify_all()
        if exe.terminal and exe.parent and not exe.inline:
            try:  # the parent may wait for this child, here or in another process
                self.store.send(
                    exe.parent,
                    {"type": "child_done", "child_id": exe.run_id, "ts": self.clock.time()},
                )
                self.poke(exe.parent)
            except Exception:  # a parent that was deleted: nobody waits any more
                pass

    def _relaunch(self, exe: _Execution) -> None:
        fresh = _Execution(exe.run_id, exe.wf, exe.args, exe.kwargs, exe.protocols, exe.parent)
        if not self.closing:
            self._launch(fresh, None)

    def _run_body(self, exe: _Execution, lease: Lease, events: list[Event]) -> None:
        last = events[-1]["type"]
        if last in FINAL_EVENTS:
            exe.finish("stopped")  # finished by someone else meanwhile
            return
        if last == "run_failed":  # resuming a failed run: retry what failed
            resumed: Event = {"type": "run_resumed", "ts": round(self.clock.time(), 6)}
            with store_call(exe.run_id, f"write the journal of run {exe.run_id!r}"):
                lease.append(resumed, self.sync)
            events.append(resumed)
        ctx = exe.ctx = RunContext(self, lease, events, exe.protocols)
        if "seq" in events[-1]:  # its last execution stopped unrecorded: a crash (or a kill)
            ctx.marker = {"type": "run_recovered"}  # written before what it records next
        with store_call(exe.run_id, f"read the inbox of run {exe.run_id!r}"):
            messages, exe.inbox_cursor = self.store.inbox(exe.run_id)
        ctx.deliver(messages)
        if ctx.cancel_requested.is_set() and len(events) == 1:
            exc = Cancelled(f"run {exe.run_id!r} was cancelled before it started")
            ctx.append({"type": "run_cancelled", "error": encode_error(exc, self.codec)})
            exe.finish("error", exc, terminal=True)
            return
        start_at = events[0].get("start_at")  # start(delay=...): pending, parked until then
        if len(events) == 1 and start_at is not None and start_at > self.clock.time():
            exe.finish("stopped", _Wait("delayed start", start_at))
            return
        token = _current.set(ctx)
        try:
            result = exe.wf.fn(*exe.args, **exe.kwargs)
            ctx.check_complete()
            self._wait_inflight(ctx)
            try:
                value = encode(result, self.codec)
            except SerializationError as exc:
                raise SerializationError(
                    f"the result of workflow {exe.wf.name!r} cannot be stored: {exc}"
                ) from exc
            ctx.append({"type": "run_completed", "result": value})
            exe.finish("ok", result, terminal=True)
        except Suspend as exc:
            self._wait_inflight(ctx)
            if ctx.store_failed is not None or isinstance(exc, StoreFailure):
                raise ctx.store_failed or exc from None  # `_execute` reports it
            if isinstance(exc, _Wait):
                with store_call(exe.run_id, "mark this engine alive in the store"):
                    owner = self._hold()
                ctx.append(
                    {
                        "type": "run_suspended",
                        "reason": exc.reason,
                        "until": exc.until,
                        "owner": owner,
                    },
                    False,
                )
            exe.finish("stopped", exc)
        except BaseException as exc:
            self._wait_inflight(ctx)
            if ctx.store_failed is not None:  # the workflow caught it: still no verdict
                raise ctx.store_failed from None
            if ctx.poisoned is not None:  # never record a verdict reached by divergent code
                exe.finish("error", ctx.poisoned)
            elif isinstance(exc, Exception):
                kind = "run_cancelled" if isinstance(exc, Cancelled) else "run_failed"
                ctx.append({"type": kind, "error": encode_error(exc, self.codec)})
                exe.finish("error", exc, terminal=True)
            else:
                exe.finish("error", exc)  # KeyboardInterrupt & co: raised to the waiter, resumable
        finally:
            _current.reset(token)

    @staticmethod
    def _wait_inflight(ctx: RunContext) -> None:
        # Submitted activities append to this lease: let them finish before it is released.
        for fut in list(ctx.inflight):
            fut._done.wait()

    # -- child runs -----------------------------------------------------------------------------
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
        with store_call(cid, f"create child run {cid!r}"):
            fresh = not self.store.exists(cid) and self.store.create(cid, first, self.sync)
            if not fresh:  # made by an earlier execution, or a run someone else put at that id
                check_same_run(cid, self.store.read(cid)[0], wf, parent=ctx.run_id)
            info = self.store.summary(cid)
        if info.status.finished and not (wait and ctx.retries_child(seq, info)):
            return final_outcome(info, self, ctx) if wait else None
        exe = _Execution(cid, wf, args, kwargs, ctx.protocols, ctx.run_id)
        with self._mutex:
            idle = cid not in self._active and not self.closing
        if not wait:
            if idle:
                self._launch(exe, None)
            return None
        exe.inline = True
        with store_call(cid, f"read child run {cid!r}"):
            idle = idle and cid not in self._sleeping and not self.store.is_claimed(cid)
        if idle and self._execute_here(exe, None):
            kind, value = exe.outcome or ("stopped", None)
            if exe.terminal and kind == "ok":
                return value
            if exe.terminal and isinstance(value, BaseException):
                raise value
            exe.raise_halt()  # stopped unrecorded (the store, an interrupt): so does the parent
        raise _Wait(f"child {cid}", None)

    def child_result(self, ctx: RunContext, seq: int) -> Any:
        """The result of child `<parent>/<seq>` if it finished; else raise `ChildNotFinished`."""
        cid = child_id(ctx.run_id, seq)
        with store_call(cid, f"read child run {cid!r}"):
            info = self.store.summary(cid)
        if not info.status.finished:
            raise ChildNotFinished(info.run_id)
        return final_outcome(info, self, ctx)

    # -- messages from outside: cancellation, signals, child completions --------------------------
    def poke(self, run_id: str) -> None:
        """Look at a run's inbox now: deliver to it if executing here, wake it if waiting here.

        A worker also takes a pending run that a client (`worker=False`) just recorded.
        """
        with self._mutex:
            exe = self._active.get(run_id)
            parked = self._sleeping.get(run_id) if exe is None else None
            if parked is not None and not self.closing:
                self._relaunch(parked[0])
        if exe is None:
            if parked is None:
                self._adopt(run_id)  # store reads and maybe imports: not under the mutex
            return
        if exe.ctx is None:
            self._rewake(exe)
            return
        try:
            messages, exe.inbox_cursor = self.store.inbox(run_id, exe.inbox_cursor)
        except Exception:  # a run deleted under us: its execution reports it
            return
        if exe.ctx.deliver(messages):
            self._rewake(exe)

    def _rewake(self, exe: _Execution) -> None:
        # The execution may have stopped since `poke` looked: set the flag under the mutex
        # `_stopped` reads it with, or wake the run now if it was parked meanwhile (else a
        # message delivered to a context that just suspended is lost until the next one).
        with self._mutex:
            if self._active.get(exe.run_id) is exe:
                exe.rewake = True
                return
            parked = self._sleeping.get(exe.run_id)
            if parked is not None and parked[0] is exe and not self.closing:
                self._relaunch(exe)

    def _adopt(self, run_id: str) -> None:
        """Execute a pending or orphaned run of a queue this engine serves, if nobody owns it."""
        if not self.worker or self.closing:
            return
        try:
            info = self.store.summary(run_id)
            left_behind = info.status is RunStatus.PENDING or info.orphaned
            left_behind &= run_id not in self.halted
            if left_behind and self._serves(run_id) and not self.store.is_claimed(run_id):
                self.adopted.append(self.resume(run_id))
        except Exception as exc:  # not ours to report to anyone: the run stays pending
            log.warning("cannot take run %r: %s", run_id, exc)

    def _serves(self, run_id: str) -> bool:
        """Whether this engine takes runs of that run's queue (`Engine(queues=...)`)."""
        if self.queues is None:
            return True
        return self.store.read(run_id)[0].get("queue") in self.queues

    # -- looking at runs ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo:
        """The run's `RunInfo` (never unpickled); raises `RunNotFound` for an unknown id."""
        return self.store.summary(check_run_id(run_id))

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally filtered by status and workflow name."""
        return self.store.list_runs(status=status, workflow=workflow, limit=limit)

    def history(self, run_id: str) -> list[Event]:
        """The run's journal events, oldest first (each has `type`, `ts`, and `seq` where it has one)."""
        return self.store.read(check_run_id(run_id))

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle to an existing run; raises `RunNotFound` for an unknown id."""
        if not self.store.exists(check_run_id(run_id)):
            raise RunNotFound(run_id)
        return RunHandle(self, run_id, self._active.get(run_id))

    def get_event(self, run_id: str, key: str, timeout: float | None = None) -> Any:
        """The latest value the run published under `key` with `intemporal.set_event`.

        Waits up to `timeout` seconds (None: until the run finishes) for the run to exist and
        for a first value: None if there is none by then; `RunNotFound` if there is no run.
        """
        return wait_for_event(self, run_id, key, timeout)

    # -- control -------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> None:
        """Request cancellation: the workflow gets `Cancelled` at its next durable operation.

        A sleeping or signal-waiting run gets it at once; running children are cancelled
        too. Cancelling a finished run changes nothing; an unknown id raises `RunNotFound`.
        """
        events = self.history(run_id)
        if events[-1]["type"] in TERMINAL_EVENTS:
            return
        with store_call(run_id, f"send a cancellation to run {run_id!r}", caller=True):
            self.store.send(run_id, {"type": "cancel", "ts": round(self.clock.time(), 6)})
        self.poke(run_id)
        for ev in events:
            if ev["type"] == "child_started":
                with contextlib.suppress(RunNotFound):  # recorded, never created: nothing to do
                    self.cancel(ev["child_id"])

    def signal(
        self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None
    ) -> None:
        """Deliver a signal to a run; `wait_for_signal(name)` in the workflow returns `payload`.

        Sending the same `signal_id` twice delivers it once. An unknown run raises
        `RunNotFound`; a finished run refuses signals with `IntemporalError`.
        """
        info = self.get_run(run_id)
        if info.status.finished:
            raise IntemporalError(
                f"run {run_id!r} is {info.status.value}: it takes no more signals"
            )
        message = {
            "type": "signal",
            "name": name,
            "payload": encode(payload, self.codec),
            "signal_id": signal_id or new_run_id(),
            "ts": round(self.clock.time(), 6),
        }
        with store_call(run_id, f"send signal {name!r} to run {run_id!r}", caller=True):
            self.store.send(run_id, message)
        self.poke(run_id)

    def close(self) -> None:
        """Stop taking work, let in-flight activities finish, leave unfinished runs resumable."""
        with self._mutex:
            self._closing.set()
            for exe in self._active.values():
                if exe.ctx is not None:
                    exe.ctx.wake.set()
        self._pool.shutdown(wait=True)
        if self._activity_pool is not None:
            self._activity_pool.shutdown(wait=True)
        with self._mutex:
            if self._release_hold is not None:
                self._release_hold()  # its parked runs become orphans another engine recovers
                self._release_hold = None
        if self._owns_store:
            self.store.close()

    def _hold(self) -> str:
        """This engine's id, marked alive in the store so no other engine takes its parked runs."""
        with self._mutex:
            if self._release_hold is None:
                self._release_hold = self.store.hold_engine(self.engine_id)
        return self.engine_id

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
