"""A thread of the write-ahead log's group commit interrupted (`KeyboardInterrupt`: Ctrl-C
lands in the main thread, which executes `engine.run`'s run and leads batches too).

| kind                                              | right                                   |
| ------------------------------------------------- | --------------------------------------- |
| interrupted while it leads (writing a batch)      | the interrupt raised in it; the batch's |
|                                                   | other records fail (not acknowledged);  |
|                                                   | the log goes on: another thread's write |
|                                                   | returns                                 |
| interrupted between queuing its record and        | the same: its record written, the       |
| waiting for it (a lease's durable append)         | interrupt raised, the log goes on       |
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from intemporal import FileStore
from intemporal.store import wal as wal_module
from intemporal.store import wallogged
from intemporal.store.wal import WriteAheadLog

DEADLINE = 10.0  # s: a hang fails the test, not the suite


def _writes_in_time(wal: WriteAheadLog, name: str) -> bool:
    """Whether another thread's durable write returns (a stuck leader blocks it for good)."""
    done = threading.Event()

    def write() -> None:
        wal.log(name, 0, b"after")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done.wait(DEADLINE)


def test_a_leader_interrupted_while_writing_hands_the_log_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WriteAheadLog(str(tmp_path))
    try:
        wal.log("warm", 0, b"x")  # the log opened
        real = WriteAheadLog._write
        calls = [0]

        def interrupted(self: WriteAheadLog, batch: list[Any]) -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise KeyboardInterrupt  # Ctrl-C, raised as the write's syscall returns
            real(self, batch)

        monkeypatch.setattr(WriteAheadLog, "_write", interrupted)
        # When the thread leading a batch is interrupted in its write
        with pytest.raises(KeyboardInterrupt):
            wal.log("a", 0, b"a")
        # Then the log goes on: another thread's write returns
        assert _writes_in_time(wal, "b")
    finally:
        wal.close()


def test_a_lease_interrupted_between_queuing_and_waiting_leaves_the_log_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "s")
    try:
        started = {"type": "run_started", "workflow": "wf", "args": [], "kwargs": {}, "ts": 1.0}
        lease = store.create_claimed("r", started, sync=True)
        assert lease is not None
        real = wallogged.Logged.take

        def take(self: wallogged.Logged, fd: int, end: int) -> Any:
            real(self, fd, end)
            raise KeyboardInterrupt  # Ctrl-C once the record is queued, before its wait

        monkeypatch.setattr(wallogged.Logged, "take", take)
        with pytest.raises(KeyboardInterrupt):
            lease.append({"type": "side_effect", "seq": 1, "name": "n", "ts": 1.0}, True)
        monkeypatch.setattr(wallogged.Logged, "take", real)
        wal = store._wal
        assert wal is not None
        assert _writes_in_time(wal, "b")
        lease.release()
    finally:
        store.close()


class _InterruptedLock:
    """A waiter's lock whose blocking acquire is interrupted (Ctrl-C while it waits)."""

    def __init__(self) -> None:
        self._calls = 0

    def acquire(self) -> bool:
        self._calls += 1
        if self._calls == 2:  # the first takes it; the second blocks until woken
            raise KeyboardInterrupt
        return True

    def release(self) -> None:
        pass


def test_a_thread_interrupted_while_it_waits_behind_the_leader_is_not_handed_the_lead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WriteAheadLog(str(tmp_path))
    try:
        wal.log("warm", 0, b"x")
        real = WriteAheadLog._write
        writing, go = threading.Event(), threading.Event()

        def slow(self: WriteAheadLog, batch: list[Any]) -> None:
            writing.set()
            assert go.wait(DEADLINE)
            real(self, batch)

        monkeypatch.setattr(WriteAheadLog, "_write", slow)
        # Given a leader writing a batch
        leader = threading.Thread(target=wal.log, args=("a", 0, b"a"), daemon=True)
        leader.start()
        assert writing.wait(DEADLINE)
        monkeypatch.setattr(WriteAheadLog, "_write", real)
        # When a thread queued behind it is interrupted while it waits
        monkeypatch.setattr(wal_module.threading, "Lock", _InterruptedLock)
        with pytest.raises(KeyboardInterrupt):
            wal.log("b", 0, b"b")
        monkeypatch.undo()
        go.set()
        leader.join(DEADLINE)
        # Then the log goes on: its record is written by the next batch, which leads
        assert _writes_in_time(wal, "c")
    finally:
        wal.close()


def test_a_log_write_interrupted_before_its_wait_leaves_the_log_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WriteAheadLog(str(tmp_path))
    try:
        wal.log("warm", 0, b"x")
        real = WriteAheadLog.wait

        def wait(self: WriteAheadLog, item: Any) -> None:
            monkeypatch.setattr(WriteAheadLog, "wait", real)
            raise KeyboardInterrupt  # Ctrl-C as `wait` is entered: the record queued

        monkeypatch.setattr(WriteAheadLog, "wait", wait)
        # When a write (an inbox message's, a new run's) is interrupted before its wait
        with pytest.raises(KeyboardInterrupt):
            wal.log("a", 0, b"a")
        # Then the log goes on
        assert _writes_in_time(wal, "b")
    finally:
        wal.close()
