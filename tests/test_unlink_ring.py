"""`gc`'s unlinks through io_uring (`intemporal/store/uring.py`), and without it.

| kind                                            | right                                       |
| ----------------------------------------------- | ------------------------------------------- |
| more names than the ring holds                   | every name gone                             |
| a name missing                                   | not a failure                               |
| a name that cannot be unlinked (a folder)        | returned by index as `os.unlink` raises it, |
|                                                  | every other name deleted                    |
| io_uring off (`INTEMPORAL_NO_IO_URING=1`)        | `open` says None; `gc` deletes on threads   |
| `gc` of parents and child runs through the ring  | every file gone, child folders removed      |
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from intemporal import Engine, FileStore
from intemporal.store import uring
from intemporal.store.uring import UnlinkRing


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    fd = os.open(tmp_path, os.O_RDONLY)
    yield tmp_path, fd
    os.close(fd)


def ring_or_skip(fd: int) -> UnlinkRing:
    ring = UnlinkRing.open(fd)
    if ring is None:  # not Linux, or io_uring filtered here: `gc` uses threads (tested below)
        pytest.skip("no io_uring on this system")
    return ring


def test_more_names_than_the_ring_holds_are_all_unlinked(
    folder: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given more names than the ring holds, two of them missing
    path, fd = folder
    monkeypatch.setattr(uring, "WORKERS", 4)
    names = [f"f{i}" for i in range(uring.ENTRIES * 2 + 5)]
    for name in names:
        (path / name).write_bytes(b"x" * 100)
    ring = ring_or_skip(fd)
    try:
        # When they are unlinked through the ring
        failures = ring.unlink([(fd, n) for n in [*names, "missing", "also-missing"]])
    finally:
        ring.close()
    # Then every file is gone, and a missing name is no failure
    assert sorted(os.listdir(path)) == []
    assert failures == {}


def test_a_name_that_cannot_be_unlinked_is_returned_and_the_rest_deleted(
    folder: tuple[Path, int],
) -> None:
    # Given a folder among files
    path, fd = folder
    (path / "a.inbox").write_text("")
    (path / "a.jsonl").write_text("{}\n")
    (path / "sub").mkdir()
    (path / "b.jsonl").write_text("{}\n")
    ring = ring_or_skip(fd)
    try:
        # When the four are unlinked
        failures = ring.unlink([(fd, "a.inbox"), (fd, "a.jsonl"), (fd, "sub"), (fd, "b.jsonl")])
    finally:
        ring.close()
    # Then the folder's failure is returned by its index, as os.unlink says it; the files
    # are gone
    assert list(failures) == [2] and isinstance(failures[2], IsADirectoryError)
    assert failures[2].filename == "sub"
    assert os.listdir(path) == ["sub"]


def test_no_ring_when_turned_off(folder: tuple[Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEMPORAL_NO_IO_URING", "1")
    assert UnlinkRing.open(folder[1]) is None


@pytest.mark.parametrize("ring", ["io_uring", "threads"])
def test_gc_deletes_parents_and_children_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ring: str
) -> None:
    # Given finished runs, some with child runs (folders), one with an inbox file
    import intemporal

    if ring == "threads":
        monkeypatch.setenv("INTEMPORAL_NO_IO_URING", "1")

    @intemporal.workflow(name="ring.child")
    def child(i: int) -> int:
        return i

    @intemporal.workflow(name="ring.parent")
    def parent(i: int) -> int:
        return child(i) + child(i + 1)

    store = tmp_path / "store"
    with Engine(str(store), durability="flush") as engine:
        for i in range(40):
            engine.run(parent if i % 4 == 0 else child, i, run_id=f"r{i}")
        engine.store.send("r1", {"type": "note", "ts": 0.0})
    assert (store / "r1.inbox").exists() and (store / "r0").is_dir()
    # When gc deletes them all
    fs = FileStore(str(store))
    from intemporal.housekeeping import collectable, delete_trees

    deleted = delete_trees(fs, collectable(fs, older_than=0))
    fs.close()
    # Then every run went, with its files and its children's folders
    assert sum(len(t.runs) for t in deleted) == 40 + 2 * 10
    left = [p.name for p in store.iterdir() if not p.name.startswith(".")]
    assert left == []
