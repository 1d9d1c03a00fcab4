"""`start()` on a busy engine (scenario 2 of `make bench`: 1,000 starts on 32 threads): the
lease a started run's thread is handed, so it neither claims nor reads the new journal."""

from __future__ import annotations

import fcntl
import os
import re
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
from intemporal.store import spares as spares_module
from intemporal.store import wal as wal_module
from intemporal.store import walfile
from intemporal.store.spares import Spares

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")


GATE = threading.Event()


@intemporal.activity(name="busy_start.step")
def step(x: int) -> int:
    assert GATE.wait(30)
    return x + 1


@intemporal.workflow(name="busy_start.flow")
def flow(x: int) -> int:
    return step(x)


class _Calls:
    """Counts `FileStore.claim` and `FileStore.read` calls per run id, of the stores below
    `root` only: another test's engine still winding down in this process (its "r1") is
    not this test's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.claims: list[str] = []
        self.reads: list[str] = []
        claim, read = file_store_module.FileStore.claim, file_store_module.FileStore.read
        mine = str(root)

        def counted_claim(store: FileStore, run_id: str, owner: str = "") -> Any:
            if str(store.location).startswith(mine):
                self.claims.append(run_id)
            return claim(store, run_id, owner)

        def counted_read(store: FileStore, run_id: str) -> Any:
            if str(store.location).startswith(mine):
                self.reads.append(run_id)
            return read(store, run_id)

        monkeypatch.setattr(file_store_module.FileStore, "claim", counted_claim)
        monkeypatch.setattr(file_store_module.FileStore, "read", counted_read)


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("named", [True, False], ids=["its-id-given", "its-id-drawn"])
def test_a_run_started_with_a_thread_free_is_durable_at_once_and_its_thread_claims_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    # Given a durable engine with threads free, its runs' activity held
    GATE.clear()
    calls = _Calls(monkeypatch, tmp_path)
    with Engine(FileStore(tmp_path / "s"), threads=4) as engine:
        log = engine.store._wal  # type: ignore[attr-defined]
        assert log is not None
        # When a run is started (its id given, or drawn by start())
        handle = engine.start(flow, 1, run_id="r1" if named else None)
        # Then its first line is in the log when `start()` returns (a power cut keeps it)
        state = walfile.read_state(log.folder)
        assert state is not None
        path = f"{handle.run_id}.jsonl"
        firsts = [r for r in log.records(state[1], state[2]) if r.path == path]
        assert [(r.kind, r.offset) for r in firsts] == [(wal_module.WRITE, 0)]
        assert firsts[0].data == (tmp_path / "s" / path).read_bytes()
        # ...and the thread executing it took its lease from start(): no claim, no read
        GATE.set()
        assert handle.result(timeout=30) == 2
    assert (calls.claims, calls.reads) == ([], [])


def test_with_every_thread_busy_a_started_run_holds_no_descriptor_until_a_thread_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an engine of one thread, busy with a run whose activity is held
    GATE.clear()
    calls = _Calls(monkeypatch, tmp_path)
    store = FileStore(tmp_path / "s")
    pool = store._spares  # spare files come and go meanwhile: not counted
    with Engine(store, threads=1) as engine:
        busy = engine.start(flow, 0, run_id="busy")  # executing once start() returns
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


def test_the_start_profiles_cost_mode_reports_cpu_syncs_and_context_switches(
    tmp_path: Path,
) -> None:
    # When the bench's cost mode runs scenario 2 small (50 runs of 10 activities)
    bench = Path(__file__).resolve().parent.parent / "bench" / "start_profile.py"
    cmd = [sys.executable, str(bench), "--cost", "--quick", "--tmp", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    # Then it reports each figure, and the log synced at least once per start
    figures = dict(re.findall(r"^  (\S.*?\S)\s{2,}([\d,.]+) \(", out, re.MULTILINE))
    for name in ("start loop, s", "process CPU, user s", "context switches, voluntary"):
        assert name in figures, out
    assert float(figures["syncs of the log"].replace(",", "")) >= 50, out


def test_a_spare_that_cannot_be_locked_is_closed_and_the_failure_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pool whose new spares cannot be flocked (an I/O error)
    class _Refusing:
        LOCK_EX, LOCK_NB = fcntl.LOCK_EX, fcntl.LOCK_NB

        @staticmethod
        def flock(fd: int, op: int) -> None:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(spares_module, "fcntl", _Refusing)
    pool = Spares(str(tmp_path))
    before = _descriptors()
    # When a refill is asked for (the second take that finds none)
    assert pool.take() == -1 and pool.take() == -1
    # Then it fails, counted with its error, and keeps no descriptor open
    wait_until(lambda: pool.failed >= 1, what="the refill failing")
    assert pool.ready == 0 and isinstance(pool.error, OSError)
    wait_until(lambda: _descriptors() <= before, what="every descriptor closed")
    pool.close()
