"""The `intemporal` command line: every command through `CliRunner`, and a real crash.

Runs are made with an `Engine` in this process (the workflows below), then looked at,
resumed, cancelled and collected with the command. `--json` output is parsed, never
string-matched. The crash test runs a script as `python script.py` in a child process,
SIGKILLs it inside step 6 of 20, and resumes the run with the installed `intemporal`
command in another process, from another folder, with no flags.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from helpers import Cli, cli_on, new_version
from typer.testing import CliRunner, Result

import intemporal
from intemporal.cli import app, parse_age
from intemporal.verify import verify_replay

CALLS: collections.Counter[str] = collections.Counter()
BROKEN = {"fail": True}  # flipped by a test to "fix" the failing activity before a resume


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def cli_double(x: int) -> int:
    CALLS["double"] += 1
    return 2 * x


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def cli_triple(x: int) -> int:
    CALLS["triple"] += 1
    return 3 * x


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def cli_flaky(msg: str) -> str:
    CALLS["flaky"] += 1
    if BROKEN["fail"]:
        raise ValueError(f"flaky: {msg}")
    return msg.upper()


@intemporal.workflow(name="cli.doubler")
def doubler(x: int) -> int:
    return cli_double(cli_double(x))


@intemporal.workflow(name="cli.failing")
def failing(msg: str) -> str:
    cli_double(1)
    return cli_flaky(msg)


@intemporal.workflow(name="cli.evolving")
def evolving(x: int) -> int:
    return cli_triple(cli_double(x))


@intemporal.workflow(name="cli.child")
def child(x: int) -> int:
    return cli_double(x)


@intemporal.workflow(name="cli.featureful")
def featureful(x: int) -> int:
    intemporal.now()
    intemporal.sleep(0.01)
    y = child(x)
    futures = [intemporal.submit(cli_triple, i) for i in range(2)]
    saga = intemporal.saga()
    saga.add_compensation(cli_double, 0)
    saga.compensate()
    return y + sum(intemporal.join_all(futures))


@intemporal.workflow(name="cli.approval")
def approval(x: int) -> int:
    got = intemporal.wait_for_signal("approve")
    return cli_double(x + got["n"])


# -- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    monkeypatch.setitem(BROKEN, "fail", True)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds the cwd to it


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The store directory the commands are pointed at."""
    return tmp_path / "store"


@pytest.fixture
def engine(home: Path) -> Iterator[intemporal.Engine]:
    with intemporal.Engine(str(home), threads=4) as eng:
        yield eng


@pytest.fixture
def cli(home: Path) -> Cli:
    """Run `intemporal --store HOME ARGS...` in this process; wide, so tables do not wrap."""
    return cli_on(home)


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def assert_user_error(result: Result, *words: str, code: int = 1) -> None:
    """Exit `code`, one line on stderr naming `words`, and no traceback anywhere."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]


def clone_prefix(store: intemporal.Store, src: str, dst: str, keep: int) -> None:
    """Make run `dst` a copy of the first `keep` events of run `src`, left unclaimed."""
    events = store.read(src)[:keep]
    # created as its crashed creator did, for itself: no wake-up takes it meanwhile
    assert store.create(dst, dict(events[0], run_id=dst), owner="crashed")
    lease = store.claim(dst)
    assert lease is not None
    for event in events[1:]:
        lease.append(dict(event), sync=True)
    lease.release()


def orphan(store: intemporal.Store, src: str, dst: str, keep: int) -> None:
    """Make `dst` a copy of `src`'s first `keep` events: a run whose process died."""
    clone_prefix(store, src, dst, keep)
    assert store.summary(dst).orphaned


def snapshot(store: intemporal.Store, run_id: str) -> bytes:
    """The journal file's bytes: equal before and after iff nothing was written."""
    return (Path(str(store.location)) / f"{run_id}.jsonl").read_bytes()


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module `NAME` in the current folder, defining workflow `add`."""
    name = f"cli_flows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import intemporal\n\n"
        "@intemporal.activity\n"
        "def plus(a, b):\n"
        "    return a + b\n\n"
        f"@intemporal.workflow(name='{name}.add')\n"
        "def add(a, b=0):\n"
        "    return plus(a, b)\n\n"
        f"@intemporal.workflow(name='{name}.bad')\n"
        "def bad():\n"
        "    raise KeyError('missing')\n"
    )
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


# -- help -----------------------------------------------------------------------------------------
def test_every_command_has_help_text_and_examples(cli: Cli) -> None:
    commands = app.registered_commands
    assert {c.name for c in commands} >= {
        "list",
        "show",
        "resume",
        "cancel",
        "signal",
        "start",
        "gc",
        "worker",
        "replay",
    }
    group = typer.main.get_command(app)
    for registered in commands:
        name = registered.name or ""
        doc = (registered.callback.__doc__ if registered.callback else None) or ""
        assert doc.strip(), f"command {name!r} has no help text"
        assert "Examples:" in doc, f"command {name!r} has no examples in its help"
        command = group.commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help text"
        result = cli(name, "--help")
        assert result.exit_code == 0, result.output
        assert f"intemporal {name}" in result.stdout


# -- list --------------------------------------------------------------------------------------
def test_list_json_filters_and_orders_newest_first(cli: Cli, engine: intemporal.Engine) -> None:
    # Given two completed runs of one workflow and a failed run of another
    engine.run(doubler, 1, run_id="d-1")
    engine.run(doubler, 2, run_id="d-2")
    with pytest.raises(ValueError):
        engine.run(failing, "x", run_id="f-1")

    # When listing with --json, Then every run is one parseable object, newest first
    everything = json_lines(cli("list", "--json"))
    assert [r["run_id"] for r in everything] == ["f-1", "d-2", "d-1"]
    assert {"run_id", "workflow", "status", "created_at", "updated_at"} <= set(everything[0])
    assert everything[1]["steps"] == 2 and everything[1]["result"] == 8

    assert [r["run_id"] for r in json_lines(cli("list", "--json", "--status", "failed"))] == ["f-1"]
    by_wf = json_lines(cli("list", "--json", "--workflow", "cli.doubler"))
    assert [r["run_id"] for r in by_wf] == ["d-2", "d-1"]
    assert [r["run_id"] for r in json_lines(cli("list", "--json", "--limit", "1"))] == ["f-1"]
    assert json_lines(cli("list", "--json", "--workflow", "nope")) == []


def test_list_table_shows_runs_and_marks_orphans(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="done-1")
    orphan(engine.store, "done-1", "crashed-1", keep=2)

    result = cli("list")

    assert result.exit_code == 0, result.output
    assert "done-1" in result.stdout and "crashed-1" in result.stdout
    assert "completed" in result.stdout
    assert "orphaned" in result.stdout
    assert "intemporal resume --all" in result.stdout
    assert cli("list", "--status", "bogus").exit_code == 2  # a usage error


def test_list_in_a_narrow_terminal_still_shows_every_run_id(engine: intemporal.Engine) -> None:
    # Given a run with a long id, When listing in 80 columns
    engine.run(doubler, 1, run_id="a-rather-long-run-identifier-0042")
    runner = CliRunner(env={"COLUMNS": "80", "INTEMPORAL_HOME": str(engine.store.location)})
    out = runner.invoke(app, ["list"]).stdout
    # Then the id is there (folded, not dropped), and no line is wider than the terminal
    assert "a-rather-long" in out and "identifier" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_read_commands_refuse_a_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    runner = CliRunner(env={"INTEMPORAL_HOME": None})
    for args in (["list"], ["show", "r"], ["resume", "r"], ["cancel", "r"], ["replay", "r"]):
        assert_user_error(runner.invoke(app, ["--store", str(missing), *args]), "no store")
    assert not missing.exists()  # looking did not create it


def test_store_comes_from_intemporal_home(tmp_path: Path, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="from-env")
    runner = CliRunner(env={"INTEMPORAL_HOME": str(engine.store.location)})
    assert [r["run_id"] for r in json_lines(runner.invoke(app, ["list", "--json"]))] == ["from-env"]


# -- show -------------------------------------------------------------------------------------------
def test_show_completed_run_renders_args_result_and_timeline(
    cli: Cli, engine: intemporal.Engine
) -> None:
    engine.run(doubler, 21, run_id="show-1")

    result = cli("show", "show-1")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cli.doubler" in out and "completed" in out
    assert "21" in out and "84" in out  # the argument and the result
    assert out.count("activity_completed") == 2 and "cli_double" in out


def test_show_failed_run_prints_error_and_recorded_traceback(
    cli: Cli, engine: intemporal.Engine
) -> None:
    with pytest.raises(ValueError):
        engine.run(failing, "boom", run_id="show-f")

    result = cli("show", "show-f")

    assert result.exit_code == 0, result.output
    assert "ValueError: flaky: boom" in result.stdout
    assert "Traceback (most recent call last)" in result.stdout  # as recorded, not ours
    assert 'raise ValueError(f"flaky: {msg}")' in result.stdout
    assert "activity_failed" in result.stdout


def test_show_renders_unknown_event_types_generically(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="src")
    store = engine.store
    clone_prefix(store, "src", "odd", keep=2)
    lease = store.claim("odd")
    assert lease is not None
    lease.append({"type": "gizmo_wound", "seq": 2, "name": "gizmo", "turns": 3, "ts": 1.0}, True)
    lease.release()

    result = cli("show", "odd")

    assert result.exit_code == 0, result.output
    assert "gizmo_wound" in result.stdout and "turns=3" in result.stdout


def test_show_json_prints_the_raw_events(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="raw-1")

    events = json_lines(cli("show", "raw-1", "--json"))

    assert events == engine.history("raw-1")
    assert [e["type"] for e in events] == [
        "run_started",
        "activity_completed",
        "activity_completed",
        "run_completed",
    ]


# -- unknown ids and bad input ----------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["show", "nope"],
        ["cancel", "nope"],
        ["resume", "nope"],
        ["replay", "nope"],
        ["signal", "nope", "go"],
    ],
)
def test_unknown_run_id_exits_1_with_one_line_and_no_traceback(
    cli: Cli, engine: intemporal.Engine, args: list[str]
) -> None:
    engine.run(doubler, 1, run_id="exists")  # the store exists; the id does not
    assert_user_error(cli(*args), "no run with id 'nope'")


def test_invalid_run_id_is_a_user_error(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="exists")
    assert_user_error(cli("show", "../etc/passwd"), "invalid run id")


def test_usage_errors_exit_2(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="exists")
    assert_user_error(cli("resume"), "--all", code=2)
    assert_user_error(cli("resume", "exists", "--all"), "--all", code=2)
    assert_user_error(cli("gc", "--older-than", "7 parsecs"), "older-than", code=2)
    assert cli("gc", "--older-than", "1d", "--status", "running").exit_code == 2  # not finished
    assert_user_error(cli("start", "no_colon_here"), "MODULE:WORKFLOW", code=2)
    assert cli("gc").exit_code == 2  # --older-than is required


# -- cancel and signal -------------------------------------------------------------------------
def test_cancel_of_a_finished_run_changes_nothing(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="fin")
    before = snapshot(engine.store, "fin")

    result = cli("cancel", "fin")

    assert result.exit_code == 0, result.output
    assert "already completed" in result.stdout
    assert snapshot(engine.store, "fin") == before
    assert engine.store.inbox("fin") == ([], 0)
    assert engine.get_run("fin").status is intemporal.RunStatus.COMPLETED


def test_cancel_of_an_orphaned_run_takes_effect_when_resumed(
    cli: Cli, engine: intemporal.Engine
) -> None:
    engine.run(doubler, 1, run_id="src")
    orphan(engine.store, "src", "victim", keep=2)
    engine.close()  # no worker in this process: it would take the orphan the cancel rings for

    result = cli("cancel", "victim")
    assert result.exit_code == 0, result.output
    assert "cancellation requested" in result.stdout
    assert [m["type"] for m in engine.store.inbox("victim")[0]] == ["cancel"]

    calls_before = CALLS["double"]
    resumed = json_lines(cli("resume", "victim", "--json"))
    assert resumed[0]["status"] == "cancelled"
    assert engine.get_run("victim").status is intemporal.RunStatus.CANCELLED
    assert CALLS["double"] == calls_before  # cancelled at its next step: nothing more ran


def test_cancel_checks_every_id_before_cancelling_any(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="src")
    orphan(engine.store, "src", "live", keep=2)

    assert_user_error(cli("cancel", "live", "nope"), "nope")
    assert engine.store.inbox("live") == ([], 0)


def test_signal_calls_the_engine_with_the_decoded_payload(
    cli: Cli, engine: intemporal.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.run(doubler, 1, run_id="sig")
    sent: list[tuple[Any, ...]] = []

    def fake_signal(
        self: intemporal.Engine, run_id: str, name: str, payload: Any = None, signal_id: Any = None
    ) -> None:
        sent.append((run_id, name, payload, signal_id))

    monkeypatch.setattr(intemporal.Engine, "signal", fake_signal)

    assert (
        cli("signal", "sig", "approve", '{"by": "alice", "n": [1, 2]}', "--id", "s-1").exit_code
        == 0
    )
    assert cli("signal", "sig", "ping").exit_code == 0
    assert sent == [
        ("sig", "approve", {"by": "alice", "n": [1, 2]}, "s-1"),
        ("sig", "ping", None, None),
    ]
    assert_user_error(cli("signal", "sig", "approve", "{not json"), "PAYLOAD_JSON", "JSON")
    assert len(sent) == 2


def test_signal_unsupported_by_the_engine_is_a_clear_error(
    cli: Cli, engine: intemporal.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.run(doubler, 1, run_id="sig")

    def unsupported(self: intemporal.Engine, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("signals are not supported yet")

    monkeypatch.setattr(intemporal.Engine, "signal", unsupported)
    assert_user_error(cli("signal", "sig", "approve"), "signals")


# -- start, resume, worker -------------------------------------------------------------------------
def test_start_waits_and_prints_the_run_id_then_the_result(cli: Cli, module: str) -> None:
    result = cli("start", f"{module}:add", "[2, 3]", "--run-id", "s-1", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["s-1", "5"]

    kw = cli("start", f"{module}:add", '{"a": 10, "b": 5}', "--json")
    assert kw.exit_code == 0, kw.output
    [outcome] = json_lines(kw)
    assert outcome["status"] == "completed" and outcome["result"] == 15

    again = cli("start", f"{module}:add", "[2, 3]", "--run-id", "s-1")  # idempotent start
    assert again.stdout.splitlines() == ["s-1", "5"]
    assert len(json_lines(cli("list", "--json"))) == 2


def test_start_of_a_failing_workflow_exits_1(cli: Cli, module: str) -> None:
    result = cli("start", f"{module}:bad", "--run-id", "b-1")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "failed" in result.stdout and "KeyError" in result.stdout


def test_start_reports_bad_targets_and_arguments(cli: Cli, module: str) -> None:
    assert_user_error(cli("start", "no_such_module_x:add"), "cannot import", "no_such_module_x")
    assert_user_error(cli("start", f"{module}:nope"), "no workflow 'nope'")
    assert_user_error(cli("start", f"{module}:add", "[1,"), "ARGS_JSON", "not valid JSON")
    assert_user_error(cli("start", f"{module}:add", "3"), "ARGS_JSON must be")
    assert_user_error(cli("start", f"{module}:add", "[1]", "--run-id", "a//b"), "invalid run id")


def test_start_detach_records_a_pending_run_for_resume(cli: Cli, module: str) -> None:
    result = cli("start", f"{module}:add", "[4, 4]", "--run-id", "later", "--detach")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["later"]
    assert json_lines(cli("list", "--json"))[0]["status"] == "pending"

    resumed = cli("resume", "later", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json_lines(resumed) == [
        {"run_id": "later", "status": "completed", "result": 8, "error": None}
    ]


def test_worker_once_executes_pending_runs(cli: Cli, module: str) -> None:
    for i in range(3):
        assert (
            cli("start", f"{module}:add", f"[{i}, 1]", "--run-id", f"w-{i}", "--detach").exit_code
            == 0
        )

    result = cli("worker", "--once", "--interval", "0.05", "--import", module)

    assert result.exit_code == 0, result.output
    assert result.stdout.count("started w-") == 3  # recorded, never executed: new runs
    runs = {r["run_id"]: r for r in json_lines(cli("list", "--json"))}
    assert {rid: (r["status"], r["result"]) for rid, r in runs.items()} == {
        "w-0": ("completed", 1),
        "w-1": ("completed", 2),
        "w-2": ("completed", 3),
    }


def test_resume_all_takes_unfinished_runs_and_failed_ones_only_with_failed(
    cli: Cli, engine: intemporal.Engine
) -> None:
    engine.run(doubler, 5, run_id="ok")
    orphan(engine.store, "ok", "orphan", keep=2)
    with pytest.raises(ValueError):
        engine.run(failing, "fixme", run_id="broken")
    BROKEN["fail"] = False  # the bug is fixed; resuming retries the failed step
    CALLS.clear()
    untouched = snapshot(engine.store, "ok")
    failed_before = snapshot(engine.store, "broken")

    result = cli("resume", "--all", "--json")

    assert result.exit_code == 0, result.output
    assert [(o["run_id"], o["result"]) for o in json_lines(result)] == [("orphan", 20)]
    assert snapshot(engine.store, "broken") == failed_before  # failed: only with --failed
    assert CALLS == {"double": 1}

    retried = cli("resume", "--all", "--failed", "--json")

    assert retried.exit_code == 0, retried.output
    assert [(o["run_id"], o["result"]) for o in json_lines(retried)] == [("broken", "FIXME")]
    assert CALLS == {"double": 1, "flaky": 1}  # only the steps the journals lacked
    assert snapshot(engine.store, "ok") == untouched
    assert cli("resume", "--all", "--failed").stdout.startswith("nothing to resume")


def test_resume_of_a_still_failing_run_exits_1(cli: Cli, engine: intemporal.Engine) -> None:
    with pytest.raises(ValueError):
        engine.run(failing, "again", run_id="still-broken")

    result = cli("resume", "still-broken")

    assert result.exit_code == 1
    assert "still-broken failed: ValueError: flaky: again" in result.stdout


def test_resume_of_unloadable_code_is_a_user_error(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="src")
    orphan(engine.store, "src", "lost", keep=2)
    lease = engine.store.claim("lost")
    assert lease is not None
    lease.release()
    # Rewrite the recorded workflow name and reference: nothing can find that code.
    path = Path(str(engine.store.location)) / "lost.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first.update(workflow="cli.gone", ref={"module": "no_such_pkg.flows", "qualname": "gone"})
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")

    result = cli("resume", "lost")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "lost error: WorkflowNotFound" in result.stdout


def test_a_run_waiting_for_a_signal_is_reported_then_signalled_and_resumed(
    cli: Cli, engine: intemporal.Engine
) -> None:
    # Given a run that waits for a signal, resumed by the command
    engine.start(approval, 1, run_id="ap")
    engine.close()  # nobody serves it in this process any more
    waiting = cli("resume", "ap", "--json")
    assert waiting.exit_code == 0, waiting.output
    [outcome] = json_lines(waiting)
    assert outcome["status"] == "waiting" and outcome["waiting_for"] == "signal 'approve'"

    # When the signal is sent and the run resumed
    sent = cli("signal", "ap", "approve", '{"n": 20}', "--id", "approval-1")
    assert sent.exit_code == 0, sent.output
    done = cli("resume", "ap", "--json")

    # Then it completes with the payload
    assert done.exit_code == 0, done.output
    assert json_lines(done)[0]["result"] == 42
    shown = cli("show", "ap")
    assert "signal_received" in shown.stdout and "run_suspended" in shown.stdout


# -- gc --------------------------------------------------------------------------------------------
def test_parse_age() -> None:
    assert parse_age("90s") == 90 and parse_age("15m") == 900 and parse_age("12h") == 43200
    assert parse_age("7d") == 7 * 86400 and parse_age("2w") == 14 * 86400 and parse_age("5") == 5


def test_gc_deletes_old_finished_runs_only(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(doubler, 1, run_id="c-1")
    engine.run(doubler, 2, run_id="c-2")
    with pytest.raises(ValueError):
        engine.run(failing, "x", run_id="f-1")
    orphan(engine.store, "c-1", "unfinished", keep=2)

    young = cli("gc", "--older-than", "1d")
    assert young.exit_code == 0 and "removed 0 run(s)" in young.stdout

    dry = cli("gc", "--older-than", "0s", "--dry-run")
    assert "would remove 3 run(s)" in dry.stdout
    assert len(json_lines(cli("list", "--json"))) == 4

    failed = cli("gc", "--older-than", "0s", "--status", "failed")
    assert "removed 1 run(s)" in failed.stdout

    rest = cli("gc", "--older-than", "0s")
    assert "removed 2 run(s)" in rest.stdout
    assert [r["run_id"] for r in json_lines(cli("list", "--json"))] == ["unfinished"]


# -- replay ----------------------------------------------------------------------------------------
def test_replay_of_unchanged_code_is_deterministic(cli: Cli, engine: intemporal.Engine) -> None:
    engine.run(evolving, 1, run_id="evo")
    CALLS.clear()

    result = cli("replay", "evo")

    assert result.exit_code == 0, result.output
    assert "evo: deterministic" in result.stdout
    assert CALLS == {}  # nothing ran


def test_replay_reports_the_first_mismatch_of_changed_code(
    cli: Cli, engine: intemporal.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run recorded by `evolving` (double, then triple)
    engine.run(evolving, 1, run_id="evo")

    # When the code changes its second step and is replayed
    def evolving_v2(x: int) -> int:
        return cli_double(cli_double(x))

    new_version(evolving, evolving_v2, monkeypatch)

    CALLS.clear()
    result = cli("replay", "evo")

    # Then the command names step 2, what was recorded and what is asked now, and exits 1
    assert result.exit_code == 1, result.output
    assert "mismatch at step 2: recorded 'cli_triple', now 'cli_double'" in result.stdout
    assert CALLS == {}


def test_replay_of_timers_children_fan_out_and_sagas_runs_nothing(
    cli: Cli, engine: intemporal.Engine
) -> None:
    assert engine.run(featureful, 5, run_id="feat") == 10 + 0 + 3
    CALLS.clear()

    result = cli("replay", "feat", "feat/3")

    assert result.exit_code == 0, result.output
    assert "feat: deterministic" in result.stdout and "feat/3: deterministic" in result.stdout
    assert CALLS == {}


def test_verify_replay_of_an_unfinished_run_stops_at_the_journal_end(
    engine: intemporal.Engine,
) -> None:
    engine.run(evolving, 1, run_id="evo")
    orphan(engine.store, "evo", "half", keep=2)  # only `cli_double` is recorded
    CALLS.clear()

    ok, message = verify_replay(engine.store, "half")

    assert ok, message
    assert "would continue with 'cli_triple'" in message
    assert CALLS == {}  # the next step was not executed


def test_verify_replay_catches_added_and_removed_steps(
    engine: intemporal.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.run(evolving, 1, run_id="evo")

    def longer(x: int) -> int:
        return cli_double(cli_triple(cli_double(x)))

    new_version(evolving, longer, monkeypatch)

    ok, message = verify_replay(engine.store, "evo")
    assert not ok and "step 3" in message and "cli_double" in message

    def shorter(x: int) -> int:
        return cli_double(x)

    new_version(evolving, shorter, monkeypatch)

    ok, message = verify_replay(engine.store, "evo")
    assert not ok
    assert message == "mismatch at step 2: recorded 'cli_triple', now '<workflow returned>'"


# -- processes ----------------------------------------------------------------------------------
def intemporal_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m intemporal.cli`."""
    script = Path(sys.executable).parent / "intemporal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "intemporal.cli"]


CRASH_SCRIPT = """\
import os
import threading

import intemporal

EFFECTS = {effects!r}


@intemporal.activity
def step(i):
    fd = os.open(EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{{i}}\\n".encode())  # one write: the line survives a SIGKILL
    finally:
        os.close(fd)
    if i == 5 and os.environ.get("CLI_CRASH_CHILD") == "1":
        threading.Event().wait()  # the first process is killed here, inside step 5
    return i * i


@intemporal.workflow
def twenty_steps(n):
    return sum(step(i) for i in range(n))


if __name__ == "__main__":
    with intemporal.Engine({store!r}) as engine:
        print(engine.run(twenty_steps, 20, run_id="cli-crash"))
"""


def complete_lines(path: Path) -> list[str]:
    """The lines of a file that end in a newline ([] while it does not exist)."""
    try:
        return path.read_text().split("\n")[:-1]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def child_process(cmd: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is killed and reaped however the test ends."""
    proc = subprocess.Popen(cmd, **options)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_resume_after_sigkill_of_a_script_needs_no_flags(tmp_path: Path) -> None:
    # Given a script run as `python script.py`, SIGKILLed inside the 6th of 20 activities
    store, effects, script = tmp_path / "store", tmp_path / "effects.txt", tmp_path / "flow.py"
    script.write_text(CRASH_SCRIPT.format(effects=str(effects), store=str(store)))
    env = {k: v for k, v in os.environ.items() if k != "INTEMPORAL_HOME"}
    with (
        open(tmp_path / "child.stderr", "wb") as stderr,
        child_process(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={**env, "CLI_CRASH_CHILD": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as proc,
    ):
        deadline = time.monotonic() + 30
        while len(complete_lines(effects)) < 6:
            assert proc.poll() is None, (tmp_path / "child.stderr").read_text()
            assert time.monotonic() < deadline, "the script made no progress in 30 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    journal = [json.loads(line) for line in complete_lines(store / "cli-crash.jsonl")]
    assert [e["seq"] for e in journal if e["type"] == "activity_completed"] == [1, 2, 3, 4, 5]

    # When another process resumes it with the command, from another folder, with no flags
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc2 = subprocess.run(
        [*intemporal_command(), "--store", str(store), "resume", "cli-crash", "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then the run completes with the uninterrupted result, and finished steps did not rerun
    assert proc2.returncode == 0, proc2.stderr
    assert "Traceback" not in proc2.stderr
    [outcome] = [json.loads(line) for line in proc2.stdout.splitlines()]
    assert outcome == {
        "run_id": "cli-crash",
        "status": "completed",
        "result": sum(i * i for i in range(20)),
        "error": None,
    }
    counts = collections.Counter(int(line) for line in complete_lines(effects))
    assert counts == {i: 2 if i == 5 else 1 for i in range(20)}  # step 5 was in flight


def test_python_m_intemporal_cli_runs_and_import_stays_light(tmp_path: Path) -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "intemporal.cli", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    assert "resume" in helped.stdout

    probe = "import sys, intemporal; print(sorted(m for m in ('typer', 'rich', 'intemporal.cli') if m in sys.modules))"
    light = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert light.returncode == 0, light.stderr
    assert light.stdout.strip() == "[]"
