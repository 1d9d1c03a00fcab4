"""Spare journal files: unnamed files made ahead of need, so creating a run opens none.

Creating a file is the dearest system call a run makes (on ext4 without a journal: 20 µs
on a quiet folder, 400-750 µs of kernel time for tens of seconds after files were deleted
nearby), and `Engine.start` makes it on the caller's thread. A `Spares` pool keeps a few
unnamed files (`O_TMPFILE`, 0600) open in the store's folder, made by one background
thread per process; creating a run takes one, writes the run's first line into it and
links it to its name (`link_new`), as it did with a file it opened itself.

    pool = Spares("/path/to/store")
    fd = pool.take()     # a spare, now the caller's to close; -1 when none is ready
    pool.close()         # closes the spares left: an unnamed file is gone once closed

A pool makes nothing until a second take finds it empty (a process that creates one run,
a CLI, makes no spare), then keeps `FEWEST` spares, doubling up to `MOST` each time a take
finds none, and is refilled once below half. Spares have no name: `ls` does not show
them, and they are gone when the store is closed, when the process exits, after a crash
or a power cut; a file the kernel freed without a name never holds anyone's data.

A failure of the background thread (a full disk, no `O_TMPFILE` here) is only counted:
the caller then finds no spare, opens its own file, and sees the real error itself.
Spares never take a process's last descriptors: a refill stops (counted in `spared`) where
the next descriptor's number would reach half the soft `RLIMIT_NOFILE` (descriptors are
numbered from the lowest free one: half of them are in use), told by a `dup`, no file made.

A forked child never uses its parent's spares (both would link the same file under two
names): they are closed in the child right after `fork` (`os.register_at_fork`), and
`take` checks the process id as well.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import threading
import weakref

try:
    import resource
except ImportError:  # not on this system: no limit known
    resource = None  # type: ignore[assignment]

from .fileio import fcntl, write

O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux: a file without a name until linked
_DIRECTORY = getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# A failure of the store itself, not of the O_TMPFILE feature: the named way fails too.
STORE_DOWN = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE})
# The kernel or the filesystem has no O_TMPFILE (EISDIR: a kernel older than it).
UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
# A spare's link failing so says nothing of the store: the caller's own file tells (a
# folder deleted under the store, no /proc, the store's folder now on another filesystem).
MISFIT = frozenset({errno.ENOENT, errno.EXDEV})
FEWEST, MOST = 2, 32  # spares kept: at first, and at most (each one a descriptor)
_SPARE = os.O_RDWR | os.O_APPEND | O_TMPFILE  # `create` writes it, `create_claimed` appends


class Spares:
    """Unnamed files made ahead of need in the folder `folder`; see the module docstring.

    Counters, for tests and benchmarks: `made` (spares opened by the background thread),
    `taken` (handed out by `take`), `missed` (takes that found none), `failed` (background
    opens that failed; `error` is the last one's `OSError`), `spared` (refills stopped to
    leave the process half its descriptors).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._target = 0  # how many to keep: 0 until a second take finds none
        self._queued = False  # a refill is asked for, or under way
        self._gen = 0  # bumped by `close` and a fork: a refill under way then keeps nothing
        self._pid = os.getpid()
        self.made = self.taken = self.missed = self.failed = self.spared = 0
        self.error: OSError | None = None
        _pools.add(self)

    @property
    def ready(self) -> int:
        """How many spares are open now."""
        return len(self._fds)

    def take(self) -> int:
        """A spare's descriptor (`O_RDWR | O_APPEND`, unnamed, empty, flocked where there is
        `fcntl`), now the caller's to write, link and close; -1 when none is ready (then
        the caller opens its own)."""
        if self._pid != os.getpid():  # forked without the fork hook: the parent's, not ours
            self._forked()
        with self._lock:
            if self._fds:
                fd = self._fds.pop()
                self.taken += 1
                refill = 2 * len(self._fds) < self._target
            else:
                fd = -1
                self.missed += 1
                if self.missed > 1:
                    self._target = min(MOST, max(FEWEST, 2 * self._target))
                refill = self._target > 0
            refill = refill and not self._queued
            if refill:
                self._queued = True
        if refill:
            _refiller.ask(self)
        return fd

    def close(self) -> None:
        """Close the spares (their files are gone) and start again small; a refill under
        way keeps nothing. The pool may be used again."""
        with self._lock:
            fds, self._fds = self._fds, []
            self._gen += 1
            self._target = self.missed = 0
        _close_all(fds)

    def fill(self) -> None:
        """Open spares until the pool holds its target (the background thread calls this)."""
        with self._lock:
            gen = self._gen
        try:
            dfd = os.open(self.folder, os.O_RDONLY | _DIRECTORY)
        except OSError as exc:
            self._failed(exc)
            return
        ceiling = _ceiling()
        try:
            while True:
                with self._lock:
                    if self._gen != gen or len(self._fds) >= self._target:
                        self._queued = False
                        return
                try:
                    fd = os.dup(dfd)  # the number a spare would have (no file made for it)
                    os.close(fd)
                    if fd >= ceiling:  # half the process's descriptors in use: leave the rest
                        with self._lock:
                            self.spared += 1
                            self._queued = False  # asked again by a take that finds none
                        return
                    fd = os.open(".", _SPARE, 0o600, dir_fd=dfd)
                    _lock(fd)
                except OSError as exc:
                    self._failed(exc)
                    return
                with self._lock:
                    if self._gen == gen:
                        self._fds.append(fd)
                        self.made += 1
                        fd = -1
                if fd >= 0:  # closed or forked meanwhile: not for this pool any more
                    os.close(fd)
        finally:
            os.close(dfd)

    def _failed(self, exc: OSError) -> None:
        with self._lock:
            self.failed += 1
            self.error = exc
            self._queued = False  # asked again by the next take that finds none

    def _forked(self) -> None:
        """In a forked child: drop the parent's spares (closing our copies of them)."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        fds, self._fds = self._fds, []
        self._gen += 1
        self._target = self.missed = 0
        self._queued = False
        self._pid = os.getpid()
        _close_all(fds)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            _close_all(self._fds)


def _lock(fd: int) -> None:
    """flock a new spare (unnamed: nobody else can hold it); closed if that fails."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise


def _ceiling() -> int:
    """The lowest descriptor number a spare may have: half the soft `RLIMIT_NOFILE`."""
    if resource is None:
        return 1 << 30
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft // 2


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Refiller:
    """The one background thread of a process that refills pools, as they ask."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._asked: collections.deque[Spares] = collections.deque()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def ask(self, pool: Spares) -> None:
        if self._pid != os.getpid():  # forked without the fork hook: no thread of ours yet
            self.forked()
        with self._cond:
            self._asked.append(pool)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="intemporal-spares", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._asked:
                    self._cond.wait()
                pool = self._asked.popleft()
            try:
                pool.fill()
            except BaseException as exc:  # never leave a pool waiting for a refill
                pool._failed(exc if isinstance(exc, OSError) else OSError(str(exc)))
            del pool  # the pool may go with its store

    def forked(self) -> None:
        """In a forked child: the parent's thread is not there."""
        self._cond = threading.Condition(threading.Lock())
        self._asked = collections.deque()
        self._thread = None
        self._pid = os.getpid()


_pools: weakref.WeakSet[Spares] = weakref.WeakSet()
_refiller = _Refiller()


def _after_fork_in_child() -> None:
    _refiller.forked()
    for pool in list(_pools):
        pool._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def link_new(dfd: int, name: str, data: bytes, sync: bool, pool: Spares) -> bool | None:
    """Write `data` into an unnamed file (a spare from `pool`, else one opened here in
    folder `dfd`), with `sync` on disk, then link it as `name` in `dfd`.

    Readers never see a half-written first line, and of two processes creating the same
    name exactly one wins: False for the other (its file is closed: gone). Returns None
    where the kernel, the filesystem or /proc cannot do that (the caller then uses a named
    temporary file, `link_named`). Raises `OSError` when the store fails (a full disk...).
    """
    fd = pool.take()
    if fd >= 0:
        try:
            write(fd, data, sync)  # an error here is the store's: the caller's to see
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd)  # linkat, FOLLOW
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in MISFIT:
                    raise
                # (a spare of the store's folder before it was deleted is not linked: the
                # caller's own file below fails too, and the store then makes it again)
        finally:
            os.close(fd)
    try:
        fd = os.open(".", os.O_WRONLY | O_TMPFILE, 0o600, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in STORE_DOWN:  # not a missing feature: tell the caller
            raise
        return None
    try:
        write(fd, data, sync)
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:  # no /proc here
        return None
    finally:
        os.close(fd)


def link_named(dfd: int, name: str, data: bytes, sync: bool, tmp: str) -> bool:
    """`link_new` without `O_TMPFILE`: through the named temporary file `tmp` in `dfd`,
    removed afterwards (a crash in between leaves it: its name ends in `.tmp`)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd)
    try:
        write(fd, data, sync)
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        return True
    except FileExistsError:
        return False
    finally:
        os.close(fd)
        os.unlink(tmp, dir_fd=dfd)
