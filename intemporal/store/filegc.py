"""How the file store's `gc` deletes finished runs in bulk: one lock for the whole store, the
index's word on each journal, unlinks on many threads.

    .intemporal/.gclock     gc holds it exclusive while it deletes; a claim of a finished
                            run, and a restart line (`run_resumed`...), hold it shared

Deleting 100,000 runs one by one (lock a journal, read it, unlink it) costs ~0.3 ms each
on a file system that discards freed blocks as it frees them: 30 s. Here instead:

- **One lock, not one per journal.** Only a finished run can be deleted, and a finished run
  changes only by a restart line, which is appended holding `.gclock` shared; whoever
  claims a run whose journal ends finished holds it shared too, until that line or its
  release. `gc` takes it exclusive (without waiting: held by someone, `gc` goes run by run
  as before, each journal locked), so while it deletes, no finished run can come back to
  life or be held, and a claim of one waits, then finds it gone (`RunNotFound`).
- **The index's word, checked with one `stat`.** When a run ends, the index keeps its
  journal's size and modification time then (`RunIndex.ended`). A journal that is still a
  plain file of that size and time, whose last event is stamped as the row says, is
  deleted without being read (what `rsync` trusts to skip a file); any
  other (one edited by hand, a link, a run whose end the index learnt from a reader) is read
  whole and checked first, as before: a damaged one is left alone and named.
- **Unlinks in parallel.** Freeing a file's blocks waits on the disk (on a file system
  mounted with `discard`, ~0.1 ms); the kernel's workers through io_uring (`uring.py`),
  else `THREADS` threads, wait at once, in inode order. Both are driven the same way
  (`_level`): a level of runs none below another, their inboxes and lock files first, then
  the journals of the runs whose went; then the runs below the ones deleted.
- **A file that cannot be unlinked** (`chattr +i`, `EPERM`, `EROFS`...) keeps its run, and
  every run below it, whole: never a journal without the inbox refused before it, never a
  parent without its children. The run is named with why (`undeletable`), its row stays,
  every other run goes; the next `gc` tries it again.
- **Crash-safe order.** A tree's top-level run goes first, then the runs below it: a crash
  (SIGKILL) in between leaves finished child runs whose parent is gone, which are top-level
  runs themselves (the next `gc` takes them), never a parent that would run a deleted child
  again. A run's inbox goes before its journal (never an inbox without its run, which a new
  run of that id would read). Rows go after the files, in one transaction per batch: a crash
  in between leaves rows without journals, which readers skip and the next `gc` removes.
  The write-ahead log is told of each deletion, and that is on disk, before the file is
  unlinked: a replay never brings one back.
  The index's `meta` says a `gc` is deleting (`RunIndex.deleting`) from before the first
  unlink to after the last rows: left there by a SIGKILL, `count` asks the journals, not the
  rows, and the next `gc` removes every row without a journal, whatever its cutoff.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import IntemporalError, RunNotFound, UnsafeStore
from ..events import TERMINAL_EVENTS
from .fileio import fcntl
from .filelist import TAIL, FileListing
from .runinfo import RunInfo
from .safefs import INBOX, JOURNAL, LOCK, open_folder, open_in, prune_folders
from .uring import UnlinkRing
from .wal import WriteAheadLog

GCLOCK = ".gclock"
_FORMAT, _REGULAR = stat.S_IFMT(0o170000), stat.S_IFREG  # `stat.S_ISREG` without a call
THREADS = 16  # unlinks waiting on the disk at once
BATCH = 8192  # runs whose files, then rows, are deleted together


class GcLock:
    """The store's `.gclock` (see the module docstring). Shared holds are counted in this
    process: a flock is per open file, so the first takes it and the last drops it."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._mu = threading.Lock()
        self._fd = -1
        self._holders = 0

    def _open(self) -> int:
        return open_in(self._root, GCLOCK, os.O_RDWR | os.O_CREAT)

    def shared(self) -> Callable[[], None]:
        """Hold the lock shared (waiting while a `gc` deletes); returns its release."""
        assert fcntl is not None
        with self._mu:
            if self._holders == 0:
                if self._fd < 0:
                    self._fd = self._open()
                fcntl.flock(self._fd, fcntl.LOCK_SH)
            self._holders += 1
        done = threading.Event()

        def release() -> None:
            if done.is_set():
                return
            done.set()
            with self._mu:
                self._holders -= 1
                if self._holders == 0 and self._fd >= 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

        return release

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Hold the lock exclusive if nobody holds it now (True), else hold nothing (False)."""
        assert fcntl is not None
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # drops the flock

    def close(self) -> None:
        with self._mu:
            if self._fd >= 0 and self._holders == 0:
                os.close(self._fd)
                self._fd = -1


def ends_finished(fd: int, length: int) -> bool:
    """Whether the journal open as `fd`, `length` bytes of whole lines, ends with a terminal
    event (True too when its last line is too long to tell cheaply: a claim then only holds
    the gc lock shared, which costs nothing unless a `gc` runs)."""
    if length <= 0:
        return False
    tail = os.pread(fd, min(length, TAIL), max(0, length - TAIL))
    start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
    if start == 0 and length > TAIL:
        return True
    line = tail[start:]
    if b'"run_' not in line:
        return False
    import json

    try:
        kind = json.loads(line).get("type")
    except (ValueError, AttributeError):
        return True  # damaged: whoever claimed it finds out; gc leaves it alone
    return kind in TERMINAL_EVENTS


Unlink = Callable[[list[tuple[int, str]]], dict[int, OSError]]  # names -> failures by index


@dataclass
class Batch:
    """Trees checked together: whether each goes, what is unlinked, what could not be."""

    start: int  # where its trees start in the caller's list
    trees: list[list[RunInfo]]
    verdicts: list[bool] = field(default_factory=list)
    tops: list[tuple[int, str]] = field(default_factory=list)  # (inode, run id)
    below: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # by parent
    gone: list[str] = field(default_factory=list)  # rows without a journal: a crash's leftovers
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> why it stays
    future: Future[None] | None = None


class FileCollector(FileListing):
    """The file store's bulk `gc` (see the module docstring); a part of `FileStore`."""

    _gclock: GcLock
    _wal: WriteAheadLog | None

    def _open_root(self) -> int:
        raise NotImplementedError  # FileStore's

    def delete_ended_trees(
        self,
        trees: list[list[RunInfo]],
        unreadable: set[str],
        undeletable: dict[str, str] | None = None,
    ) -> list[bool] | None:
        if fcntl is None:
            return None
        with self._gclock.exclusive() as alone:
            if not alone:  # a finished run is claimed: run by run, each journal locked
                return None
            killed = self.index.deleting_since_crash()  # a gc before this one was killed
            self.index.deleting(True)
            ends = self.index.end_stats()
            root = self._open_root()
            extra = self._extras(root)
            done: list[bool] = []
            ring = UnlinkRing.open(root)
            # One batch is checked, and the one before it has its rows removed, while the
            # batch before is unlinked by the driver thread (through the ring, or threads).
            try:
                with (
                    ThreadPoolExecutor(1, thread_name_prefix="intemporal-gc") as driver,
                    ThreadPoolExecutor(THREADS, thread_name_prefix="intemporal-gc") as pool,
                ):
                    unlink = ring.unlink if ring is not None else _on_threads(pool)
                    last: Batch | None = None
                    for i in range(0, len(trees), BATCH):
                        batch = self._check(Batch(i, trees[i : i + BATCH]), ends, root, unreadable)
                        done += batch.verdicts
                        batch.future = driver.submit(self._delete, batch, root, extra, unlink)
                        if last is not None:
                            self._finish(last, done, undeletable)
                        last = batch
                    if last is not None:
                        self._finish(last, done, undeletable)
            finally:
                if ring is not None:
                    ring.close()
            if killed:  # rows it left that this gc did not look at (a later cutoff)
                self._sweep()
            self.index.deleting(False)
            return done

    def _sweep(self) -> None:
        """Remove the finished runs' rows whose journals are gone (one `lstat` each)."""
        gone = [r[0] for r in self.index.ended_before(float("inf")) if not self.exists(r[0])]
        self.index.removed(gone)

    def _check(
        self,
        batch: Batch,
        ends: dict[str, tuple[float, int, int]],
        root: int,
        unreadable: set[str],
    ) -> Batch:
        """Which trees still end as `gc` saw them, every run of each (see `_still_ended`)."""
        verdicts, tops, lstat = batch.verdicts, batch.tops, os.stat
        for runs in batch.trees:
            if len(runs) == 1 and "/" not in runs[0].run_id:  # most trees: `_still_ended`'s
                info = runs[0]  # first look, inlined (100,000 calls fewer)
                run_id = info.run_id
                try:
                    st = lstat(run_id + JOURNAL, dir_fd=root, follow_symlinks=False)
                except FileNotFoundError:  # `_still_ended` says what then
                    st = None
                if (
                    st is not None
                    and st.st_mode & _FORMAT == _REGULAR
                    and ends.get(run_id) == (info.updated_at, st.st_size, st.st_mtime_ns)
                ):
                    verdicts.append(True)
                    tops.append((st.st_ino, run_id))
                    continue
            inodes = []
            for info in runs:
                try:
                    inode = self._still_ended(info, ends, root)
                except RunNotFound:
                    batch.gone.append(info.run_id)
                    break
                except IntemporalError:  # damaged, or a link: left alone, and said
                    unreadable.add(info.run_id)
                    self.index.damaged(info.run_id)  # a worker's start-up reports it too
                    break
                if inode < 0:  # changed since gc looked: the tree stays whole
                    break
                inodes.append(inode)
            ok = len(inodes) == len(runs)
            batch.verdicts.append(ok)
            if ok:
                batch.tops.append((inodes[-1], runs[-1].run_id))  # deepest first: top last
                for inode, info in zip(inodes[:-1], runs, strict=False):
                    batch.below.setdefault(info.parent or "", []).append((inode, info.run_id))
        return batch

    def _delete(self, batch: Batch, root: int, extra: dict[str, list[str]], unlink: Unlink) -> None:
        """Unlink the batch's top-level runs, then the runs below those deleted, level by
        level: a run that could not be deleted keeps every run below it (`batch.failed`)."""
        folders: dict[str, int] = {}
        try:
            level = batch.tops
            while level:
                gone = self._level(level, batch.failed, folders, root, extra, unlink)
                batch.deleted += gone
                level = [run for r in gone if r in batch.below for run in batch.below[r]]
        finally:
            for fd in folders.values():
                if fd >= 0:
                    os.close(fd)

    def _level(
        self,
        runs: list[tuple[int, str]],
        failed: dict[str, str],
        folders: dict[str, int],
        root: int,
        extra: dict[str, list[str]],
        unlink: Unlink,
    ) -> list[str]:
        """Delete runs none of which is below another: their inboxes and lock files first,
        then the journals of the runs whose went (never an inbox without its run). Returns
        the runs deleted; why each other one stays goes to `failed`."""
        firsts: list[tuple[int, str]] = []  # (folder descriptor, name)
        owners: list[str] = []  # whose each is, and its name in the store
        rels: list[str] = []
        journals: list[tuple[int, str]] = []
        ids: list[str] = []
        vanished: list[str] = []  # in a folder gone meanwhile: gone with it
        for _, run_id in sorted(runs):  # inode order: neighbouring blocks freed together
            folder, _, name = run_id.rpartition("/")
            dfd = root if not folder else self._folder(folders, folder, run_id, failed)
            if dfd < 0:
                if run_id not in failed:
                    vanished.append(run_id)
                continue
            for suffix in (INBOX, LOCK) if folder else extra.get(run_id, ()):
                firsts.append((dfd, name + suffix))
                owners.append(run_id)
                rels.append(run_id + suffix)
            journals.append((dfd, name + JOURNAL))
            ids.append(run_id)
        # Told to the log first, so a replay does not bring them back (one look at .wal/),
        # and unlinked once that is on disk: the inboxes, then the journals.
        if not self._logged_gone([r for r in rels if r.endswith(INBOX)], ids, failed):
            return vanished
        if firsts:
            for i, exc in unlink(firsts).items():
                failed.setdefault(owners[i], _why(exc, rels[i]))
            if failed:
                kept = [i for i, r in enumerate(ids) if r not in failed]
                journals, ids = [journals[i] for i in kept], [ids[i] for i in kept]
        if not self._logged_gone([r + JOURNAL for r in ids], ids, failed):
            return vanished
        for i, exc in unlink(journals).items():
            failed[ids[i]] = _why(exc, ids[i] + JOURNAL)
        return [r for r in ids if r not in failed] + vanished

    def _folder(
        self, folders: dict[str, int], folder: str, run_id: str, failed: dict[str, str]
    ) -> int:
        """A child run's folder, opened once a batch as `unlink_in` opens it (never through a
        link): -1 when it is gone (so are its runs), or cannot be opened (said in `failed`)."""
        fd = folders.get(folder)
        if fd is None:
            try:
                fd = open_folder(self._root, folder)
            except (FileNotFoundError, NotADirectoryError):
                fd = -1
            except OSError as exc:  # a link (`UnsafeStore`), a folder we may not search
                failed[run_id] = str(exc) if isinstance(exc, IntemporalError) else _why(exc, folder)
                return -1
            folders[folder] = fd
        return fd

    def _logged_gone(self, names: list[str], ids: list[str], failed: dict[str, str]) -> bool:
        """Tell the log these files (of runs `ids`) are deleted, before they are, and wait
        for it: False when the log cannot be written (each run stays, why in `failed`)."""
        if self._wal is None or not names:
            return True
        try:
            self._wal.forget(*names, durable=True)
        except OSError as exc:
            for run_id in ids:
                failed.setdefault(run_id, f"the write-ahead log: {exc.strerror or exc}")
            return False
        return True

    def _finish(self, batch: Batch, done: list[bool], undeletable: dict[str, str] | None) -> None:
        """Wait for the batch's unlinks; then its rows go, in one transaction."""
        assert batch.future is not None
        try:
            batch.future.result()  # a failure of the ring or a thread itself is raised here
        finally:  # folders of child runs once empty (a top-level one too: a child a
            for run_id in batch.deleted:  # failed gc left)
                if "/" in run_id:
                    prune_folders(self._root, run_id)
        if batch.failed:  # a tree with a run left is not deleted whole
            for j, runs in enumerate(batch.trees):
                if any(info.run_id in batch.failed for info in runs):
                    done[batch.start + j] = False
            if undeletable is not None:
                undeletable.update(batch.failed)
        if self._wal is not None:
            self._wal.flush()
        ghosts = [g for g in batch.gone if not self.exists(g)]
        self.index.removed(batch.deleted + ghosts)

    def _still_ended(
        self, info: RunInfo, ends: dict[str, tuple[float, int, int]], root: int
    ) -> int:
        """The journal's inode if it still ends as `gc` saw it, -1 if not:
        one `stat` when the index knows its length at its end, else read whole and checked
        (`RunNotFound`, `JournalCorrupted` or `UnsafeStore` raised)."""
        run_id = info.run_id
        folder, _, name = run_id.rpartition("/")
        try:  # a child run's folder opened as `open_in` does: never through a link
            dfd = open_folder(self._root, folder) if folder else root
        except (FileNotFoundError, NotADirectoryError):
            raise RunNotFound(run_id) from None
        try:
            st = os.stat(name + JOURNAL, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        finally:
            if folder:
                os.close(dfd)
        seen = (info.updated_at, st.st_size, st.st_mtime_ns)
        if stat.S_ISREG(st.st_mode):
            if ends.get(run_id) == seen:
                return st.st_ino
        elif not stat.S_ISLNK(st.st_mode):  # a folder in the way: left alone, and named
            path = os.path.join(self._root, run_id + JOURNAL)
            raise UnsafeStore(path, "is not a regular file; gc leaves its run alone")
        last = self.read(run_id)[-1]
        if last["type"] in TERMINAL_EVENTS and last.get("ts", 0.0) == info.updated_at:
            return st.st_ino
        return -1

    def _extras(self, root: int) -> dict[str, list[str]]:
        """The top-level runs that have an inbox or a lock file, and the suffixes of those
        (one listing of the root, not a look per run)."""
        extra: dict[str, list[str]] = {}
        with os.scandir(root) as it:
            for e in it:
                for suffix in (INBOX, LOCK):
                    if e.name.endswith(suffix):
                        extra.setdefault(e.name[: -len(suffix)], []).append(suffix)
        for suffixes in extra.values():
            suffixes.sort(key=(INBOX, LOCK).index)  # the inbox first
        return extra


def _why(exc: OSError, rel: str) -> str:
    """Why a file of the store could not be unlinked: "Operation not permitted: a/1.jsonl"."""
    return f"{exc.strerror or exc}: {rel}"


def _on_threads(pool: ThreadPoolExecutor) -> Unlink:
    """`UnlinkRing.unlink` without a ring: the names shared among the pool's threads."""

    def unlink(names: list[tuple[int, str]]) -> dict[int, OSError]:
        n = min(THREADS, max(1, len(names) // 64))

        def part(k: int) -> dict[int, OSError]:
            out: dict[int, OSError] = {}
            for i in range(k, len(names), n):
                try:
                    os.unlink(names[i][1], dir_fd=names[i][0])
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as exc:
                    out[i] = exc
            return out

        if n == 1:
            return part(0)
        failures: dict[int, OSError] = {}
        for future in [pool.submit(part, k) for k in range(n)]:
            failures.update(future.result())
        return failures

    return unlink
