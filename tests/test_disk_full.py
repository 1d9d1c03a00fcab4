"""A real full disk and a real read-only store under the file store, and short writes.

The store lives on a 2 MB tmpfs mounted for the test (the tests run as root here and in
CI); where mounting is not permitted, `Disk` fails the same system calls by injection
instead. A full disk makes a journal append fail with ENOSPC or write only a prefix of
the line (a short write): either way the journal is cut back to what it was before that
append, the run stops, the caller gets `StoreUnavailable`, and once space is freed a resume
finishes the run, running again at most the step that was in flight.

| kind                                   | tests                                                  |
| -------------------------------------- | ------------------------------------------------------ |
| disk full at an activity's result      | test_disk_full_at_an_activity_result_*                 |
| disk full at the run's creation        | test_disk_full_at_the_runs_creation_* (and from a spare) |
| disk full at the final record          | test_disk_full_at_the_final_record_*                   |
| read-only store: start, resume         | test_read_only_store_*                                 |
| disk full when a signal is sent        | test_disk_full_when_a_signal_is_sent_*                 |
| a short write (os.write, os.pwritev)   | test_a_short_write_leaves_the_journal_as_it_was_*      |
| a short write of a run's first line    | test_a_short_write_of_a_runs_first_line_*              |
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls
from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore, StoreUnavailable
from intemporal.store import fileio, wal

calls = Calls()
BIG = 40_000  # bytes: more than the last page of a journal can still take
DISK: dict[str, Disk] = {}  # the disk of the running test, for the activities


class Disk:
    """A 2 MB tmpfs at `path` (`fs="ext4"`: a 4 MB ext4 image mounted by a loop device, a
    disk the write-ahead log writes with direct I/O), or (where mount is not permitted)
    injected failures there.

    `fill()` takes every free byte, `free()` gives them back; `read_only()` / `writable()`
    remount it (the store's files must not be open for writing then).
    """

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch, fs: str = "tmpfs") -> None:
        self.path, self.mp, self.fs = path, monkeypatch, fs
        path.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(path)]
        if fs == "ext4":
            image = path.with_suffix(".img")
            image.write_bytes(b"")
            os.truncate(image, 4 << 20)
            mkfs = ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)]
            made = subprocess.run(mkfs, capture_output=True).returncode == 0
            mount = ["mount", "-o", "loop", str(image), str(path)] if made else ["false"]
        no_mount = os.environ.get("INTEMPORAL_TEST_NO_MOUNT") == "1"  # try the fallback
        self.real = not no_mount and subprocess.run(mount, capture_output=True).returncode == 0
        if self.real and fs == "ext4":
            (path / "lost+found").rmdir()
            path.chmod(0o700)
        self.failing: int | None = None  # the errno injected, when not real
        if not self.real:
            self._inject()

    def _under(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(str(self.path))
        except OSError:
            return False

    def _inject(self) -> None:
        real_write, real_pwritev, real_open = os.write, os.pwritev, os.open

        def check(fd: int) -> None:
            if self.failing is not None and self._under(fd):
                raise OSError(self.failing, os.strerror(self.failing))

        def write(fd: int, data: Any) -> int:
            check(fd)
            return real_write(fd, data)

        def pwritev(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
            check(fd)
            return real_pwritev(fd, buffers, offset, flags)

        def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
            where = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path) if dir_fd else path
            writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if self.failing == errno.EROFS and writes and str(where).startswith(str(self.path)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real_open(path, flags, mode, dir_fd=dir_fd)

        self.mp.setattr(os, "write", write)
        self.mp.setattr(os, "pwritev", pwritev)
        self.mp.setattr(os, "open", open_)

    def fill(self) -> None:
        if not self.real:
            self.failing = errno.ENOSPC
            return
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 1 << 12, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.failing = None
        if self.real:
            (self.path / "filler").unlink(missing_ok=True)

    def read_only(self) -> None:
        self.failing = errno.EROFS
        if self.real:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def writable(self) -> None:
        self.failing = None
        if self.real:
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Disk]:
    fs = getattr(request, "param", "tmpfs")
    if fs == "ext4":  # a disk the write-ahead log writes direct, when asked
        monkeypatch.setattr(wal, "DIRECT", True)
    d = DISK["disk"] = Disk(tmp_path / "disk", monkeypatch, fs)
    try:
        yield d
    finally:
        DISK.clear()
        d.unmount()


def test_the_disk_is_a_real_tmpfs_here(disk: Disk) -> None:
    # The tests below must exercise a real full disk where they can (as root: here, CI)
    if os.geteuid() == 0 and os.environ.get("INTEMPORAL_TEST_NO_MOUNT") != "1":
        assert disk.real


@intemporal.activity(name="df.step")
def step(key: str) -> str:
    calls.hit(key)
    return key


@intemporal.activity(name="df.fill_then_answer")
def fill_then_answer(key: str, journal: str) -> str:
    calls.hit(key)
    if calls[key] == 1:  # the first time only: the disk stays free once freed
        DISK["before"] = Path(journal).read_bytes()  # type: ignore[assignment]
        DISK["disk"].fill()
    return key + "y" * BIG  # its record needs pages the disk no longer has


@intemporal.workflow(name="df.three_steps")
def three_steps(tag: str, journal: str) -> Any:
    try:
        a = step(f"{tag}-a")
        b = fill_then_answer(f"{tag}-b", journal)
        return [a, len(b), step(f"{tag}-c")]
    except Exception as exc:
        return f"swallowed {type(exc).__name__}"


@pytest.mark.parametrize("disk", ["tmpfs", "ext4"], indirect=True)
@pytest.mark.parametrize("durability", ["fsync", "flush"])
@pytest.mark.parametrize("caller", ["run", "start"])
def test_disk_full_at_an_activity_result_stops_the_run_and_a_resume_finishes_it(
    disk: Disk, caller: str, durability: str
) -> None:
    # Given a store on a small disk, and a step that fills the disk before its record
    tag = f"full-{caller}-{durability}-{disk.fs}"
    journal = disk.path / f"{tag}.jsonl"
    with Engine(disk.path, threads=2, durability=durability) as engine:
        # When the run appends that record
        with pytest.raises(StoreUnavailable) as caught:
            if caller == "run":
                engine.run(three_steps, tag, str(journal), run_id=tag)
            else:
                engine.start(three_steps, tag, str(journal), run_id=tag).result(timeout=30)
        # Then the caller gets StoreUnavailable (no hang), caused by the disk
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == errno.ENOSPC
        # and the journal is exactly as it was before that append: readable, listed
        assert journal.read_bytes() == DISK["before"]
        events = engine.history(tag)
        assert [e["type"] for e in events] == ["run_started", "activity_completed"]
        assert [i.run_id for i in engine.list_runs()] == [tag]
        assert not engine.get_run(tag).status.finished
        log = getattr(engine.store, "_wal", None)  # on ext4, the log writes direct
        if log is not None and durability == "fsync":
            assert log.direct == (disk.fs == "ext4" and disk.real)
        # When space is freed and the run resumed
        disk.free()
        result = engine.resume(tag).result(timeout=30)
    # Then it finishes; only the step in flight ran again
    assert result == [f"{tag}-a", len(tag) + 2 + BIG, f"{tag}-c"]
    assert (calls[f"{tag}-a"], calls[f"{tag}-b"], calls[f"{tag}-c"]) == (1, 2, 1)


@intemporal.workflow(name="df.echo")
def echo(payload: str) -> int:
    return len(step(payload))


@pytest.mark.parametrize("caller", ["run", "start"])
def test_disk_full_at_the_runs_creation_raises_store_unavailable(disk: Disk, caller: str) -> None:
    # Given a full disk
    disk.fill()
    with Engine(disk.path, threads=2) as engine:
        # When a run is started, Then the caller is told at once, and nothing is left
        with pytest.raises(StoreUnavailable, match="start it again"):
            if caller == "run":
                engine.run(echo, "z" * BIG, run_id=f"new-{caller}")
            else:
                engine.start(echo, "z" * BIG, run_id=f"new-{caller}")
        assert engine.list_runs() == []
        # When space is freed, Then the same start succeeds
        disk.free()
        assert engine.run(echo, "z" * BIG, run_id=f"new-{caller}") == BIG


@pytest.mark.parametrize("full", ["disk", "journal"])
@pytest.mark.parametrize("caller", ["run", "start"])
def test_disk_full_at_the_runs_creation_from_a_spare_file_raises_store_unavailable(
    disk: Disk, monkeypatch: pytest.MonkeyPatch, caller: str, full: str
) -> None:
    # Given a store with spare files ready (unnamed files made ahead of need), then a full
    # disk: all of it, or (injected) only for the new journal's first line, into its spare
    real_write, real_pwritev = os.write, os.pwritev
    refused: list[int] = []

    def refuse(fd: int) -> None:
        if full == "journal" and disk.failing == errno.ENOSPC and os.fstat(fd).st_nlink == 0:
            refused.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(fd: int, data: Any) -> int:
        refuse(fd)
        return real_write(fd, data)

    def pwritev(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        refuse(fd)
        return real_pwritev(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwritev", pwritev)
    with Engine(disk.path, threads=2) as engine:
        store = engine.store
        assert isinstance(store, FileStore)
        for n in range(2):
            engine.run(echo, "warm", run_id=f"warm-{caller}-{n}")
        pool = store._spares
        wait_until(lambda: pool.ready >= 1, what="a spare file")
        taken = pool.taken
        if full == "disk":
            disk.fill()
        else:
            disk.failing = errno.ENOSPC
        # When a run is started, Then the caller is told at once; nothing is left
        with pytest.raises(StoreUnavailable, match="start it again") as caught:
            if caller == "run":
                engine.run(echo, "z" * BIG, run_id=f"new-{caller}")
            else:
                engine.start(echo, "z" * BIG, run_id=f"new-{caller}")
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == errno.ENOSPC
        if full == "journal":  # the spare took the first line, and the disk refused it
            assert pool.taken == taken + 1 and len(refused) == 1
        assert [i.run_id for i in engine.list_runs()] == [f"warm-{caller}-1", f"warm-{caller}-0"]
        # When space is freed, Then the same start succeeds
        disk.free()
        assert engine.run(echo, "z" * BIG, run_id=f"new-{caller}") == BIG


@intemporal.workflow(name="df.big_result")
def big_result(tag: str) -> str:
    if step(f"{tag}-a") and calls[f"{tag}-a"] == 1 and "full" not in DISK:
        DISK["full"] = DISK["disk"]  # the first execution only
        DISK["disk"].fill()
    return "r" * BIG


@pytest.mark.parametrize("caller", ["run", "start"])
def test_disk_full_at_the_final_record_leaves_the_run_unfinished(disk: Disk, caller: str) -> None:
    tag = f"final-{caller}"
    with Engine(disk.path, threads=2) as engine:
        with pytest.raises(StoreUnavailable):
            if caller == "run":
                engine.run(big_result, tag, run_id=tag)
            else:
                engine.start(big_result, tag, run_id=tag).result(timeout=30)
        assert engine.history(tag)[-1]["type"] == "activity_completed"
        disk.free()
        assert engine.resume(tag).result(timeout=30) == "r" * BIG
    assert calls[f"{tag}-a"] == 1


@pytest.mark.parametrize("caller", ["run", "start"])
def test_read_only_store_refuses_a_start_with_store_unavailable(disk: Disk, caller: str) -> None:
    disk.read_only()
    try:
        with Engine(disk.path, threads=2) as engine:
            with pytest.raises(StoreUnavailable, match="Read-only"):
                if caller == "run":
                    engine.run(echo, "ro", run_id="ro")
                else:
                    engine.start(echo, "ro", run_id="ro")
            # (nor is a read-only store taken for a filesystem without O_TMPFILE, for good)
            assert engine.store._tmpfile_ok  # type: ignore[attr-defined]
    finally:
        disk.writable()


def test_read_only_store_stops_a_resume_and_a_later_resume_finishes(disk: Disk) -> None:
    # Given a run left unfinished by a full disk
    tag = "ro-resume"
    journal = disk.path / f"{tag}.jsonl"
    with Engine(disk.path, threads=2) as engine, pytest.raises(StoreUnavailable):
        engine.run(three_steps, tag, str(journal), run_id=tag)
    disk.free()
    # When it is resumed while the store is read-only
    disk.read_only()
    try:
        with Engine(disk.path, threads=2) as engine:
            # Then the resume's result raises StoreUnavailable instead of waiting
            with pytest.raises(StoreUnavailable, match="Read-only"):
                engine.resume(tag).result(timeout=30)
    finally:
        disk.writable()
    # and once writable, a resume finishes it; the step in flight ran again once
    with Engine(disk.path, threads=2) as engine:
        assert engine.resume(tag).result(timeout=30)[0] == f"{tag}-a"
    assert (calls[f"{tag}-a"], calls[f"{tag}-b"], calls[f"{tag}-c"]) == (1, 2, 1)


# -- short writes, by injection -----------------------------------------------------------------
@intemporal.workflow(name="df.two_steps")
def two_steps(tag: str) -> Any:
    try:
        return [step(f"{tag}-a"), step(f"{tag}-b")]
    except Exception as exc:
        return f"swallowed {type(exc).__name__}"


@pytest.mark.parametrize("call", ["write", "pwritev"])
@pytest.mark.parametrize("caller", ["run", "start"])
def test_a_short_write_leaves_the_journal_as_it_was_and_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, caller: str
) -> None:
    # Given writes to the journal that write only a prefix, once the first step is recorded
    tag = f"short-{call}-{caller}-{uuid.uuid4().hex[:6]}"
    store = FileStore(tmp_path / "store")
    journal = store.path(tag)
    real_write, real_pwritev = os.write, os.pwritev
    state: dict[str, Any] = {"armed": False, "before": None, "short": 0}

    def ours(fd: int) -> bool:  # by inode: a journal made unnamed (O_TMPFILE) has no path
        try:
            return os.fstat(fd).st_ino == os.stat(journal).st_ino
        except OSError:
            return False

    def arm() -> None:
        if calls[f"{tag}-b"] and not state["armed"] and state["before"] is None:
            state["armed"], state["before"] = True, journal.read_bytes()

    def write(fd: int, data: Any) -> int:
        arm()
        if state["armed"] and ours(fd):
            state["armed"], state["short"] = False, state["short"] + 1
            return real_write(fd, bytes(data)[: len(data) // 2])
        return real_write(fd, data)

    def pwritev(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        arm()
        if state["armed"] and ours(fd):
            state["armed"], state["short"] = False, state["short"] + 1
            data = b"".join(bytes(b) for b in buffers)
            return real_pwritev(fd, [data[: len(data) // 2]], offset, flags)
        return real_pwritev(fd, buffers, offset, flags)

    if call == "write":
        monkeypatch.setattr(fileio, "_dsync_ok", False)  # every append through os.write
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwritev", pwritev)
    with Engine(store, threads=2) as engine:
        # When the second step's record is written short
        with pytest.raises(StoreUnavailable, match="short write"):
            if caller == "run":
                engine.run(two_steps, tag, run_id=tag)
            else:
                engine.start(two_steps, tag, run_id=tag).result(timeout=30)
        assert state["short"] == 1
        # Then the journal holds exactly the bytes it held before: no half line
        assert journal.read_bytes() == state["before"]
        assert [e["type"] for e in store.read(tag)] == ["run_started", "activity_completed"]
        assert [i.run_id for i in engine.list_runs()] == [tag]
        # and a resume finishes the run, the step in flight run again once
        assert engine.resume(tag).result(timeout=30) == [f"{tag}-a", f"{tag}-b"]
    assert (calls[f"{tag}-a"], calls[f"{tag}-b"]) == (1, 2)
    assert [e["type"] for e in store.read(tag)][-1] == "run_completed"


@intemporal.workflow(name="df.waits")
def waits(tag: str) -> list[str]:
    return [step(f"{tag}-a"), intemporal.wait_for_signal("go"), step(f"{tag}-b")]


def test_disk_full_when_a_signal_is_sent_raises_store_unavailable_and_loses_nothing(
    disk: Disk,
) -> None:
    # Given a run waiting for a signal on a disk that then fills up
    tag = "signal-full"
    with Engine(disk.path, threads=2) as engine:
        handle = engine.start(waits, tag, run_id=tag)
        deadline = time.monotonic() + 10
        while engine.get_run(tag).status is not intemporal.RunStatus.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        disk.fill()
        # When the signal is sent, Then the sender is told it was not delivered
        with pytest.raises(StoreUnavailable, match="send signal 'go'"):
            engine.signal(tag, "go", "now")
        assert engine.get_run(tag).status is intemporal.RunStatus.WAITING
        # and once space is freed, the same signal is delivered once and the run finishes
        disk.free()
        engine.signal(tag, "go", "now")
        assert handle.result(timeout=30) == [f"{tag}-a", "now", f"{tag}-b"]
    assert calls[f"{tag}-a"] == 1 and calls[f"{tag}-b"] == 1


@pytest.mark.parametrize("caller", ["run", "start"])
def test_a_short_write_of_a_runs_first_line_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caller: str
) -> None:
    # Given a disk that takes only half of the run's first line
    real_write = os.write
    shorted: list[int] = []

    def write(fd: int, data: Any) -> int:
        if bytes(data[:21]) == b'{"type":"run_started"' and not shorted:
            shorted.append(fd)
            return real_write(fd, bytes(data)[: len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(fileio, "_dsync_ok", False)  # every write through os.write
    monkeypatch.setattr(os, "write", write)
    with Engine(FileStore(tmp_path / "store"), threads=2) as engine:
        # When a run is started, Then the caller is told, and no half journal is left
        with pytest.raises(StoreUnavailable, match="short write"):
            if caller == "run":
                engine.run(echo, "half", run_id="half")
            else:
                engine.start(echo, "half", run_id="half")
        assert shorted and engine.list_runs() == []
        left = sorted(p.name for p in (tmp_path / "store").iterdir())
        # no journal: the write-ahead log (made before the journal) and the run index may be
        assert [n for n in left if n not in (".wal", ".index")] == []
        # and the same start then succeeds
        assert engine.run(echo, "half", run_id="half") == 4
