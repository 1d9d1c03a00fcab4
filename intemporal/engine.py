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
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .api import Workflow, require_workflow
from .clock import Clock
from .codec import encode
from .control import MAX_RECOVERIES, check_reason, terminate_run
from .deadlines import deadline_for
from .errors import (
    IntemporalError,
    RunNotFound,
    store_call,
)
from .events import (
    CANCEL,
    CHILD_STARTED,
    EXECUTOR,
    FINAL_EVENTS,
    SIGNAL,
    SIGNAL_RECEIVED,
    TERMINAL_EVENTS,
    check_version,
)
from .handle import RunHandle, _Execution, chain_end, wait_for_event
from .lineage import check_step, fork_run, stamp
from .loader import load_workflow
from .observe import (
    LoggingObserver,
    Observer,
    Observers,
)
from .parking import Parking
from .queues import Queue, split
from .replay import current
from .runs import check_same_run, first_event, rebuild_protocols, recorded_args
from .runs import new_run_id as random_id
from .runtime.executor import Executor, closed_error
from .runtime.queues import QueueRuntime
from .runtime.worker import Worker
from .schedules import Scheduler
from .start_api import StartAPI, StartOptions
from .store import Event, Lease, RunInfo, RunStatus, Store, check_run_id, open_store
from .tracing import tracing_observer
from .versions import accepted

log = logging.getLogger("intemporal")


class Engine(Worker, Executor, StartAPI):
    """Runs workflows durably on a thread pool over a `Store`.

    `store`: a directory path (`FileStore`), a `Store`, a URL, or None for
    `$INTEMPORAL_HOME`, else the nearest `.intemporal` directory in the current folder or
    a parent (as git finds `.git`), else `./.intemporal` (the `intemporal` command's rule). `durability="fsync"` makes an activity done
    once its result is on disk; `"flush"` once the OS has it (survives a killed process,
    not a power cut). `codec="auto"` stores JSON where a value round-trips exactly, else
    a pickle (executing a run unpickles: trust the store as code); `"json"` never writes
    nor reads a pickle (`DillRefused`). `worker=False` makes a client that records runs
    without executing them. `queues`: the queues a worker takes runs of (None: all), as
    names or `intemporal.Queue`s whose limits it keeps (README "Queues and schedules"); a
    worker also fires the `@scheduled` workflows of those queues. Leaving `with` stops
    taking work, lets in-flight activities finish and leaves every unfinished run durable and resumable. `clock`: the time source
    (default the real one; `intemporal.testing` passes a virtual one that skips waits).
    `strict=True` refuses a store others may write (`UnsafeStore`). `observers`:
    `intemporal.Observer`s told of each run and step (a `LoggingObserver` is always there).
    `tracing`: OpenTelemetry spans (README "Tracing") when True and the program configured
    a tracer provider before making the engine; False never; or a `TracerProvider` to use.
    `version`: the code version recorded on each run this engine starts (`RunInfo.version`);
    `versions`: the versions of the runs it executes when it recovers or adopts runs
    (default: its own version only; every run when it has none; None in it stands for runs
    without a version) — README "Changing code under running workflows". `max_recoveries`:
    how many times in a row a run is recovered after a crash without progress before it is
    parked as `RunStatus.STUCK` (default 50).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        threads: int = 8,
        queues: Sequence[str | Queue] | None = None,
        worker: bool = True,
        durability: str = "fsync",
        codec: str = "auto",
        observers: Sequence[Observer] = (),
        clock: Clock | None = None,
        strict: bool = False,
        tracing: Any = True,
        version: str | None = None,
        versions: Collection[str | None] | None = None,
        max_recoveries: int = MAX_RECOVERIES,
    ) -> None:
        if durability not in ("fsync", "flush"):
            raise ValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
        if codec not in ("auto", "json"):
            raise ValueError(f"codec must be 'auto' or 'json', not {codec!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if isinstance(max_recoveries, bool) or not isinstance(max_recoveries, int):
            raise TypeError(f"max_recoveries must be an int, not {max_recoveries!r}")
        if max_recoveries < 0:
            raise ValueError(f"max_recoveries must be 0 or more, not {max_recoveries}")
        self.version, self.max_recoveries = version, max_recoveries
        self.versions = accepted(version, versions)
        self.store = open_store(store, strict=strict)
        tracer = tracing_observer(tracing)
        extra = [tracer] if tracer is not None else []
        self.observer = Observers([LoggingObserver(), *observers, *extra])
        self.clock = clock or Clock()
        self._owns_store = not isinstance(store, Store)  # opened from a path: ours to close
        self.queues, given = split(queues)  # names served, and the `Queue`s among them
        self.threads, self.worker = threads, worker
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
        self._loop: Any = None  # where async runs execute: our LoopThread's, or AsyncEngine's
        self._loop_thread: Any = None
        self._async_runs: set[Any] = set()
        self._queue_rt = QueueRuntime(
            self.store,
            given,
            self.queues,
            held=lambda: list(self._active) + list(self._sleeping),
            poll=self._poll_queues,
            closing=self._closing,
        )
        self._scheduler = Scheduler(self.start, self.store, self.clock, self._closing, self.queues)
        if worker:
            self._queue_rt.start()  # serving a limited queue: take its runs as room frees
            self._scheduler.start()  # `@scheduled` workflows imported: fire their ticks

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
        run_id = check_run_id(opts.run_id) if opts.run_id is not None else random_id()
        protocols, queue = opts.protocols, opts.queue
        if self.worker and self.closing:  # before anything is written: nobody would run it
            raise closed_error()
        now = self.clock.time()
        start_at = None if opts.delay is None else round(now + opts.delay, 6)
        first = first_event(run_id, wf, args, kwargs, self.codec, queue, protocols, now=now)
        if start_at is not None:
            first["start_at"] = start_at
        stamp(first, self.version, deadline_for(start_at or now, opts.timeout, wf.timeout))
        if opts.priority:
            first["priority"] = opts.priority
        self._with_headers(first)  # on the caller's thread: a tracer takes its span here
        if self._queue_rt.limited(first["queue"]) is not None:
            return self._start_queued(run_id, first, wf, protocols)
        exe = _Execution(run_id, wf, args, kwargs, protocols)
        exe.start_at = start_at
        if self.worker and start_at is None:
            # this engine executes it at once: a later execution by another engine is then a
            # recovery, counted against `max_recoveries` even if it died in its first step
            first[EXECUTOR] = self.engine_id
        if inline and self.worker and current() is None:
            # `run()` waits anyway: execute on the caller's thread, no pool hand-off; the
            # run is durable by its first durable step, before `run()` can return.
            with store_call(run_id, f"create run {run_id!r}", caller=True, started=False):
                lease = self.store.create_claimed(run_id, first, self.sync)
            if lease is not None:
                self._execute_here(exe, [first], lease)
                return RunHandle(self, run_id, exe)
        elif self._create(run_id, first, self.engine_id if self.worker else None):
            if not self.worker:  # the store woke the workers: one takes it without polling
                return RunHandle(self, run_id)
            return RunHandle(self, run_id, self._launch(exe, [first]))
        return self._existing(run_id, wf, protocols)

    def _start_queued(
        self, run_id: str, first: Event, wf: Workflow[Any, Any], protocols: dict[type, Any]
    ) -> RunHandle[Any]:
        """Record a run of a limited queue pending: a worker starts it when the queue has room."""
        if not self._create(run_id, first):  # for any worker its queue has room for
            return self._existing(run_id, wf, protocols)
        if self.worker:
            self._queue_rt.started(first["queue"])
        return RunHandle(self, run_id)

    def _create(self, run_id: str, first: Event, owner: str | None = None) -> bool:
        with store_call(run_id, f"create run {run_id!r}", caller=True, started=False):
            return self.store.create(run_id, first, self.sync, owner)

    def _existing(
        self, run_id: str, wf: Workflow[Any, Any], protocols: dict[type, Any]
    ) -> RunHandle[Any]:
        check_same_run(run_id, self.store.read(run_id)[0], wf)
        if self.worker:  # left behind (pending, orphaned) and nobody's: resume it here
            for lease in self._claim_ready([run_id], busy_only=True):
                return self._resume(run_id, protocols or None, None, lease)
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
        return self._resume(run_id, protocols, imports, None)

    def _resume(
        self,
        run_id: str,
        protocols: Mapping[type, Any] | None,
        imports: list[str] | None,
        lease: Lease | None,
        gated: Collection[str] | None = None,
    ) -> RunHandle[Any]:
        """`resume`, with the run already claimed (`lease`, released on any failure) or not.

        `gated`: for a run a worker claimed, the limited queues its claim knew of; a fresh
        run of another queue that loading the workflow found limited is left pending for
        that queue's gate."""
        try:
            with store_call(run_id, f"read the journal of run {run_id!r}", caller=True):
                events = self.store.read(run_id)
            if events[-1]["type"] in FINAL_EVENTS:
                if lease is not None:
                    lease.release()
                return RunHandle(self, run_id)
            with self._mutex:
                if run_id in self._active:
                    if lease is not None:
                        lease.release()
                    return RunHandle(self, run_id, self._active[run_id])
            first = events[0]
            check_version(first)
            wf = load_workflow(first, imports, copies=self.codec == "auto")
            if lease is not None and gated is not None and self._ungated(events, gated):
                lease.release()  # its module declared the queue's limits: the gate admits it
                self._queue_rt.kick()
                return RunHandle(self, run_id)
            args, kwargs = recorded_args(first, self.codec)
            impls = rebuild_protocols(first) if protocols is None else dict(protocols)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        exe = _Execution(run_id, wf, args, kwargs, impls, first.get("parent"))
        exe.start_at = first.get("start_at")
        return RunHandle(self, run_id, self._launch(exe, None, lease))

    def _ungated(self, events: list[Event], gated: Collection[str]) -> bool:
        """Whether a claimed run is a fresh top-level one of a limited queue the claim did
        not know limited (a worker that had not imported the module declaring it)."""
        first = events[0]
        queue = first.get("queue")
        fresh = len(events) == 1 and not first.get("parent")
        return fresh and queue not in gated and self._queue_rt.limited(queue) is not None

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

    def execution(self, run_id: str) -> _Execution | None:
        """The execution of `run_id` in this engine now, if any: what a `RunHandle` waits on."""
        return self._active.get(run_id)

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
        A run that continued as new passes it on to the run that continues it.
        """
        run_id = self._latest(run_id)
        events = self.history(run_id)
        if events[-1]["type"] in TERMINAL_EVENTS:
            return
        with store_call(run_id, f"send a cancellation to run {run_id!r}", caller=True):
            self.store.send(run_id, {"type": CANCEL, "ts": round(self.clock.time(), 6)})
        self.poke(run_id)
        for ev in events:
            if ev["type"] == CHILD_STARTED:
                with contextlib.suppress(RunNotFound):  # recorded, never created: nothing to do
                    self.cancel(ev["child_id"])

    def terminate(self, run_id: str, reason: str | None = None) -> None:
        """End a run at once, without compensations: it ends `CANCELLED`, recorded with `reason`.

        No `Cancelled` is delivered, so no saga compensates and no `except` in the workflow
        runs (`cancel` is the polite way). A run no process executes is ended here and now;
        one a live process executes stops at its next durable operation (an activity in
        flight finishes first). Its unfinished child runs are terminated too; a run that
        continued as new, the last run of its chain. A finished run is left as it is; an unknown id raises `RunNotFound`; a reason not a string `TypeError`.
        """
        reason, now = check_reason(reason), self.clock.time()
        run_id = self._latest(run_id)
        with store_call(run_id, f"terminate run {run_id!r}", caller=True):
            woken = terminate_run(
                self.store, run_id, reason, self.engine_id, self.codec, now, self.sync
            )
        for rid in [run_id, *woken]:
            self.poke(rid)

    def _latest(self, run_id: str) -> str:
        """The id of the run that carries `run_id` on now: `run_id` itself, or the last run of
        the chain it continued as new into (`continue_as_new`). `RunNotFound` if unknown."""
        return chain_end(self.get_run, self.get_run(run_id)).run_id

    def fork(self, run_id: str, from_step: int, new_run_id: str | None = None) -> RunHandle[Any]:
        """A new run that repeats run `run_id` up to step `from_step`, then executes on with
        today's code; returns its handle (the run executes here, as `resume` does).

        Its journal is a copy of the source's steps before `from_step` (sequence numbers, as
        `intemporal show` lists them); the child runs they started are copied too, not run
        again; signals consumed from `from_step` on are queued to it again. The source is
        untouched; the fork records where it came from (`intemporal show` says so).
        `new_run_id` defaults to a random id; forking again to an id that is this very fork
        returns its handle. Raises `RunNotFound`, `ValueError` for a step outside 1..(last
        step + 1) or a bad id, `RunConflict` if `new_run_id` is taken by another run.
        """
        events = self.history(run_id)
        step = check_step(events, from_step, run_id)
        new_id = check_run_id(new_run_id) if new_run_id is not None else random_id()
        with store_call(new_id, f"create run {new_id!r}", caller=True, started=False):
            now = self.clock.time()
            lease = fork_run(self.store, run_id, events, step, new_id, now, self.version, self.sync)
        if lease is None:  # this very fork, made before
            return self.resume(new_id)
        return self._resume(new_id, None, None, lease)

    def signal(
        self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None
    ) -> None:
        """Deliver a signal to a run; `wait_for_signal(name)` in the workflow returns `payload`.

        Sending the same `signal_id` twice delivers it once. An unknown run raises
        `RunNotFound`; a finished run refuses signals with `IntemporalError`. A run that
        continued as new passes it on to the last run of its chain.
        """
        info = chain_end(self.get_run, self.get_run(run_id))  # continued as new: the last
        run_id = info.run_id
        if info.status.finished:
            raise IntemporalError(
                f"run {run_id!r} is {info.status.value}: it takes no more signals"
            )
        message = {
            "type": SIGNAL,
            "name": name,
            "payload": encode(payload, self.codec),
            "signal_id": signal_id or random_id(),
            "ts": round(self.clock.time(), 6),
        }
        with store_call(run_id, f"send signal {name!r} to run {run_id!r}", caller=True):
            self.store.send(run_id, message)
            self.poke(run_id)
            self._pass_on(run_id, message)

    def _pass_on(self, run_id: str, message: Event) -> None:
        """Send `message` on down the chain when run `run_id` continued as new before taking
        it: it came after the run had passed its unread signals on (`lineage.replay_signals`).
        The next run takes each signal id once, so a copy sent twice is taken once."""
        info = self.get_run(run_id)
        while info.status is RunStatus.COMPLETED and info.raw.get("continued_as"):
            taken = any(
                e["type"] == SIGNAL_RECEIVED and e.get("signal_id") == message["signal_id"]
                for e in self.history(info.run_id)
            )
            if taken:
                return
            info = self.get_run(str(info.raw["continued_as"]))
            self.store.send(info.run_id, message)
            self.poke(info.run_id)

    def close(self) -> None:
        """Stop taking work, let in-flight activities finish, leave unfinished runs resumable."""
        with self._mutex:
            self._closing.set()
            for exe in self._active.values():
                if exe.ctx is not None:
                    exe.ctx.wake.set()
        self._pool.shutdown(wait=True)
        self._stop_loop()
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
                self._release_hold = self.store.lease_owner(self.engine_id).release
        return self.engine_id

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
