"""Deleting many files at once through Linux's io_uring: `gc`'s unlinks, without a thread each.

    ring = UnlinkRing.open(root_fd)     # None where io_uring or its unlinkat is missing
    failures = ring.unlink([(dir_fd, "a.inbox"), (dir_fd, "b.jsonl")])  # {index: OSError}
    ring.close()

Why: on a file system mounted with `discard` (and ext4 without a journal discards as it
frees, in the `unlink` call), every unlink waits ~0.1-1 ms on the disk. Python threads
that wait on it at once pay the GIL on every return (~5 futex calls an unlink) and keep at
most their number in flight. Here one thread writes the requests into the ring's shared
memory and one `io_uring_enter` call submits hundreds and waits; the kernel's own workers
(up to `WORKERS`) unlink in order, so neighbouring files' blocks are freed together and
the block layer merges their discards. Measured on this project's disk (ext4 without a
journal, `discard`): 20 µs an unlink against 60-100 µs on 16-64 threads (README
"Performance").

The names are unlinked side by side, in no order: a caller that needs an order (an inbox
before its journal) makes two calls. A name missing (`ENOENT`, `ENOTDIR`) is not an error;
any other failure is tried again with `os.unlink`, and what that raises is returned by
index, every other name deleted all the same (one file `chattr +i` fails alone). The requests are written with `struct` into the ring's
`mmap` and the system calls made through `ctypes` (`libc.syscall`): no dependency, and
nothing outside Linux (`open` returns None: the caller's threads do it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import sys
from typing import Any

ENTRIES = 1024  # requests in the submission ring (the completion ring holds twice as many)
WORKERS = 64  # the kernel's workers unlinking at once
_SYSCALLS = {"x86_64": (425, 426, 427), "aarch64": (425, 426, 427)}  # setup, enter, register
_OP_UNLINKAT = 36
_ENTER_GETEVENTS = 1
_FEAT_SINGLE_MMAP = 1  # the rings share one mapping
_REGISTER_IOWQ_MAX_WORKERS = 19
_OFF_SQES = 0x10000000
_SQE = struct.Struct("<BBHiQQIIQ")  # opcode, flags, ioprio, fd, off, addr, len, flags, data
_U32 = struct.Struct("<I")
_CQE = struct.Struct("<QiI")  # user data, result (-errno), flags
_MISSING = (errno.ENOENT, errno.ENOTDIR)


class UnlinkRing:
    """One io_uring for unlinks (see the module docstring); one user at a time."""

    def __init__(self, libc: Any, calls: tuple[int, int, int], fd: int, params: bytes) -> None:
        """Map the ring `io_uring_setup` made (`fd`, `params`: its `io_uring_params`)."""
        import ctypes
        import mmap

        self._ctypes, self._libc, self._calls, self._fd = ctypes, libc, calls, fd
        self._maps: list[mmap.mmap] = []
        self._views: list[memoryview] = []
        try:
            sq_entries, cq_entries = struct.unpack_from("<2I", params, 0)
            sq = struct.unpack_from("<7I", params, 40)  # head, tail, mask, entries, flags,
            cq = struct.unpack_from("<6I", params, 80)  # dropped, array / ..., overflow, cqes
            size = max(sq[6] + sq_entries * 4, cq[5] + cq_entries * 16)
            prot = mmap.PROT_READ | mmap.PROT_WRITE
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            self._ring = mmap.mmap(fd, size, flags, prot, offset=0)
            self._maps.append(self._ring)
            self._sqes = mmap.mmap(fd, sq_entries * 64, flags, prot, offset=_OFF_SQES)
            self._maps.append(self._sqes)
        except BaseException:
            self.close()
            raise
        ring = self._ring
        self._sq_entries, self._cq_entries = sq_entries, cq_entries
        self._sq_head, self._sq_tail, self._cq_head, self._cq_tail = sq[0], sq[1], cq[0], cq[1]
        self._sq_mask = _U32.unpack_from(ring, sq[2])[0]
        self._cq_mask = _U32.unpack_from(ring, cq[2])[0]
        for slot in range(sq_entries):  # request i sits in slot i: the array never changes
            _U32.pack_into(ring, sq[6] + slot * 4, slot)
        self._cqv = memoryview(ring)[cq[5] : cq[5] + cq_entries * 16].cast("i")
        self._views.append(self._cqv)
        workers = (ctypes.c_uint * 2)(WORKERS, WORKERS)  # bounded, unbounded: best effort
        libc.syscall(calls[2], fd, _REGISTER_IOWQ_MAX_WORKERS, workers, 2)

    @classmethod
    def open(cls, probe_fd: int) -> UnlinkRing | None:
        """A ring, or None where there is none to have (not Linux, an old kernel, io_uring
        disabled or filtered, `INTEMPORAL_NO_IO_URING` set): `probe_fd`, a folder's
        descriptor, is asked to unlink a name that cannot exist, which must say
        `ENOENT` (an old kernel says `EINVAL`)."""
        calls = _SYSCALLS.get(os.uname().machine) if sys.platform == "linux" else None
        if calls is None or os.environ.get("INTEMPORAL_NO_IO_URING"):
            return None
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
        except (OSError, AttributeError):
            return None
        params = ctypes.create_string_buffer(120)
        fd = libc.syscall(calls[0], ctypes.c_uint(ENTRIES), params)
        if fd < 0:  # ENOSYS, EPERM (io_uring_disabled, a seccomp filter), ENOMEM
            return None
        if not struct.unpack_from("<I", params.raw, 20)[0] & _FEAT_SINGLE_MMAP:
            os.close(fd)  # before Linux 5.4 (which has no unlinkat in io_uring either)
            return None
        try:
            ring = cls(libc, calls, fd, params.raw)
        except (OSError, ValueError):
            os.close(fd)
            return None
        try:
            failed = bool(ring._submit([(probe_fd, ".intemporal-io-uring-probe/x")]))
        except OSError:
            failed = True
        if failed:
            ring.close()
            return None
        return ring

    def _queued(self) -> int:
        """Requests in the submission ring the kernel has not taken yet."""
        ring = self._ring
        return (
            _U32.unpack_from(ring, self._sq_tail)[0] - _U32.unpack_from(ring, self._sq_head)[0]
        ) & 0xFFFFFFFF

    def _enter(self, wait: int) -> None:
        """Submit what is queued and wait until `wait` requests have completed (or come
        back at once on a signal: the caller reaps what there is and asks again)."""
        submit, flags = self._queued(), _ENTER_GETEVENTS if wait else 0
        got = self._libc.syscall(self._calls[1], self._fd, submit, wait, flags, None, 0)
        if got < 0:
            err = self._ctypes.get_errno()
            if err not in (errno.EINTR, errno.EAGAIN, errno.EBUSY):
                raise OSError(err, os.strerror(err))

    def _reap(self, failed: list[int]) -> int:
        """Take the completions there are (the requests that failed other than by a
        missing name go to `failed`); return how many."""
        ring, cqv, mask = self._ring, self._cqv, self._cq_mask
        head = _U32.unpack_from(ring, self._cq_head)[0]
        n = (_U32.unpack_from(ring, self._cq_tail)[0] - head) & 0xFFFFFFFF
        pos, left = head & mask, n
        while left:
            k = min(left, self._cq_entries - pos)
            results = cqv[pos * 4 + 2 : (pos + k) * 4 : 4]
            if min(results) < 0:  # a CQE: user data (u64), result (-errno), flags
                failed += [
                    cqv[(pos + j) * 4]
                    for j, r in enumerate(results)
                    if r < 0 and -r not in _MISSING
                ]
            left -= k
            pos = 0
        _U32.pack_into(ring, self._cq_head, (head + n) & 0xFFFFFFFF)
        return n

    def unlink(self, names: list[tuple[int, str]]) -> dict[int, OSError]:
        """Unlink every name (relative to its folder descriptor), side by side, in no order.

        Returns the failures by index into `names`: a name missing (`ENOENT`, `ENOTDIR`) is
        not one; a name the ring failed is tried again with `os.unlink`, and the `OSError`
        that raises (`PermissionError`, `IsADirectoryError`, ...: naming the file as Python
        does) is the failure. Every name is tried, whatever the others did.
        """
        failures: dict[int, OSError] = {}
        for index in self._submit(names):  # as Python says it (or done, if the ring was at fault)
            dfd, name = names[index]
            try:
                os.unlink(name, dir_fd=dfd)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                failures[index] = exc
        return failures

    def _submit(self, names: list[tuple[int, str]]) -> list[int]:
        """Unlink the names through the ring; the indexes of those it failed (not missing)."""
        encoded = [os.fsencode(n) + b"\0" for _, n in names]
        blob = b"".join(encoded)
        buf = self._ctypes.create_string_buffer(blob, len(blob))
        addr = self._ctypes.addressof(buf)
        sqes = bytearray(64 * len(names))  # every request written once, copied in slices
        pack = _SQE.pack_into
        for i, (dfd, _) in enumerate(names):
            pack(sqes, i * 64, _OP_UNLINKAT, 0, 0, dfd, 0, addr, 0, 0, i)
            addr += len(encoded[i])
        ring, size, mask = self._ring, self._sq_entries, self._sq_mask
        failed: list[int] = []
        done = inflight = 0
        tail = _U32.unpack_from(ring, self._sq_tail)[0]
        while done < len(names) or inflight:
            room = min(size - self._queued(), self._cq_entries - inflight, len(names) - done)
            left, at = room, done
            while left:
                slot = tail & mask
                k = min(left, size - slot)
                self._sqes[slot * 64 : (slot + k) * 64] = sqes[at * 64 : (at + k) * 64]
                tail, at, left = (tail + k) & 0xFFFFFFFF, at + k, left - k
            _U32.pack_into(ring, self._sq_tail, tail)
            done += room
            inflight += room
            # Wake up when the kernel's workers are down to two requests each: fewer wake-ups.
            wait = inflight if done == len(names) else max(1, inflight - 2 * WORKERS)
            self._enter(wait)
            inflight -= self._reap(failed)
        del buf  # the kernel copied every name when it took its request
        return sorted(failed)

    def close(self) -> None:
        """Unmap the ring and close it (nothing is in flight: `unlink` waits for all)."""
        for view in self._views:
            view.release()
        self._views = []
        for m in self._maps:
            with contextlib.suppress(BufferError, ValueError):
                m.close()
        self._maps = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
