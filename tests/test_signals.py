"""Signals: `wait_for_signal` in a workflow, `engine.signal` / `RunHandle.signal` / the CLI outside.

A waiting run holds no thread: it is suspended and replayed when its signal arrives.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import (
    Engine,
    FileStore,
    IntemporalError,
    RunNotFound,
    RunStatus,
    SignalTimeout,
    Store,
)

GATES: dict[str, threading.Event] = {}  # per-test gates an activity blocks on
CONTINUED: dict[str, float] = {}  # run id -> time.monotonic() when the wait returned


@intemporal.activity
def sig_gate(key: str) -> None:
    """Block until the test opens gate `key`: pins the run before its wait."""
    assert GATES[key].wait(10), f"gate {key} never opened"


@intemporal.workflow
def sig_wait_one(name: str) -> Any:
    return intemporal.wait_for_signal(name)


@intemporal.workflow
def sig_gated_wait(key: str, name: str) -> Any:
    sig_gate(key)
    return intemporal.wait_for_signal(name)


@intemporal.workflow
def sig_wait_n(name: str, n: int) -> list[Any]:
    return [intemporal.wait_for_signal(name) for _ in range(n)]


@intemporal.workflow
def sig_wait_with_timeout(name: str, timeout: float) -> str:
    try:
        got = intemporal.wait_for_signal(name, timeout=timeout)
    except SignalTimeout as exc:
        assert isinstance(exc, TimeoutError)
        return f"timed out: {exc}"
    return f"got {got}"


@intemporal.workflow
def sig_timestamped(name: str) -> Any:
    payload = intemporal.wait_for_signal(name)
    CONTINUED[intemporal.run_id()] = time.monotonic()
    return payload


def wait_for_status(engine: Engine, run_id: str, status: RunStatus, timeout: float = 5) -> None:
    wait_until(
        lambda: engine.get_run(run_id).status is status,
        timeout=timeout,
        what=f"run {run_id} to be {status.value}",
    )


# -- before and after the wait --------------------------------------------------------------------


def test_signal_sent_after_the_wait_wakes_the_run(engine: Engine) -> None:
    # Given a run waiting for "approve" (suspended: no thread)
    handle = engine.start(sig_wait_one, "approve", run_id="after-wait")
    wait_for_status(engine, "after-wait", RunStatus.WAITING)

    # When the signal comes
    engine.signal("after-wait", "approve", {"user": "alice"})

    # Then the run continues with its payload
    assert handle.result(timeout=5) == {"user": "alice"}
    types = [e["type"] for e in engine.history("after-wait")]
    assert types.count("signal_wait") == 1
    assert types.count("signal_received") == 1
    assert "run_suspended" in types


def test_signal_sent_before_the_wait_is_queued(engine: Engine) -> None:
    # Given a run held in an activity before its wait
    GATES["before"] = threading.Event()
    handle = engine.start(sig_gated_wait, "before", "approve", run_id="before-wait")
    wait_until(
        lambda: engine.get_run("before-wait").status is RunStatus.RUNNING, what="the run executing"
    )

    # When the signal comes first, and only then the run reaches its wait
    engine.signal("before-wait", "approve", "early")
    GATES["before"].set()

    # Then the wait returns the queued signal without suspending
    assert handle.result(timeout=5) == "early"
    types = [e["type"] for e in engine.history("before-wait")]
    assert "signal_wait" not in types
    assert "run_suspended" not in types


def test_signal_sent_before_the_run_executes(store: Store) -> None:
    # Given a run recorded by a client that executes nothing
    client = Engine(store, worker=False)
    client.start(sig_wait_one, "approve", run_id="pending-run")
    assert client.get_run("pending-run").status is RunStatus.PENDING

    # When it is signalled, then executed by a worker
    client.signal("pending-run", "approve", 42)
    with Engine(store, threads=2) as worker:
        handle = worker.resume("pending-run")

        # Then the queued signal is there at its first wait
        assert handle.result(timeout=5) == 42


def test_run_handle_signal(engine: Engine) -> None:
    handle = engine.start(sig_wait_one, "go", run_id="handle-signal")
    wait_for_status(engine, "handle-signal", RunStatus.WAITING)

    handle.signal("go", [1, 2, 3])

    assert handle.result(timeout=5) == [1, 2, 3]


def test_signals_of_other_names_do_not_wake_the_wait(engine: Engine) -> None:
    handle = engine.start(sig_wait_n, "mine", 1, run_id="other-names")
    wait_for_status(engine, "other-names", RunStatus.WAITING)

    engine.signal("other-names", "theirs", "not for me")
    engine.signal("other-names", "mine", "for me")

    assert handle.result(timeout=5) == ["for me"]


# -- FIFO per name, duplicates ---------------------------------------------------------------------


def test_signals_sent_before_the_waits_are_consumed_fifo(engine: Engine) -> None:
    # Given three signals queued before a workflow that waits three times
    GATES["fifo"] = threading.Event()
    handle = engine.start(sig_gated_wait_three, "fifo", run_id="fifo-queued")
    wait_until(
        lambda: engine.get_run("fifo-queued").status is RunStatus.RUNNING, what="the run executing"
    )
    for i in (1, 2, 3):
        engine.signal("fifo-queued", "step", i)
    GATES["fifo"].set()

    # Then each wait takes the oldest one
    assert handle.result(timeout=5) == [1, 2, 3]


@intemporal.workflow
def sig_gated_wait_three(key: str) -> list[Any]:
    sig_gate(key)
    return [intemporal.wait_for_signal("step") for _ in range(3)]


def test_signals_sent_while_waiting_are_consumed_fifo(engine: Engine) -> None:
    # Given a run waiting for the first of three signals
    handle = engine.start(sig_wait_n, "step", 3, run_id="fifo-waiting")
    wait_for_status(engine, "fifo-waiting", RunStatus.WAITING)

    # When three come in a burst (the run wakes, replays and waits again meanwhile)
    for i in ("a", "b", "c"):
        engine.signal("fifo-waiting", "step", i)

    # Then they are consumed in order, one per wait
    assert handle.result(timeout=5) == ["a", "b", "c"]
    received = [e for e in engine.history("fifo-waiting") if e["type"] == "signal_received"]
    assert [e["seq"] for e in received] == [1, 2, 3]


def test_duplicate_signal_id_is_delivered_once(engine: Engine) -> None:
    # Given a run that waits for two signals
    handle = engine.start(sig_wait_n, "pay", 2, run_id="dupes")
    wait_for_status(engine, "dupes", RunStatus.WAITING)

    # When the same signal id comes twice (a retried webhook), then another
    engine.signal("dupes", "pay", "first", signal_id="hook-1")
    engine.signal("dupes", "pay", "first again", signal_id="hook-1")
    engine.signal("dupes", "pay", "second", signal_id="hook-2")

    # Then the duplicate is ignored
    assert handle.result(timeout=5) == ["first", "second"]


def test_signals_sent_through_the_store_without_an_id_are_each_delivered(engine: Engine) -> None:
    # Given a run waiting for two signals
    handle = engine.start(sig_wait_n, "raw", 2, run_id="raw-sends")
    wait_for_status(engine, "raw-sends", RunStatus.WAITING)

    # When two signals with no signal_id are written straight into the store's inbox
    for value in ("one", "two"):
        engine.store.send("raw-sends", {"type": "signal", "name": "raw", "payload": value})
        engine.poke("raw-sends")

    # Then they are two signals, not one sent twice
    assert handle.result(timeout=5) == ["one", "two"]
    received = [e for e in engine.history("raw-sends") if e["type"] == "signal_received"]
    assert len({e["signal_id"] for e in received}) == 2


def test_duplicate_signal_id_after_it_was_consumed_is_ignored(engine: Engine) -> None:
    # Given a run that consumed signal "hook-1" and waits for another
    handle = engine.start(sig_wait_n, "pay", 2, run_id="dupes-later")
    wait_for_status(engine, "dupes-later", RunStatus.WAITING)
    engine.signal("dupes-later", "pay", "first", signal_id="hook-1")
    wait_until(
        lambda: any(e["type"] == "signal_received" for e in engine.history("dupes-later")),
        what="the first signal consumed",
    )
    wait_for_status(engine, "dupes-later", RunStatus.WAITING)

    # When "hook-1" is sent again, then "hook-2"
    engine.signal("dupes-later", "pay", "first again", signal_id="hook-1")
    engine.signal("dupes-later", "pay", "second", signal_id="hook-2")

    # Then the replayed run does not take the duplicate
    assert handle.result(timeout=5) == ["first", "second"]


# -- timeouts ------------------------------------------------------------------------------------


def test_wait_for_signal_timeout_raises_signal_timeout(engine: Engine) -> None:
    started = time.monotonic()
    result = engine.run(sig_wait_with_timeout, "approve", 0.3, run_id="short-timeout")
    elapsed = time.monotonic() - started

    assert result.startswith("timed out")
    assert 0.3 <= elapsed < 3
    types = [e["type"] for e in engine.history("short-timeout")]
    assert "signal_timeout" in types


def test_wait_for_signal_timeout_of_a_suspended_wait(engine: Engine) -> None:
    # Given a wait long enough to suspend the run
    handle = engine.start(sig_wait_with_timeout, "approve", 1.2, run_id="long-timeout")
    wait_for_status(engine, "long-timeout", RunStatus.WAITING)

    # Then its deadline wakes it and the workflow sees SignalTimeout
    assert handle.result(timeout=5).startswith("timed out")


def test_signal_within_the_timeout_wins(engine: Engine) -> None:
    handle = engine.start(sig_wait_with_timeout, "approve", 30.0, run_id="in-time")
    wait_for_status(engine, "in-time", RunStatus.WAITING)

    engine.signal("in-time", "approve", "yes")

    assert handle.result(timeout=5) == "got yes"


def test_signal_wait_deadline_survives_a_new_engine(store: Store) -> None:
    # Given a run waiting with a timeout, in an engine that is closed
    engine = Engine(store, threads=2)
    engine.start(sig_wait_with_timeout, "approve", 1.5, run_id="deadline-kept")
    wait_for_status(engine, "deadline-kept", RunStatus.WAITING)
    engine.close()
    (wait,) = [e for e in engine.history("deadline-kept") if e["type"] == "signal_wait"]

    # When another engine recovers it
    with Engine(store, threads=2) as fresh:
        (handle,) = fresh.recover()

        # Then it times out at the journaled deadline, not a new one
        assert handle.result(timeout=5).startswith("timed out")
        timed_out = fresh.history("deadline-kept")[-2]
        assert timed_out["type"] == "signal_timeout"
        assert wait["deadline"] <= timed_out["ts"] < wait["deadline"] + 1.0


def test_signal_payloads_that_json_cannot_hold(engine: Engine) -> None:
    handle = engine.start(sig_wait_one, "go", run_id="rich-payload")
    wait_for_status(engine, "rich-payload", RunStatus.WAITING)

    engine.signal("rich-payload", "go", {"ids": {1, 2}, "pair": (3, 4)})

    assert handle.result(timeout=5) == {"ids": {1, 2}, "pair": (3, 4)}


def test_signal_timeout_is_a_timeout_error() -> None:
    assert issubclass(SignalTimeout, TimeoutError)
    assert issubclass(SignalTimeout, IntemporalError)


# -- refused signals --------------------------------------------------------------------------------


def test_signal_to_an_unknown_run_raises_run_not_found(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        engine.signal("no-such-run", "approve", 1)


def test_signal_to_a_finished_run_is_refused(engine: Engine) -> None:
    # Given a completed run
    handle = engine.start(sig_wait_one, "go", run_id="finished")
    wait_for_status(engine, "finished", RunStatus.WAITING)
    handle.signal("go", 1)
    assert handle.result(timeout=5) == 1

    # When it is signalled again, then it refuses with a clear library error
    with pytest.raises(IntemporalError, match=r"is completed\b.*no more signals") as info:
        engine.signal("finished", "go", 2)
    assert not isinstance(info.value, RunNotFound)
    assert "signal" in str(info.value)


# -- latency and scale -----------------------------------------------------------------------------


def test_same_process_signal_wakes_the_run_quickly(engine: Engine) -> None:
    handle = engine.start(sig_timestamped, "ping", run_id="latency")
    wait_for_status(engine, "latency", RunStatus.WAITING)

    sent = time.monotonic()
    engine.signal("latency", "ping", "pong")

    assert handle.result(timeout=5) == "pong"
    assert CONTINUED["latency"] - sent < 1.0  # generous: the 50 ms p50 is for the benchmark


@intemporal.workflow
def sig_many(i: int) -> list[Any]:
    return [i, intemporal.wait_for_signal("go")]


def test_many_waiting_runs_hold_no_threads(store: Store) -> None:
    # Given an engine with two threads and 200 runs, all waiting for a signal
    n = 200
    baseline = threading.active_count()
    peak = baseline
    with Engine(store, threads=2) as engine:
        handles = [engine.start(sig_many, i, run_id=f"many-{i}") for i in range(n)]
        peak = max(peak, threading.active_count())

        def all_waiting() -> bool:
            nonlocal peak
            peak = max(peak, threading.active_count())
            return all(engine.get_run(h.run_id).status is RunStatus.WAITING for h in handles)

        wait_until(all_waiting, timeout=30, what="200 waiting runs")
        parked_here = [i for i in engine.list_runs(status=RunStatus.WAITING) if not i.orphaned]
        assert len(parked_here) == n
        assert threading.active_count() < 30
        assert peak <= baseline + 5  # two run threads and the watcher, not one per run

        # When each is signalled
        for i, h in enumerate(handles):
            h.signal("go", {"n": i})

        # Then every one completes with its own payload
        results = [h.result(timeout=30) for h in handles]
        peak = max(peak, threading.active_count())
    assert results == [[i, {"n": i}] for i in range(n)]
    assert peak <= baseline + 5


# -- across processes ---------------------------------------------------------------------------------


def signal_command(store: Path, run_id: str, name: str, payload: Any) -> list[str]:
    """The command line another process runs to signal a run: the CLI if there is one."""
    if importlib.util.find_spec("intemporal.cli") is not None:
        return [
            sys.executable,
            "-m",
            "intemporal.cli",
            "--store",
            str(store),
            "signal",
            run_id,
            name,
            json.dumps(payload),
        ]
    code = (
        "import json, sys; import intemporal; "
        "intemporal.Engine(sys.argv[1], worker=False).signal("
        "sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))"
    )
    return [sys.executable, "-c", code, str(store), run_id, name, json.dumps(payload)]


def test_signal_from_another_process(file_store: FileStore) -> None:
    # Given a run waiting in this process's engine
    with Engine(file_store, threads=2) as engine:
        handle = engine.start(sig_timestamped, "approve", run_id="cross-process")
        wait_for_status(engine, "cross-process", RunStatus.WAITING)

        # When another process signals it (through the store's inbox and doorbell)
        proc = subprocess.run(
            signal_command(file_store.root, "cross-process", "approve", {"user": "alice"}),
            capture_output=True,
            text=True,
            timeout=30,
        )
        done = time.monotonic()
        assert proc.returncode == 0, proc.stdout + proc.stderr

        # Then the running engine notices and the run continues with the payload
        assert handle.result(timeout=5) == {"user": "alice"}
        assert CONTINUED["cross-process"] - done < 1.0


def test_signal_from_another_process_to_an_unknown_run_fails(file_store: FileStore) -> None:
    proc = subprocess.run(
        signal_command(file_store.root, "nobody", "approve", 1),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0


# -- a signal that lands while the run is suspending --------------------------------------------------

SLOW_GATE = threading.Event()


SLOW_ENTERED = threading.Event()  # the run executes its activity: its context exists
POKE_LOOKING = threading.Event()  # a poke (not the run's thread) is reading the inbox


@intemporal.activity
def sig_slow_gate() -> None:
    SLOW_ENTERED.set()
    assert SLOW_GATE.wait(10)
    assert POKE_LOOKING.wait(10)  # the run reaches its wait after a poke has looked


@intemporal.workflow
def sig_suspending() -> Any:
    sig_slow_gate()
    return intemporal.wait_for_signal("late")


def test_signal_delivered_while_the_run_suspends_is_not_lost() -> None:
    # Given a store whose inbox reads are slow outside the run's own thread, so that both
    # pokes (the sender's and the watcher's) see the run executing, and only deliver the
    # signal after it has found no signal and parked itself
    store = intemporal.MemoryStore()
    read_inbox = store.inbox

    def slow_inbox(run_id: str, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        if not threading.current_thread().name.startswith("intemporal-run"):
            # A poke saw the run executing: let it park before this read answers.
            POKE_LOOKING.set()
            wait_until(lambda: store.summary(run_id).status is RunStatus.WAITING, timeout=5)
        return read_inbox(run_id, cursor)

    store.inbox = slow_inbox  # type: ignore[method-assign]
    SLOW_GATE.clear()
    SLOW_ENTERED.clear()
    POKE_LOOKING.clear()
    with Engine(store, threads=2) as engine:
        handle = engine.start(sig_suspending, run_id="suspending")
        assert SLOW_ENTERED.wait(5), "the run did not reach its activity"

        # When the signal is sent just as the run moves on to its wait
        SLOW_GATE.set()
        engine.signal("suspending", "late", "made it")

        # Then the run is woken all the same
        assert handle.result(timeout=5) == "made it"
