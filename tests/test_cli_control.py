"""The command line of runs that change course: `fork`, `terminate`, and what `show`/`list` say."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from helpers import Cli
from process_helpers import wait_until

import intemporal
from intemporal import Engine, RunStatus

BROKEN = {"on": True}


@intemporal.activity
def step_one(x: int) -> int:
    return x + 1


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step_two(x: int) -> int:
    if BROKEN["on"]:
        raise RuntimeError("broken step")
    return x * 10


@intemporal.workflow(name="cli_control.flow")
def flow(x: int) -> int:
    return step_two(step_one(x))


@intemporal.workflow(name="cli_control.waiter")
def waiter() -> str:
    return str(intemporal.wait_for_signal("go"))


def test_fork_from_the_failed_step_and_show_says_where_it_came_from(
    home: Path, cli: Cli, file_engine: Engine
) -> None:
    BROKEN["on"] = True
    with contextlib.suppress(RuntimeError):
        file_engine.run(flow, 1, run_id="broken")
    BROKEN["on"] = False
    result = cli("fork", "broken", "--from-step", "2", "--run-id", "fixed")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["fixed", "20"]
    shown = cli("show", "fixed")
    assert shown.exit_code == 0, shown.output
    assert "forked from" in shown.stdout and "broken at step 2" in shown.stdout
    # A step outside the run is a clear error, no traceback
    bad = cli("fork", "broken", "--from-step", "9")
    assert bad.exit_code == 1 and "between 1 and 3" in bad.output
    assert "Traceback" not in bad.output


def test_terminate_and_list_by_version(home: Path, cli: Cli) -> None:
    with Engine(home, version="7.1") as engine:
        handle = engine.start(waiter, run_id="parked")
        wait_until(lambda: handle.status() is RunStatus.WAITING)
    result = cli("terminate", "parked", "--reason", "no longer needed")
    assert result.exit_code == 0, result.output
    assert "parked: terminated (no longer needed)" in result.stdout
    with Engine(home, worker=False) as engine:
        info = engine.get_run("parked")
        assert info.status is RunStatus.CANCELLED and info.version == "7.1"
    again = cli("terminate", "parked", "--json")
    assert json.loads(again.stdout)["terminated"] is False
    listed = cli("list", "--version", "7.1", "--json")
    assert [json.loads(line)["run_id"] for line in listed.stdout.splitlines()] == ["parked"]
    assert "no runs match" in cli("list", "--version", "0.1").stdout
    shown = cli("show", "parked")
    assert "version" in shown.stdout and "7.1" in shown.stdout


def test_a_worker_executes_only_the_runs_of_its_versions(home: Path, cli: Cli) -> None:
    with Engine(home, worker=False, version="1.0") as client:
        client.start(flow, 1, run_id="v1-run")
    BROKEN["on"] = False
    other = cli("worker", "--once", "--interval", "0.05", "--version", "2.0")
    assert other.exit_code == 0, other.output
    assert "v1-run" not in other.stdout
    mine = cli("worker", "--once", "--interval", "0.05", "--version", "1.0", "--version", "2.0")
    assert mine.exit_code == 0, mine.output
    assert "v1-run completed: 20" in mine.stdout
