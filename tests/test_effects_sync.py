"""An activity's result is durable before the run's next effect, and its end shares the sync.

A result is appended without a sync (`RunContext.before_effect`): the workflow's own code
that follows is replayable, so the result needs to be on disk only before the run does
something seen outside it (the next activity executes, a child run starts, a side effect's
function is called, the run parks or stops, continues as new) or reports its end (whose
record is synced, carrying the result in the same sync). Here a simulated power cut
(`crashsim.Disk`, every unsynced write lost) at each effect finds the result there, and a
process killed between the last activity and the end resumes to the same result. What a
dead process left unsynced is synced before the recovered run's first effect, and a parked
run is let go with its submitted activities' results durable, taken or not.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crashsim import Disk
from process_helpers import journal_events, run_and_kill, wait_until

import intemporal
from intemporal import Engine, FileStore
from intemporal.clock import VirtualClock
from intemporal.observe import Observer, RunStopped
from intemporal.store import walfile
from intemporal.store.fileio import FileLease

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")

MARKS: dict[str, int] = {}  # effect -> the disk's operation count when it happened
DISKS: list[Disk] = []


def _mark(what: str) -> None:
    MARKS.setdefault(what, DISKS[0].mark())


@intemporal.activity
def step(x: int) -> int:
    return x * 10


@intemporal.activity
def effect_step() -> int:
    _mark("activity")
    return 1


@intemporal.workflow
def effect_child() -> int:
    _mark("child")
    return 2


class Stop(BaseException):
    """Stops a run unended (as an interrupt does): resumable, nothing recorded."""


@intemporal.workflow
def after_a_step(effect: str) -> int:
    got = step(4)  # its result appended unsynced: durable by the effect below
    if effect == "activity":
        return got + effect_step()
    if effect == "child":
        return got + effect_child()
    if effect == "side_effect":
        intemporal.side_effect(_mark, "side_effect")
    if effect == "signal":
        intemporal.wait_for_signal("never")
    if effect == "sleep":
        intemporal.sleep(3600)
    if effect == "stop":
        raise Stop
    return got


class _Stopped(Observer):
    def __init__(self) -> None:
        self.done = threading.Event()

    def on_run_stopped(self, rec: RunStopped) -> None:
        if rec.run_id == "r":
            _mark("parked or stopped")
            self.done.set()


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    """A new store's folder whose writes and syncs are recorded, in boot "before"."""
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    recorder = Disk(root)
    MARKS.clear()
    DISKS[:] = [recorder]
    monkeypatch.setattr(walfile, "boot_id", lambda: "before")
    with recorder.installed(monkeypatch):
        yield recorder


def _after_cut(disk: Disk, cut: int, into: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The run's journal as a power cut right after operation `cut` leaves it (every write
    not synced by then lost), read in the next boot (the log replayed)."""
    into.mkdir(mode=0o700)
    disk.rebuild(cut, into, random.Random(0), lose_all=True)
    monkeypatch.setattr(walfile, "boot_id", lambda: "after")
    store = FileStore(into)
    try:
        return store.read("r") if store.exists("r") else []
    finally:
        store.close()


@pytest.mark.parametrize("effect", ["activity", "child", "side_effect", "signal", "sleep", "stop"])
def test_a_result_is_on_disk_before_the_runs_next_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: Disk, effect: str
) -> None:
    # Given a durable engine whose disk is recorded, and a run that executes an activity
    # (its result appended unsynced), then does something seen outside the run: executes
    # another activity, starts a child run, calls a side effect's function, waits for a
    # signal or a long timer (its lease let go), or stops unended
    watcher = _Stopped()
    with Engine(FileStore(disk.root), threads=2, observers=[watcher]) as engine:
        handle = engine.start(after_a_step, effect, run_id="r")
        if effect in ("signal", "sleep", "stop"):
            assert watcher.done.wait(10)
        else:
            handle.result(timeout=10)
    what = effect if effect in MARKS else "parked or stopped"
    # When the power fails at that moment, losing every write not synced by then
    events = _after_cut(disk, MARKS[what], tmp_path / "cut", monkeypatch)
    # Then the activity's result is there: it was synced before the effect happened
    done = [e for e in events if e["type"] == "activity_completed"]
    assert [(e["seq"], e["result"]) for e in done][:1] == [(1, 40)], (what, events)


@intemporal.workflow
def chain(n: int) -> int:
    got = step(n)
    if n < 2:
        intemporal.continue_as_new(n + 1)
    return got


def test_a_run_continued_as_new_exists_on_disk_only_with_the_results_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: Disk
) -> None:
    # Given a run that executes an activity, then continues as new (its next run created
    # before its end is written), recorded
    with Engine(FileStore(disk.root), threads=2) as engine:
        assert engine.run(chain, 1, run_id="r") == 20
    syncs = [i + 1 for i, op in enumerate(disk.ops) if op[0] in ("sync", "syncall")]
    # When the power fails right after any sync
    seen = 0
    for n, cut in enumerate(syncs):
        into = tmp_path / f"cut-{n}"
        events = _after_cut(disk, cut, into, monkeypatch)
        # Then wherever the next run exists, the first one's result is there too
        if (into / "r~1.jsonl").exists():
            seen += 1
            assert any(e["type"] == "activity_completed" for e in events), (cut, events)
    assert seen


CRASH = """
@intemporal.activity
def add(i: int) -> int:
    record("ran", i)
    return i * 100

@intemporal.workflow(name=WF_NAME)
def WORKFLOW(k: int) -> int:
    total = sum(add(i) for i in range(k))
    record("returned")  # the last activity returned; its result is not synced yet
    hang()
    return total
"""


@pytest.mark.parametrize("lost", [False, True], ids=["page-cache-kept", "unsynced-line-lost"])
def test_a_kill_between_the_last_activity_and_the_end_reruns_at_most_that_one(
    tmp_path: Path, lost: bool
) -> None:
    # Given a run of 3 activities killed (SIGKILL) in its workflow code after the last
    # activity returned, before its end was written
    crash = run_and_kill(tmp_path, CRASH, lines=4, args=(3,), via="run")
    events = crash.events()
    assert [e["type"] for e in events][-1] == "activity_completed"
    if lost:  # and, as a power cut may, the disk lost the last result (never synced)
        journal = crash.store / f"{crash.run_id}.jsonl"
        text = journal.read_bytes()
        journal.write_bytes(text[: text.rstrip(b"\n").rfind(b"\n") + 1])
        assert journal_events(crash.store, crash.run_id)[-1]["seq"] == 2
    # When it is resumed
    with Engine(FileStore(crash.store), threads=2) as engine:
        result = engine.resume(crash.run_id).result(timeout=20)
    # Then it completes with the same result, and only the last activity may run again
    assert result == 300
    counts = crash.counts()
    assert (counts["ran 0"], counts["ran 1"], counts["ran 2"]) == (1, 1, 2 if lost else 1)
    assert journal_events(crash.store, crash.run_id)[-1]["type"] == "run_completed"


@intemporal.activity
async def async_step(x: int) -> int:
    return x + 1


@intemporal.workflow
async def async_sequence(k: int) -> int:
    total = 0
    for i in range(k):
        total += await async_step(i)
    return total


def test_an_async_run_of_k_sequential_activities_costs_k_syncs_of_the_log(
    tmp_path: Path,
) -> None:
    # Given a durable engine on a file store, its log warmed up
    store = FileStore(tmp_path / "s")
    with Engine(store, threads=2) as engine:
        engine.run(async_sequence, 1)
        log = store._wal
        assert log is not None
        before = log.syncs
        # When an async workflow awaits 4 activities one after another
        assert engine.run(async_sequence, 4) == 10
        # Then the log synced 4 times: the end shared the last result's sync
        assert log.syncs - before == 4


def test_without_a_log_a_synced_line_after_unsynced_ones_syncs_the_whole_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file store without a write-ahead log, and a run appending a synced line,
    # then an unsynced one (an activity's result)
    from intemporal.store import file as file_store_module

    monkeypatch.setattr(file_store_module, "wal_supported", lambda: False)
    store = FileStore(tmp_path / "s")
    lease = store.create_claimed("r", {"type": "run_started", "workflow": "w", "ts": 1.0})
    assert lease is not None
    lease.append({"type": "side_effect", "seq": 1, "name": "n", "ts": 1.0}, True)
    lease.append({"type": "activity_completed", "seq": 2, "name": "a", "ts": 1.0}, False)
    calls: list[str] = []
    real_fdatasync, real_pwritev = os.fdatasync, os.pwritev

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    def pwritev(fd: int, bufs: Any, offset: int, flags: int = 0) -> int:
        calls.append("pwritev-dsync" if flags else "pwritev")
        return real_pwritev(fd, bufs, offset, flags)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "pwritev", pwritev)
    # When the next line is appended with a sync (the run's end)
    lease.append({"type": "run_completed", "result": 1, "ts": 1.0}, True)
    # Then the whole journal is synced (RWF_DSYNC would sync the new line's range only,
    # leaving the result before it maybe in memory), and a synced line after it is one call
    assert calls == ["fdatasync"]
    calls.clear()
    lease.append({"type": "side_effect", "seq": 3, "name": "n", "ts": 1.0}, True)
    assert calls in (["pwritev-dsync"], ["fdatasync"])  # one sync, in place where it can
    lease.release()
    store.close()


STOPS_FIRST: list[bool] = []


@intemporal.workflow
def stops_once(before_a_step: bool) -> int:
    got = 0 if before_a_step else step(4)  # appended unsynced by the execution that dies
    if STOPS_FIRST:
        STOPS_FIRST.pop()
        raise Stop
    return got + effect_step()


def _drop_unsynced(lease: FileLease) -> None:
    """`FileLease.release` as a SIGKILL does it: the descriptor (and its flock) closed, no
    sync; the lease then holds nothing, so nothing can close that number again."""
    fd, lease._fd = lease._fd, -1
    if fd >= 0:
        os.close(fd)


@pytest.mark.parametrize("before_a_step", [False, True], ids=["a-result", "a-new-journal"])
def test_what_a_dead_process_left_unsynced_is_on_disk_before_the_recovered_runs_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: Disk, before_a_step: bool
) -> None:
    # Given a run whose execution died before its next effect, its lease let go without a
    # sync (as SIGKILL does), leaving lines in the page cache, not on disk: an activity's
    # result appended unsynced, or the journal `run()` made (its first sync logs it)
    STOPS_FIRST[:] = [True]
    with monkeypatch.context() as m:
        m.setattr(intemporal.replay.RunContext, "before_effect", lambda self: None)
        m.setattr(FileLease, "release", _drop_unsynced)
        dying = FileStore(disk.root)
        with Engine(dying, threads=2) as engine:
            with pytest.raises(Stop):
                engine.run(stops_once, before_a_step, run_id="r")
        dying.close()  # now, not whenever the collector finds it
    # When another engine recovers the run, replays what it finds, and executes the next
    # activity
    recovering = FileStore(disk.root)
    with Engine(recovering, threads=2) as engine:
        assert engine.resume("r").result(timeout=10) == (1 if before_a_step else 41)
    recovering.close()
    # Then a power cut as that activity runs finds the journal, and the result, on disk
    events = _after_cut(disk, MARKS["activity"], tmp_path / "cut", monkeypatch)
    assert [e["type"] for e in events][:1] == ["run_started"], events
    done = [(e["seq"], e["result"]) for e in events if e["type"] == "activity_completed"]
    assert done[:1] == ([] if before_a_step else [(1, 40)]), events


@intemporal.activity
def late_step() -> int:
    # Returns once the run's timer is journaled: its result is appended after that record
    wait_until(
        lambda: b"timer_started" in Path(DISKS[0].root, "r.jsonl").read_bytes(), what="timer"
    )
    return 7


@intemporal.workflow
def submits_then_sleeps() -> int:
    fut = intemporal.submit(late_step)
    intemporal.sleep(3600)  # parks: the submitted activity finishes first, its result not taken
    return fut.result() + effect_step()


def test_a_submitted_result_not_yet_taken_is_on_disk_before_the_parked_run_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: Disk
) -> None:
    # Given a run that submits an activity, then parks on a timer before taking its result
    # (the activity finishes after the timer's record: its result appended unsynced)
    with Engine(FileStore(disk.root), threads=2, clock=VirtualClock()) as engine:
        # When the timer fires, the run takes the result and executes its next activity
        assert engine.start(submits_then_sleeps, run_id="r").result(timeout=10) == 8
    # Then a power cut as that activity runs finds the submitted one's result on disk
    events = _after_cut(disk, MARKS["activity"], tmp_path / "cut", monkeypatch)
    done = [e for e in events if e["type"] == "activity_completed"]
    assert [(e["seq"], e["result"]) for e in done][:1] == [(1, 7)], events
