"""Durable timers: `intemporal.sleep` journals its fire time once and holds no thread while long."""

from __future__ import annotations

import time
from pathlib import Path

from process_helpers import journal_events, run_and_kill, wait_until

import intemporal
from intemporal import Engine, FileStore, RunStatus, Store


@intemporal.workflow
def tmr_nap(seconds: float) -> str:
    intemporal.sleep(seconds)
    return "rested"


@intemporal.workflow
def tmr_quick() -> str:
    return "quick"


def timers(engine: Engine, run_id: str) -> list[dict]:
    return [e for e in engine.history(run_id) if e["type"] == "timer_started"]


def test_short_sleep(engine: Engine) -> None:
    # When a workflow sleeps 0.2 s
    started = time.time()
    assert engine.run(tmr_nap, 0.2, run_id="short-nap") == "rested"
    done = time.time()

    # Then it waited that long, on its thread, with the fire time journaled
    assert done - started >= 0.2
    (timer,) = timers(engine, "short-nap")
    assert timer["seconds"] == 0.2
    assert done >= timer["fire_at"]
    assert "run_suspended" not in [e["type"] for e in engine.history("short-nap")]


def test_sleep_outside_a_workflow_just_sleeps() -> None:
    started = time.monotonic()
    intemporal.sleep(0.05)
    assert time.monotonic() - started >= 0.05


def test_long_sleep_suspends_the_run_and_frees_its_thread(store: Store) -> None:
    # Given an engine with a single thread and a run sleeping 2 s
    with Engine(store, threads=1) as engine:
        handle = engine.start(tmr_nap, 2.0, run_id="long-nap")
        wait_until(
            lambda: engine.get_run("long-nap").status is RunStatus.WAITING,
            timeout=5,
            what="the sleeping run to be waiting",
        )

        # Then it is parked, not executing, and the only thread is free for other runs
        nap = engine.get_run("long-nap")
        assert nap.status is RunStatus.WAITING and not nap.orphaned  # parked by this engine
        # its one pool thread runs another run well before the nap is due
        assert engine.start(tmr_quick).result(timeout=1.5) == "quick"
        assert engine.get_run("long-nap").status is RunStatus.WAITING

        # And when the timer fires, the run completes
        assert handle.result(timeout=10) == "rested"
        (timer,) = timers(engine, "long-nap")
        completed = engine.history("long-nap")[-1]
        assert completed["type"] == "run_completed"
        assert timer["fire_at"] <= completed["ts"] < timer["fire_at"] + 1.0


SLEEPER = """
@intemporal.workflow(name=WF_NAME)
def sleeper():
    record("before the sleep")
    intemporal.sleep(3)
    return "woke"

WORKFLOW = sleeper
"""


def test_sleep_survives_a_sigkill_and_waits_only_the_rest(tmp_path: Path) -> None:
    # Given a child process whose run sleeps 3 s, killed once the timer is journaled
    def timer_journaled(store: Path, run_id: str) -> bool:
        return any(e["type"] == "timer_started" for e in journal_events(store, run_id))

    crash = run_and_kill(tmp_path, SLEEPER, lines=1, ready=timer_journaled)
    (timer,) = [e for e in crash.events() if e["type"] == "timer_started"]
    started = crash.events()[0]["ts"]
    assert timer["fire_at"] >= started + 3

    # ...and left alone for a while, so "the remaining time" and "the whole" differ
    wait_until(lambda: time.time() >= timer["ts"] + 1.0, what="a second to pass")

    # When it is resumed here
    with Engine(FileStore(crash.store), threads=2) as engine:
        resumed = time.time()
        handle = engine.resume(crash.run_id)
        assert handle.result(timeout=10) == "woke"
        done = time.time()

        # Then only the remaining time was waited: the journaled fire time, not a new one
        assert done >= timer["fire_at"]
        assert done < started + 3 + 1.5
        assert done < resumed + 3 - 0.5
        assert len(timers(engine, crash.run_id)) == 1


def test_close_leaves_a_sleeping_run_waiting_and_recover_finishes_it(store: Store) -> None:
    # Given a run sleeping in an engine that is closed
    engine = Engine(store, threads=2)
    engine.start(tmr_nap, 1.5, run_id="nap-across-engines")
    wait_until(
        lambda: engine.get_run("nap-across-engines").status is RunStatus.WAITING,
        timeout=5,
        what="the sleeping run to be waiting",
    )
    engine.close()

    # Then closing did not wait for the timer (it returned before the fire time), and the
    # run stays waiting
    (timer,) = timers(engine, "nap-across-engines")
    assert time.time() < timer["fire_at"]
    assert engine.get_run("nap-across-engines").status is RunStatus.WAITING

    # When a new engine recovers the store
    with Engine(store, threads=2) as fresh:
        handles = fresh.recover()

        # Then it finishes the run, at the journaled fire time
        assert [h.run_id for h in handles] == ["nap-across-engines"]
        assert handles[0].result(timeout=10) == "rested"
        (timer,) = timers(fresh, "nap-across-engines")
        assert time.time() >= timer["fire_at"]
