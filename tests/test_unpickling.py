"""Reading a store never runs its code (issue 13: "Reading runs code", "codec=json protects only
writes").

Every test plants a crafted pickle whose unpickling only creates a marker file in the test's
tmp folder, then asserts the marker was NOT created by:

| reader                                                    | test                                     |
| --------------------------------------------------------- | ---------------------------------------- |
| `list`, `list --json`, `show`, `show --json`, `gc`         | test_reading_commands_never_unpickle     |
| `replay` (the check)                                      | test_replay_check_never_unpickles        |
| `result` (the command)                                    | test_result_command_never_unpickles      |
| `Engine.get_run`, `list_runs`, `history`                   | test_engine_summaries_never_unpickle     |
| `Engine(codec="json")`: result, resume, get_event          | test_json_codec_refuses_dill_on_read     |
| `Engine(codec="json")`: a signal sent by another process   | test_json_codec_refuses_a_pickled_signal |

and, as the control that the payload is real, `codec="auto"` executing the run's own data
does create it (test_auto_codec_trusts_the_store_as_code).
"""

from __future__ import annotations

import base64
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import intemporal
from intemporal import DillRefused, Engine, FileStore, RunStatus
from intemporal.cli import app
from intemporal.runs import first_event


class _Marker:
    """Unpickling this creates the file at `path`: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


def _payload(marker: Path) -> dict[str, Any]:
    return {"$dill": base64.b64encode(pickle.dumps(_Marker(marker), protocol=4)).decode()}


@intemporal.workflow
def crafted_wf(value: Any, k: Any = None) -> Any:
    return intemporal.side_effect(lambda: 1)


@intemporal.workflow
def waits_for_signal() -> Any:
    return intemporal.wait_for_signal("go")


def _plant(store: FileStore, run_id: str, events: list[dict[str, Any]]) -> None:
    assert store.create(run_id, events[0])
    lease = store.claim(run_id)
    assert lease is not None
    for ev in events[1:]:
        lease.append(dict(ev, ts=time.time()), sync=True)
    lease.release()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker-created-by-unpickling"


@pytest.fixture
def crafted(tmp_path: Path, marker: Path) -> FileStore:
    """A store holding runs whose args, results, errors and events are crafted pickles."""
    store = FileStore(tmp_path / "store")
    bad = _payload(marker)
    first = first_event("done", crafted_wf, (1,), {}, "auto", None, {})
    first["args"], first["kwargs"] = [bad], {"k": bad}
    _plant(
        store,
        "done",
        [
            first,
            {"type": "side_effect", "seq": 1, "name": "x", "result": bad},
            {
                "type": "event_set",
                "seq": 2,
                "name": "intemporal.set_event:e",
                "key": "e",
                "value": bad,
            },
            {"type": "run_completed", "result": bad},
        ],
    )
    error = {
        "type": "ValueError",
        "module": "builtins",
        "message": "m",
        "how": "new",
        "args": bad,
        "attrs": {"a": bad},
        "pickle": bad["$dill"],
    }
    _plant(
        store,
        "failed",
        [
            dict(first_event("failed", crafted_wf, (1,), {}, "auto", None, {})),
            {"type": "side_effect", "seq": 1, "name": "x", "error": error},
            {"type": "run_failed", "error": error},
        ],
    )
    assert not marker.exists()
    return store


def test_auto_codec_trusts_the_store_as_code(crafted: FileStore, marker: Path) -> None:
    with Engine(crafted, worker=False) as engine:
        engine.handle("done").result(timeout=5)
    assert marker.exists()  # the payload is real: with codec="auto" the store is code


def test_reading_commands_never_unpickle(crafted: FileStore, marker: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None})

    def cli(*args: str) -> Any:
        result = runner.invoke(app, ["--store", str(crafted.root), *args])
        assert "Traceback" not in result.output
        return result

    listed = cli("list")
    assert listed.exit_code == 0 and "done" in listed.stdout
    assert cli("list", "--json").exit_code == 0
    shown = cli("show", "done")
    assert shown.exit_code == 0, shown.output
    assert "<dill: " in shown.stdout
    assert cli("show", "failed").exit_code == 0
    assert cli("show", "done", "--json").exit_code == 0
    assert cli("show", "failed", "--json").exit_code == 0
    assert cli("gc", "--older-than", "0s", "--dry-run").exit_code == 0
    assert cli("gc", "--older-than", "0s").exit_code == 0
    assert not marker.exists()


def test_replay_check_never_unpickles(crafted: FileStore, marker: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None})
    result = runner.invoke(app, ["--store", str(crafted.root), "replay", "done"])
    assert result.exit_code == 0, result.output  # not a mismatch: a check CI can run
    assert "not checked" in result.stdout and "never unpickles" in result.stdout
    assert "'done'" in result.stdout
    assert "Traceback" not in result.output

    # arguments of plain JSON: the check goes as far as the first pickled value
    bad = _payload(marker)
    _plant(
        crafted,
        "json-args",
        [
            first_event("json-args", crafted_wf, (1,), {}, "auto", None, {}),
            {"type": "side_effect", "seq": 1, "name": crafted_wf_side_effect_name(), "result": bad},
        ],
    )
    result = runner.invoke(app, ["--store", str(crafted.root), "replay", "json-args"])
    assert result.exit_code == 0, result.output
    assert "not checked further" in result.stdout
    assert not marker.exists()


def test_result_command_never_unpickles(crafted: FileStore, marker: Path) -> None:
    # Given finished runs whose result and error are crafted pickles
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None})
    # When `intemporal result` prints them (as text and as JSON)
    done = runner.invoke(app, ["--store", str(crafted.root), "result", "done"])
    as_json = runner.invoke(app, ["--store", str(crafted.root), "result", "done", "--json"])
    failed = runner.invoke(app, ["--store", str(crafted.root), "result", "failed"])
    # Then each is shown as what it is, and no code ran
    assert done.exit_code == 0 and "<dill: " in done.stdout, done.output
    assert as_json.exit_code == 0 and "<dill: " in as_json.stdout, as_json.output
    assert failed.exit_code == 1 and "ValueError: m" in failed.stdout, failed.output
    assert not marker.exists()


def crafted_wf_side_effect_name() -> str:
    return "intemporal.side_effect:crafted_wf.<locals>.<lambda>"


def test_engine_summaries_never_unpickle(crafted: FileStore, marker: Path) -> None:
    with Engine(crafted, worker=False) as engine:
        info = engine.get_run("done")
        assert info.status is RunStatus.COMPLETED
        assert repr(info.result).startswith("<dill: ")
        assert {i.run_id for i in engine.list_runs()} == {"done", "failed"}
        assert engine.get_run("failed").error == "ValueError: m"
        engine.history("done")
        repr(engine.list_runs())
    assert not marker.exists()


def test_json_codec_refuses_dill_on_read(crafted: FileStore, marker: Path) -> None:
    with Engine(crafted, codec="json") as engine:
        with pytest.raises(DillRefused, match=r"run 'done' \(journal line 4\)"):
            engine.handle("done").result(timeout=5)
        with pytest.raises(DillRefused, match=r"run 'failed' \(journal line 3\)"):
            engine.handle("failed").result(timeout=5)
        with pytest.raises(DillRefused, match=r"event 'e' of run 'done' \(journal line 3\)"):
            engine.get_event("done", "e", timeout=1)
        # resuming: the arguments are refused before anything runs
        bad = _payload(marker)
        first = first_event("pending", crafted_wf, (1,), {}, "auto", None, {})
        first["args"] = [bad]
        assert crafted.create("pending", first)
        with pytest.raises(DillRefused, match=r"argument 0 of run 'pending' \(journal line 1\)"):
            engine.resume("pending")
    assert not marker.exists()


def test_json_codec_refuses_a_pickled_signal(tmp_path: Path, marker: Path) -> None:
    # Given a json-codec run waiting for a signal
    store = FileStore(tmp_path / "store")
    with Engine(store, codec="json") as engine:
        engine.start(waits_for_signal, run_id="w")
        deadline = time.monotonic() + 10
        while engine.get_run("w").status is not RunStatus.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    # When another process sends it a pickled payload
    store.send("w", {"type": "signal", "name": "go", "payload": _payload(marker)})

    # Then resuming refuses it: the run stops, unrecorded; nothing ran
    with Engine(store, codec="json") as engine:
        with pytest.raises(DillRefused, match=r"signal 'go' in the inbox of run 'w'"):
            engine.resume("w").result(timeout=10)
        assert engine.get_run("w").status is not RunStatus.FAILED
        assert not any(e["type"] == "signal_received" for e in engine.history("w"))
    assert not marker.exists()


def test_json_codec_neither_writes_nor_loads_a_dill_copy_of_the_code(
    tmp_path: Path, marker: Path
) -> None:
    # Given a workflow only a copy could find again (defined in a function)
    @intemporal.workflow
    def local_wf() -> int:
        return 1

    store = FileStore(tmp_path / "store")
    with Engine(store, codec="json") as engine:
        engine.run(local_wf, run_id="local")
    assert "dill" not in store.read("local")[0]["ref"]  # codec="json": never dill, code too

    # And a run whose code reference is a crafted copy, its module gone
    first = first_event("copy", crafted_wf, (1,), {}, "auto", None, {})
    first["workflow"] = "gone"
    first["ref"] = {"module": "gone_module_x", "qualname": "wf", "dill": _payload(marker)["$dill"]}
    assert store.create("copy", first)

    # When a json-codec engine resumes it: the copy is not unpickled
    with Engine(store, codec="json") as engine, pytest.raises(intemporal.WorkflowNotFound):
        engine.resume("copy")
    assert not marker.exists()


@intemporal.activity
def pair() -> tuple[int, int]:
    return (1, 2)


@intemporal.workflow
def pair_then_wait() -> Any:
    value = pair()
    intemporal.wait_for_signal("go")
    return list(value)


def test_json_codec_stops_a_replay_at_a_pickled_activity_result(tmp_path: Path) -> None:
    # Given a run recorded by an auto engine: its activity returned a tuple (pickled)
    store = FileStore(tmp_path / "store")
    with Engine(store) as engine:
        engine.start(pair_then_wait, run_id="p")
        deadline = time.monotonic() + 10
        while engine.get_run("p").status is not RunStatus.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    # When an Engine(codec="json") replays it
    with Engine(store, codec="json") as engine:
        engine.signal("p", "go")
        with pytest.raises(DillRefused, match=r"step 1 of run 'p' \(journal line 2\)"):
            engine.resume("p").result(timeout=10)
        # Then the run stopped there, unrecorded and resumable
        assert engine.get_run("p").status is not RunStatus.FAILED
    with Engine(store) as engine:
        assert engine.resume("p").result(timeout=10) == [1, 2]
