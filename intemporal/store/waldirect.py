"""The write-ahead log's batches written with direct I/O, where the filesystem allows it.

When asked (`wal.DIRECT`, `INTEMPORAL_WAL_DIRECT=1`), on Linux, on a filesystem that takes
`O_DIRECT` (ext4, xfs, btrfs; not tmpfs), the log's segments are also opened
`O_DIRECT | O_DSYNC`: a batch goes from our buffer to the disk and is durable when the
write returns, without the page cache's copy, writeback and wait. `block_size(folder)`
tells, once per store, whether it can: else the log writes buffered
(`pwritev(RWF_DSYNC)`), with the same bytes on disk either way.

Measured on a virtio disk with a write-back cache and no FUA (2026-11-30,
`bench/wal_direct.py`): a direct 4 KiB write + sync took 3-4 µs less at the median than a
buffered one into a segment zero-filled in 64 KiB pieces, and ~2 µs less CPU, and the copy
into the aligned block gave that back (through `WriteAheadLog.log`: -0.5 to +6.7 µs, CPU
+2 to +4 µs): no gain, so it is off by default. (A buffered sync is ~11 µs dearer into a
file whose pages came from one large write, held in large folios: not the log's case.) A
disk with FUA writes may differ: a direct `O_DSYNC` overwrite is then one FUA write, where
the buffered one is a write and a cache flush.

A direct write covers whole blocks (offset, length and buffer address multiples of the
block: the filesystem's, 4 KiB here). So `DirectTail` keeps the log's last partial block in
an aligned buffer (an anonymous mmap: page-aligned) and writes each batch from the start
of that block through the end of its records, padded with zeros to the block's end (past
the log's end a segment holds zeros, or records of an older lap that no longer count).
Each batch thus rewrites the records already acknowledged in that block with identical
bytes: a power cut tearing the write leaves each sector old or new, both the same there —
the usual sector-atomicity assumption, the one buffered writeback makes too (it writes
the whole 4 KiB page holding the new bytes), and the one PostgreSQL's WAL relies on when
it rewrites its partial last page at each flush (`wal_sync_method=open_datasync` with
direct I/O).

The buffered copy of the tail block is ours only while nobody else wrote after it:
processes sharing the store take turns under the log's flock, and the shared tail names
where the log ends. The copy is kept for the (segment, offset) our last write ended at;
a batch starting anywhere else (another process wrote since, a writer died, a write
failed) first reads the block back from the disk.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os

from .safefs import open_in

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_O_DSYNC = getattr(os, "O_DSYNC", 0)
_RWF_DSYNC = getattr(os, "RWF_DSYNC", 0)
SMALLEST = 4096  # bytes: the block a direct write covers at least (a page)
LARGEST = 1 << 16  # a filesystem block larger than this: no direct writes
IN_MEMORY = frozenset({"tmpfs", "ramfs", "hugetlbfs"})  # no disk to go direct to


def block_size(folder: str, probe: str = "state") -> int:
    """The block (bytes) direct writes of the log in `folder` cover, or 0 where they
    cannot be made or gain nothing (not Linux, a filesystem refusing `O_DIRECT`, one in
    memory such as tmpfs, which takes `O_DIRECT` since Linux 6.6 but has no disk).

    Reads one block of `folder/probe` (an existing file) with direct I/O to find out.
    """
    if not (_O_DIRECT and _O_DSYNC and hasattr(os, "preadv")) or filesystem(folder) in IN_MEMORY:
        return 0
    try:
        block = max(SMALLEST, os.statvfs(folder).f_bsize)
        if block > LARGEST or block & (block - 1):
            return 0
        fd = open_in(folder, probe, os.O_RDONLY | _O_DIRECT)
    except OSError:
        return 0
    try:
        with mmap.mmap(-1, block) as buf, memoryview(buf) as view:
            os.preadv(fd, [view], 0)
        return block
    except OSError:
        return 0
    finally:
        os.close(fd)


def filesystem(path: str) -> str:
    """The type of the filesystem holding `path` ("ext4", "tmpfs"), "" when unknown."""
    try:
        dev = os.stat(path).st_dev
        with open("/proc/self/mountinfo", "rb") as f:
            mounts = f.read().decode(errors="replace")
    except OSError:
        return ""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    for line in mounts.splitlines():
        fields = line.split(" ")
        if len(fields) > 2 and fields[2] == want and " - " in line:
            return line.split(" - ", 1)[1].split(" ", 1)[0]
    return ""


class DirectTail:
    """Direct, synced writes of the log's segments in `folder`; see the module docstring.

    `rereads` counts the tail blocks read back from the disk (another process wrote last).
    """

    def __init__(self, folder: str, block: int) -> None:
        self.folder, self.block = folder, block
        self.rereads = 0
        self._buf = mmap.mmap(-1, max(4 * block, 1 << 16))
        self._view = memoryview(self._buf)
        self._zeros = memoryview(bytes(block))
        self._at = (0, -1)  # (segno, offset) the buffer's first block is the log's tail at
        self._fds: dict[int, int] = {}

    def fits(self, offset: int, size: int, segment: int) -> bool:
        """Whether `size` bytes at `offset` of a segment of `segment` bytes can be written
        direct (the blocks they cover lie inside it)."""
        return -(-(offset + size) // self.block) * self.block <= segment

    def write(self, slot: int, segno: int, offset: int, chunk: list[bytes], size: int) -> int:
        """Write `chunk` (`size` bytes in all) at `offset` of segment `segno` (in file
        `slot`), synced when it returns; the number of its bytes written, or -1 when the
        filesystem refuses direct I/O after all (`EINVAL`: nothing written; closed then).

        Raises `OSError` as `pwritev` does otherwise.
        """
        try:
            return self._write(slot, segno, offset, chunk, size)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        self.close()
        return -1

    def _write(self, slot: int, segno: int, offset: int, chunk: list[bytes], size: int) -> int:
        block = self.block
        start = offset - offset % block
        head = offset - start
        stop = -(-(offset + size) // block) * block
        fd = self._fds.get(slot)
        if fd is None:
            fd = self._fds[slot] = open_in(
                self.folder, f"{slot}.log", os.O_RDWR | _O_DIRECT | _O_DSYNC
            )
        if stop - start > len(self._buf):
            self._grow(stop - start, head if self._at == (segno, offset) else 0)
        view = self._view
        if head and self._at != (segno, offset):
            self._reread(fd, start)
        self._at = (0, -1)  # unknown until this write is whole
        pos = head
        for part in chunk:
            view[pos : pos + len(part)] = part
            pos += len(part)
        view[pos : stop - start] = self._zeros[: stop - start - pos]
        written = os.pwritev(fd, [view[: stop - start]], start, _RWF_DSYNC)
        if written != stop - start:
            return max(0, min(size, written - head))
        end = offset + size
        keep = end % block
        if keep:
            self._buf.move(0, end - keep - start, keep)
        self._at = (segno, end)
        return size

    def _grow(self, size: int, keep: int) -> None:
        bigger = mmap.mmap(-1, -(-size // (1 << 16)) * (1 << 16))
        bigger[:keep] = self._buf[:keep]
        self._view.release()
        self._buf.close()
        self._buf, self._view = bigger, memoryview(bigger)

    def _reread(self, fd: int, start: int) -> None:
        """The tail block as it is on disk, into the buffer (the copy was not ours)."""
        self.rereads += 1
        got = os.preadv(fd, [self._view[: self.block]], start)
        if got < self.block:
            self._view[got : self.block] = self._zeros[got:]

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self._view.release()
        self._buf.close()
