"""`gc` and a run whose files cannot be unlinked (`chattr +i`, `EPERM`, `EBUSY`, `EROFS`).

| kind                                              | right                                      |
| ------------------------------------------------- | ------------------------------------------ |
| a journal `chattr +i` (real, where allowed)       | that run named with why, exit 1; every     |
|                                                   | other run deleted; the next gc deletes the |
|                                                   | new ones, and all once `chattr -i`         |
| one journal refused in the middle of many batches | named; every other run and row gone        |
| a child run's journal refused                     | it stays (a top-level run now), its parent |
|                                                   | and siblings go; `list`/`show`/`count` say |
|                                                   | so                                         |
| a parent's journal refused                        | the whole tree stays, rows and folders     |
| an inbox refused                                  | the run stays whole: journal and inbox     |
| gc run by run (a finished run claimed elsewhere)  | the same                                   |
| the log replays a deletion gc could not do        | no error: the file stays                   |

Each unlink path is tested: io_uring and threads (`INTEMPORAL_NO_IO_URING=1`) give the
same result. Faults are injected at the bottom of each path: the ring reports the file
failed without unlinking it, and `os.unlink` (the threads', and the ring's second try)
refuses it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_on

from intemporal import Engine, FileStore
from intemporal.housekeeping import Tree, collectable, delete_trees
from intemporal.store import filegc, walfile
from intemporal.store.uring import UnlinkRing

# Faults are found by `/proc/self/fd`; `chattr` and io_uring are Linux's too.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

FLOWS = """
import intemporal

@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step(i):
    return i

@intemporal.workflow(name="undel.job")
def job(i):
    return step(i)

@intemporal.workflow(name="undel.family")
def family(i):
    return job(i) + job(i + 1)
"""


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "undel_flows.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import undel_flows

    yield undel_flows
    sys.modules.pop("undel_flows", None)


@pytest.fixture(params=["io_uring", "threads"])
def unlinks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on both unlink paths."""
    if request.param == "threads":
        monkeypatch.setenv("INTEMPORAL_NO_IO_URING", "1")
    else:
        fd = os.open(".", os.O_RDONLY)
        try:
            ring = UnlinkRing.open(fd)
        finally:
            os.close(fd)
        if ring is None:
            pytest.skip("no io_uring here (the threads' case runs)")
        ring.close()
    return str(request.param)


def _fill(
    home: Path, flows: Any, runs: int, families: int = 0, inbox: tuple[int, ...] = ()
) -> None:
    with Engine(home, threads=4, durability="flush") as engine:
        for i in range(runs):
            engine.run(flows.job, i, run_id=f"r{i:04d}")
        for i in range(families):  # a parent and two child runs: fam000, fam000/1, fam000/2
            engine.run(flows.family, 0, run_id=f"fam{i:03d}")
        for i in inbox:  # a message nobody read: the run has an inbox file
            engine.store.send(f"r{i:04d}", {"type": "signal", "name": "late", "ts": 1.0})


def _journals(home: Path) -> set[str]:
    return {str(p.relative_to(home))[: -len(".jsonl")] for p in home.rglob("*.jsonl")}


def _rows(home: Path) -> set[str]:
    with sqlite3.connect(home / ".index" / "runs.sqlite3") as db:
        return {r[0] for r in db.execute("SELECT run_id FROM runs")}


@contextlib.contextmanager
def refused(paths: set[Path], code: int = errno.EPERM) -> Iterator[None]:
    """Unlinking any of `paths` fails with `code`, on either path (see the module docstring)."""
    wanted = {str(p) for p in paths}
    real_unlink, real_submit = os.unlink, UnlinkRing._submit

    def where(name: Any, dir_fd: int | None) -> str:
        folder = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        return os.path.join(folder, os.fsdecode(name))

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if where(path, dir_fd) in wanted:
            raise OSError(code, os.strerror(code), path)
        real_unlink(path, dir_fd=dir_fd)

    def submit(self: UnlinkRing, names: list[tuple[int, str]]) -> list[int]:
        ours = [i for i, (fd, n) in enumerate(names) if where(n, fd) in wanted]
        rest = [i for i in range(len(names)) if i not in set(ours)]
        failed = real_submit(self, [names[i] for i in rest])
        return sorted([rest[k] for k in failed] + ours)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "unlink", unlink)
    mp.setattr(UnlinkRing, "_submit", submit)
    try:
        yield
    finally:
        mp.undo()


def _gc(home: Path) -> tuple[set[str], dict[str, str], list[Tree]]:
    """gc through the API: the runs deleted, those it could not delete, the trees returned."""
    store = FileStore(home)
    undeletable: dict[str, str] = {}
    trees = delete_trees(store, collectable(store, older_than=0, probe=False), None, undeletable)
    store.close()
    return {i.run_id for t in trees for i in t.runs}, undeletable, trees


def test_one_journal_refused_among_many_batches_is_named_and_the_rest_deleted(
    tmp_path: Path, flows: Any, unlinks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filegc, "BATCH", 16)  # 8 batches; the refused run in the 4th
    home = tmp_path / "store"
    _fill(home, flows, 120, inbox=(10, 61))
    every = _journals(home)
    # Given one journal in the middle that cannot be unlinked
    with refused({home / "r0060.jsonl"}):
        gone, undeletable, _ = _gc(home)
    # Then it is named with why, and every other run went, files and rows
    assert undeletable == {"r0060": "Operation not permitted: r0060.jsonl"}
    assert gone == every - {"r0060"}
    assert _journals(home) == {"r0060"} == _rows(home)
    assert [p.name for p in home.glob("*.inbox")] == []
    # And the next gc, the file unlinkable again, deletes it
    assert _gc(home)[:2] == ({"r0060"}, {})
    assert _journals(home) == set() == _rows(home)


def test_a_child_run_refused_stays_as_a_top_level_run_and_its_family_goes(
    tmp_path: Path, flows: Any, unlinks: str
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 3, families=2)
    # Given a child run's journal, and another parent's, that cannot be unlinked
    with refused({home / "fam000" / "1.jsonl", home / "fam001.jsonl"}, errno.EROFS):
        gone, undeletable, trees = _gc(home)
    # Then both are named; the child stays, its parent and sibling go (a tree returned
    # with the runs that went); the refused parent keeps its whole tree
    assert undeletable == {
        "fam000/1": "Read-only file system: fam000/1.jsonl",
        "fam001": "Read-only file system: fam001.jsonl",
    }
    assert gone == {"r0000", "r0001", "r0002", "fam000", "fam000/2"}
    assert {(t.root.run_id, len(t.runs)) for t in trees if t.root.run_id == "fam000"} == {
        ("fam000", 2)
    }
    left = {"fam000/1", "fam001", "fam001/1", "fam001/2"}
    assert _journals(home) == left == _rows(home)
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == [
        "fam000",
        "fam001",
        "fam001.jsonl",
    ]
    # And what `list`, `show`, `count` say is true: the child is a run without its parent
    cli = cli_on(home)
    assert cli("count").output.strip() == "4"
    listed = {
        json.loads(line)["run_id"] for line in cli("list", "--all", "--json").stdout.splitlines()
    }
    assert listed == left
    shown = cli("show", "fam000/1")
    assert shown.exit_code == 0 and "completed" in shown.output
    # And the next gc deletes what is left
    assert _gc(home)[:2] == (left, {})
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == []


def test_an_inbox_refused_keeps_its_run_whole(tmp_path: Path, flows: Any, unlinks: str) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 6, inbox=(2, 4))
    # Given a run's inbox that cannot be unlinked (EBUSY)
    with refused({home / "r0002.inbox"}, errno.EBUSY):
        gone, undeletable, _ = _gc(home)
    # Then the run stays with its journal (never an inbox without its run); the others go
    assert undeletable == {"r0002": "Device or resource busy: r0002.inbox"}
    assert gone == {"r0000", "r0001", "r0003", "r0004", "r0005"}
    assert _journals(home) == {"r0002"} == _rows(home)
    assert [p.name for p in home.glob("*.inbox")] == ["r0002.inbox"]


def test_the_cli_names_a_refused_run_and_the_next_gc_gets_past_it(
    tmp_path: Path, flows: Any, unlinks: str
) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 8, families=1)
    cli = cli_on(home)
    with refused({home / "r0003.jsonl", home / "fam000" / "2.jsonl"}):
        # When gc cannot delete two runs, Then it names them on stderr, exits 1, and
        # deletes every other one
        first = cli("gc", "--older-than", "0s")
        assert first.exit_code == 1, first.output
        assert "removed 9 run(s)" in first.stdout
        assert first.stderr.splitlines() == [
            "error: fam000/2 cannot be deleted (Operation not permitted: fam000/2.jsonl): "
            "left alone, with the runs below it; the next `gc` tries again",
            "error: r0003 cannot be deleted (Operation not permitted: r0003.jsonl): "
            "left alone, with the runs below it; the next `gc` tries again",
        ]
        assert "Traceback" not in first.output
        assert _journals(home) == {"r0003", "fam000/2"} == _rows(home)
        # And the next gc (more runs ended meanwhile) deletes those, and names the two again
        _fill(home, flows, 0, families=1)
        second = cli("gc", "--older-than", "0s", "--json")
        assert second.exit_code == 1, second.output
        objs = {o["run_id"]: o for o in map(json.loads, second.stdout.splitlines())}
        assert {r: o["action"] for r, o in objs.items()} == {
            "r0003": "kept",
            "fam000/2": "kept",
            "fam000": "removed",
            "fam000/1": "removed",
        }
        assert objs["r0003"]["error"] == "Operation not permitted: r0003.jsonl"
        assert "error" not in objs["fam000"]
        assert _journals(home) == {"r0003", "fam000/2"} == _rows(home)
    # And once the files can go, gc deletes them and says all is well
    third = cli("gc", "--older-than", "0s")
    assert third.exit_code == 0 and "removed 2 run(s)" in third.stdout, third.output
    assert _journals(home) == set() == _rows(home)


def test_gc_run_by_run_names_a_refused_run_too(tmp_path: Path, flows: Any) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 4, families=2, inbox=(1,))
    # Given a finished run claimed by another store (gc goes run by run, each locked)
    other = FileStore(home)
    lease = other.claim("r0000")
    assert lease is not None
    try:
        with refused({home / "r0001.inbox", home / "fam000" / "1.jsonl", home / "fam001.jsonl"}):
            gone, undeletable, _ = _gc(home)
    finally:
        lease.release()
        other.close()
    # Then the same as the bulk way: each refused run named, kept with the runs below it
    assert undeletable == {
        "r0001": "Operation not permitted: r0001.inbox",
        "fam000/1": "Operation not permitted: fam000/1.jsonl",
        "fam001": "Operation not permitted: fam001.jsonl",
    }
    assert gone == {"r0002", "r0003", "fam000", "fam000/2"}
    assert _journals(home) == {"r0000", "r0001", "fam000/1", "fam001", "fam001/1", "fam001/2"}
    assert [p.name for p in home.glob("*.inbox")] == ["r0001.inbox"]


def test_a_logged_deletion_gc_could_not_do_replays_without_error(tmp_path: Path) -> None:
    # Given a deletion in the log of a file that cannot be unlinked (a folder stands here)
    (tmp_path / "a.jsonl").mkdir()
    # When the log is replayed (after a power cut), Then the file stays; no error
    walfile.apply(str(tmp_path), walfile.Record(walfile.DELETE, "a.jsonl", 0, b""))
    assert (tmp_path / "a.jsonl").is_dir()


def _chattr(path: Path, flag: str) -> str | None:
    """Set or clear a file attribute; why not, if it cannot be done here."""
    tool = shutil.which("chattr")
    if tool is None:
        return "no chattr on this system"
    proc = subprocess.run([tool, flag, str(path)], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"chattr {flag} failed: {proc.stderr.strip()}"


def test_a_journal_made_immutable_with_chattr(tmp_path: Path, flows: Any, unlinks: str) -> None:
    home = tmp_path / "store"
    _fill(home, flows, 30, families=2)
    pinned = [home / "r0013.jsonl", home / "fam001" / "2.jsonl"]
    why = _chattr(pinned[0], "+i")
    if why is not None:  # needs CAP_LINUX_IMMUTABLE and a file system that has the flag
        pytest.skip(f"cannot make a file immutable here ({why}): the injected cases run")
    try:
        assert _chattr(pinned[1], "+i") is None
        # When gc runs (each later gc failed at the same file, deleting nothing past it)
        cli = cli_on(home)
        for _ in range(2):
            result = cli("gc", "--older-than", "0s")
            assert result.exit_code == 1, result.output
            assert "error: r0013 cannot be deleted (Operation not permitted: r0013.jsonl)" in (
                result.stderr
            )
            assert "error: fam001/2 cannot be deleted" in result.stderr
            # Then every other run is gone; what is left is listed and counted
            assert _journals(home) == {"r0013", "fam001/2"} == _rows(home)
            assert cli("count").output.strip() == "2"
            _fill(home, flows, 0, families=1)  # and the next gc deletes this one
    finally:
        for path in pinned:
            _chattr(path, "-i")
    result = cli("gc", "--older-than", "0s")
    assert result.exit_code == 0, result.output
    assert _journals(home) == set() == _rows(home)
