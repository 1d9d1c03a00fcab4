"""`gc`'s unlinks through io_uring (`intemporal/store/uring.py`), and without it.

| kind                                            | right                                       |
| ----------------------------------------------- | ------------------------------------------- |
| chains of names, more than the ring holds        | every name gone, each chain in order        |
| a name missing                                   | not an error; the rest of its chain goes    |
| a name that cannot be unlinked (a folder)        | raised as `os.unlink` raises it, the rest   |
|                                                  | deleted first                               |
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


def test_chains_longer_than_the_ring_are_all_unlinked(
    folder: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given more names than the ring holds, in chains of one to three, one name missing
    path, fd = folder
    monkeypatch.setattr(uring, "WORKERS", 4)
    names = [f"f{i}" for i in range(uring.ENTRIES * 2 + 5)]
    for name in names:
        (path / name).write_bytes(b"x" * 100)
    chains: list[tuple[int, list[str]]] = []
    i = 0
    while i < len(names):
        size = 1 + len(chains) % 3
        chains.append((fd, names[i : i + size]))
        i += size
    chains.append((fd, ["missing", "also-missing"]))
    ring = ring_or_skip(fd)
    try:
        # When they are unlinked through the ring
        retried = ring.unlink(chains)
    finally:
        ring.close()
    # Then every file is gone, and nothing needed a second try
    assert sorted(os.listdir(path)) == []
    assert retried is False


def test_a_name_that_cannot_be_unlinked_is_raised_after_the_rest(folder: tuple[Path, int]) -> None:
    # Given a folder among files
    path, fd = folder
    (path / "a.inbox").write_text("")
    (path / "a.jsonl").write_text("{}\n")
    (path / "sub").mkdir()
    (path / "b.jsonl").write_text("{}\n")
    ring = ring_or_skip(fd)
    try:
        # When the three are unlinked
        with pytest.raises(IsADirectoryError):
            ring.unlink([(fd, ["a.inbox", "a.jsonl"]), (fd, ["sub"]), (fd, ["b.jsonl"])])
    finally:
        ring.close()
    # Then the files are gone, the folder stays, as os.unlink would have said
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
