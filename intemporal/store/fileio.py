"""The file store's low-level operations: journal lines, durable writes, and flock.

dumps(event) -> one journal line (compact JSON and a newline)
result_line(seq, name, ...) -> the line of an activity's result, spelled from its parts
parse_lines(data, path) -> the events, and the length of the complete part
write(fd, data, sync) -> one write; with `sync`, on disk when it returns
try_lock(path, patience) / unlock(handle) / is_locked(path) -> exclusive flock
FileLease(run_id, lock, fd) -> an owned run's journal: appends cut back on failure
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import JournalCorrupted, LeaseLost
from ..events import ACTIVITY_COMPLETED, RUN_STARTED, SIGNAL, result_event
from .base import Event, Lease
from .safefs import open_file
from .wallogged import Logged

try:
    import fcntl
except ImportError:  # no flock (Windows): filelock's lock instead
    fcntl = None  # type: ignore[assignment]

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
_default = json.JSONEncoder().default
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_utf8_string = json.encoder.encode_basestring  # the C one where there is one


_RESULT_HEAD = '{"type":' + _encode(ACTIVITY_COMPLETED) + ',"seq":'
_float_text = float.__repr__  # what the encoder writes for a finite float
_LOW, _DIGITS_MAX = 1_000_000, (1 << 33) * 1_000_000  # 1970-2242: a stamp as its digits


def _json(value: Any) -> str:
    if _c_make_encoder is None:
        return _encode(value)
    # The arguments of JSONEncoder.iterencode's one-shot path, with the default options;
    # a fresh markers dict per call, as there, for the circular-reference check.
    return "".join(
        _c_make_encoder({}, _default, _utf8_string, None, ":", ",", False, False, True)(value, 0)
    )


# One encoder for every result: without markers (their circular-reference check) since a
# result is exact JSON, nested at most `codec.MAX_JSON_DEPTH` deep, or made of it.
_result_chunks: Callable[[Any, int], Any] = (
    (lambda value, _: [_encode(value)])
    if _c_make_encoder is None
    else _c_make_encoder(None, _default, _utf8_string, None, ":", ",", False, False, True)
)


def dumps(event: Event) -> bytes:
    """One journal line: compact JSON in UTF-8 and a newline (the bytes of
    `json.dumps(event, separators=(",", ":"), ensure_ascii=False)`, built with the C encoder
    directly: ~1 µs less per append).

    Text is written as UTF-8, not as `\\u` escapes (3x smaller for non-Latin text); a
    string UTF-8 cannot hold (a lone surrogate) makes that line ASCII with escapes, as
    journals were written before. Readers take both.
    """
    try:
        return (_json(event) + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped, as `\\udc80`
        return (_encode_ascii(event) + "\n").encode()


def result_line(
    seq: int, name: str, attempts: int, started: int, result: Any, ts: int, owner: str
) -> bytes:
    """The line `dumps` writes for `result_event(seq, ...)` (an activity's result, the hot
    path of every step), spelled from its parts: only the result goes through the encoder,
    and each time is written from the digits of its microseconds (`_stamp_text`). `seq`,
    `attempts`, `started` and `ts` are ints, as a run context hands them (`Clock.stamp_us`)."""
    begun, done = f"{started}", f"{ts}"  # `_stamp_text` written out: two calls less
    if _LOW <= started < _DIGITS_MAX and begun[-1] != "0":
        begun = f"{begun[:-6]}.{begun[-6:]}"
    else:
        begun = _stamp_text(started)
    if _LOW <= ts < _DIGITS_MAX and done[-1] != "0":
        done = f"{done[:-6]}.{done[-6:]}"
    else:
        done = _stamp_text(ts)
    try:
        return (
            f'{_RESULT_HEAD}{seq},"name":{_utf8_string(name)},"attempts":{attempts},'
            f'"started":{begun},"result":{"".join(_result_chunks(result, 0))},'
            f'"ts":{done},"owner":{_utf8_string(owner)}}}\n'
        ).encode()
    except (TypeError, UnicodeEncodeError):  # a name that is no text, a lone surrogate
        return dumps(result_event(seq, name, attempts, started, result, ts, owner))


def _stamp_text(us: int) -> str:
    """What the encoder writes for the float `us / 1_000_000` (its `repr`), from the digits of
    `us` instead of `repr`'s trip through `dtoa` (~4,500 instructions less): below 2**33 s
    a float's neighbours are under 1 µs apart, so no shorter text than the six decimals
    of `us` (trailing zeros dropped) reads back as that float."""
    if _LOW <= us < _DIGITS_MAX:
        digits = f"{us}"
        frac = digits[-6:]
        if frac[-1] == "0":
            frac = frac.rstrip("0") or "0"
        return f"{digits[:-6]}.{frac}"
    return _float_text(us / 1_000_000)  # int division: correctly rounded


def parse_lines(data: bytes, path: str, start_line: int = 1) -> tuple[list[Event], int]:
    """Parse JSON lines; return the events and the byte length of the complete part.

    The last line without a newline is a torn write and is left out; an unreadable
    complete line raises `JournalCorrupted`.
    """
    end = data.rfind(b"\n") + 1
    if end and b"\r" not in data:
        # Fast path: the complete lines as one JSON array, parsed in one C call. Taken only
        # when it is exactly equivalent: one event object per line (a blank line, or a line
        # holding two values, fails a check and falls back to the line-by-line path below,
        # which names the bad line).
        try:
            parsed = json.loads(b"[" + data[: end - 1].replace(b"\n", b",") + b"]")
        except (ValueError, RecursionError):  # the line-by-line path names the bad line
            parsed = None
        if (
            parsed is not None
            and len(parsed) == data.count(b"\n", 0, end)
            and all(type(ev) is dict and "type" in ev for ev in parsed)
        ):
            return parsed, end
    events: list[Event] = []
    for n, line in enumerate(data[:end].splitlines(), start_line):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError as exc:  # bad JSON, or bytes that are not UTF-8
            raise JournalCorrupted(path, n, str(exc)) from None
        except RecursionError:
            raise JournalCorrupted(path, n, "a value nested too deep to read") from None
        if not isinstance(ev, dict) or "type" not in ev:
            raise JournalCorrupted(path, n, "not an event object")
        events.append(ev)
    return events, end


_NUMBER = (int, float)
#: the fields every reader of a journal relies on, and the types they must have
_FIRST_FIELDS: dict[str, tuple[type, ...]] = {
    "workflow": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "parent": (str, type(None)),
    "queue": (str, type(None)),
    "ref": (dict, type(None)),
    "protocols": (dict,),
}
_TEXT_OR_NULL: tuple[type, ...] = (str, type(None))
#: where the code lives (`loader.workflow_ref`): the names a loader reads as text
_REF_FIELDS: dict[str, tuple[type, ...]] = dict.fromkeys(
    ("module", "qualname", "script", "path", "dill"), _TEXT_OR_NULL
)
_EVENT_FIELDS: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "ts": _NUMBER,
    "seq": (int,),
    "attempt": (int,),
    "name": (str,),
    "owner": (str, type(None)),
    "reason": (str, type(None)),
    "until": (*_NUMBER, type(None)),
    "error": (dict, type(None)),
    "attempts": (int,),
    "started": _NUMBER,
    "retry_in": _NUMBER,
    "fire_at": _NUMBER,
    "seconds": _NUMBER,
    "deadline": (*_NUMBER, type(None)),
    "timeout": (*_NUMBER, type(None)),
    "index": (int,),
    "child_id": (str,),
    "compensations": (list,),
}


def _wrong_field(event: Event, fields: dict[str, tuple[type, ...]]) -> str | None:
    """Why a field of `event` named in `fields` has none of its types (a bool is no number)."""
    for key, value in event.items():  # an event has a few fields: fewer lookups this way
        types = fields.get(key)
        if types is not None and (not isinstance(value, types) or value is True or value is False):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            return f"field {key!r} is {type(value).__name__}, not {want}"
    err = event.get("error") if "error" in fields else None
    if isinstance(err, dict) and not (
        isinstance(err.get("type"), str)
        and isinstance(err.get("message"), str)
        and isinstance(err.get("notes", []), list)
        and all(isinstance(n, str) for n in err.get("notes", []))
    ):
        return "field 'error' lacks a text 'type' and 'message'"
    return None


def check_journal(events: list[Event], path: str) -> None:
    """Raise `JournalCorrupted` unless the fields every reader relies on have their types.

    The first event must be `run_started` with a text `workflow`, a list of `args`, an
    object of `kwargs`; in every event `type` is text, `ts` a number, `seq` an integer...
    (line numbers count events: a blank line in between shifts them).
    """
    first = events[0]
    if first.get("type") != RUN_STARTED:
        raise JournalCorrupted(path, 1, "the first event is not run_started")
    problem = _wrong_field(first, _FIRST_FIELDS) or _wrong_field(
        first.get("ref") or {}, _REF_FIELDS
    )
    if problem is not None:
        raise JournalCorrupted(path, 1, problem)
    for n, event in enumerate(events, 1):
        problem = _wrong_field(event, _EVENT_FIELDS)
        if problem is not None:
            raise JournalCorrupted(path, n, problem)


_MESSAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "name": (str,),
    "signal_id": (str, type(None)),
    "ts": _NUMBER,
}


def check_messages(messages: list[Event], path: str) -> None:
    """Raise `JournalCorrupted` for an inbox message a run cannot take (a signal without a
    text `name`, say): any process may write an inbox. Lines count from the cursor read at."""
    for n, message in enumerate(messages, 1):
        problem = _wrong_field(message, _MESSAGE_FIELDS)
        if problem is None and message["type"] == SIGNAL and "name" not in message:
            problem = "a signal without a 'name'"
        if problem is not None:
            raise JournalCorrupted(path, n, problem)


_RWF_DSYNC = getattr(os, "RWF_DSYNC", 0)
_dsync_ok = bool(_RWF_DSYNC) and hasattr(os, "pwritev") and sys.platform.startswith("linux")


def _no_dsync() -> None:
    global _dsync_ok
    _dsync_ok = False


def write(fd: int, data: bytes, sync: bool) -> None:
    """Write `data` in one call; with `sync`, it is on disk (fdatasync) when this returns.

    Where Linux has it, a synced write is one `pwritev(RWF_DSYNC)` instead of write +
    fdatasync: one system call, one GIL hand-back. RWF_DSYNC is O_DSYNC for this write;
    offset 0 writes a new file from its start, and with O_APPEND Linux appends anyway.

    Raises `OSError` when the write fails, and `OSError(ENOSPC)` when it writes only a
    prefix of `data` (a disk that just filled): the caller cuts that prefix away.
    """
    if sync and _dsync_ok:
        try:
            written = os.pwritev(fd, [data], 0, _RWF_DSYNC)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            _no_dsync()  # an old kernel or a filesystem without it: the two calls
        else:
            if written != len(data):
                raise _short(written, data)
            return
    written = os.write(fd, data)
    if written != len(data):
        raise _short(written, data)
    if sync:
        os.fdatasync(fd)


def _short(written: int, data: bytes) -> OSError:
    """The error of a write that wrote only `written` bytes of `data`."""
    return OSError(
        errno.ENOSPC, f"short write: {written} of {len(data)} bytes written (is the disk full?)"
    )


def try_lock(
    path: str,
    patience: float = 0.0,
    probe: bool = False,
    flags: int = 0,
    opener: Callable[[int], int] | None = None,
) -> Any:
    """Take the exclusive lock on `path`, waiting up to `patience` s; its handle, or None.

    `probe`: only to test it (`is_locked`): opened read-only, never created. `flags`:
    how to open the file instead (a journal locked and appended through one descriptor).
    `opener(flags) -> fd` opens it instead of `path` (a walk that follows no link); by
    default `path` is opened without following a link as its last component.
    """
    if fcntl is None:
        import filelock  # only where there is no fcntl: `import intemporal` stays light

        lock = filelock.FileLock(path, mode=0o600, thread_local=False, preserve_lock_file=True)
        try:
            lock.acquire(timeout=patience, poll_interval=0.001)
        except filelock.Timeout:
            return None
        return lock
    flags = flags or (os.O_RDONLY if probe else os.O_RDWR | os.O_CREAT)
    # Not inherited by child processes (PEP 446); a link is never followed (UnsafeStore).
    fd = opener(flags) if opener is not None else open_file(path, flags)
    deadline = None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                now = time.monotonic()
                deadline = now + patience if deadline is None else deadline
                if now >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.001)
    except BaseException:
        os.close(fd)
        raise


def unlock(handle: Any) -> None:
    if isinstance(handle, int):
        os.close(handle)  # closing the descriptor drops its flock
    else:
        handle.release()


def is_locked(path: str, opener: Callable[[int], int] | None = None) -> bool:
    """Whether some process (this one included) holds the lock on `path` now."""
    try:
        if fcntl is None and not os.path.exists(path):
            return False
        handle = try_lock(path, probe=True, opener=opener)
    except FileNotFoundError:  # never claimed: nobody holds it
        return False
    if handle is None:
        return True
    unlock(handle)
    return False


def complete_length(fd: int, size: int, chunk: int = 1 << 16) -> int:
    """The byte length of a journal up to and including its last newline."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        nl = os.pread(fd, end - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        end = start
    return 0


class FileLease(Lease):
    """An owned run of a `FileStore`: the held lock and an O_APPEND descriptor.

    `unsynced_dir`: a descriptor of the folder of a journal created by `create_claimed`
    and not yet on disk, owned by the lease (the store may close its own meanwhile); the
    first synced append (or the release) syncs the whole journal and that folder, so the
    new name survives a power cut too, then closes it.
    """

    def __init__(
        self,
        run_id: str,
        lock: Any,
        fd: int,
        unsynced_dir: int = -1,
        log: Logged | None = None,
        size: int = -1,
    ) -> None:
        self.run_id, self._lock, self._fd = run_id, lock, fd  # lock None: the fd holds it
        self._unsynced_dir = unsynced_dir
        self._first_sync = threading.Lock()  # submitted activities append concurrently
        self._writing = threading.Lock()  # one write at a time: each knows where it began
        self._size = size  # the journal's length (its lines so far); -1: read at first append
        self._failed: OSError | None = None  # an append failed: nothing more is written
        self._log = log  # with a write-ahead log: lines written unsynced, then logged
        self._synced = -1  # without one: the length `sync()` last made durable
        # Without one: every line before the next is synced. RWF_DSYNC syncs the range it
        # writes only, so a synced line after unsynced ones (an activity's outcome) is
        # written, then the whole file fdatasynced.
        self._clean = True

    def append(self, event: Event, sync: bool) -> None:
        """Append one line; on any failure (a short write too) cut the journal back to what
        it was before, refuse every later append, and raise `OSError`."""
        self._append_line(dumps(event), sync)

    def append_result(
        self,
        seq: int,
        name: str,
        attempts: int,
        started: int,
        result: Any,
        ts: int,
        owner: str,
        sync: bool,
    ) -> None:
        """`Lease.append_result`: the line spelled from its parts (`result_line`)."""
        data = result_line(seq, name, attempts, started, result, ts, owner)
        if self._log is not None and self._fd >= 0:  # every step's path: one call less
            self._append_logged(data, sync)
        else:
            self._append_line(data, sync)

    def _append_line(self, data: bytes, sync: bool) -> None:
        if self._fd < 0:
            raise LeaseLost(f"run {self.run_id!r} was released: this lease writes nothing more")
        if self._log is not None:
            self._append_logged(data, sync)
            return
        # Alone (the usual case): one synced write under the lock. Behind another append
        # (submitted activities): write under the lock, sync after it, so syncs overlap.
        alone = self._writing.acquire(False)  # positional: half the cost of blocking=False
        if not alone:
            self._writing.acquire()
        try:
            if self._failed is not None:
                self._check()
            if self._size < 0:
                self._size = os.fstat(self._fd).st_size
            sync_here = sync and alone and self._unsynced_dir < 0 and self._clean
            try:
                write(self._fd, data, sync_here)  # one write: O_APPEND keeps the line whole
            except OSError as exc:
                self._cut(exc)
                raise
            self._size += len(data)
            self._clean = sync  # a sync (here or below) covers every line written so far
        finally:
            self._writing.release()
        if sync and not sync_here:
            self._sync_file()

    def _sync_file(self) -> None:
        """fdatasync the journal (and its folder while its name is new); a failure is kept."""
        try:
            if self._unsynced_dir >= 0:
                self._sync_new()
            else:
                os.fdatasync(self._fd)
        except OSError as exc:  # the line is whole; whether it reached the disk is unknown
            self._failed = exc
            raise

    def _cut(self, exc: OSError) -> None:
        """After a failed or short write: the journal back to its length before it."""
        self._failed = exc
        with contextlib.suppress(OSError):  # read-only now: a torn tail is cut by the next claim
            os.ftruncate(self._fd, self._size)

    def _sync_new(self) -> None:
        with self._first_sync:
            os.fdatasync(self._fd)  # every line so far, the first one included
            if self._unsynced_dir >= 0:  # cleared only once the name is on disk too
                os.fsync(self._unsynced_dir)
                os.close(self._unsynced_dir)
                self._unsynced_dir = -1

    def stat(self) -> os.stat_result | None:
        """The journal's `os.fstat` now (None if it cannot be told)."""
        try:
            return os.fstat(self._fd)
        except OSError:
            return None

    def linked(self) -> bool:
        """Whether the journal still has a name (False once deleted; True once released:
        `append` then says so)."""
        return self._fd < 0 or os.fstat(self._fd).st_nlink > 0

    def _check(self) -> None:
        if self._failed is not None:
            raise OSError(
                errno.EIO,
                f"the journal of run {self.run_id!r} takes no more lines after a failed "
                f"append ({self._failed})",
            )

    def _append_logged(self, data: bytes, sync: bool) -> None:
        """With a write-ahead log: the line written at once, unsynced; with `sync`, every
        line not yet durable logged in one record, the log's group commit waited for
        outside the lock (so appends of submitted activities share a sync)."""
        log = self._log
        assert log is not None
        writing = self._writing
        try:
            writing.acquire()  # not `with`: see `sync`
            try:
                if self._failed is not None:
                    self._check()
                if self._size < 0:
                    self._size = os.fstat(self._fd).st_size
                start = self._size
                try:  # `write(fd, data, False)` written out: every step's path
                    written = os.write(self._fd, data)
                    if written != len(data):
                        raise _short(written, data)
                except OSError as exc:
                    self._cut(exc)
                    raise
                self._size = start + written
                if log.covered >= 0:  # else (flush mode, a claimed run) nothing to keep
                    log.add(data)
                if not sync:
                    return
                log.sync_on_release = False
                item = log.take(self._fd, self._size)
            finally:
                writing.release()
            if item is not None:
                self._wait(item)
        except BaseException:  # Ctrl-C between queuing a record and its wait: see there
            log.wal.interrupted()
            raise

    def _wait(self, item: Any) -> None:
        if item is None:
            return
        assert self._log is not None
        try:
            self._log.wal.wait(item)
        except OSError as exc:  # the line is whole; whether it reached the disk is unknown
            self._failed = exc
            raise

    def sync(self) -> None:
        """Make every line appended so far durable (one sync, shared with other threads')."""
        if self._fd < 0:
            return
        log = self._log
        if log is None:  # no log: the file itself (and its new name) synced here
            with self._writing:
                self._check()
                end, self._clean = self._size, True
            if end < 0 or end != self._synced:  # (a join's futures sync once, not each)
                self._sync_file()
                self._synced = end
            return
        writing = self._writing
        try:
            writing.acquire()  # not `with`: its special-method lookups cost every step
            try:  # ~1,000 instructions (callgrind)
                if self._failed is not None:
                    self._check()
                log.sync_on_release = False
                end = self._size if self._size >= 0 else log.covered + log.size
                item = log.take(self._fd, end) if end >= 0 else None
            finally:
                writing.release()
            if item is not None:  # `_wait(item)` written out: every durable step's path
                try:
                    log.wal.wait(item)
                except OSError as exc:
                    self._failed = exc
                    raise
        except BaseException:  # Ctrl-C between queuing a record and its wait: the record
            log.wal.interrupted()  # made this thread the log's leader, so it leads now
            raise

    def release(self) -> None:
        if self._fd >= 0:
            try:
                if self._unsynced_dir >= 0:  # released before any synced append
                    self._sync_new()
                elif self._log is not None and self._log.sync_on_release:
                    self.sync()
            finally:
                os.close(self._fd)  # drops a flock taken through it
                if self._unsynced_dir >= 0:  # the sync failed: the error is raised
                    os.close(self._unsynced_dir)
                    self._unsynced_dir = -1
            self._fd = -1
            if self._lock is not None:
                unlock(self._lock)
