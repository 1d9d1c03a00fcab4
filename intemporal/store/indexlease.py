"""The file store's lease that keeps its run index told (`index.py`): a finished run's row
says how it ended (after the line), a resumed one's is open again (before it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import RunNotFound
from ..events import RESTART_EVENTS, TERMINAL_EVENTS, Event
from .base import Lease

if TYPE_CHECKING:
    from .index import RunIndex


class IndexedLease(Lease):
    """A `FileLease` that keeps the index told: a finished run's row says how it ended (after
    the line, with the journal's size and time), a resumed one's is open again (before it).

    `gate`: takes the store's gc lock shared and returns its release (`filegc.GcLock.shared`),
    None where there is none. A restart line (`run_resumed`, ...) is appended holding it, and
    a claimed finished run holds it until then (`held`: its release): a `gc` deleting
    finished runs holds it exclusive, so it never deletes a run on its way back to life, nor
    one a claim holds finished.
    """

    def __init__(
        self,
        lease: Any,  # a `fileio.FileLease` (its `stat()` and `linked()` are used)
        index: RunIndex,
        gate: Callable[[], Callable[[], None]] | None = None,
        held: Callable[[], None] | None = None,
    ) -> None:
        self._lease, self._index = lease, index
        self._gate, self._held = gate, held
        self.run_id, self.token = lease.run_id, lease.token
        # An activity's result neither ends nor restarts a run: the lease's own, no call more
        self.append_result = lease.append_result  # type: ignore[method-assign]
        self.sync = lease.sync  # type: ignore[method-assign]  # (a join's, every step's)

    def append(self, event: Event, sync: bool) -> None:
        kind = event["type"]
        if kind in RESTART_EVENTS:
            self._restart(event, sync)
            return
        self._lease.append(event, sync)
        if kind in TERMINAL_EVENTS:
            self._index.ended(self.run_id, event, self._lease.stat())

    def _restart(self, event: Event, sync: bool) -> None:
        held, self._held = self._held, None
        if held is None and self._gate is not None:
            held = self._gate()  # waits for a gc deleting finished runs
        try:
            if held is not None and not self._lease.linked():  # that gc deleted it
                raise RunNotFound(self.run_id)
            self._index.reopened(self.run_id)
            self._lease.append(event, sync)
        finally:
            if held is not None:
                held()

    def sync(self) -> None:  # bound to the lease's in `__init__`
        self._lease.sync()  # `join_all`: the submitted activities' results, on disk now

    def renew(self) -> None:
        self._lease.renew()

    def release(self) -> None:
        held, self._held = self._held, None
        try:
            self._lease.release()
        finally:
            if held is not None:
                held()
