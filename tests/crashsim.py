"""A simulated power cut for the file store: record every write and sync, rebuild a cut.

`Disk(root)` wraps the `os` calls the store makes (open, dup, write, pwrite, pwritev,
ftruncate, fsync, fdatasync, link, unlink, mkdir, rmdir, and the log's `syncfs`) while it is
installed, and records, in the order they happened, what each did below `root`: bytes
written at an offset of a file, a file cut, a name added to or removed from a folder, a
file or folder synced. Calls pass through to the real filesystem; `mark()` names the
moment an operation was acknowledged (the number of operations recorded so far).

`disk.rebuild(cut, into, rng)` then writes into the empty folder `into` what a disk would
hold had the power failed after operation number `cut`, the way LazyFS or SQLite's
crash-test VFS model it: of each file, what its last sync before the cut covered, plus
(at random, with `rng`) a prefix of the later writes, the last of them maybe torn; of
each folder, the names its last sync covered, plus a prefix of the later changes. A file
whose name was never synced into its folder is gone, and so is everything in a folder
whose own name was lost. `syncfs` syncs everything, unless `syncfs_fails()` says it fails
this time: then it raises `EIO` and syncs nothing (a failed one may have synced none of
what was dirty). An unnamed file (`O_TMPFILE`, a store's spare made ahead by another
thread, before or while recording) is recorded from its open or its first use ("make"),
and is gone after a cut unless a link named it.

A write on a descriptor opened `O_DSYNC` (or `O_SYNC`), like one with `RWF_DSYNC`, is
synced when it returns: a cut can only fall inside it (between the write and its sync).
A write opened `O_DIRECT` is torn at sector granularity when a cut tears it: each
512-byte sector it covers is either new or as it was (the sector-atomicity a disk gives),
not a prefix of its bytes.

Files are told apart by a generation number of their own, not by inode: a freed inode is
soon reused for a new file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pickle
import random
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from intemporal.store import walfile

Op = tuple[Any, ...]
SECTOR = 512  # bytes: what a disk writes whole or not at all
_DSYNC = getattr(os, "O_DSYNC", 0) | getattr(os, "O_SYNC", 0)
_DIRECT = getattr(os, "O_DIRECT", 0)


class Disk:
    """The recorder; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.ops: list[Op] = []
        self.lock = threading.RLock()
        self._ids = 0
        self._by_ino: dict[int, int] = {}  # real inode -> its file's current generation
        self._fds: dict[int, tuple[int, int]] = {}  # descriptor -> (inode, generation)
        self._live: dict[int, dict[str, int]] = {}  # folder generation -> name -> generation
        self.folders: set[int] = set()
        self._dev = os.stat(self.root).st_dev
        self.root_id = self._new(os.stat(self.root).st_ino, folder=True)
        self.real: dict[str, Callable[..., Any]] = {}
        self.syncfs_fails: Callable[[], bool] = lambda: False
        self.syncfs_failed = 0  # how many times it did

    # -- recording -----------------------------------------------------------------------
    def _new(self, ino: int, folder: bool = False) -> int:
        self._ids += 1
        self._by_ino[ino] = self._ids
        if folder:
            self.folders.add(self._ids)
            self._live[self._ids] = {}
        return self._ids

    def mark(self) -> int:
        """The number of operations recorded so far: a cut at or after it keeps them."""
        with self.lock:
            return len(self.ops)

    def _gen_of_fd(self, fd: int) -> int | None:
        known = self._fds.get(fd)
        try:
            st = self.real["fstat"](fd)
        except OSError:
            return None
        if st.st_dev != self._dev:
            return None
        if known is None or st.st_ino != known[0]:  # unknown, or the number reused since
            if st.st_nlink == 0 and stat.S_ISREG(st.st_mode):
                return self._unnamed(fd, st.st_ino)  # a spare opened before recording
            return None
        return known[1]

    def _unnamed(self, fd: int, ino: int) -> int:
        """A new unnamed file (O_TMPFILE) behind `fd`: the store's spares are opened ahead
        of need, by another thread, maybe before recording began (then met at first use)."""
        gen = self._new(ino)
        self._fds[fd] = (ino, gen)
        self.ops.append(("make", gen))  # no name, nothing to rebuild: a cut point's marker
        return gen

    def _folder_of(self, path: Any, dir_fd: int | None) -> tuple[int | None, str]:
        """(generation of the folder holding `path`, its last component)."""
        path = os.fsdecode(path)
        head, name = os.path.split(path)
        if dir_fd is not None and not os.path.isabs(path):
            parent = self._gen_of_fd(dir_fd)
            if head:
                return None, name  # the store opens nested names folder by folder
            return parent, name
        try:
            st = self.real["stat"](head or ".")
        except OSError:
            return None, name
        if st.st_dev != self._dev:
            return None, name
        gen = self._by_ino.get(st.st_ino)
        return (gen if gen in self.folders else None), name

    def _link(self, folder: int, name: str, gen: int) -> None:
        self._live[folder][name] = gen
        self.ops.append(("link", folder, name, gen))

    def _unlink(self, folder: int, name: str) -> None:
        self._live[folder].pop(name, None)
        self.ops.append(("unlink", folder, name))

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        with self.lock:
            fd: int = self.real["open"](path, flags, mode, dir_fd=dir_fd)
            st = self.real["fstat"](fd)
            if st.st_dev != self._dev:
                return fd
            tmpfile = getattr(os, "O_TMPFILE", 0)
            if tmpfile and flags & tmpfile == tmpfile:
                parent = self._gen_of_fd(dir_fd) if dir_fd is not None else None
                if parent is None:
                    parent, _ = self._folder_of(os.path.join(os.fsdecode(path), "x"), None)
                if parent is not None:
                    self._unnamed(fd, st.st_ino)
                return fd
            if stat.S_ISDIR(st.st_mode):
                gen = self._by_ino.get(st.st_ino)
                if gen in self.folders:
                    self._fds[fd] = (st.st_ino, gen)
                return fd
            folder, name = self._folder_of(path, dir_fd)
            if folder is None:
                return fd
            gen = self._live[folder].get(name)
            if gen is None or self._by_ino.get(st.st_ino) != gen:
                gen = self._new(st.st_ino)  # a new file (or one made before recording)
                self._link(folder, name, gen)
            self._fds[fd] = (st.st_ino, gen)
            return fd

    def _write_at(
        self, fd: int, n: int, data: bytes, offset: int | None, sync: bool = False
    ) -> None:
        gen = self._gen_of_fd(fd)
        if gen is None or n <= 0:
            return
        if offset is None:
            offset = self.real["lseek"](fd, 0, os.SEEK_CUR) - n
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        direct = bool(flags & _DIRECT)
        self.ops.append(("write", gen, offset, bytes(data[:n]), direct))
        if sync or flags & _DSYNC:
            self.ops.append(("sync", gen))

    def write(self, fd: int, data: bytes) -> int:
        with self.lock:
            n: int = self.real["write"](fd, data)
            self._write_at(fd, n, data, None)
            return n

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        with self.lock:
            n: int = self.real["pwrite"](fd, data, offset)
            self._write_at(fd, n, data, offset)
            return n

    def pwritev(self, fd: int, buffers: list[bytes], offset: int, flags: int = 0) -> int:
        with self.lock:
            n: int = self.real["pwritev"](fd, buffers, offset, flags)
            data = b"".join(buffers)
            appending = self._gen_of_fd(fd) is not None and (
                fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
            )
            at = self.real["fstat"](fd).st_size - n if appending else offset
            self._write_at(fd, n, data, at, bool(flags & getattr(os, "RWF_DSYNC", 0)))
            return n

    def dup(self, fd: int) -> int:
        with self.lock:
            new: int = self.real["dup"](fd)
            if self._gen_of_fd(fd) is not None:
                self._fds[new] = self._fds[fd]  # the store syncs a new run's folder by a dup
            return new

    def ftruncate(self, fd: int, length: int) -> None:
        with self.lock:
            self.real["ftruncate"](fd, length)
            gen = self._gen_of_fd(fd)
            if gen is not None:
                self.ops.append(("trunc", gen, length))

    def _sync(self, fd: int) -> None:
        gen = self._gen_of_fd(fd)
        if gen is not None:
            self.ops.append(("sync", gen))

    def fsync(self, fd: int) -> None:
        with self.lock:
            self.real["fsync"](fd)
            self._sync(fd)

    def fdatasync(self, fd: int) -> None:
        with self.lock:
            self.real["fdatasync"](fd)
            self._sync(fd)

    def syncfs(self, fd: int) -> None:
        with self.lock:
            if self.syncfs_fails():
                self.syncfs_failed += 1
                self.ops.append(("syncfs-failed",))  # nothing synced: a cut point's marker
                raise OSError(errno.EIO, "syncfs failed (simulated)")
            self.ops.append(("syncall",))

    def link(
        self,
        src: Any,
        dst: Any,
        *,
        src_dir_fd: int | None = None,
        dst_dir_fd: int | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        with self.lock:
            self.real["link"](
                src,
                dst,
                src_dir_fd=src_dir_fd,
                dst_dir_fd=dst_dir_fd,
                follow_symlinks=follow_symlinks,
            )
            folder, name = self._folder_of(dst, dst_dir_fd)
            if folder is None:
                return
            st = self.real["stat"](dst, dir_fd=dst_dir_fd, follow_symlinks=False)
            gen = self._by_ino.get(st.st_ino)
            if gen is not None:
                self._link(folder, name, gen)

    def unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        with self.lock:
            self.real["unlink"](path, dir_fd=dir_fd)
            folder, name = self._folder_of(path, dir_fd)
            if folder is not None:
                self._unlink(folder, name)

    def rmdir(self, path: Any, *, dir_fd: int | None = None) -> None:
        with self.lock:
            self.real["rmdir"](path, dir_fd=dir_fd)
            folder, name = self._folder_of(path, dir_fd)
            if folder is not None:
                self._unlink(folder, name)

    def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        with self.lock:
            self.real["mkdir"](path, mode, dir_fd=dir_fd)
            folder, name = self._folder_of(path, dir_fd)
            if folder is None:
                return
            st = self.real["stat"](path, dir_fd=dir_fd, follow_symlinks=False)
            self._link(folder, name, self._new(st.st_ino, folder=True))

    @contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
        """Record while inside; `os` is itself again afterwards."""
        names: tuple[str, ...] = ("open", "write", "pwrite", "pwritev", "ftruncate", "fsync")
        names += ("fdatasync", "link", "unlink", "rmdir", "mkdir", "dup")
        for name in (*names, "fstat", "stat", "lseek"):
            self.real[name] = getattr(os, name)
        with monkeypatch.context() as m:
            for name in names:
                m.setattr(os, name, getattr(self, name))
            m.setattr(walfile, "syncfs", self.syncfs)
            yield self

    def names(self) -> dict[int, str]:
        """Each generation's last path below the root (by the links recorded)."""
        parent: dict[int, tuple[int, str]] = {}
        for op in self.ops:
            if op[0] == "link":
                parent[op[3]] = (op[1], op[2])
        out: dict[int, str] = {self.root_id: "."}

        def name(gen: int, depth: int = 0) -> str:
            if gen not in out:
                if gen not in parent or depth > 64:
                    return f"#{gen}"
                up, base = parent[gen]
                head = name(up, depth + 1)
                out[gen] = base if head == "." else f"{head}/{base}"
            return out[gen]

        for gen in list(parent):
            name(gen)
        return out

    def describe(self, lo: int, hi: int) -> str:
        """Operations `lo` to `hi` (numbered as `mark` counts them: op i is the i+1-th),
        one a line, files and folders by name: for a failing cut's message."""
        names = self.names()
        lines = []
        for i in range(max(0, lo), min(hi, len(self.ops))):
            op = self.ops[i]
            what: list[str] = [op[0]]
            if len(op) > 1:
                what.append(names.get(op[1], f"#{op[1]}"))
            if op[0] == "write":
                data = op[3]
                what.append(f"@{op[2]} +{len(data)}{' direct' if op[4:5] == (True,) else ''}")
                what.append(repr(data[:60]))
            elif op[0] == "trunc":
                what.append(f"to {op[2]}")
            elif op[0] in ("link", "unlink"):
                what.append(op[2])
                if op[0] == "link":
                    what.append(f"-> #{op[3]}")
            lines.append(f"{i + 1:6d} " + " ".join(what))
        return "\n".join(lines)

    # -- rebuilding ------------------------------------------------------------------------
    def rebuild(self, cut: int, into: Path, rng: random.Random, lose_all: bool = False) -> None:
        """Write into `into` what the disk holds after a power cut after `cut` operations.

        `lose_all`: nothing not synced survives (else a random prefix of it, maybe torn).
        """
        ops = self.ops[:cut]
        last_sync: dict[int, int] = {}
        everything = -1
        for i, op in enumerate(ops):
            if op[0] == "sync":
                last_sync[op[1]] = i
            elif op[0] == "syncall":
                everything = i
        per: dict[int, list[tuple[int, Op]]] = {}
        for i, op in enumerate(ops):
            if op[0] in ("write", "trunc", "sync", "link", "unlink"):
                per.setdefault(op[1], []).append((i, op))
        contents: dict[int, bytearray] = {}
        entries: dict[int, dict[str, int]] = {}
        for gen, history in per.items():
            durable = max(last_sync.get(gen, -1), everything)
            kept = [op for i, op in history if i <= durable]
            later = [op for i, op in history if i > durable and op[0] != "sync"]
            if later and not lose_all:
                n = rng.randint(0, len(later))
                tail = later[:n]
                if tail and tail[-1][0] == "write" and rng.random() < 0.5:
                    tail[-1:] = _torn(tail[-1], rng)
                kept += tail
            if gen in self.folders:
                names: dict[str, int] = {}
                for op in kept:
                    if op[0] == "link":
                        names[op[2]] = op[3]
                    elif op[0] == "unlink":
                        names.pop(op[2], None)
                entries[gen] = names
            else:
                buf = bytearray()
                for op in kept:
                    if op[0] == "write":
                        off, data = op[2], op[3]
                        if len(buf) < off:
                            buf.extend(bytes(off - len(buf)))
                        buf[off : off + len(data)] = data
                    elif op[0] == "trunc":
                        del buf[op[2] :]
                        if len(buf) < op[2]:
                            buf.extend(bytes(op[2] - len(buf)))
                contents[gen] = buf
        self._write_tree(self.root_id, into, entries, contents)

    def _write_tree(
        self,
        folder: int,
        into: Path,
        entries: dict[int, dict[str, int]],
        contents: dict[int, bytearray],
    ) -> None:
        real_mkdir = self.real.get("mkdir", os.mkdir)
        for name, gen in entries.get(folder, {}).items():
            if gen in self.folders:
                real_mkdir(into / name, 0o700)
                self._write_tree(gen, into / name, entries, contents)
            else:
                (into / name).write_bytes(bytes(contents.get(gen, b"")))
                (into / name).chmod(0o600)


def _torn(write: Op, rng: random.Random) -> list[Op]:
    """A write a power cut tore, as the writes of what reached the disk: a direct one, a
    random subset of its sectors; a buffered one, a prefix of its bytes."""
    _, gen, off, data, *direct = write
    if not direct or not direct[0]:
        return [("write", gen, off, data[: rng.randint(0, len(data))])]
    out: list[Op] = []
    for at in range(0, len(data), SECTOR):
        if rng.random() < 0.5:
            out.append(("write", gen, off + at, data[at : at + SECTOR]))
    return out


def replay_cut(recording: Path, into: Path) -> tuple[Disk, list[Any], set[str], int, random.Random]:
    """Rebuild the disk of a failed cut from the recording `_check_cut` pickled: the same
    operations, the same cut, the rng as it was (its next draws rebuild the same disk).

    Returns (disk, acks, deleted runs, cut, rng): `test_wal._check_cut`'s arguments."""
    with recording.open("rb") as f:
        ops, folders, root_id, acks, deleted, cut, state = pickle.load(f)
    disk = Disk.__new__(Disk)
    disk.ops, disk.folders, disk.root_id, disk.real = ops, folders, root_id, {}
    disk.lock = threading.RLock()
    rng = random.Random()
    rng.setstate(state)
    into.mkdir(mode=0o700, exist_ok=True)
    return disk, acks, deleted, cut, rng
