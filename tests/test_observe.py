"""Observers (`intemporal.Observer`), the shipped `LoggingObserver`, and the crash marker."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_on
from process_helpers import journal_events, run_and_kill, wait_until

import intemporal
from intemporal import Engine, FileStore, MemoryStore, RetryPolicy, RunStatus
from intemporal import observe as ob


class Recorder(intemporal.Observer):
    """Keeps every record it is given, in order, whatever the hook."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self._mutex = threading.Lock()

    def _keep(self, rec: Any) -> None:
        with self._mutex:
            self.records.append(rec)

    on_run_started = on_run_resumed = on_run_suspended = on_run_finished = _keep
    on_activity_started = on_attempt_failed = on_activity_finished = _keep
    on_signal_received = on_child_started = on_compensation = _keep

    def of(self, kind: type) -> list[Any]:
        with self._mutex:
            return [r for r in self.records if isinstance(r, kind)]


_flaky_calls: dict[str, int] = {}


@intemporal.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.01, backoff=1.0))
def ob_flaky(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] <= 2:
        raise ConnectionError(f"flaky {_flaky_calls[key]}")
    return key.upper()


@intemporal.activity
def ob_step(x: int) -> int:
    return x + 1


@intemporal.workflow
def ob_child(x: int) -> int:
    return ob_step(x)


@intemporal.workflow
def ob_flow(key: str) -> int:
    ob_flaky(key)
    n = ob_step(1)
    got = intemporal.wait_for_signal("go")  # suspends: the run executes again, replaying
    with intemporal.saga() as saga:
        saga.add_compensation(ob_step, 0)
        saga.compensate()
    return ob_child(n + got)


def test_observer_sees_runs_steps_signals_children_and_replays() -> None:
    # Given an engine with an observer
    rec = Recorder()
    with Engine(store=MemoryStore(), observers=[rec]) as engine:
        # When a run retries an activity twice, waits for a signal, then finishes
        handle = engine.start(ob_flow, "a1", run_id="obs")
        wait_until(lambda: handle.status() is RunStatus.WAITING, what="the run waits")
        handle.signal("go", 10)
        assert handle.result(timeout=10) == 13

    # Then the run's life is reported in order, replays marked as such
    (started,) = [r for r in rec.of(ob.RunStarted) if r.run_id == "obs"]
    assert (started.run_id, started.workflow, started.replaying) == ("obs", "ob_flow", False)
    (suspended,) = [r for r in rec.of(ob.RunSuspended) if r.run_id == "obs"]
    assert suspended.until is None and "signal" in suspended.reason
    (resumed,) = [r for r in rec.of(ob.RunResumed) if r.run_id == "obs"]
    assert resumed.after == "waiting" and resumed.replaying
    fails = rec.of(ob.AttemptFailed)
    assert [(f.attempt, str(f.error), f.retry_in) for f in fails] == [
        (1, "flaky 1", 0.01),
        (2, "flaky 2", 0.01),
    ]
    flaky = [r for r in rec.of(ob.ActivityFinished) if r.activity.endswith("ob_flaky")]
    assert [(f.attempts, f.error, f.replaying) for f in flaky] == [
        (3, None, False),
        (3, None, True),
    ]
    assert [s.replaying for s in rec.of(ob.SignalReceived)] == [False]
    assert [(c.child_id, c.workflow) for c in rec.of(ob.ChildStarted)] == [("obs/6", "ob_child")]
    assert [c.compensations for c in rec.of(ob.Compensation)] == [(ob_step.name,)]
    finished = [r for r in rec.of(ob.RunFinished) if r.run_id == "obs"]
    assert [(f.status, f.error) for f in finished] == [(RunStatus.COMPLETED, None)]
    assert {r.run_id for r in rec.of(ob.RunFinished)} == {"obs", "obs/6"}


class Broken(intemporal.Observer):
    def on_activity_finished(self, rec: ob.ActivityFinished) -> None:
        raise RuntimeError("observer bug")

    def on_run_finished(self, rec: ob.RunFinished) -> None:
        raise RuntimeError("observer bug")


@intemporal.workflow
def ob_plain(x: int) -> int:
    return ob_step(x) + ob_step(x)


def test_an_observer_that_raises_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    with caplog.at_level(logging.ERROR, logger="intemporal.observe"):
        with Engine(store=MemoryStore(), observers=[Broken(), rec]) as engine:
            assert engine.run(ob_plain, 1, run_id="b") == 4
            assert engine.get_run("b").status is RunStatus.COMPLETED
    # the observer after the broken one still got every record
    assert len(rec.of(ob.ActivityFinished)) == 2 and len(rec.of(ob.RunFinished)) == 1
    bugs = [r for r in caplog.records if "observer bug" in (r.exc_text or "")]
    assert len(bugs) == 3 and all("raised in on_" in r.getMessage() for r in bugs)


class Carrier(Recorder):
    """Journals a header with each new run; keeps every record it is given."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    on_run_stopped = on_timer_started = on_cancelled = Recorder._keep

    def headers(self, rec: ob.RunCreated) -> dict[str, str]:
        return {self.tag: f"{rec.workflow} of {rec.parent}"}


class BrokenHeaders(intemporal.Observer):
    def headers(self, rec: ob.RunCreated) -> dict[str, str]:
        raise RuntimeError("observer bug")


@intemporal.workflow
def ob_sleepy(x: int) -> int:
    intemporal.sleep(3600)
    return ob_child(x)


def test_headers_are_journaled_and_handed_back_stops_timers_and_cancels_are_told() -> None:
    # Given observers adding headers (one of them broken)
    a, b = Carrier("a"), Carrier("b")
    with Engine(store=MemoryStore(), observers=[a, BrokenHeaders(), b]) as engine:
        # When a run suspends in a long sleep and is cancelled there
        handle = engine.start(ob_sleepy, 1, run_id="h")
        wait_until(lambda: handle.status() is RunStatus.WAITING, what="the run waits")
        engine.cancel("h")
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        # Then the merged headers are in its first event, and each execution got them
        assert engine.history("h")[0]["headers"] == {
            "a": "ob_sleepy of None",
            "b": "ob_sleepy of None",
        }
    given = [r for r in a.records if isinstance(r, ob.RunStarted | ob.RunResumed)]
    assert [type(r).__name__ for r in given] == ["RunStarted", "RunResumed"]
    assert all(r.headers == {"a": "ob_sleepy of None", "b": "ob_sleepy of None"} for r in given)
    # each execution's end is told once; the timer and the cancellation, replays marked
    kinds = (ob.RunStopped, ob.TimerStarted, ob.CancelDelivered)
    told = [(type(r).__name__, r.replaying) for r in a.records if isinstance(r, kinds)]
    assert told == [
        ("TimerStarted", False),
        ("RunStopped", False),
        ("TimerStarted", True),
        ("CancelDelivered", False),
        ("RunStopped", False),
    ]


def test_logging_observer_reports_runs_and_each_failed_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given no observer at all: the logging one is always there
    with caplog.at_level(logging.INFO, logger="intemporal"):
        with Engine(store=MemoryStore()) as engine:
            assert engine.run(ob_plain, 2, run_id="quiet") == 6
            handle = engine.start(ob_flow, "l1", run_id="loud")
            wait_until(lambda: handle.status() is RunStatus.WAITING, what="the run waits")
            handle.signal("go", 1)
            handle.result(timeout=10)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "intemporal"]
    assert (logging.INFO, "run 'quiet' (ob_plain) started") in lines
    assert any(
        lv == logging.INFO and m.startswith("run 'quiet' (ob_plain) completed in")
        for lv, m in lines
    )
    warnings = [m for lv, m in lines if lv == logging.WARNING]
    assert len(warnings) == 2  # the two failed attempts, each with its retry delay
    assert "failed on attempt 1: ConnectionError: flaky 1; retrying in 0.01 s" in warnings[0]
    assert "step 1 of run 'loud'" in warnings[0] and "attempt 2" in warnings[1]
    assert not any("crash" in m for _, m in lines)  # resuming after waiting is no crash


CRASH_SCRIPT = """
@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step(i):
    record("step", i)
    if i == 1:
        hang()   # killed here, in the second step
    return i


@intemporal.workflow(name=WF_NAME)
def flow():
    return [step(i) for i in range(3)]


WORKFLOW = flow
"""


def test_a_crash_is_marked_in_the_journal_logged_and_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a run whose process was killed in its second step
    crash = run_and_kill(tmp_path, CRASH_SCRIPT, lines=2)
    before = journal_events(crash.store, crash.run_id)
    assert [e["type"] for e in before] == ["run_started", "activity_completed"]

    # When another process resumes it
    rec = Recorder()
    with caplog.at_level(logging.INFO, logger="intemporal"):
        with Engine(FileStore(crash.store), observers=[rec]) as engine:
            assert engine.resume(crash.run_id).result(timeout=10) == [0, 1, 2]

    # Then the journal says so, right before the resume's first step
    kinds = [e["type"] for e in journal_events(crash.store, crash.run_id)]
    assert kinds[:3] == ["run_started", "activity_completed", "run_recovered"]
    assert kinds.count("run_recovered") == 1
    # And the observers were told, and the logging observer reported it at INFO
    assert [r.after for r in rec.of(ob.RunResumed)] == ["crash"]
    crashed = [r for r in caplog.records if "resumed after a crash" in r.getMessage()]
    assert len(crashed) == 1 and crashed[0].levelno == logging.INFO
    # And `intemporal show` marks it
    shown = cli_on(crash.store)("show", crash.run_id)
    assert shown.exit_code == 0, shown.output
    assert "run_recovered" in shown.stdout and "resumed after a crash" in shown.stdout
