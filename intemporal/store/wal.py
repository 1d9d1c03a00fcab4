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
from .walcheckpoint import SLOTS, WAL, Checkpoints, failed_before
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
    fcntl,
    make_folder,
    parse,
    read_state,
    sync_folder,
    write_state,
    write_synced,
)

__all__ = ["DELETE", "WAL", "WRITE", "WriteAheadLog"]

FIRST_SEGMENT = 1 << 16  # a new store's log starts small (a test's store costs 64 KiB)...
MAX_SEGMENT = 1 << 22  # ...and grows x4 per segment up to 4 MiB
UNBORN_SLACK = 60.0  # s: a journal linked this long before a checkpoint had its record in
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
_ident = threading.get_ident
_BODY = BODY.size


class WriteAheadLog(Checkpoints):
    """The log of the file store rooted at `root`; see the module docstring.

    `log(path, offset, data)` returns once the record is on disk. `syncs` counts the
    data syncs this object made (tests and `make bench` count them); `file_syncs` the files
    its checkpoints synced one by one, `fs_syncs` those that synced the whole filesystem
    (`walcheckpoint.py`: the checkpoint half).
    """

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.syncs = 0
        self.most = FIRST_SEGMENT - OVERHEAD - 256  # data bytes a record holds (`fits`)
        self._mu = threading.Lock()
        self._queue: list[_Item] = []
        self._leading = False
        self._fds: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self._lock_fd = -1
        self._tail: mmap.mmap | None = None
        self._direct: DirectTail | None = None  # chosen at open: see `direct`
        self._open_lock = threading.Lock()
        self._file_mu = threading.Lock()  # the flock excludes processes; this, our threads
        self._alone: _Item | None = None  # a record that made its thread the leader...
        self._alone_thread = 0  # ...and that thread, until it leads (`interrupted`)
        self._mine_from = _FULL  # from this segment on, every record is ours: see `_named`
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
        try:
            self.wait(self.enqueue(WRITE, path, offset, data))
        except BaseException:  # Ctrl-C before its wait: it may lead (`interrupted`)
            self.interrupted()
            raise

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
            self._alone, self._alone_thread = item, _ident()  # until it does (`interrupted`)
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
            self._alone = None
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
            try:
                waiter.acquire()
            except BaseException:  # interrupted (Ctrl-C): gone, unless it must lead now
                self._left(item)
                raise
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
        stop: BaseException | None = None  # an interrupt: raised once the lead is handed on
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
                except BaseException as exc:  # Ctrl-C in the main thread: its batch fails
                    stop, error = exc, OSError(errno.EINTR, "the log's write was interrupted")
            mu.acquire()  # `wait` makes a waiter under it: none is missed
            for it in batch:
                it.error, it.done = error, True
                if it.waiter is not None and not it.lead:
                    it.waiter.release()
            batch = None
            if not self._queue:  # the usual case: nothing queued meanwhile
                self._leading = False
                mu.release()
                if stop is not None:
                    raise stop
                return
            nxt = None
            for it in self._queue:
                if it.waiter is not None:  # a thread blocked on it: it leads next
                    nxt = it
                    break
            if nxt is None:
                if stop is None and any(not it.wanted for it in self._queue):
                    mu.release()
                    continue  # records nobody waits for (deletions): write them too
                # Records whose threads are not waiting yet: each leads when it does.
                self._leading = False
                mu.release()
                if stop is not None:
                    raise stop
                return
            nxt.lead = True  # it writes the next batch, its own record included
            assert nxt.waiter is not None
            nxt.waiter.release()
            mu.release()
            if stop is not None:
                raise stop
            return

    def _left(self, item: _Item) -> None:
        """`item`'s thread stopped waiting for it (interrupted): it leads if it was just
        handed the lead (else nobody would), or is left to a later batch, unwoken."""
        with self._mu:
            lead = item.lead and not item.done
            if not lead:
                item.waiter = None  # not handed the lead, nor woken: a later batch writes it
        if lead:
            self._lead(None)

    def interrupted(self) -> None:
        """Called by a thread interrupted (Ctrl-C) between queuing a record and waiting
        for it: if that record made it the leader (`enqueue`), it leads now, so the log's
        other threads are not left waiting for a leader that never writes."""
        with self._mu:
            item = self._alone
            if item is None or self._alone_thread != _ident():
                return
            self._alone = None
        self._lead([item])

    def forget(self, *paths: str, durable: bool = False) -> None:
        """Log that `paths` are deleted, so a replay does not bring them back; nothing if
        this store never had a log. Written with the next sync, not waited for; with
        `durable`, returns once every one is in the log: a file is unlinked only then (a
        replay makes a file again from its records since the checkpoint, so a deletion
        still queued when its process died, its file unlinked, came back at the next
        boot). Raises `OSError` (with `durable`) when the log cannot be written."""
        if self._tail is not None or os.path.isdir(self.folder):
            items = [self.enqueue(DELETE, path, 0, b"", wait=durable) for path in paths]
            if durable:
                error: OSError | None = None
                for item in items:  # each one waited for: `enqueue`'s rule
                    try:
                        self.wait(item)
                    except OSError as exc:
                        error = error or exc
                    except BaseException:  # Ctrl-C: the rest are written by a later batch
                        self.interrupted()
                        raise
                if error is not None:
                    raise error

    def flush(self) -> None:
        """Write what is queued (records nobody waits for: deletions) without waiting."""
        with self._mu:
            if not self._queue or self._leading:
                return
            self._leading = True
        self._lead(None)

    def _write(self, batch: list[_Item]) -> None:
        if self._failed is not None:
            raise failed_before(self._failed)
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
        self._stop_checkpoints()
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
