"""`start()` on a busy engine: the group commit's leader and wake-up order, and the lease a
started run's thread is handed (scenario 2 of `make bench`: 1,000 starts on 32 threads).

The log's leader is made to wait inside its first sync (a patched `write_synced`), so the
batches queued behind it are known exactly when it goes on.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore
from intemporal.store import file as file_store_module
from intemporal.store import wal as wal_module
from intemporal.store import walfile
from intemporal.store.spares import Spares
from intemporal.store.wal import WriteAheadLog

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")


class _Held:
    """`write_synced` for the log: the first call waits for `go`; every call is noted
    (the writing thread, the records' count) and counted with the log's flocks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.go = threading.Event()
        self.inside = threading.Event()
        self.writers: list[int] = []
        self.flocks: list[int] = []
        real, real_flock = wal_module.write_synced, fcntl.flock

        def write_synced(fd: int, offset: int, chunk: list[bytes]) -> int:
            self.writers.append(threading.get_ident())
            if len(self.writers) == 1:
                self.inside.set()
                assert self.go.wait(30)
            return real(fd, offset, chunk)

        class _Fcntl:
            LOCK_EX, LOCK_UN, LOCK_NB, LOCK_SH = (
                fcntl.LOCK_EX,
                fcntl.LOCK_UN,
                fcntl.LOCK_NB,
                fcntl.LOCK_SH,
            )

            @staticmethod
            def flock(fd: int, op: int) -> None:
                self.flocks.append(op)
                real_flock(fd, op)

        monkeypatch.setattr(wal_module, "write_synced", write_synced)
        monkeypatch.setattr(wal_module, "fcntl", _Fcntl)


def _waiting(log: WriteAheadLog, n: int) -> bool:
    """Whether `n` records are queued with their threads blocked on them."""
    with log._mu:
        return sum(it.waiter is not None for it in log._queue) == n


def _logger(log: WriteAheadLog, name: str, urgent: bool = False) -> threading.Thread:
    th = threading.Thread(target=log.log, args=(name, 0, name.encode() + b"\n", urgent))
    th.start()
    return th


def _lock_is_free(log: WriteAheadLog) -> bool:
    fd = os.open(os.path.join(log.folder, "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize("leader", ["a step", "a start"])
def test_a_leader_writes_the_batch_queued_behind_it_under_the_locks_it_took_unless_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leader: str
) -> None:
    # Given a log whose leader (a run's step, or a caller's start) is inside its sync
    log = WriteAheadLog(str(tmp_path))
    log.open()
    held = _Held(monkeypatch)
    first = _logger(log, "lead", urgent=leader == "a start")
    assert held.inside.wait(30)
    # ...while 6 other threads queue records behind it and wait
    others = [_logger(log, f"t{i}") for i in range(6)]
    wait_until(lambda: _waiting(log, 6), what="6 threads waiting on the log")
    # When its sync ends
    held.go.set()
    for th in [first, *others]:
        th.join(30)
    # Then the 6 records left in one more batch, under the flock taken once; a step's
    # thread wrote it itself, a start's thread handed it to a waiting thread
    assert log.syncs == 2 and held.flocks.count(fcntl.LOCK_EX) == 1
    lead_thread = first.ident
    assert (held.writers[1] == lead_thread) == (leader == "a step")
    # ...and the lead ended with both locks let go: another process may write
    assert (log._held, log._file_mu.locked(), log._leading) == (0, False, False)
    assert _lock_is_free(log)
    state = walfile.read_state(log.folder)
    assert state is not None
    names = sorted(r.path for r in log.records(state[1], state[2]))
    assert names == sorted(["lead", *(f"t{i}" for i in range(6))])
    log.close()


class _Recorded:
    """`threading` for the log's module, whose `Lock()` notes the order of releases."""

    def __init__(self) -> None:
        self.released: list[int] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)

    def Lock(self) -> Any:  # the name it stands in for
        outer = self

        class _Lock:
            def __init__(self) -> None:
                self._real = threading.Lock()

            def acquire(self, *args: Any) -> bool:
                return self._real.acquire(*args)

            def release(self) -> None:
                with outer.lock:
                    outer.released.append(id(self))
                self._real.release()

        return _Lock()


def test_a_starts_record_is_woken_before_the_other_records_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a leader inside its sync, and behind it (in this order) two steps' records,
    # a caller's start's, and two more steps'
    log = WriteAheadLog(str(tmp_path))
    log.open()
    held = _Held(monkeypatch)
    first = _logger(log, "lead")
    assert held.inside.wait(30)
    recorded = _Recorded()
    monkeypatch.setattr(wal_module, "threading", recorded)
    threads: list[threading.Thread] = []
    for name in ["s0", "s1", "start", "s2", "s3"]:
        threads.append(_logger(log, name, urgent=name == "start"))
        queued = len(threads)
        wait_until(lambda: _waiting(log, queued), what=f"{name} waiting")  # noqa: B023
    with log._mu:
        waiters = {it.body: id(it.waiter) for it in log._queue}
    start_waiter = next(w for body, w in waiters.items() if b"start" in body)
    # When the leader's sync ends, and it writes their batch and wakes them
    held.go.set()
    for th in [first, *threads]:
        th.join(30)
    # Then the start's thread was woken first among them (the leader woke the four
    # others next, having written both batches itself)
    woken = [w for w in recorded.released if w in waiters.values()]
    assert woken[0] == start_waiter and sorted(woken) == sorted(waiters.values())
    assert log.syncs == 2
    log.close()


def test_a_leader_that_goes_on_lets_go_of_the_logs_locks_every_hold_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log that keeps its locks 3 batches at most, and a thread queueing a record
    # (and waiting on it) during each of the first 6 syncs, so the leader always goes on
    monkeypatch.setattr(wal_module, "HOLD_BATCHES", 3)
    log = WriteAheadLog(str(tmp_path))
    log.open()
    held = _Held(monkeypatch)
    held.go.set()
    real = wal_module.write_synced
    threads: list[threading.Thread] = []

    def write_synced(fd: int, offset: int, chunk: list[bytes]) -> int:
        if len(threads) < 6:
            threads.append(_logger(log, f"t{len(threads)}"))
            wait_until(lambda: _waiting(log, 1), what="a record queued meanwhile")
        return real(fd, offset, chunk)

    monkeypatch.setattr(wal_module, "write_synced", write_synced)
    # When one thread's record starts it all
    log.log("first", 0, b"first\n")
    for th in threads:
        th.join(30)
    # Then 7 batches were written by that thread in a row (LEAD_ROUNDS is 8), and the
    # flock was taken anew after the 3rd and the 6th: other processes had their turns
    assert log.syncs == 7 and set(held.writers) == {threading.get_ident()}
    assert held.flocks.count(fcntl.LOCK_EX) == 3 and held.flocks.count(fcntl.LOCK_UN) == 3
    assert _lock_is_free(log) and not log._file_mu.locked()
    log.close()


_OTHER = """
import sys, time
from intemporal.store.wal import WriteAheadLog
log = WriteAheadLog(sys.argv[1])
t0 = time.monotonic()
log.log("other", 0, b"other\\n")
print(time.monotonic() - t0)
log.close()
"""


def test_another_process_writes_while_this_ones_threads_keep_the_log_busy(
    tmp_path: Path,
) -> None:
    # Given 8 threads of this process logging record after record, without a pause
    log = WriteAheadLog(str(tmp_path))
    log.open()
    stop = threading.Event()
    counts = [0] * 8

    def busy(t: int) -> None:
        while not stop.is_set() and counts[t] < 20_000:
            log.log(f"b{t}", counts[t], b"x\n")
            counts[t] += 1

    threads = [threading.Thread(target=busy, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: log.syncs > 50, what="the log busy")
        # When another process logs a record meanwhile
        other = subprocess.run(
            [sys.executable, "-c", _OTHER, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        busy_still = not stop.is_set() and all(th.is_alive() for th in threads)
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    # Then it got its turn while they were still writing (the locks are let go every
    # HOLD_BATCHES batches, not only once this process's log goes idle)
    assert other.returncode == 0, other.stderr
    assert busy_still
    state = walfile.read_state(log.folder)
    assert state is not None
    assert "other" in {r.path for r in log.records(state[1], state[2])}
    log.close()


# -- the lease a started run's thread is handed -------------------------------------------
GATE = threading.Event()


@intemporal.activity(name="busy_start.step")
def step(x: int) -> int:
    assert GATE.wait(30)
    return x + 1


@intemporal.workflow(name="busy_start.flow")
def flow(x: int) -> int:
    return step(x)


class _Calls:
    """Counts `FileStore.claim` and `FileStore.read` calls per run id."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.claims: list[str] = []
        self.reads: list[str] = []
        claim, read = file_store_module.FileStore.claim, file_store_module.FileStore.read

        def counted_claim(store: FileStore, run_id: str, owner: str = "") -> Any:
            self.claims.append(run_id)
            return claim(store, run_id, owner)

        def counted_read(store: FileStore, run_id: str) -> Any:
            self.reads.append(run_id)
            return read(store, run_id)

        monkeypatch.setattr(file_store_module.FileStore, "claim", counted_claim)
        monkeypatch.setattr(file_store_module.FileStore, "read", counted_read)


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_run_started_with_a_thread_free_is_durable_at_once_and_its_thread_claims_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a durable engine with threads free, its runs' activity held
    GATE.clear()
    calls = _Calls(monkeypatch)
    with Engine(FileStore(tmp_path / "s"), threads=4) as engine:
        log = engine.store._wal  # type: ignore[attr-defined]
        assert log is not None
        # When a run is started
        handle = engine.start(flow, 1, run_id="r1")
        # Then its first line is in the log when `start()` returns (a power cut keeps it)
        state = walfile.read_state(log.folder)
        assert state is not None
        firsts = [r for r in log.records(state[1], state[2]) if r.path == "r1.jsonl"]
        assert [r.offset for r in firsts] == [0]
        assert firsts[0].data == (tmp_path / "s" / "r1.jsonl").read_bytes()
        # ...and the thread executing it took its lease from start(): no claim, no read
        GATE.set()
        assert handle.result(timeout=30) == 2
    assert (calls.claims, calls.reads) == ([], [])


def test_with_every_thread_busy_a_started_run_holds_no_descriptor_until_a_thread_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an engine of one thread, busy with a run whose activity is held
    GATE.clear()
    calls = _Calls(monkeypatch)
    store = FileStore(tmp_path / "s")
    pool = store._spares  # spare files come and go meanwhile: not counted
    with Engine(store, threads=1) as engine:
        busy = engine.start(flow, 0, run_id="busy")
        wait_until(lambda: "busy" in engine._active, what="the first run executing")
        before = _descriptors() - pool.ready
        # When 30 more runs are started
        handles = [engine.start(flow, i, run_id=f"q{i}") for i in range(30)]
        # Then they wait their turn without a lease (a descriptor) each...
        assert _descriptors() - pool.ready - before < 10
        GATE.set()
        assert [h.result(timeout=60) for h in handles] == [i + 1 for i in range(30)]
        assert busy.result(timeout=30) == 1
    # ...and each is claimed by the thread that executes it
    assert sorted(set(calls.claims)) == sorted(f"q{i}" for i in range(30))


def test_a_spare_file_is_handed_out_locked(tmp_path: Path) -> None:
    # Given a store's pool of spare files, filled
    pool = Spares(str(tmp_path))
    assert pool.take() == -1 and pool.take() == -1  # the second miss asks for spares
    wait_until(lambda: pool.ready >= 1, what="a spare file")
    # When a spare is taken
    fd = pool.take()
    assert fd >= 0
    try:
        # Then it is flocked already: its creator links it as a journal it owns
        other = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)
        pool.close()


def test_starts_interleaved_with_busy_runs_keep_every_record_and_result(tmp_path: Path) -> None:
    # Given a durable engine of 8 threads
    GATE.set()
    with Engine(FileStore(tmp_path / "s"), threads=8) as engine:
        t0 = time.monotonic()
        # When 200 runs are started one after another while the earlier ones execute
        handles = [engine.start(flow, i, run_id=f"m{i}") for i in range(200)]
        # Then every run completes with its result, its journal whole
        assert [h.result(timeout=120) for h in handles] == [i + 1 for i in range(200)]
        assert time.monotonic() - t0 < 120
        for i in (0, 99, 199):
            events = engine.store.read(f"m{i}")
            assert [e["type"] for e in events][-1] == "run_completed"
