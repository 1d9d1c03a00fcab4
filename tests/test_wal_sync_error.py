"""A file the write-ahead log's checkpoint fails to sync (`fdatasync` raising `EIO`).

| kind                                                  | right                                 |
| ----------------------------------------------------- | ------------------------------------- |
| one file's sync fails, in the checkpointer thread     | the checkpoint stays; the log takes   |
| or on the commit path, among many files               | no more records (each write raises    |
|                                                       | `OSError`)                            |
| the same file's sync succeeds when tried again (Linux | still no checkpoint past its records: |
| reports a writeback error once, then forgets it)      | the data may never have reached disk  |

Linux marks the pages of a file whose writeback failed clean, and reports the error to
one `fsync` only: a second sync "succeeds" with the data lost. Moving the checkpoint past
the file's records then would let their segment be overwritten: after a power cut the
acknowledged lines would be gone from both the file and the log.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from intemporal.store import wal as wal_module
from intemporal.store import walfile
from intemporal.store.wal import WriteAheadLog


def _log_files(root: Path, wal: WriteAheadLog, count: int) -> None:
    for i in range(count):
        (root / f"f{i}.jsonl").write_bytes(b"x" * 10)
        wal.log(f"f{i}.jsonl", 0, b"x" * 10)


def _fail_once(monkeypatch: pytest.MonkeyPatch, bad: Path) -> list[int]:
    """`fdatasync` of `bad` raises EIO the first time only (as Linux reports a writeback
    error once); the number of times it failed is counted."""
    failed = [0]
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        if failed[0] == 0 and os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(bad):
            failed[0] += 1
            raise OSError(errno.EIO, "simulated writeback error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return failed


@pytest.mark.parametrize("where", ["commit path", "checkpointer thread"])
def test_a_file_that_failed_to_sync_keeps_the_checkpoint_and_stops_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # Given a log naming 40 files, each synced one by one (much else unwritten)
    monkeypatch.setattr(walfile, "dirty_bytes", lambda: 1 << 50)
    wal = WriteAheadLog(str(tmp_path))
    try:
        _log_files(tmp_path, wal, 40)
        state = walfile.read_state(wal.folder)
        assert state is not None
        upto = (wal_module._TAIL.unpack_from(wal._tail)[0] + 1, 0)  # type: ignore[arg-type]
        # When one file's sync fails in a checkpoint
        failed = _fail_once(monkeypatch, tmp_path / "f17.jsonl")
        with pytest.raises(OSError):
            if where == "commit path":
                wal._checkpoint(state, upto, replay=False)
            else:
                wal._checkpoint_outside(upto)  # the checkpointer thread's (which drops it)
        assert failed == [1]
        # Then the checkpoint stays, even once the same sync would succeed
        assert walfile.read_state(wal.folder) == state
        with pytest.raises(OSError):
            wal._checkpoint(state, upto, replay=False)
        with pytest.raises(OSError):
            wal._checkpoint_outside(upto)
        assert walfile.read_state(wal.folder) == state
        # ...and the log acknowledges nothing more: a write raises, saying why
        with pytest.raises(OSError) as info:
            wal.log("g.jsonl", 0, b"y")
        assert "simulated writeback error" in str(info.value)
    finally:
        wal.close()
