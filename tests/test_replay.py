"""Replay: crash and resume, recorded exceptions, non-determinism, recover(), failed runs."""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls, clone_prefix, new_version, snapshot
from process_helpers import Crash, run_and_kill, wait_until

import intemporal
from intemporal import (
    Engine,
    FileStore,
    NonDeterminismError,
    RetryPolicy,
    RunStatus,
)

ONCE = RetryPolicy(max_attempts=1)


class LedgerError(Exception):
    """A module-level exception type: replay rebuilds it with its type and message."""


class CodedError(Exception):
    """An exception with extra constructor arguments."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code, self.text = code, text

    def __str__(self) -> str:
        return f"[{self.code}] {self.text}"


# -- crash and resume with a real process ---------------------------------------------------

TWENTY = """
@intemporal.activity
def step(i):
    record(i)
    if i == KILL_AT:
        hang()  # in the child: the kill lands while this activity is in flight
    return i * i


@intemporal.workflow(name=WF_NAME)
def twenty(n):
    return [step(i) for i in range(n)]


WORKFLOW = twenty
"""

EXPECTED_TWENTY = [i * i for i in range(20)]


def _completed_steps(crash: Crash) -> set[int]:
    return {e["seq"] for e in crash.events() if e["type"] == "activity_completed"}


@pytest.mark.parametrize("via", ["start", "run"])
@pytest.mark.parametrize("kill_at", [0, 9, 19])
def test_sigkill_mid_activity_then_resume_runs_only_the_unfinished_steps(
    tmp_path: Path, kill_at: int, via: str
) -> None:
    # Given a run executed by `start().result()` or by `run()` (its journal created
    # claimed, synced at its first durable step), SIGKILLed inside step `kill_at`
    crash = run_and_kill(
        tmp_path, TWENTY.replace("KILL_AT", str(kill_at)), lines=kill_at + 1, args=(20,), via=via
    )
    # the journal holds exactly the steps that finished before the kill (seq = i + 1)
    assert _completed_steps(crash) == set(range(1, kill_at + 1))
    with Engine(FileStore(crash.store), threads=2) as engine:
        info = engine.get_run(crash.run_id)
        if kill_at > 0:  # with no step journaled yet the run still reads as pending
            assert info.status is RunStatus.RUNNING and info.orphaned
        assert not info.status.finished
        assert engine.resume(crash.run_id).result(timeout=20) == EXPECTED_TWENTY
        assert engine.get_run(crash.run_id).status is RunStatus.COMPLETED
        events = engine.history(crash.run_id)
    counts = crash.counts()
    assert {int(k): v for k, v in counts.items() if v != 1} == {kill_at: 2}
    assert sorted(int(k) for k in counts) == list(range(20))
    done = [e["seq"] for e in events if e["type"] == "activity_completed"]
    assert done == list(range(1, 21))  # each step recorded once, in order
    assert [e["type"] for e in events].count("run_started") == 1


FREE_RUNNING = """
@intemporal.activity
def step(i):
    record(i)
    return i * 3


@intemporal.workflow(name=WF_NAME)
def many(n):
    total = 0
    for i in range(n):
        total += step(i)
    return total


WORKFLOW = many
"""


@pytest.mark.parametrize("via", ["start", "run"])
def test_sigkill_at_an_arbitrary_point_is_at_least_once_and_at_most_one_rerun(
    tmp_path: Path, via: str
) -> None:
    n = 300  # far more than can run between the 20th side effect and the kill
    crash = run_and_kill(tmp_path, FREE_RUNNING, lines=20, args=(n,), via=via)
    completed = _completed_steps(crash)
    ran_before = crash.counts()
    assert len(completed) >= 19 and len(completed) < n
    with Engine(FileStore(crash.store), threads=2) as engine:
        assert engine.resume(crash.run_id).result(timeout=20) == sum(3 * i for i in range(n))
    counts = {int(k): v for k, v in crash.counts().items()}
    assert sorted(counts) == list(range(n))
    for seq in completed:  # journaled before the kill: never again
        assert counts[seq - 1] == 1
    rerun = [i for i, c in counts.items() if c > 1]
    assert len(rerun) <= 1 and all(counts[i] == 2 for i in rerun)
    assert all(str(i) in ran_before for i in rerun)  # only a step the child had begun


def test_recover_resumes_a_run_orphaned_by_sigkill(tmp_path: Path) -> None:
    crash = run_and_kill(tmp_path, TWENTY.replace("KILL_AT", "5"), lines=6, args=(20,))
    with Engine(FileStore(crash.store), threads=2) as engine:
        handles = engine.recover()
        assert [h.run_id for h in handles] == [crash.run_id]
        assert handles[0].result(timeout=20) == EXPECTED_TWENTY
        assert engine.recover() == []  # nothing left behind
    assert crash.counts()["5"] == 2
    assert sum(crash.counts().values()) == 21


# -- in-process crashes: a journal cut short -------------------------------------------------


def _steps(calls: Calls, name: str = "step") -> Any:
    @intemporal.activity(name=name)
    def step(i: int) -> int:
        calls.hit(i)
        return i * i

    return step


def test_resume_replays_completed_steps_without_running_them(engine: Engine) -> None:
    calls = Calls()
    step = _steps(calls)
    entered = Calls()

    @intemporal.workflow
    def wf(n: int) -> list[int]:
        entered.hit("body")
        return [step(i) for i in range(n)]

    assert engine.run(wf, 10, run_id="full") == [i * i for i in range(10)]
    assert entered["body"] == 1  # the body runs once per execution, never once per step
    for keep in (1, 2, 6, 11):  # started only / 1 step / 5 steps / all 10 steps
        clone_prefix(engine.store, "full", f"cut-{keep}", keep=keep)
        assert engine.resume(f"cut-{keep}").result(timeout=10) == [i * i for i in range(10)]
    assert entered["body"] == 5
    # each cut re-ran exactly the steps it had not recorded
    assert calls.counts == {
        i: 1 + sum(1 for keep in (1, 2, 6, 11) if i >= keep - 1) for i in range(10)
    }


def test_resume_of_a_completed_run_runs_nothing(engine: Engine) -> None:
    calls = Calls()
    step = _steps(calls)

    @intemporal.workflow
    def wf() -> int:
        return step(3)

    assert engine.run(wf, run_id="finished") == 9
    before = snapshot(engine.store, "finished")
    assert engine.resume("finished").result(timeout=10) == 9
    assert calls[3] == 1
    assert snapshot(engine.store, "finished") == before


def test_recorded_exceptions_are_reraised_on_replay(engine: Engine) -> None:
    calls = Calls()

    @intemporal.activity(retry=ONCE)
    def debit(amount: int) -> int:
        calls.hit("debit")
        raise LedgerError(f"insufficient funds for {amount}")

    @intemporal.activity(retry=ONCE)
    def coded() -> None:
        calls.hit("coded")
        raise CodedError(402, "payment required")

    @intemporal.activity
    def after(x: str) -> str:
        calls.hit("after")
        return x

    @intemporal.workflow
    def wf() -> list[Any]:
        out: list[Any] = []
        for act in (lambda: debit(5), coded):
            try:
                act()
            except Exception as exc:
                out.append([type(exc).__name__, str(exc), getattr(exc, "code", None)])
        out.append(after("done"))
        return out

    expected = [
        ["LedgerError", "insufficient funds for 5", None],
        ["CodedError", "[402] payment required", 402],
        "done",
    ]
    assert engine.run(wf, run_id="raises") == expected
    events = engine.history("raises")
    assert [e["type"] for e in events if "seq" in e] == [
        "activity_failed",
        "activity_failed",
        "activity_completed",
    ]
    clone_prefix(engine.store, "raises", "raises-cut", keep=3)  # both failures, not `after`
    assert engine.resume("raises-cut").result(timeout=10) == expected
    assert calls.counts == {"debit": 1, "coded": 1, "after": 2}


def test_a_class_defined_in_a_function_comes_back_as_itself_in_the_same_process(
    engine: Engine,
) -> None:
    class LocalError(Exception):  # no import finds it; this process still knows it
        pass

    @intemporal.activity(retry=ONCE)
    def fails() -> None:
        raise LocalError("gone")

    @intemporal.workflow
    def wf() -> list[str]:
        try:
            fails()
        except LocalError as exc:
            return [type(exc).__name__, str(exc)]
        return []

    assert engine.run(wf, run_id="local") == ["LocalError", "gone"]
    clone_prefix(engine.store, "local", "local-cut", keep=2)
    assert engine.resume("local-cut").result(timeout=10) == ["LocalError", "gone"]


def test_a_failed_run_replays_its_exception_from_the_store(
    store: intemporal.Store, engine: Engine
) -> None:
    @intemporal.activity(retry=ONCE)
    def debit() -> None:
        raise LedgerError("frozen account")

    @intemporal.workflow
    def wf() -> None:
        debit()

    with pytest.raises(LedgerError):
        engine.run(wf, run_id="frozen")
    with Engine(store, worker=False) as client:
        with pytest.raises(LedgerError, match=r"^frozen account$") as info:
            client.start(wf, run_id="frozen").result(timeout=10)
    assert type(info.value) is LedgerError


# -- non-determinism -------------------------------------------------------------------------


def test_changed_code_raises_non_determinism_and_leaves_the_journal(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls()
    name = "nd-workflow"

    def make(label: str) -> Any:
        @intemporal.activity(name=label)
        def act(x: int) -> str:
            calls.hit(label)
            return f"{label}:{x}"

        return act

    a, b, c, other = make("nd.a"), make("nd.b"), make("nd.c"), make("nd.other")

    def original() -> list[str]:
        return [a(1), b(2), c(3)]

    def changed() -> list[str]:
        out = [a(1)]
        try:  # even code that swallows every exception cannot hide the divergence
            out.append(other(2))
        except Exception:
            out.append("swallowed")
        return [*out, c(3)]

    wf = intemporal.workflow(name=name)(original)
    assert engine.run(wf, run_id="nd-full") == ["nd.a:1", "nd.b:2", "nd.c:3"]
    clone_prefix(engine.store, "nd-full", "nd", keep=3)  # started, a, b
    before = snapshot(engine.store, "nd")

    new_version(wf, changed, monkeypatch)  # the code is deployed again, changed
    with pytest.raises(NonDeterminismError) as info:
        engine.resume("nd").result(timeout=10)
    err = info.value
    assert (err.seq, err.recorded, err.new) == (2, "nd.b", "nd.other")
    assert "2" in str(err) and "nd.b" in str(err) and "nd.other" in str(err)
    assert isinstance(err, intemporal.IntemporalError)
    assert snapshot(engine.store, "nd") == before
    assert engine.get_run("nd").status is not RunStatus.FAILED
    assert calls["nd.other"] == 0 and calls["nd.c"] == 1

    intemporal.workflow(name=name)(original)  # the fix: the old code is restored
    assert engine.resume("nd").result(timeout=10) == ["nd.a:1", "nd.b:2", "nd.c:3"]
    assert engine.get_run("nd").status is RunStatus.COMPLETED
    assert calls.counts == {"nd.a": 1, "nd.b": 1, "nd.c": 2}


def test_code_that_returns_early_is_non_deterministic_too(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls()
    step = _steps(calls, "early.step")
    name = "nd-early"

    def three() -> int:
        return step(1) + step(2) + step(3)

    def one() -> int:
        return step(1)

    wf = intemporal.workflow(name=name)(three)
    engine.run(wf, run_id="early-full")
    clone_prefix(engine.store, "early-full", "early", keep=3)
    before = snapshot(engine.store, "early")
    new_version(wf, one, monkeypatch)
    with pytest.raises(NonDeterminismError) as info:
        engine.resume("early").result(timeout=10)
    assert info.value.seq == 2 and info.value.recorded == "early.step"
    assert snapshot(engine.store, "early") == before
    intemporal.workflow(name=name)(three)
    assert engine.resume("early").result(timeout=10) == 1 + 4 + 9


# -- recover() and failed runs ----------------------------------------------------------------


def test_recover_resumes_orphaned_runs_only(store: intemporal.Store, engine: Engine) -> None:
    calls = Calls()
    step = _steps(calls)

    @intemporal.workflow
    def wf(n: int) -> list[int]:
        return [step(i) for i in range(n)]

    @intemporal.workflow
    def broken() -> None:
        raise LedgerError("no")

    engine.run(wf, 3, run_id="complete")
    with pytest.raises(LedgerError):
        engine.run(broken, run_id="failed")
    clone_prefix(store, "complete", "orphan-a", keep=2)
    clone_prefix(store, "complete", "orphan-b", keep=3)
    calls.counts.clear()
    with Engine(store, threads=2) as other:
        handles = other.recover()
        assert sorted(h.run_id for h in handles) == ["orphan-a", "orphan-b"]
        assert [h.result(timeout=10) for h in handles] == [[0, 1, 4]] * 2
        assert other.recover() == []
    assert calls.counts == {1: 1, 2: 2}
    assert store.summary("failed").status is RunStatus.FAILED


def test_each_event_names_the_engine_that_appended_it(
    store: intemporal.Store, engine: Engine
) -> None:
    calls = Calls()
    step = _steps(calls, "owned.step")

    @intemporal.workflow(name="owned.wf")
    def wf(n: int) -> list[int]:
        return [step(i) for i in range(n)]

    # Given a run cut short after its first step, executed by `engine`
    engine.run(wf, 3, run_id="whole")
    clone_prefix(store, "whole", "cut", keep=2)
    # When another engine takes it over
    with Engine(store, threads=2) as other:
        assert other.resume("cut").result(timeout=10) == [0, 1, 4]
    # Then every event after `run_started` names its engine: the first's, then the other's
    events = store.read("cut")
    assert "owner" not in events[0]
    owners = [e["owner"] for e in events[1:]]
    assert owners == [engine.engine_id] + [other.engine_id] * (len(events) - 2)
    assert [e["type"] for e in events[2:4]] == ["run_recovered", "activity_completed"]


def test_recover_leaves_runs_owned_by_a_live_engine(
    store: intemporal.Store, engine: Engine
) -> None:
    gate, started = threading.Event(), threading.Event()
    calls = Calls()

    @intemporal.activity
    def busy() -> str:
        calls.hit("busy")
        started.set()
        assert gate.wait(10)
        return "busy"

    @intemporal.workflow
    def wf() -> str:
        return busy()

    try:
        h = engine.start(wf, run_id="owned")
        assert started.wait(10)
        with Engine(store, threads=2) as other:
            assert other.recover() == []
            # an explicit resume elsewhere does not execute it a second time either
            h2 = other.resume("owned")
            gate.set()
            assert h2.result(timeout=10) == "busy"
    finally:
        gate.set()
    assert h.result(timeout=10) == "busy"
    assert calls["busy"] == 1


def test_resuming_a_failed_run_retries_the_failed_step(engine: Engine) -> None:
    calls = Calls()
    fixed = threading.Event()
    step = _steps(calls)

    @intemporal.activity(retry=ONCE)
    def fragile() -> str:
        calls.hit("fragile")
        if not fixed.is_set():
            raise LedgerError("down")
        return "up"

    @intemporal.workflow
    def wf() -> list[Any]:
        return [step(1), fragile(), step(2)]

    h = engine.start(wf, run_id="retry-me")
    with pytest.raises(LedgerError):
        h.result(timeout=10)
    assert engine.get_run("retry-me").status is RunStatus.FAILED
    fixed.set()
    assert engine.resume("retry-me").result(timeout=10) == [1, "up", 4]
    assert engine.get_run("retry-me").status is RunStatus.COMPLETED
    assert calls.counts == {1: 1, "fragile": 2, 2: 1}
    types = [e["type"] for e in engine.history("retry-me")]
    assert types.index("run_failed") < types.index("run_resumed") < types.index("run_completed")


def test_resuming_a_failed_run_gets_a_fresh_retry_budget(engine: Engine) -> None:
    calls = Calls()
    fixed = threading.Event()

    @intemporal.activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
    def fragile() -> str:
        calls.hit("fragile")
        if not fixed.is_set() or calls["fragile"] < 4:
            raise LedgerError(f"down {calls['fragile']}")
        return "up"

    @intemporal.workflow
    def wf() -> str:
        return fragile()

    with pytest.raises(LedgerError, match="down 2"):
        engine.run(wf, run_id="budget-again")
    fixed.set()
    assert engine.resume("budget-again").result(timeout=10) == "up"
    assert calls["fragile"] == 4
    done = next(e for e in engine.history("budget-again") if e["type"] == "activity_completed")
    assert done["attempts"] == 2


def test_resuming_a_failed_run_keeps_failures_the_workflow_handled(engine: Engine) -> None:
    # A failure the workflow caught is part of its history: resuming the failed run must
    # replay it (not run the activity again), or the replay diverges from the journal.
    calls = Calls()
    fixed = threading.Event()

    @intemporal.activity(retry=ONCE)
    def risky() -> str:
        calls.hit("risky")
        if calls["risky"] == 1:
            raise LedgerError("first call fails")
        return "risky"

    @intemporal.activity
    def fallback() -> str:
        calls.hit("fallback")
        return "fallback"

    @intemporal.activity(retry=ONCE)
    def final() -> str:
        calls.hit("final")
        if not fixed.is_set():
            raise LedgerError("final is broken")
        return "final"

    @intemporal.workflow
    def wf() -> list[str]:
        try:
            first = risky()
        except LedgerError:
            first = fallback()
        return [first, final()]

    with pytest.raises(LedgerError, match="final is broken"):
        engine.run(wf, run_id="handled")
    fixed.set()
    assert engine.resume("handled").result(timeout=10) == ["fallback", "final"]
    assert calls.counts == {"risky": 1, "fallback": 1, "final": 2}


def test_resuming_a_run_that_failed_in_workflow_code_replays_every_step(engine: Engine) -> None:
    calls = Calls()
    step = _steps(calls)
    fixed = threading.Event()

    @intemporal.workflow
    def wf() -> int:
        total = step(1) + step(2)
        if not fixed.is_set():
            raise LedgerError("bug in the workflow")
        return total + step(3)

    with pytest.raises(LedgerError):
        engine.run(wf, run_id="wf-bug")
    fixed.set()
    assert engine.resume("wf-bug").result(timeout=10) == 14
    assert calls.counts == collections.Counter({1: 1, 2: 1, 3: 1})
    # resuming it once more changes nothing
    before = snapshot(engine.store, "wf-bug")
    assert engine.resume("wf-bug").result(timeout=10) == 14
    assert snapshot(engine.store, "wf-bug") == before


# -- shutdown, and finding the code again -----------------------------------------------------


def test_closing_the_engine_finishes_the_activity_in_flight_and_leaves_the_run_resumable(
    store: intemporal.Store,
) -> None:
    calls = Calls()
    gate, started = threading.Event(), threading.Event()

    @intemporal.activity
    def first() -> str:
        calls.hit("first")
        started.set()
        assert gate.wait(10)
        return "first"

    @intemporal.activity
    def second() -> str:
        calls.hit("second")
        return "second"

    @intemporal.workflow
    def wf() -> list[str]:
        return [first(), second()]

    engine = Engine(store, threads=2)
    closer = threading.Thread(target=engine.close)
    try:
        engine.start(wf, run_id="closing")
        assert started.wait(10)
        closer.start()
        wait_until(lambda: engine.closing, what="close() to begin")
    finally:
        gate.set()
        closer.join(timeout=10)
        engine.close()
    assert not closer.is_alive()
    types = [e["type"] for e in store.read("closing")]
    assert types == ["run_started", "activity_completed"]  # in flight: finished and recorded
    assert calls.counts == {"first": 1}
    assert not store.summary("closing").status.finished
    with Engine(store, threads=2) as again:
        assert again.resume("closing").result(timeout=10) == ["first", "second"]
    assert calls.counts == {"first": 1, "second": 1}


def test_resume_without_the_code_raises_workflow_not_found(store: intemporal.Store) -> None:
    first = {
        "type": "run_started",
        "run_id": "lost",
        "workflow": "no-such-workflow-anywhere",
        "args": [],
        "kwargs": {},
        "ref": {"module": "no_such_module_xyz", "qualname": "wf", "script": None},
        "ts": 1.0,
    }
    assert store.create("lost", first)
    with Engine(store, threads=1) as engine:
        with pytest.raises(intemporal.WorkflowNotFound) as info:
            engine.resume("lost")
    assert "no-such-workflow-anywhere" in str(info.value)
    assert "no_such_module_xyz" in str(info.value)
    assert store.read("lost") == [first]


def test_resume_finds_a_local_workflow_from_its_dill_copy(engine: Engine) -> None:
    @intemporal.workflow(name="dill-only-workflow")
    def wf(n: int) -> list[int]:
        return [square_of(i) for i in range(n)]

    assert engine.run(wf, 3, run_id="dilled") == [0, 1, 4]
    clone_prefix(engine.store, "dilled", "dilled-cut", keep=2)
    # as in a process that never defined it
    del intemporal.api.REGISTRY.workflows[(intemporal.api.import_path(wf.fn), wf.name)]
    assert engine.resume("dilled-cut").result(timeout=10) == [0, 1, 4]
    assert engine.get_run("dilled-cut").status is RunStatus.COMPLETED


@intemporal.activity
def square_of(i: int) -> int:
    return i * i
