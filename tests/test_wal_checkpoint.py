"""The write-ahead log's checkpoints: syncing each file, or the whole filesystem at once.

A checkpoint makes durable the files the log's records name before their segment is
overwritten: each with its own `fdatasync` (a device flush each), or, when it names more
than `walcheckpoint.BULK` files while the system has little else unwritten, all at once with one
`syncfs` (then an `fsync` of the store's folder). A `syncfs` that fails, or that cannot be
trusted to report a failure, is never taken for success: each file is synced then.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from test_wal import _fuzz, _started

from intemporal import FileStore
from intemporal.store import wal as wal_module
from intemporal.store import walcheckpoint, walfile

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")

MiB = 1 << 20


@pytest.mark.parametrize(
    ("files", "dirty", "whole"),
    [
        (16, 0, False),  # a few files: each synced, whatever else is unwritten
        (17, 0, True),  # more than a few, nothing else unwritten: the whole filesystem
        (17, 17 * walfile.DIRTY_PER_FILE, True),
        (17, 17 * walfile.DIRTY_PER_FILE + 1, False),  # too much of others' data to write
        (1508, 90 * MiB, True),  # a 4 MiB segment's journals, a busy system
        (1508, 900 * MiB, False),  # another program writing hundreds of MiB
        (1508, None, False),  # the system's unwritten bytes unknown
    ],
)
def test_a_checkpoint_syncs_the_whole_filesystem_only_for_many_files_and_little_unwritten(
    files: int, dirty: int | None, whole: bool
) -> None:
    assert walfile.whole_filesystem(files, 16, dirty) is whole


class _Calls:
    """The syncs `walfile.sync_files` makes, with `syncfs` answering as told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, dirty: int, fails: bool = False) -> None:
        self.files: list[str] = []
        self.folders: list[str] = []
        self.syncfs = 0
        self.order: list[str] = []  # "syncfs", "fsync <path>", in the order made
        self.read_dirty = 0
        real_fsync = os.fsync

        def fdatasync(fd: int) -> None:
            self.files.append(os.readlink(f"/proc/self/fd/{fd}"))

        def fsync(fd: int) -> None:
            self.folders.append(os.readlink(f"/proc/self/fd/{fd}"))
            self.order.append(f"fsync {self.folders[-1]}")
            real_fsync(fd)

        def syncfs(fd: int) -> None:
            self.syncfs += 1
            self.order.append("syncfs")
            if fails:
                raise OSError(errno.EIO, "simulated")

        def dirty_bytes() -> int:
            self.read_dirty += 1
            return dirty

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(walfile, "syncfs", syncfs)
        monkeypatch.setattr(walfile, "dirty_bytes", dirty_bytes)
        monkeypatch.setattr(walfile, "syncfs_reports_errors", lambda: True)

    def each_synced(self, root: Path, paths: dict[str, bool], syncfs: int) -> None:
        """Check that `sync_files` of `paths` (more than 16) synced each file, once, after
        `syncfs` calls of `syncfs`."""
        assert walfile.sync_files(str(root), paths, 16) is False
        assert self.syncfs == syncfs
        assert sorted(self.files) == sorted(str(root / p) for p in paths)


def _files(root: Path, count: int) -> dict[str, bool]:
    (root / "sub").mkdir()
    for i in range(count):
        (root / "sub" / f"f{i}.jsonl").write_bytes(b"x")
    return {f"sub/f{i}.jsonl": i % 2 == 0 for i in range(count)}


def test_many_files_and_little_unwritten_take_one_syncfs_and_one_flush_of_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _files(tmp_path, 20)
    calls = _Calls(monkeypatch, dirty=1 * MiB)
    assert walfile.sync_files(str(tmp_path), paths, 16) is True
    # the flush after: syncfs writes the block device's buffers after its own flush
    assert calls.order == ["syncfs", f"fsync {tmp_path}"] and calls.files == []


def test_much_unwritten_or_few_files_sync_each_file_and_each_new_ones_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _files(tmp_path, 20)
    calls = _Calls(monkeypatch, dirty=20 * walfile.DIRTY_PER_FILE + 1)
    calls.each_synced(tmp_path, paths, syncfs=0)
    assert calls.folders == [str(tmp_path / "sub")]
    # ...and a few files do not even read the system's unwritten bytes
    calls.files.clear()
    assert walfile.sync_files(str(tmp_path), paths, 20) is False
    assert calls.read_dirty == 1 and len(calls.files) == 20


def test_a_failed_syncfs_is_not_taken_for_success_each_file_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _files(tmp_path, 20)
    calls = _Calls(monkeypatch, dirty=0, fails=True)
    calls.each_synced(tmp_path, paths, syncfs=1)
    assert calls.folders == [str(tmp_path / "sub")]


def test_a_file_that_fails_to_sync_after_a_failed_syncfs_fails_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a checkpoint whose syncfs fails, then one of its files' fdatasync
    paths = _files(tmp_path, 20)
    _Calls(monkeypatch, dirty=0, fails=True)
    # Then it raises, as one whose files are synced each does
    _fails_on(monkeypatch, tmp_path, paths, None)


def _fails_on(
    monkeypatch: pytest.MonkeyPatch, root: Path, paths: dict[str, bool], bad: str | None
) -> None:
    """Check that `sync_files` of `paths` raises the EIO of the file `bad` (None: every
    file) failing to sync."""

    def fdatasync(fd: int) -> None:
        if bad is None or os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(root / bad):
            raise OSError(errno.EIO, "simulated")

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(OSError) as info:
        walfile.sync_files(str(root), paths, 16)
    assert info.value.errno == errno.EIO


def test_files_synced_each_are_synced_side_by_side_once_each_and_a_failure_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a checkpoint of 200 files, each synced (too much else unwritten)
    paths = _files(tmp_path, 200)
    calls = _Calls(monkeypatch, dirty=1 << 50)
    both = threading.Barrier(2, timeout=30)  # the first two syncs wait for each other
    threads: set[int] = set()
    first = [0]
    lock = threading.Lock()
    real = os.fdatasync  # `_Calls`'s

    def fdatasync(fd: int) -> None:
        with lock:
            threads.add(threading.get_ident())
            first[0] += 1
            wait = first[0] <= 2
        if wait:
            both.wait()
        real(fd)  # `calls` notes it

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    # Then each file is synced once, on several threads at once
    walfile.sync_files(str(tmp_path), paths, 16)
    assert sorted(calls.files) == sorted(str(tmp_path / p) for p in paths)
    assert 2 <= len(threads) <= walfile.SYNC_THREADS
    # ...and when one file fails to sync, the checkpoint raises its error
    _fails_on(monkeypatch, tmp_path, paths, "sub/f123.jsonl")


def test_a_folder_on_another_filesystem_has_its_files_synced_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a checkpoint whose files are in a folder that is a mount point of another
    # filesystem (syncfs of the store's would not reach them)
    paths = _files(tmp_path, 20)
    calls = _Calls(monkeypatch, dirty=0)
    real_stat = os.stat
    sub = str(tmp_path / "sub")

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        got = real_stat(path, *args, **kwargs)
        if os.fspath(path) != sub:
            return got
        fields = list(got)
        fields[2] = got.st_dev + 1  # st_dev
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", stat)
    # Then each file is synced, not the filesystem of the store's folder
    calls.each_synced(tmp_path, paths, syncfs=0)


def test_an_untrusted_or_missing_syncfs_falls_back_to_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _files(tmp_path, 20)
    calls = _Calls(monkeypatch, dirty=0)
    monkeypatch.setattr(walfile, "syncfs_reports_errors", lambda: False)
    calls.each_synced(tmp_path, paths, syncfs=0)


@pytest.mark.parametrize(
    ("system", "release", "trusted"),
    [
        ("linux", "6.18.44-fc-v669", True),
        ("linux", "5.8.0", True),
        ("linux", "5.7.19-generic", False),  # syncfs returned 0 whatever the disk said
        ("linux", "4.19.0", False),
        ("linux", "weird", False),
        ("darwin", "23.1.0", False),
    ],
)
def test_syncfs_is_trusted_only_where_it_reports_write_errors(
    monkeypatch: pytest.MonkeyPatch, system: str, release: str, trusted: bool
) -> None:
    monkeypatch.setattr(walfile, "_SYNCFS_OK", [])
    monkeypatch.setattr(walfile.sys, "platform", system)
    real = os.uname()
    fake: Any = type(real)((real.sysname, real.nodename, release, real.version, real.machine))
    monkeypatch.setattr(os, "uname", lambda: fake)
    assert walfile.syncfs_reports_errors() is trusted


def test_the_systems_unwritten_bytes_are_read_from_meminfo() -> None:
    with open("/proc/meminfo", "rb") as f:
        text = f.read()
    dirty = walfile.dirty_bytes()
    assert dirty is not None and dirty >= 0 and b"Dirty:" in text


def test_a_real_syncfs_checkpoint_on_this_system_succeeds(tmp_path: Path) -> None:
    # the real call, where trusted: it returns, and a second flush of the folder follows
    # (in a memory filesystem where there is one: on the disk's, it would write back every
    # other program's unwritten data, which is why a checkpoint looks first)
    if not walfile.syncfs_reports_errors():
        pytest.skip("syncfs does not report write errors on this kernel")
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as folder:
        assert walfile.sync_all(folder) is True


def test_a_store_counts_its_checkpoints_syncs_by_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store with tiny segments whose checkpoints name more files than BULK
    monkeypatch.setattr(wal_module, "FIRST_SEGMENT", 4096)
    monkeypatch.setattr(wal_module, "MAX_SEGMENT", 4096)
    monkeypatch.setattr(walcheckpoint, "BULK", 2)
    monkeypatch.setattr(walfile, "syncfs_reports_errors", lambda: True)
    counted: list[int] = []
    monkeypatch.setattr(walfile, "syncfs", lambda fd: counted.append(fd))
    for dirty, whole in ((0, True), (1 << 50, False)):
        monkeypatch.setattr(walfile, "dirty_bytes", lambda d=dirty: d)
        store = FileStore(tmp_path / f"s{whole}")
        log = store._wal
        assert log is not None
        # When runs are created until the log has lapped its 4 segments
        for i in range(40):
            assert store.create(f"r{i}", _started())
        store.close()
        # Then its checkpoints synced the whole filesystem, or each file
        assert (log.fs_syncs > 0, log.file_syncs > 0) == (whole, not whole)
    assert len(counted) > 0


@pytest.mark.parametrize("whole", ["syncfs", "failing"])
def test_no_acknowledged_record_is_lost_at_power_cuts_around_whole_filesystem_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: str
) -> None:
    # Given the power-cut fuzz (starts, steps, fan-outs, signals, ends, gc) whose every
    # checkpoint syncs the whole filesystem ("syncfs"), or tries to and fails ("failing":
    # each file is synced then), cut at random points and around each of those syncs
    # Then every acknowledged record is there after each cut
    _fuzz(tmp_path, monkeypatch, seed=7, runs=10, cuts=100, whole=whole)
