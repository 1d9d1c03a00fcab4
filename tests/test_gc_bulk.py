"""The file store's bulk `gc` (`intemporal/store/filegc.py`): one store-wide lock instead of a
lock per journal, the index's word checked with one `stat`, unlinks on many threads.

| kind                                           | right                                          |
| ---------------------------------------------- | ---------------------------------------------- |
| finished runs, journals as they ended          | deleted without reading a journal; rows gone   |
| a journal edited after its end, size kept      | read, found damaged, left alone and named      |
| a folder where a journal was                   | left alone and named; the other runs deleted   |
| child runs a failed gc left without a parent   | deleted, their folder too                      |
| a claimed finished run (a resume in flight)    | bulk way declined: run by run, the run kept    |
| a claim of a finished run while gc deletes     | waits for gc, then finds the run gone          |
| SIGKILL in the middle of gc                    | no parent without its children, no inbox       |
|                                                | without its run, listings read; gc finishes    |
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_on
from process_helpers import wait_until

from intemporal import Engine, FileStore
from intemporal.errors import RunNotFound
from intemporal.housekeeping import collectable, delete_trees

FLOWS = """
import intemporal

@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step(i):
    if i % 5 == 4:
        raise ValueError(f"run {i} fails")
    return i

@intemporal.workflow(name="bulk.job")
def job(i):
    return step(i)

@intemporal.workflow(name="bulk.family")
def family(i):
    return job(i) + job(i + 1)
"""


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The workflows above as a module `bulk_flows` (the child process imports it too)."""
    (tmp_path / "bulk_flows.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import bulk_flows

    yield bulk_flows
    sys.modules.pop("bulk_flows", None)


def _fill(store: Path, flows: Any, runs: int, families: int = 0) -> None:
    with Engine(store, threads=4, durability="flush") as engine:
        for i in range(runs):
            with contextlib.suppress(ValueError):
                engine.run(flows.job, i, run_id=f"r{i:04d}")
        for i in range(families):  # a parent and two child runs
            engine.run(flows.family, 0, run_id=f"fam{i:03d}")


def _rows(store: Path) -> set[str]:
    with sqlite3.connect(store / ".index" / "runs.sqlite3") as db:
        return {r[0] for r in db.execute("SELECT run_id FROM runs")}


def _gc(store: FileStore) -> set[str]:
    gone = delete_trees(store, collectable(store, older_than=0, probe=False))
    return {info.run_id for tree in gone for info in tree.runs}


def test_gc_deletes_finished_runs_without_reading_their_journals(
    tmp_path: Path, flows: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given finished runs (some failed, some trees), their journals as they ended
    home = tmp_path / "store"
    _fill(home, flows, 40, families=3)
    store = FileStore(home)
    every = set(store.run_ids())
    assert len(every) == 40 + 3 * 3

    # When gc deletes them, Then no journal is read (the index and one stat each decide)
    def no_read(self: FileStore, run_id: str) -> list[Any]:
        raise AssertionError(f"read {run_id}")

    monkeypatch.setattr(FileStore, "read", no_read)
    assert _gc(store) == every
    monkeypatch.undo()
    store.close()
    # And the files, the child folders and the rows are gone
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == []
    assert _rows(home) == set()


def test_a_journal_edited_after_its_end_is_read_and_a_damaged_one_kept(
    tmp_path: Path, flows: Any
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 3)
    # Given a finished journal damaged in place, its size unchanged
    path = home / "r0001.jsonl"
    data = path.read_bytes()
    second = data.index(b"\n") + 1
    path.write_bytes(data[:second] + b"x" + data[second + 1 :])
    assert len(path.read_bytes()) == len(data)

    # When gc runs, Then it reads that journal, keeps it and names it; the others go
    result = cli_on(home)("gc", "--older-than", "0s")
    assert result.exit_code == 1, result.output
    assert "removed 2 run(s)" in result.stdout
    assert "r0001 cannot be read" in result.stderr
    assert [p.name for p in home.glob("*.jsonl")] == ["r0001.jsonl"]


def test_a_folder_where_a_journal_was_is_named_and_the_other_runs_deleted(
    tmp_path: Path, flows: Any
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 4, families=1)
    # Given a finished run's journal moved away and a folder made in its place
    (home / "r0002.jsonl").rename(home / "r0002.moved")
    (home / "r0002.jsonl").mkdir()

    # When gc runs (it stopped at the folder with "[Errno 21] Is a directory: 22",
    # deleting nothing), Then it names that run, leaves it, and deletes every other one
    result = cli_on(home)("gc", "--older-than", "0s")
    assert result.exit_code == 1, result.output
    assert "removed 6 run(s)" in result.stdout
    assert "r0002 cannot be read" in result.stderr and "Errno" not in result.stderr
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == [
        "r0002.jsonl",
        "r0002.moved",
    ]


@pytest.mark.parametrize("ring", [True, False], ids=["io_uring", "threads"])
def test_child_runs_a_failed_gc_left_go_with_their_folder(
    tmp_path: Path, flows: Any, monkeypatch: pytest.MonkeyPatch, ring: bool
) -> None:
    if not ring:
        monkeypatch.setenv("INTEMPORAL_NO_IO_URING", "1")
    home = tmp_path / "store"
    _fill(home, flows, 2, families=2)
    # Given child runs whose parent's journal a gc deleted before it failed (top-level
    # runs go first: an unlink refused, or a SIGKILL, stops it before their children)
    (home / "fam000.jsonl").unlink()
    assert (home / "fam000").is_dir()
    # When gc runs again, Then the children go, and their folder with them (it was left
    # empty: only the folders of runs deleted below a parent were removed)
    store = FileStore(home)
    _gc(store)
    _gc(store)
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == []


def test_a_claimed_finished_run_makes_gc_go_run_by_run_and_keeps_it(
    tmp_path: Path, flows: Any
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 5)
    store = FileStore(home)
    # Given a failed run claimed (a resume in flight) by another store object
    other = FileStore(home)
    lease = other.claim("r0004")
    assert lease is not None
    try:
        # Then the bulk way is declined (it would hold the store-wide lock), and gc run by
        # run keeps the claimed run
        trees = collectable(store, older_than=0, probe=False)
        assert store.delete_ended_trees([t.runs for t in trees], set()) is None
        assert _gc(store) == {"r0000", "r0001", "r0002", "r0003"}
    finally:
        lease.release()
    assert _gc(store) == {"r0004"}


def _blocked_flock() -> bool:
    """Whether a thread of this process waits for a flock now (`/proc/locks` marks waiters
    with ->, and names the process)."""
    pid = str(os.getpid())
    with open("/proc/locks") as f:
        return any("->" in line and "FLOCK" in line and pid in line.split() for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_a_claim_of_a_finished_run_waits_for_gc_then_finds_it_gone(
    tmp_path: Path, flows: Any
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 5)
    gc_side, claimer = FileStore(home), FileStore(home)
    got: list[Any] = []

    def claim() -> None:
        try:
            got.append(claimer.claim("r0004"))  # failed: a resume would claim it
        except RunNotFound as exc:
            got.append(exc)

    # Given a gc holding the store-wide lock (as it does while it deletes)
    with gc_side._gclock.exclusive() as alone:
        assert alone
        thread = threading.Thread(target=claim)
        thread.start()
        # When a claim of a finished run comes, Then it waits for the gc
        wait_until(_blocked_flock, what="the claim to wait for the gc lock")
        assert got == []
        gc_side.delete("r0004")  # the gc deletes it meanwhile
    thread.join(timeout=10)
    # And then finds the run gone, instead of a lease on a deleted journal
    assert len(got) == 1 and isinstance(got[0], RunNotFound), got
    # While an unfinished run is claimed without waiting for anything
    with gc_side._gclock.exclusive() as alone:
        assert alone
        with Engine(home, threads=2) as engine:
            handle = engine.start(flows.job, 1, run_id="new")
            assert handle.result(timeout=10) == 1


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_a_restart_line_waits_for_gc_and_is_refused_once_the_run_is_gone(tmp_path: Path) -> None:
    home = tmp_path / "store"
    store = FileStore(home)
    first = {"type": "run_started", "workflow": "wf", "args": [], "kwargs": {}, "ts": 1.0}
    store.create("p", first)  # pending: its claim takes nothing store-wide
    lease = store.claim("p")
    assert lease is not None
    got: list[Any] = []

    def restart() -> None:
        try:
            lease.append({"type": "run_resumed", "ts": 2.0}, False)
            got.append("appended")
        except RunNotFound as exc:
            got.append(exc)

    # Given a gc holding the store-wide lock, When a restart line comes, Then it waits
    gc_side = FileStore(home)
    with gc_side._gclock.exclusive() as alone:
        assert alone
        thread = threading.Thread(target=restart)
        thread.start()
        wait_until(_blocked_flock, what="the restart line to wait for the gc lock")
        assert got == []
        gc_side.delete("p")
    thread.join(timeout=10)
    lease.release()
    # And is refused: the run is gone, nothing was written into a deleted journal
    assert len(got) == 1 and isinstance(got[0], RunNotFound), got
    assert not store.exists("p")


GC_CHILD = """
import os, sys, time
from intemporal.cli import main
real_unlink = os.unlink
def slow_unlink(*args, **kwargs):
    time.sleep(0.002)  # so the test's SIGKILL lands in the middle of the deletions
    return real_unlink(*args, **kwargs)
os.unlink = slow_unlink
from intemporal.store.uring import UnlinkRing
real_ring = UnlinkRing.unlink
def slow_ring(self, names):  # a few names in flight at a time
    failures = {}
    for i in range(0, len(names), 4):
        time.sleep(0.008)
        failures.update({i + k: e for k, e in real_ring(self, names[i : i + 4]).items()})
    return failures
UnlinkRing.unlink = slow_ring
sys.argv = ["intemporal", "--store", sys.argv[1], "gc", "--older-than", "0s"]
main()
"""


def _journals(home: Path) -> int:
    """How many journals there are (`os.walk`: a folder a gc removes meanwhile is skipped)."""
    return sum(name.endswith(".jsonl") for _, _, names in os.walk(home) for name in names)


@pytest.mark.parametrize("unlinks", ["io_uring", "threads"])
def test_a_sigkill_in_the_middle_of_gc_leaves_a_consistent_store(
    tmp_path: Path, flows: Any, unlinks: str
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 300, families=20)
    with Engine(home, threads=2) as engine:  # runs with an inbox: a signal each, ended
        for i in range(0, 300, 10):
            engine.store.send(f"r{i:04d}", {"type": "signal", "name": "late", "ts": 1.0})
    journals = len(list(home.rglob("*.jsonl")))
    assert journals == 300 + 60

    # Given a gc process SIGKILLed once it deleted some runs, not all
    proc = subprocess.Popen(
        [sys.executable, "-c", GC_CHILD, str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            **({"INTEMPORAL_NO_IO_URING": "1"} if unlinks == "threads" else {}),
        },
    )
    try:
        wait_until(
            lambda: _journals(home) < journals - 20 or proc.poll() is not None,
            timeout=60,
            what="gc to delete some runs",
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    left = {str(p.relative_to(home))[: -len(".jsonl")] for p in home.rglob("*.jsonl")}
    assert 0 < len(left) < journals
    assert _rows(home) > left  # the killed gc's rows without journals

    # Then `count` counts the runs there are, not the rows (it said all 360); and a later
    # gc that deletes nothing (another cutoff) removes those rows all the same
    swept = tmp_path / "swept"
    shutil.copytree(home, swept)
    assert cli_on(home)("count").output.strip() == str(len(left))
    assert cli_on(swept)("gc", "--older-than", "7d").exit_code == 0
    assert _rows(swept) == left
    assert cli_on(swept)("count", "--json").output.strip() == f'{{"count": {len(left)}}}'

    # Then no run left needs a deleted one: a top-level run that is there has its children
    for run_id in left:
        if run_id.startswith("fam") and "/" not in run_id:
            assert {f"{run_id}/1", f"{run_id}/2"} <= left, sorted(
                r for r in left if r.startswith("fam")
            )
    # No inbox outlives its run (a new run of that id would read it)
    for inbox in home.glob("*.inbox"):
        assert inbox.name[: -len(".inbox")] in left, inbox
    # Listings read every run that is left, each one readable and finished
    store = FileStore(home)
    listed = {info.run_id: info for info in store.list_runs()}
    assert set(listed) == left
    assert all(info.status.finished for info in listed.values()), listed
    cli = cli_on(home)
    assert cli("list", "--all").exit_code == 0
    some = sorted(left)[0]
    assert cli("show", some).exit_code == 0

    # And the next gc deletes the rest, rows included
    result = cli("gc", "--older-than", "0s")
    assert result.exit_code == 0, result.output
    assert list(home.rglob("*.jsonl")) == [] and list(home.glob("*.inbox")) == []
    assert _rows(home) == set()


def test_a_run_resumed_after_gc_looked_is_kept(
    tmp_path: Path, flows: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 5)
    store = FileStore(home)
    # Given gc looked at the runs (every one finished)
    trees = collectable(store, older_than=0, probe=False)
    assert len(trees) == 5
    # When a failed one is resumed before gc deletes (and fails again, ending anew)
    with Engine(home, threads=2) as engine:
        with pytest.raises(ValueError):
            engine.resume("r0004").result(timeout=10)

    # Then gc reads that one (its end is not the one gc saw) and keeps it; the rest go
    read: list[str] = []
    real = FileStore.read

    def counted(self: FileStore, run_id: str) -> list[Any]:
        read.append(run_id)
        return real(self, run_id)

    monkeypatch.setattr(FileStore, "read", counted)
    gone = delete_trees(store, trees)
    assert {t.root.run_id for t in gone} == {f"r{i:04d}" for i in range(4)}
    assert read == ["r0004"]
    assert [e["type"] for e in real(store, "r0004")].count("run_failed") == 2
