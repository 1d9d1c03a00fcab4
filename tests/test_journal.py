"""The file store's journal: JSON lines, private files, torn tails and corrupt lines."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls, clone_prefix
from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore, JournalCorrupted, RetryPolicy, RunStatus
from intemporal.store import Lease


@intemporal.activity
def square(i: int) -> int:
    return i * i


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _steps_workflow(calls: Calls) -> intemporal.Workflow[Any, Any]:
    @intemporal.activity
    def step(i: int) -> int:
        calls.hit(i)
        return i * i

    @intemporal.workflow
    def wf(n: int) -> list[int]:
        return [step(i) for i in range(n)]

    return wf


def test_journal_is_json_lines_named_after_the_run(file_store: FileStore) -> None:
    calls = Calls()
    wf = _steps_workflow(calls)
    with Engine(file_store, threads=2) as engine:
        assert engine.run(wf, 3, run_id="jl") == [0, 1, 4]
        history = engine.history("jl")
    path = file_store.root / "jl.jsonl"
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert events == history
    assert [e["type"] for e in events] == ["run_started"] + ["activity_completed"] * 3 + [
        "run_completed"
    ]
    assert all("\n" not in line for line in lines)


def test_child_like_run_ids_make_subfolders(file_store: FileStore) -> None:
    @intemporal.workflow
    def wf() -> int:
        return square(3)

    with Engine(file_store, threads=2) as engine:
        assert engine.run(wf, run_id="batch/7/item") == 9
    assert (file_store.root / "batch" / "7" / "item.jsonl").is_file()
    assert list(file_store.run_ids()) == ["batch/7/item"]


def test_files_are_private(file_store: FileStore) -> None:
    @intemporal.workflow
    def wf() -> int:
        return square(2)

    with Engine(file_store, threads=2) as engine:
        engine.run(wf, run_id="private")
        engine.run(wf, run_id="nested/deeper/run")
        with Engine(file_store, worker=False) as client:
            client.start(wf, run_id="pending")
            client.cancel("pending")  # writes the run's inbox
    root = file_store.root
    assert _mode(root) == 0o700
    for path in [root / "nested", root / "nested" / "deeper"]:
        assert path.is_dir()
        assert _mode(path) == 0o700, path
    files = [p for p in root.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert {".jsonl", ".inbox"} <= suffixes
    for path in files:
        assert _mode(path) == 0o600, path


def test_torn_tail_is_ignored_then_repaired_on_resume(file_store: FileStore) -> None:
    calls = Calls()
    wf = _steps_workflow(calls)
    with Engine(file_store, threads=2) as engine:
        engine.run(wf, 4, run_id="whole")
        clone_prefix(file_store, "whole", "torn", keep=3)  # started + 2 steps
        path = file_store.root / "torn.jsonl"
        good = path.read_bytes()
        torn = b'{"type":"activity_completed","seq":3,"name":"st'
        with open(path, "ab") as f:
            f.write(torn)

        # the run still reads: the torn last line is left out
        events = engine.history("torn")
        assert [e.get("seq") for e in events] == [None, 1, 2]
        info = engine.get_run("torn")
        assert info.status is RunStatus.RUNNING and info.orphaned
        assert path.read_bytes() == good + torn  # reading does not write

        assert engine.resume("torn").result(timeout=10) == [0, 1, 4, 9]
    assert calls.counts == {0: 1, 1: 1, 2: 2, 3: 2}  # only the steps after the cut ran again
    raw = path.read_bytes()
    assert raw.startswith(good)
    assert torn not in raw
    assert raw.endswith(b"\n")
    events = [json.loads(line) for line in raw.decode().splitlines()]
    # the crashed execution is marked, right before the resume's first new step
    assert [e.get("seq") for e in events] == [None, 1, 2, None, 3, 4, None]
    assert events[3]["type"] == "run_recovered" and events[3]["after"] == "activity_completed"


def test_torn_tail_on_a_finished_run_is_harmless(file_store: FileStore) -> None:
    calls = Calls()
    wf = _steps_workflow(calls)
    with Engine(file_store, threads=2) as engine:
        engine.run(wf, 2, run_id="done")
        with open(file_store.root / "done.jsonl", "ab") as f:
            f.write(b'{"type":"ru')
        assert engine.get_run("done").status is RunStatus.COMPLETED
        assert engine.get_run("done").result == [0, 1]
        assert engine.resume("done").result(timeout=10) == [0, 1]
    assert calls.total() == 2


@pytest.mark.parametrize(
    "garbage",
    [b"{not json", b"[1, 2, 3]", b'{"no_type": 1}', b"\x00\x00\x00"],
    ids=["syntax", "not-an-object", "no-type", "nul-bytes"],
)
def test_corrupt_middle_line_raises_journal_corrupted(
    file_store: FileStore, garbage: bytes
) -> None:
    calls = Calls()
    wf = _steps_workflow(calls)
    with Engine(file_store, threads=2) as engine:
        engine.run(wf, 3, run_id="bad")
        path = file_store.root / "bad.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        lines[2] = garbage + b"\n"  # line 3 of 5
        path.write_bytes(b"".join(lines))
        before = path.read_bytes()

        for call in (engine.history, engine.get_run, engine.resume):
            with pytest.raises(JournalCorrupted) as info:
                call("bad")
            assert info.value.path == str(path)
            assert info.value.line == 3
            assert str(path) in str(info.value) and "line 3" in str(info.value)
            assert isinstance(info.value, intemporal.IntemporalError)
        # Listed, not skipped in silence (issue 12 §7): unreadable, saying why.
        [listed] = engine.list_runs()
        assert (listed.run_id, listed.status) == ("bad", RunStatus.UNREADABLE)
        assert listed.error is not None and f"{path} is corrupted at line 3" in listed.error
        assert engine.list_runs(status="completed") == []
        assert engine.recover() == []
    assert path.read_bytes() == before  # nothing dropped or rewritten
    assert calls.total() == 3


def test_corrupt_last_complete_line_is_not_a_torn_tail(file_store: FileStore) -> None:
    # A damaged line that ends with its newline was fully written: it is corruption.
    calls = Calls()
    wf = _steps_workflow(calls)
    with Engine(file_store, threads=2) as engine:
        engine.run(wf, 1, run_id="bad-end")
        path = file_store.root / "bad-end.jsonl"
        with open(path, "ab") as f:
            f.write(b"{oops\n")
        with pytest.raises(JournalCorrupted) as info:
            engine.history("bad-end")
    assert info.value.line == 4


def test_failed_attempts_are_journaled(file_store: FileStore) -> None:
    calls = Calls()

    @intemporal.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    def flaky() -> str:
        calls.hit("flaky")
        if calls["flaky"] < 3:
            raise ValueError(f"attempt {calls['flaky']}")
        return "ok"

    @intemporal.workflow
    def wf() -> str:
        return flaky()

    with Engine(file_store, threads=2) as engine:
        assert engine.run(wf, run_id="attempts") == "ok"
    lines = (file_store.root / "attempts.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    failed = [e for e in events if e["type"] == "attempt_failed"]
    assert [(e["seq"], e["attempt"]) for e in failed] == [(1, 1), (1, 2)]
    assert [e["error"]["type"] for e in failed] == ["ValueError", "ValueError"]
    assert [e["error"]["message"] for e in failed] == ["attempt 1", "attempt 2"]
    assert events[-2]["type"] == "activity_completed" and events[-2]["attempts"] == 3


def test_journal_lines_are_appended_not_rewritten(file_store: FileStore) -> None:
    calls = Calls()
    wf = _steps_workflow(calls)
    with Engine(file_store, threads=2) as engine:
        engine.run(wf, 2, run_id="append")
        clone_prefix(file_store, "append", "append-cut", keep=2)
        path = file_store.root / "append-cut.jsonl"
        prefix = path.read_bytes()
        inode = os.stat(path).st_ino
        engine.resume("append-cut").result(timeout=10)
    assert path.read_bytes().startswith(prefix)
    assert os.stat(path).st_ino == inode


def test_a_store_folder_deleted_under_a_live_store_is_made_again(tmp_path: Path) -> None:
    # Given a file store that created a run, When its folder is deleted
    store = FileStore(tmp_path / "store")
    assert store.create("one", {"type": "run_started", "workflow": "w", "ts": 1.0})
    shutil.rmtree(tmp_path / "store")
    # Then the next run is created in a new folder, where it can be read, not lost
    assert store.create("two", {"type": "run_started", "workflow": "w", "ts": 2.0})
    assert store.read("two")[0]["workflow"] == "w"
    assert (tmp_path / "store" / "two.jsonl").exists()


@pytest.mark.parametrize("caller", ["create", "create_claimed"])
def test_a_store_folder_deleted_under_a_store_with_spare_files_is_made_again(
    tmp_path: Path, caller: str
) -> None:
    # Given a file store with spare files ready (unnamed, made in its folder ahead of need)
    store = FileStore(tmp_path / "store")
    first = {"type": "run_started", "workflow": "w", "ts": 1.0}
    for n in range(2):
        assert store.create(f"warm-{n}", first)
    pool = store._spares
    wait_until(lambda: pool.ready >= 2, what="2 spare files")
    # When its folder is deleted
    shutil.rmtree(tmp_path / "store")
    # Then the next run is made in a new folder, readable, under one name of its own
    if caller == "create":
        assert store.create("two", first)
    else:
        lease = store.create_claimed("two", first)
        assert lease is not None
        lease.release()
    assert store.read("two") == [first]
    assert os.stat(tmp_path / "store" / "two.jsonl").st_nlink == 1
    # and the spares of the deleted folder were dropped, not linked: the pool starts anew
    # (the run's index row, one write to an open pending file, does not notice the deletion:
    # `create_claimed` and then its fallback `create` may each take one before it is seen)
    assert (pool.ready, pool._target) == (0, 0) and pool.taken <= 2
    assert sorted(store.run_ids()) == ["two"]
    store.close()


@pytest.mark.parametrize("dsync", [True, False], ids=["pwritev-RWF_DSYNC", "write+fdatasync"])
def test_durable_appends_land_whole_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dsync: bool
) -> None:
    # Given a claimed run, with one-call durable appends or the two-call fallback
    import intemporal.store.fileio as file_store

    monkeypatch.setattr(file_store, "_dsync_ok", file_store._dsync_ok and dsync)
    store = FileStore(tmp_path / "store")
    store.create("r", {"type": "run_started", "workflow": "w", "ts": 0.0})
    lease = store.claim("r")
    assert lease is not None
    # When events are appended, synced or not
    for i in range(5):
        lease.append({"type": "side_effect", "seq": i + 1, "name": "n", "ts": 1.0}, sync=i % 2 == 0)
    lease.release()
    # Then each is one whole line, after the first, in order
    assert [e.get("seq") for e in store.read("r")] == [None, 1, 2, 3, 4, 5]


def _started(workflow: str = "w") -> dict[str, Any]:
    return {"type": "run_started", "workflow": workflow, "ts": 0.0}


def test_create_claimed_owns_the_new_run_until_released(store: intemporal.Store) -> None:
    # Given a run created already claimed (how `Engine.run` starts what it executes)
    lease = store.create_claimed("r", _started())
    assert lease is not None
    # Then nobody else may claim it or create it again, and others can read it
    assert store.summary("r").executing
    assert store.claim("r") is None
    assert store.create_claimed("r", _started("other")) is None
    assert not store.create("r", _started("other"))
    # When it appends and lets go
    lease.append(_effect(1), sync=True)
    lease.release()
    # Then the journal holds both events, and the run can be claimed again
    assert [e["type"] for e in store.read("r")] == ["run_started", "side_effect"]
    again = store.claim("r")
    assert again is not None
    again.release()


class _SyncSpy:
    """Counts fdatasync and fsync calls on descriptors, as the store makes them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(fd: int) -> None:
            self.calls.append("fdatasync")
            real_fdatasync(fd)

        def fsync(fd: int) -> None:
            self.calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync")
            real_fsync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)


def _created_claimed(
    store: FileStore, monkeypatch: pytest.MonkeyPatch, sync: bool = True
) -> tuple[_SyncSpy, Lease]:
    """A run "r" created claimed, and a spy on the syncs made from now on.

    These tests are about a store without a write-ahead log (a system that cannot keep
    one: each file synced itself); the log's own are in tests/test_wal.py.
    """
    store._wal = None
    spy = _SyncSpy(monkeypatch)
    lease = store.create_claimed("r", _started(), sync=sync)
    assert lease is not None
    return spy, lease


def _named_descriptors() -> set[int]:
    """This process's descriptors of plain files with a name: not the store's spare files
    (unnamed files made ahead of need by a background thread, `spares.py`, which also
    opens the store's folder while it makes them): those come and go."""
    named = set()
    for fd in map(int, os.listdir("/proc/self/fd")):
        with contextlib.suppress(OSError):  # closed meanwhile
            st = os.fstat(fd)
            if st.st_nlink and stat.S_ISREG(st.st_mode):
                named.add(fd)
    return named


def _effect(seq: int) -> dict[str, Any]:
    return {"type": "side_effect", "seq": seq, "name": "n", "ts": 1.0}


def test_a_run_created_claimed_is_synced_with_its_folder_at_its_first_durable_append(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a durable run created claimed: nothing synced yet
    spy, lease = _created_claimed(file_store, monkeypatch)
    assert spy.calls == []
    # When it appends without sync, then with sync, twice
    lease.append(_effect(1), sync=False)
    assert spy.calls == []
    lease.append(_effect(2), sync=True)
    # Then the first durable append syncs every line and the journal's name, once
    assert spy.calls == ["fdatasync", "dir"]
    lease.append(_effect(3), sync=True)
    lease.release()
    assert spy.calls[:2] == ["fdatasync", "dir"] and "dir" not in spy.calls[2:]
    assert [e.get("seq") for e in file_store.read("r")] == [None, 1, 2, 3]


@pytest.mark.parametrize("sync", [True, False], ids=["fsync", "flush"])
def test_a_run_created_claimed_and_released_unsynced_is_synced_by_the_release(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    # Given a run created claimed, released before any durable append (no log: see below)
    file_store._wal = None
    file_store.create("warm-up", _started())  # opens the store's folder descriptor, once
    open_before = _named_descriptors()
    spy, lease = _created_claimed(file_store, monkeypatch, sync)
    lease.release()
    # Then a durable store synced it (file and folder) on release; a flush one did not
    assert spy.calls == (["fdatasync", "dir"] if sync else [])
    # And the lease left no descriptor open behind it (only new ones count: an earlier
    # test's store, collected meanwhile, may close its files during this one)
    assert _named_descriptors() - open_before == set()
    assert file_store.read("r")[0]["type"] == "run_started"


def test_concurrent_first_durable_appends_all_wait_for_the_folder_sync(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run created claimed, and 8 threads appending durably at once
    import threading

    spy, lease = _created_claimed(file_store, monkeypatch)
    gate = threading.Barrier(8)
    early: list[int] = []

    def append(i: int) -> None:
        gate.wait()
        lease.append(_effect(i + 1), sync=True)
        if "dir" not in spy.calls:
            early.append(i)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lease.release()
    # Then none returned before the journal's name was on disk
    assert early == []
    # And the folder was synced exactly once, every line landed whole
    assert spy.calls.count("dir") == 1
    assert sorted(e.get("seq") or 0 for e in file_store.read("r")) == list(range(9))


def test_a_run_created_claimed_is_synced_even_if_its_store_was_closed_meanwhile(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a durable run created claimed, and its store closed (an engine closing under
    # a `run()` on another thread closes the store's own folder descriptor)
    spy, lease = _created_claimed(file_store, monkeypatch)
    file_store.close()
    # When the run makes its first durable append
    lease.append(_effect(1), sync=True)
    lease.release()
    # Then the journal and its folder were still synced, through the lease's own descriptor
    assert spy.calls == ["fdatasync", "dir"]
    assert [e.get("seq") for e in file_store.read("r")] == [None, 1]
