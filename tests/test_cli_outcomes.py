"""Exit codes of `resume`, `result` and `worker --once`, and what `resume --all` takes.

| outcome of a run the command followed                         | exit |
| ------------------------------------------------------------- | ---- |
| completed, or cancelled                                       | 0    |
| left on purpose: waits for a signal, another process has it   | 0    |
| failed (in this invocation), or cannot go on                  | 1    |
| usage error                                                   | 2    |
| still going when --timeout passed                             | 3    |

`resume --all` takes pending runs, orphaned ones and waiting ones whose engine is gone;
failed runs only with `--failed`; it touches no other run (`updated_at` unchanged).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Cli, cli_on, held_elsewhere, parked
from process_helpers import journal_events, run_and_kill, wait_until
from typer.testing import Result

import intemporal
from intemporal import Engine, FileStore, RetryPolicy, RunStatus
from intemporal import cli_render as render

STATE = {"broken": True}


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STATE, "broken", True)


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def fetch(x: int) -> int:
    if STATE["broken"]:
        raise ConnectionError(f"cannot fetch {x}")
    return x * 10


@intemporal.workflow(name="outcomes.fetching")
def fetching(x: int) -> int:
    return fetch(x)


@intemporal.workflow(name="outcomes.approval")
def approval(x: int) -> int:
    return x + intemporal.wait_for_signal("ok")


@intemporal.workflow(name="outcomes.plain")
def plain(x: int) -> int:
    return x


@pytest.fixture
def engine(file_engine: Engine) -> Engine:
    return file_engine


def objects(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def updated(store: intemporal.Store) -> dict[str, float]:
    return {rid: store.summary(rid).updated_at for rid in store.run_ids()}


def pending(home: Path, wf: Any, x: int, run_id: str) -> None:
    with Engine(str(home), worker=False) as client:
        client.start(wf, x, run_id=run_id)


def left_waiting(home: Path, run_id: str) -> None:
    """A run waiting for a signal whose engine is gone (closed)."""
    parked(home, approval, 1, run_id)


# -- another live process has the run ----------------------------------------------------------
@pytest.fixture
def held(home: Path) -> Iterator[str]:
    """A pending run `busy` that another live process has claimed (is executing)."""
    pending(home, plain, 4, "busy")
    with held_elsewhere(home, "busy") as run_id:
        yield run_id


def test_resume_of_a_run_another_process_executes_exits_0_and_touches_nothing(
    cli: Cli, home: Path, held: str
) -> None:
    before = (home / "busy.jsonl").read_bytes()

    result = cli("resume", held)

    assert result.exit_code == 0, result.output
    assert "busy running: another process has it (executing)" in result.stdout
    as_json = cli("resume", held, "--json")
    assert as_json.exit_code == 0
    [outcome] = objects(as_json)
    assert outcome["status"] == "running" and "another process has it" in outcome["note"]
    assert (home / "busy.jsonl").read_bytes() == before


def test_result_of_a_run_still_going_when_the_timeout_passes_exits_3(cli: Cli, held: str) -> None:
    result = cli("result", held, "--timeout", "0.3")
    assert result.exit_code == 3, result.output
    assert "still running when --timeout passed" in result.stdout


def test_resume_of_a_run_a_live_engine_keeps_waiting_exits_0(
    cli: Cli, home: Path, engine: Engine
) -> None:
    engine.start(approval, 1, run_id="parked")
    wait_until(lambda: engine.get_run("parked").status is RunStatus.WAITING, what="a wait")
    before = (home / "parked.jsonl").read_bytes()

    result = cli("resume", "parked")

    assert result.exit_code == 0, result.output
    assert "another process has it (keeping it waiting)" in result.stdout
    assert (home / "parked.jsonl").read_bytes() == before


# -- result ----------------------------------------------------------------------------------------
def test_result_prints_the_value_of_a_completed_run(cli: Cli, engine: Engine) -> None:
    engine.run(plain, 7, run_id="seven")
    result = cli("result", "seven")
    assert result.exit_code == 0 and result.stdout == "7\n"
    assert objects(cli("result", "seven", "--json")) == [
        {"run_id": "seven", "status": "completed", "result": 7, "error": None}
    ]


def test_result_of_a_failed_run_exits_1_with_its_error(cli: Cli, engine: Engine) -> None:
    with pytest.raises(ConnectionError):
        engine.run(fetching, 3, run_id="broken")
    result = cli("result", "broken")
    assert result.exit_code == 1
    assert "broken failed: ConnectionError: cannot fetch 3" in result.stdout
    [outcome] = objects(cli("result", "broken", "--json"))
    assert outcome["status"] == "failed" and outcome["error"] == "ConnectionError: cannot fetch 3"


def test_result_waits_for_a_run_executed_elsewhere(cli: Cli, engine: Engine) -> None:
    handle = engine.start(approval, 2, run_id="later")
    wait_until(lambda: handle.status() is RunStatus.WAITING, what="a wait")
    assert cli("result", "later", "--timeout", "0.2").exit_code == 3  # waits, unlike resume
    handle.signal("ok", 40)
    result = cli("result", "later", "--timeout", "10")
    assert result.exit_code == 0 and result.stdout == "42\n"


def test_result_of_an_unknown_run_is_a_user_error(cli: Cli, engine: Engine) -> None:
    result = cli("result", "nope")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nope" in result.stderr


# -- resume --all ----------------------------------------------------------------------------------
def test_resume_all_takes_unfinished_runs_and_leaves_the_rest_untouched(
    cli: Cli, home: Path
) -> None:
    # Given runs of every kind
    with Engine(str(home), threads=2) as first:
        first.run(plain, 1, run_id="done")
        with pytest.raises(ConnectionError):
            first.run(fetching, 2, run_id="failed")
    pending(home, plain, 3, "queued")
    left_waiting(home, "abandoned")
    with Engine(str(home), threads=2) as live:  # a live engine keeps this one waiting
        live.start(approval, 5, run_id="kept")
        wait_until(lambda: live.get_run("kept").status is RunStatus.WAITING, what="a wait")
        store = FileStore(home)
        before = updated(store)

        # When resume --all runs (the failed run's cause still there)
        result = cli("resume", "--all", "--json")

        # Then it took the pending and the abandoned waiting run, and exits 0
        assert result.exit_code == 0, result.output
        outcomes = {o["run_id"]: o for o in objects(result)}
        assert outcomes["queued"]["result"] == 3
        assert outcomes["abandoned"]["status"] == "waiting"
        assert set(outcomes) == {"queued", "abandoned"}
        after = updated(store)
        for rid in ("done", "failed", "kept"):
            assert after[rid] == before[rid], rid

        # And with --failed it retries the failed run: failing again, it exits 1
        again = cli("resume", "--all", "--failed", "--json")
        assert again.exit_code == 1, again.output
        assert {o["run_id"]: o["status"] for o in objects(again)}["failed"] == "failed"
        assert updated(store)["kept"] == before["kept"]

        # And once the cause is fixed, `--failed` alone (it implies --all) completes it
        STATE["broken"] = False
        fixed = cli("resume", "--failed", "--json")
        assert fixed.exit_code == 0, fixed.output
        assert {o["run_id"]: o["result"] for o in objects(fixed)}["failed"] == 20


def test_resume_all_exits_0_while_failed_runs_exist(cli: Cli, engine: Engine) -> None:
    with pytest.raises(ConnectionError):
        engine.run(fetching, 1, run_id="f")
    result = cli("resume", "--all")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("nothing to resume")


def test_resume_names_or_all_and_failed_goes_with_all_only(cli: Cli, engine: Engine) -> None:
    engine.run(plain, 1, run_id="r")
    assert cli("resume").exit_code == 2
    assert cli("resume", "r", "--all").exit_code == 2
    assert cli("resume", "r", "--failed").exit_code == 2


# -- worker --once -----------------------------------------------------------------------------
def test_worker_once_exits_1_when_a_run_it_executed_failed(cli: Cli, home: Path) -> None:
    pending(home, fetching, 1, "w-fail")
    pending(home, plain, 2, "w-ok")
    result = cli("worker", "--once", "--interval", "0.05")
    assert result.exit_code == 1, result.output
    assert "w-fail failed: ConnectionError" in result.stdout
    assert "w-ok completed: 2" in result.stdout

    pending(home, plain, 3, "w-ok-2")
    assert cli("worker", "--once", "--interval", "0.05").exit_code == 0


@intemporal.workflow(name="outcomes.slow")
def slow(x: int) -> int:
    intemporal.sleep(0.8)  # a short timer: held on the run's thread
    return x


def test_resume_with_a_timeout_that_passes_first_exits_3_and_the_run_stays_resumable(
    cli: Cli, home: Path
) -> None:
    pending(home, slow, 9, "slow")
    result = cli("resume", "slow", "--timeout", "0.1")
    assert result.exit_code == 3, result.output
    assert "still running when --timeout passed" in result.stdout
    done = cli("resume", "slow", "--json")
    assert done.exit_code == 0 and objects(done)[0]["result"] == 9


@intemporal.workflow(name="outcomes.gives_up")
def gives_up(x: int) -> int:
    raise TimeoutError(f"gave up on {x}")


class _LateLook(intemporal.RunHandle[Any]):
    """A handle whose first look times out although the run is recorded finished: the race
    of a run that ends just after `resume` stopped waiting for one poll."""

    looked = False

    def result(self, timeout: float | None = None) -> Any:
        if not self.looked and timeout is not None:
            self.looked = True
            raise TimeoutError(f"run {self.run_id!r} did not finish within {timeout} s")
        return super().result(timeout)


@pytest.mark.parametrize(
    ("wf", "status", "value", "error"),
    [
        (plain, "completed", 5, None),
        (gives_up, "failed", None, "TimeoutError: gave up on 5"),
    ],
)
def test_a_run_ending_as_a_poll_of_resume_times_out_reports_its_own_outcome(
    engine: Engine, wf: Any, status: str, value: Any, error: str | None
) -> None:
    with pytest.raises(Exception) if error else contextlib.nullcontext():
        engine.run(wf, 5, run_id="r")
    outcome = render.wait(engine, _LateLook(engine, "r"), None)
    assert (outcome.status, outcome.value, outcome.error) == (status, value, error)


WAITING_SCRIPT = """
@intemporal.activity
def note(x):
    record("note", x)
    return x


@intemporal.workflow(name=WF_NAME)
def approval(x):
    note(x)
    got = intemporal.wait_for_signal("ok")
    return note(x + got)


WORKFLOW = approval
"""


def test_resume_all_takes_a_waiting_run_whose_process_was_killed(tmp_path: Path) -> None:
    # Given a run parked waiting for a signal by a process that was then SIGKILLed
    def parked(store: Path, run_id: str) -> bool:
        events = journal_events(store, run_id)
        return bool(events) and events[-1]["type"] == "run_suspended"

    crash = run_and_kill(tmp_path, WAITING_SCRIPT, lines=1, args=(1,), run_id="w", ready=parked)
    cli = cli_on(crash.store)
    assert objects(cli("list", "--json"))[0]["status"] == "waiting"

    # When resume --all runs: it takes it (its engine is gone), and it waits again
    first = cli("resume", "--all", "--json")  # the script is found as recorded
    assert first.exit_code == 0, first.output
    assert [(o["run_id"], o["status"]) for o in objects(first)] == [("w", "waiting")]

    # Then, signalled, the next resume --all completes it without repeating the first step
    assert cli("signal", "w", "ok", "41").exit_code == 0
    done = cli("resume", "--all", "--json")
    assert done.exit_code == 0, done.output
    assert [(o["run_id"], o["result"]) for o in objects(done)] == [("w", 42)]
    assert crash.lines() == ["note 1", "note 42"]


def test_resume_of_a_failed_run_another_process_is_resuming_exits_0(
    cli: Cli, home: Path, engine: Engine
) -> None:
    with pytest.raises(ConnectionError):
        engine.run(fetching, 5, run_id="retrying")
    lease = engine.store.claim("retrying")  # as a resume in another process does
    assert lease is not None
    try:
        result = cli("resume", "retrying")
    finally:
        lease.release()
    assert result.exit_code == 0, result.output
    assert "retrying running: another process has it (executing)" in result.stdout


class _Vanished:
    """A handle of a run a `gc` deleted while it was waited for: its result is RunNotFound."""

    run_id = "gone-by-gc"

    def result(self, timeout: float | None = None) -> Any:
        raise intemporal.RunNotFound(self.run_id)


def test_a_run_deleted_while_waited_for_is_its_own_error_and_the_others_go_on(
    engine: Engine,
) -> None:
    # `resume --all --failed` while a `gc` deletes failed runs: one it listed is gone by
    # the time it waits for it. That run is an error (exit 1); it used to end the whole
    # command with "no run with id ...", the runs after it never reported.
    done = engine.start(plain, 7, run_id="after-it")
    runs: list[Any] = [_Vanished(), done]
    outcomes = render.follow(engine, runs, None, render.console(), as_json=True)
    assert [(o.run_id, o.status) for o in outcomes] == [
        ("gone-by-gc", "error"),
        ("after-it", "completed"),
    ]
    assert "RunNotFound" in (outcomes[0].error or "")
    assert render.exit_code(outcomes) == 1
