"""The file store's run index: kept consistent with the journals, never trusted over them.

The journals are the truth. An index that is missing, damaged, stale or from another boot
is rebuilt from them (or read past: a row never decides what a run is); several processes
write it at once; a SIGKILL between a journal's line and the row leaves nothing wrong.
And listing, `recover()` and `gc` read the journals they return, not the whole store.
"""

from __future__ import annotations

import contextlib
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
from helpers import cli_on, importable
from process_helpers import wait_until

from intemporal import Engine, FileStore, RunStatus
from intemporal.store import index as index_module
from intemporal.store.index import FOLDER, RunIndex

FLOWS = """
import os, sys, time
import intemporal

@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step(i):
    if i % 4 == 3:
        raise ValueError(f"run {i} fails")
    return i

@intemporal.activity
def slow(i):
    time.sleep(0.01)
    return i

@intemporal.workflow
def job(i):
    return step(i)

@intemporal.workflow
def long_job(n):
    return sum(slow(i) for i in range(n))

@intemporal.workflow
def waits():
    return intemporal.wait_for_signal("go")
"""


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[Any]:
    """The workflows above as an importable module `idx_flows` (child processes import it)."""
    yield from importable(tmp_path, "idx_flows", FLOWS)


def _fill(store: Path, flows: Any, n: int = 8) -> dict[str, str]:
    """`n` runs: completed and failed ones, and one waiting; their statuses by id."""
    with Engine(store, threads=4, durability="flush") as engine:
        for i in range(n):
            with contextlib.suppress(ValueError):
                engine.run(flows.job, i, run_id=f"r{i}")
        engine.start(flows.waits, run_id="w")
        wait_until(lambda: engine.get_run("w").status is RunStatus.WAITING, timeout=20)
    return {i.run_id: i.status.value for i in FileStore(store).list_runs()}


def _rows(store: Path) -> dict[str, str]:
    """The index's rows: runs.sqlite3's, once a reader merged the pending files into it."""
    reader = FileStore(store)
    assert reader.index.ready()
    reader.close()
    with sqlite3.connect(store / FOLDER / "runs.sqlite3") as db:
        return dict(db.execute("SELECT run_id, status FROM runs").fetchall())


def _journal_statuses(store: Path) -> dict[str, str]:
    """What the journals say, read without the index at all."""
    plain = FileStore(store)
    out = {}
    for rid in plain.run_ids():
        info = FileStore.summary(plain, rid)
        out[rid] = info.status.value
    return out


def _consistent(store: Path) -> None:
    """Every journal has a row; a finished row says what its journal says (an open row may
    be a run that ended just before a kill: readers look at its journal)."""
    rows, truth = _rows(store), _journal_statuses(store)
    assert set(truth) <= set(rows), set(truth) - set(rows)
    for rid, status in truth.items():
        assert rows[rid] in ("open", status), (rid, rows[rid], status)


def test_a_missing_or_damaged_index_is_rebuilt_from_the_journals(
    tmp_path: Path, flows: Any
) -> None:
    store = tmp_path / "store"
    expected = _fill(store, flows)
    assert expected["r3"] == "failed" and expected["w"] == "waiting"
    for damage in ("delete", "garbage", "half-built"):
        # Given an index deleted, overwritten with garbage, or left without its metadata
        db = store / FOLDER / "runs.sqlite3"
        if damage == "delete":
            for p in (store / FOLDER).iterdir():
                p.unlink()
        elif damage == "garbage":
            for p in (store / FOLDER).glob("runs.sqlite3*"):
                p.unlink()
            db.write_bytes(b"this is not a database" * 100)
        else:
            with sqlite3.connect(db) as conn:
                conn.execute("DELETE FROM meta")
                conn.execute("DELETE FROM runs")
        # Then every listing, filter and `recover` is what the journals say
        fresh = FileStore(store)
        assert {i.run_id: i.status.value for i in fresh.list_runs()} == expected, damage
        failed = [i.run_id for i in fresh.list_runs(status="failed")]
        assert sorted(failed) == sorted(r for r, s in expected.items() if s == "failed")
        assert list(fresh._unfinished()) == ["w"]
        assert [i.run_id for i in fresh.list_runs(workflow="waits")] == ["w"]
        _consistent(store)


def test_stale_rows_are_read_past_and_repaired(tmp_path: Path, flows: Any) -> None:
    store = tmp_path / "store"
    expected = _fill(store, flows)
    # Given rows left open as by a crash between a journal's last line and the row, and a
    # row edited to say "completed" for a run whose journal says it failed
    with sqlite3.connect(store / FOLDER / "runs.sqlite3") as db:
        db.execute("UPDATE runs SET status = 'open' WHERE run_id IN ('r0', 'r1', 'r7')")
        db.execute("UPDATE runs SET status = 'completed' WHERE run_id = 'r3'")
    fresh = FileStore(store)
    # Then finished runs are found by status though their rows are open, and repaired
    completed = {i.run_id for i in fresh.list_runs(status="completed")}
    assert {"r0", "r1"} <= completed and "r3" not in completed
    assert "r7" in {i.run_id for i in fresh.list_runs(status="failed")}
    assert _rows(store)["r0"] == "completed" and _rows(store)["r7"] == "failed"
    # And what a listing returns is what the journal says, whatever the row says
    assert {i.run_id: i.status.value for i in fresh.list_runs()} == expected
    assert list(fresh._unfinished()) == ["w"]


def test_an_index_from_another_boot_is_rebuilt(
    tmp_path: Path, flows: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    expected = _fill(store, flows)
    with sqlite3.connect(store / FOLDER / "runs.sqlite3") as db:  # torn by a power cut
        db.execute("UPDATE runs SET status = 'completed' WHERE run_id = 'r3'")
        db.execute("DELETE FROM runs WHERE run_id = 'r5'")
    # When the machine has booted since
    monkeypatch.setattr(index_module, "boot_id", lambda: "another-boot")
    fresh = FileStore(store)
    # Then the index is made again from the journals: nothing lost, nothing wrong
    assert {i.run_id for i in fresh.list_runs(status="failed")} == {
        r for r, s in expected.items() if s == "failed"
    }
    assert _rows(store)["r3"] == "failed" and "r5" in _rows(store)


def test_listing_recover_and_gc_read_only_the_journals_they_return(
    tmp_path: Path, flows: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store of 60 finished runs (15 failed) and one waiting
    store = tmp_path / "store"
    _fill(store, flows, 60)
    fresh = FileStore(store)
    fresh.list_runs(limit=1)  # the index opened
    opened: list[str] = []
    real = FileStore._open

    def counting(self: FileStore, rel: str, flags: int, mkdirs: bool = False) -> int:
        opened.append(rel)
        return real(self, rel, flags, mkdirs)

    monkeypatch.setattr(FileStore, "_open", counting)
    # When the newest 5 are listed, Then about 5 journals are read
    assert len(fresh.list_runs(limit=5)) == 5
    assert len(set(opened)) <= 5, opened
    # When the newest 3 failed runs are listed, Then only failed and open runs are read
    opened.clear()
    assert [i.status for i in fresh.list_runs(status="failed", limit=3)] == ["failed"] * 3
    assert {rel.split(".")[0] for rel in opened} <= {"r59", "r55", "r51", "w"}, opened
    # When the unfinished runs are looked for (`recover`), Then only the open one is read
    opened.clear()
    assert list(fresh._unfinished()) == ["w"]
    assert set(opened) <= {"w.jsonl"}
    # When nothing ended before the cutoff, Then gc reads no finished journal
    opened.clear()
    infos, damaged = fresh.ended_before(0.0)
    assert infos == {} and damaged == set() and set(opened) <= {"w.jsonl"}


WRITER = """
import sys
sys.path.insert(0, {folder!r})
import intemporal, idx_flows
with intemporal.Engine({store!r}, threads=4, durability="flush") as engine:
    for i in range({n}):
        try:
            engine.run(idx_flows.job, i, run_id=f"p{who}-{{i}}")
        except ValueError:
            pass
"""


def test_several_processes_keep_one_index_consistent(tmp_path: Path, flows: Any) -> None:
    # Given three processes starting runs on one store at once, and the CLI listing it
    store = tmp_path / "store"
    store.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER.format(folder=str(tmp_path), store=str(store), n=25, who=who),
            ],
            stderr=subprocess.PIPE,
        )
        for who in range(3)
    ]
    cli = cli_on(store)
    try:
        while any(p.poll() is None for p in procs):
            listed = cli("list", "--status", "failed", "--json")
            assert listed.exit_code == 0, listed.output
            time.sleep(0.05)
    finally:
        for p in procs:
            p.wait(timeout=120)
    assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs if p.stderr]
    # Then every run is in the index, as its journal says
    rows = _rows(store)
    assert len(rows) == 75
    assert rows == _journal_statuses(store)
    assert sum(s == "failed" for s in rows.values()) == 3 * 6
    assert len(FileStore(store).list_runs(status="failed")) == 18


KILLED = """
import sys
sys.path.insert(0, {folder!r})
import intemporal, idx_flows
with intemporal.Engine({store!r}, threads=8, durability="flush") as engine:
    handles = [engine.start(idx_flows.long_job, 8, run_id=f"k{{i}}") for i in range(40)]
    for h in handles:
        h.result()
"""


def test_a_sigkill_leaves_the_index_consistent_and_recover_finds_every_orphan(
    tmp_path: Path, flows: Any
) -> None:
    # Given a process executing 40 runs, SIGKILLed while some have ended and some not
    store = tmp_path / "store"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED.format(folder=str(tmp_path), store=str(store))]
    )
    try:

        def some_ended() -> bool:
            ended = [p for p in store.glob("k*.jsonl") if b'"run_completed"' in p.read_bytes()]
            return len(ended) >= 3

        wait_until(some_ended, timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # Then every journal has a row, and no row says a run ended that did not
    _consistent(store)
    truth = _journal_statuses(store)
    assert len(truth) >= 10 and "completed" in truth.values()
    left = sorted(r for r, s in truth.items() if s != "completed")
    assert left, "the kill came too late to leave any run unfinished"
    # And recover() (which asks the index) resumes exactly the unfinished runs, to the end
    with Engine(store, threads=8, durability="flush") as engine:
        handles = engine.recover()
        assert sorted(h.run_id for h in handles) == left
        assert [h.result(timeout=60) for h in handles] == [28] * len(left)
    rows = _rows(store)  # (a row made just before the kill, its journal never written, stays)
    assert {rows[r] for r in truth} == {"completed"}


def test_gc_deletes_runs_and_their_rows(tmp_path: Path, flows: Any) -> None:
    store = tmp_path / "store"
    _fill(store, flows, 6)
    cli = cli_on(store)
    result = cli("gc", "--older-than", "0s")
    assert result.exit_code == 0, result.output
    assert "removed 6 run(s)" in result.stdout
    assert set(_rows(store)) == {"w"}  # compacted: the waiting run is all that is left
    assert [i.run_id for i in FileStore(store).list_runs()] == ["w"]


def test_list_all_streams_in_pieces_under_one_header(tmp_path: Path, flows: Any) -> None:
    store = tmp_path / "store"
    with Engine(store, threads=4, durability="flush") as engine:
        for i in range(130):
            engine.start(flows.waits, run_id=f"s{i:03d}")  # recorded at once, then waiting
    cli = cli_on(store)
    out = cli("list", "--all").stdout
    assert out.count("run id") == 1
    assert "s000" in out and "s129" in out
    assert len(cli("list").stdout.split("\n")) < 40
    assert "1-20 of 130 runs" in cli("list").stdout


def test_the_index_is_private_and_no_link_is_followed(tmp_path: Path, flows: Any) -> None:
    store = tmp_path / "store"
    _fill(store, flows, 2)
    assert (os.stat(store / FOLDER).st_mode & 0o777) == 0o700
    assert (os.stat(store / FOLDER / "runs.sqlite3").st_mode & 0o777) == 0o600
    # A link planted where the database should be is refused, never followed
    for p in (store / FOLDER).iterdir():
        p.unlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    (store / FOLDER / "runs.sqlite3").symlink_to(outside)
    index = RunIndex(str(store), lambda: iter(()))
    assert not index.ready()
    assert outside.read_bytes() == b"precious"
    # And the store still lists its runs, from the journals
    assert len(FileStore(store).list_runs()) == 3


def test_a_rebuild_finds_child_runs_in_their_folders(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made = FileStore(store)
    for i in range(5):
        made.create(f"x{i}", {"type": "run_started", "workflow": "w", "ts": float(i)})
        made.create(f"x{i}/1", {"type": "run_started", "workflow": "c", "ts": float(i)})
    for p in (store / FOLDER).iterdir():
        p.unlink()
    assert len(FileStore(store).list_runs()) == 10
    assert sorted(_rows(store)) == sorted(
        [f"x{i}" for i in range(5)] + [f"x{i}/1" for i in range(5)]
    )


def test_a_worker_starts_without_reading_every_journal(
    tmp_path: Path, flows: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store of finished runs whose index is built
    store = tmp_path / "store"
    with Engine(store, threads=2, durability="flush") as engine:
        for i in range(6):
            with contextlib.suppress(ValueError):
                engine.run(flows.job, i, run_id=f"r{i}")
    assert len(FileStore(store).list_runs()) == 6

    # When a worker starts (its report of damaged runs, then `recover`), walking the store's
    # folders being forbidden
    def walk(self: FileStore) -> Iterator[str]:
        raise AssertionError("the worker walked every journal")

    monkeypatch.setattr(FileStore, "run_ids", walk)
    result = cli_on(store)("worker", "--once", "--interval", "0.01")
    # Then it starts, finds nothing to do, and stops
    assert result.exit_code == 0, result.output
