"""Async workflows at their edges: tasks a workflow leaves behind when it returns."""

from __future__ import annotations

import asyncio
import time

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
