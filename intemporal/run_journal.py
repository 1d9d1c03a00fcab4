"""A run's writes to its journal: appends stamped with the time and the engine, and when an
activity's outcome, appended without a sync, becomes durable (`RunJournal.before_effect`).

`RunJournal` is a part of a run context (`intemporal.replay.RunContext`), under its
activity steps (`activity_steps.py`), which write through it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from .errors import StoreFailure, store_error
from .events import OWNER
from .store.base import Event, Lease

if TYPE_CHECKING:
    from .clock import Clock


class JournalHost(Protocol):
    """What a run's writes need from the engine that executes it."""

    sync: bool
    clock: Clock
    engine_id: str  # stamped on every event an execution appends (`owner`)


class _Submitted(threading.local):
    """Per thread: whether it executes a submitted activity (`on`; False unless set, read
    from the class without the `AttributeError` a bare `threading.local` raises and
    `getattr` catches: ~1,500 instructions on every durable step)."""

    on = False


class RunJournal:
    """The journal's writes of one execution of a run (a part of `RunContext`)."""

    run_id: str
    host: JournalHost
    lease: Lease
    store_failed: StoreFailure | None
    marker: Event | None
    _marker_lock: threading.Lock
    _unsynced: _Submitted
    unsynced_results: bool
    untaken_results: bool

    def append(self, event: Event, sync: bool | None = None) -> None:
        """Append an event stamped with the time and the engine (`owner`); a storage failure
        stops the run unrecorded.

        Any exception of the store (an `OSError`, a database driver's) raises `StoreFailure`,
        which user code does not catch, and every later append of this execution raises it
        again: after a failed append nothing more is written, so at most the step in flight
        runs again when the run is resumed.
        """
        if self.store_failed is not None:
            raise self.store_failed
        event["ts"] = self.host.clock.stamp()
        if sync is None:
            sync = self.host.sync and not self.submitted()
        event.setdefault(OWNER, self.host.engine_id)  # which engine executed this step
        if sync:  # this line's sync covers every line before it
            self.unsynced_results = self.untaken_results = False
        try:
            if self.marker is not None:
                self._write_marker(event["ts"])
            self.lease.append(event, sync)
        except Exception as exc:  # whatever the store raises: the workflow never sees it
            raise self._store_failure(exc) from exc

    def append_result(
        self, seq: int, name: str, attempts: int, started: int, result: Any, sync: bool | None
    ) -> None:
        """`append` for an activity's result (`Lease.append_result`: the file store spells
        its line from the parts): `started` and the line's time in whole microseconds."""
        if self.store_failed is not None:
            raise self.store_failed
        ts = self.host.clock.stamp_us()
        if sync is None:
            sync = self.host.sync and not self.submitted()
        if sync:
            self.unsynced_results = self.untaken_results = False
        try:
            if self.marker is not None:
                self._write_marker(ts / 1_000_000)
            self.lease.append_result(
                seq, name, attempts, started, result, ts, self.host.engine_id, sync
            )
        except Exception as exc:  # as in `append`
            raise self._store_failure(exc) from exc

    def before_effect(self) -> None:
        """Make the activity outcomes appended unsynced durable (in fsync mode), before the
        run does anything seen outside it; nothing to do when none is pending (the usual
        case: one attribute read).

        Called before each of the run's effects: an activity's attempt executes
        (`attempt_started`, on the workflow's thread or its event loop), a submitted activity
        is handed to a thread (`submit`), a side effect's function is called, a child run is
        started (`call_child`), the run continues as new (`lineage.continue_run`), and, in
        the executor, before the run's lease is released (`before_release`: it parked to
        wait for a timer, a signal or a child, or stopped: shutdown, an interrupt, divergent
        code), so no other process claims it with a result not durable. Every other record a workflow writes
        (a timer, a signal wait or its taking, a side effect's value, an event, a
        compensation's start, a delivered cancellation, a failed attempt before its retry,
        the run's end whatever it is) is appended with a sync, which covers the pending
        outcomes in the same sync: the result reaches its caller only once durable. The
        outcomes of submitted activities count once the workflow takes them (`join_all`,
        `.result()`), and their threads never sync: a whole fan-out and what follows it
        share one sync.
        """
        if self.unsynced_results and not self._unsynced.on:  # (`submitted()`, written out)
            self.unsynced_results = self.untaken_results = False  # covered by this sync
            self.sync_journal()

    def submitted(self) -> bool:
        """Whether this thread executes a submitted activity of the run (not the workflow)."""
        return self._unsynced.on

    def sync_journal(self) -> None:
        """Make every appended event durable (in fsync mode), those appended unsynced too."""
        if self.store_failed is not None:
            raise self.store_failed
        if self.host.sync:
            try:
                self.lease.sync()
            except Exception as exc:
                raise self._store_failure(exc) from exc

    def _store_failure(self, exc: Exception) -> StoreFailure:
        doing = f"write the journal of run {self.run_id!r}"
        self.store_failed = StoreFailure(store_error(exc, doing, self.run_id))
        return self.store_failed

    def _write_marker(self, ts: float) -> None:
        # Before this execution's first line, unsynced: the line after it syncs both.
        with self._marker_lock:  # a submitted activity may append at the same moment
            if self.marker is not None:
                self.lease.append({**self.marker, "ts": ts, OWNER: self.host.engine_id}, False)
                self.marker = None
