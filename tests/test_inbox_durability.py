"""A signal's inbox file is synced with its name: the first signal survives a power cut.

Syncing a new file's data is not enough: its name lives in its folder, which must be
synced too (`fsync(2)`: "an explicit fsync() on a file descriptor for the directory is
also needed"). The system calls are recorded with a monkeypatched `os.fsync`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from intemporal.store import file as file_module
from intemporal.store.file import FileStore


def _recording_fsync(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors via /proc")
@pytest.mark.parametrize("run_id", ["order-1", "order-1/3"], ids=["top-level", "child"])
def test_the_first_signal_syncs_the_inbox_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> None:
    # Given a run without an inbox yet, on a store without the write-ahead log (with it, the
    # message is logged and the log's replay after a power cut makes the inbox again:
    # `tests/test_wal.py`)
    monkeypatch.setattr(file_module, "wal_supported", lambda: False)
    store = FileStore(tmp_path / "store")
    assert store.create(run_id, {"type": "run_started", "workflow": "wf", "ts": 1.0})
    folder = os.path.dirname(str(store.path(run_id)))
    synced = _recording_fsync(monkeypatch)

    # When its first signal is sent
    store.send(run_id, {"type": "signal", "name": "go", "ts": 2.0})

    # Then the inbox exists and its folder was synced after it was made
    assert store.path(run_id, ".inbox").exists()
    assert folder in synced

    # And a second signal (the name is on disk already) syncs no folder again
    synced.clear()
    store.send(run_id, {"type": "signal", "name": "go", "ts": 3.0})
    assert folder not in synced
    messages, _ = store.inbox(run_id)
    assert [m["ts"] for m in messages] == [2.0, 3.0]
