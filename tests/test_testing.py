"""`intemporal.testing`: an engine on a memory store whose waits complete at once, and the
pytest fixture `intemporal_engine`."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import intemporal
import intemporal.testing
from intemporal import Engine, RunStatus
from intemporal.clock import VirtualClock

DAY = 86400.0


@intemporal.workflow
def expense(amount: int, approval_timeout: float = 3 * DAY) -> dict[str, Any]:
    asked = intemporal.now()
    try:
        decision = intemporal.wait_for_signal("approve", timeout=approval_timeout)
    except intemporal.SignalTimeout:
        waited = (intemporal.now() - asked).total_seconds()
        return {"status": "expired", "waited": waited}
    return {"status": "approved", "by": decision["by"]}


@intemporal.workflow
def nap(seconds: float) -> list[datetime]:
    before = intemporal.now()
    intemporal.sleep(seconds)
    return [before, intemporal.now()]


FLAKY: dict[str, int] = {}


@intemporal.activity(
    retry=intemporal.RetryPolicy(max_attempts=4, initial_interval=600, max_interval=3600)
)
def flaky(key: str) -> str:
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] < 4:
        raise ConnectionError(f"attempt {FLAKY[key]}")
    return f"ok after {FLAKY[key]}"


@intemporal.workflow
def retried(key: str) -> list[Any]:
    before = intemporal.now()
    value = flaky(key)
    return [value, (intemporal.now() - before).total_seconds()]


@intemporal.workflow
def fanned(key: str) -> list[Any]:
    before = intemporal.now()
    futures = [intemporal.submit(flaky, f"{key}-{i}") for i in range(2)]
    return [intemporal.join_all(futures), (intemporal.now() - before).total_seconds()]


def test_a_three_day_approval_timeout_passes_in_milliseconds() -> None:
    # Given an engine with time skipping and a workflow that waits 3 days for approval
    with intemporal.testing.engine() as engine:
        started = time.monotonic()
        # When nobody approves
        result = engine.run(expense, 240)
        took = time.monotonic() - started

    # Then the timeout fires at once, and the workflow saw three days pass
    assert result["status"] == "expired"
    assert result["waited"] >= 3 * DAY
    assert took < 2.0
    assert isinstance(engine.clock, VirtualClock)
    assert engine.clock.skipped >= 3 * DAY - 1


def test_a_signal_sent_before_waiting_for_the_result_arrives_first() -> None:
    with intemporal.testing.engine() as engine:
        # Given a run waiting 3 days for approval, which is signalled
        handle = engine.start(expense, 240, run_id="exp")
        handle.signal("approve", {"by": "alice"})
        # Then the signal wins over the timeout: time skips only while the test waits
        assert handle.result(timeout=5) == {"status": "approved", "by": "alice"}
        assert engine.clock.skipped < DAY


@intemporal.workflow
async def expense_async(amount: int, approval_timeout: float = 3 * DAY) -> dict[str, Any]:
    asked = intemporal.now()
    try:
        decision = await intemporal.wait_for_signal_async("approve", timeout=approval_timeout)
    except intemporal.SignalTimeout:
        waited = (intemporal.now() - asked).total_seconds()
        return {"status": "expired", "waited": waited}
    return {"status": "approved", "by": decision["by"]}


def test_an_async_approval_timeout_passes_in_milliseconds_too() -> None:
    # Given an async workflow waiting 2 days for a signal, on an engine with time skipping
    with intemporal.testing.engine() as engine:
        started = time.monotonic()
        # When nobody signals and the test waits for the result (blocking, then awaiting)
        result = engine.start(expense_async, 1, 2 * DAY).result(timeout=10)
        awaited = asyncio.run(engine.start(expense_async, 2, DAY).result_async(timeout=10))
        # Then the timeout fires at once, and the workflow saw the days pass
        assert result["status"] == awaited["status"] == "expired"
        assert result["waited"] >= 2 * DAY and awaited["waited"] >= DAY
        assert time.monotonic() - started < 5.0
        # And a signal sent before anyone waits for the result still wins
        handle = engine.start(expense_async, 3, run_id="exp-async")
        handle.signal("approve", {"by": "bob"})
        assert handle.result(timeout=10) == {"status": "approved", "by": "bob"}


def test_a_run_waiting_without_a_result_awaited_keeps_waiting() -> None:
    with intemporal.testing.engine() as engine:
        handle = engine.start(expense, 240, 60.0, run_id="w")
        deadline = time.monotonic() + 5
        while handle.status() is not RunStatus.WAITING and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # a few watcher ticks: nobody awaits, so no time is skipped
        assert handle.status() is RunStatus.WAITING
        assert handle.result(timeout=5)["status"] == "expired"


def test_durable_sleep_completes_at_once_and_now_moves_forward() -> None:
    with intemporal.testing.engine() as engine:
        started = time.monotonic()
        before, after = engine.run(nap, 7 * DAY)
        assert time.monotonic() - started < 2.0
    assert (after - before).total_seconds() >= 7 * DAY
    # the journal's timer is in virtual time too
    timer = [
        e for e in engine.history(engine.list_runs()[0].run_id) if e["type"] == "timer_started"
    ]
    assert timer[0]["fire_at"] >= before.timestamp() + 7 * DAY


def test_short_sleeps_are_skipped_too() -> None:
    # A sleep shorter than a second, which real time waits for on the run's thread
    with intemporal.testing.engine() as engine:
        before, after = engine.run(nap, 0.9)
        # was skipped on the virtual clock, not waited for
        assert engine.clock.skipped >= 0.5
    assert (after - before).total_seconds() >= 0.9


def test_retry_backoffs_complete_at_once() -> None:
    # Given an activity that fails 3 times, 10, 20 and 40 minutes apart
    with intemporal.testing.engine() as engine:
        started = time.monotonic()
        value, waited = engine.run(retried, "inline")
        fan_values, fan_waited = engine.run(fanned, "pool")  # backoffs on activity threads
        took = time.monotonic() - started

    # Then the run waited its backoffs on the virtual clock, not for real
    assert value == "ok after 4"
    assert waited >= 600 + 1200 + 2400
    assert fan_values == ["ok after 4", "ok after 4"]
    assert fan_waited >= 600 + 1200 + 2400
    assert took < 3.0


def test_without_time_skipping_time_is_real() -> None:
    with intemporal.testing.engine(time_skipping=False, threads=2) as engine:
        assert not isinstance(engine.clock, VirtualClock)
        with pytest.raises(TimeoutError):
            engine.start(nap, DAY).result(timeout=0.3)


def test_engine_options_pass_through_and_the_store_is_in_memory() -> None:
    with intemporal.testing.engine(codec="json", threads=1) as engine:
        assert engine.codec == "json" and engine.threads == 1
        assert isinstance(engine.store, intemporal.MemoryStore)
    with pytest.raises(TypeError):
        with intemporal.testing.engine(colour="red"):
            pass


def test_delay_is_skipped_on_a_virtual_clock() -> None:
    with intemporal.testing.engine() as engine:
        handle = engine.start(nap, 0, delay=2 * DAY)
        assert handle.status() is RunStatus.PENDING
        before, _ = handle.result(timeout=5)
        assert engine.clock.skipped >= 2 * DAY - 1
        assert before.timestamp() >= engine.history(handle.run_id)[0]["start_at"]


def test_the_fixture_gives_a_time_skipping_engine(intemporal_engine: Engine) -> None:
    assert isinstance(intemporal_engine.store, intemporal.MemoryStore)
    assert intemporal_engine.run(expense, 10, DAY)["status"] == "expired"


def readme_test_file() -> str:
    """The example test file of the README's "Testing workflows" section."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Testing workflows", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block.startswith("# test_expense.py\n")
    return block


def test_the_readme_example_test_passes_with_the_plugin(tmp_path: Path) -> None:
    # Given the README's example test file, alone in a folder (no conftest: only the plugin)
    (tmp_path / "test_expense.py").write_text(readme_test_file())

    # When pytest runs it there, timing each test (setup, call, teardown)
    argv = ["-q", "-p", "no:cacheprovider", "--durations=0", "--durations-min=0"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv, "test_expense.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # a hang; a child's start alone took 30 s on a loaded host
    )

    # Then the fixture is found through the entry point, and 3 days pass at once: each
    # test takes far less than the 60 s its shortest timer would really wait
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    spent: dict[str, float] = {}
    for seconds, name in re.findall(r"^([0-9.]+)s \w+ +test_expense\.py::(\w+)", proc.stdout, re.M):
        spent[name] = spent.get(name, 0.0) + float(seconds)
    assert len(spent) == 3 and max(spent.values()) < 30, proc.stdout
