"""FileStore fast paths: newest-first listing by mtime, one-call journal parsing, flock claims."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from intemporal import FileStore, JournalCorrupted, RunStatus
from intemporal.store.file import dumps, parse_lines


def _write_run(root: Path, run_id: str, created: float, workflow: str, last: str) -> None:
    path = root / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    events = [
        {"type": "run_started", "run_id": run_id, "workflow": workflow, "args": [], "ts": created},
        {"type": "activity_completed", "seq": 1, "name": "a", "result": 1, "ts": created + 1},
    ]
    if last:
        events.append({"type": last, "result": 1, "error": None, "ts": created + 2})
    path.write_bytes(b"".join(dumps(e) for e in events))
    os.utime(path, (created + 2, created + 2))


def test_limited_listing_equals_the_full_listing_cut(tmp_path: Path) -> None:
    # Given runs created out of order, some in child folders, mixed statuses and workflows
    store = FileStore(tmp_path)
    base = 1_700_000_000.0
    order = [7, 3, 11, 0, 5, 9, 1, 13, 2, 8, 4, 12, 6, 10]
    for n, i in enumerate(order):
        rid = f"r{i:02d}" if n % 4 else f"p{i:02d}/{n}"
        last = "run_completed" if i % 3 else ""
        _write_run(tmp_path, rid, base + i * 10, "wf.a" if i % 2 else "wf.b", last)

    # When listing with a limit, Then it is the unlimited listing's head, filters included
    full = store.list_runs()
    for limit in (0, 1, 3, 5, 14, 50):
        assert [r.run_id for r in store.list_runs(limit=limit)] == [r.run_id for r in full[:limit]]
    done = [r.run_id for r in full if r.status is RunStatus.COMPLETED]
    assert [r.run_id for r in store.list_runs(status="completed", limit=4)] == done[:4]
    wf_b = [r.run_id for r in full if r.workflow == "wf.b"]
    assert [r.run_id for r in store.list_runs(workflow="wf.b", limit=3)] == wf_b[:3]


def test_parsing_in_one_call_matches_line_by_line() -> None:
    good = b'{"type":"a","n":1}\n{"type":"b","s":"x\\ny"}\n{"type":"c"'  # torn last line
    events, end = parse_lines(good, "j")
    assert [e["type"] for e in events] == ["a", "b"]
    assert end == good.rfind(b"\n") + 1
    # a blank line is skipped, as line by line
    assert [e["type"] for e in parse_lines(b'{"type":"a"}\n\n{"type":"b"}\n', "j")[0]] == [
        "a",
        "b",
    ]
    # two values on one line, or a line that is not an event, names the line
    for bad in (b'{"type":"a"}\n{"type":"b"},{"type":"c"}\n', b'{"type":"a"}\n[1]\n'):
        with pytest.raises(JournalCorrupted) as info:
            parse_lines(bad, "j")
        assert info.value.line == 2


def test_claim_probe_and_release_with_flock(tmp_path: Path) -> None:
    # Given a run
    store = FileStore(tmp_path)
    assert store.create("r1", {"type": "run_started", "workflow": "w", "ts": 1.0})
    assert not store._is_claimed("r1")  # never claimed

    # When it is claimed, Then others see it claimed and cannot claim it
    lease = store.claim("r1")
    assert lease is not None
    assert store._is_claimed("r1")
    assert store.claim("r1") is None
    assert not (tmp_path / "r1.lock").exists()  # the journal itself is locked

    # and once released it is free again, and a torn tail is cut on the next claim
    lease.release()
    assert not store._is_claimed("r1")
    with open(tmp_path / "r1.jsonl", "ab") as f:
        f.write(b'{"type":"activity_compl')
    lease = store.claim("r1")
    assert lease is not None
    lease.append({"type": "run_completed", "result": 1, "ts": 2.0}, sync=True)
    lease.release()
    assert [e["type"] for e in store.read("r1")] == ["run_started", "run_completed"]


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "named-temporary"])
def test_create_once_private_and_without_leftovers(tmp_path: Path, tmpfile: bool) -> None:
    # Given a store, with or without unnamed temporary files
    store = FileStore(tmp_path)
    store._tmpfile_ok = store._tmpfile_ok and tmpfile
    first = {"type": "run_started", "workflow": "w", "ts": 1.0}

    # When a run (and a child run in a new folder) is created, then created again
    assert store.create("r1", first)
    assert store.create("r1/2", first)
    assert not store.create("r1", {**first, "ts": 2.0})

    # Then the first creation stands, private, with no temporary file left behind
    assert store.read("r1") == [first]
    assert stat.S_IMODE(os.stat(tmp_path / "r1.jsonl").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "r1").st_mode) == 0o700
    aside = (".wal", ".index", ".doorbell")  # the write-ahead log, the index, the wake-ups
    made = [p for p in tmp_path.rglob("*") if not set(aside) & set(p.relative_to(tmp_path).parts)]
    assert sorted(p.name for p in made) == ["2.jsonl", "r1", "r1.jsonl"]
    # and the write-ahead log that made them durable is private too
    log = [p for p in tmp_path.rglob("*") if ".wal" in p.relative_to(tmp_path).parts]
    assert all(stat.S_IMODE(os.stat(p).st_mode) in (0o600, 0o700) for p in log)
