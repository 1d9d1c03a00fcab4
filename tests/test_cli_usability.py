"""The `intemporal` command as a new user meets it (issue 19).

| kind                                                          | tests                             |
| ------------------------------------------------------------- | --------------------------------- |
| the store is found as git finds .git, by Engine and the CLI   | test_store_*                      |
| --json on every command; errors are JSON on stderr with it    | test_json_*                       |
| cancel / signal say who delivers; a wrong signal name warns   | test_cancel_*, test_signal_*      |
| help: no <bool>, whole choices, examples without blank lines  | test_help_*                       |
| start: a file for a module, an id that already ran            | test_start_*                      |
| resume shows activities on a terminal, nothing in a pipe      | test_resume_progress_*            |
| worker: timestamps, started / resumed, --json, status line    | test_worker_*                     |
| samples/approval.py: no resume command for a deleted store    | test_approval_sample_*            |
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from helpers import Cli, clone_prefix, held_elsewhere, parked
from typer.testing import CliRunner

import intemporal
from intemporal import Engine
from intemporal.cli import app
from intemporal.store import locate

ROOT = Path(__file__).resolve().parent.parent


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def use_double(n: int) -> int:
    return 2 * n


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def use_fail(n: int) -> int:
    raise ValueError(f"bad {n}")


@intemporal.workflow(name="use.steps")
def steps(n: int) -> int:
    return sum(use_double(i) for i in range(n))


@intemporal.workflow(name="use.failing")
def failing(n: int) -> int:
    return use_fail(n)


@intemporal.workflow(name="use.approval")
def approval(n: int) -> Any:
    use_double(n)
    return intemporal.wait_for_signal("approve", timeout=3600)


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds the cwd to it
    monkeypatch.delenv("INTEMPORAL_HOME", raising=False)


@pytest.fixture
def engine(file_engine: Engine) -> Engine:
    return file_engine


def park(home: Path, run_id: str) -> None:
    parked(home, approval, 1, run_id)


def objects(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the store is found as git finds .git ------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a store at its top and two nested folders."""
    root = tmp_path / "project"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / ".intemporal").mkdir()
    return root


def test_store_is_the_nearest_intemporal_folder_upwards(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run recorded by a script started in one folder of the project, with no store named
    monkeypatch.chdir(project / "src" / "deep")
    with Engine(worker=False) as client:
        client.start(steps, 2, run_id="order-42")
        assert Path(str(client.store.location)).resolve() == (project / ".intemporal").resolve()
    # When the command runs from another folder of the project
    monkeypatch.chdir(project / "scripts")
    listed = CliRunner().invoke(app, ["list", "--json"])
    # Then it finds the same store
    assert [r["run_id"] for r in objects(listed.stdout)] == ["order-42"], listed.output
    assert locate().how == "found"
    monkeypatch.chdir(project)
    assert locate().where == ".intemporal"


def test_store_from_intemporal_home_wins_over_a_found_one(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.chdir(project / "src")
    monkeypatch.setenv("INTEMPORAL_HOME", str(elsewhere))
    with Engine() as engine:
        engine.run(steps, 1, run_id="from-home")
    assert (elsewhere / "from-home.jsonl").exists()
    assert not (project / ".intemporal" / "from-home.jsonl").exists()
    assert [r["run_id"] for r in objects(CliRunner().invoke(app, ["list", "--json"]).stdout)] == [
        "from-home"
    ]


def test_store_defaults_to_the_current_folder_when_none_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lonely = tmp_path / "lonely" / "sub"
    lonely.mkdir(parents=True)
    monkeypatch.chdir(lonely)
    found = locate()
    assert (found.where, found.how) == (".intemporal", "default")
    # a read command says where it looked, and creates nothing
    result = CliRunner().invoke(app, ["show", "order-42"])
    assert result.exit_code == 1
    assert "no store at .intemporal" in result.stderr
    assert f"looked for .intemporal in {lonely}" in result.stderr.replace("\n", "")
    assert not (lonely / ".intemporal").exists()
    # and a script (an Engine) creates it here
    with Engine() as engine:
        engine.run(steps, 1, run_id="here")
    assert (lonely / ".intemporal" / "here.jsonl").exists()


def test_store_named_by_store_option_says_so_when_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(app, ["--store", str(missing), "count"])
    assert result.exit_code == 1
    assert f"--store names {missing}" in result.stderr.replace("\n", "")


# -- --json everywhere -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["show", "nope", "--json"],
        ["tree", "nope", "--json"],
        ["cancel", "nope", "--json"],
        ["signal", "nope", "go", "--json"],
        ["resume", "nope", "--json"],
        ["result", "nope", "--json"],
        ["replay", "nope", "--json"],
        ["list", "--parent", "nope", "--json"],
    ],
)
def test_json_errors_are_one_json_object_on_stderr(
    cli: Cli, engine: Engine, args: list[str]
) -> None:
    engine.run(steps, 1, run_id="exists")
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert objects(result.stderr) == [{"error": "no run with id 'nope'", "code": 1}]


@pytest.mark.parametrize(
    "args", [["list", "--status", "bogus", "--json"], ["list", "--limit", "0", "--json"]]
)
def test_json_usage_errors_are_json_too(cli: Cli, engine: Engine, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    [error] = objects(result.stderr)
    assert error["code"] == 2 and error["error"]
    assert "Traceback" not in result.output


def test_json_on_cancel_signal_gc_and_replay(cli: Cli, engine: Engine, home: Path) -> None:
    engine.run(steps, 2, run_id="done")
    park(home, "waits")

    dry = objects(cli("gc", "--older-than", "0s", "--dry-run", "--json").stdout)
    assert [(o["run_id"], o["action"]) for o in dry] == [("done", "would remove")]
    assert objects(cli("cancel", "done", "--json").stdout) == [
        {"run_id": "done", "status": "completed", "requested": False, "held_by": None}
    ]
    sent = objects(cli("signal", "waits", "approve", '{"by": "al"}', "--json").stdout)
    assert sent == [
        {"run_id": "waits", "signal": "approve", "held_by": None, "waits_for": "approve"}
    ]
    replayed = objects(cli("replay", "done", "--json").stdout)
    assert replayed == [
        {"run_id": "done", "deterministic": True, "message": replayed[0]["message"]}
    ]
    gone = objects(cli("gc", "--older-than", "0s", "--json").stdout)
    assert ("done", "removed") in [(o["run_id"], o["action"]) for o in gone]
    assert objects(cli("count", "--json").stdout)[0]["count"] == 2 - len(gone)


def test_every_command_takes_json(cli: Cli) -> None:
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if name == "ui":  # the web view (another change) serves until stopped; it prints a URL
            continue
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--json" in flags, f"intemporal {name} has no --json"


# -- cancel and signal say who delivers --------------------------------------------------------
@pytest.fixture
def held(home: Path) -> Iterator[str]:
    """A pending run `busy` that another live process has claimed (is executing)."""
    with Engine(str(home), worker=False) as client:
        client.start(steps, 3, run_id="busy")
    with held_elsewhere(home, "busy") as run_id:
        yield run_id


def test_cancel_of_a_run_a_live_process_executes_says_so(cli: Cli, held: str) -> None:
    result = cli("cancel", held)
    assert result.exit_code == 0, result.output
    assert "the live process executing it delivers it" in result.stdout
    assert objects(cli("cancel", held, "--json").stdout)[0]["held_by"] == "executing"


def test_cancel_of_a_run_nobody_executes_says_who_will(cli: Cli, home: Path) -> None:
    park(home, "parked")
    out = cli("cancel", "parked").stdout
    assert "no process executes it now" in out and "intemporal resume parked" in out


def test_signal_to_a_run_nobody_executes_says_how_it_will_run(cli: Cli, home: Path) -> None:
    park(home, "parked")
    result = cli("signal", "parked", "approve", '{"by": "al"}')
    assert result.exit_code == 0, result.output
    assert "no process executes it now" in result.stdout
    assert "intemporal worker" in result.stdout and "resume parked" in result.stdout
    assert "warning" not in result.stderr


def test_signal_to_a_name_the_run_does_not_wait_for_warns(cli: Cli, home: Path) -> None:
    park(home, "parked")
    result = cli("signal", "parked", "aprove")  # a typo
    assert result.exit_code == 0, result.output  # sent all the same: it may wait for it later
    assert "warning: run parked waits for signal 'approve', not 'aprove'" in " ".join(
        result.stderr.split()
    )


def test_signal_to_a_run_a_live_process_executes_says_so(cli: Cli, held: str) -> None:
    out = cli("signal", held, "go").stdout
    assert "the live process executing it takes it" in out


# -- help texts --------------------------------------------------------------------------------
def _helps() -> Iterator[tuple[str, str]]:
    runner = CliRunner(env={"COLUMNS": "80"})
    group = typer.main.get_command(app)
    yield "intemporal", runner.invoke(app, ["--help"]).stdout
    for name in group.commands:  # type: ignore[attr-defined]
        yield name, runner.invoke(app, [name, "--help"]).stdout


def test_help_has_no_bool_metavars_and_fits_80_columns() -> None:
    for name, text in _helps():
        assert "<bool>" not in text, name
        assert max(len(line) for line in text.splitlines()) <= 80, name


def test_help_keeps_choice_lists_whole() -> None:
    for name, text in _helps():
        for line in text.splitlines():
            # a choice list is cut only between two choices, never inside a word
            assert not re.search(r"\|[a-z]*$", line.rstrip()) or line.rstrip().endswith(">"), (
                name,
                line,
            )
    gc = dict(_helps())["gc"]
    assert "completed|failed|cancelled" in gc


def test_help_examples_have_no_blank_lines() -> None:
    for name, text in _helps():
        lines = text.splitlines()
        start = lines.index("  Examples:")
        block = lines[
            start + 1 : start
            + 1
            + next(i for i, line in enumerate(lines[start + 1 :]) if not line.strip())
        ]
        assert block, f"{name}: a blank line right after Examples:"
        assert all(line.startswith("    intemporal") for line in block), (name, block)


# -- start -------------------------------------------------------------------------------------
@pytest.fixture
def nightly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "nightly.py").write_text(
        "import intemporal\n\n"
        "@intemporal.activity\ndef step(x):\n    return x + 1\n\n"
        "@intemporal.workflow(name='nightly.job')\ndef nightly(x=0):\n    return step(x)\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "target,hint",
    [
        ("nightly.py:nightly", "did you mean nightly:nightly?"),
        ("./nightly.py:nightly", "did you mean nightly:nightly?"),
        ("jobs/nightly.py:run", "did you mean jobs.nightly:run?"),
    ],
)
def test_start_of_a_file_suggests_the_module(
    cli: Cli, nightly: Path, target: str, hint: str
) -> None:
    result = cli("start", target)
    assert result.exit_code == 2, result.output
    assert hint in result.stderr
    assert "Traceback" not in result.output


def test_start_of_an_id_that_already_completed_says_so(cli: Cli, nightly: Path) -> None:
    first = cli("start", "nightly:nightly", "[1]", "--run-id", "n-1")
    assert first.exit_code == 0 and first.stdout.splitlines() == ["n-1", "2"], first.output
    again = cli("start", "nightly:nightly", "[5]", "--run-id", "n-1")
    assert again.exit_code == 0, again.output
    assert re.search(
        r"run n-1 already ran \(completed, started .*\): not started again", again.stderr
    )
    assert again.stdout.splitlines() == ["n-1", "2"]  # its result, not a new run's


# -- progress ----------------------------------------------------------------------------------
def _crashed(engine: Engine, n: int, run_id: str, keep: int) -> None:
    engine.run(steps, n, run_id="model-" + run_id)
    clone_prefix(engine.store, "model-" + run_id, run_id, keep=keep)


def test_resume_progress_counts_activities_on_a_terminal(home: Path, engine: Engine) -> None:
    _crashed(engine, 30, "long-1", keep=5)
    _crashed(engine, 30, "long-2", keep=5)
    engine.close()
    term = CliRunner(env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "100"})
    result = term.invoke(app, ["--store", str(home), "resume", "long-1", "long-2"])
    assert result.exit_code == 0, result.output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert re.search(r"long-[12]: step \d+ use_double", plain), plain
    assert re.search(r"\d+ activities", plain) and "2/2 runs" in plain
    assert "long-1 completed: 870" in plain and "long-2 completed: 870" in plain


def test_resume_progress_is_quiet_in_a_pipe_and_with_json(home: Path, engine: Engine) -> None:
    _crashed(engine, 10, "p-1", keep=3)
    _crashed(engine, 10, "p-2", keep=3)
    engine.close()
    pipe = CliRunner(env={"COLUMNS": "100"}).invoke(app, ["--store", str(home), "resume", "p-1"])
    assert pipe.stdout == "p-1 completed: 90\n"
    term = CliRunner(env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"})
    as_json = term.invoke(app, ["--store", str(home), "resume", "p-2", "--json"])
    assert [o["run_id"] for o in objects(as_json.stdout)] == ["p-2"]
    assert "activities" not in as_json.stdout


# -- worker ------------------------------------------------------------------------------------
def test_worker_says_started_for_new_runs_and_resumed_for_crashed_ones(
    home: Path, engine: Engine, cli: Cli
) -> None:
    _crashed(engine, 4, "crashed", keep=3)
    engine.close()
    with Engine(str(home), worker=False) as client:
        client.start(steps, 2, run_id="fresh")
        client.start(failing, 1, run_id="broken")

    result = cli("worker", "--once", "--interval", "0.05")

    assert result.exit_code == 1, result.output  # a run it executed failed
    lines = result.stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ "
    assert all(re.match(stamp, line) for line in lines), lines  # a log, not a terminal
    said = " ".join(lines)
    assert re.search(stamp + "started fresh", said) and re.search(stamp + "started broken", said)
    assert re.search(stamp + "resumed crashed", said)
    assert "fresh completed: 2" in said and "crashed completed: 12" in said
    assert "broken failed: ValueError: bad 1" in said


def test_worker_json_prints_one_event_per_line(home: Path, cli: Cli) -> None:
    with Engine(str(home), worker=False) as client:
        client.start(steps, 3, run_id="w-1")
    result = cli("worker", "--once", "--interval", "0.05", "--json")
    assert result.exit_code == 0, result.output
    events = objects(result.stdout)
    assert [(e["event"], e["run_id"]) for e in events] == [
        ("serving", None),
        ("started", "w-1"),
        ("completed", "w-1"),
    ]
    assert events[-1]["result"] == 6 and all(isinstance(e["ts"], float) for e in events)


def test_worker_once_leaves_a_run_that_parks_for_a_signal(home: Path, cli: Cli) -> None:
    with Engine(str(home), worker=False) as client:
        client.start(approval, 1, run_id="asks")
    result = cli("worker", "--once", "--interval", "0.05", "--json")
    assert result.exit_code == 0, result.output
    last = objects(result.stdout)[-1]
    assert (last["event"], last["run_id"], last["waiting_for"]) == (
        "waiting",
        "asks",
        "signal 'approve'",
    )


def test_worker_status_line_counts_runs_per_queue(home: Path) -> None:
    with Engine(str(home), worker=False) as client:
        client.start(steps, 3, run_id="s-1")
        client.start(failing, 1, run_id="f-1")
    term = CliRunner(env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "200"})
    result = term.invoke(app, ["--store", str(home), "worker", "--once", "--interval", "0.05"])
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert re.search(r"default: \d executing, \d waiting, 1 done, 1 failed \| up \d", plain), plain
    assert re.search(r"\d\d:\d\d:\d\d started s-1", plain)


# -- the approval sample -----------------------------------------------------------------------
def _interrupted_approval(tmp_path: Path, *args: str) -> str:
    """Run samples/approval.py on a terminal, Ctrl-C it while it waits; its output."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("INTEMPORAL_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "samples" / "approval.py"), *args],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
        text=True,
    )
    os.close(terminal)
    try:
        assert proc.stdout is not None
        seen = ""
        while "Waiting up to" not in seen:
            line = proc.stdout.readline()
            assert line, f"the sample ended early:\n{seen}"
            seen += line
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        return seen + rest
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_approval_sample_prints_no_resume_command_for_a_store_it_deletes(tmp_path: Path) -> None:
    out = _interrupted_approval(tmp_path)
    assert "intemporal --store" in out  # the approve command, while the store exists
    assert not re.search(r"resume expense-", out), out
    assert "The store was temporary" in out and "--store DIR" in out


def test_approval_sample_with_a_kept_store_prints_the_resume_command(tmp_path: Path) -> None:
    store = tmp_path / "kept"
    out = _interrupted_approval(tmp_path, "--store", str(store))
    run = re.search(r"Started run (expense-[0-9a-f]{8})", out)
    assert run is not None, out
    assert f"intemporal --store {store} resume {run.group(1)}" in out
    assert (store / f"{run.group(1)}.jsonl").exists()
