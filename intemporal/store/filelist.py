"""How the file store finds runs: through its index (`index.py`), reading only the journals
of the runs it returns, and the last line of the open ones.

    store.iter_runs(status="failed", workflow="checkout")   # newest first, lazily
    store.list_runs(limit=10)                               # ~10 journals read
    store.iter_runs(unfinished=True)                        # the open rows' journals
    store._unfinished()                                     # the open rows' last lines
    store.ended_before(cutoff)                              # what `gc` may look at

`FileListing` is a part of `FileStore`: it needs its `read`, `summary`, `run_ids` and a
descriptor per journal (`_open`).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import JournalCorrupted, RunNotFound, UnsafeStore
from ..events import TERMINAL_EVENTS, Event, RunStatus
from .base import Store
from .fileio import check_journal, fcntl, parse_lines, try_lock
from .index import DAMAGED, OPEN, UNSURE, Row, RunIndex, row_of
from .pending import GHOST_AGE
from .runinfo import RunInfo
from .safefs import JOURNAL

TAIL = 4096  # bytes read from a journal's end to find its last event
HEAD = 65536  # bytes read from a journal's start to find its first event
PATIENCE = 0.05  # seconds a delete waits for a lock held by a mere `_is_claimed` probe
_DAMAGED = object()


class FileListing(Store):
    """The file store's listings over its index (see the module docstring)."""

    _root: str
    _index_obj: RunIndex | None = None
    _forgotten: list[str]

    def _open(self, rel: str, flags: int, mkdirs: bool = False) -> int:
        raise NotImplementedError  # FileStore's

    def _base(self, run_id: str) -> str:
        raise NotImplementedError  # FileStore's

    def _opener(self, rel: str, mkdirs: bool = False) -> Callable[[int], int] | None:
        raise NotImplementedError  # FileStore's

    @property
    def index(self) -> RunIndex:
        """The store's run index, opened (or built from the journals) on first use."""
        if self._index_obj is None:
            self._index_obj = RunIndex(self._root, self._scan)
            self._forgotten = []
        return self._index_obj

    def _scan(self) -> Iterator[tuple[str, Any, Any]]:
        """Every journal's (run id, first event, last event), for a rebuild of the index."""
        for run_id in self.run_ids():
            try:
                first, last = self._ends(run_id)
            except RunNotFound:
                continue
            yield run_id, first, last

    def _ends(self, run_id: str) -> tuple[Any, Any]:
        """A journal's first and last events (`_DAMAGED` where they cannot be read)."""
        try:
            with open(self._open(run_id + JOURNAL, os.O_RDONLY), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = os.pread(f.fileno(), min(size, HEAD), 0)
                tail = os.pread(f.fileno(), min(size, TAIL), max(0, size - TAIL))
        except UnsafeStore:
            return _DAMAGED, _DAMAGED
        except OSError:
            raise RunNotFound(run_id) from None
        end = head.find(b"\n")
        try:
            first = json.loads(head[:end]) if end > 0 else _DAMAGED
        except ValueError:
            first = _DAMAGED
        return first, self._last_of(run_id, tail, size)

    def _last(self, run_id: str) -> Any:
        """The journal's last complete event; `_DAMAGED` if it cannot be read; `RunNotFound`."""
        try:
            with open(self._open(run_id + JOURNAL, os.O_RDONLY), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                tail = os.pread(f.fileno(), min(size, TAIL), max(0, size - TAIL))
        except UnsafeStore:  # not followed, not skipped in silence: `recover` reports it
            return _DAMAGED
        except OSError:  # deleted meanwhile
            raise RunNotFound(run_id) from None
        return self._last_of(run_id, tail, size)

    def _last_of(self, run_id: str, tail: bytes, size: int) -> Any:
        end = tail.rfind(b"\n")
        start = tail.rfind(b"\n", 0, end) + 1 if end > 0 else 0
        try:
            if start == 0 and size > TAIL:  # a last line longer than the tail: read it all
                return self.read(run_id)[-1]
            last = json.loads(tail[start:end]) if end > 0 else None
        except RunNotFound:
            raise
        except Exception:  # damaged: `recover` reports it, `list` shows it unreadable
            return _DAMAGED
        return last if isinstance(last, dict) else _DAMAGED

    def _unfinished(self) -> Iterator[str]:
        # The index's open rows, oldest first, each journal's last line read: a store of
        # 100,000 finished runs and none open reads no journal at all (`recover()`).
        if not self.index.ready():  # no index to be had (a full disk): every journal
            yield from Store._unfinished(self)
            return
        self._forget()
        ended: list[Row] = []
        for run_id, row_status in self.index.open_ids():
            if row_status == DAMAGED:  # found damaged: `recover` and a worker report it
                yield run_id
                continue
            try:
                last = self._last(run_id)
            except RunNotFound:  # a leftover row, or deleted meanwhile
                continue
            if isinstance(last, dict) and last.get("type") in TERMINAL_EVENTS:
                ended.append(row_of(run_id, {"ts": 0.0}, last))  # only status and updated count
                continue
            yield run_id  # open, or damaged: `recover` reports it
        self.index.settled(ended)

    def iter_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        queue: str | None = None,
        parent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        unfinished: bool = False,
    ) -> Iterator[RunInfo]:
        """Run summaries newest first, read lazily: each from its journal, as it is asked for.

        `since`/`until` bound `created_at` (epoch seconds, `until` excluded); `unfinished`:
        only the open rows' runs. An unreadable run is yielded with no status filter;
        `status="unreadable"` reads every journal (a finished run's row is never looked at
        again otherwise).
        """
        want = RunStatus(status) if status is not None else None
        if want is RunStatus.UNREADABLE or not self.index.ready():
            # every journal: a finished run damaged since is found only by reading it (and
            # without an index to be had, a full disk, there is nothing else to read)
            yield from self._every(want, workflow, queue, parent, since, until, unfinished)
            return
        self._forget()
        # `since`/`until` are checked on each journal only: one whose times were edited by
        # hand is still found (a listing bounded by them reads more journals, not fewer)
        statuses = UNSURE if unfinished else statuses_for(want)
        rows = self.index.newest(statuses, workflow, queue, parent)
        settled: list[Row] = []
        gone: list[str] = []
        for row in rows:
            info = self.summary_or_unreadable(row[0])
            if info is None:
                if row[5] < time.time() - GHOST_AGE:  # its row written that long ago
                    gone.append(row[0])  # made before a crash, its journal never written
                continue
            if info.status is RunStatus.UNREADABLE:
                if row[6] != DAMAGED:
                    settled.append((*row[:5], row[5], DAMAGED))
            elif row[6] in UNSURE or not info.status.finished:  # the journal says otherwise
                now = info.status.value if info.status.finished else OPEN
                if now != row[6]:
                    settled.append((*row[:5], info.updated_at, now))
            if (  # the journal's word, not the row's: a journal edited by hand wins
                info.matches(want, workflow)
                and (parent is None or info.parent == parent)
                and (since is None or info.created_at >= since)
                and (until is None or info.created_at < until)
                and not (unfinished and info.status.finished)
            ):
                yield info
        self.index.settled(settled)
        if gone:
            self.index.removed(gone)

    def _every(
        self,
        want: RunStatus | None,
        workflow: str | None,
        queue: str | None,
        parent: str | None,
        since: float | None,
        until: float | None,
        unfinished: bool,
    ) -> Iterator[RunInfo]:
        """`iter_runs` over every journal, without the index."""
        for info in Store.list_runs(self, status=want, workflow=workflow):
            if self._kept(info, queue, parent, since, until, unfinished):
                yield info

    def count_runs(self, **filters: Any) -> int | None:
        """The index's count, when no status nor time bound is asked for (those need the
        journals)."""
        if filters.pop("unfinished", False):
            return None  # the journals decide it
        if any(filters.get(k) is not None for k in ("status", "since", "until")):
            return None  # the journals decide these
        if not self.index.ready() or self.index.deleting_since_crash():
            return None  # (rows a killed `gc` left without journals: not counted)
        filters = {k: v for k, v in filters.items() if k not in ("status", "since", "until")}
        return self.index.count(**filters)

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        """Run summaries, newest first: the index says which, each journal says what."""
        runs = self.iter_runs(status=status, workflow=workflow)
        if limit is None or limit < 0:
            return list(runs)
        return list(itertools.islice(runs, limit))

    def ended_before(self, cutoff: float) -> tuple[dict[str, RunInfo], set[str]]:
        """What `gc` looks at: every tree whose top-level run ended before `cutoff`, as rows.

        The open rows are settled first (their journals' last lines); the damaged ones are
        returned apart, as ids. Each tree's runs come from the index, not from journals:
        `delete_trees` claims and reads each one before deleting it (a damaged one is left
        with its tree, and named; a row without a journal is skipped).
        """
        if not self.index.ready():  # no index to be had (a full disk): every journal
            return Store.ended_before(self, cutoff)
        self._forget()
        damaged = {rid for rid in self._unfinished() if self._last_damaged(rid)}
        candidates = self.index.ended_before(cutoff)
        parents = [r[3] for r in candidates if r[3] is not None]
        present = self.index.ids(parents) if parents else set()
        below: dict[str, list[Row]] = {}  # id -> the rows named "<id>/...", in one query
        for nested in self.index.nested():
            parts = nested[0].split("/")
            for n in range(1, len(parts)):
                below.setdefault("/".join(parts[:n]), []).append(nested)
        infos: dict[str, RunInfo] = {}
        ghosts: list[str] = []
        for row in candidates:
            parent = row[3]
            if parent is not None and parent in present and self.exists(parent):
                continue  # in its parent's tree: taken with it, or not at all
            # Its children, theirs...: by id prefix, kept when their parent is in the tree
            # (a run merely named "<id>/x" by a user belongs to its own parent, if any).
            kids = below.get(row[0])
            if not kids:  # most runs (`delete_if_ended` reads it whole, cutting nothing)
                infos[row[0]] = _info(row)
                continue
            tree = [row, *sorted(kids, key=lambda r: len(r[0]))]
            for run in tree:
                if run is not row and run[3] not in infos:
                    continue
                try:  # its last line: a torn or damaged one is never claimed (nor cut)
                    last = self._last(run[0])
                except RunNotFound:  # a row left by a crash, or a run deleted by hand
                    ghosts.append(run[0])  # finished: not one being created (rows are open then)
                    continue
                if last is _DAMAGED:
                    damaged.add(run[0])
                    self.index.damaged(run[0])  # a worker's start-up reports it too
                    continue
                info = infos[run[0]] = _info(run)  # `delete_trees` reads it whole again
                info.updated_at = last.get("ts", info.updated_at)
        if ghosts:
            self.index.removed(ghosts)
        return infos, damaged

    def _last_damaged(self, run_id: str) -> bool:
        try:
            return self._last(run_id) is _DAMAGED
        except RunNotFound:
            return False

    def delete_if_ended(self, run_id: str, updated_at: float) -> bool:
        # One descriptor: locked (as `claim` does, never cutting a torn tail), read whole
        # and checked, then the files unlinked: `gc` over 100,000 runs spends its time here.
        if fcntl is None:
            return super().delete_if_ended(run_id, updated_at)
        path = self._base(run_id) + JOURNAL
        try:
            fd = try_lock(path, PATIENCE, flags=os.O_RDONLY, opener=self._opener(run_id + JOURNAL))
        except (FileNotFoundError, NotADirectoryError):
            raise RunNotFound(run_id) from None
        except UnsafeStore:  # a link: never followed; a worker's start-up reports it
            self.index.damaged(run_id)
            raise
        if fd is None:
            return False
        try:
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            last = self._events_of(run_id, data, path)[-1]
            if last["type"] not in TERMINAL_EVENTS or last.get("ts", 0.0) != updated_at:
                return False
            self.delete(run_id)  # still locked: nobody claimed it meanwhile
            return True
        finally:
            os.close(fd)

    def _events_of(self, run_id: str, data: bytes, path: str) -> list[Event]:
        """A journal's events, checked; `JournalCorrupted` (the row marked damaged: a
        worker's start-up reports it, with no full scan) if they cannot be read."""
        try:
            events, _ = parse_lines(data, path)
            if not events:
                raise JournalCorrupted(path, 1, "empty journal")
            check_journal(events, path)
        except JournalCorrupted:
            self.index.damaged(run_id)
            raise
        return events

    def forget(self, run_id: str) -> None:
        """After a run's files are deleted: its row goes too (in batches: a row without a
        journal is skipped by every reader meanwhile, and a crash leaves it for `gc`)."""
        if self._index_obj is None:  # made if it was not: its rows must learn of it
            self._index_obj = RunIndex(self._root, self._scan)
            self._forgotten = []
        self._forgotten.append(run_id)
        if len(self._forgotten) >= 512:
            self._forget()

    def _forget(self) -> None:
        if self._index_obj is not None and self._forgotten:
            gone, self._forgotten = self._forgotten, []
            self._index_obj.removed(gone)

    def close_index(self) -> None:
        if self._index_obj is not None:
            try:
                self._forget()
            finally:
                self._index_obj.close()


# A row's status -> the run's (a dict: `RunStatus(value)` costs ~4 µs, 0.4 s over 100k rows)
_STATUSES = {**{s.value: s for s in RunStatus}, **dict.fromkeys(UNSURE, RunStatus.RUNNING)}


def _info(row: Row) -> RunInfo:
    """A run as its index row has it (status "open" shown as running: not finished)."""
    status = _STATUSES.get(row[6]) or RunStatus(row[6])
    return RunInfo(row[0], row[1], status, row[4], row[5], parent=row[3], queue=row[2])


def statuses_for(status: RunStatus | None) -> tuple[str, ...] | None:
    """The row statuses that may hold runs of `status` now (an open row may have ended)."""
    if status is None:
        return None
    if status.finished:
        return (status.value, *UNSURE)
    return UNSURE
