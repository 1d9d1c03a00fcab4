"""The file store's run index: which runs exist, newest first, and which are finished.

    .intemporal/.index/runs.sqlite3     one row per run: workflow, queue, parent, created,
                                        updated, and status: "open" (pending, running or
                                        waiting: the journal says which) or how it ended
    .intemporal/.index/pending-*.rows   rows of runs just created, one JSON object a line,
                                        not merged into runs.sqlite3 yet (`pending.py`)

So `list --limit`, `list --status`, `list --workflow`, `gc` and `recover()` read the rows
they need and the journals of the runs they return, not every journal of the store. The
journals stay the truth; the index only says where to look:

- **A row is written before its journal.** `create` appends the row (open) to its
  process's pending file (one `write`, no SQLite: `created`), then makes the journal: a
  crash in between leaves a row without a journal (skipped, removed by `gc`), never a run
  the index does not know. **Every reader merges the pending rows first** (`_fresh`:
  `INSERT OR IGNORE`, one transaction): any process finds a run once its `start()`
  returned; a process merges its own every `EVERY` rows and when it closes, then empties
  its file. A line not a row (torn, garbage) is skipped. `pending.py` says why no row is
  lost to concurrent writers, mergers, kills and rebuilds.
- **A finished status is written after the journal's last line.** A crash in between
  leaves the row open, and every reader of open rows reads their journal's last line
  (`settle`): an open row may be finished, a finished row is finished. A failed run that is
  resumed is made open again *before* its `run_resumed` line is appended.
- **Every run a listing returns is read from its journal** (`summary`): a row that says
  otherwise (an index edited by hand, a journal damaged since) never wins.
- **Rebuilt from the journals** when it is missing, damaged (not a database), of another
  format version, left half-built by a crash, or written before this machine last booted
  (rows are written without `fsync`: a power cut may lose or tear them; a SIGKILL loses
  nothing the kernel has). The first process to open it rebuilds it, holding the flock of
  `.index/lock`; the others wait for it. Pending files whose process is gone when it
  starts are dropped (the journals have their runs); the others are merged in its
  transaction, after the scan (a run created meanwhile is not missed), but for rows over
  a minute old whose journal is gone (`gc` deleted them since: `drop_ghosts`).

Several processes (engines, workers, the CLI) share it: SQLite's own locking orders their
writes (WAL mode: readers never wait for a writer). A journal written by hand, or by an
intemporal older than the index, is not seen until the index is rebuilt: delete `.index/`
(while no process creates runs: their pending rows would go with it), or `runs.sqlite3`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import UnsafeStore
from ..events import TERMINAL_EVENTS, Event
from . import walfile
from .pending import (
    EVERY,
    FOLDER,
    GHOST_AGE,
    LOCK,
    Dead,
    Writer,
    catch_up,
    dead_files,
    drop_ghosts,
    empty,
    line_of,
    merge,
    sweep,
    usable,
)

if TYPE_CHECKING:
    import sqlite3

DB = "runs.sqlite3"
FORMAT = "1"  # the schema's version: another one is rebuilt
OPEN = "open"  # a row's status while the run is not finished
DAMAGED = "unreadable"  # a row whose journal a reader found damaged: looked at again
UNSURE = (OPEN, DAMAGED)  # rows whose journal says what the run is now
BATCH = 256  # finished runs whose rows are written in one transaction
BUSY_TIMEOUT = 60.0  # seconds a writer waits for another (a rebuild of 100k runs: seconds)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    queue TEXT,
    parent TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_created ON runs (created, run_id);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created, run_id);
CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow, created, run_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# How long each finished journal was, and when it was last modified (ns), once its last
# event (stamped `updated`) was written: `gc` deletes a run whose journal is still so
# without reading it (`filegc.py`).
# A table of its own (made where missing), so an index an older version built stays usable.
_ENDS = """
CREATE TABLE IF NOT EXISTS ends (
    run_id TEXT PRIMARY KEY, updated REAL NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL
) WITHOUT ROWID
"""


def boot_id() -> str:
    """This boot of the machine (Linux), or "" where it cannot be told."""
    return walfile.boot_id() or ""


#: the columns of a row: run id, workflow, queue, parent, created, updated, status
Row = tuple[str, str, "str | None", "str | None", float, float, str]


def row_of(run_id: str, first: Event, last: Event | None = None) -> Row:
    """The index row of a run whose journal starts with `first` and ends with `last`."""
    status = OPEN
    updated = first.get("ts", 0.0)
    if last is not None:
        updated = last.get("ts", updated)
        ended = TERMINAL_EVENTS.get(last.get("type", ""))
        if ended is not None:
            status = ended.value
    return (
        run_id,
        str(first.get("workflow", "?")),
        first.get("queue"),
        first.get("parent"),
        float(first.get("ts", 0.0)),
        float(updated),
        status,
    )


class RunIndex:
    """The index of one file store's runs (see the module docstring).

    `scan()` yields, for a rebuild, `(run_id, first_event, last_event)` of every journal
    (None for events that cannot be read: such a run is indexed open, to be looked at).
    """

    def __init__(self, root: str, scan: Callable[[], Iterator[tuple[str, Any, Any]]]) -> None:
        self._root, self._scan = root, scan
        self._folder = os.path.join(root, FOLDER)
        self._path = os.path.join(self._folder, DB)
        self._conn: sqlite3.Connection | None = None
        self._inode = (-1, -1)
        self._mutex = threading.RLock()  # one connection, shared by this store's threads
        self._ends: list[Row] = []  # finished runs whose rows are not written yet
        self._sizes: list[tuple[str, float, int, int]] = []  # and their journals' (size, mtime)
        self._ends_lock = threading.Lock()
        self._dfd = -1  # the `.index/` folder, opened with the database
        # this index's pending file (None without flock: each row is inserted at once)
        self._writer = Writer(root) if usable() else None

    # -- opening --------------------------------------------------------------------------------
    def _db(self, wait: bool = True) -> sqlite3.Connection:
        """The open connection; opened (and rebuilt if need be) on first use, and again when
        the index file was replaced (deleted, rebuilt by another process)."""
        conn = self._conn
        if conn is not None:
            try:
                st = os.stat(self._path)
                if (st.st_dev, st.st_ino) == self._inode:
                    return conn
            except OSError:
                pass
            self._drop()  # (ends and pending rows kept: written into the new one)
        with sql_errors(self._path):
            return self._open(wait)

    def ready(self) -> bool:
        """Whether the index can be used now, its pending rows merged (else readers read
        the journals themselves)."""
        try:
            with self._mutex, sql_errors(self._path):
                self._fresh()
        except OSError:
            return False
        return True

    def _open(self, wait: bool = True) -> sqlite3.Connection:
        import sqlite3  # here: `import intemporal` does not load it

        from .safefs import open_folder

        fd = open_folder(self._root, FOLDER, create=True)  # 0700, never through a link
        try:
            lock = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=fd)
            try:
                _flock(lock, wait)  # one process checks and rebuilds at a time
                conn = self._existing(sqlite3) or self._rebuild(sqlite3, fd)
            finally:
                os.close(lock)  # drops the flock
            st = os.stat(self._path)
        except BaseException:
            os.close(fd)
            raise
        if self._dfd >= 0:
            os.close(self._dfd)
        self._conn, self._inode, self._dfd = conn, (st.st_dev, st.st_ino), fd
        return conn

    def _connect(self, sqlite3: Any) -> sqlite3.Connection:
        for name in (DB, DB + "-wal", DB + "-shm"):  # SQLite follows links: refuse them
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.lstat(os.path.join(self._folder, name)).st_mode):
                    raise UnsafeStore(
                        os.path.join(self._folder, name),
                        "is a symbolic link; the store never follows one",
                    )
        # Made private (0600) first: SQLite gives its -wal and -shm files the database's
        # permissions (no umask is touched: it is the whole process's).
        os.close(os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        conn = sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # No fsync: a SIGKILL loses nothing the kernel has, and after a power cut the
            # index is rebuilt (another boot id). The journals carry the durability.
            conn.execute("PRAGMA synchronous=OFF")
        except BaseException:
            conn.close()  # (a full disk, not a database): never left open
            raise
        return conn

    def _existing(self, sqlite3: Any) -> sqlite3.Connection | None:
        """The index as it is, if complete, of this format and written since this boot
        (its `ends` table made where missing); None (closed) if it must be rebuilt."""
        try:
            conn = self._connect(sqlite3)
        except sqlite3.DatabaseError:  # not a database any more: made again
            return None
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") == FORMAT and meta.get("boot") == boot_id():
                conn.execute(_ENDS)  # an index built by a version without it
                return conn
        except sqlite3.DatabaseError:  # no table yet (never built), or not a database
            pass
        conn.close()
        return None

    def _rebuild(self, sqlite3: Any, dfd: int) -> sqlite3.Connection:
        """Make the index again from the journals (the caller holds `.index/lock`), then
        merge the pending rows of live processes in the same transaction (`pending.py`)."""
        dead = dead_files(dfd) if self._writer is not None else Dead()
        died = Dead()  # files whose process ended during the scan: merged, then unlinked
        try:
            for name in (DB, DB + "-wal", DB + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._folder, name))
            conn = self._connect(sqlite3)
            try:
                conn.executescript(_SCHEMA)
                conn.execute(_ENDS)
                conn.execute("BEGIN IMMEDIATE")
                batch: list[Row] = []
                scanned: set[str] = set()
                for run_id, first, last in self._scan():
                    scanned.add(run_id)
                    if isinstance(first, dict):
                        last = last if isinstance(last, dict) else None
                        batch.append(row_of(run_id, first, last))
                    else:  # unreadable: indexed open, so `recover` and `list` look at it
                        batch.append((run_id, "?", None, None, 0.0, 0.0, OPEN))
                    if len(batch) >= 4096:
                        _insert(conn, batch)
                        batch = []
                _insert(conn, batch)
                if self._writer is not None:  # appended during the scan: not missed
                    self._writer.rehome()
                    died = merge(conn, dfd, self._writer.name, dead.names())
                    drop_ghosts(conn, scanned, time.time() - GHOST_AGE, self._root)
                conn.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("format", FORMAT), ("boot", boot_id()), ("built", str(time.time()))],
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                conn.close()
                raise
            died.unlink(dfd)
            dead.unlink(dfd)  # their runs are the journals' (a file from before a reboot)
        finally:
            died.close()
            dead.close()
        return conn

    def close(self) -> None:
        if self._ends:
            with contextlib.suppress(Exception):
                self.flush()
        writer = self._writer
        if writer is not None and writer.fd >= 0:
            self._compact(final=True)  # its rows merged, its file unlinked (best effort)
            writer.close()  # else left to the next reader: no owner any more
        elif writer is not None and self._conn is not None:
            with self._mutex, contextlib.suppress(Exception):
                sweep(self._conn, self._dfd, "", self._ours)
        self._drop()

    def _drop(self) -> None:
        """Close the connection and the folder (opened again when used again)."""
        with self._mutex:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            fd, self._dfd = self._dfd, -1
            if fd >= 0:
                os.close(fd)

    # -- pending rows (`pending.py`) --------------------------------------------------------
    def _fresh(self, wait: bool = True) -> sqlite3.Connection:
        """The open connection, the pending files' rows merged into it first (the caller
        holds the mutex): what every reader of rows reads through."""
        conn = self._db(wait)
        if self._writer is not None:
            catch_up(conn, self._dfd, self._writer, self._ours)
        return conn

    def _ours(self) -> bool:
        """Whether the index is still the database this connection opened."""
        try:
            st = os.stat(self._path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    def _compact(self, final: bool = False) -> None:
        """Merge, then empty (`final`: unlink) this index's pending file (best effort)."""
        writer = self._writer
        assert writer is not None
        writer.due = writer.rows + EVERY  # not again before that many rows
        with self._mutex, contextlib.suppress(Exception):
            conn = self._fresh(wait=final)  # a start() never waits for a rebuild
            empty(conn, self._dfd, writer, self._ours, final)
            sweep(conn, self._dfd, writer.name, self._ours)

    # -- writing --------------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        """Run one statement; a failure of SQLite (a full disk, say) is an `OSError`."""
        with self._mutex, sql_errors(self._path):
            self._fresh().execute(sql, args)

    def created(self, run_id: str, first: Event) -> None:
        """Before a run's journal is made: its row, open (kept if it exists already).

        One line appended to this index's pending file, no SQLite (`pending.py`): every
        `EVERY` rows the rows before are merged and the file emptied first. Raises
        `OSError` (a full disk: ENOSPC) and `UnsafeStore` (a link in `.index/`)."""
        row = row_of(run_id, first)
        writer = self._writer
        if writer is None:
            self._write("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            return
        if writer.rows >= writer.due:  # the rows before this one: their journals are made
            self._compact()
        elif writer.fd < 0 and self._conn is None:  # opened (built) now, in a new store
            with self._mutex, contextlib.suppress(OSError), sql_errors(self._path):
                self._db(wait=False)  # with no journal to read yet (never waiting for
                # a rebuild: the rows are appended meanwhile, and it merges them)
        writer.append(line_of(row))

    def ended(self, run_id: str, event: Event, journal: os.stat_result | None = None) -> None:
        """After a terminal `event` is in the run's journal (`journal`: its `fstat` now, if
        known): the row will say how it ended.

        Written in batches (by `flush`, before this process reads the index, and every
        `BATCH` ends): meanwhile the row is open, and other processes read its journal, as
        they do after a crash. A batch never overwrites a row reopened since (`settled`).
        """
        status = TERMINAL_EVENTS[event["type"]].value
        row = (run_id, "", None, None, 0.0, float(event.get("ts", 0.0)), status)
        with self._ends_lock:
            self._ends.append(row)
            if journal is not None:
                self._sizes.append((run_id, row[5], journal.st_size, journal.st_mtime_ns))
            full = len(self._ends) >= BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the ends `ended` keeps for a batch (best effort)."""
        with self._ends_lock:
            rows, self._ends = self._ends, []
            sizes, self._sizes = self._sizes, []
        self.settled(rows)
        # A fact about the journal whatever the row says now: `gc` compares both times.
        self._many("INSERT OR REPLACE INTO ends VALUES (?, ?, ?, ?)", sizes)

    def reopened(self, run_id: str) -> None:
        """Before a finished run's journal takes a restart line (`run_resumed`): open again.

        `updated` becomes now: a reader's repair from an older look at the journal (the
        run still failed) is then refused (`settled`).
        """
        self._write(
            "UPDATE runs SET status = ?, updated = ? WHERE run_id = ?", (OPEN, time.time(), run_id)
        )

    def deleting(self, on: bool) -> None:
        """A bulk `gc` starts deleting (True) or has deleted and removed every row it left
        without a journal (False). Left set by a `gc` killed in between: rows may name
        deleted runs, so `count` asks the journals (`deleting_since_crash`)."""
        if on:
            self._write("INSERT OR REPLACE INTO meta VALUES ('gc', ?)", (str(time.time()),))
        else:
            self._write("DELETE FROM meta WHERE key = 'gc'", ())

    def deleting_since_crash(self) -> bool:
        """Whether a bulk `gc` is deleting now, or was killed while it did (see `deleting`)."""
        with self._mutex, sql_errors(self._path):
            row = self._db().execute("SELECT 1 FROM meta WHERE key = 'gc'").fetchone()
        return row is not None

    def damaged(self, run_id: str) -> None:
        """A reader found the run's journal damaged: the row is looked at again by `open_ids`
        (a worker's start-up reports it) until a reader finds it readable."""
        with contextlib.suppress(OSError):
            self._write("UPDATE runs SET status = ? WHERE run_id = ?", (DAMAGED, run_id))

    def removed(self, run_ids: list[str]) -> None:
        """After runs' journals are deleted: their rows go too (best effort: a row without a
        journal is skipped by readers, and removed by the next `gc`)."""
        r = sorted(run_ids)  # key order, 500 an `IN`: ~1/10 the CPU of one by one at random
        rows = [(*r[i : i + 500], *r[-1:] * (i + 500 - len(r))) for i in range(0, len(r), 500)]
        for table in ("runs", "ends"):  # (the last row padded with an id it has)
            self._many(f"DELETE FROM {table} WHERE run_id IN ({', '.join('?' * 500)})", rows)

    def settled(self, rows: list[Row]) -> None:
        """Rows as a reader found their journals (a repair): open or damaged ones as they
        are; a finished status only over an open or damaged row not reopened since."""
        unsure = [(r[6], r[5], r[0]) for r in rows if r[6] in UNSURE]
        self._many("UPDATE runs SET status = ?, updated = ? WHERE run_id = ?", unsure)
        ended = [(r[6], r[5], r[0], r[5]) for r in rows if r[6] not in UNSURE]
        self._many(
            f"UPDATE runs SET status = ?, updated = ? WHERE run_id = ? "
            f"AND status IN ('{OPEN}', '{DAMAGED}') AND updated <= ?",
            ended,
        )

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement for each of `rows`, in one transaction; best effort."""
        if not rows:
            return
        with self._mutex, contextlib.suppress(Exception):
            db = self._fresh()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # -- reading --------------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple[Any, ...], chunk: int = 256) -> Iterator[Row]:
        """Rows of a query, fetched `chunk` at a time (the mutex is not held between chunks)."""
        if self._ends:
            self.flush()  # what this process knows, first
        with self._mutex, sql_errors(self._path):
            cur = self._fresh().execute(sql, args)
            first = cur.fetchmany(chunk)
        yield from first
        while len(first) == chunk:
            with self._mutex, sql_errors(self._path):
                first = cur.fetchmany(chunk)
            yield from first

    def newest(
        self,
        statuses: tuple[str, ...] | None = None,
        workflow: str | None = None,
        queue: str | None = None,
        parent: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Row]:
        """Rows newest first (by created, then run id), filtered on what the index keeps."""
        where, args = _where(statuses, workflow, queue, parent, since, until)
        sql = "SELECT * FROM runs" + where + " ORDER BY created DESC, run_id DESC"
        return self._rows(sql, args)

    def count(
        self,
        workflow: str | None = None,
        queue: str | None = None,
        parent: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """How many rows pass the filters (of `newest`, without a status)."""
        where, args = _where(None, workflow, queue, parent, since, until)
        if self._ends:
            self.flush()
        with self._mutex, sql_errors(self._path):
            return int(
                self._fresh().execute("SELECT COUNT(*) FROM runs" + where, args).fetchone()[0]
            )

    def open_ids(self) -> list[tuple[str, str]]:
        """The ids and statuses of the rows not finished (or damaged), oldest first."""
        return [
            (r[0], r[6])
            for r in self._rows(
                f"SELECT * FROM runs WHERE status IN ('{OPEN}', '{DAMAGED}') "
                "ORDER BY created, run_id",
                (),
            )
        ]

    def ended_before(self, cutoff: float) -> list[Row]:
        """Finished rows whose last event is older than `cutoff` (epoch seconds)."""
        return list(
            self._rows(f"SELECT * FROM runs WHERE status != '{OPEN}' AND updated <= ?", (cutoff,))
        )

    def end_stats(self) -> dict[str, tuple[float, int, int]]:
        """Run id -> (the ts of its journal's last event, the journal's size and mtime in ns
        then), for the finished runs whose end this index was told of with those."""
        if self._ends:
            self.flush()
        with self._mutex, sql_errors(self._path):
            rows = self._fresh().execute("SELECT * FROM ends").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def nested(self) -> list[Row]:
        """The rows whose id has a "/" (child runs, and runs a user named so)."""
        return list(self._rows("SELECT * FROM runs WHERE instr(run_id, '/') > 0", ()))

    def ids(self, run_ids: list[str]) -> set[str]:
        """Which of `run_ids` have a row."""
        out: set[str] = set()
        for i in range(0, len(run_ids), 500):
            part = run_ids[i : i + 500]
            sql = f"SELECT run_id FROM runs WHERE run_id IN ({', '.join('?' * len(part))})"
            with self._mutex, sql_errors(self._path):
                out.update(r[0] for r in self._fresh().execute(sql, part))
        return out


def _where(
    statuses: tuple[str, ...] | None,
    workflow: str | None,
    queue: str | None,
    parent: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of a query on runs (or ""), and its arguments."""
    where: list[str] = []
    args: list[Any] = []
    if statuses is not None:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    for column, value in (("workflow", workflow), ("queue", queue), ("parent", parent)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since is not None:
        where.append("created >= ?")
        args.append(since)
    if until is not None:
        where.append("created < ?")
        args.append(until)
    return (" WHERE " + " AND ".join(where) if where else ""), tuple(args)


@contextlib.contextmanager
def sql_errors(path: str) -> Iterator[None]:
    """SQLite's errors as `OSError`s (a full disk as ENOSPC): what the store's callers map."""
    import sqlite3

    try:
        yield
    except sqlite3.Error as exc:
        code = errno.ENOSPC if "full" in str(exc) else errno.EIO
        raise OSError(code, f"the run index {path}: {exc}") from exc


def _insert(conn: Any, rows: list[Row]) -> None:
    conn.executemany("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _flock(fd: int, wait: bool = True) -> None:
    """Take `fd`'s flock exclusive; BlockingIOError if another has it and not `wait`."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): SQLite's own locking only
        return
    fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
