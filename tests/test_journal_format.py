"""The journal's vocabulary (`intemporal.events`): event names, the format version, `fold()`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import intemporal
from intemporal import Engine, JournalCorrupted, MemoryStore, RunStatus
from intemporal import events as ev
from intemporal.runs import first_event

PACKAGE = Path(intemporal.__file__).parent


def _event_names() -> set[str]:
    return {
        value
        for name, value in vars(ev).items()
        if name.isupper() and isinstance(value, str) and name != "JOURNAL_VERSION"
    }


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_no_event_type_is_a_string_literal_outside_events_py() -> None:
    # Given every event name of the vocabulary
    names = _event_names()
    assert {"run_started", "activity_completed", "signal", "cancel", "run_recovered"} <= names
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "events.py":
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        # Call arguments and `__all__` entries name API functions or commands ("signal",
        # "join_any"), not event types
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                skip.update(id(a) for a in node.args if isinstance(a, ast.Constant))
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                skip.update(id(a) for a in ast.walk(node.value))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in names
                and id(node) not in skip
                and ("_" in node.value or _used_as_type(tree, node))
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    # Then none is spelled out anywhere but in events.py
    assert found == []


def _used_as_type(tree: ast.AST, const: ast.Constant) -> bool:
    """A bare word ("signal", "cancel") counts where it is a dict's "type" or compared."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if v is const and isinstance(k, ast.Constant) and k.value == "type":
                    return True
        if isinstance(node, ast.Compare) and const in [node.left, *node.comparators]:
            return True
    return False


def _journal(*events: dict) -> list[dict]:
    first = {"type": ev.RUN_STARTED, "version": 1, "run_id": "r", "workflow": "wf", "ts": 1.0}
    return [first, *[{"ts": 2.0 + i, **e} for i, e in enumerate(events)]]


def test_fold_gives_status_queue_parent_wake_up_and_steps() -> None:
    # Given a run of queue "q", child of "p", that completed two activities then suspended
    first = {
        "type": ev.RUN_STARTED,
        "run_id": "p/1",
        "workflow": "wf",
        "queue": "q",
        "parent": "p",
        "ts": 1.0,
    }
    events = [
        first,
        {"type": ev.ACTIVITY_COMPLETED, "seq": 1, "name": "a", "result": 1, "ts": 2.0},
        {"type": ev.ACTIVITY_COMPLETED, "seq": 2, "name": "a", "result": 2, "ts": 3.0},
        {"type": ev.RUN_SUSPENDED, "reason": "sleep", "until": 99.5, "ts": 4.0},
    ]
    # When folded
    state = ev.fold(events)
    # Then
    assert (state.status, state.queue, state.parent) == (RunStatus.WAITING, "q", "p")
    assert (state.wake_at, state.steps, state.created_at, state.updated_at) == (99.5, 2, 1.0, 4.0)
    # And folding more onto it is the same as folding everything, without changing it
    later = ev.fold([{"type": ev.RUN_COMPLETED, "result": 3, "ts": 5.0}], state)
    assert later.status is RunStatus.COMPLETED and later.wake_at is None
    assert later.outcome["result"] == 3 and state.status is RunStatus.WAITING
    assert ev.fold([*events, {"type": ev.RUN_COMPLETED, "result": 3, "ts": 5.0}]) == later


@pytest.mark.parametrize(
    ("tail", "status"),
    [
        ([], RunStatus.PENDING),
        ([{"type": ev.TIMER_STARTED, "seq": 1, "name": "sleep"}], RunStatus.RUNNING),
        ([{"type": ev.RUN_FAILED, "error": {"type": "E", "message": "m"}}], RunStatus.FAILED),
        (
            [{"type": ev.RUN_FAILED, "error": {}}, {"type": ev.RUN_RESUMED}],
            RunStatus.RUNNING,
        ),
        ([{"type": ev.RUN_CANCELLED, "error": {}}], RunStatus.CANCELLED),
        ([{"type": ev.RUN_RECOVERED, "after": "crash"}], RunStatus.RUNNING),
    ],
)
def test_fold_status_by_last_events(tail: list[dict], status: RunStatus) -> None:
    assert ev.fold(_journal(*tail)).status is status


def test_terminal_and_final_sets() -> None:
    assert set(ev.TERMINAL_EVENTS) == {ev.RUN_COMPLETED, ev.RUN_FAILED, ev.RUN_CANCELLED}
    assert {ev.RUN_COMPLETED, ev.RUN_CANCELLED} == ev.FINAL_EVENTS  # a failed run may resume


@intemporal.workflow
def jf_double(x: int) -> int:
    return 2 * x


def test_run_started_records_the_journal_version() -> None:
    with Engine(store=MemoryStore()) as engine:
        assert engine.run(jf_double, 2, run_id="v") == 4
        assert engine.history("v")[0]["version"] == ev.JOURNAL_VERSION


def test_a_journal_of_a_newer_version_is_refused_naming_both_versions() -> None:
    # Given a run whose journal says it was written by a newer intemporal
    store = MemoryStore()
    newer = ev.JOURNAL_VERSION + 1
    first = {**first_event("future", jf_double, (1,), {}, "auto", None, {}), "version": newer}
    assert store.create("future", first)
    with Engine(store=store) as engine:
        # When it is resumed, started again, looked at, signalled, cancelled or forked
        attempts = {
            "resume": lambda: engine.resume("future"),
            "start": lambda: engine.start(jf_double, 1, run_id="future"),
            "run": lambda: engine.run(jf_double, 1, run_id="future"),
            "get_run": lambda: engine.get_run("future"),
            "result": lambda: engine.handle("future").result(timeout=5),
            "signal": lambda: engine.signal("future", "go"),
            "cancel": lambda: engine.cancel("future"),
            "fork": lambda: engine.fork("future", 1, new_run_id="future-fork"),
        }
        for call, attempt in attempts.items():
            # Then each is refused with both versions and the run named
            with pytest.raises(JournalCorrupted) as err:
                attempt()
            assert f"version {newer}" in str(err.value), call
            assert f"({ev.JOURNAL_VERSION})" in str(err.value), call
            assert "'future'" in str(err.value), call
        # And nothing was written to it, nor any fork of it made
        assert engine.history("future") == [first]
        assert [i.run_id for i in engine.list_runs()] == ["future"]
    # A journal without a version predates the field: it reads as version 1
    assert ev.fold([{k: v for k, v in first.items() if k != "version"}]).status is RunStatus.PENDING
