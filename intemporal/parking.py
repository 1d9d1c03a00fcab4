"""Runs that wait without a thread: where an engine parks them, their timers, the watcher.

A run that must wait (a long sleep, a signal, a child run, a long retry backoff) gives
its thread and its lease back; its engine parks it here with the time it is due (or None)
and executes it again, replaying its journal, when its timer fires or a message reaches
it. One watcher thread per engine looks at the timers and at the store's doorbell every
`WATCH_INTERVAL` seconds: one `stat` when nothing happened, so an idle engine costs next
to nothing, and another process (the CLI, say) reaches a parked run within that interval.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from typing import Any

from .clock import Clock
from .store import Store

WATCH_INTERVAL = 0.02  # seconds between looks at timers and the doorbell: bounds wake-up latency


class Parking:
    """The parked runs of one engine and the watcher thread that wakes them.

    `on_message(run_id)` is called for each run the doorbell names (or, after a doorbell
    reset, for each run in `held()`); `on_due(execution)` for each parked run whose timer
    fired. Both run on the watcher thread. The engine's `mutex` guards `parked`. Due times
    are read on `clock`; a virtual one skips to the next timer when no run is `busy()`.
    """

    def __init__(
        self,
        store: Store,
        mutex: threading.RLock,
        closing: threading.Event,
        on_message: Callable[[str], None],
        on_due: Callable[[Any], None],
        held: Callable[[], list[str]],
        clock: Clock,
        busy: Callable[[], bool],
    ) -> None:
        self.store, self._mutex, self._closing = store, mutex, closing
        self._on_message, self._on_due, self._held = on_message, on_due, held
        self._clock, self._busy = clock, busy
        self.parked: dict[str, tuple[Any, float | None]] = {}  # run id -> (execution, due)
        self._timers: list[tuple[float, str]] = []
        self._watcher: threading.Thread | None = None
        # Taken now, not when the watcher starts: messages sent meanwhile are not missed.
        self._cursor = store.wait(None, 0)[1]

    def park(self, execution: Any, until: float | None) -> None:
        """Park a run until `until` (epoch seconds) or a message; the caller holds the mutex."""
        self.parked[execution.run_id] = (execution, until)
        if until is not None:
            heapq.heappush(self._timers, (until, execution.run_id))

    @property
    def thread(self) -> threading.Thread | None:
        """The watcher thread (None until `start`); it ends once `closing` is set."""
        return self._watcher

    def start(self) -> None:
        """Start the watcher thread, once."""
        with self._mutex:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="intemporal-watcher", daemon=True
                )
                self._watcher.start()

    def _watch(self) -> None:
        """Follow the doorbell and fire due timers, until the engine closes."""
        blocks = self.store.wait_blocks  # then the store's `wait` is the pause
        while not self._closing.wait(0 if blocks else WATCH_INTERVAL):
            try:
                ids, self._cursor = self.store.wait(self._cursor, WATCH_INTERVAL if blocks else 0)
                if ids is None:  # the doorbell was reset: look at every run we hold
                    ids = self._held()
                for run_id in ids:
                    self._on_message(run_id)
                with self._mutex:
                    self._fire_due()
            except Exception:  # keep watching: one bad run must not stop every timer
                continue

    def _fire_due(self) -> None:
        """Wake the parked runs whose timer is due; the caller holds the mutex."""
        while (
            self._timers
            and self.parked.get(self._timers[0][1], (None, None))[1] != (self._timers[0][0])
        ):
            heapq.heappop(self._timers)  # a run woken or relaunched since: a stale timer
        if self._timers and not self._busy():
            self._clock.skip_to(self._timers[0][0])  # a virtual clock only, when awaited
        now = self._clock.time()
        while self._timers and self._timers[0][0] <= now:
            until, run_id = heapq.heappop(self._timers)
            parked = self.parked.get(run_id)
            if parked is not None and parked[1] == until:
                self._on_due(parked[0])
