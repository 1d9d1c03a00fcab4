"""Taking work: which runs this engine executes (`claim_next`), and waking runs up.

`Worker` is a part of `intemporal.Engine`: `recover()` claims every run it may execute,
the parking watcher calls `poke()` for each run the store's wake-ups name, and `poke`
delivers a message to a run executing here, wakes one parked here, or takes a run a
client just recorded.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Collection, Container
from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..errors import StoreError
from ..handle import Execution, RunHandle
from ..store import Lease, Store
from ..versions import OtherVersions
from .starting import Starting

log = logging.getLogger("intemporal")


class Worker(Starting):
    """The engine's claiming half: `recover`, `poke` and the runs it adopts."""

    store: Store
    worker: bool
    queues: list[str] | None
    engine_id: str
    versions: frozenset[str | None] | None
    threads: int
    halted: dict[str, BaseException]
    adopted: collections.deque[RunHandle[Any]]
    clock: Clock
    _mutex: threading.RLock
    _active: dict[str, Execution]
    _sleeping: dict[str, tuple[Any, float | None]]

    if TYPE_CHECKING:
        from ..parking import Parking
        from .queues import QueueRuntime

        _parking: Parking
        _queue_rt: QueueRuntime

        closing: bool

        def _relaunch(self, exe: Execution) -> None: ...

    def _take(self, lease: Lease, gated: Collection[str]) -> RunHandle[Any] | None:
        """Execute a run `claim_next` gave this engine; None if it cannot (logged).

        `gated`: the limited queues the claim knew of. A fresh run of a queue whose limits
        only its workflow's module declares (imported as the run is loaded) is put back for
        the queue's gate (`Starting._resume`)."""
        try:
            return self._resume(lease.run_id, None, None, lease, gated)
        except Exception as exc:  # one unreadable or unloadable run must not stop the rest
            log.warning("cannot take run %r: %s", lease.run_id, exc)
            return None

    def _claim_ready(self, run_ids: list[str] | None, busy_only: bool = False) -> list[Lease]:
        """The store's `claim_next` for this engine: runs of its queues nobody executes.

        On a store shared by hosts (`Store.shared_by_hosts`) it claims no more runs than it
        has free threads: the rest stay for other workers instead of queueing here.
        """
        skip: Container[str] = _Held(self, halted=not busy_only)
        if self.versions is not None and not busy_only:  # `versions.py`: only runs of these
            skip = OtherVersions(skip, self.store, self.versions)
        queues = None if busy_only else self.queues
        limit = None
        if self.store.shared_by_hosts:
            limit = max(self.threads - len(self._active), 0)
            if limit == 0:
                return []
        return self.store.claim_next(
            self.engine_id,
            queues,
            limit,
            among=run_ids,
            skip=skip,
            specs=self._queue_rt.specs(),
            now=self.clock.time(),
        )

    def _poll_queues(self, names: list[str]) -> None:
        """Start the runs limited queues `names` admit now, as many as there are free threads."""
        limit = self.threads - len(self._active)
        if not names or limit <= 0 or not self.worker or self.closing:
            return
        specs = self._queue_rt.specs()
        leases = self.store.claim_next(
            self.engine_id,
            names,
            limit,
            skip=_Held(self, halted=True),
            specs=specs,
            now=self.clock.time(),
        )
        for lease in leases:
            handle = self._take(lease, specs)
            if handle is not None:
                self.adopted.append(handle)

    def recover(self) -> list[RunHandle[Any]]:
        """Resume every unfinished run that no live process owns; return their handles.

        From then on the engine also follows the store's doorbell, so it takes new pending
        runs recorded by clients (`Engine(worker=False)`) of the queues it serves.
        """
        self._parking.start()
        self._queue_rt.start()
        handles = []
        gated = self._queue_rt.gated()
        for lease in self._claim_ready(None):
            handle = self._take(lease, gated)
            if handle is not None:
                handles.append(handle)
        return handles

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
        ctx = exe.ctx  # once: parking the run clears it meanwhile
        if ctx is None:
            self._rewake(exe)
            return
        with exe.inbox_lock:  # one reader at a time: delivered in the inbox's order
            try:
                messages, exe.inbox_cursor = self.store.inbox(run_id, exe.inbox_cursor)
            except Exception:  # a run deleted under us: its execution reports it
                return
            news = ctx.deliver(messages)
        if news:
            self._rewake(exe)

    def _rewake(self, exe: Execution) -> None:
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
            gated = self._queue_rt.gated()
            for lease in self._claim_ready([run_id]):
                handle = self._take(lease, gated)
                if handle is not None:
                    self.adopted.append(handle)
        except Exception as exc:  # not ours to report to anyone: the run stays pending
            log.warning("cannot take run %r: %s", run_id, exc)


class _Held:
    """The runs an engine holds (executing, parked, and with `halted` the ones that stopped
    here unrecorded): what `claim_next` must skip. A live view, read without the mutex."""

    def __init__(self, engine: Worker, halted: bool) -> None:
        self._engine, self._halted = engine, halted

    def __contains__(self, run_id: object) -> bool:
        e = self._engine
        if run_id in e._active or run_id in e._sleeping:
            return True
        stopped = e.halted.get(run_id) if self._halted and isinstance(run_id, str) else None
        # A shared database that went away is retried once it is back (and a lost lease
        # once it expires): only other halts (a full disk) wait for a resume on request.
        retry = e.store.shared_by_hosts and isinstance(stopped, StoreError)
        return stopped is not None and not retry
