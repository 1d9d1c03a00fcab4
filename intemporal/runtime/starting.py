"""Starting and resuming runs: `Engine.start`/`run` (typed in `start_api.py`) and `resume`.

`Starting` is a part of `intemporal.Engine`. A new run is recorded with its `run_started`
event and then either executed here (on the pool, or on the caller's thread for `run()`),
left pending for a worker (a client engine, a delayed start), or left for the gate of its
limited queue. Starting an id that exists returns a handle to that run, and resumes it if
nobody executes it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from ..api import Workflow, require_workflow
from ..clock import Clock
from ..deadlines import deadline_for
from ..errors import store_call
from ..events import EXECUTOR, FINAL_EVENTS, check_version
from ..handle import EngineCalls, Execution, RunHandle
from ..lineage import stamp
from ..loader import load_workflow
from ..replay import current
from ..runs import check_same_run, first_event, rebuild_protocols, recorded_args
from ..runs import new_run_id as random_id
from ..start_api import StartOptions
from ..store import Event, Lease, Store, check_run_id
from .executor import closed_error

if TYPE_CHECKING:
    from .queues import QueueRuntime


class Starting:
    """The engine's starting half: `_start` (for `StartAPI`) and `_resume`."""

    store: Store
    clock: Clock
    codec: str
    sync: bool
    worker: bool
    version: str | None
    engine_id: str
    threads: int
    _mutex: threading.RLock
    _active: dict[str, Execution]

    if TYPE_CHECKING:
        _queue_rt: QueueRuntime

        @property
        def closing(self) -> bool: ...
        @property
        def _calls(self) -> EngineCalls: ...
        def _with_headers(self, first: Event) -> Event: ...
        def _launch(
            self, exe: Execution, events: list[Event] | None, lease: Lease | None = None
        ) -> Execution: ...
        def _execute_here(
            self, exe: Execution, events: list[Event] | None, lease: Lease | None = None
        ) -> bool: ...
        @staticmethod
        def _join(running: Execution, lease: Lease | None) -> None: ...
        def _claim_ready(
            self, run_ids: list[str] | None, busy_only: bool = False
        ) -> list[Lease]: ...

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
        exe = Execution(run_id, wf, args, kwargs, protocols)
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
                return RunHandle(self._calls, run_id, exe)
        elif self.worker and start_at is None and len(self._active) < self.threads:
            # A thread is free to execute it: created claimed, its lease handed to that
            # thread (which then opens, locks and reads nothing), durable before we return.
            lease = self._create_claimed(run_id, first)
            if lease is not None:
                return RunHandle(self._calls, run_id, self._launch(exe, [first], lease))
        elif self._create(run_id, first, self.engine_id if self.worker else None):
            if not self.worker:  # the store woke the workers: one takes it without polling
                return RunHandle(self._calls, run_id)
            return RunHandle(self._calls, run_id, self._launch(exe, [first]))
        return self._existing(run_id, wf, protocols)

    def _start_queued(
        self, run_id: str, first: Event, wf: Workflow[Any, Any], protocols: dict[type, Any]
    ) -> RunHandle[Any]:
        """Record a run of a limited queue pending: a worker starts it when the queue has room."""
        if not self._create(run_id, first):  # for any worker its queue has room for
            return self._existing(run_id, wf, protocols)
        if self.worker:
            self._queue_rt.started(first["queue"])
        return RunHandle(self._calls, run_id)

    def _create_claimed(self, run_id: str, first: Event) -> Lease | None:
        """Create a run claimed by this engine, on disk (with `sync`) when this returns;
        None if the id exists. The lease is released if the creation cannot be synced."""
        with store_call(run_id, f"create run {run_id!r}", caller=True, started=False):
            lease = self.store.create_claimed(run_id, first, self.sync)
            if lease is not None and self.sync:
                try:
                    lease.sync()  # `start()` returns a durable run (`create_claimed` does not)
                except BaseException:
                    lease.release()
                    raise
        return lease

    def _create(self, run_id: str, first: Event, owner: str | None = None) -> bool:
        with store_call(run_id, f"create run {run_id!r}", caller=True, started=False):
            return self.store.create(run_id, first, self.sync, owner)

    def _existing(
        self, run_id: str, wf: Workflow[Any, Any], protocols: dict[type, Any]
    ) -> RunHandle[Any]:
        first = self.store.read(run_id)[0]
        check_version(first)  # a newer intemporal's run: refused here, not by its handle later
        check_same_run(run_id, first, wf)
        if self.worker:  # left behind (pending, orphaned) and nobody's: resume it here
            for lease in self._claim_ready([run_id], busy_only=True):
                return self._resume(run_id, protocols or None, None, lease)
        return RunHandle(self._calls, run_id, self._active.get(run_id))

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
                return RunHandle(self._calls, run_id)
            with self._mutex:
                running = self._active.get(run_id)
                if running is not None:
                    self._join(running, lease)  # its own claim may be failing on `lease`
                    return RunHandle(self._calls, run_id, running)
            first = events[0]
            check_version(first)
            wf = load_workflow(first, imports, copies=self.codec == "auto")
            if lease is not None and gated is not None and self._ungated(events, gated):
                lease.release()  # its module declared the queue's limits: the gate admits it
                self._queue_rt.kick()
                return RunHandle(self._calls, run_id)
            args, kwargs = recorded_args(first, self.codec)
            impls = rebuild_protocols(first) if protocols is None else dict(protocols)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        exe = Execution(run_id, wf, args, kwargs, impls, first.get("parent"))
        exe.start_at = first.get("start_at")
        return RunHandle(self._calls, run_id, self._launch(exe, None, lease))

    def _ungated(self, events: list[Event], gated: Collection[str]) -> bool:
        """Whether a claimed run is a fresh top-level one of a limited queue the claim did
        not know limited (a worker that had not imported the module declaring it)."""
        first = events[0]
        queue = first.get("queue")
        fresh = len(events) == 1 and not first.get("parent")
        return fresh and queue not in gated and self._queue_rt.limited(queue) is not None
