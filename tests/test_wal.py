"""The file store's write-ahead log: group commit, sync counts, replay after a power cut.

A power cut is simulated by `crashsim.Disk`: the workload runs on the real filesystem while
every write and sync is recorded; then, for many cut points, the disk a power cut there
would leave is rebuilt in a fresh folder and opened as a store (in a new "boot"), which
replays its log. Every acknowledged record must be there, no journal torn in the middle,
nothing doubled.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import random
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from crashsim import Disk
from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore
from intemporal.events import TERMINAL_EVENTS
from intemporal.housekeeping import collectable, delete_trees
from intemporal.store import file as file_store_module
from intemporal.store import wal as wal_module
from intemporal.store import walcheckpoint, waldirect, walfile
from intemporal.store.base import Lease
from intemporal.store.wal import WriteAheadLog

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")


def _started(workflow: str = "wf") -> dict[str, Any]:
    return {"type": "run_started", "workflow": workflow, "args": [], "kwargs": {}, "ts": 1.0}


class _Syncs:
    """Counts the data syncs the store makes: fdatasync, fsync and RWF_DSYNC writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.folders = 0
        lock = threading.Lock()
        real = os.fdatasync, os.fsync, os.pwritev

        def fdatasync(fd: int) -> None:
            with lock:
                self.count += 1
            real[0](fd)

        def fsync(fd: int) -> None:
            with lock:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    self.folders += 1
                else:
                    self.count += 1
            real[1](fd)

        def pwritev(fd: int, bufs: Any, offset: int, flags: int = 0) -> int:
            if flags & getattr(os, "RWF_DSYNC", 0):
                with lock:
                    self.count += 1
            return real[2](fd, bufs, offset, flags)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "pwritev", pwritev)


@intemporal.activity
def echo(x: int) -> int:
    return x


@intemporal.workflow
def fan_out(n: int) -> int:
    return sum(intemporal.join_all([intemporal.submit(echo, i) for i in range(n)]))


@intemporal.workflow
def in_sequence(n: int) -> int:
    return sum(echo(i) for i in range(n))


def test_a_fan_out_of_ten_activities_its_join_and_its_end_cost_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a durable engine on a file store, warmed up (the log's files exist)
    with Engine(FileStore(tmp_path / "s"), threads=8) as engine:
        assert engine.run(fan_out, 2) == 1
        syncs = _Syncs(monkeypatch)
        # When one run submits 10 activities, joins them and returns
        assert engine.run(fan_out, 10) == 45
    # Then the whole run (its creation, 10 results, the end) took one sync (it used to take
    # 2: one at the join, one at the end) and no folder sync
    assert (syncs.count, syncs.folders) == (1, 0)
    events = FileStore(tmp_path / "s").read(engine.list_runs(limit=1)[0].run_id)
    assert sum(e["type"] == "activity_completed" for e in events) == 10


SYNCS_SEEN: list[_Syncs] = []


@intemporal.activity
def syncs_so_far() -> int:
    return SYNCS_SEEN[0].count


@intemporal.workflow
def fan_out_then_more(n: int) -> int:
    intemporal.join_all([intemporal.submit(echo, i) for i in range(n)])
    return syncs_so_far()


def test_the_joined_results_are_on_disk_before_the_next_activity_executes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a durable engine on a file store (with its run index), warmed up
    with Engine(FileStore(tmp_path / "s"), threads=8) as engine:
        assert engine.run(fan_out, 2) == 1
        SYNCS_SEEN[:] = [_Syncs(monkeypatch)]
        # When a run joins 3 submitted activities, then goes on to another one
        seen = engine.run(fan_out_then_more, 3)
    # Then their results were synced before that activity executed (once, together)
    assert seen == 1


@pytest.mark.parametrize("k", [1, 3, 10])
def test_a_run_of_k_sequential_activities_costs_k_syncs_its_end_sharing_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    # Given a durable engine, warmed up
    with Engine(FileStore(tmp_path / "s"), threads=2) as engine:
        engine.run(in_sequence, 1)
        syncs = _Syncs(monkeypatch)
        # When `run()` executes a run of k activities one after another
        assert engine.run(in_sequence, k) == k * (k - 1) // 2
    # Then it took k syncs, not k + 1: each result is synced before the next activity
    # executes (the first one carries the run's creation), the last one with the end
    assert (syncs.count, syncs.folders) == (k, 0)
    [info] = [i for i in engine.list_runs() if i.run_id != engine.list_runs()[-1].run_id]
    events = FileStore(tmp_path / "s").read(info.run_id)
    assert [e["type"] for e in events[-2:]] == ["activity_completed", "run_completed"]


def test_start_makes_the_run_durable_with_one_sync_of_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client engine (it executes nothing) on a file store
    with Engine(FileStore(tmp_path / "s"), worker=False) as engine:
        engine.start(in_sequence, 1)
        syncs = _Syncs(monkeypatch)
        # When it starts a run
        engine.start(in_sequence, 3)
    # Then the creation took one sync (the log's), no folder sync
    assert (syncs.count, syncs.folders) == (1, 0)


def test_threads_logging_at_once_share_syncs_and_every_record_is_read_back(
    tmp_path: Path,
) -> None:
    # Given one log and 16 threads, each logging 20 records
    log = WriteAheadLog(str(tmp_path))
    barrier = threading.Barrier(16)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(20):
            log.log(f"f{t}", i * 10, f"{t:04d}-{i:04d}\n".encode())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Then fewer syncs than records were made, and every record reads back, in each
    # thread's order
    assert log.syncs < 320
    state = walfile.read_state(log.folder)
    assert state is not None
    got = [(r.path, r.offset, r.data) for r in log.records(state[1], state[2])]
    assert len(got) == 320
    for t in range(16):
        mine = [g for g in got if g[0] == f"f{t}"]
        assert [m[1] for m in mine] == [i * 10 for i in range(20)]
    log.close()


def test_the_log_laps_its_segments_after_a_checkpoint_and_keeps_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given tiny segments, so the log wraps around its 4 files many times
    monkeypatch.setattr(wal_module, "FIRST_SEGMENT", 4096)
    monkeypatch.setattr(wal_module, "MAX_SEGMENT", 4096)
    store = FileStore(tmp_path / "s")
    # When 300 synced appends go through it
    for i in range(30):
        lease = store.create_claimed(f"r{i}", _started())
        assert lease is not None
        for j in range(10):
            lease.append({"type": "side_effect", "seq": j + 1, "name": "n", "ts": 1.0}, True)
        lease.release()
    # Then it used only its 4 segment files, checkpointed, and every journal is whole
    log = store._wal
    assert log is not None
    names = sorted(p.name for p in (tmp_path / "s" / ".wal").iterdir())
    assert names == ["0.log", "1.log", "2.log", "3.log", "lock", "state", "tail"]
    state = walfile.read_state(log.folder)
    assert state is not None and state[1] > 4
    for i in range(30):
        assert len(store.read(f"r{i}")) == 11
    store.close()


def _tiny_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> tuple[list[WriteAheadLog], list[dict[str, bool]]]:
    """`count` logs of one store (as processes sharing it have), 4 KiB segments, their
    checkpoints made only when a test asks, and what each checkpoint synced."""
    monkeypatch.setattr(wal_module, "FIRST_SEGMENT", 4096)
    monkeypatch.setattr(wal_module, "MAX_SEGMENT", 4096)
    logs: list[WriteAheadLog] = []
    synced: list[dict[str, bool]] = []
    for _ in range(count):
        log = WriteAheadLog(str(tmp_path))
        monkeypatch.setattr(log, "_checkpoint_behind", lambda upto: None)
        monkeypatch.setattr(log, "_sync_files", synced.append)
        logs.append(log)
    return logs, synced


def test_a_checkpoint_of_segments_only_this_log_wrote_syncs_their_files_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log alone on its store, written into its third segment: new files, and
    # later lines of some of them
    (log,), synced = _tiny_logs(tmp_path, monkeypatch, 1)
    for i in range(30):
        log.log(f"f{i % 12}", 0 if i < 12 else 300, b"x" * 300)
    assert log._tail is not None and wal_module._TAIL.unpack_from(log._tail)[0] == 3
    named = walfile.names(log.records(1, 0, (3, 0)))  # what reading the log back finds
    monkeypatch.setattr(walcheckpoint, "read_all", lambda fd: pytest.fail("the log was read"))
    monkeypatch.setattr(walcheckpoint, "read_file", lambda *a: pytest.fail("the log was read"))
    # When a checkpoint moves to the start of the segment being written
    log._checkpoint_outside((3, 0))
    # Then it read nothing back, and synced each file its records named, with the
    # folder of each new one, exactly as reading the log back finds
    assert synced == [named]
    assert set(named) == {f"f{i}" for i in range(12)} and all(named.values())
    state = walfile.read_state(log.folder)
    assert state is not None and state[1:] == (3, 0)
    assert not [s for s in log._names if s < 3]  # forgotten once checkpointed
    log.close()


def test_a_checkpoint_syncs_the_files_another_process_logged_in_its_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two logs of one store (two processes), writing in turn, then the first alone
    (mine, theirs), synced = _tiny_logs(tmp_path, monkeypatch, 2)
    for i in range(10):
        mine.log(f"mine{i}", 0, b"m" * 300)
        theirs.log(f"theirs{i}", 0, b"t" * 300)
    for i in range(10):
        mine.log(f"later{i}", 0, b"l" * 300)
    assert mine._tail is not None
    segno = wal_module._TAIL.unpack_from(mine._tail)[0]
    state = walfile.read_state(mine.folder)
    assert segno == 3 and state is not None and state[1:] == (1, 0)
    named = walfile.names(mine.records(state[1], state[2], (segno, 0)))
    # When the first checkpoints everything before the segment being written
    mine._checkpoint_outside((segno, 0))
    # Then the other log's files were synced too (its segments were read back), and the
    # next checkpoint, over segments only it wrote since, reads nothing
    assert synced[-1] == named and {f"theirs{i}" for i in range(10)} <= set(named)
    for i in range(15):
        mine.log(f"last{i}", 0, b"z" * 300)
    upto = wal_module._TAIL.unpack_from(mine._tail)[0]
    named = walfile.names(mine.records(segno, 0, (upto, 0)))
    monkeypatch.setattr(walcheckpoint, "read_all", lambda fd: pytest.fail("the log was read"))
    monkeypatch.setattr(walcheckpoint, "read_file", lambda *a: pytest.fail("the log was read"))
    mine._checkpoint_outside((upto, 0))
    assert synced[-1] == named and "last0" in named
    mine.close()
    theirs.close()


def _reboot(monkeypatch: pytest.MonkeyPatch, boot: str) -> None:
    monkeypatch.setattr(walfile, "boot_id", lambda: boot)


def _run_in_boot_a(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool = True, steps: int = 0
) -> tuple[Path, FileStore, Lease]:
    """A store opened in boot "a", and its run "r" created claimed, with `steps` synced
    steps appended."""
    _reboot(monkeypatch, "boot-a")
    root = tmp_path / "s"
    store = FileStore(root)
    lease = store.create_claimed("r", _started(), sync=sync)
    assert lease is not None
    for j in range(steps):
        lease.append({"type": "side_effect", "seq": j + 1, "name": "n", "ts": 1.0}, True)
    return root, store, lease


def test_after_a_reboot_opening_the_store_puts_back_what_the_journals_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run with three synced steps and a signal, in boot A
    root, store, lease = _run_in_boot_a(tmp_path, monkeypatch, steps=3)
    lease.release()
    store.send("r", {"type": "signal", "name": "go", "payload": None, "ts": 1.0})
    store.close()
    journal, inbox = (root / "r.jsonl").read_bytes(), (root / "r.inbox").read_bytes()
    # When a power cut loses the journal's last lines and the inbox (what was not synced)
    (root / "r.jsonl").write_bytes(journal[: journal.index(b"\n") + 1])
    (root / "r.inbox").unlink()
    # Then opening the store in the same boot changes nothing (no power cut there)...
    FileStore(root).close()
    assert (root / "r.jsonl").read_bytes() != journal
    # ...and opening it in the next boot replays the log: both are back, byte for byte
    _reboot(monkeypatch, "boot-b")
    FileStore(root).close()
    assert (root / "r.jsonl").read_bytes() == journal
    assert (root / "r.inbox").read_bytes() == inbox


@intemporal.workflow
def with_children(n: int) -> int:
    return sum(in_sequence(i) for i in range(n))


def test_a_replay_after_gc_leaves_no_folder_of_the_deleted_child_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given parents with child runs (journals in a folder "<parent>/"), in boot A
    _reboot(monkeypatch, "boot-a")
    root = tmp_path / "s"
    with Engine(root) as engine:
        for i in range(3):
            assert engine.run(with_children, 3, run_id=f"p{i}") == 1
        assert (root / "p0").is_dir()
    # When gc deletes them, in boot A, and the store is opened in boot B (a replay)
    store = FileStore(root)
    assert len(delete_trees(store, collectable(store, older_than=0, probe=False))) == 3
    store.close()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == []
    _reboot(monkeypatch, "boot-b")
    FileStore(root).close()
    # Then no run is back, nor an empty folder of their child runs (the replay made the
    # folder again for the child's creation record, then unlinked only its files)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == []


# -- the power-cut fuzz --------------------------------------------------------------------
ACKS: list[tuple[int, str, str, Any]] = []
DISK: list[Disk] = []
SPARES_TAKEN: list[int] = [0]  # runs the workload created from a spare file


def _ack(kind: str, run_id: str, what: Any) -> None:
    ACKS.append((DISK[0].mark(), kind, run_id, what))


@intemporal.activity
def cut_step(rid: str, i: int, taken: int) -> int:
    """An activity of run `rid` executing after the workflow took `taken` results: they are
    acknowledged now (an activity's execution is an effect of the run: `before_effect`)."""
    if taken:
        _ack("steps", rid, taken)
    return i


@intemporal.workflow
def cut_flow(rid: str, steps: int, fan: int, wait: bool) -> int:
    """`steps` activities in sequence, a fan-out of `fan`, maybe a signal wait; returns how
    many activity results it took.

    When a step is acknowledged: an activity's result is durable, the product promises,
    before the run's next effect (the next activity executes, a wait, a child run, its end
    reported), not the moment the activity returns (the workflow's own code in between
    is replayable: after a power cut there the activity runs again). So a step is
    acknowledged by the next effect: the body of the next activity acks the results taken
    before it (`cut_step`), the code after a signal wait acks those taken before the
    wait, and the run's end acks them all (`_check_store` counts them in a finished run).
    This fuzz used to ack each step as its activity returned, which the store then synced
    at once; nothing is acked later than its effect, so the check is as strict as before.
    """
    rid = rid or intemporal.info().run_id  # started without an id: the one drawn for it
    for i in range(steps):
        cut_step(rid, i, i)
    if fan:
        intemporal.join_all([intemporal.submit(cut_step, rid, 100 + j, steps) for j in range(fan)])
    if wait:
        intemporal.wait_for_signal("go")
        _ack("steps", rid, steps + fan)  # the results taken before the wait
        _ack("signal_taken", rid, 1)
    return steps + fan


def _workload(root: Path, rng: random.Random, runs: int) -> tuple[set[str], set[str]]:
    """Starts, steps, fan-outs, signals, ends and gc on a durable engine; the acks in ACKS.

    Returns the runs started and the runs gc deleted."""
    started: set[str] = set()
    deleted: set[str] = set()
    with Engine(FileStore(root), threads=4) as engine:
        handles = {}
        for n in range(runs):
            wait = rng.random() < 0.3
            named = n % 2 == 0  # else an id drawn by start(): its creation logged early
            handle = engine.start(
                cut_flow,
                f"run-{n}" if named else "",
                rng.randint(0, 4),
                rng.choice([0, 0, 3]),
                wait,
                run_id=f"run-{n}" if named else None,
            )
            rid = handle.run_id
            handles[rid] = handle
            _ack("run", rid, None)
            started.add(rid)
            if wait:
                engine.signal(rid, "go", n)
                _ack("signal", rid, n)
            if n % 4 == 3:  # some finished, then gc'd
                done = [r for r, h in handles.items() if h.status().finished]
                for r in done[:2]:
                    _ack("end", r, handles[r].result(timeout=30))
                store = engine.store
                for tree in delete_trees(store, collectable(store, older_than=-1)):
                    deleted.update(info.run_id for info in tree.runs)
                for r in deleted:
                    handles.pop(r, None)
        for rid, h in handles.items():
            _ack("end", rid, h.result(timeout=60))
        SPARES_TAKEN[:] = [engine.store._spares.taken]  # type: ignore[attr-defined]
    return started, deleted


def _check_cut(
    disk: Disk,
    cut: int,
    into: Path,
    rng: random.Random,
    deleted: set[str],
    lose_all: bool | None = None,
) -> None:
    """Rebuild the disk of a power cut after operation `cut`, open it, check every ack
    (`lose_all`: whether every unsynced write is lost; None: at random, by `rng`).

    On a failure the message ends with the operations around the cut and the acks near
    it, and the whole recording is pickled next to `into` (`crashsim.replay_cut` gives
    back this call's arguments: the same rebuilt disk, whatever order the threads ran in)."""
    state = rng.getstate()
    try:
        disk.rebuild(cut, into, rng, lose_all=rng.random() < 0.5 if lose_all is None else lose_all)
        _check_store(disk, cut, into, deleted)
    except Exception as exc:
        dump = into.parent / f"{into.name}.pickle"
        with dump.open("wb") as f:
            pickle.dump((disk.ops, disk.folders, disk.root_id, ACKS, deleted, cut, state), f)
        near = [a for a in ACKS if cut - 40 <= a[0] <= cut + 5]
        detail = "\n".join(
            [f"operations {max(0, cut - 40) + 1}..{cut + 5} (the cut keeps 1..{cut}):"]
            + [disk.describe(cut - 40, cut + 5)]
            + ["acks (mark, kind, run, what) near the cut:"]
            + [f"  {a}" for a in near]
            + [f"recording: {dump}"]
        )
        raise AssertionError(f"{exc}\n{detail}") from exc


def _check_store(disk: Disk, cut: int, into: Path, deleted: set[str]) -> None:
    store = FileStore(into)  # a new boot: replays the log
    try:
        present = set(store.run_ids())
        for rid in present:
            events = store.read(rid)  # raises on a line torn in the middle
            lines = [json.dumps(e, sort_keys=True) for e in events]
            assert len(lines) == len(set(lines)), f"cut {cut}: a line doubled in {rid}"
            ends = [e for e in events if e["type"] in TERMINAL_EVENTS]
            assert len(ends) <= 1 and (not ends or events[-1] is ends[0]), f"cut {cut}: {rid}"
        for mark, kind, rid, what in ACKS:
            if mark > cut or rid in deleted:
                continue
            where = f"cut {cut}/{len(disk.ops)}: {kind} {what} of {rid} acknowledged at {mark}"
            assert rid in present, where + ": the run is gone"
            events = store.read(rid)
            done = sum(e["type"] == "activity_completed" for e in events)
            if kind == "steps":  # the activity results taken before an effect
                assert done >= what, where
            elif kind == "signal":
                inbox, _ = store.inbox(rid)
                taken = any(e["type"] == "signal_received" for e in events)
                assert taken or any(m.get("payload") == what for m in inbox), where
            elif kind == "end":  # the run's result reported: with every result it took
                assert events[-1]["type"] == "run_completed", where
                assert done == what, where
    finally:
        store.close()


def _recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Disk]:
    """A new store's folder, its disk recorded from now on (once installed), in a boot."""
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    disk = Disk(root)
    ACKS.clear()
    DISK[:] = [disk]
    _reboot(monkeypatch, "boot-before")
    return root, disk


def _fuzz(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    runs: int,
    cuts: int,
    direct: bool = True,
    whole: str = "mixed",
) -> None:
    """The power-cut fuzz. `whole`: how its checkpoints sync: "mixed" (in turn, the whole
    filesystem at once, each file as the system has too much unwritten, each file as
    `syncfs` failed), "syncfs" (the whole filesystem, always), "failing" (`syncfs` always
    fails: each file)."""
    rng = random.Random(seed)
    monkeypatch.setattr(wal_module, "DIRECT", direct)
    monkeypatch.setattr(wal_module, "FIRST_SEGMENT", 2048)  # the log laps: checkpoints too
    monkeypatch.setattr(wal_module, "MAX_SEGMENT", 2048)
    monkeypatch.setattr(walcheckpoint, "BULK", 2)  # and checkpoints may sync everything
    turns = itertools.count()  # the checkpoints that may sync everything, in turn
    turn = [0]

    def dirty() -> int:
        turn[0] = next(turns) % 3 if whole == "mixed" else 0
        return 1 << 40 if turn[0] == 1 else 0

    monkeypatch.setattr(walfile, "dirty_bytes", dirty)
    monkeypatch.setattr(walfile, "syncfs_reports_errors", lambda: True)
    root, disk = _recorded(tmp_path, monkeypatch)
    disk.syncfs_fails = lambda: whole == "failing" or turn[0] == 2
    with disk.installed(monkeypatch):
        started, deleted = _workload(root, rng, runs)
    _reboot(monkeypatch, "boot-after")
    assert ACKS and started
    # its checkpoints synced the whole filesystem, or tried to and synced each file
    syncalls = [i for i, op in enumerate(disk.ops) if op[0] == "syncall"]
    failed = [i for i, op in enumerate(disk.ops) if op[0] == "syncfs-failed"]
    assert bool(syncalls) == (whole != "failing")
    assert bool(failed) == (whole != "syncfs")
    # the log was written direct where the filesystem allows it (crashsim tears by sectors)
    wrote_direct = any(op[0] == "write" and op[4] for op in disk.ops)
    assert wrote_direct == (direct and waldirect.block_size(str(root / ".wal")) > 0)
    total = len(disk.ops)
    syncs = [i + 1 for i, op in enumerate(disk.ops) if op[0] in ("sync", "syncall")]
    # and cuts while the store's spare files (unnamed, made ahead by another thread) are
    # open: just after one is made, and just before one holding a run's first line is linked
    made = {op[1]: i + 1 for i, op in enumerate(disk.ops) if op[0] == "make"}
    linking = [i for i, op in enumerate(disk.ops) if op[0] == "link" and op[3] in made]
    assert SPARES_TAKEN[0] > 0 and linking, "no run was created from a spare file"
    spares = rng.sample(sorted(made.values()), min(len(made), cuts // 10))
    spares += rng.sample(linking, min(len(linking), cuts // 10))
    # and cuts just before a whole-filesystem sync, after it, and as it goes on; and as
    # each file is synced instead after `syncfs` failed, and once that checkpoint is done
    near = sorted({i + d for i in syncalls for d in range(4)})
    spares += rng.sample(near, min(len(near), cuts // 10))
    after = sorted({i + d for i in failed for d in range(1, 40)})
    spares += rng.sample(after, min(len(after), cuts // 10))
    points = sorted(
        {rng.randint(0, total) for _ in range(cuts // 2 - len(spares))}
        | set(spares)
        | set(rng.sample(syncs, min(len(syncs), cuts - cuts // 2)))
    )
    for n, cut in enumerate(points):
        into = tmp_path / f"cut-{n}"
        into.mkdir(mode=0o700)
        _check_cut(disk, cut, into, rng, deleted)
    # the last cut keeps everything synced: every run not gc'd is there and finished
    into = tmp_path / "cut-end"
    into.mkdir(mode=0o700)
    _check_cut(disk, total, into, rng, deleted)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_no_acknowledged_record_is_lost_at_any_of_many_power_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    _fuzz(tmp_path, monkeypatch, seed=18, runs=12, cuts=120, direct=direct)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_no_acknowledged_record_is_lost_at_hundreds_of_power_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    _fuzz(tmp_path, monkeypatch, seed=seed, runs=40, cuts=400)


@pytest.mark.parametrize("log", [True, False], ids=["logged", "each-file-synced"])
def test_runs_created_from_spare_files_made_before_recording_survive_a_power_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: bool
) -> None:
    # Given a store whose spare files (unnamed, made by a background thread) were opened
    # before the simulated disk began recording (without a log: only the files tell)
    root, disk = _recorded(tmp_path, monkeypatch)
    store = FileStore(root)
    if not log:
        store._wal = None
    pool = store._spares
    assert pool.take() == pool.take() == -1  # a second miss asks for spares
    wait_until(lambda: pool.ready >= 2, what="2 spare files")
    # When runs are created from them while recording, each acknowledged
    with disk.installed(monkeypatch):
        for rid in ("a", "b"):
            assert store.create(rid, _started(rid))
            _ack("run", rid, None)
    store.close()
    assert pool.taken == 2
    # Then the recording knows their files from their first use: written, then named...
    named = {op[2]: op[3] for op in disk.ops if op[0] == "link"}
    made = {op[1] for op in disk.ops if op[0] == "make"}
    assert {"a.jsonl", "b.jsonl"} <= named.keys() and named["a.jsonl"] in made
    assert any(op[0] == "write" and op[1] == named["b.jsonl"] for op in disk.ops)
    # ...and a power cut after the acks, losing all that was not synced, keeps both runs
    _reboot(monkeypatch, "boot-after")
    for lose_all in (True, False):
        into = tmp_path / f"cut-{lose_all}"
        into.mkdir(mode=0o700)
        _check_cut(disk, len(disk.ops), into, random.Random(1), set(), lose_all=lose_all)


@intemporal.workflow
def joined(rid: str) -> int:
    total = sum(intemporal.join_all([intemporal.submit(cut_step, rid, j, 0) for j in range(3)]))
    total += intemporal.submit(cut_step, rid, 7, 3).result()  # acks the 3 joined
    return total + cut_step(rid, 0, 4)  # acks the 4 taken; its own result: the end's


@pytest.mark.parametrize("log", [True, False], ids=["log", "no-log"])
def test_submitted_activities_results_are_durable_before_the_workflows_next_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: bool
) -> None:
    # Given a durable engine whose disk is recorded (on a file store with its write-ahead
    # log, or without one, as where the system cannot keep one), and a run that joins a
    # fan-out of 3 submitted activities (their results appended unsynced), then executes
    # one more submitted activity, takes its result, executes one in sequence and ends
    monkeypatch.setattr(file_store_module, "wal_supported", lambda: log)
    root, disk = _recorded(tmp_path, monkeypatch)
    with disk.installed(monkeypatch), Engine(FileStore(root), threads=4) as engine:
        assert engine.run(joined, "j", run_id="j") == 10
        _ack("end", "j", 5)
    _reboot(monkeypatch, "boot-after")
    assert [(kind, what) for _, kind, _, what in ACKS] == [("steps", 3), ("steps", 4), ("end", 5)]
    # When the power fails as the next activity starts executing after `join_all` /
    # `result()` returned, or once `run()` returned, losing every write not synced by then:
    # the results taken are all there (made durable before that activity executed; before
    # this store synced at the join, they, even the run, were lost), and all 5 at the end
    for n, (mark, *_) in enumerate(ACKS):
        into = tmp_path / f"cut-{n}"
        into.mkdir(mode=0o700)
        _check_cut(disk, mark, into, random.Random(0), set(), lose_all=True)


def _torn_state_write(monkeypatch: pytest.MonkeyPatch, folder: Path, keep: int) -> None:
    """The log's next state write (a checkpoint) as a power cut leaves it: its first `keep`
    bytes written, the rest of its place as it was."""
    version, segno, off = walfile.read_state(str(folder)) or (0, 0, 0)
    writes: list[tuple[bytes, int]] = []

    def pwrite(fd: int, data: bytes, at: int) -> int:
        writes.append((data, at))
        return len(data)

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", pwrite)
        walfile.write_state(str(folder), "boot-a", version + 1, segno, off)
    [(data, at)] = writes
    with (folder / "state").open("r+b") as f:
        f.seek(at)
        f.write(data[:keep])


def test_a_state_write_torn_by_a_power_cut_leaves_the_last_checkpoint_and_the_log_is_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run with synced steps in boot A, its log's state written twice (both copies)
    root, store, lease = _run_in_boot_a(tmp_path, monkeypatch, steps=3)
    lease.release()
    store.close()
    folder = root / ".wal"
    version, segno, off = walfile.read_state(str(folder)) or (0, 0, 0)
    walfile.write_state(str(folder), "boot-a", version + 1, segno, off)
    whole = (folder / "state").read_bytes()
    # When a power cut tears the next state write after any number of its bytes
    for keep in (0, 1, 40, 63, 64, 65, 68, 71):
        (folder / "state").write_bytes(whole)
        _torn_state_write(monkeypatch, folder, keep)
        # Then a whole copy is read back: the one before (or the torn one, if the bytes it
        # lacks happen to be those already there); both were lost once it passed byte 64
        got = walfile.read_state(str(folder))
        assert got is not None and got[0] > version and got[1:] == (segno, off), keep
    # ...and the next boot replays the log into a journal that lost its unsynced lines
    journal = (root / "r.jsonl").read_bytes()
    (root / "r.jsonl").write_bytes(journal[: journal.index(b"\n") + 1])
    _reboot(monkeypatch, "boot-b")
    FileStore(root).close()
    assert (root / "r.jsonl").read_bytes() == journal


def test_a_state_written_by_an_earlier_version_is_still_read(tmp_path: Path) -> None:
    # Given a state file as earlier versions left it: its odd copy at byte 64
    walfile.write_state(str(tmp_path), "boot-a", 3, 5, 128)
    data = (tmp_path / "state").read_bytes()
    (tmp_path / "state").write_bytes(bytes(64) + data[512 : 512 + 72])
    # Then its checkpoint is read (a replay after an upgrade starts there)
    assert walfile.read_state(str(tmp_path)) == (3, 5, 128)


_WRITER = """
import sys
from intemporal import FileStore
store = FileStore(sys.argv[1])
name = sys.argv[2]
for i in range(20):
    lease = store.create_claimed(f"{name}-{i}", {"type": "run_started", "workflow": "wf",
                                 "args": [], "kwargs": {}, "ts": 1.0})
    for j in range(10):
        lease.append({"type": "side_effect", "seq": j + 1, "name": name, "ts": 1.0}, True)
    lease.release()
    store.send(f"{name}-{i}", {"type": "signal", "name": "go", "payload": i, "ts": 1.0})
store.close()
"""


def test_processes_sharing_a_store_share_its_log_and_a_replay_restores_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two processes writing 20 runs each into one store at the same time
    root = tmp_path / "s"
    FileStore(root).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), name]) for name in "ab"]
    for p in procs:
        assert p.wait(timeout=120) == 0
    files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    assert len([n for n in files if n.endswith(".jsonl")]) == 40
    state = walfile.read_state(str(root / ".wal"))
    assert state is not None and state[1:] == (1, 0)  # no checkpoint: everything is in it
    # When a power cut loses every journal and inbox (the log had no checkpoint yet)
    for name in files:
        if name.endswith((".jsonl", ".inbox")):
            (root / name).unlink()
    # Then the next boot's open replays both processes' records: every file is back whole
    _reboot(monkeypatch, "boot-after")
    FileStore(root).close()
    for name, data in files.items():
        if name.endswith((".jsonl", ".inbox")):
            assert (root / name).read_bytes() == data, name


@pytest.mark.parametrize("written", [True, False], ids=["batch-written", "batch-not-written"])
def test_a_writer_killed_in_the_middle_of_a_batch_leaves_the_log_whole(
    tmp_path: Path, written: bool
) -> None:
    # Given a log with record A, and a writer killed while writing batch B: the shared
    # tail still says "B is being written" (with B on disk or not)
    log = WriteAheadLog(str(tmp_path))
    log.log("a", 0, b"A\n")
    assert log._tail is not None
    segno, start, _ = wal_module._TAIL.unpack_from(log._tail)
    if written:
        log.log("b", 0, b"B\n")
        end = wal_module._TAIL.unpack_from(log._tail)[1]
    else:
        end = start + 64  # what it would have written
    wal_module._TAIL.pack_into(log._tail, 0, segno, start, end)
    # When another writer logs C
    log.log("c", 0, b"C\n")
    # Then C follows B if B is there, or takes its place if not: the log reads A (B) C
    state = walfile.read_state(log.folder)
    assert state is not None
    paths = [r.path for r in log.records(state[1], state[2])]
    assert paths == (["a", "b", "c"] if written else ["a", "c"])
    log.close()


def test_a_run_journaled_without_syncs_then_resumed_durably_is_logged_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose first lines were written by a flush-mode execution (never synced)
    root, store, lease = _run_in_boot_a(tmp_path, monkeypatch, sync=False)
    lease.append({"type": "side_effect", "seq": 1, "name": "n", "ts": 1.0}, False)
    lease.release()
    # When a durable execution claims it and appends one synced line
    again = store.claim("r")
    assert again is not None
    again.append({"type": "side_effect", "seq": 2, "name": "n", "ts": 1.0}, True)
    again.release()
    store.close()
    journal = (root / "r.jsonl").read_bytes()
    # Then a power cut that loses the whole journal loses nothing acknowledged: the
    # record holds the journal from its first byte, the unsynced lines included
    (root / "r.jsonl").unlink()
    _reboot(monkeypatch, "boot-b")
    FileStore(root).close()
    assert (root / "r.jsonl").read_bytes() == journal


def test_a_record_too_large_for_a_segment_syncs_its_file_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a durable run, and a result larger than a segment of the log
    monkeypatch.setattr(wal_module, "FIRST_SEGMENT", 4096)
    store = FileStore(tmp_path / "s")
    lease = store.create_claimed("r", _started())
    assert lease is not None
    syncs = _Syncs(monkeypatch)
    # When it is appended durably
    lease.append({"type": "side_effect", "seq": 1, "name": "n", "result": "x" * 8000}, True)
    # Then the journal itself was synced, with its folder (its name is new), not logged
    assert (syncs.count, syncs.folders) == (1, 1)
    lease.release()
    assert store.read("r")[1]["result"] == "x" * 8000
    store.close()
