"""Cancellation: requested from anywhere, delivered once as `Cancelled`, rolled back by sagas.

A run gets `intemporal.Cancelled` at its next durable operation, or at once while it
sleeps or waits for a signal; an activity in flight sees it through `heartbeat()`. The
engine's own control flow (suspension, shutdown) is a `BaseException`, so
`except Exception:` in a workflow never swallows it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls, clone_prefix, index_of
from process_helpers import wait_until

import intemporal
from intemporal import Cancelled, Engine, FileStore, RunNotFound, RunStatus, Store

LOG = Calls()  # the shared call log; reset before every test
STEP_REACHED = threading.Event()  # step STOP_AT is running
STEP_GO = threading.Event()  # ... and may return
UNDO_REACHED = threading.Event()  # undo UNDO_STOP_AT is running
UNDO_GO = threading.Event()  # (set, unless a test holds undo UNDO_STOP_AT on purpose)
STOP_AT, UNDO_STOP_AT = 3, 1
SEEN: list[bool] = []  # is_suspension() of what `except BaseException` caught


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    global LOG
    LOG = Calls()
    SEEN.clear()
    for ev in (STEP_REACHED, STEP_GO, UNDO_REACHED):
        ev.clear()
    UNDO_GO.set()
    yield
    STEP_GO.set()  # never leave a pool thread blocked behind a failed test
    UNDO_GO.set()


def ended_before_its_timer(engine: Engine, run_id: str) -> bool:
    """Whether the run's end is journaled before its timer's `fire_at`: the sleep was cut
    short, whatever the machine's load (no wall-clock guess)."""
    events = engine.history(run_id)
    timer = events[index_of(events, "timer_started")]
    return bool(events[-1]["ts"] < timer["fire_at"])


def history_has(engine: Engine, run_id: str, type_: str) -> bool:
    return any(e["type"] == type_ for e in engine.history(run_id))


def types(engine: Engine, run_id: str) -> list[str]:
    return [e["type"] for e in engine.history(run_id)]


# -- activities and workflows ----------------------------------------------------------------


@intemporal.activity
def step(i: int, block: bool = True) -> int:
    LOG.hit(f"step {i}")
    if block and i == STOP_AT:
        STEP_REACHED.set()
        assert STEP_GO.wait(10), "the test never let step 3 finish"
    return i


@intemporal.activity
def undo(i: int) -> None:
    LOG.hit(f"undo {i}")
    intemporal.heartbeat()  # after delivery, a cancelled run's compensations run normally
    if i == UNDO_STOP_AT:
        UNDO_REACHED.set()
        assert UNDO_GO.wait(10), "the test never let the compensation finish"


@intemporal.workflow
def step_loop(n: int, block: bool = True) -> str:
    saga = intemporal.saga()
    try:
        for i in range(n):
            step(i, block)
            saga.add_compensation(undo, i)
        return "done"
    except Exception:
        saga.compensate()
        raise


@intemporal.activity
def undo_checking(i: int) -> None:
    """A compensation that looks for cancellation after its slow part."""
    LOG.hit(f"undo {i}")
    if i == UNDO_STOP_AT:
        UNDO_REACHED.set()
        assert UNDO_GO.wait(10), "the test never let the compensation finish"
    intemporal.heartbeat()


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def refuse() -> None:
    LOG.hit("refuse")
    raise ValueError("refused")


@intemporal.workflow
def steps_then_fail(n: int, checking: bool) -> str:
    with intemporal.saga() as saga:
        for i in range(n):
            step(i, False)
            saga.add_compensation(undo_checking if checking else undo, i)
        refuse()
    return "done"


@intemporal.workflow
def book_then_sleep(seconds: float) -> str:
    saga = intemporal.saga()
    try:
        saga.add_compensation(undo, step(0))
        saga.add_compensation(undo, step(1))
        intemporal.sleep(seconds)
        step(2)
        return "slept"
    except Exception:
        saga.compensate()
        raise


@intemporal.workflow
def book_then_wait(name: str) -> Any:
    with intemporal.saga() as saga:
        saga.add_compensation(undo, step(0))
        return intemporal.wait_for_signal(name)


@intemporal.activity
def long_job(limit: float) -> str:
    """Works in small slices, heartbeating between them; gives up after `limit` seconds."""
    LOG.hit("long_job started")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            intemporal.heartbeat()
        except Cancelled:
            LOG.hit("long_job saw Cancelled")
            raise
        time.sleep(0.002)
    return "finished unobserved"


@intemporal.workflow
def heartbeating(limit: float) -> str:
    return long_job(limit)


# -- cancelling a running run -------------------------------------------------------------------


def test_cancel_during_activity_loop_rolls_back_and_ends_cancelled(engine: Engine) -> None:
    # Given a run in a loop of activities, inside step 3
    handle = engine.start(step_loop, 10, run_id="loop")
    assert STEP_REACHED.wait(5)

    # When it is cancelled and step 3 then finishes
    engine.cancel("loop")
    STEP_GO.set()

    # Then the workflow gets Cancelled at its next durable operation (step 4 never runs),
    # the saga rolls back last first, and the run ends CANCELLED
    with pytest.raises(Cancelled):
        handle.result(timeout=5)
    assert LOG.order == [f"step {i}" for i in range(4)] + [f"undo {i}" for i in (3, 2, 1, 0)]
    assert engine.get_run("loop").status is RunStatus.CANCELLED
    events = engine.history("loop")
    assert events[-1]["type"] == "run_cancelled"
    delivered = events[index_of(events, "cancel_delivered")]
    assert delivered["seq"] == 5  # step 0..3 had 1..4: the next operation got it
    after = events[index_of(events, "cancel_delivered") + 1 : -1]
    assert [(e["type"], e["name"]) for e in after] == [
        ("compensation_started", "intemporal.compensate")
    ] + [("activity_completed", "undo")] * 4
    with pytest.raises(Cancelled):  # from the store too, as another process would see it
        engine.handle("loop").result(timeout=1)


def test_cancel_during_long_sleep_is_delivered_within_a_second(engine: Engine) -> None:
    # Given a run that booked two things and sleeps for 30 s (suspended, holding no thread)
    handle = engine.start(book_then_sleep, 30, run_id="sleepy")
    wait_until(lambda: engine.get_run("sleepy").status is RunStatus.WAITING, 5, "the sleep")

    # When it is cancelled
    handle.cancel()

    # Then it gets Cancelled at once (its end is journaled long before its timer would
    # fire) and rolls back
    with pytest.raises(Cancelled):
        handle.result(timeout=10)
    assert ended_before_its_timer(engine, "sleepy")
    assert LOG.order == ["step 0", "step 1", "undo 1", "undo 0"]
    assert handle.status() is RunStatus.CANCELLED
    events = engine.history("sleepy")
    timer = events[index_of(events, "timer_started")]
    assert events[index_of(events, "cancel_delivered")]["seq"] == timer["seq"]


def test_cancel_during_short_inline_sleep_is_delivered_at_once(engine: Engine) -> None:
    # Given a run in a sleep short enough to keep its thread
    handle = engine.start(book_then_sleep, 0.9, run_id="dozy")
    wait_until(lambda: history_has(engine, "dozy", "timer_started"), 5, "the sleep")

    # When it is cancelled, Then it does not sleep the rest out: its end is journaled
    # before its timer's fire time
    engine.cancel("dozy")
    with pytest.raises(Cancelled):
        handle.result(timeout=10)
    assert ended_before_its_timer(engine, "dozy")
    assert LOG.order == ["step 0", "step 1", "undo 1", "undo 0"]


def test_cancel_during_wait_for_signal(engine: Engine) -> None:
    # Given a run waiting for a signal that never comes
    handle = engine.start(book_then_wait, "approve", run_id="waiter")
    wait_until(lambda: history_has(engine, "waiter", "signal_wait"), 5, "the wait")

    # When it is cancelled
    engine.cancel("waiter")

    # Then it gets Cancelled (no signal will ever come), and the `with` saga rolls back
    with pytest.raises(Cancelled):
        handle.result(timeout=10)
    assert LOG.order == ["step 0", "undo 0"]
    assert engine.get_run("waiter").status is RunStatus.CANCELLED
    # and a signal sent now is refused: the run is finished
    with pytest.raises(intemporal.IntemporalError):
        engine.signal("waiter", "approve", "late")


def test_activity_in_flight_observes_cancel_through_heartbeat(engine: Engine) -> None:
    # Given a long activity that heartbeats (default retry policy: 3 attempts)
    handle = engine.start(heartbeating, 10.0, run_id="hb")
    wait_until(lambda: LOG["long_job started"], 5, "the activity")

    # When the run is cancelled
    engine.cancel("hb")

    # Then the activity's next heartbeat raises Cancelled (it did not work its 10 s out),
    # which is not retried
    with pytest.raises(Cancelled):
        handle.result(timeout=10)
    assert LOG["long_job saw Cancelled"] == 1
    assert LOG["long_job started"] == 1
    failed = [e for e in engine.history("hb") if e["type"] == "activity_failed"]
    assert len(failed) == 1 and failed[0]["attempts"] == 1
    assert failed[0]["error"]["type"] == "Cancelled"
    assert not history_has(engine, "hb", "attempt_failed")
    assert engine.get_run("hb").status is RunStatus.CANCELLED


def test_heartbeat_outside_a_cancelled_activity_does_nothing() -> None:
    intemporal.heartbeat()  # outside any run: a no-op


# -- delivered once ----------------------------------------------------------------------------


def test_cancel_is_delivered_once_and_compensations_run_normally(engine: Engine) -> None:
    # Given a run cancelled in its loop, now compensating (inside undo 1)
    UNDO_GO.clear()
    handle = engine.start(step_loop, 10, run_id="once")
    assert STEP_REACHED.wait(5)
    engine.cancel("once")
    STEP_GO.set()
    assert UNDO_REACHED.wait(5)

    # When it is cancelled again while compensating
    engine.cancel("once")
    handle.cancel()
    UNDO_GO.set()

    # Then every compensation still runs (their heartbeats do not raise), once each
    with pytest.raises(Cancelled):
        handle.result(timeout=5)
    assert LOG.order[4:] == ["undo 3", "undo 2", "undo 1", "undo 0"]
    assert types(engine, "once").count("cancel_delivered") == 1
    assert all(e["type"] != "activity_failed" for e in engine.history("once"))


def test_cancelled_run_resumed_from_its_journal_finishes_the_rollback(engine: Engine) -> None:
    # Given a cancelled run, and a copy of it cut short after the first compensation
    # (what a crash there leaves; the copy has no cancel request in its inbox)
    handle = engine.start(step_loop, 10, run_id="orig")
    assert STEP_REACHED.wait(5)
    engine.cancel("orig")
    STEP_GO.set()
    UNDO_GO.set()
    with pytest.raises(Cancelled):
        handle.result(timeout=5)
    events = engine.history("orig")
    clone_prefix(engine.store, "orig", "cut", index_of(events, "activity_completed", 5) + 1)
    LOG.order.clear()

    # When the copy is resumed
    with pytest.raises(Cancelled):
        engine.resume("cut").result(timeout=5)

    # Then the journal alone delivers the cancellation again at the same step, and only
    # the compensations still owed run
    assert LOG.order == ["undo 2", "undo 1", "undo 0"]
    assert engine.get_run("cut").status is RunStatus.CANCELLED
    assert types(engine, "cut").count("cancel_delivered") == 1


def test_cancel_during_a_failure_rollback_skips_no_compensation(engine: Engine) -> None:
    # Given a saga rolling back a failure, inside compensation `undo 1`
    UNDO_GO.clear()
    handle = engine.start(steps_then_fail, 3, False, run_id="midway")
    assert UNDO_REACHED.wait(5)

    # When the run is cancelled then
    engine.cancel("midway")
    UNDO_GO.set()

    # Then the cancellation reaches the next compensation's start, once, and that
    # compensation still runs; the run ends with the failure it was rolling back
    with pytest.raises(ValueError, match="refused"):
        handle.result(timeout=5)
    assert LOG.order == ["step 0", "step 1", "step 2", "refuse", "undo 2", "undo 1", "undo 0"]
    assert types(engine, "midway").count("cancel_delivered") == 1
    info = engine.get_run("midway")
    assert info.status is RunStatus.FAILED
    assert info.error is not None and "compensations failed" not in info.error
    # and the journal replays to the same end (the re-run compensation included)
    with pytest.raises(ValueError, match="refused"):
        engine.resume("midway").result(timeout=5)
    assert len(LOG.order) == 7


def test_compensation_stopped_by_heartbeat_runs_again(engine: Engine) -> None:
    # Given a saga rolling back a failure, inside a compensation that heartbeats later
    UNDO_GO.clear()
    handle = engine.start(steps_then_fail, 3, True, run_id="beat")
    assert UNDO_REACHED.wait(5)

    # When the run is cancelled, and that compensation's heartbeat sees it
    engine.cancel("beat")
    UNDO_GO.set()

    # Then the interrupted compensation runs again (cancellation is delivered once), and
    # the rest of the rollback carries on
    with pytest.raises(ValueError, match="refused"):
        handle.result(timeout=5)
    assert LOG.order[4:] == ["undo 2", "undo 1", "undo 1", "undo 0"]
    undo_1 = [e for e in engine.history("beat") if e.get("name") == "undo_checking"]
    assert [e["type"] for e in undo_1] == [
        "activity_completed",
        "activity_failed",
        "activity_completed",
        "activity_completed",
    ]
    assert undo_1[1]["error"]["type"] == "Cancelled"
    assert engine.get_run("beat").status is RunStatus.FAILED


# -- before start, after the end, unknown ----------------------------------------------------


def test_cancel_before_start_means_the_body_never_runs(store: Store) -> None:
    # Given a run recorded by a client that executes nothing
    with Engine(store, worker=False) as client:
        client.start(step_loop, 3, False, run_id="early")
        assert client.get_run("early").status is RunStatus.PENDING

        # When it is cancelled before any worker picked it up
        client.cancel("early")

    # Then a worker that resumes it (or starts the same id again) never runs its body
    with Engine(store, threads=2) as worker:
        with pytest.raises(Cancelled):
            worker.resume("early").result(timeout=5)
        with pytest.raises(Cancelled):
            worker.start(step_loop, 3, False, run_id="early").result(timeout=5)
        assert worker.recover() == []
        assert worker.get_run("early").status is RunStatus.CANCELLED
        assert types(worker, "early") == ["run_started", "run_cancelled"]
    assert LOG.total() == 0


def test_cancel_before_start_then_idempotent_start_runs_nothing(store: Store) -> None:
    # Given a pending run, cancelled
    with Engine(store, worker=False) as client:
        client.start(step_loop, 3, False, run_id="early2")
        client.cancel("early2")

    # When a worker starts the same id (instead of resuming it)
    with Engine(store, threads=2) as worker:
        handle = worker.start(step_loop, 3, False, run_id="early2")

        # Then the run is cancelled without running its body
        with pytest.raises(Cancelled):
            handle.result(timeout=5)
    assert LOG.total() == 0


@intemporal.workflow
def divide_by_zero() -> float:
    return intemporal.stub(lambda: 1 / 0, retry=intemporal.RetryPolicy(max_attempts=1))()


def test_cancelling_a_finished_run_changes_nothing(engine: Engine) -> None:
    # Given a completed, a failed and a cancelled run
    engine.run(step_loop, 2, False, run_id="ok")
    with pytest.raises(ZeroDivisionError):
        engine.run(divide_by_zero)
    failed = engine.list_runs(status="failed")[0].run_id
    cancelled = engine.start(book_then_sleep, 30, run_id="gone")
    wait_until(lambda: engine.get_run("gone").status is RunStatus.WAITING, 5, "the sleep")
    cancelled.cancel()
    with pytest.raises(Cancelled):
        cancelled.result(timeout=2)

    for run_id, status in (
        ("ok", RunStatus.COMPLETED),
        (failed, RunStatus.FAILED),
        ("gone", RunStatus.CANCELLED),
    ):
        before = engine.history(run_id)
        calls = LOG.total()

        # When it is cancelled (twice, through the engine and a handle)
        engine.cancel(run_id)
        engine.handle(run_id).cancel()

        # Then its status, journal and side effects are unchanged
        assert engine.get_run(run_id).status is status
        assert len(engine.history(run_id)) == len(before)
        assert engine.history(run_id) == before
        assert LOG.total() == calls
    assert engine.run(step_loop, 2, False, run_id="ok") == "done"  # still its result


def test_cancelling_an_unknown_run_raises_run_not_found(engine: Engine) -> None:
    with pytest.raises(RunNotFound) as caught:
        engine.cancel("no-such-run")
    assert "no-such-run" in str(caught.value)
    with pytest.raises(RunNotFound):
        engine.handle("no-such-run")


def test_cancelled_escaping_without_a_saga_ends_cancelled(engine: Engine) -> None:
    # Given a plain workflow with no saga, cancelled in its loop
    @intemporal.workflow(name="plain-loop")
    def plain_loop() -> int:
        return sum(step(i) for i in range(10))

    handle = engine.start(plain_loop, run_id="plain")
    assert STEP_REACHED.wait(5)
    engine.cancel("plain")
    STEP_GO.set()

    # Then Cancelled escapes and the run ends CANCELLED, not FAILED
    with pytest.raises(Cancelled):
        handle.result(timeout=5)
    assert engine.get_run("plain").status is RunStatus.CANCELLED
    assert LOG.order == [f"step {i}" for i in range(4)]


def test_a_workflow_may_handle_cancellation_and_complete(engine: Engine) -> None:
    # Given a workflow that treats cancellation as "stop early"
    @intemporal.workflow(name="graceful")
    def graceful() -> str:
        try:
            intemporal.sleep(30)
        except Cancelled:
            return f"stopped after {step(7, False)}"  # durable operations work afterwards
        return "slept"

    handle = engine.start(graceful, run_id="graceful")
    wait_until(lambda: engine.get_run("graceful").status is RunStatus.WAITING, 5, "the sleep")

    # When it is cancelled, Then it completes with what it chose to return
    handle.cancel()
    assert handle.result(timeout=2) == "stopped after 7"
    assert engine.get_run("graceful").status is RunStatus.COMPLETED


# -- from another process ---------------------------------------------------------------------

CANCEL_SNIPPET = (
    "import sys, intemporal\n"
    "with intemporal.Engine(sys.argv[1], worker=False) as engine:\n"
    "    engine.cancel(sys.argv[2])\n"
)


def cancel_elsewhere(*argv: str) -> None:
    """Run `argv` in another process and check it succeeded."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_cancel_from_another_process_reaches_a_sleeping_run(tmp_path: Path) -> None:
    # Given a run sleeping in this process, over a file store
    store = tmp_path / "store"
    with Engine(FileStore(store), threads=2) as engine:
        handle = engine.start(book_then_sleep, 30, run_id="far")
        wait_until(lambda: engine.get_run("far").status is RunStatus.WAITING, 5, "the sleep")

        # When another process cancels it
        cancel_elsewhere("-c", CANCEL_SNIPPET, str(store), "far")

        # Then the store's wake-up brings it Cancelled (not its timer, 30 s on), and it
        # rolls back
        with pytest.raises(Cancelled):
            handle.result(timeout=10)
        assert ended_before_its_timer(engine, "far")
        assert LOG.order == ["step 0", "step 1", "undo 1", "undo 0"]
        assert engine.get_run("far").status is RunStatus.CANCELLED


@intemporal.activity
def tick(i: int) -> int:
    LOG.hit(f"tick {i}")
    time.sleep(0.01)
    return i


@intemporal.workflow
def paced_loop(limit: int) -> str:
    with intemporal.saga() as saga:
        for i in range(limit):
            saga.add_compensation(undo, tick(i))
    return "done"


def test_cancel_from_another_process_reaches_an_activity_loop(tmp_path: Path) -> None:
    # Given a run executing a loop of 10 ms activities in this process (5 s in all)
    store = tmp_path / "store"
    with Engine(FileStore(store), threads=2) as engine:
        handle = engine.start(paced_loop, 500, run_id="far-loop")
        wait_until(lambda: LOG["tick 2"], 5, "the loop")

        # When another process cancels it
        cancel_elsewhere("-c", CANCEL_SNIPPET, str(store), "far-loop")

        # Then the loop stops at its next activity, long before its 500th, and rolls back
        with pytest.raises(Cancelled):
            handle.result(timeout=10)
        ticks = [c for c in LOG.order if c.startswith("tick")]
        undos = [c for c in LOG.order if c.startswith("undo")]
        assert 3 <= len(ticks) < 500
        assert ticks == [f"tick {i}" for i in range(len(ticks))]
        assert undos == [f"undo {i}" for i in reversed(range(len(ticks)))]
        assert LOG.order == ticks + undos
        assert engine.get_run("far-loop").status is RunStatus.CANCELLED


@pytest.mark.skipif(
    importlib.util.find_spec("intemporal.cli") is None, reason="no command line yet"
)
def test_cancel_from_the_command_line(tmp_path: Path) -> None:
    # Given a run sleeping in this process
    store = tmp_path / "store"
    with Engine(FileStore(store), threads=2) as engine:
        handle = engine.start(book_then_sleep, 30, run_id="cli-run")
        wait_until(lambda: engine.get_run("cli-run").status is RunStatus.WAITING, 5, "the sleep")

        # When `intemporal --store DIR cancel RUN` runs in another process
        main = "import sys; from intemporal.cli import main; sys.exit(main())"
        cancel_elsewhere("-c", main, "--store", str(store), "cancel", "cli-run")

        # Then the run is cancelled at once, not when its 30 s timer fires
        with pytest.raises(Cancelled):
            handle.result(timeout=10)
        assert ended_before_its_timer(engine, "cli-run")


# -- the engine's control flow is not an Exception ----------------------------------------------


@intemporal.workflow
def swallow_everything(seconds: float) -> str:
    try:
        step(0, False)
        intemporal.sleep(seconds)
        step(1, False)
        return "woke"
    except Exception as exc:  # the classic mistake: it must not eat a suspension
        LOG.hit(f"swallowed {type(exc).__name__}")
        return "swallowed"
    except BaseException as exc:
        SEEN.append(intemporal.is_suspension(exc))
        raise


def test_except_exception_does_not_swallow_a_suspension(engine: Engine) -> None:
    # Given a workflow with `except Exception:` around a long sleep
    handle = engine.start(swallow_everything, 30, run_id="greedy")

    # When it suspends
    wait_until(lambda: engine.get_run("greedy").status is RunStatus.WAITING, 5, "the sleep")

    # Then the suspension went past `except Exception`; `except BaseException` saw it as one
    assert not any(k.startswith("swallowed") for k in LOG.order)
    assert SEEN and all(SEEN)
    assert history_has(engine, "greedy", "run_suspended")

    # and a cancellation is an ordinary Exception the workflow may catch
    handle.cancel()
    assert handle.result(timeout=2) == "swallowed"
    assert LOG.order == ["step 0", "swallowed Cancelled"]


def test_except_exception_does_not_swallow_shutdown(store: Store) -> None:
    # Given a workflow with `except Exception:` in a short sleep that keeps its thread
    engine = Engine(store, threads=2)
    engine.start(swallow_everything, 0.95, run_id="closing")
    wait_until(lambda: history_has(engine, "closing", "timer_started"), 5, "the sleep")

    # When the engine shuts down while the workflow waits
    engine.close()

    # Then the workflow stopped at once (close() returned before its timer's fire time),
    # unfinished: nothing was swallowed
    (timer,) = [e for e in engine.history("closing") if e["type"] == "timer_started"]
    assert time.time() < timer["fire_at"]
    assert SEEN == [True]
    assert LOG.order == ["step 0"]
    assert not engine.get_run("closing").status.finished

    # and a new engine resumes it to its normal end, without repeating step 0
    with Engine(store, threads=2) as again:
        assert again.resume("closing").result(timeout=5) == "woke"
    assert LOG.order == ["step 0", "step 1"]


def test_except_exception_does_not_swallow_a_suspension_across_engines(store: Store) -> None:
    # Given a workflow with `except Exception:` suspended in a sleep, and its engine closed
    engine = Engine(store, threads=2)
    engine.start(swallow_everything, 1.1, run_id="later")
    wait_until(lambda: engine.get_run("later").status is RunStatus.WAITING, 5, "the sleep")
    engine.close()
    assert engine.get_run("later").status is RunStatus.WAITING

    # When a new engine resumes it
    with Engine(store, threads=2) as again:
        result = again.resume("later").result(timeout=5)

    # Then it sleeps out the rest and finishes normally
    assert result == "woke"
    assert LOG.order == ["step 0", "step 1"]


def test_is_suspension_tells_control_flow_apart() -> None:
    from intemporal.errors import Suspend, _Shutdown, _Wait

    assert intemporal.is_suspension(_Wait("timer", None))
    assert intemporal.is_suspension(_Shutdown("closing"))
    assert intemporal.is_suspension(Suspend("x"))
    assert not intemporal.is_suspension(Cancelled("x"))
    assert not intemporal.is_suspension(ValueError("x"))
    assert not intemporal.is_suspension(KeyboardInterrupt())
    assert issubclass(Cancelled, Exception)
    assert not issubclass(Suspend, Exception)
