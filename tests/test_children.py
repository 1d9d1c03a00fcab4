"""Child workflows: a `@workflow` called (or submitted) inside a workflow is a durable run.

The child's id is `"<parent>/<seq>"`, it is listed with its parent, its result or its
exception reaches the parent, children nest, a waiting child makes its parent wait,
cancelling a parent cancels its children, and a finished child never runs again.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls
from process_helpers import journal_events, run_and_kill, wait_until

import intemporal
from intemporal import Cancelled, Engine, FileStore, RetryPolicy, RunStatus, Store

NO_RETRY = RetryPolicy(max_attempts=1)


class ChildError(Exception):
    """Raised by a child workflow (module level: rebuilt with its type on replay)."""


def wait_for_status(engine: Engine, run_id: str, status: RunStatus) -> None:
    def reached() -> bool:
        try:
            return engine.get_run(run_id).status is status
        except intemporal.RunNotFound:
            return False

    wait_until(reached, timeout=5, what=f"run {run_id!r} to be {status}")


# -- a child run --------------------------------------------------------------------------------


def test_a_workflow_called_in_a_workflow_is_a_child_run(store: Store) -> None:
    calls = Calls()

    @intemporal.activity
    def double(x: int) -> int:
        calls.hit("double")
        return 2 * x

    @intemporal.workflow
    def child(x: int) -> dict[str, Any]:
        me = intemporal.info()
        return {"value": double(x), "run_id": me.run_id, "parent": me.parent}

    @intemporal.workflow
    def parent(x: int) -> list[Any]:
        first = double(x)  # seq 1
        return [first, child(x + 1)]  # seq 2: the child

    with Engine(store, threads=4) as engine:
        result = engine.run(parent, 5, run_id="fam")
        assert result == [10, {"value": 12, "run_id": "fam/2", "parent": "fam"}]

        runs = {r.run_id: r for r in engine.list_runs()}
        assert set(runs) == {"fam", "fam/2"}
        assert runs["fam/2"].parent == "fam" and runs["fam"].parent is None
        assert runs["fam/2"].status is RunStatus.COMPLETED
        assert runs["fam/2"].workflow == child.name
        started = [e for e in engine.history("fam") if e["type"] == "child_started"]
        assert [(e["seq"], e["child_id"]) for e in started] == [(2, "fam/2")]
        assert engine.get_run("fam/2").result == {"value": 12, "run_id": "fam/2", "parent": "fam"}
    assert calls["double"] == 2


def test_a_childs_exception_is_raised_in_the_parent_and_can_be_caught(store: Store) -> None:
    @intemporal.workflow
    def failing_child(x: int) -> int:
        raise ChildError(f"child cannot handle {x}")

    @intemporal.workflow
    def parent() -> str:
        try:
            failing_child(7)
        except ChildError as exc:
            return f"recovered from: {exc}"
        return "not reached"

    with Engine(store, threads=4) as engine:
        assert engine.run(parent, run_id="catch") == "recovered from: child cannot handle 7"
        assert engine.get_run("catch").status is RunStatus.COMPLETED
        child = engine.get_run("catch/1")
        assert child.status is RunStatus.FAILED and child.parent == "catch"
        assert "child cannot handle 7" in (child.error or "")


def test_an_uncaught_child_exception_fails_the_parent(store: Store) -> None:
    @intemporal.workflow
    def failing_child() -> int:
        raise ChildError("broken")

    @intemporal.workflow
    def parent() -> int:
        return failing_child()

    with Engine(store, threads=4) as engine:
        with pytest.raises(ChildError, match="broken"):
            engine.start(parent, run_id="uncaught").result(timeout=10)
        assert engine.get_run("uncaught").status is RunStatus.FAILED
        assert engine.get_run("uncaught/1").status is RunStatus.FAILED


def test_grandchildren_nest_and_make_subfolders(tmp_path: Path) -> None:
    @intemporal.activity
    def plus_one(x: int) -> int:
        return x + 1

    @intemporal.workflow
    def grandchild(x: int) -> list[Any]:
        return [plus_one(x), intemporal.run_id()]

    @intemporal.workflow
    def child(x: int) -> list[Any]:
        plus_one(0)  # seq 1: the grandchild gets seq 2
        return [grandchild(x), intemporal.run_id()]

    @intemporal.workflow
    def parent(x: int) -> list[Any]:
        return [child(x), intemporal.run_id()]

    store = FileStore(tmp_path / "store")
    with Engine(store, threads=4) as engine:
        result = engine.run(parent, 1, run_id="tree")
        assert result == [[[2, "tree/1/2"], "tree/1"], "tree"]
        runs = {r.run_id: r.parent for r in engine.list_runs()}
        assert runs == {"tree": None, "tree/1": "tree", "tree/1/2": "tree/1"}
    assert (tmp_path / "store" / "tree.jsonl").is_file()
    assert (tmp_path / "store" / "tree" / "1.jsonl").is_file()
    assert (tmp_path / "store" / "tree" / "1" / "2.jsonl").is_file()
    grand = journal_events(tmp_path / "store", "tree/1/2")
    assert grand[0]["parent"] == "tree/1" and grand[-1]["type"] == "run_completed"


def test_submit_starts_children_without_waiting(store: Store) -> None:
    @intemporal.activity
    def square(x: int) -> int:
        return x * x

    @intemporal.workflow
    def child(x: int) -> int:
        return square(x)

    @intemporal.workflow
    def parent(n: int) -> list[int]:
        futures = [intemporal.submit(child, i) for i in range(n)]
        alone = intemporal.submit(child, 10)
        return [*intemporal.join_all(futures), alone.result()]

    with Engine(store, threads=4) as engine:
        assert engine.run(parent, 4, run_id="subs") == [0, 1, 4, 9, 100]
        children = sorted(r.run_id for r in engine.list_runs() if r.parent == "subs")
        assert children == ["subs/1", "subs/2", "subs/3", "subs/4", "subs/5"]
        assert all(engine.get_run(c).status is RunStatus.COMPLETED for c in children)


def test_a_submitted_childs_exception_is_raised_by_its_future(store: Store) -> None:
    @intemporal.workflow
    def child(x: int) -> int:
        if x == 2:
            raise ChildError("two is not allowed")
        return x

    @intemporal.workflow
    def parent() -> list[Any]:
        futures = [intemporal.submit(child, i) for i in range(4)]
        out: list[Any] = []
        for f in futures:
            try:
                out.append(f.result())
            except ChildError as exc:
                out.append(str(exc))
        return out

    with Engine(store, threads=4) as engine:
        assert engine.run(parent, run_id="sub-fail") == [0, 1, "two is not allowed", 3]


def test_children_run_concurrently_when_submitted(store: Store) -> None:
    # The barrier only opens when all five children are in their activity at once.
    barrier = threading.Barrier(5, timeout=5)

    @intemporal.activity(retry=RetryPolicy(max_attempts=1))
    def slow(x: int) -> int:
        barrier.wait()
        return x

    @intemporal.workflow
    def child(x: int) -> int:
        return slow(x)

    @intemporal.workflow
    def parent() -> list[int]:
        return intemporal.join_all([intemporal.submit(child, i) for i in range(5)])

    with Engine(store, threads=8) as engine:
        assert engine.run(parent, run_id="conc") == [0, 1, 2, 3, 4]
    assert not barrier.broken


# -- a child that waits -----------------------------------------------------------------------


def test_a_waiting_child_makes_its_parent_wait(store: Store) -> None:
    calls = Calls()

    @intemporal.activity
    def note(what: str) -> str:
        calls.hit(what)
        return what

    @intemporal.workflow
    def approval(x: int) -> str:
        note("child-before")
        decision = intemporal.wait_for_signal("approve", timeout=3600)
        return f"{x}:{decision}"

    @intemporal.workflow
    def parent(x: int) -> str:
        note("parent-before")
        verdict = approval(x)
        note("parent-after")
        return verdict.upper()

    with Engine(store, threads=2) as engine:
        handle = engine.start(parent, 3, run_id="pw")
        wait_for_status(engine, "pw/2", RunStatus.WAITING)
        wait_for_status(engine, "pw", RunStatus.WAITING)

        engine.signal("pw/2", "approve", "yes")
        assert handle.result(timeout=10) == "3:YES"
        assert engine.get_run("pw/2").status is RunStatus.COMPLETED
        assert engine.get_run("pw").status is RunStatus.COMPLETED
    # replays of parent and child ran none of their activities twice
    assert dict(calls.counts) == {"parent-before": 1, "child-before": 1, "parent-after": 1}


def test_a_parent_waits_for_a_submitted_child_that_waits(store: Store) -> None:
    @intemporal.workflow
    def approval() -> str:
        return str(intemporal.wait_for_signal("approve", timeout=3600))

    @intemporal.workflow
    def parent() -> list[str]:
        futures = [intemporal.submit(approval) for _ in range(2)]
        return intemporal.join_all(futures)

    with Engine(store, threads=2) as engine:
        handle = engine.start(parent, run_id="pws")
        wait_for_status(engine, "pws/1", RunStatus.WAITING)
        wait_for_status(engine, "pws/2", RunStatus.WAITING)
        wait_for_status(engine, "pws", RunStatus.WAITING)
        engine.signal("pws/2", "approve", "second")
        engine.signal("pws/1", "approve", "first")
        assert handle.result(timeout=10) == ["first", "second"]


def test_join_any_over_children_does_not_hold_the_only_thread(store: Store) -> None:
    # With one run thread, a parent that held it while waiting would starve its children.
    @intemporal.activity
    def echo(x: int) -> int:
        return x

    @intemporal.workflow
    def child(x: int) -> int:
        return echo(x)

    @intemporal.workflow
    def parent() -> tuple[int, int]:
        return intemporal.join_any([intemporal.submit(child, i) for i in (7, 8)])

    with Engine(store, threads=1) as engine:
        index, value = engine.start(parent, run_id="one-thread").result(timeout=10)
    assert (index, value) in ((0, 7), (1, 8))
    chosen = [e for e in store.read("one-thread") if e["type"] == "join_any"]
    assert [e["index"] for e in chosen] == [index]


def test_join_any_over_waiting_children_parks_the_parent(store: Store) -> None:
    @intemporal.workflow
    def approval(who: str) -> str:
        return f"{who}: {intemporal.wait_for_signal('approve', timeout=3600)}"

    @intemporal.workflow
    def parent() -> tuple[int, str]:
        return intemporal.join_any([intemporal.submit(approval, w) for w in ("ann", "bob")])

    with Engine(store, threads=2) as engine:
        handle = engine.start(parent, run_id="jaw")
        for run_id in ("jaw/1", "jaw/2", "jaw"):
            wait_for_status(engine, run_id, RunStatus.WAITING)  # the parent holds no thread

        engine.signal("jaw/2", "approve", "yes")
        assert handle.result(timeout=10) == (1, "bob: yes")
        # still running on its own: waiting (a store that polls may look at it meanwhile)
        wait_for_status(engine, "jaw/1", RunStatus.WAITING)


# -- cancellation cascades ---------------------------------------------------------------------


def test_cancelling_a_parent_cancels_its_waiting_children(store: Store) -> None:
    calls = Calls()

    @intemporal.activity
    def note(what: str) -> None:
        calls.hit(what)

    @intemporal.workflow
    def grandchild() -> str:
        return str(intemporal.wait_for_signal("never", timeout=3600))

    @intemporal.workflow
    def child() -> str:
        result = grandchild()
        note("child-after")
        return result

    @intemporal.workflow
    def parent() -> str:
        result = child()
        note("parent-after")
        return result

    with Engine(store, threads=4) as engine:
        handle = engine.start(parent, run_id="cx")
        for run_id in ("cx/1/1", "cx/1", "cx"):
            wait_for_status(engine, run_id, RunStatus.WAITING)

        handle.cancel()
        with pytest.raises(Cancelled):
            handle.result(timeout=10)
        for run_id in ("cx/1/1", "cx/1", "cx"):
            wait_for_status(engine, run_id, RunStatus.CANCELLED)
    assert calls.total() == 0  # nothing after the cancelled waits ran


@pytest.mark.parametrize("how", ["called", "submitted"])
def test_cancelling_a_parent_cancels_a_child_busy_in_an_activity(store: Store, how: str) -> None:
    calls = Calls()

    @intemporal.activity(retry=NO_RETRY)
    def busy() -> str:
        calls.hit("busy")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                intemporal.heartbeat()  # raises Cancelled once the run is cancelled
            except Cancelled:
                calls.hit("busy saw Cancelled")
                raise
            time.sleep(0.002)
        return "never cancelled"

    @intemporal.workflow
    def child() -> str:
        return busy()

    @intemporal.workflow
    def parent() -> list[str]:
        if how == "called":  # runs on the parent's thread
            return [child()]
        return intemporal.join_all([intemporal.submit(child), intemporal.submit(child)])

    children = ["cb/1"] if how == "called" else ["cb/1", "cb/2"]
    with Engine(store, threads=4) as engine:
        handle = engine.start(parent, run_id="cb")
        wait_until(lambda: calls["busy"] == len(children), timeout=5, what="the children busy")

        handle.cancel()
        with pytest.raises(Cancelled):
            handle.result(timeout=10)
        assert engine.get_run("cb").status is RunStatus.CANCELLED
        for run_id in children:
            wait_for_status(engine, run_id, RunStatus.CANCELLED)
        # each busy activity was stopped by the cancellation, not by its own 5 s end
        assert calls["busy saw Cancelled"] == len(children)


def test_cancelling_a_parent_leaves_finished_children_alone(store: Store) -> None:
    @intemporal.workflow
    def quick() -> int:
        return 1

    @intemporal.workflow
    def parent() -> int:
        value = quick()
        intemporal.wait_for_signal("never", timeout=3600)
        return value

    with Engine(store, threads=2) as engine:
        handle = engine.start(parent, run_id="cf")
        wait_for_status(engine, "cf", RunStatus.WAITING)
        handle.cancel()
        with pytest.raises(Cancelled):
            handle.result(timeout=10)
        assert engine.get_run("cf/1").status is RunStatus.COMPLETED
        assert engine.get_run("cf").status is RunStatus.CANCELLED


# -- resuming a parent never re-runs a finished child ---------------------------------------------

RESUME_SCRIPT = """
@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def child_step(x):
    record("child", x)
    return x * 2


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def parent_step(x):
    record("parent-step", x)
    hang()   # the worker is killed here, after the child finished
    return x + 1


@intemporal.workflow(name=WF_NAME + "-child")
def child(x):
    return child_step(x)


@intemporal.workflow(name=WF_NAME)
def parent(x):
    doubled = child(x)
    return parent_step(doubled)


WORKFLOW = parent
"""


def test_resuming_a_parent_does_not_run_a_finished_child_again(tmp_path: Path) -> None:
    # Given a worker killed in the parent's activity that follows a completed child
    crash = run_and_kill(tmp_path, RESUME_SCRIPT, lines=2, args=(21,))
    assert crash.lines() == ["child 21", "parent-step 42"]
    child_events = journal_events(crash.store, f"{crash.run_id}/1")
    assert child_events[-1]["type"] == "run_completed"

    # When the parent is resumed in another process
    with Engine(FileStore(crash.store), threads=2) as engine:
        assert engine.resume(crash.run_id).result(timeout=10) == 43
        assert engine.get_run(crash.run_id).status is RunStatus.COMPLETED

    # Then the child did not run again; only the step in flight at the kill did
    assert collections.Counter(crash.lines()) == {"child 21": 1, "parent-step 42": 2}
    assert sum(e["type"] == "run_started" for e in journal_events(crash.store, "crash-run/1")) == 1


UNFINISHED_CHILD_SCRIPT = """
@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step(who, i):
    record(who, i)
    if who == "child" and i == 1:
        hang()   # the worker is killed inside the child's second step
    return i


@intemporal.workflow(name=WF_NAME + "-child")
def child():
    return [step("child", i) for i in range(3)]


@intemporal.workflow(name=WF_NAME)
def parent():
    step("parent", 0)
    return child()


WORKFLOW = parent
"""


@pytest.mark.parametrize("how", ["resume", "recover"])
def test_a_child_cut_short_by_a_crash_continues_where_it_stopped(tmp_path: Path, how: str) -> None:
    crash = run_and_kill(tmp_path, UNFINISHED_CHILD_SCRIPT, lines=3)
    assert crash.lines() == ["parent 0", "child 0", "child 1"]

    with Engine(FileStore(crash.store), threads=2) as engine:
        if how == "resume":
            handle = engine.resume(crash.run_id)
        else:
            handles = {h.run_id: h for h in engine.recover()}
            assert crash.run_id in handles
            handle = handles[crash.run_id]
        assert handle.result(timeout=10) == [0, 1, 2]
        wait_for_status(engine, f"{crash.run_id}/2", RunStatus.COMPLETED)

    # completed steps of parent and child were replayed, not run again
    assert collections.Counter(crash.lines()) == {
        "parent 0": 1,
        "child 0": 1,
        "child 1": 2,
        "child 2": 1,
    }


SUBMITTED_CHILDREN_SCRIPT = """
import time

UNBLOCK = SIDE_EFFECTS + ".unblock"   # never created while the worker lives


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def work(i):
    record("work", i)
    if i >= 2:
        while not os.path.exists(UNBLOCK):
            time.sleep(0.005)
    return i * 10


@intemporal.workflow(name=WF_NAME + "-child")
def child(i):
    return work(i)


@intemporal.workflow(name=WF_NAME)
def parent():
    return intemporal.join_all([intemporal.submit(child, i) for i in range(4)])


WORKFLOW = parent
"""


def test_a_crash_with_submitted_children_in_flight_reruns_only_the_unfinished(
    tmp_path: Path,
) -> None:
    def two_children_done(store: Path, run_id: str) -> bool:
        ends = [journal_events(store, f"{run_id}/{i}")[-1:] for i in (1, 2)]
        return all(end and end[0]["type"] == "run_completed" for end in ends)

    # Given a worker killed while children 3 and 4 are busy and children 1 and 2 are done
    crash = run_and_kill(tmp_path, SUBMITTED_CHILDREN_SCRIPT, lines=4, ready=two_children_done)
    assert sorted(crash.lines()) == ["work 0", "work 1", "work 2", "work 3"]

    # When the parent is resumed here, with the busy ones now free to finish
    (tmp_path / (crash.side_effects.name + ".unblock")).touch()
    with Engine(FileStore(crash.store), threads=4) as engine:
        assert engine.resume(crash.run_id).result(timeout=10) == [0, 10, 20, 30]
        for i in range(1, 5):
            wait_for_status(engine, f"{crash.run_id}/{i}", RunStatus.COMPLETED)

    # Then the finished children did not run again
    assert collections.Counter(crash.lines()) == {
        "work 0": 1,
        "work 1": 1,
        "work 2": 2,
        "work 3": 2,
    }
