"""Fan-out inside a workflow: `intemporal.submit`, `join_all`, `join_any`.

Submitted activities really run at the same time, each is journaled under the sequence
number it got at `submit` (program order, whatever order they finish in), `join_any`
records its choice so a replay makes the same one, and a crash with activities in
flight re-runs only the ones that had not finished.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls, clone_prefix
from process_helpers import journal_events, run_and_kill, wait_until

import intemporal
from intemporal import Engine, FileStore, RetryPolicy, RunStatus, Store

NO_RETRY = RetryPolicy(max_attempts=1)


class Boom(Exception):
    """A user error raised by a submitted activity (module level: rebuilt with its type)."""


def completions(store: Store, run_id: str) -> list[dict[str, Any]]:
    return [e for e in store.read(run_id) if e["type"] == "activity_completed"]


# -- concurrency really happens -----------------------------------------------------------------


def test_five_submitted_activities_run_at_the_same_time(store: Store) -> None:
    # The barrier only opens when five activities are inside it at once.
    barrier = threading.Barrier(5, timeout=5)

    @intemporal.activity(retry=NO_RETRY)
    def meet(i: int) -> int:
        barrier.wait()
        return i

    @intemporal.workflow
    def wf() -> list[int]:
        return intemporal.join_all([intemporal.submit(meet, i) for i in range(5)])

    with Engine(store, threads=8) as engine:
        assert engine.run(wf, run_id="barrier") == [0, 1, 2, 3, 4]
    assert not barrier.broken


def test_ten_activities_are_all_in_flight_at_once(store: Store) -> None:
    # The barrier only opens when all ten are inside it: none waits for another to end.
    barrier = threading.Barrier(10, timeout=5)

    @intemporal.activity(retry=NO_RETRY)
    def slow(i: int) -> int:
        barrier.wait()
        return i * i

    @intemporal.workflow
    def wf() -> list[int]:
        return intemporal.join_all([intemporal.submit(slow, i) for i in range(10)])

    with Engine(store, threads=10) as engine:
        assert engine.run(wf, run_id="ten") == [i * i for i in range(10)]
    assert not barrier.broken
    assert len(completions(store, "ten")) == 10


# -- sequence numbers ---------------------------------------------------------------------------


def test_sequence_numbers_follow_submission_order_not_completion_order(store: Store) -> None:
    # Activity i waits until activity i+1 is in the journal: they finish last-submitted first.
    calls = Calls()

    @intemporal.activity(retry=NO_RETRY)
    def step(i: int, last: int) -> str:
        if i < last:
            wait_until(
                lambda: any(e["seq"] == i + 2 for e in completions(store, "order")),
                timeout=5,
                what=f"activity {i + 1} to be journaled",
            )
        calls.hit(i)
        return f"r{i}"

    @intemporal.workflow
    def wf(n: int) -> list[str]:
        futures = [intemporal.submit(step, i, n - 1) for i in range(n)]
        return intemporal.join_all(futures)

    with Engine(store, threads=4) as engine:
        assert engine.run(wf, 3, run_id="order") == ["r0", "r1", "r2"]
        done = completions(store, "order")
        # completed in reverse, yet seq k holds the k-th submission
        assert [e["seq"] for e in done] == [3, 2, 1]
        assert {e["seq"]: e["result"] for e in done} == {1: "r0", 2: "r1", 3: "r2"}
        assert calls.order == [2, 1, 0]

        # A replay of the journal (cut before its end) returns the same list, runs nothing.
        events = engine.history("order")
        clone_prefix(store, "order", "order-replay", keep=len(events) - 1)
        assert engine.resume("order-replay").result(timeout=10) == ["r0", "r1", "r2"]
    assert calls.total() == 3


def test_submit_and_a_plain_call_share_one_sequence(store: Store) -> None:
    @intemporal.activity
    def echo(x: str) -> str:
        return x

    @intemporal.workflow
    def wf() -> list[str]:
        a = intemporal.submit(echo, "a")
        b = echo("b")
        c = intemporal.submit(echo, "c")
        return [a.result(), b, c.result()]

    with Engine(store, threads=4) as engine:
        assert engine.run(wf, run_id="mixed") == ["a", "b", "c"]
    assert {e["seq"]: e["result"] for e in completions(store, "mixed")} == {
        1: "a",
        2: "b",
        3: "c",
    }


# -- join_any -----------------------------------------------------------------------------------


def _join_any_workflow(
    calls: Calls, release_slow: threading.Event
) -> intemporal.Workflow[Any, Any]:
    @intemporal.activity(retry=NO_RETRY)
    def slow() -> str:
        calls.hit("slow")
        if not release_slow.wait(5):
            raise TimeoutError("the test never released the slow activity")
        return "slow"

    @intemporal.activity(retry=NO_RETRY)
    def fast() -> str:
        calls.hit("fast")
        return "fast"

    @intemporal.workflow
    def race() -> tuple[int, str, str]:
        index, value = intemporal.join_any([intemporal.submit(slow), intemporal.submit(fast)])
        go = intemporal.wait_for_signal("go")  # suspends: the run replays when it comes
        return index, value, go

    return race


def test_join_any_returns_the_first_to_finish_and_records_it(store: Store) -> None:
    calls, release = Calls(), threading.Event()
    race = _join_any_workflow(calls, release)
    with Engine(store, threads=4) as engine:
        handle = engine.start(race, run_id="race")
        wait_until(
            lambda: any(e["type"] == "join_any" for e in store.read("race")),
            timeout=5,
            what="the join_any choice in the journal",
        )
        release.set()
        wait_until(lambda: handle.status() is RunStatus.WAITING, timeout=5, what="a waiting run")
        chosen = [e for e in engine.history("race") if e["type"] == "join_any"]
        assert len(chosen) == 1 and chosen[0]["index"] == 1 and chosen[0]["seq"] == 3
        handle.signal("go", "now")
        assert handle.result(timeout=10) == (1, "fast", "now")
    assert calls["slow"] == 1 and calls["fast"] == 1


def test_join_any_replays_the_recorded_choice_even_if_timing_differs(store: Store) -> None:
    # At the replay (after the signal) both activities are already done, and the first
    # one listed is "slow": only the recorded choice makes join_any answer 1 again.
    calls, release = Calls(), threading.Event()
    race = _join_any_workflow(calls, release)
    with Engine(store, threads=4) as engine:
        handle = engine.start(race, run_id="race-replay")
        wait_until(
            lambda: any(e["type"] == "join_any" for e in store.read("race-replay")),
            timeout=5,
            what="the join_any choice in the journal",
        )
        release.set()
        wait_until(lambda: handle.status() is RunStatus.WAITING, timeout=5, what="a waiting run")
    assert {e["seq"] for e in completions(store, "race-replay")} == {1, 2}

    # A fresh engine resumes the suspended run: everything is replayed from the journal.
    with Engine(store, threads=4) as engine:
        engine.signal("race-replay", "go", "later")
        assert engine.resume("race-replay").result(timeout=10) == (1, "fast", "later")
        events = engine.history("race-replay")
    assert sum(e["type"] == "join_any" for e in events) == 1
    assert calls["slow"] == 1 and calls["fast"] == 1  # nothing ran again


def test_join_any_needs_a_future() -> None:
    @intemporal.workflow
    def wf() -> Any:
        return intemporal.join_any([])

    with Engine(intemporal.MemoryStore(), threads=2) as engine:
        with pytest.raises(ValueError, match="at least one"):
            engine.run(wf)


# -- errors -----------------------------------------------------------------------------------


def _failing_activities(calls: Calls) -> tuple[Any, Any]:
    @intemporal.activity(retry=NO_RETRY)
    def ok(i: int) -> int:
        calls.hit(i)
        return i

    @intemporal.activity(retry=NO_RETRY)
    def boom(i: int) -> int:
        calls.hit(i)
        raise Boom(f"item {i} is broken")

    return ok, boom


def test_an_exception_in_a_submitted_activity_is_raised_by_result(store: Store) -> None:
    calls = Calls()
    ok, boom = _failing_activities(calls)

    @intemporal.workflow
    def wf() -> list[Any]:
        good, bad = intemporal.submit(ok, 1), intemporal.submit(boom, 2)
        try:
            bad.result()
        except Boom as exc:
            caught = str(exc)
        return [good.result(), caught]

    with Engine(store, threads=4) as engine:
        assert engine.run(wf, run_id="caught") == [1, "item 2 is broken"]
        assert engine.get_run("caught").status is RunStatus.COMPLETED
    failed = [e for e in store.read("caught") if e["type"] == "activity_failed"]
    assert [e["seq"] for e in failed] == [2]


def test_an_exception_in_a_submitted_activity_is_raised_by_join_all(store: Store) -> None:
    calls = Calls()
    ok, boom = _failing_activities(calls)

    @intemporal.workflow
    def wf() -> list[int]:
        return intemporal.join_all([intemporal.submit(f, i) for i, f in enumerate([ok, boom, ok])])

    with Engine(store, threads=4) as engine:
        handle = engine.start(wf, run_id="join-fails")
        with pytest.raises(Boom, match="item 1 is broken"):
            handle.result(timeout=10)
        assert engine.get_run("join-fails").status is RunStatus.FAILED
    # the siblings still finished and were journaled before the run ended
    assert {e["seq"] for e in completions(store, "join-fails")} == {1, 3}
    assert calls.total() == 3


# -- a crash with activities in flight ----------------------------------------------------------

IN_FLIGHT_SCRIPT = """
import time

UNBLOCK = SIDE_EFFECTS + ".unblock"   # never created while the child process lives
BLOCKERS = (1, 3)


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def work(i):
    record("run", i)
    if i in BLOCKERS:
        while not os.path.exists(UNBLOCK):
            time.sleep(0.005)
    return i * 10


@intemporal.workflow(name=WF_NAME)
def fan_out():
    return intemporal.join_all([intemporal.submit(work, i) for i in range(5)])


WORKFLOW = fan_out
"""


def test_a_crash_with_activities_in_flight_reruns_only_the_unfinished_ones(tmp_path: Path) -> None:
    def three_done(store: Path, run_id: str) -> bool:
        events = journal_events(store, run_id)
        return sum(e["type"] == "activity_completed" for e in events) == 3

    # Given a worker killed while 2 of 5 submitted activities hang and 3 are journaled
    crash = run_and_kill(tmp_path, IN_FLIGHT_SCRIPT, lines=5, ready=three_done)
    assert sorted(crash.lines()) == [f"run {i}" for i in range(5)]
    done_before = {e["seq"] for e in crash.events() if e["type"] == "activity_completed"}
    assert done_before == {1, 3, 5}  # work(0), work(2), work(4)

    # When it is resumed here, with the blockers now free to finish
    (tmp_path / (crash.side_effects.name + ".unblock")).touch()
    with Engine(FileStore(crash.store), threads=4) as engine:
        assert engine.resume(crash.run_id).result(timeout=10) == [0, 10, 20, 30, 40]

    # Then only the two that were in flight ran again
    runs = collections.Counter(crash.lines())
    assert runs == {"run 0": 1, "run 1": 2, "run 2": 1, "run 3": 2, "run 4": 1}
    events = crash.events()
    assert sorted(e["seq"] for e in events if e["type"] == "activity_completed") == [1, 2, 3, 4, 5]
    assert events[-1]["type"] == "run_completed"
