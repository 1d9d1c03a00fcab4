"""Timeouts of whole runs: `engine.start(..., timeout=s)` and `@workflow(timeout=s)`.

When the durable deadline passes, the run gets `Cancelled` (its saga rolls back) and ends
cancelled, "timed out"; a child inherits what is left of its parent's time; the deadline
survives a SIGKILL of the process executing the run.

A test that needs a run to reach a point (booked, asleep) before its deadline gives it a
minute and moves the engine's clock past the deadline once the run is there (`_Later`):
a deadline of a fraction of a second passed before the first step on a loaded host.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import UNDONE, book, unbook
from process_helpers import run_and_kill, wait_until

import intemporal
from intemporal import Engine, FileStore, MemoryStore, RunStatus, Store
from intemporal.clock import Clock


@intemporal.workflow(name="timeout.trip")
def trip(item: str) -> str:
    with intemporal.saga() as saga:
        book(item)
        saga.add_compensation(unbook, item)
        intemporal.sleep(3600)  # far past any deadline below
        return "done"


@intemporal.workflow(name="timeout.trip_for")
def trip_for(item: str, seconds: float) -> str:
    with intemporal.saga() as saga:
        book(item)
        saga.add_compensation(unbook, item)
        intemporal.sleep(seconds)
        return "done"


@intemporal.workflow(name="timeout.child")
def child(item: str) -> str:
    intemporal.sleep(3600)
    return item


@intemporal.workflow(name="timeout.parent", timeout=60)
def parent(item: str) -> str:
    return child(item)


class _Later(Clock):
    """The wall clock, moved on by `ahead` seconds: a process that comes back much later,
    or (`ahead` set meanwhile) a deadline a minute away that passes now."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead


@pytest.mark.parametrize("timeout", [300.0, 3599.0])
def test_a_run_executed_again_after_its_deadline_and_its_timer_passed_is_timed_out(
    tmp_path: Path, timeout: float
) -> None:
    UNDONE.clear()
    store = tmp_path / "s"
    # Given a run parked on a 3600 s sleep with a deadline before it (by 3300 s, or by one),
    # by an engine that then stops
    with Engine(FileStore(store)) as engine:
        engine.start(trip_for, "boat", 3600.0, run_id="both", timeout=timeout)
        wait_until(lambda: engine.get_run("both").status is RunStatus.WAITING, timeout=10)
    # When an engine resumes it long after both the deadline and the timer passed
    with Engine(FileStore(store), clock=_Later(2 * 3600)) as engine:
        # Then the deadline, which came first, wins: timed out and compensated, not woken
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            engine.resume("both").result(timeout=10)
        _timed_out(engine, "both")
    assert UNDONE == ["boat"]


def _waiting(engine: Engine, *run_ids: str) -> None:
    """Wait until each of `run_ids` is parked (status WAITING; a child not created yet is not)."""
    waiting = lambda: {r.run_id for r in engine.list_runs(status="waiting")}  # noqa: E731
    wait_until(lambda: set(run_ids) <= waiting(), what=f"{', '.join(run_ids)} waiting")


def _timed_out(engine: Engine, run_id: str) -> None:
    assert engine.get_run(run_id).status is RunStatus.CANCELLED
    last = engine.history(run_id)[-1]
    assert last["type"] == "run_cancelled" and last["reason"] == "timed out"


def test_a_run_sleeping_past_its_deadline_is_cancelled_and_compensates(store: Store) -> None:
    UNDONE.clear()
    clock = _Later(0.0)
    with Engine(store, clock=clock) as engine:
        # Given a run with a saga, booked and asleep for longer than its timeout
        handle = engine.start(trip, "hotel", run_id="late", timeout=60)
        deadline = engine.history("late")[0]["deadline"]
        _waiting(engine, "late")
        # When its deadline passes
        clock.ahead = 120
        # Then it ends cancelled, "timed out", its booking compensated, at its deadline
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
        _timed_out(engine, "late")
        assert engine.history("late")[-1]["ts"] >= deadline
    assert UNDONE == ["hotel"]


def test_a_child_inherits_its_parents_remaining_time(store: Store) -> None:
    clock = _Later(0.0)
    with Engine(store, clock=clock) as engine:
        # Given a parent with @workflow(timeout=...) whose child sleeps an hour
        handle = engine.start(parent, "x", run_id="p")
        _waiting(engine, "p/1", "p")
        # When the parent's deadline passes, Then both end timed out, the child at its
        # parent's deadline
        clock.ahead = 120
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        assert engine.history("p/1")[0]["deadline"] == engine.history("p")[0]["deadline"]
        _timed_out(engine, "p/1")
        assert engine.get_run("p").status is RunStatus.CANCELLED


@intemporal.workflow(name="timeout.booking_parent")
def booking_parent(item: str) -> str:
    with intemporal.saga() as saga:
        book(item)
        saga.add_compensation(unbook, item)
        return child(item)  # sleeps past the deadline it shares with its parent


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_parent_whose_child_ends_cancelled_with_it_still_compensates(
    store: Store, how: str
) -> None:
    UNDONE.clear()
    clock = _Later(0.0)
    with Engine(store, clock=clock) as engine:
        # Given a parent with a saga, waiting for a child when it times out (or is cancelled)
        timeout = 60 if how == "timeout" else None
        handle = engine.start(booking_parent, "car", run_id="bp", timeout=timeout)
        _waiting(engine, "bp/2", "bp")
        if how == "cancel":
            handle.cancel()
        else:
            clock.ahead = 120
        # Then the child's Cancelled is the parent's own: the parent's saga rolls back
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        assert engine.get_run("bp/2").status is RunStatus.CANCELLED
        assert engine.get_run("bp").status is RunStatus.CANCELLED
        if how == "timeout":
            _timed_out(engine, "bp")
    assert UNDONE == ["car"]


@intemporal.workflow(name="timeout.async_child")
async def async_child(item: str) -> str:
    await intemporal.sleep_async(3600)
    return item


@intemporal.workflow(name="timeout.async_parent")
async def async_parent(item: str) -> str:
    await book(item)  # type: ignore[misc]  # a sync activity, awaitable in an async workflow
    try:
        return str(await async_child(item))
    except intemporal.Cancelled:
        await unbook(item)  # type: ignore[misc]
        raise


def test_an_async_parent_whose_child_times_out_with_it_still_compensates(store: Store) -> None:
    UNDONE.clear()
    # (an async run waits on its event loop, not parked: virtual time, which skips to the
    # deadline once both runs wait, passes it after the booking)
    with intemporal.testing.engine(store=store) as engine:
        handle = engine.start(async_parent, "bike", run_id="ap", timeout=60)
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        _timed_out(engine, "ap")
    assert UNDONE == ["bike"]


@intemporal.workflow(name="timeout.waits_for_go")
def waits_for_go() -> str:
    return str(intemporal.wait_for_signal("go"))


@intemporal.workflow(name="timeout.awaits_go")
async def awaits_go() -> str:
    return str(await intemporal.wait_for_signal_async("go"))


@pytest.mark.parametrize("wf", [waits_for_go, awaits_go], ids=["sync", "async"])
def test_a_deadline_passes_in_virtual_time_while_a_run_waits_for_a_signal_without_timeout(
    wf: Any,
) -> None:
    # Given a run with an hour's timeout waiting for a signal that never comes, on the
    # testing clock
    with intemporal.testing.engine() as engine:
        handle = engine.start(wf, run_id="no-go", timeout=3600)
        # When its result is awaited, Then the hour passes at once and it is timed out
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
        _timed_out(engine, "no-go")


@pytest.mark.parametrize("timeout", [1e10, 1e15, timedelta(days=999_999)])
def test_a_timeout_centuries_away_is_kept_without_a_thread_error(
    timeout: float | timedelta, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    with Engine(MemoryStore()) as engine:
        # Given a run whose deadline is further away than a thread can wait
        handle = engine.start(trip, "far", run_id="far", timeout=timeout)
        wait_until(lambda: engine.get_run("far").status is RunStatus.WAITING)
        # Then it is recorded, it waits, and nothing failed behind the user's back
        assert engine.history("far")[0]["deadline"] > time.time() + 1e9
        handle.cancel()
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
    assert errors == []


def test_timeouts_are_checked_and_skip_with_virtual_time() -> None:
    with intemporal.testing.engine() as engine:
        with pytest.raises(ValueError):
            engine.start(trip, "x", timeout=0)
        with pytest.raises(TypeError):
            engine.start(trip, "x", timeout="soon")  # type: ignore[arg-type]
        assert engine.list_runs() == []
        # An hour-long sleep under a minute's timeout ends in virtual time
        handle = engine.start(trip, "car", timeout=60)
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


@intemporal.workflow(name=WF_NAME, timeout=60)
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
    # When another process resumes it, and its deadline passes as it sleeps there
    clock = _Later(0.0)
    with Engine(FileStore(crash.store), clock=clock) as engine:
        handle = engine.resume("killed")
        _waiting(engine, "killed")
        clock.ahead = 120
        # Then it is cancelled at the recorded deadline and its saga compensates once
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
        _timed_out(engine, "killed")
    assert crash.lines() == ["book hotel", "unbook hotel"]
