"""Spare journal files (`intemporal/store/spares.py`): unnamed files made ahead of `create`.

| kind                                                        | tests                               |
| ----------------------------------------------------------- | ----------------------------------- |
| a warmed store creates no file on the caller's thread       | test_a_warmed_store_*               |
| the pool's size: none for one run, doubles, capped, refills | test_the_pool_*                     |
| closing the store closes its spares                         | test_closing_the_store_*            |
| fork: a child never links its parent's spares               | test_a_forked_child_*, test_a_pool_*|
| a refill that fails: the caller's own open tells the error  | test_a_refill_that_fails_*          |
| no O_TMPFILE here: named temporary files, no spare          | test_without_o_tmpfile_*            |
| a full disk with spares ready                               | test_disk_full.py (…_from_a_spare…) |
| the store's folder deleted under spares                     | test_journal.py (…_with_spares…)    |
| a power cut while spares are open                           | test_wal.py (the power-cut fuzz)    |
| few descriptors left: spares leave the process half of them | test_spares_leave_the_process_*     |
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore, StoreUnavailable
from intemporal.store import spares
from intemporal.store.spares import MOST, O_TMPFILE, Spares

pytestmark = pytest.mark.skipif(not O_TMPFILE, reason="no O_TMPFILE on this system")


def _unnamed(flags: int) -> bool:
    return flags & O_TMPFILE == O_TMPFILE


class _Opens:
    """`os.open` counting the unnamed files opened on this (the caller's) thread, and failing
    those of `fail_in` ("caller", "background") with `errno_`; `gate`: the background's
    opens wait for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.caller = threading.get_ident()
        self.on_caller = 0
        self.fail_in: set[str] = set()
        self.errno_ = errno.ENOSPC
        self.gate = threading.Event()
        self.gate.set()
        real = os.open

        def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            if _unnamed(flags):
                where = "caller" if threading.get_ident() == self.caller else "background"
                if where == "caller":
                    self.on_caller += 1
                else:
                    assert self.gate.wait(10)
                if where in self.fail_in:
                    raise OSError(self.errno_, os.strerror(self.errno_))
            return real(path, flags, mode, dir_fd=dir_fd)

        monkeypatch.setattr(os, "open", open_)


def _first(n: int = 0) -> dict[str, Any]:
    return {"type": "run_started", "workflow": "w", "args": [n], "ts": 1.0}


def _warm(store: FileStore, at_least: int = 2) -> Spares:
    """Create runs until the store's pool asked for spares, then wait for `at_least`."""
    pool = store._spares
    n = 0
    while pool.missed < 2:
        assert store.create(f"warm-{n}", _first(n))
        n += 1
    wait_until(lambda: pool.ready >= at_least, what=f"{at_least} spare files")
    return pool


@intemporal.activity(name="spares.echo")
def echo(x: int) -> int:
    return x


@intemporal.workflow(name="spares.child")
def child(x: int) -> int:
    return echo(x)


@intemporal.workflow(name="spares.parent")
def parent(x: int) -> int:
    return child(x) + 1  # a child run "<id>/1", created by `create` in a subfolder


@intemporal.workflow(name="spares.one")
def one(x: int) -> int:
    return echo(x)


@pytest.mark.parametrize("caller", ["start", "run", "child"])
def test_a_warmed_store_creates_runs_without_opening_a_file_on_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caller: str
) -> None:
    # Given an engine whose store has spare files ready (a client engine for `start`)
    opens = _Opens(monkeypatch)
    store = FileStore(tmp_path / "store")
    with Engine(store, threads=2, worker=caller != "start") as engine:
        pool = _warm(store)
        taken, before = pool.taken, opens.on_caller
        # When runs are created on this thread (a run and its child: two journals)
        if caller == "start":
            handles = [engine.start(one, i, run_id=f"s{i}") for i in range(2)]
            assert [h.status().value for h in handles] == ["pending", "pending"]
        elif caller == "run":
            assert [engine.run(one, i, run_id=f"r{i}") for i in range(2)] == [0, 1]
        else:
            assert engine.run(parent, 5, run_id="p") == 6
        # Then both journals were spares: no unnamed file was opened on this thread
        assert (opens.on_caller - before, pool.taken - taken) == (0, 2)
        made = {"start": ["s0", "s1"], "run": ["r0", "r1"], "child": ["p", "p/1"]}[caller]
        for rid in made:  # each journal whole, its own, under one name
            first = store.read(rid)[0]
            assert first["type"] == "run_started" and first.get("run_id", rid) == rid
            assert os.stat(store.path(rid)).st_nlink == 1


def test_the_pool_makes_none_for_one_run_then_doubles_up_to_its_cap_and_refills_below_half(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = _Opens(monkeypatch)
    pool = Spares(str(tmp_path))
    try:
        # Given a new pool: the first take (a process creating one run) asks for nothing
        assert pool.take() == -1
        assert (pool.missed, pool.made, pool._target) == (1, 0, 0)
        # When a second take finds none, Then two spares are made in the background
        assert pool.take() == -1
        wait_until(lambda: pool.ready == 2, what="2 spares")
        opens.gate.clear()  # from now on the background's opens wait
        # each one unnamed, private, open to read and append, invisible in the folder
        fds = [pool.take(), pool.take()]
        for fd in fds:
            st = os.fstat(fd)
            assert (st.st_nlink, stat.S_IMODE(st.st_mode)) == (0, 0o600)
            assert (
                fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_APPEND | os.O_RDWR)
                == os.O_APPEND | os.O_RDWR
            )
            os.close(fd)
        assert os.listdir(tmp_path) == []
        # When takes find none while the background is held up, Then the target doubles...
        for _ in range(8):
            assert pool.take() == -1
        assert pool._target == MOST  # ...up to its cap
        opens.gate.set()
        wait_until(lambda: pool.ready == MOST, what=f"{MOST} spares")
        # When it is drawn to half, nothing is made; below half, it is filled again
        for _ in range(MOST // 2):
            os.close(pool.take())
        assert pool.ready == MOST // 2 and not pool._queued
        os.close(pool.take())
        wait_until(lambda: pool.ready == MOST, what="a refill")
        assert opens.on_caller == 0  # all made by the background thread
    finally:
        pool.close()


def test_closing_the_store_closes_its_spare_files(tmp_path: Path) -> None:
    # Given a store with spares ready
    store = FileStore(tmp_path / "store")
    pool = _warm(store)
    held = {fd: os.fstat(fd).st_ino for fd in pool._fds}
    # When it is closed, Then its spares are closed (their unnamed files gone with them)
    store.close()
    assert pool.ready == 0
    for fd, ino in held.items():
        try:
            assert os.fstat(fd).st_ino != ino  # the number may be another file's by now
        except OSError as exc:
            assert exc.errno == errno.EBADF
    # and the store still creates runs afterwards
    assert store.create("after", _first())
    assert store.read("after") == [_first()]
    store.close()


def _create_many(store: FileStore, prefix: str, n: int) -> None:
    """Create journals `prefix-0..n-1` the way `create` does (write, link), from spares."""
    dfd = os.open(store.root, os.O_RDONLY)
    try:
        for i in range(n):
            line = f'{{"run":"{prefix}-{i}"}}\n'.encode()
            assert store._link_new(dfd, f"{prefix}-{i}.jsonl", line, False)
    finally:
        os.close(dfd)


def _assert_whole_and_distinct(root: Path, names: list[str]) -> None:
    inodes = set()
    for name in names:
        st = os.stat(root / f"{name}.jsonl")
        assert (root / f"{name}.jsonl").read_bytes() == f'{{"run":"{name}"}}\n'.encode(), name
        assert st.st_nlink == 1, f"{name} shares its file with another journal"
        inodes.add(st.st_ino)
    assert len(inodes) == len(names)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_links_its_parents_spare_files(tmp_path: Path) -> None:
    # Given a store with spares ready
    store = FileStore(tmp_path / "store")
    pool = _warm(store, at_least=2)
    # When the process forks and both create journals with the same store object
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            _create_many(store, "child", 4)
            code = 0
        finally:
            os._exit(code)
    _create_many(store, "parent", 4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # Then every journal is whole, its own, under one name: no spare was linked twice
    names = [f"{who}-{i}" for who in ("parent", "child") for i in range(4)]
    _assert_whole_and_distinct(store.root, names)
    assert pool.taken >= 2  # the parent did create from its spares
    store.close()


def test_a_pool_used_from_another_process_closes_the_spares_it_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store with spares ready, seen from a "forked" process whose fork hook did
    # not run: the pool's process id is not this one, nor its refill thread's
    store = FileStore(tmp_path / "store")
    pool = _warm(store)
    held = list(pool._fds)
    pool._pid = -1
    stale = spares._Refiller()
    stale._pid, stale._thread = -1, threading.Thread()  # the parent's, never ours
    monkeypatch.setattr(spares, "_refiller", stale)
    # When it takes a spare, Then it gets none of them, and they are closed
    assert pool.take() == -1
    assert pool.ready == 0 and pool._pid == os.getpid()
    for fd in held:
        with pytest.raises(OSError):
            os.fstat(fd)
    made = pool.made
    # and it creates runs, then makes spares of its own (with a refill thread of its own)
    _create_many(store, "after", 2)
    _assert_whole_and_distinct(store.root, ["after-0", "after-1"])
    wait_until(lambda: pool.made > made, what="spares of this process")
    assert stale._pid == os.getpid() and stale._thread is not None and stale._thread.is_alive()
    store.close()


def test_a_refill_that_fails_is_counted_and_the_callers_own_open_tells_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a disk where the background thread cannot make spares (full, at that moment)
    opens = _Opens(monkeypatch)
    opens.fail_in = {"background"}
    with Engine(tmp_path / "store", threads=2, worker=False) as engine:
        store = engine.store
        assert isinstance(store, FileStore)
        # When runs are started, Then each is created by the caller's own unnamed file
        for i in range(3):
            engine.start(one, i, run_id=f"ok-{i}")
        pool = store._spares
        wait_until(lambda: pool.failed >= 1, what="a failed refill")
        assert isinstance(pool.error, OSError) and pool.error.errno == errno.ENOSPC
        assert pool.taken == 0 and opens.on_caller == 3
        # When the caller's own file fails too, Then the start raises the clear error
        opens.fail_in = {"background", "caller"}
        with pytest.raises(StoreUnavailable, match="start it again") as caught:
            engine.start(one, 9, run_id="full")
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == errno.ENOSPC
        assert not store.exists("full") and store._tmpfile_ok  # not taken for a missing feature
        # When space is back, Then the same start succeeds
        opens.fail_in = set()
        engine.start(one, 9, run_id="full")
        assert store.read("full")[0]["type"] == "run_started"


def test_without_o_tmpfile_runs_are_created_through_named_files_and_no_spare_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a filesystem without unnamed files
    opens = _Opens(monkeypatch)
    opens.fail_in, opens.errno_ = {"caller", "background"}, errno.EOPNOTSUPP
    root = tmp_path / "store"
    with Engine(root, threads=2) as engine:
        # When runs are started and run, Then they are created (named temporary files)
        assert [engine.run(one, i, run_id=f"r{i}") for i in range(4)] == [0, 1, 2, 3]
        engine.start(one, 4, run_id="s").result(timeout=30)
        store = engine.store
        assert isinstance(store, FileStore)
        # and the store stopped trying: one unnamed open, no spare asked for or made
        assert not store._tmpfile_ok
        assert (opens.on_caller, store._spares.missed, store._spares.made) == (1, 1, 0)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "r0.jsonl",
        "r1.jsonl",
        "r2.jsonl",
        "r3.jsonl",
        "s.jsonl",
    ]


_FEW_DESCRIPTORS = """
import os, resource, sys, time
from intemporal.store.spares import MOST, Spares
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
pool = Spares(sys.argv[1])
for _ in range(8):  # takes finding none: the pool wants its most
    pool.take()
assert pool._target == MOST
deadline = time.monotonic() + 30
while pool._queued and time.monotonic() < deadline:
    time.sleep(0.005)
fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(30)]  # the user's own files
print(pool.ready, pool.spared)
"""


def test_spares_leave_the_process_half_its_descriptors(tmp_path: Path) -> None:
    # Given a process allowed 64 descriptors whose pool wants its most (32 spares)
    proc = subprocess.run(
        [sys.executable, "-c", _FEW_DESCRIPTORS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then its refill stopped at half the limit (a spare past it closed, counted), and
    # the process still opens 30 files of its own
    assert proc.returncode == 0, proc.stderr
    ready, spared = map(int, proc.stdout.split())
    assert 0 < ready < MOST and spared == 1
