"""Events (`set_event` / `engine.get_event`) and the recorded values `now`, `uuid4`, `side_effect`."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import Engine, RunStatus

# -- events ---------------------------------------------------------------------------------------


@intemporal.workflow
def evt_progress() -> str:
    intemporal.set_event("progress", 0.4)
    intemporal.wait_for_signal("next")
    intemporal.set_event("progress", 0.8)
    intemporal.wait_for_signal("done")
    return "finished"


@intemporal.workflow
def evt_silent() -> str:
    intemporal.wait_for_signal("done")
    return "quiet"


def test_get_event_returns_the_latest_value(engine: Engine) -> None:
    # Given a run that published progress 0.4 and waits
    handle = engine.start(evt_progress, run_id="progress")

    # Then the outside sees 0.4
    assert engine.get_event("progress", "progress", timeout=5) == 0.4

    # When it moves on and publishes 0.8
    engine.signal("progress", "next")
    wait_until(
        lambda: engine.get_event("progress", "progress", timeout=5) == 0.8,
        timeout=5,
        what="progress 0.8",
    )

    # Then the latest value is returned, also once the run has finished
    engine.signal("progress", "done")
    assert handle.result(timeout=5) == "finished"
    assert engine.get_event("progress", "progress", timeout=5) == 0.8
    sets = [e for e in engine.history("progress") if e["type"] == "event_set"]
    assert len(sets) == 2  # replays after each wake-up did not publish again


def test_get_event_waits_for_a_first_value(engine: Engine) -> None:
    # Given a reader waiting before anything was published
    GATE.clear()
    got: list[Any] = []
    handle = engine.start(evt_gated, run_id="late-event")
    reader = threading.Thread(target=lambda: got.append(engine.get_event("late-event", "k", 5)))
    reader.start()

    # When the value is published
    GATE.set()

    # Then the reader gets it
    reader.join(10)
    assert got == [{"state": "ready"}]
    assert handle.result(timeout=5) == "ok"


GATE = threading.Event()


@intemporal.activity
def evt_wait_gate() -> None:
    assert GATE.wait(10)


@intemporal.workflow
def evt_gated() -> str:
    evt_wait_gate()
    intemporal.set_event("k", {"state": "ready"})
    return "ok"


def test_get_event_without_such_key_returns_none_after_its_timeout(engine: Engine) -> None:
    engine.start(evt_silent, run_id="silent")
    wait_until(lambda: engine.get_run("silent").status is RunStatus.WAITING, what="waiting")

    started = time.monotonic()
    assert engine.get_event("silent", "progress", timeout=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2

    engine.signal("silent", "done")


def test_get_event_of_an_unknown_run_raises_run_not_found(engine: Engine) -> None:
    with pytest.raises(intemporal.RunNotFound):
        engine.get_event("no-such-run", "progress", timeout=0.1)


def test_set_event_outside_a_workflow_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="inside a workflow"):
        intemporal.set_event("k", 1)


# -- recorded values ---------------------------------------------------------------------------------

SEEN: list[tuple[Any, ...]] = []
EFFECTS = {"calls": 0}


def evt_dice(sides: int) -> int:
    EFFECTS["calls"] += 1
    return 1 + EFFECTS["calls"] % sides


@intemporal.workflow
def evt_recorded() -> list[Any]:
    t = intemporal.now()
    u = intemporal.uuid4()
    d = intemporal.side_effect(evt_dice, 6)
    SEEN.append((t, u, d))
    intemporal.wait_for_signal("go")  # suspends: the run replays from the top when woken
    return [t.isoformat(), str(u), d]


def test_now_uuid4_side_effect_return_recorded_values_on_replay(engine: Engine) -> None:
    # Given a run that took a time, a uuid and a side effect, then suspended
    SEEN.clear()
    EFFECTS["calls"] = 0
    handle = engine.start(evt_recorded, run_id="recorded")
    wait_until(lambda: engine.get_run("recorded").status is RunStatus.WAITING, what="waiting")
    assert len(SEEN) == 1

    # When it wakes up and replays
    engine.signal("recorded", "go")
    result = handle.result(timeout=5)

    # Then it saw the same values both times, and the side effect ran once
    assert len(SEEN) == 2
    assert SEEN[0] == SEEN[1]
    t, u, d = SEEN[0]
    assert isinstance(t, datetime) and t.tzinfo is not None
    assert isinstance(u, uuid.UUID) and u.version == 4
    assert EFFECTS["calls"] == 1
    assert result == [t.isoformat(), str(u), d]
    names = [e.get("name") for e in engine.history("recorded") if e["type"] == "side_effect"]
    assert names == ["intemporal.now", "intemporal.uuid4", "intemporal.side_effect:evt_dice"]


def test_recorded_values_survive_a_new_engine(engine: Engine) -> None:
    # Given a suspended run whose engine was closed
    SEEN.clear()
    EFFECTS["calls"] = 0
    engine.start(evt_recorded, run_id="recorded-closed")
    wait_until(
        lambda: engine.get_run("recorded-closed").status is RunStatus.WAITING, what="waiting"
    )
    engine.close()

    # When another engine resumes it and it is signalled
    with Engine(engine.store, threads=2) as fresh:
        fresh.signal("recorded-closed", "go")
        result = fresh.resume("recorded-closed").result(timeout=5)

    # Then the values are the recorded ones
    assert SEEN[0] == SEEN[-1]
    assert EFFECTS["calls"] == 1
    assert result[2] == SEEN[0][2]


def test_now_uuid4_side_effect_outside_a_workflow() -> None:
    before = datetime.now(UTC)
    t = intemporal.now()
    assert before <= t <= datetime.now(UTC)
    assert t.tzinfo is not None

    a, b = intemporal.uuid4(), intemporal.uuid4()
    assert isinstance(a, uuid.UUID) and a != b

    assert intemporal.side_effect(lambda x, y: x + y, 2, 3) == 5
