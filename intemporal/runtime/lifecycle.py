"""An engine's life: its options checked, what it holds set up, and `close()`.

`Lifecycle` is a part of `intemporal.Engine` (whose docstring says what each option
means): `__init__` opens the store, makes the thread pool (its threads start with the
first run submitted), the parking watcher, the queue poller and the scheduler (started
only for a worker: `Engine(worker=False)` starts no thread), and `_shut_down` stops them
in order, leaving every unfinished run durable and resumable.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..handle import Execution, RunHandle
from ..observe import LoggingObserver, Observer, Observers
from ..parking import Parking
from ..queues import Queue, split
from ..schedules import Scheduler
from ..store import Store, open_store
from ..tracing import tracing_observer
from ..versions import accepted
from .aio import LoopThread
from .queues import QueueRuntime

# Seconds `close()` waits at most for the watcher, the queue poller and the scheduler to
# see it (each looks each WATCH_INTERVAL or QUEUE_POLL; one in a store call that cannot
# reach a database ends within its connect timeout), so none uses the store once closed.
HELPERS_STOP = 10.0


def check_options(durability: str, codec: str, threads: int, max_recoveries: int) -> None:
    """`ValueError` or `TypeError` naming the first of the engine's options that is wrong."""
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


def join_all(threads: Sequence[threading.Thread | None], timeout: float = HELPERS_STOP) -> None:
    """Wait for `threads` (None: never started) to end, `timeout` seconds in all at most;
    the calling thread itself is not waited for."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


class Lifecycle:
    """What an engine holds from `__init__` to `close()`, shared by its other parts."""

    if TYPE_CHECKING:

        def start(self, fn: Any, /, *args: Any, **kwargs: Any) -> RunHandle[Any]: ...
        def poke(self, run_id: str) -> None: ...
        def _relaunch(self, exe: Execution) -> None: ...
        def _poll_queues(self, names: list[str]) -> None: ...
        def _stop_loop(self) -> None: ...

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None,
        *,
        threads: int,
        queues: Sequence[str | Queue] | None,
        worker: bool,
        durability: str,
        codec: str,
        observers: Sequence[Observer],
        clock: Clock | None,
        strict: bool,
        tracing: Any,
        version: str | None,
        versions: Collection[str | None] | None,
        max_recoveries: int,
    ) -> None:
        check_options(durability, codec, threads, max_recoveries)
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
        self._active: dict[str, Execution] = {}
        self._mutex = threading.RLock()
        self.changed = threading.Condition(self._mutex)
        """Notified whenever an execution here stops: what a `RunHandle` waits on between looks."""
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
        # where async runs execute: our LoopThread's, or AsyncEngine's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: LoopThread | None = None
        self._async_runs: set[concurrent.futures.Future[None]] = set()
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

    def _stop_steps(self) -> None:
        """The start of a close: no new step from now on (`closing`, read by every step, and
        `_closing`, waited on by the engine's threads), and the runs pausing woken to see it."""
        with self._mutex:
            self.closing = True
            self._closing.set()
            for exe in self._active.values():
                if exe.ctx is not None:
                    exe.ctx.wake.set()

    def _shut_down(self) -> None:
        """`Engine.close()`: stop taking work, let in-flight activities finish."""
        self._stop_steps()
        self._queue_rt.kick()  # its poller sees `_closing` now, not at its next poll
        join_all([self._parking.thread, self._queue_rt.thread, self._scheduler.thread])
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
