"""The embedded store: a directory of append-only JSON-lines journals.

    .intemporal/
      order-42.jsonl          the journal: one event per line, `cat` and `jq` friendly;
                              flocked by the process executing the run
      order-42.inbox          signals and cancellation requests from any process
      order-42/3.jsonl        a child run "order-42/3"
      .doorbell               which runs were created for any worker or got a message:
                              engines stat this one file (`wait`)
      .engines/ID.lock        each live engine's own lease (`lease_owner`), flocked
      .wal/                   the write-ahead log: every durable write goes there first,
                              synced by group commit (`wal.py`); files are synced in bulk
      .queues/NAME-HASH.ledger  a limited queue's admitted runs, flocked while deciding
      .index/runs.sqlite3     the run index: status, workflow, queue, times, parent
                              (`index.py`); rebuilt from the journals whenever in doubt

Ownership is taken once per execution, not per append, with a plain `fcntl.flock` on the
journal itself, through the descriptor the run appends with: what `filelock` does on
Unix, without its ~80 µs of bookkeeping and without a lock file per run (creating a file
is the dearest system call a run makes). `filelock` on `<run>.lock` is the fallback where
there is no `fcntl`. The OS drops a flock when its process dies, so "lock free and status
running" means "orphaned, resumable"; there is no stale lock to clean. An engine's own
lease (`lease_owner`) is the same: a flock on `.engines/ID.lock`, one per engine, not per
parked run, so 10,000 waiting runs cost no descriptors; a waiting run whose owner's lock
is free was left by a dead owner (`claim_next` takes it).

Listing, `gc` and `recover` find runs through the index (`filelist.py`) and read the
journals of the runs they return: `list --limit 10` over 100,000 runs reads 10 journals.

A crash can tear the last line of a journal. Reading ignores a last line without its
newline, and claiming truncates it away before the next append; any other unreadable line
raises `JournalCorrupted` with the file and line number.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RunNotFound, UnsafeStore
from ..events import TERMINAL_EVENTS, with_signal_id
from . import queueing
from .base import Event, Lease, OwnerLease
from .filegc import FileCollector, GcLock, ends_finished
from .fileio import (
    FileLease,
    check_messages,
    complete_length,
    dumps,
    fcntl,
    is_locked,
    parse_lines,
    try_lock,
    unlock,
    write,
)
from .indexlease import IndexedLease
from .runinfo import RunInfo, check_run_id, summarize
from .safefs import (
    INBOX,
    JOURNAL,
    LOCK,
    check_trust,
    open_folder,
    open_in,
    prune_folders,
    unlink_in,
)
from .spares import MISFIT, O_TMPFILE, UNSUPPORTED, Spares, link_named, link_new
from .wal import WriteAheadLog
from .walfile import supported as wal_supported
from .wallogged import Logged

if TYPE_CHECKING:
    import filelock

ENGINES = ".engines"  # one lock per live engine that parks waiting runs
QUEUES = ".queues"  # one ledger per limited queue, its own lock (`_queue_ledger`)
DOORBELL = ".doorbell"  # one line per message sent: which run to look at
DOORBELL_MAX = 1 << 20  # past this size a sender truncates it; readers then look at all runs
CLAIM_PATIENCE = 0.05  # seconds `claim` waits for a lock held by a mere `_is_claimed` probe


_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class FileStore(FileCollector):
    """A directory of run journals; see the module docstring for the layout.

    >>> store = FileStore(".intemporal")
    """

    def __init__(self, root: str | os.PathLike[str], *, strict: bool = False) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)
        self._root = str(self.root)
        self._bases: dict[str, str] = {}
        self._root_fd = -1
        self._root_lock = threading.Lock()
        self._tmpfile_ok = O_TMPFILE != 0  # until the system says otherwise
        self._spares = Spares(self._root)  # unnamed files made ahead of `create` (spares.py)
        self._gclock = GcLock(self._root)  # `gc` deletes finished runs under it (`filegc.py`)
        # The write-ahead log (`wal.py`; its files made on first use): None where the
        # system cannot keep one, and then each durable write syncs its own file.
        self._wal = WriteAheadLog(self._root) if wal_supported() else None
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:  # not made by us: others may have been able to plant links in it
            check_trust(self._root, strict)
            if self._wal is not None:
                self._wal.recover()  # after a power cut: what the journals lack

    def _open(self, rel: str, flags: int, mkdirs: bool = False) -> int:
        """A descriptor of the store's file `rel` (`a/b.jsonl`), no link followed (`open_in`)."""
        return open_in(self._root, rel, flags, mkdirs)

    def _opener(self, rel: str, mkdirs: bool = False) -> Callable[[int], int] | None:
        """How `try_lock` opens `rel` below the root: None (its own `O_NOFOLLOW` open of the
        path) for a file of the root itself, a folder-by-folder walk for one deeper down."""
        if "/" not in rel:
            return None
        return lambda flags: open_in(self._root, rel, flags, mkdirs)

    def path(self, run_id: str, suffix: str = JOURNAL) -> Path:
        """The file of `run_id` with `suffix`; the id is checked so it cannot escape the root."""
        return Path(self._base(run_id) + suffix)

    def _base(self, run_id: str) -> str:
        """`<root>/<run_id>` as a string, the id checked once: pathlib costs µs per call."""
        base = self._bases.get(run_id)
        if base is None:
            if len(self._bases) > 4096:
                self._bases.clear()
            base = self._bases[run_id] = os.path.join(self._root, check_run_id(run_id))
        return base

    def _mkdirs(self, folder: Path) -> None:
        """Create `folder` and its missing parents, each one private (0700)."""
        missing = []
        while not folder.is_dir() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):  # Path.mkdir(parents=True) ignores `mode` for parents
            d.mkdir(mode=0o700, exist_ok=True)

    def create(
        self, run_id: str, first: Event, sync: bool = True, owner: str | None = None
    ) -> bool:
        # Few system calls: under load each one may hand the GIL to another thread and
        # wait to get it back, and `Engine.start` calls this on the caller's thread.
        data = dumps(first)
        folder, _, name = self._base(run_id).rpartition("/")
        self._index_row(run_id, first)
        top = folder == self._root
        if top:  # the root's descriptor stays open: system calls fewer per run
            dfd = self._root_fd if self._root_fd >= 0 else self._open_root()
        else:  # a child run's folder: made private, and never through a link
            dfd = open_folder(self._root, run_id.rpartition("/")[0], create=True)
        tmpfile_ok = self._tmpfile_ok
        wal = self._wal if sync and self._wal is not None and self._wal.fits(len(data)) else None
        if wal is not None:
            sync = False  # the log makes it durable, the file and its name alike
            wal.open()
        try:
            try:
                created = self._link_new(dfd, name + JOURNAL, data, sync)
            except FileNotFoundError:
                if not top or os.fstat(dfd).st_nlink:
                    raise
                # The store's folder was deleted under us (Linux refuses to create in a
                # deleted folder): make it again rather than lose the run.
                self._tmpfile_ok = tmpfile_ok
                self.close()
                self._mkdirs(self.root)
                dfd = self._open_root()
                created = self._link_new(dfd, name + JOURNAL, data, sync)
            if not created:
                return False
            if wal is not None:
                wal.log(run_id + JOURNAL, 0, data)  # replayed after a power cut, name and all
            elif sync:
                os.fsync(dfd)  # the new name itself must survive a power cut
        finally:
            if not top:
                os.close(dfd)
        if owner is None:  # for any worker: wake the waiting ones
            self._ring(run_id)
        return True

    def create_claimed(
        self, run_id: str, first: Event, sync: bool = True, owner: str = ""
    ) -> Lease | None:
        # `Engine.run` executes a new run at once: its journal created locked, appended
        # through the descriptor that wrote it; no claim, no sync: its first synced append
        # logs the first line too (or, without a log, syncs the file and its folder).
        folder, _, name = self._base(run_id).rpartition("/")
        if fcntl is None or not self._tmpfile_ok or folder != self._root:
            return super().create_claimed(run_id, first, sync, owner)
        self._index_row(run_id, first)
        dfd = self._root_fd if self._root_fd >= 0 else self._open_root()
        if sync and self._wal is not None:
            self._wal.open()
        fd = self._spares.take()  # made ahead, flocked: no file created on the caller's path
        spare = fd >= 0
        try:
            if fd < 0:
                fd = os.open(".", os.O_RDWR | os.O_APPEND | O_TMPFILE, 0o600, dir_fd=dfd)
        except OSError as exc:
            if exc.errno in UNSUPPORTED:  # no unnamed files here: not tried again
                self._tmpfile_ok = False
            return super().create_claimed(run_id, first, sync, owner)
        try:
            if not spare:  # unnamed yet: nobody else has it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = dumps(first)
            write(fd, data, False)  # whole, or OSError: a short write is refused
            os.link(f"/proc/self/fd/{fd}", name + JOURNAL, dst_dir_fd=dfd)  # linkat, FOLLOW
            if self._wal is not None:  # the first synced append logs this line with its own
                logged = Logged(self._wal, name + JOURNAL, *((0, data, True) if sync else ()))
                lease = FileLease(run_id, None, fd, log=logged, size=len(data))
                return IndexedLease(lease, self.index, self._gclock.shared)
            lease = FileLease(run_id, None, fd, os.dup(dfd) if sync else -1, size=len(data))
            return IndexedLease(lease, self.index, self._gclock.shared)
        except FileExistsError:
            os.close(fd)
            return None
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError) and exc.errno in MISFIT:
                # no /proc, the store's folder deleted (or now on another disk): `create` copes
                return super().create_claimed(run_id, first, sync, owner)
            raise  # the run stays, pending and unlocked: `recover` takes it

    def _index_row(self, run_id: str, first: Event) -> None:
        """The new run's index row, before its journal: the index never misses a run."""
        try:
            self.index.created(run_id, first)
        except FileNotFoundError:  # the store's folder was deleted under us: made again
            self.close()
            self._mkdirs(self.root)
            self.index.created(run_id, first)

    def _open_root(self) -> int:
        fd = os.open(self._root, os.O_RDONLY | _O_DIRECTORY)
        with self._root_lock:
            if self._root_fd < 0:
                self._root_fd = fd
                return fd
        os.close(fd)  # another thread opened it first
        return self._root_fd

    def close(self) -> None:
        fd, self._root_fd = self._root_fd, -1
        if fd >= 0:
            os.close(fd)
        self._spares.close()  # their unnamed files are gone with them
        if self._wal is not None:
            self._wal.close()  # opened again if the store is used again
        self._gclock.close()
        self.close_index()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _link_new(self, dfd: int, name: str, data: bytes, sync: bool) -> bool:
        """Write `data` aside, sync it, then hard-link it as `name` in folder `dfd`: an
        unnamed file (a spare made ahead, `spares.py`) where the system has them, else a
        named temporary file. False when `name` exists (made by another process)."""
        if self._tmpfile_ok:
            created = link_new(dfd, name, data, sync, self._spares)
            if created is not None:
                return created
            self._tmpfile_ok = False
        return link_named(dfd, name, data, sync, f".{name}.{uuid.uuid4().hex}.tmp")

    def read(self, run_id: str) -> list[Event]:
        path = self._base(run_id) + JOURNAL
        try:
            fd = self._open(run_id + JOURNAL, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise RunNotFound(run_id) from None
        with open(fd, "rb") as f:
            data = f.read()
        return self._events_of(run_id, data, path)

    def exists(self, run_id: str) -> bool:
        folder, _, name = check_run_id(run_id).rpartition("/")
        if not folder:
            return os.path.lexists(self._base(run_id) + JOURNAL)
        try:
            dfd = open_folder(self._root, folder)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            os.stat(name + JOURNAL, dir_fd=dfd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(dfd)

    def claim(self, run_id: str, owner: str = "") -> Lease | None:
        base = self._base(run_id)
        # `_is_claimed` probes by taking the lock for a moment: wait out such a probe
        # (from any process) instead of mistaking it for an owner and dropping the run.
        lock: Any = None
        fd = -1
        try:
            if fcntl is not None:
                # The journal itself is the lock: no lock file to create per run (creating a
                # file is the dearest system call here), one descriptor to lock and append.
                fd = try_lock(
                    base + JOURNAL,
                    CLAIM_PATIENCE,
                    flags=os.O_RDWR | os.O_APPEND,
                    opener=self._opener(run_id + JOURNAL),
                )
                if fd is None:
                    return None
            else:
                if not os.path.exists(base + JOURNAL):
                    raise RunNotFound(run_id)
                lock = try_lock(base + LOCK, patience=CLAIM_PATIENCE)
                if lock is None:
                    return None
                fd = self._open(run_id + JOURNAL, os.O_RDWR | os.O_APPEND)
        except (FileNotFoundError, NotADirectoryError):
            raise RunNotFound(run_id) from None
        try:
            size = os.fstat(fd).st_size
            # Only the tail matters here (readers parse and check every line): a last line
            # without its newline is a torn write from a crash; cut it before appending.
            good = complete_length(fd, size)
            if good < size:
                os.ftruncate(fd, good)
                os.fsync(fd)
            held = None
            if fcntl is not None and ends_finished(fd, good):
                # A finished run: held from a `gc` until it takes a restart line or is let go
                held = self._gclock.shared()  # (waits while a gc deletes)
                if os.fstat(fd).st_nlink == 0:  # ...and that gc deleted it
                    held()
                    raise RunNotFound(run_id)
        except BaseException:
            os.close(fd)
            if lock is not None:
                unlock(lock)
            raise
        logged = None if self._wal is None else Logged(self._wal, run_id + JOURNAL)
        lease = FileLease(run_id, lock, fd, log=logged)
        gate = self._gclock.shared if fcntl is not None else None
        return IndexedLease(lease, self.index, gate, held)

    def _is_claimed(self, run_id: str) -> bool:
        suffix = JOURNAL if fcntl is not None else LOCK
        return is_locked(self._base(run_id) + suffix, self._opener(run_id + suffix))

    def summary(self, run_id: str) -> RunInfo:
        if fcntl is None:
            events = self.read(run_id)
            return self._adopt(summarize(run_id, events, self._claimed(run_id, events, -1)))
        # One descriptor read and, where it matters, probed: the lock probe costs one
        # `flock` (its lock goes with the `close` the read needs anyway).
        try:
            fd = self._open(run_id + JOURNAL, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise RunNotFound(run_id) from None
        with open(fd, "rb") as f:
            events = self._events_of(run_id, f.read(), self._base(run_id) + JOURNAL)
            claimed = self._claimed(run_id, events, fd)
        return self._adopt(summarize(run_id, events, claimed))

    def _claimed(self, run_id: str, events: list[Event], fd: int) -> bool:
        """Whether a live lease holds a run with these `events` (`fd`: its journal, read
        only, to probe; -1: probe by path). A finished run's summary does not depend on an
        owner: not probed (a `flock` costs as much as a fifth of a summary)."""
        if len(events) > 1 and events[-1]["type"] in TERMINAL_EVENTS:
            return False
        if fd < 0 or fcntl is None:
            return self._is_claimed(run_id)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped as `fd` is closed
        except BlockingIOError:
            return True
        return False

    def _modified_at(self, run_id: str) -> float:
        try:
            return os.lstat(self._base(run_id) + JOURNAL).st_mtime
        except (OSError, ValueError):
            return 0.0

    def send(self, run_id: str, message: Event) -> None:
        if not self.exists(run_id):
            raise RunNotFound(run_id)
        data = dumps(with_signal_id(message))
        wal = self._wal if self._wal is not None and self._wal.fits(len(data)) else None
        fd = self._open(run_id + INBOX, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            before = os.fstat(fd).st_size
            try:
                write(fd, data, wal is None)
                if wal is not None:  # where O_APPEND put it: this descriptor's offset now
                    wal.log(run_id + INBOX, os.lseek(fd, 0, os.SEEK_CUR) - len(data), data)
                elif before == 0:  # a new inbox: its name must survive a power cut too
                    self._sync_folder(run_id)
            except OSError:
                # Cut a torn message away, unless another sender appended after it meanwhile
                # (then it stays a torn line in the middle, which reading the inbox reports).
                with contextlib.suppress(OSError):
                    if before < os.fstat(fd).st_size < before + len(data):
                        os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)
        self._ring(run_id)

    def _sync_folder(self, run_id: str) -> None:
        """fsync the folder holding `run_id`'s files: a file created there keeps its name."""
        folder = run_id.rpartition("/")[0]
        if not folder:
            os.fsync(self._root_fd if self._root_fd >= 0 else self._open_root())
            return
        dfd = open_folder(self._root, folder)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _ring(self, run_id: str) -> None:
        # Engines stat this one file instead of every waiting run's inbox. Not fsynced: after
        # a power cut, engines restart and look at every run anyway.
        # Best effort: the message itself is already stored. A ring that cannot be written
        # whole (disk full) empties the doorbell, which tells readers to look at every run.
        # A link where the doorbell should be is refused (`UnsafeStore`), never followed.
        line = (run_id + "\n").encode()
        try:
            fd = self._open(DOORBELL, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except UnsafeStore:
            raise
        except OSError:
            return
        try:
            try:
                whole = os.write(fd, line) == len(line)
            except OSError:
                whole = False
            if not whole or os.fstat(fd).st_size > DOORBELL_MAX:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def _changes(self, cursor: int | None = None) -> tuple[list[str] | None, int]:
        path = os.path.join(self._root, DOORBELL)
        try:
            st = os.lstat(path)  # the idle case: one stat, nothing to open
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeStore(path, "is a symbolic link; the store never follows one")
            size = st.st_size
            if cursor is None or size == cursor:
                return [], size
            if size < cursor:  # truncated by a sender: something may have been missed
                return None, 0
            with open(self._open(DOORBELL, os.O_RDONLY), "rb") as f:
                f.seek(cursor)
                data = f.read(size - cursor)
        except FileNotFoundError:
            return ([], 0) if cursor in (None, 0) else (None, 0)
        end = data.rfind(b"\n") + 1
        ids = list(dict.fromkeys(data[:end].decode(errors="replace").splitlines()))
        return ids, cursor + end

    def inbox(self, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        path = self._base(run_id) + INBOX
        try:
            with open(self._open(run_id + INBOX, os.O_RDONLY), "rb") as f:
                f.seek(cursor)
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return [], cursor
        messages, used = parse_lines(data, str(path))
        check_messages(messages, path)
        return messages, cursor + used

    def _engine_lock(self, engine_id: str) -> filelock.BaseFileLock:
        """Where there is no `fcntl`: `filelock` on `.engines/ID.lock`."""
        import filelock  # only there: `import intemporal` does not load it

        folder = self.root / ENGINES
        folder.mkdir(mode=0o700, exist_ok=True)
        return filelock.FileLock(
            folder / (engine_id + LOCK), mode=0o600, thread_local=False, preserve_lock_file=True
        )

    def lease_owner(self, owner: str) -> OwnerLease:
        # One lock per engine, not per parked run: 10,000 waiting runs cost no descriptors.
        rel = f"{ENGINES}/{check_run_id(owner)}{LOCK}"
        if fcntl is None:
            lock = self._engine_lock(owner)
            lock.acquire(timeout=0)
            return OwnerLease(owner, lock.release)
        # Our own flock, not filelock's, which opens with O_TRUNC and follows a link.
        handle = try_lock(rel, opener=self._opener(rel, mkdirs=True))
        if handle is None:  # an id is unique to its engine: nobody else may hold it
            raise RuntimeError(f"owner {owner!r} is already held")

        def release() -> None:
            unlock(handle)
            with contextlib.suppress(FileNotFoundError, UnsafeStore):
                unlink_in(self._root, rel)  # unique to this engine: nobody else takes it

        return OwnerLease(owner, release)

    def _owner_alive(self, owner: str) -> bool:
        rel = f"{ENGINES}/{check_run_id(owner)}{LOCK}"
        if fcntl is None:
            if not (self.root / rel).exists():
                return False
            import filelock

            lock = self._engine_lock(owner)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                return True
            lock.release()
            return False
        try:
            return is_locked(rel, self._opener(rel))
        except NotADirectoryError:
            return False

    @contextlib.contextmanager
    def _queue_ledger(self, name: str) -> Iterator[queueing.Ledger]:
        if fcntl is None:  # no flock here: this process only
            with super()._queue_ledger(name) as ledger:
                yield ledger
            return
        fd = self._open(f"{QUEUES}/{queueing.file_name(name)}", os.O_RDWR | os.O_CREAT, True)
        with queueing.flocked_ledger(fd) as ledger:  # any process of this host waits here
            yield ledger

    def run_ids(self) -> Iterator[str]:
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                if name.endswith(JOURNAL):  # temporary files end in .tmp, never .jsonl
                    yield prefix + name[: -len(JOURNAL)]

    def delete(self, run_id: str) -> None:
        top = "/" not in check_run_id(run_id)
        dfd = (self._root_fd if self._root_fd >= 0 else self._open_root()) if top else -1
        if self._wal is not None:  # in the log before unlinked: a replay does not bring it back
            self._wal.forget(run_id + INBOX, run_id + JOURNAL, durable=True)
        for suffix in (INBOX, LOCK, JOURNAL):  # never an inbox without its run
            try:
                if top:  # the root's descriptor is open already: one call per file
                    os.unlink(run_id + suffix, dir_fd=dfd)
                else:
                    unlink_in(self._root, run_id + suffix)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except UnsafeStore:
                raise
            except OSError as exc:  # the run stays (`gc` names it): the file, as the store has it
                raise OSError(exc.errno, exc.strerror, run_id + suffix) from exc
        self.forget(run_id)
        # Folders of child runs ("<parent>/<seq>") go once empty, up to the root.
        prune_folders(self._root, run_id)
