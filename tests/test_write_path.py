"""The per-activity write path: its shortcuts write exactly what the general code would.

An activity's result line is spelled from its parts, times are stamped from the nanosecond
clock, and flat results are checked without a call per value; each is compared here with
the general path it replaces (`json.dumps`, `round(t, 6)`, the recursive check).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import intemporal
from intemporal import Engine
from intemporal.clock import Clock, VirtualClock, stamp
from intemporal.codec import is_exact_json
from intemporal.events import ACTIVITY_COMPLETED, result_event
from intemporal.store.fileio import _stamp_text, dumps, result_line


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


#: odd names, owners and results, for an activity's result line
ODD_PARTS = [
    {},
    {"name": 'naïve "quoted"\n\t日本'},
    {"owner": "引擎"},
    {"result": None},
    {"result": "text"},
    {"result": 1e300},
    {"result": float("nan")},  # as json.dumps spells it
    {"result": {"$dill": "AAAA", "$type": "x.Y"}},
    {"result": "x\udc80"},  # a lone surrogate: the line escaped as before
]


@pytest.mark.parametrize(
    "changes",
    [
        *ODD_PARTS[:-1],
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


@pytest.mark.parametrize(
    "changes",
    [
        *ODD_PARTS,
        {"started": 1_764_468_000_000_000, "ts": 1_764_468_000_100_000},  # trailing zeros
        {"started": 0, "ts": 500_000},  # under a second: written by repr
        {"started": -1_500_000, "ts": 2**33 * 10**6},  # before 1970, after 2242
        {"name": 5, "owner": ("a", 1)},  # not text: the general path
    ],
)
def test_a_result_line_spelled_from_its_parts_is_what_json_dumps_writes(
    changes: dict[str, Any],
) -> None:
    # Given an activity's result as a run context hands it to the file store's lease
    parts: dict[str, Any] = {
        "seq": 7,
        "name": "step",
        "attempts": 1,
        "started": 1_764_468_000_123_456,
        "result": {"i": 1, "x": [1, 2.5, None, True, "é"]},
        "ts": 1_764_468_000_123_800,
        "owner": "host-12-ab",
    } | changes
    event = result_event(**parts)
    # Then its line is what json.dumps writes for the event (ASCII escapes for a surrogate)
    line = result_line(**parts)
    ascii_line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    assert line == (ascii_line if "\udc80" in str(parts["result"]) else _json_line(event))
    assert line == dumps(event)
    # And the event holds the times in seconds, to the microsecond
    assert event["started"] == parts["started"] / 1e6 and event["ts"] == parts["ts"] / 1e6


def test_a_stamp_is_written_as_repr_writes_its_float() -> None:
    # Given whole microseconds near now, across the years to 2242, and at the edges
    rng = random.Random(33)
    now = time.time_ns() // 1000
    values = [now + rng.randrange(-(10**12), 10**13) for _ in range(50_000)]
    values += [rng.randrange(10**6, 2**33 * 10**6) for _ in range(50_000)]
    values += [v * 10**k for v in values[:2000] for k in (1, 2, 3, 6)]
    values += [0, 1, 10**6 - 1, 10**6, 10**6 + 1, 2**33 * 10**6 - 1, 2**33 * 10**6, 10**17]
    values += [-1, -(10**6), -1_500_001]
    # Then each is spelled as the encoder spells the float us / 1_000_000 (its repr; an int
    # division, correctly rounded: `us / 1e6` rounds a `us` past 2**53 twice)
    assert [_stamp_text(v) for v in values] == [repr(v / 1_000_000) for v in values]


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

    # Then its stamp is that time to the microsecond, in seconds and in whole microseconds
    assert Fixed().stamp() == 1000.0
    assert Fixed().stamp_us() == 1_000_000_000


def test_stamps_in_microseconds_are_the_clocks_stamps() -> None:
    # Given the real clock, a virtual one moved a year ahead, and one that stamps itself
    class Own(Clock):
        def stamp(self) -> float:
            return 1_764_468_000.25

    virtual = VirtualClock()
    virtual.advance(365 * 86_400)
    # Then a stamp in microseconds is an int, over 1e6 a stamp of the same clock
    for clock in (Clock(), virtual):
        before = clock.stamp()
        us = clock.stamp_us()
        after = clock.stamp()
        assert type(us) is int and before <= us / 1e6 <= after
    assert Own().stamp_us() == 1_764_468_000_250_000


def test_a_result_line_at_a_far_time_holds_the_clocks_stamp() -> None:
    # Given clocks of their own past 2**32 s (year 2106), into the far future and past
    class At(Clock):
        def __init__(self, now: float) -> None:
            self.now = now

        def time(self) -> float:
            return self.now

    rng = random.Random(32)
    nows = [2.0**32 + 0.431641, 4294967296.431641, 2.0**33 + 0.5, 6998302232831.42, 1e12 + 0.3]
    nows += [rng.uniform(2.0**32, 2.0**40) for _ in range(5_000)]
    nows += [-rng.uniform(2.0**32, 2.0**40) for _ in range(1_000)]
    clocks: list[Clock] = [At(now) for now in nows]
    for clock in clocks:
        # When an activity's result line is stamped with its microseconds
        at = clock.stamp()
        us = clock.stamp_us()
        line = result_line(3, "charge", 1, us, {"ok": 1}, us, "e1")
        # Then it holds the clock's stamp, as json.dumps of the event with that float wrote
        old = _completed(seq=3, name="charge", started=at, result={"ok": 1}, ts=at, owner="e1")
        assert line == _json_line(old), (clock, at, us)
        assert result_event(3, "charge", 1, us, {"ok": 1}, us, "e1") == old
        assert json.loads(line)["ts"] == at
    # And a virtual clock moved ~320 years stamps its line between its stamps
    virtual = VirtualClock()
    virtual.advance(10**10 + 0.123457)
    for _ in range(1_000):
        before, us, after = virtual.stamp(), virtual.stamp_us(), virtual.stamp()
        assert before <= json.loads(result_line(1, "a", 1, us, None, us, "e"))["ts"] <= after


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


@intemporal.activity
def wp_odd_text() -> list[Any]:
    return ["x\udc80", {"k": "\ud800é"}]


@intemporal.workflow
def wp_odd_flow() -> int:
    return len(wp_odd_text())


def test_show_prints_a_result_with_a_lone_surrogate(tmp_path: Path) -> None:
    # Given a run whose activity returned text with lone surrogates (the codec takes them)
    home = tmp_path / "store"
    with Engine(home) as engine:
        assert engine.run(wp_odd_flow, run_id="odd") == 2
    # When `intemporal show` prints it to a UTF-8 pipe, as a terminal or `| less` is
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "intemporal.cli", "--store", str(home), "show", "odd"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    # Then it shows the run, the surrogates escaped (it failed with "'utf-8' codec can't
    # encode character '\\udc80'", exit 1)
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    assert b"\\udc80" in shown.stdout and b"journal: " in shown.stdout
