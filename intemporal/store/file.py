"""The embedded store: a directory of append-only JSON-lines journals.

    .intemporal/
      order-42.jsonl          the journal: one event per line, `cat` and `jq` friendly
      order-42.lock           held (flock, through filelock) by the process executing the run
      order-42.inbox          signals and cancellation requests from any process
      order-42/3.jsonl        a child run "order-42/3"

Ownership is taken once per execution, not per append: a `filelock.FileLock` costs ~80 µs
against ~1 µs for an append. The OS drops a flock when its process dies, so "lock free and
status running" means "orphaned, resumable"; there is no stale lock to clean. Lock files
are never deleted while a run exists (deleting a lock file others may hold breaks mutual
exclusion; see filelock's `_unix.py`).

A crash can tear the last line of a journal. Reading ignores a last line without its
newline, and claiming truncates it away before the next append; any other unreadable line
raises `JournalCorrupted` with the file and line number.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import filelock

from ..errors import JournalCorrupted, RunNotFound
from .base import Event, Lease, Store, check_run_id

JOURNAL, LOCK, INBOX = ".jsonl", ".lock", ".inbox"
DOORBELL = ".doorbell"  # one line per message sent: which run to look at
DOORBELL_MAX = 1 << 20  # past this size a sender truncates it; readers then look at all runs


def dumps(event: Event) -> bytes:
    """One journal line: compact JSON and a newline."""
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


def parse_lines(data: bytes, path: str, start_line: int = 1) -> tuple[list[Event], int]:
    """Parse JSON lines; return the events and the byte length of the complete part.

    The last line without a newline is a torn write and is left out; an unreadable
    complete line raises `JournalCorrupted`.
    """
    events: list[Event] = []
    end = data.rfind(b"\n") + 1
    for n, line in enumerate(data[:end].splitlines(), start_line):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError as exc:
            raise JournalCorrupted(path, n, str(exc)) from None
        if not isinstance(ev, dict) or "type" not in ev:
            raise JournalCorrupted(path, n, "not an event object")
        events.append(ev)
    return events, end


class FileLease(Lease):
    """An owned run of a `FileStore`: the held lock and an O_APPEND descriptor."""

    def __init__(self, run_id: str, lock: filelock.BaseFileLock, fd: int) -> None:
        self.run_id, self._lock, self._fd = run_id, lock, fd

    def append(self, event: Event, sync: bool) -> None:
        os.write(self._fd, dumps(event))  # one write: O_APPEND keeps the line whole
        if sync:
            os.fdatasync(self._fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._lock.release()


class FileStore(Store):
    """A directory of run journals; see the module docstring for the layout.

    >>> store = FileStore(".intemporal")
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, run_id: str, suffix: str = JOURNAL) -> Path:
        """The file of `run_id` with `suffix`; the id is checked so it cannot escape the root."""
        return self.root / (check_run_id(run_id) + suffix)

    def _mkdirs(self, folder: Path) -> None:
        """Create `folder` and its missing parents, each one private (0700)."""
        missing = []
        while not folder.is_dir() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):  # Path.mkdir(parents=True) ignores `mode` for parents
            d.mkdir(mode=0o700, exist_ok=True)

    def create(self, run_id: str, first: Event) -> bool:
        path = self.path(run_id)
        if path.exists():
            return False
        self._mkdirs(path.parent)
        # Write aside then hard-link into place: readers never see a half-written first
        # line, and of two processes creating the same id exactly one wins.
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, dumps(first))
            os.fsync(fd)
            os.close(fd)
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new name itself must survive a power cut
        finally:
            os.close(dfd)
        return True

    def read(self, run_id: str) -> list[Event]:
        path = self.path(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        events, _ = parse_lines(data, str(path))
        if not events:
            raise JournalCorrupted(str(path), 1, "empty journal")
        return events

    def exists(self, run_id: str) -> bool:
        return self.path(run_id).exists()

    def _lock(self, run_id: str) -> filelock.BaseFileLock:
        return filelock.FileLock(
            self.path(run_id, LOCK), mode=0o600, thread_local=False, preserve_lock_file=True
        )

    def claim(self, run_id: str) -> Lease | None:
        path = self.path(run_id)
        if not path.exists():
            raise RunNotFound(run_id)
        lock = self._lock(run_id)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            _, good = parse_lines(data, str(path))
            if good < len(data):  # a torn last line from a crash: cut it before appending
                os.ftruncate(fd, good)
                os.fsync(fd)
        except BaseException:
            lock.release()
            raise
        return FileLease(run_id, lock, fd)

    def is_claimed(self, run_id: str) -> bool:
        if not self.path(run_id, LOCK).exists():
            return False
        lock = self._lock(run_id)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return True
        lock.release()
        return False

    def send(self, run_id: str, message: Event) -> None:
        if not self.exists(run_id):
            raise RunNotFound(run_id)
        fd = os.open(self.path(run_id, INBOX), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, dumps(message))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._ring(run_id)

    def _ring(self, run_id: str) -> None:
        # Engines stat this one file instead of every waiting run's inbox. Not fsynced: after
        # a power cut, engines restart and look at every run anyway.
        fd = os.open(self.root / DOORBELL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (run_id + "\n").encode())
            if os.fstat(fd).st_size > DOORBELL_MAX:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def changes(self, cursor: int | None = None) -> tuple[list[str] | None, int]:
        path = self.root / DOORBELL
        try:
            size = os.stat(path).st_size  # the idle case: one stat, nothing to open
            if cursor is None or size == cursor:
                return [], size
            if size < cursor:  # truncated by a sender: something may have been missed
                return None, 0
            with open(path, "rb") as f:
                f.seek(cursor)
                data = f.read(size - cursor)
        except FileNotFoundError:
            return ([], 0) if cursor in (None, 0) else (None, 0)
        end = data.rfind(b"\n") + 1
        ids = list(dict.fromkeys(data[:end].decode(errors="replace").splitlines()))
        return ids, cursor + end

    def inbox(self, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        path = self.path(run_id, INBOX)
        try:
            with open(path, "rb") as f:
                f.seek(cursor)
                data = f.read()
        except FileNotFoundError:
            return [], cursor
        messages, used = parse_lines(data, str(path))
        return messages, cursor + used

    def inbox_mtime(self, run_id: str) -> float:
        """The inbox's modification time (0 if none): a cheap "anything new?" probe."""
        try:
            return os.stat(self.path(run_id, INBOX)).st_mtime
        except FileNotFoundError:
            return 0.0

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
        for suffix in (JOURNAL, INBOX, LOCK):
            with contextlib.suppress(FileNotFoundError):
                self.path(run_id, suffix).unlink()
