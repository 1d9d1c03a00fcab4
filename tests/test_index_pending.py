"""The run index's pending rows: a new run's row is one line in its process's pending file
(`.index/pending-*.rows`), not an SQLite statement, and no reader ever misses it.

Every reader merges the pending files first, in any process: a run is listed as soon as its
`start()` returned, also when its process was SIGKILLed right after; concurrent creators and
mergers lose no row; a torn or garbage line is skipped; a rebuild racing creations misses
none, and drops what dead processes left from before it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import importable

from intemporal import Engine, FileStore
from intemporal.store import index as index_module
from intemporal.store import pending
from intemporal.store.index import FOLDER, RunIndex

FLOWS = """
import intemporal

@intemporal.workflow
def job(i):
    return i * 2
"""


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[Any]:
    """The workflow above as an importable module `pend_flows` (child processes import it)."""
    yield from importable(tmp_path, "pend_flows", FLOWS)


def _first(i: float = 0.0, workflow: str = "w") -> dict[str, Any]:
    return {"type": "run_started", "workflow": workflow, "ts": i}


def _pending_files(store: Path) -> list[Path]:
    return sorted((store / FOLDER).glob(pending.PREFIX + "*" + pending.SUFFIX))


def _sqlite_rows(store: Path) -> set[str]:
    """The rows in runs.sqlite3 itself, read without merging anything."""
    with sqlite3.connect(store / FOLDER / "runs.sqlite3") as db:
        return {r[0] for r in db.execute("SELECT run_id FROM runs")}


def _listed_elsewhere(store: Path) -> list[str]:
    """The run ids another process lists (`Store.iter_runs`), and its count."""
    code = (
        "import sys; from intemporal import FileStore\n"
        "s = FileStore(sys.argv[1])\n"
        "print(s.count_runs()); print(' '.join(sorted(i.run_id for i in s.iter_runs())))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    count, ids = out.stdout.splitlines()
    listed = ids.split()
    assert int(count) == len(listed)
    return listed


class _Counting:
    """A connection that counts the statements run through it."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.statements = conn, 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.conn, name)
        if name.startswith("execute"):

            def counted(*args: Any) -> Any:
                self.statements += 1
                return real(*args)

            return counted
        return real


def test_created_runs_no_sqlite_statement_and_readers_merge_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store whose index is open, its connection counting statements
    store = FileStore(tmp_path / "store")
    index = store.index
    assert index.ready()
    counting = _Counting(index._conn)
    monkeypatch.setattr(index, "_conn", counting)

    def reopen() -> None:
        raise AssertionError("the index was opened again")

    monkeypatch.setattr(index, "_open", reopen)  # and no connection may be opened either
    # When runs are created (fewer than a merge's worth)
    for i in range(pending.EVERY - 1):
        assert store.create(f"r{i:03d}", _first(float(i)))
    # Then no SQLite statement was run: each row is one line of the pending file
    assert counting.statements == 0
    [own] = _pending_files(tmp_path / "store")
    assert len(own.read_bytes().splitlines()) == pending.EVERY - 1
    assert _sqlite_rows(tmp_path / "store") == set()
    # And a reader merges them first: every run counted and listed
    assert store.count_runs() == pending.EVERY - 1
    assert counting.statements > 0
    assert len(_sqlite_rows(tmp_path / "store")) == pending.EVERY - 1
    # And the creation past a merge's worth merges the rows and empties the file first
    for i in range(pending.EVERY - 1, 2 * pending.EVERY):
        assert store.create(f"r{i:03d}", _first(float(i)))
    assert own.read_bytes().startswith(b'{"run_id":"r256"')  # the rows before: merged
    assert len(_sqlite_rows(tmp_path / "store")) >= pending.EVERY
    monkeypatch.undo()
    store.close()  # the rest merged, and the file unlinked
    assert _pending_files(tmp_path / "store") == []
    assert len(_sqlite_rows(tmp_path / "store")) == 2 * pending.EVERY


def test_a_run_created_is_listed_by_another_process_at_once(tmp_path: Path, flows: Any) -> None:
    # Given an engine that started runs and stays open (their rows pending in its file)
    with Engine(tmp_path / "store", worker=False) as engine:
        for i in range(3):
            engine.start(flows.job, i, run_id=f"a{i}")
        assert _pending_files(tmp_path / "store")
        # Then another process lists and counts them at once
        assert _listed_elsewhere(tmp_path / "store") == ["a0", "a1", "a2"]
        # And a run started after that is listed too (the file merged since, written again)
        engine.start(flows.job, 3, run_id="a3")
        assert _listed_elsewhere(tmp_path / "store") == ["a0", "a1", "a2", "a3"]


CREATOR = """
import sys, threading
sys.path.insert(0, {folder!r})
import intemporal, pend_flows
engine = intemporal.Engine({store!r}, worker=False)
for i in range({n}):
    engine.start(pend_flows.job, i, run_id=f"k{{i}}")
print("started", flush=True)
threading.Event().wait()
"""


def test_runs_of_a_process_killed_right_after_start_are_listed_and_recovered(
    tmp_path: Path, flows: Any
) -> None:
    # Given a process that started 5 runs, then was SIGKILLed (its pending file never merged)
    store = tmp_path / "store"
    script = CREATOR.format(folder=str(tmp_path), store=str(store), n=5)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "started\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert len(_pending_files(store)) == 1
    # Then another process lists every one of them
    assert _listed_elsewhere(store) == [f"k{i}" for i in range(5)]
    # And recover() finds and finishes them all
    with Engine(store, threads=2) as engine:
        handles = engine.recover()
        assert sorted(h.run_id for h in handles) == [f"k{i}" for i in range(5)]
        assert sorted(h.result(timeout=30) for h in handles) == [0, 2, 4, 6, 8]
    # And the dead process's file was merged, then removed
    assert _pending_files(store) == []


MANY = """
import os, sys
from intemporal import FileStore
store = FileStore({store!r})
for i in range({n}):
    store.create(f"{who}{{i}}", {{"type": "run_started", "workflow": "w", "ts": float(i)}}, sync=False)
if {close}:
    store.close()
os._exit(0)  # without closing, its last rows stay in a file with no owner
"""


def test_concurrent_creators_and_a_merging_reader_lose_no_row(tmp_path: Path) -> None:
    # Given two processes creating 1,500 runs each (merging and emptying their files every
    # few hundred), one closing its store at the end and one not
    store = tmp_path / "store"
    FileStore(store).close()
    n = 1500
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MANY.format(store=str(store), n=n, who=who, close=close)],
            stderr=subprocess.PIPE,
        )
        for who, close in (("x", True), ("y", False))
    ]
    # While a reader in this process merges again and again, and twice deletes the database
    # once runs are there (the next read rebuilds it, racing the creations)
    reader = FileStore(store)
    seen, deletions = 0, [500, 1800]
    try:
        while any(p.poll() is None for p in procs):
            count = reader.count_runs()
            assert count is not None and count >= seen  # never a row lost meanwhile
            seen = count
            if deletions and count >= deletions[0]:
                deletions.pop(0)
                reader.close()
                for name in ("runs.sqlite3", "runs.sqlite3-wal", "runs.sqlite3-shm"):
                    (store / FOLDER / name).unlink(missing_ok=True)
    finally:
        for p in procs:
            p.wait(timeout=120)
    assert [p.returncode for p in procs] == [0, 0], [p.stderr.read() for p in procs if p.stderr]
    assert deletions != [500, 1800], "no rebuild raced the creations"
    # Then every run is counted, listed and has its row
    assert reader.count_runs() == 2 * n
    every = {f"{who}{i}" for who in "xy" for i in range(n)}
    assert {i.run_id for i in reader.iter_runs()} == every
    assert _sqlite_rows(store) == every
    reader.close()
    assert _pending_files(store) == []  # the one left by the process that did not close: gone


def test_a_torn_or_garbage_pending_line_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pending file left by a dead process over a minute ago: a row, garbage, a line
    # of another shape, a row whose journal was never made, and a torn last line (a power cut)
    root = tmp_path / "store"
    store = FileStore(root)
    store.create("kept", _first(1.0))
    store.close()
    monkeypatch.setattr(pending, "_now", lambda: time.time() - 2 * pending.GHOST_AGE)
    good = pending.line_of(("made", "w", "q", None, 2.0, 2.0, "open"))
    ghost = pending.line_of(("ghost", "w", None, None, 3.0, 3.0, "open"))
    (root / "made.jsonl").write_bytes(b'{"type":"run_started","workflow":"w","ts":2.0}\n')
    lines = [good, b"\x00\xffgarbage\n", b'["a", "list"]\n', b'{"run_id": 5}\n', ghost]
    torn = b'{"run_id":"torn","workf'
    (root / FOLDER / f"{pending.PREFIX}1-dead{pending.SUFFIX}").write_bytes(b"".join(lines) + torn)
    # When another store lists the runs, Then it does not fail: the rows are merged, the
    # rest skipped, and the journals decide what is listed
    reader = FileStore(root)
    assert sorted(i.run_id for i in reader.iter_runs()) == ["kept", "made"]
    # (the ghost's row, made long ago and without a journal, removed as a crash's leftover)
    assert _sqlite_rows(root) == {"kept", "made"}
    assert reader.summary("made").queue is None  # the journal's word, not the row's
    assert _pending_files(root) == []
    reader.close()


def test_a_rebuild_racing_creations_misses_none_and_drops_dead_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store of 20 runs whose index must be rebuilt (another boot), and a pending
    # file a process left before that boot, torn, naming a run that never got a journal
    root = tmp_path / "store"
    made = FileStore(root)
    for i in range(20):
        made.create(f"old{i:02d}", _first(float(i)))
    made.close()
    before_boot = root / FOLDER / f"{pending.PREFIX}7-beforeboot{pending.SUFFIX}"
    before_boot.write_bytes(pending.line_of(("lost", "w", None, None, 1.0, 1.0, "open")) + b"{")
    monkeypatch.setattr(index_module, "boot_id", lambda: "another-boot")
    # When runs are created by another live store while the rebuild scans the journals
    creator = FileStore(root)
    rebuilding = RunIndex(str(root), lambda: _racing(made._scan(), creator))
    # Then the rebuilt index has them all: the ones its scan passed before their journals
    assert rebuilding.ready()
    assert rebuilding.count() == 20 + 10
    rows = {r[0] for r in rebuilding.newest()}
    assert rows == {f"old{i:02d}" for i in range(20)} | {f"new{i}" for i in range(10)}
    # And the file from before the boot was dropped unread; the live one merged
    assert not before_boot.exists() and "lost" not in rows
    assert [p.name for p in _pending_files(root)] == [creator.index._writer.name]  # type: ignore[union-attr]
    rebuilding.close()
    creator.close()


def test_a_rebuild_does_not_bring_back_runs_deleted_since_their_rows_were_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a live store whose pending file still names 3 runs (made over a minute ago),
    # deleted since (their journals gone, their rows removed, as `gc` does), and 1 run kept
    root = tmp_path / "store"
    live = FileStore(root)
    monkeypatch.setattr(pending, "_now", lambda: time.time() - 2 * pending.GHOST_AGE)
    for i in range(4):
        live.create(f"r{i}", _first(float(i)))
    monkeypatch.undo()
    assert live.count_runs() == 4
    for i in range(3):
        (root / f"r{i}.jsonl").unlink()
    live.index.removed([f"r{i}" for i in range(3)])
    # When the index is deleted (README: allowed) and another process's reader rebuilds it
    (root / FOLDER / "runs.sqlite3").unlink()
    other = FileStore(root)
    # Then it counts the one run that is left, not the deleted ones again
    assert other.count_runs() == 1
    assert [r.run_id for r in other.iter_runs()] == ["r3"]
    other.close()
    live.close()


@pytest.mark.parametrize("rebuilt", [True, False], ids=["by-a-rebuild", "by-a-listing"])
def test_a_row_whose_journal_is_being_made_is_kept_whatever_time_its_run_claims(
    tmp_path: Path, rebuilt: bool
) -> None:
    # Given a live store that has appended the row of a run whose first event says it
    # started long ago (a test's times, a tool's), its journal not made yet (the µs between)
    root = tmp_path / "store"
    live = FileStore(root)
    live.create("before", _first(1.0))
    live.index.created("late", _first(2.0))
    # When another process's reader takes that row in meanwhile: rebuilding the index
    # (README: runs.sqlite3 may be deleted any time), or listing the runs
    if rebuilt:
        for name in ("runs.sqlite3", "runs.sqlite3-wal", "runs.sqlite3-shm"):
            (root / FOLDER / name).unlink(missing_ok=True)
    other = FileStore(root)
    assert [r.run_id for r in other.iter_runs()] == ["before"]
    # and the journal is made then
    (root / "late.jsonl").write_text(json.dumps(_first(2.0)) + "\n")
    # Then the run is listed and counted: its row was not taken for a deleted run's
    assert sorted(r.run_id for r in other.iter_runs()) == ["before", "late"]
    assert other.count_runs() == 2
    other.close()
    live.close()


def _racing(scan: Iterator[tuple[str, Any, Any]], creator: FileStore) -> Iterator[Any]:
    """The rebuild's scan, creating 10 runs (row, then journal) half-way through it."""
    for n, item in enumerate(scan):
        if n == 10:
            for i in range(10):
                assert creator.create(f"new{i}", _first(100.0 + i))
        yield item


def test_an_index_folder_deleted_under_a_creating_store_loses_no_row(tmp_path: Path) -> None:
    # Given a store that created runs and read its index, then `.index/` deleted under it
    root = tmp_path / "store"
    store = FileStore(root)
    for i in range(3):
        store.create(f"a{i}", _first(float(i)))
    assert store.count_runs() == 3
    for p in (root / FOLDER).iterdir():
        p.unlink()
    (root / FOLDER).rmdir()
    # When it creates a run, another process rebuilds the index, and it creates another
    # (its row in the file deleted under it, its journal made after that rebuild's scan)
    store.create("a3", _first(3.0))
    assert _listed_elsewhere(root) == [f"a{i}" for i in range(4)]
    store.create("a4", _first(4.0))
    # Then once it reads, its rows are in a file of the new folder: merged, for everyone
    assert store.count_runs() == 5
    assert _listed_elsewhere(root) == [f"a{i}" for i in range(5)]
    store.create("a5", _first(5.0))
    assert len(_listed_elsewhere(root)) == 6
    store.close()


def test_a_forked_child_writes_its_own_pending_file(tmp_path: Path) -> None:
    # Given a store with a pending file open, and a child forked from its process
    root = tmp_path / "store"
    store = FileStore(root)
    store.create("parent", _first(1.0))
    pid = os.fork()
    if pid == 0:  # the child: creates a run, exits without closing anything
        try:
            FileStore(root).create("child", _first(2.0))
            store.create("child2", _first(3.0))
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    # Then both processes' runs are listed, and the parent's file is its own
    assert sorted(i.run_id for i in store.iter_runs()) == ["child", "child2", "parent"]
    store.create("parent2", _first(4.0))
    assert store.count_runs() == 4
    store.close()
    assert _pending_files(root) == []
