"""Async workflows and activities: the sync suites' key scenarios, written with `async def`.

Retries, sagas rolled back on failure and on cancellation, signals with a timeout, a
durable sleep and a `gather` across a SIGKILL, a `FIRST_COMPLETED` race replayed the same
way, non-determinism, `AsyncEngine`, the sync `Engine` running async runs, and the CLI
resuming one.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import pytest
from process_helpers import journal_events, run_and_kill, wait_until
from test_tracing import Spans, span_id

import intemporal
import intemporal.testing
from intemporal import Engine, FileStore, MemoryStore, RunStatus, Store, async_replay
from intemporal.verify import verify_replay

FAST = intemporal.RetryPolicy(max_attempts=3, initial_interval=0.01)
calls: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


def of_type(engine: Engine, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in engine.history(run_id) if e["type"] == kind]


# -- retries -------------------------------------------------------------------------------------
def third_time_lucky(key: str) -> str:
    calls.append(key)
    if calls.count(key) < 3:
        raise ConnectionError(f"try {calls.count(key)}")
    return f"{key} ok"


@intemporal.activity(retry=FAST)
async def as_flaky(key: str) -> str:
    return third_time_lucky(key)


@intemporal.activity(retry=FAST)
def as_flaky_plain(key: str) -> str:
    return third_time_lucky(key + "-plain")  # on an activity thread


@intemporal.workflow
async def as_retrying(key: str) -> list[str]:
    # a plain activity returns an awaitable in an async workflow (type checkers see a str)
    return [await as_flaky(key), await as_flaky_plain(key)]  # type: ignore[misc]


def test_async_and_plain_activities_are_retried_with_attempts_journaled(engine: Engine) -> None:
    # When an async workflow awaits an async and a plain activity that fail twice each
    result = engine.run(as_retrying, "k", run_id="as-retry")

    # Then both succeed on their third attempt, each failed attempt journaled
    assert result == ["k ok", "k-plain ok"]
    failed = of_type(engine, "as-retry", "attempt_failed")
    assert [(e["name"], e["attempt"]) for e in failed] == [
        ("as_flaky", 1),
        ("as_flaky", 2),
        ("as_flaky_plain", 1),
        ("as_flaky_plain", 2),
    ]
    assert [e["attempts"] for e in of_type(engine, "as-retry", "activity_completed")] == [3, 3]


@intemporal.activity
async def as_sleepy(seconds: float) -> str:
    calls.append("activity started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        calls.append("activity cancelled")
        raise
    return "late"


@intemporal.workflow
async def as_timing_out() -> str:
    once_briefly = intemporal.stub(as_sleepy, timeout=0.1, retry=intemporal.RetryPolicy(1))
    try:
        return await once_briefly(5)
    except intemporal.ActivityTimeout as exc:
        return f"timed out: {exc}"


def test_an_async_attempt_that_times_out_is_stopped() -> None:
    with Engine(MemoryStore()) as engine:
        result = engine.run(as_timing_out, run_id="as-timeout")
    assert result == "timed out: activity 'as_sleepy' timed out after 0.1 s"
    assert calls == ["activity started", "activity cancelled"]  # its task was stopped


# -- sagas --------------------------------------------------------------------------------------
@intemporal.activity
async def as_book(what: str) -> str:
    calls.append(f"book {what}")
    return f"{what}-1"


@intemporal.activity
def as_unbook(ref: str) -> None:
    calls.append(f"cancel {ref}")


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
async def as_charge(amount: int) -> None:
    calls.append("charge")
    if amount > 100:
        raise ValueError("card declined")


@intemporal.workflow
async def as_trip(amount: int, wait_for: str | None = None) -> str:
    async with intemporal.saga() as saga:
        hotel = await as_book("hotel")
        saga.add_compensation(as_unbook, hotel)
        flight = await as_book("flight")
        saga.add_compensation(as_unbook, flight)
        if wait_for:
            await intemporal.wait_for_signal_async(wait_for)
        await as_charge(amount)
    return "booked"


@intemporal.workflow
async def as_trip_explicit(amount: int) -> str:
    saga = intemporal.saga()
    try:
        saga.add_compensation(as_unbook, await as_book("car"))
        await as_charge(amount)
    except Exception:
        await saga.compensate_async()
        raise
    return "booked"


def test_saga_rolls_back_last_first_on_failure(engine: Engine) -> None:
    with pytest.raises(ValueError, match="card declined"):
        engine.run(as_trip, 500, run_id="as-saga")
    assert calls == ["book hotel", "book flight", "charge", "cancel flight-1", "cancel hotel-1"]
    assert engine.get_run("as-saga").status is RunStatus.FAILED
    assert len(of_type(engine, "as-saga", "compensation_started")) == 1

    calls.clear()
    with pytest.raises(ValueError):
        engine.run(as_trip_explicit, 500, run_id="as-saga-2")
    assert calls == ["book car", "charge", "cancel car-1"]
    assert engine.run(as_trip, 5, run_id="as-saga-ok") == "booked"


def test_saga_rolls_back_on_cancel_at_the_await(engine: Engine) -> None:
    # Given a booked trip waiting for a signal
    handle = engine.start(as_trip, 5, "pay", run_id="as-cancel")
    wait_until(lambda: of_type(engine, "as-cancel", "signal_wait"), what="the wait")

    # When it is cancelled
    handle.cancel()

    # Then Cancelled is raised at the await, the saga undoes both bookings, the run is cancelled
    with pytest.raises(intemporal.Cancelled):
        handle.result(timeout=10)
    assert calls == ["book hotel", "book flight", "cancel flight-1", "cancel hotel-1"]
    assert engine.get_run("as-cancel").status is RunStatus.CANCELLED


@intemporal.workflow
async def as_cancel_inflight() -> str:
    try:
        return await as_sleepy(60)
    except intemporal.Cancelled:
        await as_unbook("after")  # type: ignore[misc]  # runs normally
        raise


def test_cancel_stops_an_async_activity_in_flight_through_its_task() -> None:
    with Engine(MemoryStore()) as engine:
        handle = engine.start(as_cancel_inflight, run_id="as-inflight")
        wait_until(lambda: calls, what="the activity to start")
        handle.cancel()
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        (failed,) = of_type(engine, "as-inflight", "activity_failed")
        assert failed["error"]["type"] == "Cancelled"
    assert calls == ["activity started", "activity cancelled", "cancel after"]


def test_terminate_and_timeout_reach_an_async_run_at_its_await() -> None:
    with Engine(MemoryStore()) as engine:
        # terminated: the activity in flight is stopped, nothing is compensated
        handle = engine.start(as_cancel_inflight, run_id="as-terminate")
        wait_until(lambda: calls, what="the activity to start")
        engine.terminate("as-terminate", reason="duplicate")
        with pytest.raises(intemporal.Cancelled):
            handle.result(timeout=10)
        assert calls == ["activity started", "activity cancelled"]  # no "cancel after"
        assert engine.get_run("as-terminate").status is RunStatus.CANCELLED

    # timed out: Cancelled at the signal wait, the saga rolls back (virtual time passes the
    # deadline once the run waits: a real half second could pass before its bookings)
    calls.clear()
    with intemporal.testing.engine() as engine:
        handle = engine.start(as_trip, 5, "pay", run_id="as-timeout-run", timeout=60)
        with pytest.raises(intemporal.Cancelled, match="timed out"):
            handle.result(timeout=10)
    assert calls == ["book hotel", "book flight", "cancel flight-1", "cancel hotel-1"]


# -- signals -----------------------------------------------------------------------------------
@intemporal.workflow
async def as_approval(timeout: float) -> str:
    intemporal.set_event("state", "waiting")
    try:
        decision = await intemporal.wait_for_signal_async("approve", timeout=timeout)
    except intemporal.SignalTimeout:
        return "expired"
    return f"approved by {decision['by']}"


def test_signal_wait_with_a_timeout(engine: Engine) -> None:
    assert engine.run(as_approval, 0.2, run_id="as-expire") == "expired"
    assert len(of_type(engine, "as-expire", "signal_timeout")) == 1

    handle = engine.start(as_approval, 30.0, run_id="as-approve")
    assert engine.get_event("as-approve", "state", timeout=5) == "waiting"
    handle.signal("approve", {"by": "ann"})
    assert handle.result(timeout=10) == "approved by ann"


# -- crashes -------------------------------------------------------------------------------------
SLEEPER = """
@intemporal.workflow(name=WF_NAME)
async def WORKFLOW() -> str:
    record("before")
    await intemporal.sleep_async(3)
    return "woke"
"""


def test_durable_sleep_survives_a_sigkill_and_waits_only_the_rest(tmp_path: Path) -> None:
    def timer_journaled(store: Path, run_id: str) -> bool:
        return any(e["type"] == "timer_started" for e in journal_events(store, run_id))

    crash = run_and_kill(tmp_path, SLEEPER, lines=1, ready=timer_journaled)
    (timer,) = [e for e in crash.events() if e["type"] == "timer_started"]
    wait_until(lambda: time.time() >= timer["ts"] + 1.0, what="a second to pass")

    with Engine(FileStore(crash.store), threads=2) as engine:
        resumed = time.time()
        assert engine.resume(crash.run_id).result(timeout=10) == "woke"
        done = time.time()
    assert timer["fire_at"] <= done < resumed + 3 - 0.5  # the rest, not the whole 3 s
    assert crash.counts()["before"] == 2  # workflow code runs again; its timer does not


GATHER = """
import asyncio

@intemporal.activity
async def fetch(i: int) -> int:
    record("start", i)
    if i >= 6 and IN_CHILD:
        await asyncio.Event().wait()   # the last four hang in the child, which is killed
    record("done", i)
    return i * i

@intemporal.workflow(name=WF_NAME)
async def WORKFLOW() -> int:
    return sum(await asyncio.gather(*(fetch(i) for i in range(10))))
"""


def test_gather_of_ten_across_a_crash_runs_only_the_unfinished(tmp_path: Path) -> None:
    def six_journaled(store: Path, run_id: str) -> bool:
        events = journal_events(store, run_id)
        return sum(e["type"] == "activity_completed" for e in events) == 6

    crash = run_and_kill(tmp_path, GATHER, lines=16, ready=six_journaled)
    with Engine(FileStore(crash.store), threads=2) as engine:
        assert engine.resume(crash.run_id).result(timeout=10) == sum(i * i for i in range(10))
    counts = crash.counts()
    assert all(counts[f"done {i}"] == 1 for i in range(10)), counts
    assert all(counts[f"start {i}"] == 1 for i in range(6)), counts  # not run again
    events = journal_events(crash.store, crash.run_id)
    completed = [e["seq"] for e in events if e["type"] == "activity_completed"]
    assert sorted(completed[:6]) == list(range(1, 7))  # numbered by the call, in program order


# -- replay -------------------------------------------------------------------------------------
DELAYS = {"first": 0.3, "second": 0.02, "third": 0.15}


@intemporal.activity
async def as_leg(which: str) -> str:
    await asyncio.sleep(DELAYS[which])
    return which


@intemporal.workflow
async def as_race() -> list[Any]:
    first = asyncio.create_task(as_leg("first"))
    second = asyncio.create_task(as_leg("second"))
    done, pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    winner = (first if first in done else second).result()
    await as_book(winner)  # a step that depends on the winner
    await asyncio.wait(pending)
    await intemporal.wait_for_signal_async("finish")
    return [winner, len(done)]


def test_a_first_completed_race_is_replayed_the_same_way() -> None:
    store = MemoryStore()
    # Given a race that the second task won, left waiting when its engine closed
    with Engine(store) as engine:
        engine.start(as_race, run_id="as-race")
        wait_until(lambda: of_type(engine, "as-race", "signal_wait"), what="the wait")
    # When it is replayed where the first leg would now win (it is not run again)
    DELAYS.update(first=0.0, second=0.5)
    try:
        with Engine(store) as engine:
            handle = engine.resume("as-race")
            handle.signal("finish")
            # Then the same branch is taken: same winner, same steps, no NonDeterminismError
            assert handle.result(timeout=10) == ["second", 1]
    finally:
        DELAYS.update(first=0.3, second=0.02)


@intemporal.workflow
async def as_arrivals() -> list[str]:
    legs = [as_leg("first"), as_leg("second"), as_leg("third")]
    order = [await leg for leg in asyncio.as_completed(legs)]
    await intemporal.wait_for_signal_async("finish")
    return order


def test_as_completed_is_replayed_in_the_recorded_order() -> None:
    store = MemoryStore()
    with Engine(store) as engine:
        engine.start(as_arrivals, run_id="as-arrivals")
        wait_until(lambda: of_type(engine, "as-arrivals", "signal_wait"), what="the wait")
    DELAYS.update(first=0.0, second=0.5, third=0.2)
    try:
        with Engine(store) as engine:
            handle = engine.resume("as-arrivals")
            handle.signal("finish")
            assert handle.result(timeout=10) == ["second", "third", "first"]
    finally:
        DELAYS.update(first=0.3, second=0.02, third=0.15)


TIMES: dict[int, float] = {}


@intemporal.activity
async def as_step(k: int) -> int:
    await asyncio.sleep(TIMES.get(k, 0.01))
    return k


async def as_branch(k: int) -> int:
    """Steps that depend on the one before, so their numbers depend on who finished first."""
    first = await as_step(k)
    if first % 2:
        return first + sum(await asyncio.gather(as_step(k + 100), as_step(k + 200)))
    return first + await as_step(k + 300)


@intemporal.workflow
async def as_branches() -> list[int]:
    before = await asyncio.gather(*(as_branch(k) for k in range(5)))
    await intemporal.wait_for_signal_async("go")
    return list(before) + list(await asyncio.gather(*(as_branch(k) for k in range(5, 7))))


def replay_after_a_stop(seed: int) -> None:
    rnd = random.Random(seed)
    keys = [k + o for k in range(7) for o in (0, 100, 200, 300)]
    store = MemoryStore()
    TIMES.update({k: rnd.uniform(0, 0.03) for k in keys})
    with Engine(store) as engine:  # stopped at a random moment: the run stays resumable
        engine.start(as_branches, run_id="as-branches")
        time.sleep(rnd.uniform(0.0, 0.08))  # the moment is the point: any moment will do
    TIMES.update({k: rnd.uniform(0, 0.03) for k in keys})  # other timings now
    with Engine(store) as engine:
        handle = engine.resume("as-branches")
        wait_until(lambda: of_type(engine, "as-branches", "signal_wait"), what="the wait")
        handle.signal("go")
        assert handle.result(timeout=10) == [
            k + (2 * k + 300 if k % 2 else k + 300) for k in range(7)
        ]
    ok, message = verify_replay(store, "as-branches")  # and its whole journal replays
    assert ok and message.endswith("the workflow returned"), message


def test_branches_of_several_steps_replay_the_same_after_a_stop_at_any_moment() -> None:
    for seed in range(3):
        replay_after_a_stop(seed)


@pytest.mark.slow
def test_branches_replay_the_same_soak() -> None:
    for seed in range(3, 60):
        replay_after_a_stop(seed)


VERSION = {"step": "as_book"}


@intemporal.workflow
async def as_changing() -> str:
    if VERSION["step"] == "as_book":
        await as_book("x")
    else:
        await as_charge(1)
    await intemporal.wait_for_signal_async("go")
    return "done"


def test_intemporal_replay_checks_an_async_run_without_running_it() -> None:
    store = MemoryStore()
    with Engine(store) as engine:
        engine.start(as_changing, run_id="as-check")
        wait_until(lambda: of_type(engine, "as-check", "signal_wait"), what="the wait")
    calls.clear()
    ok, message = verify_replay(store, "as-check")
    assert ok and message.startswith("deterministic: 1 recorded step replay"), message
    VERSION["step"] = "as_charge"
    try:
        ok, message = verify_replay(store, "as-check")
    finally:
        VERSION["step"] = "as_book"
    assert not ok and message == "mismatch at step 1: recorded 'as_book', now 'as_charge'"
    assert calls == []  # nothing ran


def test_nondeterminism_is_detected_and_the_journal_left_untouched() -> None:
    store = MemoryStore()
    with Engine(store) as engine:
        engine.start(as_changing, run_id="as-nd")
        wait_until(lambda: of_type(engine, "as-nd", "signal_wait"), what="the wait")
        before = engine.history("as-nd")
    VERSION["step"] = "as_charge"
    try:
        with Engine(store) as engine:
            with pytest.raises(intemporal.NonDeterminismError, match=r"as_book.*as_charge"):
                engine.resume("as-nd").result(timeout=10)
            assert engine.history("as-nd") == before
    finally:
        VERSION["step"] = "as_book"


@intemporal.workflow
async def as_reordered() -> str:
    first, second = as_book("a"), as_book("b")
    if VERSION["step"] == "as_book":
        await first
        await second
    else:  # the same steps, awaited the other way round
        try:
            await second
            await first
        finally:
            first.close()  # not awaited if the replay stops: closed, not warned about
    await intemporal.wait_for_signal_async("go")
    return "done"


def test_a_replay_awaiting_in_another_order_stops_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(async_replay, "STALL", 0.3)
    store = MemoryStore()
    with Engine(store) as engine:
        engine.start(as_reordered, run_id="as-order")
        wait_until(lambda: of_type(engine, "as-order", "signal_wait"), what="the wait")
    VERSION["step"] = "other"
    try:
        with Engine(store) as engine:
            with pytest.raises(intemporal.NonDeterminismError, match="step 1"):
                engine.resume("as-order").result(timeout=10)
            assert not engine.get_run("as-order").status.finished  # no verdict: resumable
    finally:
        VERSION["step"] = "as_book"


@intemporal.workflow
async def as_traced() -> None:
    await asyncio.gather(as_book("a"), as_book("b"))
    await as_unbook("c")  # type: ignore[misc]


def test_async_runs_are_traced_like_plain_ones() -> None:
    spans = Spans()
    with Engine(MemoryStore(), tracing=spans.provider) as engine:
        engine.run(as_traced, run_id="as-traced")
    run = spans.one("workflow as_traced")
    steps = sorted(spans.named("activity as_book") + spans.named("activity as_unbook"), key=seq)
    assert [(s.name, seq(s)) for s in steps] == [
        ("activity as_book", 1),
        ("activity as_book", 2),
        ("activity as_unbook", 3),
    ]
    assert all(s.parent is not None and s.parent.span_id == span_id(run) for s in steps)


def seq(span: Any) -> int:
    return int(span.attributes["intemporal.seq"])


class Pricing(Protocol):
    async def quote(self, item: str) -> int: ...


class AsyncPricing:
    async def quote(self, item: str) -> int:
        await asyncio.sleep(0.01)
        return len(item)


@intemporal.workflow
async def as_priced(item: str) -> int:
    pricing = intemporal.stub_protocol(Pricing)
    return await pricing.quote(item)


def test_a_protocol_with_an_async_implementation(engine: Engine) -> None:
    assert engine.run(as_priced, "pear", protocols={Pricing: AsyncPricing()}) == 4


# -- engines ------------------------------------------------------------------------------------
@intemporal.workflow
def as_plain_child(x: int) -> int:
    return x + 1


@intemporal.workflow
async def as_async_child(x: int) -> int:
    await intemporal.sleep_async(0.01)
    return x * 2


@intemporal.workflow
async def as_parent(x: int) -> list[int]:
    return list(await asyncio.gather(as_plain_child(x), as_async_child(x)))  # type: ignore[call-overload]


@intemporal.workflow
def as_plain_parent(x: int) -> int:
    return as_async_child(x) + 1  # type: ignore[operator]  # a child run's value


def test_the_sync_engine_runs_async_runs_and_their_children(engine: Engine) -> None:
    assert engine.run(as_parent, 5, run_id="as-parent") == [6, 10]
    assert engine.get_run("as-parent/1").status is RunStatus.COMPLETED
    assert engine.run(as_plain_parent, 4, run_id="as-plain-parent") == 9
    with pytest.raises(TypeError, match=r"use await intemporal\.sleep_async"):
        engine.run(as_sync_call_in_async, run_id="as-misuse")


@intemporal.workflow
async def as_sync_call_in_async() -> None:
    intemporal.sleep(1)


def test_async_engine_api(store: Store) -> None:
    async def main() -> None:
        async with intemporal.AsyncEngine(store) as engine:
            assert await engine.run(as_async_child, 3, run_id="ae-run") == 6
            handle = await engine.start(as_approval, 30.0, run_id="ae-wait")
            again = await engine.start(as_approval, 30.0, run_id="ae-wait")  # idempotent
            assert await engine.get_event("ae-wait", "state", timeout=5) == "waiting"
            with pytest.raises(RuntimeError, match=r"await handle\.result_async\(\)"):
                handle.result(timeout=1)  # on the loop the run needs: refused, not a hang
            await engine.signal("ae-wait", "approve", {"by": "bo"})
            assert await again.result_async(timeout=10) == "approved by bo"
            assert await handle.result_async() == "approved by bo"

            cancelled = await engine.start(as_approval, 30.0, run_id="ae-cancel")
            await engine.get_event("ae-cancel", "state", timeout=5)
            await engine.cancel("ae-cancel")
            with pytest.raises(intemporal.Cancelled):
                await cancelled.result_async(timeout=10)
            with pytest.raises(TimeoutError):
                await (await engine.start(as_approval, 30.0, run_id="ae-t")).result_async(0.05)
            info = await engine.get_run("ae-run")  # quick reads: awaited, or not
            assert info.status is RunStatus.COMPLETED
            assert engine.get_run("ae-run").status is RunStatus.COMPLETED
            assert {r.run_id for r in await engine.list_runs()} >= {"ae-run", "ae-wait"}
            assert engine.history("ae-run")[-1]["type"] == "run_completed"
        # leaving the block leaves the waiting run resumable
        async with intemporal.AsyncEngine(store) as engine:
            handle = await engine.resume("ae-t")
            await engine.signal("ae-t", "approve", {"by": "cy"})
            assert await handle.result_async(timeout=10) == "approved by cy"

    asyncio.run(main())


RUNS = 500
in_flight: list[int] = []
threads_seen: list[int] = []


@intemporal.activity
async def as_meet(i: int) -> int:
    """Returns only once every run's activity is in flight at the same time."""
    in_flight.append(i)
    while len(in_flight) < RUNS:
        await asyncio.sleep(0.01)
    threads_seen.append(threading.active_count())
    return i


@intemporal.workflow
async def as_meeting(i: int) -> int:
    return await as_meet(i)


def test_hundreds_of_async_runs_wait_at_once_on_one_loop() -> None:
    async def main() -> list[int]:
        async with intemporal.AsyncEngine(MemoryStore(), threads=2) as engine:
            handles = [await engine.start(as_meeting, i) for i in range(RUNS)]
            return [await h.result_async(timeout=30) for h in handles]

    # every run's activity awaits the others: all finish only if all waited at once
    assert asyncio.run(main()) == list(range(RUNS))
    assert max(threads_seen) < 20  # not a thread per run


CLI_RUN = """
import asyncio

@intemporal.activity
async def step(i: int) -> int:
    record("step", i)
    if i == 2 and IN_CHILD:
        await asyncio.Event().wait()
    return i

@intemporal.workflow(name=WF_NAME)
async def WORKFLOW() -> int:
    return sum([await step(i) for i in range(4)])
"""


def test_the_cli_resumes_an_async_run(tmp_path: Path) -> None:
    crash = run_and_kill(tmp_path, CLI_RUN, lines=3)
    cli = [sys.executable, "-m", "intemporal.cli", "--store", str(crash.store)]
    out = subprocess.run(
        [*cli, "resume", crash.run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    with Engine(FileStore(crash.store)) as engine:
        info = engine.get_run(crash.run_id)
    assert info.status is RunStatus.COMPLETED and info.result == 6, (info, out.stdout)
    assert crash.counts() == {"step 0": 1, "step 1": 1, "step 2": 2, "step 3": 1}
