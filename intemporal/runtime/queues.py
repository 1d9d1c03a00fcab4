"""One engine's side of queue limits: the limits it claims with, its own slot counts, the poller.

A run of a queue with limits (`intemporal.Queue`) never starts straight from `start()`:
it is recorded pending, and a worker takes it through the store's gate (`claim_next` with
the queues' `QueueSpec`s), which admits it when the queue has room. Room frees when a
run ends, on any worker, with no doorbell rung: so each worker engine serving a limited
queue looks every `QUEUE_POLL` seconds (and at once when one of its runs stops).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..queues import Queue, declared
from ..store.queueing import QueueSpec

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("intemporal")

QUEUE_POLL = 0.1  # seconds between two looks for runs a limited queue may start now


class QueueRuntime:
    """The queues an engine knows (its `Engine(queues=[Queue...])` over the declared ones),
    the runs of each it holds (for `worker_concurrency`), and its poller thread.

    `held()` lists the run ids the engine executes or parks; `poll(names)` claims and
    starts what the named queues admit now; `closing` is set when the engine closes.
    """

    def __init__(
        self,
        store: Store,
        given: dict[str, Queue],
        served: list[str] | None,
        held: Callable[[], list[str]],
        poll: Callable[[list[str]], Any],
        closing: threading.Event,
    ) -> None:
        self.store, self.given, self.served = store, given, served
        self._held, self._poll, self._closing = held, poll, closing
        self._queue_of: dict[str, str | None] = {}  # run id -> its queue (None: a child)
        self._started: set[str] = set()  # limited queues this engine recorded runs on
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def known(self) -> dict[str, Queue]:
        """Every queue with declared limits, this engine's own declarations first."""
        return {**declared(), **self.given}

    def limited(self, name: str | None) -> Queue | None:
        """The `Queue` of `name` if it has limits (its runs start through the store)."""
        queue = self.known().get(name) if name is not None else None
        return queue if queue is not None and queue.limited else None

    def gated(self) -> set[str]:
        """The queues with limits known now: a claim made now takes their runs through the
        store's gate."""
        return {name for name, queue in self.known().items() if queue.limited}

    def specs(self) -> dict[str, QueueSpec]:
        """The limits to claim with now, `worker_concurrency` turned into this engine's room."""
        out: dict[str, QueueSpec] = {}
        counts: dict[str | None, int] | None = None
        for name, queue in self.known().items():
            if not queue.limited:
                continue
            local = None
            if queue.worker_concurrency is not None:
                if counts is None:
                    counts = self._counts()
                local = max(0, queue.worker_concurrency - counts.get(name, 0))
            out[name] = queue.spec(local)
        return out

    def _counts(self) -> dict[str | None, int]:
        """Top-level runs this engine executes or parks, per queue."""
        counts: dict[str | None, int] = {}
        for run_id in self._held():
            queue = self._queue(run_id)
            counts[queue] = counts.get(queue, 0) + 1
        return counts

    def _queue(self, run_id: str) -> str | None:
        if run_id not in self._queue_of:
            try:
                first = self.store.read(run_id)[0]
            except Exception:  # deleted meanwhile: it holds nothing
                return None
            if len(self._queue_of) > 4096:
                self._queue_of.clear()
            self._queue_of[run_id] = None if first.get("parent") else first.get("queue")
        return self._queue_of[run_id]

    def polled(self) -> list[str]:
        """The limited queues this engine takes runs of: those it serves, and those it
        recorded runs on."""
        names = {
            name
            for name, queue in self.known().items()
            if queue.limited and (self.served is None or name in self.served)
        }
        return sorted(names | self._started)

    def started(self, name: str) -> None:
        """This engine recorded a run on limited queue `name`: take it when it may start."""
        self._started.add(name)
        self.kick()

    def kick(self) -> None:
        """Look for runs to start now, not at the next poll (a run stopped, one was added)."""
        if self.polled():
            self._kick.set()
            self.start()

    @property
    def thread(self) -> threading.Thread | None:
        """The poller thread (None until started); it ends once `closing` is set and kicked."""
        return self._thread

    def start(self) -> None:
        """Start the poller thread, once, if there is a limited queue to poll."""
        with self._mutex:
            if self._thread is None and self.polled() and not self._closing.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="intemporal-queues", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._kick.wait(QUEUE_POLL)
            self._kick.clear()
            if self._closing.is_set():
                return
            try:
                self._poll(self.polled())
            except Exception as exc:  # the store away, say: look again at the next poll
                log.debug("queue poll failed: %s", exc)
