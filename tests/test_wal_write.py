"""The write-ahead log's write path (`wal.py`: `enqueue`, `wait`, `_lead`, `_write`): the
bytes of a record, a lone thread leading at once, threads queued behind a leader."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from process_helpers import wait_until

from intemporal import FileStore
from intemporal.store import walfile
from intemporal.store.wal import WRITE, WriteAheadLog

pytestmark = pytest.mark.skipif(not walfile.supported(), reason="no flock/pwritev/boot id")


def test_a_record_is_written_as_crc_size_kind_offset_path_data_and_segment_number(
    tmp_path: Path,
) -> None:
    # Given a log, When one record is logged (its head and its data written as two buffers)
    log = WriteAheadLog(str(tmp_path))
    log.log("dir/f.jsonl", 7, b'{"a":"\xc3\xa9"}\n')
    # Then the segment holds, at its start, the record laid out as ever: crc32 | size |
    # kind | offset | len(path) | path | data | segno, the crc over all that follows it
    state = walfile.read_state(log.folder)
    assert state is not None
    segno = state[1]
    raw = (tmp_path / ".wal" / f"{segno % 4}.log").read_bytes()
    path, data = b"dir/f.jsonl", b'{"a":"\xc3\xa9"}\n'
    rest = struct.pack("<IBQH", 11 + len(path) + len(data), WRITE, 7, len(path))
    rest += path + data + struct.pack("<Q", segno)
    assert raw[: 4 + len(rest)] == struct.pack("<I", zlib.crc32(rest)) + rest
    log.close()


def test_a_lines_logged_record_holds_every_line_since_the_last_sync_in_order(
    tmp_path: Path,
) -> None:
    # Given a durable run that appended three results unsynced (a fan-out's, say)
    store = FileStore(tmp_path)
    lease = store.create_claimed("r", {"type": "run_started", "workflow": "w", "args": []})
    assert lease is not None
    lease.sync()
    for seq in (1, 2, 3):
        lease.append_result(
            seq, "a", 1, 1_700_000_000_000_001, seq, 1_700_000_000_000_002, "e", False
        )
    # When it syncs
    lease.sync()
    # Then the log's last record holds the three lines, joined, at their offset
    wal = store._wal
    assert wal is not None
    state = walfile.read_state(wal.folder)
    assert state is not None
    last = list(wal.records(state[1], state[2]))[-1]
    journal = (tmp_path / "r.jsonl").read_bytes()
    assert last.path == "r.jsonl" and journal.count(b"\n") == 4
    assert journal[last.offset :] == last.data and last.data.count(b"\n") == 3
    lease.release()
    store.close()


def test_a_record_queued_while_another_thread_leads_waits_for_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a log whose leader is held in its write (a slow sync)
    log = WriteAheadLog(str(tmp_path))
    log.log("warm", 0, b"w\n")
    held, go = threading.Event(), threading.Event()
    real = log._write
    batches: list[list[str]] = []

    def write(batch: list[Any]) -> None:
        batches.append([it.path for it in batch])
        if len(batches) == 1:
            held.set()
            go.wait(10)
        real(batch)

    monkeypatch.setattr(log, "_write", write)
    first = threading.Thread(target=log.log, args=("a", 0, b"A\n"))
    first.start()
    assert held.wait(10)
    # When two records are queued meanwhile: neither leads at once, both wait
    items = [log.enqueue(WRITE, name, 0, b"B\n") for name in ("b", "c")]
    assert not any(it.lead for it in items)
    waiters = [threading.Thread(target=log.wait, args=(it,)) for it in items]
    for th in waiters:
        th.start()
    wait_until(lambda: all(it.waiter is not None for it in items), what="both to wait")
    go.set()
    for th in (first, *waiters):
        th.join(10)
    # Then the first batch held the leader's record alone, the next both queued ones
    # (one sync for the two), and every record is done
    assert batches == [["a"], ["b", "c"]]
    assert all(it.done and it.error is None for it in items)
    # And a record queued alone afterwards makes its thread the leader at once
    alone = log.enqueue(WRITE, "d", 0, b"D\n")
    assert alone.lead
    log.wait(alone)
    assert alone.done and batches[-1] == ["d"]
    log.close()
