"""The file store's write-ahead log: one log for the whole store, synced by group commit.

    .intemporal/.wal/
      0.log 1.log 2.log 3.log   preallocated, zero-filled segments, reused round-robin
      state                     the boot it was last checked in + the checkpoint (synced)
      tail                      where the next record goes: shared by processes (mmap)
      lock                      flocked by whichever process writes the log

Every durable write of the store (a journal's new lines, an inbox message) is first made
to its own file *without* a sync, then described in the log: "bytes D at offset O of file
F". A caller waiting for durability queues its record and waits; one thread (the leader)
writes every queued record of every thread in one `pwritev(RWF_DSYNC)` in place into the
zero-filled segment (no size or block change: the cheapest sync the disk offers), then
wakes exactly the waiters it covered, one lock each, and hands leadership to the next
waiter queued meanwhile. Processes sharing the store serialize their writes with a flock.
With `INTEMPORAL_WAL_DIRECT=1`, where the filesystem allows it (not tmpfs), the batch is
written with direct I/O, whole blocks, the same bytes on disk (`waldirect.py`).

A power cut loses what was not synced: the run files may lack lines the log has. So when
a store is opened in a boot other than the one its log was last checked in, the log is
replayed from the checkpoint into the files (idempotent: bytes already there are left),
the files are synced, and the checkpoint moves to the end. Without a reboot nothing can
have been lost (a killed process leaves its writes in the page cache) and nothing is read.
Before a segment is overwritten, a checkpoint syncs the files its records name (and the
folders of those made or deleted): each file (a device flush each, on up to 16 threads),
or, when they are many and the system has little else to write, the whole filesystem
with one `syncfs` and an `fsync` of the store's folder (two flushes; `walfile.sync_files`
decides). Its checkpointer thread does this off the commit path, as the log moves to a
new segment.

The record format, the state file and the replay of one record are in `walfile.py`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator

from . import walfile
from .safefs import open_in
from .waldirect import DirectTail, block_size
from .walfile import (
    BODY,
    DELETE,
    IOV_MAX,
    OVERHEAD,
    PREFIX,
    RWF_DSYNC,
    SEGNO,
    WRITE,
    Record,
    apply,
    fcntl,
    make_folder,
    parse,
    read_all,
    read_file,
    read_state,
    sync_folder,
    write_state,
    write_synced,
)

__all__ = ["DELETE", "WAL", "WRITE", "WriteAheadLog"]

WAL = ".wal"
SLOTS = 4  # segment files, reused round-robin
FIRST_SEGMENT = 1 << 16  # a new store's log starts small (a test's store costs 64 KiB)...
MAX_SEGMENT = 1 << 22  # ...and grows x4 per segment up to 4 MiB
UNBORN_SLACK = 60.0  # s: a journal linked this long before a checkpoint had its record in
# A checkpoint naming more files than this may sync the whole filesystem at once (syncfs)
# instead of each file: see `walfile.whole_filesystem` for when
BULK = 16
# direct I/O where the filesystem allows it (waldirect.py): off unless asked, no gain measured
DIRECT = os.environ.get("INTEMPORAL_WAL_DIRECT") == "1"

# segno, offset, and the end of a batch being written (0: none): a writer killed in
# between leaves it set, and the next one finds out whether that batch is in the log.
_TAIL = struct.Struct("<QQQ")
_FULL = 1 << 62  # an offset past any segment's end: the next batch opens a new one


class _Item:
    """A queued record: its head (size to path) and data, written as they are (no copy
    joins them), the crc of both, and who waits. Made by `enqueue` alone, which sets every
    field (no `__init__`: one called through the class costs each record ~1,000
    instructions more).

    `waiter` is made only for a thread that finds another leading (it blocks on it): a
    thread that leads writes its own record without one.
    """

    __slots__ = (
        "crc",
        "data",
        "done",
        "error",
        "folder",
        "head",
        "lead",
        "path",
        "size",
        "waiter",
        "wanted",
    )
    head: bytes
    data: bytes
    size: int  # in the log: crc + head + data + segno
    crc: int  # crc32 of head and data, to be continued over the segment number
    path: str  # the file it names: a checkpoint syncs it
    folder: bool  # a deletion or a new file: its folder is synced too
    wanted: bool  # someone will wait for it (`wait`): else written by the leader
    waiter: threading.Lock | None
    error: OSError | None
    done: bool
    lead: bool  # it leads the batch it is in (queued alone, or woken to lead the next one)


_CRC = struct.Struct("<I")
_BODY = BODY.size


class WriteAheadLog:
    """The log of the file store rooted at `root`; see the module docstring.

    `log(path, offset, data)` returns once the record is on disk. `syncs` counts the
    data syncs this object made (tests and `make bench` count them); `file_syncs` the files
    its checkpoints synced one by one, `fs_syncs` those that synced the whole filesystem.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.folder = os.path.join(root, WAL)
        self.syncs = 0
        self.file_syncs = 0  # files a checkpoint synced one by one (tests, benchmarks)
        self.fs_syncs = 0  # checkpoints that synced the whole filesystem at once instead
        self.most = FIRST_SEGMENT - OVERHEAD - 256  # data bytes a record holds (`fits`)
        self._mu = threading.Lock()
        self._queue: list[_Item] = []
        self._leading = False
        self._fds: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self._lock_fd = -1
        self._tail: mmap.mmap | None = None
        self._direct: DirectTail | None = None  # chosen at open: see `direct`
        self._failed: OSError | None = None
        self._open_lock = threading.Lock()
        self._file_mu = threading.Lock()  # the flock excludes processes; this, our threads
        self.end = (0, 0)  # where the last `records` stopped
        self._behind = threading.Condition()  # the checkpointer thread's wake-up
        self._behind_upto: tuple[int, int] | None = None
        self._checkpointer: threading.Thread | None = None
        # The files our records name, by segment, since the checkpoint: a checkpoint of
        # segments only we wrote syncs these without reading the log back (`_named`). A
        # segment another writer may have written in (another process, a writer that
        # died) is read back: from `_mine_from` on, every record is ours.
        self._names: dict[int, dict[str, bool]] = {}
        self._mine_from = _FULL
        self._last_end = (-1, -1)  # where our last write ended in the log

    @property
    def direct(self) -> bool:
        """Whether the log is written with direct I/O (decided when it is opened)."""
        return self._direct is not None

    # -- writing ---------------------------------------------------------------------------
    def log(self, path: str, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of `path` into the log and return once it is synced.

        Raises `OSError` when the log cannot be written or synced (a full disk).
        """
        self.wait(self.enqueue(WRITE, path, offset, data))

    def fits(self, size: int) -> bool:
        """Whether a record of `size` data bytes fits in a segment (larger: sync the file)."""
        return size <= self.most

    def enqueue(
        self,
        kind: int,
        path: str,
        offset: int,
        data: bytes,
        wait: bool = True,
        raw: bytes | None = None,
    ) -> _Item:
        """Queue a record (in this order among the queued); `wait(item)` waits for it.
        `raw`: `path` in UTF-8, if the caller keeps it (a `Logged`: one encoding per file)."""
        if raw is None:
            raw = path.encode()
        n = len(raw)
        item = _Item()
        item.head = head = PREFIX.pack(_BODY + n + len(data), kind, offset, n) + raw
        item.data, item.size = data, len(head) + len(data) + 12
        item.crc = zlib.crc32(data, zlib.crc32(head))
        item.path, item.folder, item.wanted = path, kind == DELETE or offset == 0, wait
        item.waiter = item.error = None
        item.done = item.lead = False
        mu = self._mu
        mu.acquire()  # (not `with`: see `wait`)
        if wait and not self._leading and not self._queue:
            self._leading = item.lead = True  # alone: it leads at once (`wait`)
        else:
            self._queue.append(item)
        mu.release()
        return item

    def wait(self, item: _Item) -> None:
        """Return once `item` is on disk: lead a batch, or wait for the one covering it.

        A thread alone (a sequential run's step) leads at once: its record, queued while
        nobody led and nothing was queued, made it the leader (`enqueue`, one lock
        section), so it writes its record and returns, without a lock of its own or a
        hand-off to another thread. Every `enqueue` that may wait must be followed by
        `wait`: a leader that never writes would hold up every other.
        """
        if item.lead:  # queued alone: the leader already
            self._lead([item])
            if item.error is not None:
                raise item.error
            return
        mu = self._mu
        mu.acquire()  # not `with` (its lookups of __enter__ and __exit__ cost every durable
        # step ~1,000 instructions): nothing here raises
        if item.done:
            mu.release()
        elif self._leading:
            item.waiter = waiter = threading.Lock()
            waiter.acquire()  # released by the leader that writes it, or to lead
            mu.release()
            waiter.acquire()
            if item.lead:
                self._lead(None)
        else:
            self._leading = True
            batch, self._queue = self._queue, []
            mu.release()
            self._lead(batch)
        if item.error is not None:
            raise item.error

    def _lead(self, batch: list[_Item] | None) -> None:
        """Write the queued batch (`batch`: taken already), wake who it covered, pass the
        lead to a waiting thread."""
        mu = self._mu
        while True:
            if batch is None:
                with mu:
                    batch, self._queue = self._queue, []
            error: OSError | None = None
            if batch:
                try:
                    self._write(batch)
                except OSError as exc:
                    error = exc
            mu.acquire()  # `wait` makes a waiter under it: none is missed
            for it in batch:
                it.error, it.done = error, True
                if it.waiter is not None and not it.lead:
                    it.waiter.release()
            batch = None
            if not self._queue:  # the usual case: nothing queued meanwhile
                self._leading = False
                mu.release()
                return
            nxt = None
            for it in self._queue:
                if it.waiter is not None:  # a thread blocked on it: it leads next
                    nxt = it
                    break
            if nxt is None:
                if any(not it.wanted for it in self._queue):
                    mu.release()
                    continue  # records nobody waits for (deletions): write them too
                # Records whose threads are not waiting yet: each leads when it does.
                self._leading = False
                mu.release()
                return
            nxt.lead = True  # it writes the next batch, its own record included
            assert nxt.waiter is not None
            nxt.waiter.release()
            mu.release()
            return

    def forget(self, *paths: str) -> None:
        """Log that `paths` are deleted (written with the next sync, not waited for), so a
        replay does not bring them back; nothing if this store never had a log."""
        if self._tail is not None or os.path.isdir(self.folder):
            for path in paths:
                self.enqueue(DELETE, path, 0, b"", wait=False)

    def flush(self) -> None:
        """Write what is queued (records nobody waits for: deletions) without waiting."""
        with self._mu:
            if not self._queue or self._leading:
                return
            self._leading = True
        self._lead(None)

    def _write(self, batch: list[_Item]) -> None:
        if self._failed is not None:
            raise OSError(errno.EIO, f"the write-ahead log failed to sync before: {self._failed}")
        tail = self._tail
        if tail is None:
            self._open()
            tail = self._tail
        assert tail is not None and fcntl is not None
        file_mu = self._file_mu
        file_mu.acquire()  # `_locked()` written out, without `with`: every sync's path
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                segno, off, pending = _TAIL.unpack_from(tail)
                if pending > off or (segno, off) != self._last_end or not segno:
                    segno, off = self._resume(segno, off, pending)
                end = self._sizes.get(segno % SLOTS)
                if end is None:
                    end = self._segment_size(segno)
                if len(batch) == 1:  # a lone record (a sequential run's step)
                    it = batch[0]
                    size = it.size
                    if off + size > end:
                        segno, off = self._advance(segno)
                    seg = SEGNO.pack(segno)
                    crc = _CRC.pack(zlib.crc32(seg, it.crc))
                    self._write_chunk(segno, off, [crc, it.head, it.data, seg], size)
                    names = self._names.get(segno)
                    if names is None or it.folder or it.path not in names:
                        self._name(segno, it)
                    self._last_end = (segno, off + size)
                    return
                seg = SEGNO.pack(segno)
                chunk: list[bytes] = []
                start = off
                for it in batch:
                    size = it.size
                    if off + size > end:
                        if chunk:
                            self._write_chunk(segno, start, chunk, off - start)
                            chunk = []
                        segno, off = self._advance(segno)
                        start, end = off, self._segment_size(segno)
                        seg = SEGNO.pack(segno)
                    chunk += (_CRC.pack(zlib.crc32(seg, it.crc)), it.head, it.data, seg)
                    self._name(segno, it)  # named before it is written: a superset is safe
                    off += size
                if chunk:
                    self._write_chunk(segno, start, chunk, off - start)
                self._last_end = (segno, off)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            file_mu.release()

    def _resume(self, segno: int, off: int, pending: int) -> tuple[int, int]:
        """Where to write, the tail read (`segno`, `off`, `pending`) not where our last write
        ended: a writer that died mid-batch, another writer since, or a new log (under the
        log's lock)."""
        if pending > off:  # its writer died: past its batch if the batch is there
            head = os.pread(self._slot_fd(segno % SLOTS), pending - off, off)
            off = pending if parse(head, 0, segno)[0] is not None else off
        if (segno, off) != self._last_end:  # someone else wrote since (or nobody yet)
            self._mine_from = segno + 1
        if segno == 0:  # a new log: its first segment
            segno, off = self._advance(0)
        return segno, off

    def _name(self, segno: int, item: _Item) -> None:
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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The log to ourselves: one thread of this process (a mutex: a flock is shared by
        the threads of a process), one process (the flock)."""
        assert fcntl is not None
        with self._file_mu:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _write_chunk(self, segno: int, offset: int, chunk: list[bytes], size: int) -> None:
        """Write `chunk` (`size` bytes in all) at `offset` of segment `segno`, synced."""
        tail = self._tail
        assert tail is not None
        slot = segno % SLOTS
        fd = self._fds.get(slot)
        if fd is None:
            fd = self._slot_fd(slot)
        _TAIL.pack_into(tail, 0, segno, offset, offset + size)
        try:
            if self._direct is None and RWF_DSYNC and len(chunk) <= IOV_MAX:
                written = os.pwritev(fd, chunk, offset, RWF_DSYNC)  # `write_synced`, inlined
            else:
                written = self._write_other(fd, slot, segno, offset, chunk, size)
        except OSError as exc:
            _TAIL.pack_into(tail, 0, segno, offset, 0)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._failed = exc  # the page cache's state is unknown: no more promises
            raise
        self.syncs += 1
        if written != size:
            _TAIL.pack_into(tail, 0, segno, offset, 0)
            raise OSError(errno.ENOSPC, "short write to the write-ahead log")
        _TAIL.pack_into(tail, 0, segno, offset + size, 0)

    def _write_other(
        self, fd: int, slot: int, segno: int, offset: int, chunk: list[bytes], size: int
    ) -> int:
        """`_write_chunk`'s write with direct I/O, or without RWF_DSYNC: the bytes written."""
        direct = self._direct
        if direct is not None and direct.fits(offset, size, self._sizes[slot]):
            written = direct.write(slot, segno, offset, chunk, size)
            if written >= 0:
                return written
            self._direct = None  # the filesystem refused direct I/O after all: buffered then
        return write_synced(fd, offset, chunk)

    def _segment_size(self, segno: int) -> int:
        slot = segno % SLOTS
        if slot not in self._sizes:  # made by another process: its size as it is
            self._slot_fd(slot)
        return self._sizes[slot]

    def _advance(self, segno: int) -> tuple[int, int]:
        """Move the log to segment `segno + 1`: its slot preallocated, checkpointed if reused."""
        new = segno + 1
        slot = new % SLOTS
        state = read_state(self.folder)
        if state is not None and new - SLOTS >= state[1]:  # the slot holds live records
            self._checkpoint(state, (new, 0), replay=False)  # (the checkpointer fell behind)
        elif state is not None and new > 1:
            self._checkpoint_behind((new, 0))  # long before this slot comes round again
        want = min(MAX_SEGMENT, FIRST_SEGMENT << min(2 * (new - 1), 16))
        if self._direct is not None:  # whole blocks, for its direct writes
            want = -(-want // self._direct.block) * self._direct.block
        fd = self._slot_fd(slot)
        have = os.fstat(fd).st_size
        if have < want:
            # Zeros written, not fallocated: blocks allocated and initialized now, so a
            # later write in place changes no metadata and its sync flushes data only.
            zeros = bytes(1 << 16)
            for pos in range(have, want, len(zeros)):
                os.pwrite(fd, zeros[: want - pos], pos)
            os.fsync(fd)
            have = want
        self._sizes[slot] = have  # a stale record of the last lap has an older segno
        return new, 0

    def _slot_fd(self, slot: int) -> int:
        fd = self._fds.get(slot)
        if fd is None:
            fd = open_in(self.folder, f"{slot}.log", os.O_RDWR | os.O_CREAT)
            if slot not in self._sizes:
                self._sizes[slot] = os.fstat(fd).st_size
            self._fds[slot] = fd
            sync_folder(self.folder)  # a new segment's name survives a power cut
        return fd

    def open(self) -> None:
        """Make the log's files (durably) if they are missing: a store creates a journal
        only once its log exists, so a replay finds whatever a power cut left half-made."""
        self._open()

    def _open(self) -> None:
        if self._tail is not None:
            return
        with self._open_lock:
            if self._tail is not None:
                return
            made = make_folder(self.root, WAL)
            self._lock_fd = open_in(self.folder, "lock", os.O_RDWR | os.O_CREAT)
            fd = open_in(self.folder, "tail", os.O_RDWR | os.O_CREAT)
            try:
                if os.fstat(fd).st_size < mmap.PAGESIZE:
                    os.ftruncate(fd, mmap.PAGESIZE)
                tail = mmap.mmap(fd, mmap.PAGESIZE)
            finally:
                os.close(fd)
            assert fcntl is not None
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                if read_state(self.folder) is None:
                    write_state(self.folder, walfile.boot_id() or "", 0, 1, 0)
                    if made:
                        sync_folder(self.folder)
                        sync_folder(self.root)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            block = block_size(self.folder) if DIRECT else 0
            self._direct = DirectTail(self.folder, block) if block else None
            self._tail = tail

    # -- checkpoints and replay ------------------------------------------------------------
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
        each file, or the whole filesystem at once (`walfile.sync_files` decides)."""
        if walfile.sync_files(self.root, paths, BULK):
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

    def recover(self) -> int:
        """After a reboot: replay the log into the files; the number of records replayed.

        Nothing to do (0) when the log was last checked in this boot. Raises `OSError` when
        a file cannot be written.
        """
        got = walfile.load_state(self.folder)  # one small read when there is nothing to do
        if got is None or got[0] == walfile.boot_id():
            return 0
        self._open()
        assert self._tail is not None
        with self._locked():
            got = walfile.load_state(self.folder)
            if got is None or got[0] == walfile.boot_id():
                return 0  # another process replayed it meanwhile
            state, since = got[1:4], got[4]
            count = sum(1 for _ in self.records(state[1], state[2]))
            end = self.end
            self._checkpoint(state, end, replay=True)
            walfile.drop_unborn(self.root, since - UNBORN_SLACK)
            # New records go to a new segment: past the end found here, a power cut may have
            # left whole records of a batch never acknowledged, which must stay unreachable.
            _TAIL.pack_into(self._tail, 0, end[0], _FULL, 0)
            for slot in range(SLOTS):
                self._sizes.pop(slot, None)
                with contextlib.suppress(FileNotFoundError):
                    self._slot_fd(slot)
            return count

    def close(self) -> None:
        """Write what is queued, and close the log's files."""
        with contextlib.suppress(OSError):
            self.flush()
        with self._behind:
            if self._checkpointer is not None:
                self._behind_upto = (0, 0)  # stop
                self._behind.notify()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
            self._checkpointer = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._tail is not None:
            self._tail.close()
            self._tail = None
