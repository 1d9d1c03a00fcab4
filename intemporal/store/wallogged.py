"""One file written through the file store's write-ahead log (`wal.py`): how much of it is
durable, and its lines since, logged as one record at its next sync.

A `FileLease` (`fileio.py`) writes each line into the journal at once, unsynced, and tells
its `Logged` (`add`); a durable append or `sync` takes the lines not yet durable as one
record of the log (`take`) and waits for the log's group commit to cover it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .walfile import WRITE, sync_folder

if TYPE_CHECKING:
    from .wal import WriteAheadLog, _Item

__all__ = ["PENDING_MAX", "Logged"]

PENDING_MAX = 1 << 16  # unsynced lines a lease keeps to log; past it, the file is synced


class Logged:
    """One file written through the log: how much of it is durable, and the lines since.

    `covered`: its first bytes known to be on disk (synced, or in the log); -1 when
    unknown (a run claimed after another engine, maybe one that never synced): then its
    next record holds the whole file, or the file is synced itself when it is large.
    """

    def __init__(
        self,
        wal: WriteAheadLog,
        path: str,
        covered: int = -1,
        first: bytes = b"",
        sync: bool = False,
    ) -> None:
        self.wal, self.path, self.covered = wal, path, covered
        self.raw = path.encode()  # as its records name it
        self.pending: list[bytes] = [first] if first else []
        self.size = len(first)
        self.sync_on_release = sync  # a durable run created claimed: durable by its release

    def add(self, data: bytes) -> None:
        """A line written unsynced after the others (in order, under the writer's lock)."""
        if self.covered < 0:
            return
        self.pending.append(data)
        self.size += len(data)
        if self.size > PENDING_MAX:  # flush mode never syncs: keep no more than this
            self.pending.clear()
            self.size, self.covered = 0, -1

    def take(self, fd: int, end: int) -> _Item | None:
        """The record making the file durable up to `end`, queued (wait for it), or None
        when it already is (nothing pending, or synced right here)."""
        covered = self.covered
        if covered == end:
            return None
        pending = self.pending
        if covered >= 0 and self.size <= self.wal.most:  # the usual case: the lines since
            data = pending[0] if len(pending) == 1 else b"".join(pending)  # one: no copy
            pending.clear()
            self.size, self.covered = 0, end
            return self.wal.enqueue(WRITE, self.path, covered, data, True, self.raw)
        pending.clear()
        self.size = 0
        if covered < 0 and end <= PENDING_MAX:  # the whole file, if it fits a record
            data = os.pread(fd, end, 0)
            if self.wal.fits(len(data)):
                self.covered = end
                return self.wal.enqueue(WRITE, self.path, 0, data, True, self.raw)
        # Too large for a record, or a file not known: synced here
        os.fdatasync(fd)
        if covered <= 0:  # its name may be new too
            sync_folder(os.path.join(self.wal.root, os.path.dirname(self.path)))
        self.wal.syncs += 1
        self.covered = end
        return None

    def wait(self, item: _Item) -> None:
        self.wal.wait(item)
