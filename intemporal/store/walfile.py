"""The write-ahead log's files: the record format, the state file, and replaying a record.

A record: crc32 | size | kind | offset | len(path) | path | data | segno, little-endian.
The crc covers the rest, the segment number tells a record of this lap from a stale one:
the log ends at the first record that fails either check (a torn write, zeros, the past).

The state file holds, twice (written in turn: a write torn by a power cut leaves the
other), the boot the log was last checked in and its checkpoint. `apply(root, record)`
puts one record back into its file; `drop_unborn` removes journals whose creation a power
cut cut short. `wal.py` writes and reads the log with these.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .safefs import JOURNAL, open_file, open_in, prune_folders, unlink_in

try:
    import fcntl
except ImportError:  # no flock: the store syncs each file itself (no log)
    fcntl = None  # type: ignore[assignment]

WRITE, DELETE = 1, 2
HEAD = struct.Struct("<II")  # crc, size (of kind..data)
BODY = struct.Struct("<BQH")  # kind, offset, len(path)
SEGNO = struct.Struct("<Q")
# size, kind, offset, len(path): a record's head after its crc, then path, data, segno
# (`WriteAheadLog.enqueue` builds it: the crc covers head, path, data and segno)
PREFIX = struct.Struct("<IBQH")
OVERHEAD = HEAD.size + BODY.size + SEGNO.size
_STATE = struct.Struct("<I36sQQQd")  # crc, boot, version, checkpoint segno, offset, time
# Where the two copies of the state start: in sectors of their own (a torn write of one
# never reaches the other). 64 is where earlier versions wrote the odd copy, overlapping
# the even one's last 8 bytes: still read, so an older store is replayed after an upgrade.
_COPIES = (0, 512)
_OLD_ODD = 64


# A device flush (what each file's sync ends with) costs about what writing 64 KiB does
# (this project's disk: ~140 µs a small file's fdatasync, ~500 MB/s): the other programs'
# unwritten bytes a whole-filesystem sync may take along, per file it saves a flush of.
DIRTY_PER_FILE = 64 << 10
SYNC_THREADS = 16  # a checkpoint syncing each file: on this many threads at most...
SYNC_SHARE = 8  # ...one per this many files

_BOOT: list[str | None] = []  # read once: a process lives in one boot


def boot_id() -> str | None:
    """This boot of the machine (Linux), or None where it cannot be told: no log then."""
    if not _BOOT:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                _BOOT.append(f.read().strip().decode()[:36] or None)
        except OSError:
            _BOOT.append(None)
    return _BOOT[0]


def supported() -> bool:
    """Whether this system can keep a log (flock, pwritev, a boot id)."""
    return fcntl is not None and hasattr(os, "pwritev") and boot_id() is not None


def syncfs(fd: int) -> None:
    """Sync the whole filesystem holding `fd` (Linux `syncfs`). Raises `OSError` when it
    fails, or (`ENOSYS`) where the C library has no `syncfs`."""
    import ctypes  # only at a large checkpoint: ctypes costs milliseconds to import

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "syncfs"):
        raise OSError(errno.ENOSYS, "no syncfs in this C library")
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_SYNCFS_OK: list[bool] = []  # decided once: the kernel does not change under a process


def syncfs_reports_errors() -> bool:
    """Whether `syncfs` reports the failed writeback of any file it syncs: Linux 5.8 and
    later (before, it returned 0 whatever the disk said: never to be trusted then)."""
    if not _SYNCFS_OK:
        found = re.match(r"(\d+)\.(\d+)", os.uname().release) if hasattr(os, "uname") else None
        version = (int(found[1]), int(found[2])) if found else (0, 0)
        _SYNCFS_OK.append(sys.platform.startswith("linux") and version >= (5, 8))
    return _SYNCFS_OK[0]


def dirty_bytes() -> int | None:
    """The bytes the whole system has yet to write to its disks (`Dirty` + `Writeback` of
    /proc/meminfo), or None where that cannot be read."""
    try:
        with open("/proc/meminfo", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total, seen = 0, 0
    for line in text.splitlines():
        if line.startswith((b"Dirty:", b"Writeback:")):
            total += int(line.split()[1]) * 1024  # kB
            seen += 1
    return total if seen == 2 else None


def whole_filesystem(files: int, bulk: int, dirty: int | None) -> bool:
    """Whether a checkpoint naming `files` files syncs the whole filesystem at once
    (`syncfs`: one device flush) rather than each file (a flush each): when it names more
    than `bulk` and the system's unwritten bytes (`dirty`, None: unknown) are at most
    `DIRTY_PER_FILE` per file named, so writing back other programs' data too costs no
    more than the flushes it saves."""
    return files > bulk and dirty is not None and dirty <= files * DIRTY_PER_FILE


@dataclass
class Record:
    """One record read back from the log: `data` to put at `offset` of file `path`."""

    kind: int
    path: str
    offset: int
    data: bytes


def parse(data: bytes, off: int, segno: int) -> tuple[Record | None, int]:
    """The record at `off` of a segment's `data` if it is whole and of segment `segno`."""
    if off + OVERHEAD > len(data):
        return None, 0
    crc, size = HEAD.unpack_from(data, off)
    end = off + 8 + size
    if size < BODY.size or end + 8 > len(data):
        return None, 0
    if SEGNO.unpack_from(data, end)[0] != segno:
        return None, 0
    if zlib.crc32(data[end : end + 8], zlib.crc32(data[off + 4 : end])) != crc:
        return None, 0
    kind, offset, plen = BODY.unpack_from(data, off + 8)
    p = off + 8 + BODY.size
    path = data[p : p + plen].decode(errors="replace")
    return Record(kind, path, offset, data[p + plen : end]), end + 8 - off


def apply(root: str, rec: Record) -> None:
    """Put one record into its file: bytes already there are left alone (replay is
    idempotent); a file a power cut left shorter than the record's offset is not patched
    (a run deleted since, whose older lines are gone with it)."""
    if rec.kind == DELETE:
        with contextlib.suppress(OSError):  # gone, or one `gc` could not delete either
            unlink_in(root, rec.path)
        prune_folders(root, rec.path)  # a child run's, made again by the records before
        return
    flags = os.O_RDWR | (os.O_CREAT if rec.offset == 0 else 0)
    try:
        fd = open_in(root, rec.path, flags, mkdirs=rec.offset == 0)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        size = os.fstat(fd).st_size
        if size < rec.offset:
            return
        have = os.pread(fd, len(rec.data), rec.offset)
        if have == rec.data:
            return
        if rec.offset == 0 and have:  # a new run under an old name: the record's is newer
            os.ftruncate(fd, 0)
        os.pwrite(fd, rec.data, rec.offset)
    finally:
        os.close(fd)


def names(records: Iterable[Record]) -> dict[str, bool]:
    """The files `records` name, each with whether its folder needs a sync too (a record
    of a deletion or of a new file)."""
    named: dict[str, bool] = {}
    for rec in records:
        named[rec.path] = rec.kind == DELETE or rec.offset == 0 or named.get(rec.path, False)
    return named


def sync_files(root: str, paths: dict[str, bool], bulk: int) -> bool:
    """Sync every file of `paths` under `root` (and the folder of those marked True: made
    or deleted); True when that was done by syncing the whole filesystem (`sync_all`),
    as it is when `whole_filesystem` says so, else each file (`sync_each`). Raises
    `OSError` when a file cannot be synced (a missing one is no error: deleted since)."""
    many = len(paths) > bulk  # (else no need to read /proc/meminfo)
    folders = {os.path.dirname(path) for path in paths} if many else set()
    if many and whole_filesystem(len(paths), bulk, dirty_bytes()) and sync_all(root, folders):
        return True
    sync_each(root, paths)
    return False


def sync_each(root: str, paths: dict[str, bool]) -> None:
    """Sync each file of `paths` under `root`, and the folder of those marked True, on up
    to `SYNC_THREADS` threads (one per `SYNC_SHARE` of them): each sync ends with a device
    flush, and flushes asked for at once are merged by the kernel's block layer (400
    small files on this project's disk: 0.7-2 s one after another, 80-90 ms on 16 threads,
    half the flushes). Raises the first `OSError` met once every thread stopped."""
    tasks = [functools.partial(_sync_file, root, path) for path in paths]
    for folder in {os.path.dirname(path): None for path, made in paths.items() if made}:
        tasks.append(functools.partial(_sync_file, root, folder, True))
    workers = min(SYNC_THREADS, len(tasks) // SYNC_SHARE)
    if workers <= 1:
        for task in tasks:
            task()
        return
    todo = iter(tasks)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                task = None if errors else next(todo, None)
            if task is None:
                return
            try:
                task()
            except BaseException as exc:  # raised by the caller's thread, below
                with lock:
                    errors.append(exc)

    threads = [
        threading.Thread(target=work, name="intemporal-sync", daemon=True) for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _sync_file(root: str, path: str, folder: bool = False) -> None:
    """fdatasync the file `path` under `root` (`folder`: fsync the folder); nothing if it
    is gone (deleted since it was logged)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if folder:
            sync_folder(os.path.join(root, path))
            return
        fd = open_in(root, path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


def sync_all(root: str, folders: Iterable[str] = ()) -> bool:
    """Make every file and folder of the filesystem holding `root` durable: `syncfs`,
    then an `fsync` of `root`. False when that could not be done or trusted (no `syncfs`,
    a kernel whose `syncfs` hides write errors, a folder of `folders` (under `root`) on
    another filesystem, any error): the caller syncs each file then.

    The `fsync` after: `syncfs` flushes the device's cache *before* it writes back the
    block device's own buffers (where ext2, or ext4 without a journal, keep inodes and
    folders), so one more flush makes those durable too (on such a filesystem an `fsync`
    always flushes; one with a journal made them durable in its commit)."""
    if not syncfs_reports_errors():
        return False
    try:
        fd = os.open(root, os.O_RDONLY)
    except OSError:
        return False
    try:
        device = os.fstat(fd).st_dev
        for folder in folders:  # a mount point inside the store: not this filesystem
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if folder and os.stat(os.path.join(root, folder)).st_dev != device:
                    return False
        syncfs(fd)
        os.fsync(fd)
    except OSError:
        return False  # not taken for success: each file's sync raises the error, if ours
    finally:
        os.close(fd)
    return True


def drop_unborn(root: str, since: float) -> list[str]:
    """Remove the journals a power cut left empty or with a torn first line: runs whose
    creation was never acknowledged (its record lost), made after `since` (epoch s)."""
    dropped = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.endswith(JOURNAL):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if st.st_mtime < since or not _unborn(path, st.st_size):
                    continue
                os.unlink(path)
            except OSError:
                continue
            dropped.append(os.path.relpath(path, root))
    return dropped


def _unborn(path: str, size: int) -> bool:
    """Whether the journal at `path` lacks a whole first line."""
    if size == 0:
        return True
    fd = open_file(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            chunk = os.pread(fd, 1 << 16, pos)
            if not chunk or b"\n" in chunk:
                return False
            pos += len(chunk)
        return True
    finally:
        os.close(fd)


def read_state(folder: str) -> tuple[int, int, int] | None:
    """(version, checkpoint segno, offset) of the log in `folder`, or None if it has none."""
    got = load_state(folder)
    return None if got is None else got[1:4]


def load_state(folder: str) -> tuple[str, int, int, int, float] | None:
    """(boot, version, checkpoint segno, offset, time) of the log in `folder`, or None."""
    # Two copies, written in turn: a write torn by a power cut leaves the other one.
    try:
        data = read_file(os.path.join(folder, "state"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    best = None
    for pos in (*_COPIES, _OLD_ODD):
        chunk = data[pos : pos + _STATE.size]
        if len(chunk) < _STATE.size:
            continue
        crc, boot, version, segno, off, when = _STATE.unpack(chunk)
        if zlib.crc32(chunk[4:]) != crc:
            continue
        if best is None or version > best[1]:
            best = (boot.rstrip(b"\0").decode(errors="replace"), version, segno, off, when)
    return best


def write_state(folder: str, boot: str, version: int, segno: int, off: int) -> None:
    rest = _STATE.pack(0, boot.encode()[:36], version, segno, off, time.time())[4:]
    data = struct.pack("<I", zlib.crc32(rest)) + rest
    fd = open_in(folder, "state", os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, data, _COPIES[version % 2])
        os.fdatasync(fd)
    finally:
        os.close(fd)


RWF_DSYNC = getattr(os, "RWF_DSYNC", 0)
IOV_MAX = 1024  # the fewest buffers one pwritev takes (Linux's UIO_MAXIOV)


def write_synced(fd: int, offset: int, chunk: list[bytes]) -> int:
    """Write `chunk` at `offset` of `fd` through the page cache, synced: the bytes written."""
    if not RWF_DSYNC:
        written = os.pwrite(fd, b"".join(chunk), offset)
        os.fdatasync(fd)
        return written
    parts = chunk if len(chunk) <= IOV_MAX else [b"".join(chunk)]
    return os.pwritev(fd, parts, offset, RWF_DSYNC)  # the parts: no copy


def read_all(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size, 0)


def read_file(path: str, limit: int = -1) -> bytes:
    fd = open_file(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size if limit < 0 else min(size, limit), 0)
    finally:
        os.close(fd)


def make_folder(root: str, name: str) -> bool:
    try:
        os.mkdir(os.path.join(root, name), 0o700)
        return True
    except FileExistsError:
        return False


def sync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
