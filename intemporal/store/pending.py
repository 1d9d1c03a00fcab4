"""The rows of runs just created, on their way into the run index (`index.py`).

    .index/pending-<pid>-<hex>.rows   one file per `RunIndex` that created runs (one per
                                      process, most often): one JSON object a line, the row
                                      of a run whose journal was about to be made

    {"run_id":"order-42","workflow":"ship","queue":null,"parent":null,"created":1764475200.5,"at":1764475200}

(`created`: the run's own time, from its first event; `at`: when the line was written, in
whole epoch seconds by this machine's clock, which says how old a row without a journal
is: see `drop_ghosts`.)

Writing a row into SQLite costs ~70 µs and a dozen system calls on the caller's thread of
`start()`; appending a line to a file the process keeps open is one `write` (~3 µs), and
what the kernel has survives a SIGKILL as the INSERT did. Every reader of the index first
merges these lines into SQLite (`merge`), so a run is listed by any process as soon as its
`start()` returned. Why no row is ever lost:

- **An owner per file.** A file is made by one `Writer` (`O_EXCL`, a name never used
  again), which holds an exclusive flock on it for as long as it keeps it open: a file
  whose flock another process can take has no owner left ("dead"); nothing is appended to
  it ever again. Each row is one `write` of a whole line (`O_APPEND`): no lock per row.
- **How far each file is merged** is kept in the index itself (`meta`: `pending:<name>` ->
  bytes), written in the transaction that inserts the rows (`INSERT OR IGNORE`: a row that
  exists is kept). A merger reads from there to the last whole line (a line being
  written is left for the next one); a dead file to its end (a torn last line is skipped,
  as any line that is not a row: the journals stay the truth).
- **Only the owner empties its file** (every `EVERY` rows and when it closes), and only
  once a committed merge covered every byte of it: under its own lock (no append of its
  process meanwhile), in a transaction that sets its offset back to 0, holding
  `.index/lock` shared (no rebuild meanwhile) and having checked the index is still the
  database those rows went into. A merger that read the offset before sees a file shorter
  than it or its offset changed: it merges in a write transaction, after the owner's.
- **A dead file** is merged to its end, then unlinked (holding its flock, `.index/lock`
  shared, after the commit): a crash in between only merges its lines again. One merged
  whole while its process lived is unlinked by the next store that closes (`sweep`).
- **`created` never waits**: not for a merge of another process (no lock per row), nor
  for a rebuild (its merges every `EVERY` rows are skipped while one runs).
- **A rebuild** (`RunIndex._rebuild`, holding `.index/lock` exclusive) takes the flocks of
  the files dead when it starts: every run of theirs whose journal was ever made is in the
  journals it scans, so they are dropped unread (a file left from before a reboot, torn by
  a power cut, included). The others' lines, all of them, are merged in its transaction
  once the scan is over: a row appended during the scan is never missed.
- **A file unlinked under its owner** (`.index/` deleted by hand): the owner notices when it
  merges (every `EVERY` rows, or any read of its process) and writes its lines again into a
  new file. Delete `.index/` while no process creates runs (or delete only `runs.sqlite3`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .safefs import JOURNAL, open_file, open_folder

try:
    import fcntl
except ImportError:  # no flock (Windows): the index inserts each row itself
    fcntl = None  # type: ignore[assignment]

FOLDER = ".index"
LOCK = "lock"  # `.index/lock`: exclusive while the index is checked or rebuilt
PREFIX, SUFFIX = "pending-", ".rows"
KEY = "pending:"  # a `meta` key: how far (bytes) the file named after it was merged
_now = time.time  # the clock of a line's `at` (a test ages rows through it)
EVERY = 256  # rows its owner appends before it merges and empties its file

#: a row as `index.Row` holds it: run id, workflow, queue, parent, created, updated, status
Row = tuple[str, str, "str | None", "str | None", float, float, str]

_string = json.encoder.encode_basestring  # the C encoder's, UTF-8 kept as itself
_ascii = json.JSONEncoder(separators=(",", ":")).encode
_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def line_of(row: Row) -> bytes:
    """A pending file's line for a new run's row (UTF-8 JSON and a newline)."""
    run_id, workflow, queue, parent, created = row[:5]
    if created - created == 0.0:  # finite: spelled here, the strings by the C encoder
        q = "null" if queue is None else _string(queue)
        p = "null" if parent is None else _string(parent)
        text = (
            f'{{"run_id":{_string(run_id)},"workflow":{_string(workflow)},"queue":{q},'
            f'"parent":{p},"created":{float(created)!r},"at":{int(_now())}}}\n'
        )
        with contextlib.suppress(UnicodeEncodeError):
            return text.encode()
    obj: dict[str, Any] = {"run_id": run_id, "workflow": workflow, "queue": queue}
    obj["parent"], obj["created"], obj["at"] = (
        parent,
        created,
        int(_now()),
    )  # (a lone surrogate, or a time not finite: the encoder's way)
    return (_ascii(obj) + "\n").encode()


def rows_of(data: bytes, status: str) -> list[Row]:
    """The rows whole lines of a pending file hold (`data`), with `status`; a line that is
    not one (torn, garbage, another shape) is skipped."""
    lines = [line.strip() for line in data.split(b"\n") if line.strip()]
    try:  # the usual case: every line an object, all read in one call
        if not all(line[:1] == b"{" and line[-1:] == b"}" for line in lines):
            raise ValueError
        objs = json.loads(b"[" + b",".join(lines) + b"]")
        if not isinstance(objs, list) or len(objs) != len(lines):
            raise ValueError
    except ValueError:  # (UnicodeDecodeError too) some line is not: one by one
        objs = []
        for line in lines:
            try:
                objs.append(json.loads(line))
            except ValueError:
                continue
    rows = []
    for obj in objs:
        row = _row(obj, status)
        if row is not None:
            rows.append(row)
    return rows


def _row(obj: Any, status: str) -> Row | None:
    """The row a line's JSON value holds, or None if it is not one."""
    try:
        run_id, workflow, created = obj["run_id"], obj["workflow"], obj["created"]
        queue, parent, at = obj.get("queue"), obj.get("parent"), obj.get("at")
    except (TypeError, KeyError, AttributeError):  # not an object, or not of a row
        return None
    if (
        type(run_id) is str
        and run_id
        and type(workflow) is str
        and (queue is None or type(queue) is str)
        and (parent is None or type(parent) is str)
        and type(created) in (float, int)
    ):
        # `updated`: when the row was written, if later than the run's own time (a line of
        # an older intemporal has no `at`)
        written = float(at) if type(at) in (int, float) else float(created)
        return (run_id, workflow, queue, parent, float(created), max(written, created), status)
    return None


class Writer:
    """The owner's side: one pending file of the store's `.index/` (see the module
    docstring), made on the first `append`, flocked while open."""

    def __init__(self, root: str) -> None:
        self._root = root
        self.fd = -1
        self.name = ""
        self.lock = threading.Lock()  # appends of this process, against `empty`
        self.rows = 0  # rows appended since the file was made or emptied
        self.due = EVERY  # `rows` at which the owner merges and empties it next
        _writers.add(self)

    def append(self, line: bytes) -> int:
        """Append one row's line (`line_of`); return the rows appended since the file was
        last emptied. Raises `OSError` (ENOSPC for a short write: that file is then left,
        a torn line at its end, and the next row goes to a new one) and `UnsafeStore`."""
        with self.lock:
            fd = self.fd if self.fd >= 0 else self._open()
            try:
                written = os.write(fd, line)
            except OSError:
                self._leave()  # it may hold a part of the line: no row after it
                raise
            if written != len(line):
                self._leave()
                raise OSError(errno.ENOSPC, f"short write of a run's row: {written} bytes")
            self.rows += 1
            return self.rows

    def _open(self) -> int:
        """A new file of this writer's own, flocked (the caller holds `lock`)."""
        dfd = open_folder(self._root, FOLDER, create=True)
        try:
            while True:
                name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
                flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL
                fd = open_file(name, flags, 0o600, dfd, os.path.join(self._root, FOLDER, name))
                # A merger may have found it before this flock (unlocked: "dead") and
                # unlinked it: then it is left, and another is made.
                if _try_lock(fd) and os.fstat(fd).st_nlink:
                    self.fd, self.name, self.rows, self.due = fd, name, 0, EVERY
                    return fd
                os.close(fd)
        finally:
            os.close(dfd)

    def _leave(self) -> None:
        """Close the file (the caller holds `lock`): its owner is gone, mergers take it."""
        fd, self.fd, self.name, self.rows = self.fd, -1, "", 0
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        with self.lock:
            self._leave()

    def rehome(self) -> None:
        """If the file was unlinked under its owner (`.index/` deleted), write its lines
        into a new one: a rebuild may not have seen their journals."""
        if self.fd < 0:
            return
        with self.lock:
            if self.fd >= 0 and os.fstat(self.fd).st_nlink == 0:
                self._rehome()

    def _rehome(self) -> None:
        data = _read(self.fd, 0, os.fstat(self.fd).st_size)
        data = data[: data.rfind(b"\n") + 1]  # a torn last line stays behind
        self._leave()
        if data:
            fd = self._open()
            written = os.write(fd, data)
            if written != len(data):
                self._leave()
                raise OSError(errno.ENOSPC, "short write of pending rows")
            self.rows = data.count(b"\n")


def catch_up(conn: Any, dfd: int, writer: Writer, ours: Callable[[], bool]) -> None:
    """Merge every pending file's rows not merged yet into the index `conn` (`.index/` is
    `dfd`, `writer` the index's own file, `ours()` whether `conn` is still the index), in
    one write transaction, only when some file has bytes not merged. Dead files merged to
    their end are unlinked then (see the module docstring)."""
    writer.rehome()
    if not behind(dfd, conn):  # the usual case: no write transaction
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        dead = merge(conn, dfd, writer.name)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
    if dead.files:
        with shared(dfd, ours) as ok:
            if ok:
                dead.unlink(dfd)
        dead.close()


def empty(conn: Any, dfd: int, writer: Writer, ours: Callable[[], bool], final: bool) -> None:
    """Empty `writer`'s file (`final`: unlink it), where a committed merge into `conn`
    covers every byte of it and `conn` is still the index; else leave it as it is."""
    emptied = False
    with shared(dfd, ours) as ok:
        if not ok:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            with writer.lock:  # no row appended by this process meanwhile
                key = KEY + writer.name
                done = offsets(conn).get(writer.name)
                if writer.fd < 0 or done != os.fstat(writer.fd).st_size:
                    conn.execute("ROLLBACK")
                    return
                emptied = True
                if final:
                    os.unlink(writer.name, dir_fd=dfd)
                    conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    os.ftruncate(writer.fd, 0)
                    conn.execute("UPDATE meta SET value = '0' WHERE key = ?", (key,))
                conn.execute("COMMIT")
                writer.rows, writer.due = 0, EVERY
                if final:
                    writer._leave()  # (unlinked: not to be taken for one deleted under us)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            if emptied:  # its offset not set back: the file is left, another one made
                writer.close()
            raise


def sweep(conn: Any, dfd: int, own: str, ours: Callable[[], bool]) -> None:
    """Unlink the dead files every byte of which `conn` has merged: left by processes that
    exited without closing their store, merged while they lived (see `catch_up`)."""
    done = offsets(conn)
    dead = Dead()
    for name, size in sizes(dfd).items():
        if name == own or done.get(name) != size:
            continue
        fd = _open_file(dfd, name)
        if fd >= 0 and _try_lock(fd) and os.fstat(fd).st_size == size:
            dead.files.append((name, fd))
        elif fd >= 0:
            os.close(fd)
    if dead.files:
        with shared(dfd, ours) as ok:
            if ok:
                dead.unlink(dfd)
        dead.close()


@contextlib.contextmanager
def shared(dfd: int, ours: Callable[[], bool]) -> Iterator[bool]:
    """Holds `.index/lock` shared if it is free at once (no rebuild meanwhile) and yields
    whether it does and `ours()`: only then may rows merged leave their pending file."""
    try:
        lock = os.open(LOCK, os.O_RDWR | os.O_NOFOLLOW, dir_fd=dfd)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield ours()
    finally:
        os.close(lock)


def _after_fork() -> None:
    """In a forked child: the parent's files stay the parent's (a new one when needed)."""
    for w in list(_writers):
        w.lock = threading.Lock()
        w.fd, w.name, w.rows, w.due = -1, "", 0, EVERY  # the inherited descriptor is left open: its
        # flock is shared with the parent, and closing it here would not release it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def usable() -> bool:
    """Whether pending files can be used here (flock: Linux, macOS, BSD)."""
    return fcntl is not None


def _try_lock(fd: int) -> bool:
    """Take `fd`'s flock exclusive without waiting: True if taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(fd: int, start: int, end: int) -> bytes:
    parts, at = [], start
    while at < end:
        chunk = os.pread(fd, end - at, at)
        if not chunk:
            break
        parts.append(chunk)
        at += len(chunk)
    return b"".join(parts)


def sizes(dfd: int) -> dict[str, int]:
    """The pending files in the folder `dfd` (`.index/`), and their sizes."""
    try:
        names = [n for n in os.listdir(dfd) if n.startswith(PREFIX) and n.endswith(SUFFIX)]
    except OSError:
        return {}
    out = {}
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):  # a link planted there is never followed
                out[name] = st.st_size
    return out


def offsets(conn: Any) -> dict[str, int]:
    """How far each pending file was merged, by name, as the index says."""
    rows = conn.execute(
        "SELECT key, value FROM meta WHERE key >= ? AND key < ?", (KEY, KEY[:-1] + ";")
    ).fetchall()
    out = {}
    for key, value in rows:
        with contextlib.suppress(ValueError):
            out[key[len(KEY) :]] = int(value)
    return out


def behind(dfd: int, conn: Any) -> bool:
    """Whether some pending file has bytes not merged yet (cheap: no write transaction).

    The sizes are taken before the offsets: an owner empties its file in a transaction
    that sets its offset back to 0, so an offset read later that equals a size means the
    bytes seen were merged."""
    found = sizes(dfd)
    if not found:
        return False
    done = offsets(conn)
    return any(done.get(name, 0) != size for name, size in found.items())


class Dead:
    """Files found without an owner, flocked by us: unlinked once their rows are committed."""

    def __init__(self) -> None:
        self.files: list[tuple[str, int]] = []

    def names(self) -> set[str]:
        return {name for name, _ in self.files}

    def unlink(self, dfd: int) -> None:
        """Unlink them from the folder `dfd` (still flocked: no owner can take one), close."""
        for name, _ in self.files:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
        self.close()

    def close(self) -> None:
        files, self.files = self.files, []
        for _, fd in files:
            os.close(fd)


def dead_files(dfd: int) -> Dead:
    """The pending files whose owner is gone, flocked now (for a rebuild to drop)."""
    dead = Dead()
    for name in sizes(dfd):
        fd = _open_file(dfd, name)
        if fd < 0:
            continue
        if _try_lock(fd):
            dead.files.append((name, fd))
        else:
            os.close(fd)
    return dead


def _open_file(dfd: int, name: str) -> int:
    """A pending file opened for reading, -1 if it is gone or is not a plain file."""
    try:
        return open_file(name, os.O_RDONLY, 0, dfd)
    except Exception:  # gone meanwhile, or a link: never followed
        return -1


GHOST_AGE = 60.0  # seconds after which a row without a journal is a leftover of a crash


def drop_ghosts(conn: Any, scanned: set[str], before: float, root: str) -> int:
    """Delete the rows, last written before `before` (epoch seconds), of runs that a
    rebuild's scan did not see (`scanned`) and that have no journal below `root` now; return
    how many.

    A rebuild merges a live process's pending file whole, rows of runs `gc` deleted since
    included; a row is written µs before its journal, so one without a journal that old is
    such a leftover (the rule `list` applies to the rows it reads), never a run being made.
    The age is the row's `updated` (for a pending row, when its line was written), not the
    run's `created`: a run's first event may carry any time (a test's, a fork's), and a row
    of a run being made that claimed an old one was dropped, its run never listed."""
    old = conn.execute("SELECT run_id FROM runs WHERE updated < ?", (before,)).fetchall()
    gone = [
        (run_id,)
        for (run_id,) in old
        if run_id not in scanned and not os.path.exists(os.path.join(root, run_id + JOURNAL))
    ]
    conn.executemany("DELETE FROM runs WHERE run_id = ?", gone)
    return len(gone)


def merge(conn: Any, dfd: int, own: str, skip: Iterable[str] = (), status: str = "open") -> Dead:
    """Insert every pending file's rows not merged yet, in the caller's write transaction,
    and record how far each file is merged. `dfd`: the `.index/` folder; files in `skip`
    are left alone; `own` (this index's) is never taken for dead. Returns the dead files
    merged to their end, flocked: the caller unlinks them after its commit (`Dead.unlink`),
    or closes them."""
    done = offsets(conn)
    found = sizes(dfd)
    skipped = set(skip)
    rows: list[Row] = []
    marks: list[tuple[str, str]] = []
    dead = Dead()
    try:
        for name in found:
            if name in skipped:
                continue
            fd = _open_file(dfd, name)
            if fd < 0:
                continue
            owned = name == own or not _try_lock(fd)
            size = os.fstat(fd).st_size
            start = done.get(name, 0)
            if start > size:  # emptied by its owner, whose commit did not happen
                start = 0
            data = _read(fd, start, size)
            if owned:
                data = data[: data.rfind(b"\n") + 1]  # a line being written: next time
                os.close(fd)
            else:
                dead.files.append((name, fd))
            rows.extend(rows_of(data, status))
            marks.append((KEY + name, str(start + len(data))))
        conn.executemany("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", marks)
        gone = [(KEY + name,) for name in done if name not in found]
        conn.executemany("DELETE FROM meta WHERE key = ?", gone)
    except BaseException:
        dead.close()
        raise
    return dead
