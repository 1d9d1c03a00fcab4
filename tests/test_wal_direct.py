"""The write-ahead log written with direct I/O (`waldirect.py`) where the filesystem allows it.

| kind                                                  | tests                                      |
| ----------------------------------------------------- | ------------------------------------------ |
| direct only when asked (INTEMPORAL_WAL_DIRECT=1)     | test_the_log_is_written_direct_only_*      |
| direct on a disk, buffered on tmpfs, same bytes       | test_the_log_is_written_direct_on_a_disk_* |
| direct and buffered logs read each other's            | test_a_log_written_direct_is_read_*        |
| a buffered read right after a direct write            | test_a_buffered_read_right_after_*         |
| two processes writing turn by turn in one tail block  | test_two_processes_taking_turns_*          |
| a power cut tearing a rewrite of acknowledged records | test_a_power_cut_tearing_a_batch_*         |
| a filesystem refusing direct writes after all         | test_a_log_whose_direct_write_is_refused_* |
| a checkpoint leaves the segment being written alone   | test_a_checkpoint_copies_the_log_before_*  |

A full disk under a log written direct: `test_disk_full.py` (its ext4 disk).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from crashsim import Disk

from intemporal import FileStore
from intemporal.store import wal as wal_module
from intemporal.store import walcheckpoint, waldirect, walfile
from intemporal.store.wal import WriteAheadLog

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")


def _takes_direct_writes(folder: Path) -> bool:
    """Whether the filesystem of `folder` takes an aligned O_DIRECT write (found by trying)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    path = folder / "direct-probe"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        with mmap.mmap(-1, 4096) as buf:
            return os.pwrite(fd, buf, 0) == 4096
    except OSError:
        return False
    finally:
        os.close(fd)
        path.unlink()


@pytest.fixture
def on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on a disk the log writes direct (the tests' temporary folder, if it is one),
    direct writes asked for (`INTEMPORAL_WAL_DIRECT=1`)."""
    monkeypatch.setattr(wal_module, "DIRECT", True)
    monkeypatch.setenv("INTEMPORAL_WAL_DIRECT", "1")  # for the processes it starts
    if waldirect.filesystem(str(tmp_path)) in waldirect.IN_MEMORY:
        pytest.skip("the temporary folder is in memory: no disk to write direct to")
    if not _takes_direct_writes(tmp_path):
        pytest.skip("the temporary folder's filesystem refuses O_DIRECT")
    return tmp_path


def _logged(log: WriteAheadLog) -> list[tuple[str, int, bytes]]:
    state = walfile.read_state(log.folder)
    assert state is not None
    return [(r.path, r.offset, r.data) for r in log.records(state[1], state[2])]


RECORDS = [(f"f{i}", 0, f"line {i} ".encode() * (1 + i % 40)) for i in range(60)]


def _write(folder: Path, records: list[tuple[str, int, bytes]]) -> WriteAheadLog:
    log = WriteAheadLog(str(folder))
    for rec in records:
        log.log(*rec)
    return log


_MODE = """
import sys
from intemporal.store.wal import WriteAheadLog
log = WriteAheadLog(sys.argv[1])
log.log("a", 0, b"a")
print(log.direct)
log.close()
"""


@pytest.mark.parametrize("asked", ["1", "0", None])
def test_the_log_is_written_direct_only_when_asked(
    on_disk: Path, monkeypatch: pytest.MonkeyPatch, asked: str | None
) -> None:
    # Given a process started with INTEMPORAL_WAL_DIRECT=1, =0 or without it
    if asked is None:
        monkeypatch.delenv("INTEMPORAL_WAL_DIRECT")
    else:
        monkeypatch.setenv("INTEMPORAL_WAL_DIRECT", asked)
    # When it logs a record on this disk, Then it wrote direct only if asked to
    out = subprocess.run(
        [sys.executable, "-c", _MODE, str(on_disk)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(asked == "1")


def test_the_log_is_written_direct_on_a_disk_and_buffered_on_tmpfs(on_disk: Path) -> None:
    if not Path("/dev/shm").is_dir() or waldirect.filesystem("/dev/shm") != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    # Given the same records logged on this disk and on tmpfs
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (on_disk / "d").mkdir()
        direct, buffered = _write(on_disk / "d", RECORDS), _write(shm, RECORDS)
        # Then the disk's log was written direct, tmpfs's buffered (it has no disk)...
        assert (direct.direct, buffered.direct) == (True, False)
        assert _logged(direct) == _logged(buffered) == RECORDS
        direct.close()
        buffered.close()
        # ...with the same bytes in the same files (the padding is the zeros already there)
        segment = (on_disk / "d" / ".wal" / "1.log").read_bytes()
        assert segment == (shm / ".wal" / "1.log").read_bytes()
        assert len(segment) == wal_module.FIRST_SEGMENT
    finally:
        shutil.rmtree(shm)


def test_a_log_written_direct_is_read_and_replayed_buffered_and_back(
    on_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log written in turn direct, buffered, direct (each a new process's log), its
    # tail block shared by all three
    for n, direct in enumerate([True, False, True, False]):
        monkeypatch.setattr(wal_module, "DIRECT", direct)
        log = _write(on_disk, RECORDS[n * 15 : n * 15 + 15])
        assert log.direct == direct
        # Then each reads back every record so far, whoever wrote it
        assert _logged(log) == RECORDS[: n * 15 + 15]
        if direct and n:  # the tail block, written by another log, was read back first
            assert log._direct is not None and log._direct.rereads == 1
        log.close()
    # ...and a replay after a reboot puts each record in its file
    monkeypatch.setattr(walfile, "boot_id", lambda: "boot-after")
    log = WriteAheadLog(str(on_disk))
    assert log.recover() == len(RECORDS)
    for path, _, data in RECORDS:
        assert (on_disk / path).read_bytes() == data
    log.close()


def test_a_buffered_read_right_after_a_direct_write_sees_it(on_disk: Path) -> None:
    # Given a log written direct, its segment read through the page cache (now cached)
    log = _write(on_disk, RECORDS[:3])
    assert log.direct
    segment = on_disk / ".wal" / "1.log"
    before = segment.read_bytes()
    # When one more record is written direct, Then a buffered read sees it at once
    log.log(*RECORDS[3])
    after = segment.read_bytes()
    assert after != before and RECORDS[3][2] in after
    assert _logged(log) == RECORDS[:4]
    log.close()


_TAKER = """
import sys
from intemporal.store.wal import WriteAheadLog
log = WriteAheadLog(sys.argv[1])
for line in sys.stdin:
    i = int(line)
    log.log(f"child-{i}", 0, b"c" * (50 + i % 90))
    print(log._direct.rereads if log._direct else -1, flush=True)
log.close()
"""


def test_two_processes_taking_turns_in_one_tail_block_lose_nothing(
    on_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two processes sharing one log, each writing a record in turn (so each batch
    # goes into the tail block the other one wrote last)
    log = WriteAheadLog(str(on_disk))
    log.open()
    child = subprocess.Popen(
        [sys.executable, "-c", _TAKER, str(on_disk)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    expected = []
    rereads = 0
    try:
        for i in range(60):
            log.log(f"parent-{i}", 0, b"p" * (40 + i % 70))
            expected.append((f"parent-{i}", 0, b"p" * (40 + i % 70)))
            child.stdin.write(f"{i}\n")
            child.stdin.flush()
            rereads = int(child.stdout.readline())
            expected.append((f"child-{i}", 0, b"c" * (50 + i % 90)))
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    # Then each read the tail block back before writing into it (not its stale copy)...
    assert log.direct and log._direct is not None
    assert log._direct.rereads > 30 and rereads > 30, (log._direct.rereads, rereads)
    # ...and every record of both is in the log, in turn
    assert _logged(log) == expected
    log.close()
    # and a replay after a reboot puts every one back in its file
    monkeypatch.setattr(walfile, "boot_id", lambda: "boot-after")
    again = WriteAheadLog(str(on_disk))
    assert again.recover() == 120
    for path, _, data in expected:
        assert (on_disk / path).read_bytes() == data
    again.close()


def test_a_power_cut_tearing_a_batch_that_rewrites_acknowledged_records_loses_none(
    on_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log written direct on a recorded disk: record A (acknowledged: synced),
    # then B, whose direct write rewrites the block holding A (A spans two sectors)
    root = on_disk / "store"
    root.mkdir()
    disk = Disk(root)
    a, b = ("a", 0, b"A" * 700), ("b", 0, b"B" * 300)
    with disk.installed(monkeypatch):
        log = WriteAheadLog(str(root))
        log.log(*a)
        acked = disk.mark()
        log.log(*b)
        assert log.direct
        log.close()
    writes = [i for i in range(acked, len(disk.ops)) if disk.ops[i][0] == "write"]
    write = disk.ops[writes[0]]
    assert write[4] is True and write[2] == 0 and len(write[3]) == 4096  # direct, whole block
    assert disk.ops[writes[0] + 1][0] == "sync"  # O_DSYNC: synced as it returns
    # When the power fails inside B's write (after it began, before it returned), tearing
    # it at random sectors, many times over
    seen = set()
    for n in range(60):
        into = on_disk / f"cut-{n}"
        into.mkdir()
        disk.rebuild(writes[0] + 1, into, random.Random(n))
        got = _logged(WriteAheadLog(str(into)))
        # Then A is always whole; B is there or not, never half
        assert got in ([a], [a, b]), n
        seen.add(len(got))
    assert seen == {1, 2}  # the cuts both kept and lost B's sectors


def test_a_log_whose_direct_write_is_refused_writes_buffered_from_then_on(
    on_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log written direct, whose filesystem refuses a direct write after all
    log = _write(on_disk, RECORDS[:2])
    assert log.direct and log._direct is not None

    real = os.pwritev

    def pwritev(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "pwritev", pwritev)
    # When the next records are logged, Then they are written buffered, synced, and kept
    for rec in RECORDS[2:5]:
        log.log(*rec)
    assert not log.direct
    assert _logged(log) == RECORDS[:5]
    log.close()


def test_a_file_store_on_a_disk_writes_its_log_direct(on_disk: Path) -> None:
    # Given a file store on this disk, When a run is created durably
    store = FileStore(on_disk / "s")
    lease = store.create_claimed(
        "r", {"type": "run_started", "workflow": "wf", "args": [], "kwargs": {}, "ts": 1.0}
    )
    assert lease is not None
    lease.release()
    # Then its log writes direct, and the run reads back
    assert store._wal is not None and store._wal.direct
    assert [e["type"] for e in store.read("r")] == ["run_started"]
    store.close()


def test_a_checkpoint_copies_the_log_before_it_not_the_segment_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log of tiny segments, written into its third one, no checkpoint made yet
    monkeypatch.setattr(wal_module, "FIRST_SEGMENT", 4096)
    monkeypatch.setattr(wal_module, "MAX_SEGMENT", 4096)
    log = WriteAheadLog(str(tmp_path))
    monkeypatch.setattr(log, "_checkpoint_behind", lambda upto: None)
    records = [(f"f{i}", 0, b"x" * 300) for i in range(30)]
    for rec in records:
        log.log(*rec)
    assert log._tail is not None and wal_module._TAIL.unpack_from(log._tail)[0] == 3
    copied: list[int] = []
    real = walcheckpoint.read_all

    def read_all(fd: int) -> bytes:
        copied.append(next(s for s, f in log._fds.items() if f == fd))
        return real(fd)

    monkeypatch.setattr(walcheckpoint, "read_all", read_all)
    log._mine_from = wal_module._FULL  # as if another process had written there too
    # When a checkpoint moves to the start of that third segment
    log._checkpoint_outside((3, 0))
    # Then it copied the two segments before it only (not the one being written, whose
    # pages the page cache would then hold again for each direct write to drop)...
    assert sorted(copied) == [1, 2]
    state = walfile.read_state(log.folder)
    assert state is not None and state[1:] == (3, 0)
    # ...and the log still reads back every record after it
    log.log("g", 0, b"y")
    assert [r.path for r in log.records(3, 0)][-1] == "g"
    log.close()
