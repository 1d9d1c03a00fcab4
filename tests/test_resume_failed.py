"""Every resume of a failed run retries the step that failed it, also in child runs.

| the step that failed the run          | each resume                                          |
| ------------------------------------- | ---------------------------------------------------- |
| an activity (tests/test_retry.py)     | runs it again, with a fresh retry budget              |
| a child run, failed by its activity   | resumes the child, which runs that activity again     |
| a grandchild                          | the same, down the tree                               |
| a child failure the parent handled    | replayed: the child is not run again                  |
"""

from __future__ import annotations

import pytest
from helpers import Calls

import intemporal
from intemporal import Engine, RetryPolicy, RunStatus

STATE: dict[str, object] = {"broken": True, "calls": Calls()}


def calls() -> Calls:
    counter = STATE["calls"]
    assert isinstance(counter, Calls)
    return counter


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STATE, "broken", True)
    monkeypatch.setitem(STATE, "calls", Calls())


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def load(x: int) -> str:
    calls().hit("load")
    if STATE["broken"]:
        raise ConnectionError(f"the warehouse is down ({x})")
    return "loaded"


@intemporal.activity
def prepare() -> int:
    calls().hit("prepare")
    return 7


@intemporal.workflow(name="rf.child")
def loading_child(x: int) -> str:
    return load(x)


@intemporal.workflow(name="rf.middle")
def middle(x: int) -> str:
    return loading_child(x)


@intemporal.workflow(name="rf.parent")
def parent() -> str:
    return loading_child(prepare())


@intemporal.workflow(name="rf.grandparent")
def grandparent() -> str:
    return middle(prepare())


@intemporal.workflow(name="rf.handling")
def handling() -> str:
    try:
        return loading_child(prepare())
    except ConnectionError as exc:
        raise RuntimeError("gave up") from exc


@pytest.mark.parametrize("wf", [parent, grandparent], ids=["child", "grandchild"])
def test_each_resume_of_a_run_failed_by_a_child_retries_the_child(
    engine: Engine, wf: intemporal.Workflow[[], str]
) -> None:
    # Given a run failed by a child run's activity (max_attempts=1)
    with pytest.raises(ConnectionError):
        engine.run(wf, run_id="p")
    # When it is resumed while the cause persists: it fails again, the activity ran again
    with pytest.raises(ConnectionError):
        engine.resume("p").result(timeout=10)
    assert calls()["load"] == 2
    # And resumed once the cause is fixed: 'loaded' after 3 calls in all
    STATE["broken"] = False
    assert engine.resume("p").result(timeout=10) == "loaded"
    assert calls()["load"] == 3 and calls()["prepare"] == 1
    for rid in engine.store.run_ids():
        assert engine.get_run(rid).status is RunStatus.COMPLETED, rid


def test_a_child_failure_the_parent_handled_is_replayed_not_retried(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="gave up"):
        engine.run(handling, run_id="h")
    STATE["broken"] = False
    with pytest.raises(RuntimeError, match="gave up"):
        engine.resume("h").result(timeout=10)
    assert calls()["load"] == 1
    assert engine.get_run("h/2").status is RunStatus.FAILED
