"""Cron schedules (issue 16): one run per tick across workers, missed ticks, the tick argument.

Fast versions run on a virtual clock (`VirtualClock.advance` moves a minute at once); the
every-second versions wait for real ticks, in worker processes on the slow path.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import Cli
from process_helpers import wait_until
from test_postgres import _cli_worker

import intemporal
from intemporal import Engine, FileStore, RunStatus, Store, schedules
from intemporal.clock import VirtualClock

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _forget_schedules() -> Iterator[None]:
    """Schedules a test declares are forgotten after it: later engines do not fire them."""
    before = {s.name for s in schedules.schedules()}
    yield
    for sched in schedules.schedules():
        if sched.name not in before:
            schedules.forget(sched.name)


def _minutely(name: str, catch_up: bool = False) -> tuple[Any, list[datetime]]:
    """A workflow scheduled every minute that lists the ticks it executed."""
    ran: list[datetime] = []
    lock = threading.Lock()

    @intemporal.scheduled("* * * * *", catch_up=catch_up)
    @intemporal.workflow(name=name)
    def minutely(tick: datetime) -> str:
        with lock:
            ran.append(tick)
        return tick.isoformat()

    return minutely, ran


def _at_a_minute_start() -> VirtualClock:
    """A virtual clock one second past a minute: no real minute passes during a test."""
    clock = VirtualClock()
    clock.advance(61 - clock.time() % 60)
    return clock


def _runs(store: Store, name: str, done: bool = False) -> list[str]:
    return sorted(
        i.run_id
        for i in store.list_runs(workflow=name)
        if not done or i.status is RunStatus.COMPLETED
    )


def _count_is(store: Store, name: str, n: int) -> Callable[[], bool]:
    return lambda: len(_runs(store, name, done=True)) == n


def _ids(name: str, first: float, count: int) -> list[str]:
    return [f"{name}@{schedules.tick_text(first + 60 * i)}" for i in range(count)]


def _next_minute(clock: VirtualClock) -> float:
    clock.advance(60)
    now = clock.time()
    return now - now % 60


def test_two_workers_start_exactly_one_run_per_tick(store: Store) -> None:
    # Given a minute schedule and two worker engines on one store and one (virtual) clock
    _, ran = _minutely("minutely")
    clock = _at_a_minute_start()
    with Engine(store, clock=clock) as a, Engine(store, clock=clock) as b:
        assert a is not b
        # When three minutes pass, one at a time
        first = None
        for n in range(1, 4):
            tick = _next_minute(clock)
            first = first or tick
            wait_until(_count_is(store, "minutely", n), what="a tick")
    # Then each tick has exactly one run, executed once, given its tick (UTC)
    assert first is not None
    assert _runs(store, "minutely") == _ids("minutely", first, 3)
    assert sorted(ran) == [datetime.fromtimestamp(first + 60 * i, UTC) for i in range(3)]
    run = store.summary(_ids("minutely", first, 1)[0])
    assert run.result == datetime.fromtimestamp(first, UTC).isoformat()


def test_a_worker_that_was_up_fires_every_tick_when_its_clock_jumps(store: Store) -> None:
    # Given a minute schedule and a worker engine on a virtual clock
    _, ran = _minutely("jumpy")
    clock = _at_a_minute_start()
    now = clock.time()  # read once: the virtual clock moves on with real time meanwhile
    first = now - now % 60 + 60
    with Engine(store, clock=clock):
        # When five minutes pass at once, before the engine's first look at its clock
        clock.advance(300)
        # Then each of the five ticks has one run, none dropped as if the worker were down
        wait_until(_count_is(store, "jumpy", 5), what="five ticks")
        clock.advance(150)  # and two more later
        wait_until(_count_is(store, "jumpy", 7), what="seven ticks")
    assert _runs(store, "jumpy") == _ids("jumpy", first, 7)
    assert len(ran) == 7


@pytest.mark.parametrize("catch_up", [False, True])
def test_a_restarted_worker_fires_missed_ticks_only_if_asked(store: Store, catch_up: bool) -> None:
    # Given a worker that started one tick's run, then stopped for five ticks
    _minutely("daily-ish", catch_up=catch_up)
    clock = _at_a_minute_start()
    with Engine(store, clock=clock):
        first = _next_minute(clock)
        wait_until(lambda: _runs(store, "daily-ish", done=True), what="the first tick")
    clock.advance(300)
    # When a worker starts again, and one more tick comes
    with Engine(store, clock=clock):
        last = _next_minute(clock)
        wait_until(
            lambda: f"daily-ish@{schedules.tick_text(last)}" in _runs(store, "daily-ish", True),
            what="the tick after the restart",
        )
        # Then the missed ticks were started only with catch_up=True, each once
        expected = _ids("daily-ish", first, 7) if catch_up else _ids("daily-ish", first, 1)
        expected += [] if catch_up else [f"daily-ish@{schedules.tick_text(last)}"]
        wait_until(lambda: len(_runs(store, "daily-ish", True)) == len(expected), what="runs")
    assert _runs(store, "daily-ish") == expected


@pytest.mark.slow  # the virtual-clock test above is the fast version
def test_every_second_with_two_engines_in_real_time(tmp_path: Path) -> None:
    # Given an every-second schedule and two worker engines
    store = FileStore(tmp_path / "store")
    marks = tmp_path / "marks"
    os.environ["MARKS"] = str(marks)
    try:
        from schedule_flows import every_second  # noqa: F401 - declares the schedule

        with Engine(store), Engine(store):
            # When two ticks have run
            wait_until(lambda: len(_runs(store, "every-second", True)) >= 2, what="2 ticks")
    finally:
        schedules.forget("every-second")
        del os.environ["MARKS"]
    _check_every_second(store, marks)


def _check_every_second(store: Store, marks: Path) -> None:
    """Each tick run executed once, ticks one second apart with none missing."""
    done = _runs(store, "every-second", done=True)
    executed = [line.split()[0] for line in marks.read_text().splitlines()]
    assert len(executed) == len(set(executed)) == len(done) >= 2
    ticks = sorted(datetime.fromisoformat(t).timestamp() for t in executed)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1.0] * (len(ticks) - 1)
    assert done == sorted(f"every-second@{schedules.tick_text(t)}" for t in ticks)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_every_second_with_two_worker_processes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given two worker processes importing an every-second schedule
    location = str(tmp_path / "store") if kind == "file" else request.getfixturevalue("pg_dsn")
    marks = tmp_path / "marks"
    os.environ["MARKS"] = str(marks)
    try:
        workers = [_cli_worker(location, TESTS, "schedule_flows") for _ in range(2)]
    finally:
        del os.environ["MARKS"]
    store = FileStore(location) if kind == "file" else intemporal.PostgresStore(location)
    try:
        # When four ticks have run
        wait_until(lambda: len(_runs(store, "every-second", True)) >= 4, 20, "4 ticks")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGINT)
        for proc in workers:
            proc.communicate(timeout=30)
    # Then each tick has one run, executed by one worker once
    _check_every_second(store, marks)
    store.close()


# -- declaring -------------------------------------------------------------------------------
@pytest.mark.parametrize("cron", ["* * *", "61 * * * *", "every minute", ""])
def test_a_bad_cron_expression_is_refused(cron: str) -> None:
    with pytest.raises(ValueError, match="not a cron expression"):
        intemporal.scheduled(cron)


def test_a_workflow_name_that_cannot_be_a_run_id_is_refused() -> None:
    decorate: Callable[[Any], Any] = intemporal.scheduled("* * * * *")
    with pytest.raises(ValueError, match="cannot be part of a run id"):

        @decorate
        @intemporal.workflow
        def local_flow(tick: datetime) -> None:  # its name has "<locals>": not an id
            return None


SCHEDULED_APP = """
from datetime import datetime
import intemporal

@intemporal.scheduled("0 9 * * 1-5", queue="reports")
@intemporal.workflow(name="morning-report")
def morning_report(tick: datetime) -> str:
    return tick.isoformat()
"""


def test_schedules_command_lists_each_with_its_next_tick(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home.parent)
    (home.parent / "reportapp.py").write_text(SCHEDULED_APP)
    try:
        out = cli("schedules", "--import", "reportapp", "--json")
        assert out.exit_code == 0, out.output
        (row,) = [json.loads(line) for line in out.output.splitlines()]
        assert row["workflow"] == "morning-report" and row["cron"] == "0 9 * * 1-5"
        assert row["queue"] == "reports" and row["catch_up"] is False and row["last"] is None
        nxt = datetime.strptime(row["next"], schedules.TICK_FORMAT)
        assert (nxt.hour, nxt.minute, nxt.second) == (9, 0, 0) and nxt.weekday() < 5
        table = cli("schedules", "--import", "reportapp")
        assert "morning-report" in table.output and "0 9 * * 1-5" in table.output
    finally:
        schedules.forget("morning-report")
