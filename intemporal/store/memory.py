"""An in-memory `Store` for tests and throw-away runs: nothing survives the process.

engine = Engine(store=MemoryStore())
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator

from ..errors import LeaseLost, RunNotFound
from ..events import with_signal_id
from .base import Event, Lease, OwnerLease, Store
from .runinfo import check_run_id


class MemoryLease(Lease):
    """An owned run of a `MemoryStore`."""

    def __init__(self, store: MemoryStore, run_id: str, token: int) -> None:
        self.run_id, self._store, self.token = run_id, store, token

    def append(self, event: Event, sync: bool) -> None:
        # Round-trip through JSON so the memory store accepts exactly what the file store does.
        line = json.loads(json.dumps(event))
        with self._store._mutex:
            if self._store._claimed.get(self.run_id) != self.token:  # fenced: one check, held
                raise LeaseLost(f"run {self.run_id!r} is no longer owned by this lease")
            self._store._journals[self.run_id].append(line)

    def renew(self) -> None:
        with self._store._mutex:
            if self._store._claimed.get(self.run_id) != self.token:
                raise LeaseLost(f"run {self.run_id!r} is no longer owned by this lease")

    def release(self) -> None:
        with self._store._mutex:
            if self._store._claimed.get(self.run_id) == self.token:
                del self._store._claimed[self.run_id]


class MemoryStore(Store):
    """Journals, inboxes and claims kept in dicts, guarded by one mutex."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._journals: dict[str, list[Event]] = {}
        self._inboxes: dict[str, list[Event]] = {}
        self._claimed: dict[str, int] = {}  # run id -> the token of the lease holding it
        self._epoch = 0
        self._doorbell: list[str] = []
        self._engines: set[str] = set()

    def create(
        self, run_id: str, first: Event, sync: bool = True, owner: str | None = None
    ) -> bool:
        check_run_id(run_id)
        with self._mutex:
            if run_id in self._journals:
                return False
            self._journals[run_id] = [json.loads(json.dumps(first))]
            if owner is None:  # for any worker: wake the waiting ones
                self._doorbell.append(run_id)
            return True

    def read(self, run_id: str) -> list[Event]:
        with self._mutex:
            try:
                return copy.deepcopy(self._journals[run_id])
            except KeyError:
                raise RunNotFound(run_id) from None

    def exists(self, run_id: str) -> bool:
        return run_id in self._journals

    def claim(self, run_id: str, owner: str = "") -> Lease | None:
        with self._mutex:
            if run_id not in self._journals:
                raise RunNotFound(run_id)
            if run_id in self._claimed:
                return None
            self._epoch += 1  # every claim gets a new token: an older lease is fenced out
            self._claimed[run_id] = self._epoch
            return MemoryLease(self, run_id, self._epoch)

    def _is_claimed(self, run_id: str) -> bool:
        return run_id in self._claimed

    def send(self, run_id: str, message: Event) -> None:
        with self._mutex:
            if run_id not in self._journals:
                raise RunNotFound(run_id)
            stamped = json.loads(json.dumps(with_signal_id(message)))
            self._inboxes.setdefault(run_id, []).append(stamped)
            self._doorbell.append(run_id)

    def _changes(self, cursor: int | None = None) -> tuple[list[str] | None, int]:
        with self._mutex:
            end = len(self._doorbell)
            if cursor is None:
                return [], end
            return list(dict.fromkeys(self._doorbell[cursor:])), end

    def inbox(self, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        with self._mutex:
            box = self._inboxes.get(run_id, [])
            return copy.deepcopy(box[cursor:]), len(box)

    def lease_owner(self, owner: str) -> OwnerLease:
        with self._mutex:
            if owner in self._engines:
                raise RuntimeError(f"owner {owner!r} is already held")
            self._engines.add(owner)
        return OwnerLease(owner, lambda: self._engines.discard(owner))

    def _owner_alive(self, owner: str) -> bool:
        return owner in self._engines

    def run_ids(self) -> Iterator[str]:
        with self._mutex:
            ids = list(self._journals)
        yield from ids

    def delete(self, run_id: str) -> None:
        with self._mutex:
            self._journals.pop(run_id, None)
            self._inboxes.pop(run_id, None)
            self._claimed.pop(run_id, None)  # a lease of a deleted run writes nothing more
