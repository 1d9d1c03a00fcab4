"""The per-activity write path: its shortcuts write exactly what the general code would.

An activity's result line is spelled from its parts, times are stamped from the nanosecond
clock, and flat results are checked without a call per value; each is compared here with
the general path it replaces (`json.dumps`, `round(t, 6)`, the recursive check).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

import intemporal
from intemporal import Engine
from intemporal.clock import Clock, VirtualClock, stamp
from intemporal.codec import is_exact_json
from intemporal.events import ACTIVITY_COMPLETED
from intemporal.store.fileio import dumps


def _json_line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _completed(**changes: Any) -> dict[str, Any]:
    event = {
        "type": ACTIVITY_COMPLETED,
        "seq": 7,
        "name": "step",
        "attempts": 1,
        "started": 1764468000.123456,
        "result": {"i": 1, "x": [1, 2.5, None, True, "é"]},
        "ts": 1764468000.1238,
        "owner": "host-12-ab",
    }
    return event | changes


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"name": 'naïve "quoted"\n\t日本'},
        {"owner": "引擎"},
        {"result": None},
        {"result": "text"},
        {"result": 1e300},
        {"result": float("nan")},  # as json.dumps spells it
        {"result": {"$dill": "AAAA", "$type": "x.Y"}},
        {"started": 3, "ts": 4},  # ints: the general path
        {"seq": True},  # a bool where an int belongs: the general path
        {"ts": float("inf")},
        {"started": 0.5, "ts": 1.0},
    ],
)
def test_an_activity_result_line_is_the_bytes_json_dumps_writes(changes: dict[str, Any]) -> None:
    # Given an activity_completed event as the run context builds it, or with odd values
    event = _completed(**changes)
    # Then its line is the compact UTF-8 JSON the general encoder writes
    assert dumps(event) == _json_line(event)


def test_a_result_line_with_other_keys_or_order_is_encoded_as_given() -> None:
    # Given activity_completed events with a key more, or the keys in another order
    extra = _completed(note="x")
    reordered = dict(reversed(list(_completed().items())))
    # Then each line keeps its keys and their order
    assert dumps(extra) == _json_line(extra)
    assert dumps(reordered) == _json_line(reordered)
    assert list(json.loads(dumps(reordered))) == list(reordered)


def test_a_lone_surrogate_in_a_result_line_is_escaped_as_before() -> None:
    # Given a result holding a string UTF-8 cannot encode
    event = _completed(result="x\udc80")
    # Then the line is ASCII with escapes, and reads back to the same event
    line = dumps(event)
    assert line == (json.dumps(event, separators=(",", ":")) + "\n").encode()
    assert json.loads(line) == event


def test_stamp_is_round_to_six_digits() -> None:
    # Given times near now, far ahead, small, negative, and ties in binary
    rng = random.Random(18)
    values = [time.time() + rng.uniform(0, 1e7) for _ in range(20_000)]
    values += [rng.uniform(-1e4, 1e4) * rng.choice([1, 1e-3, 1e-6]) for _ in range(20_000)]
    values += [0.0, 1.5, 2.5e-6, -2.5e-6, 5e-7, 2.0**40 + 0.3, 1e300, float("inf")]
    # Then each is stamped to the float round(t, 6) gives
    assert [stamp(t) for t in values] == [round(t, 6) for t in values]


def test_clocks_stamp_now_to_the_microsecond() -> None:
    # Given the real clock and a virtual one moved a day ahead
    real, virtual = Clock(), VirtualClock()
    virtual.advance(86_400)
    # When each stamps now
    before = time.time()
    got_real, got_virtual = real.stamp(), virtual.stamp()
    after = time.time()
    # Then the stamp is a whole number of microseconds of that clock's time
    for got, shift in ((got_real, 0.0), (got_virtual, 86_400.0)):
        assert round(got, 6) == got
        assert before + shift - 1e-6 <= got <= after + shift + 1e-6


def test_a_clock_of_its_own_stamps_its_own_time() -> None:
    # Given a clock subclass that only says what time it is
    class Fixed(Clock):
        def time(self) -> float:
            return 1000.0000004

    # Then its stamp is that time to the microsecond
    assert Fixed().stamp() == 1000.0


@pytest.mark.parametrize(
    ("value", "exact"),
    [
        ({"a": 1, "b": "x", "c": -(1 << 61)}, True),
        ({"a": 10**5000}, False),  # longer than Python writes as text by default
        ([1, "x", 10**5000], False),
        ({"a": True, "b": None, "c": 1.5}, True),
        ({"a": float("inf")}, False),
        ({"a": (1, 2)}, False),
        ({1: "x"}, False),
        ({"$bytes": "AA"}, False),
        ([[["deep"]]], True),
    ],
)
def test_exact_json_check_of_flat_values(value: Any, exact: bool) -> None:
    assert is_exact_json(value) is exact


@intemporal.activity
def wp_step(i: int) -> dict[str, Any]:
    return {"i": i, "text": "é", "half": i / 2}


@intemporal.workflow
def wp_flow(n: int) -> int:
    return sum(wp_step(i)["i"] for i in range(n))


def test_a_run_journals_each_result_as_json_dumps_would(tmp_path: Path) -> None:
    # Given a run of a few activities on a file store
    with Engine(tmp_path / "store", durability="flush") as engine:
        assert engine.run(wp_flow, 5, run_id="wp") == 10
    # Then each line of its journal is what json.dumps writes for the event it holds
    journal = next((tmp_path / "store").rglob("wp.jsonl"))
    lines = journal.read_bytes().splitlines(keepends=True)
    done = [json.loads(line) for line in lines if b'"activity_completed"' in line]
    assert [ev["result"]["i"] for ev in done] == [0, 1, 2, 3, 4]
    for line in lines:
        assert line == _json_line(json.loads(line))
    # And its times are stamped to the microsecond, each step's start before its end
    for ev in done:
        assert round(ev["ts"], 6) == ev["ts"] and ev["started"] <= ev["ts"]
