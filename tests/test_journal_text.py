"""Journals hold text as UTF-8 (`cat` shows it, 3x smaller than `\\u` escapes) and bytes as
base64 without a pickle; journals written with escapes before still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import intemporal
from intemporal.codec import decode, encode, peek

GREEK = "καλημέρα κόσμε"


@intemporal.activity
def echo(value: object) -> object:
    return value


@intemporal.workflow
def echoes(value: object) -> object:
    return echo(value)


def test_text_is_written_as_utf8_and_reads_back(tmp_path: Path) -> None:
    # Given a run whose argument and result are non-ASCII text
    with intemporal.Engine(tmp_path, durability="flush") as engine:
        assert engine.run(echoes, GREEK, run_id="greek") == GREEK
    # Then the journal holds the text itself, in UTF-8, not escaped
    raw = (tmp_path / "greek.jsonl").read_bytes()
    assert GREEK.encode() in raw
    assert b"\\u03" not in raw
    # And every line is the JSON `jq` reads
    events = [json.loads(line) for line in raw.splitlines()]
    assert events[-1]["result"] == GREEK
    # And a new process reads it back the same
    with intemporal.Engine(tmp_path, worker=False) as engine:
        assert engine.get_run("greek").result == GREEK
        assert engine.history("greek")[0]["args"] == [GREEK]


def test_a_lone_surrogate_is_escaped_and_reads_back(tmp_path: Path) -> None:
    # Given text UTF-8 cannot hold (a lone surrogate, as os.fsdecode makes of a bad name)
    odd = "file-\udc80-" + GREEK
    with intemporal.Engine(tmp_path, durability="flush") as engine:
        assert engine.run(echoes, odd, run_id="odd") == odd
    # Then that line is escaped, and the run still reads back exactly
    raw = (tmp_path / "odd.jsonl").read_bytes()
    assert b"\\udc80" in raw
    with intemporal.Engine(tmp_path, worker=False) as engine:
        assert engine.get_run("odd").result == odd


def test_a_journal_written_with_escapes_still_reads_and_resumes(tmp_path: Path) -> None:
    # Given a journal as intemporal wrote them before: every non-ASCII character escaped
    with intemporal.Engine(tmp_path, durability="flush") as engine:
        engine.run(echoes, GREEK, run_id="old")
    path = tmp_path / "old.jsonl"
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    # the run stopped after its first step, as after a crash
    escaped = [json.dumps(ev, separators=(",", ":")) for ev in lines[:2]]
    assert "\\u03ba" in escaped[0]
    path.write_text("".join(line + "\n" for line in escaped), encoding="ascii")
    # When it is read and resumed
    with intemporal.Engine(tmp_path, durability="flush") as engine:
        assert engine.history("old")[0]["args"] == [GREEK]
        assert engine.resume("old").result(timeout=30) == GREEK
    # Then the new lines are UTF-8 beside the old escaped ones
    raw = path.read_bytes()
    assert b"\\u03ba" in raw.splitlines()[0]
    assert GREEK.encode() in raw.splitlines()[-1]


@pytest.mark.parametrize("codec", ["auto", "json"])
@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\xff binary", [b"a", {"k": b"b", "n": 1}], {"blob": b"\x01" * 100}],
    ids=["empty", "binary", "nested", "dict"],
)
def test_bytes_are_stored_as_base64_without_a_pickle(value: object, codec: str) -> None:
    # Given bytes, alone or inside JSON
    stored = encode(value, codec)
    text = json.dumps(stored)
    # Then no pickle is stored, and they come back as bytes, equal
    assert "$dill" not in text
    assert decode(json.loads(text), codec) == value
    # And looking at them runs nothing (a listing shows them as they are)
    assert peek(json.loads(text)) == value


def test_bytes_round_trip_through_a_run(tmp_path: Path) -> None:
    blob = bytes(range(256))
    with intemporal.Engine(tmp_path, durability="flush", codec="json") as engine:
        assert engine.run(echoes, {"blob": blob}, run_id="bytes") == {"blob": blob}
    raw = (tmp_path / "bytes.jsonl").read_text()
    assert "$dill" not in raw and "$bytes" in raw
    with intemporal.Engine(tmp_path, worker=False) as engine:
        assert engine.get_run("bytes").result == {"blob": blob}
        assert type(engine.handle("bytes").result(timeout=5)["blob"]) is bytes
