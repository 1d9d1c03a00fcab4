"""Nothing unreadable is skipped in silence (issue 12 §7): every command, every damaged journal.

A run "bad" is written by a real engine (five lines), then damaged in one of these ways,
next to a healthy run "good":

    kind              damage                                          how a reader sees it
    ----------------  ----------------------------------------------  ----------------------
    bad-json          the middle line is `{not json`                  JournalCorrupted line 3
    not-an-object     the middle line is `[1, 2, 3]`                  JournalCorrupted line 3
    non-utf8          the middle line holds bytes \\xff\\xfe            JournalCorrupted line 3
    nul-bytes         the middle line is NUL bytes                    JournalCorrupted line 3
    truncated         cut inside the first line: no complete line     JournalCorrupted (empty)
    empty             a file of 0 bytes                               JournalCorrupted (empty)
    no-run-started    the run_started line removed                    JournalCorrupted line 1
    args-not-a-list   run_started's `args` is 5                       JournalCorrupted line 1
    args-a-string     run_started's `args` is "abc"                   JournalCorrupted line 1
    kwargs-a-list     run_started's `kwargs` is [1]                   JournalCorrupted line 1
    workflow-number   run_started's `workflow` is 7                   JournalCorrupted line 1
    ref-a-string      run_started's `ref` (where the code is) a string JournalCorrupted line 1
    ref-module-a-list `ref`'s `module` is a list                       JournalCorrupted line 1
    protocols-a-list  run_started's `protocols` is [1]                JournalCorrupted line 1
    retry-in-a-string an attempt_failed whose `retry_in` is "soon"    JournalCorrupted
    ts-a-string       an event's `ts` is "yesterday"                  JournalCorrupted
    seq-a-string      an event's `seq` is "3"                         JournalCorrupted
    type-a-list       an event's `type` is ["x"]                      JournalCorrupted
    error-a-string    the run_completed line turned run_failed,       JournalCorrupted
                      its `error` a string
    nested-100000     a line nested 100,000 deep                      JournalCorrupted line 3
    args-nested-100000  run_started's `args` nested 100,000 deep       JournalCorrupted line 1
    symlink           the journal is a link to a journal elsewhere    UnsafeStore (not followed)

For each kind: `list` shows "bad" as `unreadable` (and `--json` says why) beside "good";
`show`, `show --json`, `resume`, `cancel`, `signal`, `start --run-id bad` and `replay`
print one line "error: ..." naming the run's file and exit 1, never a traceback;
`resume --all` reports it and exits 1 (never "nothing to resume"); `gc` and `worker
--once` go on with the other runs and delete or change nothing of it. The journal's bytes
are never changed. `start` of a workflow that raises a BaseException prints one line, exit 1.

An inbox (written by any process) is damaged the same ways (bad JSON, a signal whose `name`
is a list or missing, a `signal_id` that is a number, a `type` that is a number, a line
that is not an object, nesting 100,000 deep): `resume` reports `JournalCorrupted` naming
the inbox and exits 1, and the inbox is left as it was.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import intemporal
from intemporal import Engine, FileStore, JournalCorrupted, RunStatus, UnsafeStore
from intemporal.cli import app

DEEP = 100_000


@intemporal.activity
def unr_step(x: int) -> int:
    return x + 1


@intemporal.workflow(name="unreadable.steps")
def unr_steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += unr_step(i)
    return total


@intemporal.workflow(name="unreadable.waiter")
def unr_waiter() -> Any:
    return intemporal.wait_for_signal("go")


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _edit_event(n: int, **fields: Any) -> Callable[[bytes], bytes]:
    """Damage: line `n` (0-based) gets `fields` set."""

    def damage(data: bytes) -> bytes:
        lines = _lines(data)
        event = json.loads(lines[n])
        event.update(fields)
        lines[n] = json.dumps(event).encode() + b"\n"
        return b"".join(lines)

    return damage


def _middle(line: bytes) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        lines = _lines(data)
        lines[2] = line + b"\n"
        return b"".join(lines)

    return damage


def _failed_with_text_error(data: bytes) -> bytes:
    lines = _lines(data)
    lines[-1] = json.dumps({"type": "run_failed", "error": "boom", "ts": 1.0}).encode() + b"\n"
    return b"".join(lines)


def _deep_args(data: bytes) -> bytes:
    lines = _lines(data)
    head = lines[0].split(b'"args":', 1)[0]
    lines[0] = head + b'"args":' + b"[" * DEEP + b"]" * DEEP + b',"ts":1.0}\n'
    return b"".join(lines)


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "bad-json": _middle(b"{not json"),
    "not-an-object": _middle(b"[1, 2, 3]"),
    "non-utf8": _middle(b'{"type": "activity_completed", "x": "\xff\xfe"}'),
    "nul-bytes": _middle(b"\x00\x00\x00"),
    "truncated": lambda data: data[:20],
    "empty": lambda data: b"",
    "no-run-started": lambda data: b"".join(_lines(data)[1:]),
    "args-not-a-list": _edit_event(0, args=5),
    "args-a-string": _edit_event(0, args="abc"),
    "kwargs-a-list": _edit_event(0, kwargs=[1]),
    "workflow-number": _edit_event(0, workflow=7),
    "ref-a-string": _edit_event(0, ref="unreadable:steps"),
    "ref-module-a-list": _edit_event(0, ref={"module": ["x"], "qualname": "unr_steps"}),
    "protocols-a-list": _edit_event(0, protocols=[1]),
    "retry-in-a-string": _edit_event(2, type="attempt_failed", retry_in="soon"),
    "ts-a-string": _edit_event(2, ts="yesterday"),
    "seq-a-string": _edit_event(1, seq="3"),
    "type-a-list": _edit_event(3, type=["x"]),
    "error-a-string": _failed_with_text_error,
    "nested-100000": _middle(b"[" * DEEP + b"]" * DEEP),
    "args-nested-100000": _deep_args,
}
KINDS = [*DAMAGE, "symlink"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds the cwd to it
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None, "INTEMPORAL_DEBUG": None})
    return lambda *args: runner.invoke(app, ["--store", str(home), *args])


@pytest.fixture(params=KINDS)
def damaged(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[str]:
    """A store with a healthy run "good" and a run "bad" damaged by one kind; yields the kind."""
    with Engine(str(home), threads=2) as engine:
        engine.run(unr_steps, 3, run_id="good")
        engine.run(unr_steps, 3, run_id="bad")
    path = home / "bad.jsonl"
    if request.param == "symlink":
        elsewhere = tmp_path / "elsewhere.jsonl"
        os.replace(path, elsewhere)
        path.symlink_to(elsewhere)
    else:
        path.write_bytes(DAMAGE[request.param](path.read_bytes()))
    yield request.param


def one_line_error(result: Result, *words: str) -> str:
    """Exit 1, one line "error: ..." on stderr naming `words`, and no traceback anywhere."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if lines[0].startswith("{"):  # with --json the error is one JSON object instead
        text = json.loads(lines[0])["error"]
    else:
        assert lines[0].startswith("error: "), result.stderr
        text = lines[0]
    for word in words:
        assert word in text, text
    return text


def test_list_shows_a_damaged_run_as_unreadable_and_json_says_why(
    damaged: str, cli: Callable[..., Result], home: Path
) -> None:
    table = cli("list")
    assert table.exit_code == 0, table.output
    assert "bad" in table.stdout and "unreadable" in table.stdout and "good" in table.stdout
    assert "1 unreadable" in table.stdout

    rows = {r["run_id"]: r for r in map(json.loads, cli("list", "--json").stdout.splitlines())}
    assert rows["good"]["status"] == "completed"
    assert rows["bad"]["status"] == "unreadable"
    assert str(home / "bad.jsonl") in rows["bad"]["error"]  # why, naming the file
    only = cli("list", "--json", "--status", "completed").stdout.splitlines()
    assert [json.loads(r)["run_id"] for r in only] == ["good"]
    damaged_only = cli("list", "--json", "--status", "unreadable").stdout.splitlines()
    assert [json.loads(r)["run_id"] for r in damaged_only] == ["bad"]


@pytest.mark.parametrize(
    "args",
    [
        ["show", "bad"],
        ["show", "bad", "--json"],
        ["resume", "bad"],
        ["cancel", "bad"],
        ["signal", "bad", "go", "1"],
        ["start", "test_unreadable:unr_steps", "[3]", "--run-id", "bad"],
        ["start", "test_unreadable:unr_steps", "[3]", "--run-id", "bad", "--detach"],
        ["replay", "bad"],
    ],
    ids=lambda a: "-".join(x for x in a if x.isalpha() or x.startswith("--")),
)
def test_commands_naming_a_damaged_run_print_one_line_and_exit_1(
    damaged: str, cli: Callable[..., Result], home: Path, args: list[str]
) -> None:
    path = home / "bad.jsonl"
    before = path.read_bytes()
    one_line_error(cli(*args), str(path))
    assert path.read_bytes() == before  # nothing dropped, rewritten or appended
    assert not (home / "bad.inbox").exists()  # no signal or cancellation slipped in


def test_resume_all_reports_a_damaged_run_instead_of_nothing_to_resume(
    damaged: str, cli: Callable[..., Result], home: Path
) -> None:
    before = (home / "bad.jsonl").read_bytes()
    result = cli("resume", "--all")
    assert result.exit_code == 1, result.output
    assert "nothing to resume" not in result.output and "Traceback" not in result.output
    assert "bad" in result.stdout and "cannot be read" in result.stdout

    as_json = [json.loads(line) for line in cli("resume", "--all", "--json").stdout.splitlines()]
    assert [(o["run_id"], o["status"]) for o in as_json] == [("bad", "error")]
    assert str(home / "bad.jsonl") in as_json[0]["error"]
    assert (home / "bad.jsonl").read_bytes() == before


def test_gc_and_worker_go_on_leave_a_damaged_run_alone_and_say_so(
    damaged: str, cli: Callable[..., Result], home: Path
) -> None:
    before = (home / "bad.jsonl").read_bytes()
    gc = cli("gc", "--older-than", "0s")
    assert gc.exit_code == 1 and "Traceback" not in gc.output, gc.output
    assert "removed 1 run" in gc.stdout  # "good", not "bad"
    one_line_error(gc, "bad", "cannot be read")  # never skipped in silence
    worker = cli("worker", "--once", "--interval", "0.01")
    assert worker.exit_code == 1 and "Traceback" not in worker.output, worker.output
    assert "bad error: cannot be read" in worker.stdout, worker.output
    assert (home / "bad.jsonl").read_bytes() == before
    rows = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert [(r["run_id"], r["status"]) for r in rows] == [("bad", "unreadable")]


def test_engine_reads_of_a_damaged_run_raise_a_library_error(damaged: str, home: Path) -> None:
    expected = UnsafeStore if damaged == "symlink" else JournalCorrupted
    with Engine(str(home), threads=2) as engine:
        for call in (engine.history, engine.get_run, engine.resume):
            with pytest.raises(expected) as info:
                call("bad")
            assert str(home / "bad.jsonl") in str(info.value)
        assert engine.list_runs(status=RunStatus.UNREADABLE)[0].run_id == "bad"
        assert engine.recover() == []  # logged, never raised, never executed
    if damaged != "symlink":
        with pytest.raises(JournalCorrupted):
            FileStore(home).read("bad")


@pytest.mark.parametrize(
    "message",
    [
        b"{not json",
        b'{"type": "signal", "name": ["go"], "payload": 1, "signal_id": "s1"}',
        b'{"type": "signal", "payload": 1, "signal_id": "s1"}',
        b'{"type": "signal", "name": "go", "payload": 1, "signal_id": 7}',
        b'{"type": 5}',
        b'"just a string"',
        b"[" * DEEP + b"]" * DEEP,
    ],
    ids=[
        "bad-json",
        "name-a-list",
        "no-name",
        "id-a-number",
        "type-a-number",
        "not-an-object",
        "deep",
    ],
)
def test_a_damaged_inbox_is_reported_never_a_traceback(
    cli: Callable[..., Result], home: Path, message: bytes
) -> None:
    # Any process may write an inbox: what a run cannot take is an error naming the file.
    with Engine(str(home), worker=False) as engine:
        engine.start(unr_waiter, run_id="w")
    inbox = home / "w.inbox"
    inbox.write_bytes(message + b"\n")
    result = cli("resume", "w", "--timeout", "5")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"w error: JournalCorrupted: journal {inbox} is corrupted at line 1" in result.stdout
    with Engine(str(home)) as engine, pytest.raises(JournalCorrupted):
        engine.resume("w").result(timeout=5)
    assert inbox.read_bytes() == message + b"\n"


def test_unreadable_is_not_one_of_the_six_run_states() -> None:
    assert RunStatus.UNREADABLE == "unreadable" and RunStatus("unreadable") is RunStatus.UNREADABLE
    assert RunStatus.UNREADABLE not in list(RunStatus) and not RunStatus.UNREADABLE.finished
    assert len(list(RunStatus)) == 6


def test_a_value_nested_deep_but_readable_shows_without_a_traceback(
    cli: Callable[..., Result], home: Path
) -> None:
    # Just under what the JSON reader takes: every command still answers in one piece.
    with Engine(str(home), threads=2) as engine:
        engine.run(unr_steps, 1, run_id="deep")
    path = home / "deep.jsonl"
    lines = _lines(path.read_bytes())
    done = json.loads(lines[-1])
    lines[-1] = json.dumps(done)[:-1].encode() + b',"extra":' + b"[" * 900 + b"]" * 900 + b"}\n"
    path.write_bytes(b"".join(lines))
    for args in (["list"], ["list", "--json"], ["show", "deep"], ["show", "deep", "--json"]):
        result = cli(*args)
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
        if result.exit_code == 1:
            one_line_error(result)


BASE_EXCEPTIONS = """
import intemporal

class Boom(BaseException):
    pass

@intemporal.workflow(name="{name}.boom")
def boom():
    raise Boom("out of the blue")

@intemporal.workflow(name="{name}.interrupt")
def interrupt():
    raise KeyboardInterrupt

@intemporal.workflow(name="{name}.exit")
def leave():
    raise SystemExit(3)
"""


@pytest.mark.parametrize("ts", [1e308, -1e308, float("nan"), float("inf")])
def test_times_out_of_range_show_without_a_traceback(
    cli: Callable[..., Result], home: Path, ts: float
) -> None:
    # Well-typed but absurd: the run is readable, and shown with its time as it is.
    with Engine(str(home), threads=2) as engine:
        engine.run(unr_steps, 1, run_id="odd")
    path = home / "odd.jsonl"
    path.write_bytes(_edit_event(0, ts=ts)(_edit_event(-1, ts=ts)(path.read_bytes())))
    for args in (["list"], ["list", "--json"], ["show", "odd"], ["show", "odd", "--json"]):
        result = cli(*args)
        assert result.exit_code == 0 and result.exception is None, (args, result.output)
        assert "odd" in result.stdout


@pytest.fixture
def base_exception_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module of workflows that raise a BaseException; yields its name."""
    name = f"unr_base_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(BASE_EXCEPTIONS.format(name=name))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("workflow", "shown"),
    [
        ("boom", "Boom: out of the blue"),
        ("interrupt", "KeyboardInterrupt"),
        ("leave", "SystemExit"),
    ],
)
def test_start_of_a_workflow_raising_a_base_exception_prints_one_line_and_exits_1(
    cli: Callable[..., Result], base_exception_module: str, workflow: str, shown: str
) -> None:
    result = cli("start", f"{base_exception_module}:{workflow}", "--run-id", workflow)
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"{workflow} error: the workflow raised {shown}" in result.stdout
    assert "stays resumable" in result.stdout
