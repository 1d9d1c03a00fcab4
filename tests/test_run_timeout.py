"""Timeouts of whole runs: `engine.start(..., timeout=s)` and `@workflow(timeout=s)`.

When the durable deadline passes, the run gets `Cancelled` (its saga rolls back) and ends
cancelled, "timed out"; a child inherits what is left of its parent's time; the deadline
survives a SIGKILL of the process executing the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import UNDONE, book, unbook
from process_helpers import run_and_kill

import intemporal
from intemporal import Engine, FileStore, RunStatus, Store


@intemporal.workflow(name="timeout.trip")
def trip(item: str) -> str:
    with intemporal.saga() as saga:
        book(item)
        saga.add_compensation(unbook, item)
        intemporal.sleep(3600)  # far past any deadline below
        return "done"


@intemporal.workflow(name="timeout.child")
def child(item: str) -> str:
    intemporal.sleep(3600)
    return item


@intemporal.workflow(name="timeout.parent", timeout=0.4)
def parent(item: str) -> str:
    return child(item)


def _timed_out(engine: Engine, run_id: str) -> None:
    assert engine.get_run(run_id).status is RunStatus.CANCELLED
    last = engine.history(run_id)[-1]
    assert last["type"] == "run_cancelled" and last["reason"] == "timed out"


def test_a_run_sleeping_past_its_deadline_is_cancelled_and_compensates(store: Store) -> None:
    UNDONE.clear()
    with Engine(store) as engine:
        # Given a run with a saga that sleeps past its timeout
        handle = engine.start(trip, "hotel", run_id="late", timeout=0.3)
        deadline = engine.history("late")[0]["deadline"]
        # Then it ends cancelled, "timed out", its booking compensated, at its deadline
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
        _timed_out(engine, "late")
        assert engine.history("late")[-1]["ts"] >= deadline
    assert UNDONE == ["hotel"]


def test_a_child_inherits_its_parents_remaining_time(store: Store) -> None:
    with Engine(store) as engine:
        # Given a parent with @workflow(timeout=...) whose child sleeps an hour
        handle = engine.start(parent, "x", run_id="p")
        # Then both end timed out, the child at its parent's deadline
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        assert engine.history("p/1")[0]["deadline"] == engine.history("p")[0]["deadline"]
        _timed_out(engine, "p/1")
        assert engine.get_run("p").status is RunStatus.CANCELLED


def test_timeouts_are_checked_and_skip_with_virtual_time() -> None:
    with intemporal.testing.engine() as engine:
        with pytest.raises(ValueError):
            engine.start(trip, "x", timeout=0)
        with pytest.raises(TypeError):
            engine.start(trip, "x", timeout="soon")  # type: ignore[arg-type]
        assert engine.list_runs() == []
        # A day-long sleep under an hour's timeout ends in virtual time
        handle = engine.start(trip, "car", timeout=3600)
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
    with pytest.raises(ValueError):
        intemporal.workflow(timeout=-1)(lambda: None)


CRASH_BODY = """
@intemporal.activity
def book(item):
    record("book", item)
    return item


@intemporal.activity
def unbook(item):
    record("unbook", item)


@intemporal.workflow(name=WF_NAME, timeout=1.0)
def crashing_trip(item):
    with intemporal.saga() as saga:
        book(item)
        saga.add_compensation(unbook, item)
        intemporal.sleep(3600)
        return "done"


WORKFLOW = crashing_trip
"""


def test_the_deadline_survives_a_sigkill(tmp_path: Path) -> None:
    # Given a run killed while it sleeps, before its deadline
    crash = run_and_kill(
        tmp_path,
        CRASH_BODY,
        args=("hotel",),
        lines=1,
        run_id="killed",
        ready=lambda store, rid: any(
            e["type"] == "timer_started" for e in FileStore(store).read(rid)
        ),
    )
    assert crash.events()[0]["deadline"] > 0
    # When another process resumes it
    with Engine(FileStore(crash.store)) as engine:
        handle = engine.resume("killed")
        # Then it is cancelled at the recorded deadline and its saga compensates once
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
        _timed_out(engine, "killed")
    assert crash.lines() == ["book hotel", "unbook hotel"]
