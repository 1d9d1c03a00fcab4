"""Async workflows at their edges: tasks a workflow leaves behind when it returns, and
`intemporal resume` of an async run that comes to wait for a signal or a distant timer."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_on
from process_helpers import wait_until

import intemporal
from intemporal import Engine, MemoryStore
from intemporal.verify import verify_replay

STARTED: list[str] = []


@intemporal.activity
async def slow_leg(name: str, seconds: float) -> str:
    STARTED.append(name)
    await asyncio.sleep(seconds)
    return name


@intemporal.workflow
async def race_left_running() -> str:
    fast = asyncio.create_task(slow_leg("fast", 0.05))
    slow = asyncio.create_task(slow_leg("slow", 30))
    done, _ = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
    return "fast" if fast in done else "slow"  # the loser is not cancelled by the workflow


@intemporal.workflow
async def wait_with_a_timeout() -> list[int]:
    legs = [asyncio.create_task(slow_leg(f"leg{i}", s)) for i, s in enumerate((0.02, 30, 30))]
    done, pending = await asyncio.wait(legs, timeout=0.5)
    return [len(done), len(pending)]


def test_a_workflow_returning_with_activities_in_flight_ends_at_once() -> None:
    store = MemoryStore()
    with Engine(store) as engine:
        # Given workflows that return while activities of 30 s still run in their tasks
        started = time.monotonic()
        # When they return: the run ends then, as `asyncio.run` ends (their tasks cancelled)
        assert engine.run(race_left_running, run_id="race") == "fast"
        assert engine.run(wait_with_a_timeout, run_id="waited") == [1, 2]
        assert time.monotonic() - started < 10
        # Then each leftover activity is journaled as stopped, and the journals replay dry
        for run_id, stopped in (("race", 1), ("waited", 2)):
            failed = [e for e in engine.history(run_id) if e["type"] == "activity_failed"]
            assert len(failed) == stopped and all("CancelledError" in str(e) for e in failed)
            ok, message = verify_replay(store, run_id)
            assert ok, message


@intemporal.activity
async def noted(x: int) -> int:
    return x


@intemporal.workflow(name="edges.approval")
async def async_approval(x: int) -> int:
    await noted(x)
    got = await intemporal.wait_for_signal_async("ok")
    return await noted(x + got)


@intemporal.workflow(name="edges.nap")
async def async_nap(x: int) -> int:
    await noted(x)
    await intemporal.sleep_async(3600)
    return x


@pytest.mark.parametrize(
    ("wf", "waits_for"), [(async_approval, "signal 'ok'"), (async_nap, "a timer, due")]
)
def test_resume_leaves_an_async_run_waiting_long_to_a_worker(
    tmp_path: Path, wf: Any, waits_for: str
) -> None:
    # Given an async run that waits (a signal, an hour's timer), its engine gone
    with Engine(str(tmp_path)) as engine:
        engine.start(wf, 1, run_id="w")
        wait_until(lambda: len(engine.history("w")) >= 3, what="the wait")
    cli = cli_on(tmp_path)
    # When `intemporal resume` takes it: it comes to the same wait
    started = time.monotonic()
    first = cli("resume", "w", "--timeout", "20")  # a regression exits 3, not hangs
    # Then the command does not hold the terminal: it says what the run waits for, exit 0
    assert first.exit_code == 0, first.output
    assert "w waiting: waits for " + waits_for in first.stdout
    assert time.monotonic() - started < 10
    if wf is async_approval:  # and once signalled, the next resume completes it
        assert cli("signal", "w", "ok", "41").exit_code == 0
        done = cli("resume", "--all", "--json")
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["result"] == 42
