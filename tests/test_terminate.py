"""`engine.terminate(run_id, reason)`: a run ends CANCELLED at once, no compensation runs."""

from __future__ import annotations

import threading

import pytest
from helpers import UNDONE, book, unbook
from process_helpers import thread_stacks, wait_until

import intemporal
from intemporal import Engine, RunNotFound, RunStatus

release = threading.Event()
started = threading.Event()


@intemporal.activity
def slow(item: str) -> str:
    started.set()
    release.wait(10)
    return item


@intemporal.workflow(name="terminate.trip")
def trip(item: str, wait: str) -> str:
    with intemporal.saga() as saga:
        saga.add_compensation(unbook, item)
        book(item)
        if wait == "signal":
            intemporal.wait_for_signal("go")
        else:
            slow(item)
        return book("more")


def _state(engine: Engine, run_id: str) -> str:
    """A run's status and journal, and this process's threads: what a timeout reports."""
    try:
        kinds = [e["type"] for e in engine.history(run_id)]
        info = engine.get_run(run_id)
        seen = f"{info.status.value} {kinds} {info.error}"
    except Exception as exc:  # not even recorded: say so
        seen = repr(exc)
    return f"run {run_id}: {seen}\n{thread_stacks()}"


def _ended(engine: Engine, run_id: str) -> None:
    info = engine.get_run(run_id)
    assert info.status is RunStatus.CANCELLED
    last = engine.history(run_id)[-1]
    assert last["type"] == "run_cancelled" and last["terminated"] is True
    assert UNDONE == []  # no compensation ran
    with pytest.raises(intemporal.Cancelled, match="terminated"):
        engine.handle(run_id).result(timeout=5)


def test_a_waiting_run_is_terminated_without_compensation(engine: Engine) -> None:
    UNDONE.clear()
    # Given a run parked on a signal, with a compensation registered
    handle = engine.start(trip, "hotel", "signal", run_id="t-wait")
    try:
        wait_until(lambda: handle.status() is RunStatus.WAITING, what="the run to wait")
    except AssertionError:
        raise AssertionError(_state(engine, "t-wait")) from None
    # When it is terminated with a reason
    engine.terminate("t-wait", reason="duplicate order")
    # Then it ends cancelled at once, the reason recorded, nothing compensated
    _ended(engine, "t-wait")
    assert engine.history("t-wait")[-1]["reason"] == "duplicate order"
    assert "duplicate order" in (engine.get_run("t-wait").error or "")
    engine.terminate("t-wait")  # a finished run: nothing changes
    assert engine.history("t-wait")[-1]["reason"] == "duplicate order"


def test_an_executing_run_stops_at_its_next_operation(engine: Engine) -> None:
    UNDONE.clear()
    release.clear()
    started.clear()
    # Given a run executing an activity
    handle = engine.start(trip, "car", "activity", run_id="t-busy")
    assert started.wait(10), _state(engine, "t-busy")
    # When it is terminated meanwhile, then the activity finishes
    engine.terminate("t-busy", reason="stop now")
    release.set()
    # Then the run ends before its next step, without compensation
    with pytest.raises(intemporal.Cancelled, match="stop now"):
        handle.result(timeout=10)
    _ended(engine, "t-busy")
    names = [e.get("name") for e in engine.history("t-busy") if e["type"] == "activity_completed"]
    assert names.count("helpers.book") == 1  # book("more") never ran


def test_terminate_refuses_unknown_runs_and_bad_reasons(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        engine.terminate("nobody")
    with pytest.raises(TypeError):
        engine.terminate("nobody", reason=3)  # type: ignore[arg-type]
