"""The write-ahead log's checkpoints (`wal.py` writes the log; this is the other half).

Before a segment of the log is overwritten, every record in it must be durable in the
file it names. A checkpoint makes it so: it syncs those files (and the folders of files
made or deleted), then moves the checkpoint in the log's `state` past them. The files are
known without reading the log back when only this process wrote those segments (their
names are kept per segment as records are written: `_name`); else the segments are read
and parsed (`records`). The checkpointer thread moves the checkpoint as the log enters a
new segment, off the commit path; a commit that catches up with it checkpoints itself.

A checkpoint syncs each file (a device flush each, on up to 16 threads), or, when it names
more than `BULK` files and the system has little else unwritten, the whole filesystem at
once (`walfile.sync_files` decides). After a power cut the same walk replays the records
into their files first (`_checkpoint(..., replay=True)`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from typing import Protocol

from . import walfile
from .walfile import Record, apply, parse, read_all, read_file, read_state, write_state

__all__ = ["BULK", "SLOTS", "WAL", "Checkpoints"]

WAL = ".wal"
SLOTS = 4  # segment files, reused round-robin
# A checkpoint naming more files than this may sync the whole filesystem at once (syncfs)
# instead of each file: see `walfile.whole_filesystem` for when
BULK = 16


def failed_before(exc: OSError) -> OSError:
    """The error every write and checkpoint of a log raises once a sync of it failed."""
    return OSError(errno.EIO, f"the write-ahead log failed to sync before: {exc}")


class Named(Protocol):
    """What a checkpoint keeps of a written record: the file it names, and whether that
    file's folder must be synced too (the file was made or deleted)."""

    path: str
    folder: bool


class Checkpoints:
    """The checkpoint half of `wal.WriteAheadLog` (its base class): the names its records
    gave by segment, the checkpointer thread, and the walk over the log's records.

    `file_syncs` counts the files its checkpoints synced one by one, `fs_syncs` those
    that synced the whole filesystem at once.
    """

    _fds: dict[int, int]  # the log's segment files by slot (the log opens them)
    _mine_from: int  # from this segment on, every record is ours (the log keeps it)
    _failed: OSError | None  # a sync failed: the log makes no more promises (`_sync_files`)

    def __init__(self, root: str) -> None:
        self.root = root
        self.folder = os.path.join(root, WAL)
        self.file_syncs = 0
        self.fs_syncs = 0
        self.end = (0, 0)  # where the last `records` stopped
        self._behind = threading.Condition()  # the checkpointer thread's wake-up
        self._behind_upto: tuple[int, int] | None = None
        self._checkpointer: threading.Thread | None = None
        # The files our records name, by segment, since the checkpoint: a checkpoint of
        # segments only we wrote syncs these without reading the log back (`_named`). A
        # segment another writer may have written in (another process, a writer that
        # died) is read back.
        self._names: dict[int, dict[str, bool]] = {}
        self._failed = None

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """The log to ourselves (the log's mutex and flock)."""
        raise NotImplementedError

    def _slot_fd(self, slot: int) -> int:
        """The open segment file of `slot` (the log's)."""
        raise NotImplementedError

    def _name(self, segno: int, item: Named) -> None:
        """Note that a record of segment `segno` names `item.path` (under the log's lock)."""
        names = self._names.get(segno)
        if names is None:
            names = self._names[segno] = {}
        if item.folder or item.path not in names:
            names[item.path] = item.folder or names.get(item.path, False)

    def _named(self, first: int, upto: int) -> dict[str, bool] | None:
        """The files (and whether to sync their folder) our records in segments `first` up
        to `upto` (excluded) name, or None when another writer may have written there
        (under the log's lock)."""
        if first < self._mine_from:
            return None
        named: dict[str, bool] = {}
        for segno in range(first, upto):
            for path, folder in self._names.get(segno, {}).items():
                named[path] = folder or named.get(path, False)
        return named

    def _checked(self, upto: int) -> None:
        """The checkpoint reached segment `upto`: forget the names of the segments before."""
        for segno in [s for s in self._names if s < upto]:
            del self._names[segno]

    def _checkpoint(self, state: tuple[int, int, int], upto: tuple[int, int], replay: bool) -> None:
        """Make every record from the checkpoint on durable in its file, then move the
        checkpoint to `upto`. `replay`: write the records into their files first."""
        version, segno, off = state
        named = None if replay or upto[1] else self._named(segno, upto[0])
        if named is None:
            records = self.records(segno, off, upto)
            named = walfile.names(self._applied(records) if replay else records)
        self._sync_files(named)
        write_state(self.folder, walfile.boot_id() or "", version + 1, *upto)
        self._checked(upto[0])

    def _applied(self, records: Iterator[Record]) -> Iterator[Record]:
        for rec in records:
            apply(self.root, rec)
            yield rec

    def _sync_files(self, paths: dict[str, bool]) -> None:
        """Sync every file of `paths` (and the folder of those marked: made or deleted):
        each file, or the whole filesystem at once (`walfile.sync_files` decides).

        A file that fails to sync fails this log for good, as a failed write of the log
        does (`_failed`): Linux reports a writeback error to one sync only and marks the
        pages clean, so a later sync of that file "succeeds" with its data never written,
        and a checkpoint moved past its records then would let the log lose them too."""
        if self._failed is not None:
            raise failed_before(self._failed)
        try:
            whole = walfile.sync_files(self.root, paths, BULK)
        except OSError as exc:
            self._failed = exc
            raise
        if whole:
            self.fs_syncs += 1
        else:
            self.file_syncs += len(paths)

    def _checkpoint_behind(self, upto: tuple[int, int]) -> None:
        """Have the checkpointer thread move the checkpoint to `upto`, off the commit path."""
        with self._behind:
            self._behind_upto = upto
            if self._checkpointer is None or not self._checkpointer.is_alive():
                self._checkpointer = threading.Thread(
                    target=self._checkpoints, name="intemporal-checkpoint", daemon=True
                )
                self._checkpointer.start()
            self._behind.notify()

    def _checkpoints(self) -> None:
        while True:
            with self._behind:
                while self._behind_upto is None:
                    self._behind.wait()
                upto, self._behind_upto = self._behind_upto, None
            if upto == (0, 0):  # closed
                return
            with contextlib.suppress(OSError):  # the commit path's checkpoint does it then
                self._checkpoint_outside(upto)

    def _checkpoint_outside(self, upto: tuple[int, int]) -> None:
        """A checkpoint to `upto`, the lock held only to copy the log before it (not the
        segment being written) and to write the state: files sync while records are logged."""
        with self._locked():
            state = read_state(self.folder)
            if state is None or state[1:] >= upto:
                self._checked(upto[0])
                return
            named = None if upto[1] else self._named(state[1], upto[0])
            if named is None:
                pages = {
                    s % SLOTS: read_all(self._slot_fd(s % SLOTS)) for s in range(state[1], upto[0])
                }
                pages[upto[0] % SLOTS] = os.pread(self._slot_fd(upto[0] % SLOTS), upto[1], 0)
        if named is None:
            named = walfile.names(self.records(state[1], state[2], upto, pages))
        self._sync_files(named)
        with self._locked():
            now = read_state(self.folder)
            if now is not None and now[1:] < upto:
                write_state(self.folder, walfile.boot_id() or "", now[0] + 1, *upto)
            self._checked(upto[0])

    def records(
        self,
        segno: int,
        off: int,
        upto: tuple[int, int] | None = None,
        pages: dict[int, bytes] | None = None,
    ) -> Iterator[Record]:
        """The records from (`segno`, `off`) to `upto` (None: to the log's end); sets `end`.
        `pages`: the segments' bytes by slot, copied before (else read from their files)."""
        self.end = (segno, off)
        while True:
            fd = self._fds.get(segno % SLOTS)
            path = os.path.join(self.folder, f"{segno % SLOTS}.log")
            try:
                if pages is not None:
                    data = pages[segno % SLOTS]
                else:
                    data = read_all(fd) if fd is not None else read_file(path)
            except (FileNotFoundError, KeyError):
                return
            while upto is None or (segno, off) < upto:
                rec, size = parse(data, off, segno)
                if rec is None:
                    break
                off += size
                self.end = (segno, off)
                yield rec
            if upto is not None and (segno, off) >= upto:
                return
            nxt = os.path.join(self.folder, f"{(segno + 1) % SLOTS}.log")
            try:
                head = pages[(segno + 1) % SLOTS] if pages is not None else read_file(nxt, 1 << 16)
            except (FileNotFoundError, KeyError):
                return
            if parse(head, 0, segno + 1)[0] is None and (upto is None or upto[0] != segno + 1):
                return
            segno, off = segno + 1, 0

    def _stop_checkpoints(self) -> None:
        """End the checkpointer thread (waits for a checkpoint in progress, 30 s at most)."""
        with self._behind:
            if self._checkpointer is not None:
                self._behind_upto = (0, 0)  # stop
                self._behind.notify()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
            self._checkpointer = None
