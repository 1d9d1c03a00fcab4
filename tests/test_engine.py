"""The engine's public surface: defining work, starting runs, looking at them, errors."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import pytest
from helpers import Calls, clone_prefix

import intemporal
from intemporal import (
    Engine,
    FileStore,
    IntemporalError,
    MemoryStore,
    RetryPolicy,
    RunConflict,
    RunNotFound,
    RunStatus,
    SerializationError,
)

# -- the seed example ----------------------------------------------------------------------


@intemporal.activity
def activity_fn(a: Any) -> list[Any]:
    return ["processed", a]


class MyActivities(Protocol):
    def foo(self, a: Any) -> list[Any]: ...


class Impl:
    def foo(self, a: Any) -> list[Any]:
        return [a, "child"]


pr = intemporal.stub_protocol(MyActivities)


@intemporal.workflow
def seed_workflow(i: int) -> dict[str, Any]:
    return {"activity": activity_fn(i), "protocol": pr.foo("X")}


SEED_RESULT = {"activity": ["processed", 1], "protocol": ["X", "child"]}


class OrderError(Exception):
    """A user exception defined at module level, so it can be rebuilt with its type."""


def test_seed_example(engine: Engine) -> None:
    assert engine.run(seed_workflow, 1, protocols={MyActivities: Impl()}) == SEED_RESULT


def test_seed_example_journal_names(engine: Engine) -> None:
    handle = engine.start(seed_workflow, 1, protocols={MyActivities: Impl()})
    assert handle.result(timeout=10) == SEED_RESULT
    steps = [(e["seq"], e["name"]) for e in engine.history(handle.run_id) if "seq" in e]
    assert steps == [(1, "activity_fn"), (2, "MyActivities.foo")]
    assert engine.get_run(handle.run_id).workflow == "seed_workflow"


def test_seed_example_resumed_rebuilds_protocol_implementation(engine: Engine) -> None:
    # A run cut short after its first step is resumed without `protocols=`: the engine
    # recreates `Impl()` from the import path recorded at start.
    engine.run(seed_workflow, 1, protocols={MyActivities: Impl()}, run_id="seed")
    clone_prefix(engine.store, "seed", "seed-cut", keep=2)
    assert engine.resume("seed-cut").result(timeout=10) == SEED_RESULT


# -- names -----------------------------------------------------------------------------------


class Holder:
    @staticmethod
    def nested(x: int) -> int:
        return x + 1


def test_names_default_to_qualname_and_name_overrides(engine: Engine) -> None:
    plain = intemporal.activity(Holder.nested)
    named = intemporal.activity(name="custom-activity")(Holder.nested)

    def body(x: int) -> list[int]:
        return [plain(x), named(x)]

    wf_default = intemporal.workflow(body)
    wf_named = intemporal.workflow(name="custom-workflow")(body)
    assert plain.name == "Holder.nested"
    assert named.name == "custom-activity"
    assert wf_default.name == body.__qualname__
    assert wf_named.name == "custom-workflow"

    h = engine.start(wf_named, 1)
    assert h.result(timeout=10) == [2, 2]
    assert engine.get_run(h.run_id).workflow == "custom-workflow"
    names = [e["name"] for e in engine.history(h.run_id) if "seq" in e]
    assert names == ["Holder.nested", "custom-activity"]
    assert engine.history(h.run_id)[0]["workflow"] == "custom-workflow"

    h2 = engine.start(wf_default, 1)
    assert h2.result(timeout=10) == [2, 2]
    assert engine.get_run(h2.run_id).workflow == body.__qualname__


def test_decorators_keep_the_function_metadata() -> None:
    assert activity_fn.__name__ == "activity_fn"
    assert activity_fn.__wrapped__ is activity_fn.fn
    assert seed_workflow.__name__ == "seed_workflow"
    assert repr(activity_fn) == "<intemporal.activity activity_fn>"


# -- outside a workflow --------------------------------------------------------------------


def test_activity_called_outside_a_workflow_runs_plainly(store: intemporal.Store) -> None:
    calls = Calls()

    @intemporal.activity(retry=RetryPolicy(max_attempts=5, initial_interval=0.01))
    def act(x: int) -> int:
        calls.hit(x)
        if x < 0:
            raise OrderError("negative")
        return x * 2

    assert act(21) == 42
    with pytest.raises(OrderError):  # no retry outside a workflow: a plain call
        act(-1)
    assert calls[-1] == 1
    assert list(store.run_ids()) == []


def test_workflow_called_outside_an_engine_runs_plainly() -> None:
    assert seed_workflow.fn is not None
    # The activity runs plainly; the protocol stub has no implementation outside a run.
    with pytest.raises(RuntimeError, match="outside a workflow"):
        seed_workflow(1)

    @intemporal.workflow
    def wf(i: int) -> list[Any]:
        return activity_fn(i)

    assert wf(3) == ["processed", 3]


def test_calls_inside_an_activity_run_plainly(engine: Engine) -> None:
    calls = Calls()

    @intemporal.activity
    def inner(x: int) -> int:
        calls.hit("inner")
        return x + 1

    @intemporal.activity
    def outer(x: int) -> int:
        return inner(x) * 10

    @intemporal.workflow
    def wf(x: int) -> int:
        return outer(x)

    h = engine.start(wf, 1)
    assert h.result(timeout=10) == 20
    assert [e["name"] for e in engine.history(h.run_id) if "seq" in e] == [outer.name]


# -- stubs ------------------------------------------------------------------------------------


def test_stub_makes_a_plain_function_durable(engine: Engine) -> None:
    calls = Calls()

    def double(x: int) -> int:
        calls.hit(x)
        return 2 * x

    @intemporal.workflow
    def wf(n: int) -> list[int]:
        act = intemporal.stub(double)
        return [act(i) for i in range(n)]

    assert engine.run(wf, 3, run_id="stubbed") == [0, 2, 4]
    events = engine.history("stubbed")
    assert [e["name"] for e in events if "seq" in e] == [double.__qualname__] * 3
    # durable: a resumed copy replays the recorded steps instead of calling again
    clone_prefix(engine.store, "stubbed", "stubbed-cut", keep=3)
    assert engine.resume("stubbed-cut").result(timeout=10) == [0, 2, 4]
    assert calls.counts == {0: 1, 1: 1, 2: 2}


def test_stub_options_override_the_decorator(engine: Engine) -> None:
    calls = Calls()

    @intemporal.activity(retry=RetryPolicy(max_attempts=1), timeout=None)
    def flaky(key: str) -> str:
        calls.hit(key)
        if calls[key] < 3:
            raise OrderError(f"try {calls[key]}")
        return "ok"

    @intemporal.workflow
    def wf() -> str:
        retried = intemporal.stub(flaky, retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
        return retried("stubbed")

    @intemporal.workflow
    def wf_plain() -> str:
        return flaky("decorated")

    assert engine.run(wf) == "ok"
    assert calls["stubbed"] == 3
    with pytest.raises(OrderError, match="try 1"):
        engine.run(wf_plain)
    assert calls["decorated"] == 1
    # the stub keeps the decorated activity's name and leaves the original untouched
    assert intemporal.stub(flaky).name == flaky.name
    assert flaky.retry.max_attempts == 1


def test_stub_timeout_overrides_the_decorator(engine: Engine) -> None:
    gate = threading.Event()

    @intemporal.activity(retry=RetryPolicy(max_attempts=1))
    def slow() -> str:
        gate.wait(10)
        return "late"

    @intemporal.workflow
    def wf() -> str:
        return intemporal.stub(slow, timeout=0.05)()

    try:
        h = engine.start(wf)
        with pytest.raises(intemporal.ActivityTimeout):
            h.result(timeout=10)
    finally:
        gate.set()
    assert engine.get_run(h.run_id).status is RunStatus.FAILED


class Inventory(Protocol):
    def reserve(self, item: str) -> str: ...

    def query(self, item: str) -> int: ...


class FlakyInventory:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def reserve(self, item: str) -> str:
        self.calls.hit("reserve")
        if self.calls["reserve"] < 3:
            raise OrderError("reserve failed")
        return f"reserved {item}"

    def query(self, item: str) -> int:
        self.calls.hit("query")
        raise OrderError("query failed")


def test_stub_protocol_options_and_per_method_options(engine: Engine) -> None:
    calls = Calls()
    inv = intemporal.stub_protocol(
        Inventory,
        retry=RetryPolicy(max_attempts=3, initial_interval=0.01),
        methods={"query": {"retry": RetryPolicy(max_attempts=1)}},
    )

    @intemporal.workflow
    def wf(item: str) -> list[Any]:
        out: list[Any] = [inv.reserve(item)]
        try:
            inv.query(item)
        except OrderError as exc:
            out.append(str(exc))
        return out

    h = engine.start(wf, "book", protocols={Inventory: FlakyInventory(calls)})
    assert h.result(timeout=10) == ["reserved book", "query failed"]
    assert calls.counts == {"reserve": 3, "query": 1}
    events = engine.history(h.run_id)
    done = [(e["type"], e["name"], e.get("attempts")) for e in events if "attempts" in e]
    assert done == [
        ("activity_completed", "Inventory.reserve", 3),
        ("activity_failed", "Inventory.query", 1),
    ]


def test_stub_protocol_timeout_and_missing_implementation(engine: Engine) -> None:
    gate = threading.Event()

    class Slow:
        def reserve(self, item: str) -> str:
            gate.wait(10)
            return item

        def query(self, item: str) -> int:
            return 1

    inv = intemporal.stub_protocol(
        Inventory, methods={"reserve": {"timeout": 0.05, "retry": RetryPolicy(max_attempts=1)}}
    )

    @intemporal.workflow
    def wf() -> Any:
        return inv.reserve("x")

    try:
        with pytest.raises(intemporal.ActivityTimeout):
            engine.start(wf, protocols={Inventory: Slow()}).result(timeout=10)
    finally:
        gate.set()

    @intemporal.workflow
    def wf_query() -> Any:
        return inv.query("x")

    assert engine.run(wf_query, protocols={Inventory: Slow()}) == 1
    proxy: Any = inv
    with pytest.raises(AttributeError):
        proxy._private  # noqa: B018
    with pytest.raises(AttributeError):
        proxy.missing  # noqa: B018


# -- running and looking at runs ------------------------------------------------------------


def test_start_returns_at_once_and_result_waits(engine: Engine) -> None:
    gate = threading.Event()
    started = threading.Event()

    @intemporal.activity
    def blocked() -> str:
        started.set()
        assert gate.wait(10)
        return "done"

    @intemporal.workflow
    def wf() -> str:
        return blocked()

    try:
        h = engine.start(wf, run_id="waiting-run")
        assert h.run_id == "waiting-run"
        assert started.wait(10)
        assert h.status() is RunStatus.RUNNING
        with pytest.raises(TimeoutError):
            h.result(timeout=0.05)
    finally:
        gate.set()
    assert h.result(timeout=10) == "done"
    assert h.status() is RunStatus.COMPLETED


def test_run_is_start_then_result(engine: Engine) -> None:
    @intemporal.workflow
    def wf(a: int, b: int = 0) -> int:
        return a + b

    assert engine.run(wf, 1, kwargs={"b": 2}, run_id="summed") == 3
    assert engine.get_run("summed").result == 3
    assert engine.history("summed")[0]["kwargs"] == {"b": 2}


def test_get_run_fields(engine: Engine) -> None:
    before = time.time()
    engine.run(seed_workflow, 1, protocols={MyActivities: Impl()}, run_id="info-run")
    info = engine.get_run("info-run")
    assert info.run_id == "info-run"
    assert info.workflow == "seed_workflow"
    assert info.status is RunStatus.COMPLETED
    assert before - 1 <= info.created_at <= info.updated_at <= time.time() + 1
    assert info.result == SEED_RESULT
    assert info.error is None


def test_get_run_of_a_failed_run_has_the_error(engine: Engine) -> None:
    @intemporal.workflow
    def wf() -> None:
        raise OrderError("out of stock")

    with pytest.raises(OrderError):
        engine.run(wf, run_id="failing")
    info = engine.get_run("failing")
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert "OrderError" in info.error and "out of stock" in info.error
    assert info.result is None


def test_list_runs_filters_newest_first_and_limit(engine: Engine) -> None:
    @intemporal.workflow(name="list-ok")
    def ok(i: int) -> int:
        return i

    @intemporal.workflow(name="list-bad")
    def bad(i: int) -> int:
        raise OrderError(str(i))

    for i in range(4):
        engine.run(ok, i, run_id=f"r{i}")
    with pytest.raises(OrderError):
        engine.run(bad, 9, run_id="r9")

    runs = engine.list_runs()
    assert [r.run_id for r in runs] == ["r9", "r3", "r2", "r1", "r0"]
    assert [r.created_at for r in runs] == sorted((r.created_at for r in runs), reverse=True)
    assert [r.run_id for r in engine.list_runs(limit=2)] == ["r9", "r3"]
    assert [r.run_id for r in engine.list_runs(status="failed")] == ["r9"]
    assert [r.run_id for r in engine.list_runs(status=RunStatus.FAILED)] == ["r9"]
    assert [r.run_id for r in engine.list_runs(status=RunStatus.COMPLETED, limit=1)] == ["r3"]
    assert [r.run_id for r in engine.list_runs(workflow="list-ok")] == ["r3", "r2", "r1", "r0"]
    assert engine.list_runs(workflow="list-bad", status="completed") == []
    assert engine.list_runs(workflow="nope") == []


def test_history_events_have_type_ts_and_seq(engine: Engine) -> None:
    @intemporal.activity
    def step(i: int) -> int:
        return i

    @intemporal.workflow
    def wf(n: int) -> int:
        return sum(step(i) for i in range(n))

    engine.run(wf, 3, run_id="hist")
    events = engine.history("hist")
    assert [e["type"] for e in events] == ["run_started"] + ["activity_completed"] * 3 + [
        "run_completed"
    ]
    assert all(isinstance(e["ts"], float) for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert [e["seq"] for e in events[1:4]] == [1, 2, 3]
    assert [e["result"] for e in events[1:4]] == [0, 1, 2]
    assert "seq" not in events[0] and "seq" not in events[-1]
    assert events[0]["workflow"] == wf.name
    assert events[-1]["result"] == 3


def test_run_status_is_a_str_enum() -> None:
    assert [s.value for s in RunStatus] == [
        "pending",
        "running",
        "waiting",
        "completed",
        "failed",
        "cancelled",
    ]
    for s in RunStatus:
        assert isinstance(s, str)
        assert s == s.name.lower()
        assert str(s) == s.value
    assert RunStatus.COMPLETED == "completed"
    assert RunStatus("failed") is RunStatus.FAILED


def test_pending_run_without_worker(store: intemporal.Store) -> None:
    with Engine(store, worker=False) as client:
        h = client.start(seed_workflow, 1, protocols={MyActivities: Impl()}, run_id="queued")
        assert h.status() is RunStatus.PENDING
    with Engine(store, threads=2) as worker:
        assert worker.start(seed_workflow, 1, run_id="queued").result(timeout=10) == SEED_RESULT


def test_run_id_and_info_inside_a_workflow(engine: Engine) -> None:
    @intemporal.workflow(name="introspect")
    def wf() -> list[Any]:
        info = intemporal.info()
        return [intemporal.run_id(), info.run_id, info.workflow, info.parent]

    assert engine.run(wf, run_id="me") == ["me", "me", "introspect", None]
    with pytest.raises(RuntimeError):
        intemporal.run_id()


# -- idempotency and run ids ---------------------------------------------------------------


def test_start_with_a_run_id_is_idempotent(engine: Engine) -> None:
    calls = Calls()

    @intemporal.activity
    def charge(amount: int) -> str:
        calls.hit("charge")
        return f"charged {amount}"

    @intemporal.workflow
    def wf(amount: int) -> str:
        return charge(amount)

    h1 = engine.start(wf, 10, run_id="order-42")
    assert h1.result(timeout=10) == "charged 10"
    h2 = engine.start(wf, 10, run_id="order-42")
    assert h2.run_id == "order-42"
    assert h2.result(timeout=10) == "charged 10"
    assert engine.run(wf, 10, run_id="order-42") == "charged 10"
    assert calls["charge"] == 1
    assert [r.run_id for r in engine.list_runs()] == ["order-42"]


def test_idempotent_start_while_the_run_is_in_flight(engine: Engine) -> None:
    calls = Calls()
    gate = threading.Event()

    @intemporal.activity
    def charge() -> str:
        calls.hit("charge")
        assert gate.wait(10)
        return "charged"

    @intemporal.workflow
    def wf() -> str:
        return charge()

    try:
        handles = [engine.start(wf, run_id="twice") for _ in range(5)]
    finally:
        gate.set()
    assert [h.result(timeout=10) for h in handles] == ["charged"] * 5
    assert calls["charge"] == 1


def test_idempotent_start_from_another_engine(store: intemporal.Store, engine: Engine) -> None:
    calls = Calls()

    @intemporal.workflow
    def wf() -> int:
        calls.hit("wf")
        return 7

    assert engine.run(wf, run_id="shared") == 7
    with Engine(store, threads=2) as other:
        assert other.run(wf, run_id="shared") == 7
    assert calls["wf"] == 1


def test_idempotent_start_of_a_failed_run_does_not_run_it_again(engine: Engine) -> None:
    calls = Calls()

    @intemporal.workflow
    def wf() -> None:
        calls.hit("wf")
        raise OrderError("boom")

    with pytest.raises(OrderError, match="boom"):
        engine.run(wf, run_id="failed-once")
    with pytest.raises(OrderError, match="boom"):
        engine.run(wf, run_id="failed-once")
    assert calls["wf"] == 1


def test_same_run_id_for_another_workflow_is_a_conflict(engine: Engine) -> None:
    @intemporal.workflow(name="first-wf")
    def first() -> int:
        return 1

    @intemporal.workflow(name="second-wf")
    def second() -> int:
        return 2

    assert engine.run(first, run_id="taken") == 1
    with pytest.raises(RunConflict) as info:
        engine.start(second, run_id="taken")
    assert isinstance(info.value, IntemporalError)
    assert "first-wf" in str(info.value) and "second-wf" in str(info.value)
    assert engine.get_run("taken").workflow == "first-wf"
    assert len(engine.history("taken")) == 2


UNSAFE_IDS = [
    "../x",
    "/abs",
    "",
    "a" * 201,
    "a/../b",
    "a//b",
    "a/",
    "./x",
    "..",
    "a b",
    "é",
    "a\nb",
]


@pytest.mark.parametrize("bad", UNSAFE_IDS, ids=repr)
def test_unsafe_run_ids_raise_value_error_and_write_nothing(
    store: intemporal.Store, engine: Engine, tmp_path: Path, bad: str
) -> None:
    @intemporal.workflow
    def wf() -> int:
        return 1

    with pytest.raises(ValueError):
        engine.start(wf, run_id=bad)
    with pytest.raises(ValueError):
        engine.run(wf, run_id=bad)
    for call in (engine.get_run, engine.history, engine.resume, engine.cancel):
        with pytest.raises(ValueError):
            call(bad)
    assert list(store.run_ids()) == []
    if isinstance(store, FileStore):
        assert list(store.root.rglob("*")) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


@pytest.mark.parametrize("good", ["a" * 200, "a:b@c.d-e_F9", "batch/7", "x/y/z", ".hidden"])
def test_unusual_but_valid_run_ids(engine: Engine, good: str) -> None:
    @intemporal.workflow
    def wf() -> str:
        return intemporal.run_id()

    assert engine.run(wf, run_id=good) == good
    assert engine.get_run(good).status is RunStatus.COMPLETED
    assert [r.run_id for r in engine.list_runs()] == [good]


def test_unknown_run_ids_raise_run_not_found(engine: Engine) -> None:
    for call in (engine.get_run, engine.history, engine.resume, engine.cancel):
        with pytest.raises(RunNotFound) as info:
            call("no-such-run")
        assert isinstance(info.value, IntemporalError)
        assert "no-such-run" in str(info.value)


# -- failures ---------------------------------------------------------------------------------


def test_workflow_exception_fails_the_run_and_result_reraises(
    store: intemporal.Store, engine: Engine
) -> None:
    @intemporal.activity(retry=RetryPolicy(max_attempts=1))
    def reserve(item: str) -> str:
        raise OrderError(f"no {item} left")

    @intemporal.workflow
    def wf(item: str) -> str:
        return reserve(item)

    h = engine.start(wf, "socks", run_id="sad")
    with pytest.raises(OrderError) as info:
        h.result(timeout=10)
    assert str(info.value) == "no socks left"
    assert h.status() is RunStatus.FAILED
    assert engine.history("sad")[-1]["type"] == "run_failed"
    # from the store, in another engine: same type, same message
    with Engine(store, threads=1) as other:
        with pytest.raises(OrderError) as again:
            other.start(wf, "socks", run_id="sad").result(timeout=10)
    assert type(again.value) is OrderError
    assert str(again.value) == "no socks left"


def test_builtin_exception_types_survive(engine: Engine) -> None:
    @intemporal.workflow
    def wf() -> None:
        empty: dict[str, int] = {}
        empty["missing"]

    with pytest.raises(KeyError, match="missing"):
        engine.run(wf, run_id="keyerror")
    info = engine.get_run("keyerror")
    assert info.error is not None and info.error.startswith("KeyError")


def test_unstorable_argument_fails_start_naming_it(
    store: intemporal.Store, engine: Engine, tmp_path: Path
) -> None:
    @intemporal.workflow
    def wf(order: Any, gen: Any = None) -> None:
        return None

    generator = (i for i in range(3))
    with pytest.raises(SerializationError) as info:
        engine.start(wf, 1, generator, run_id="unstorable")
    assert "'gen'" in str(info.value)
    assert isinstance(info.value, IntemporalError)
    with pytest.raises(SerializationError, match="'gen'"):
        engine.start(wf, 1, kwargs={"gen": generator}, run_id="unstorable")
    assert list(store.run_ids()) == []
    if isinstance(store, FileStore):
        assert list(store.root.rglob("*")) == []


def test_lock_argument_with_json_codec_fails_start_naming_it(store: intemporal.Store) -> None:
    @intemporal.workflow
    def wf(order: dict[str, Any], lock: Any) -> None:
        return None

    with Engine(store, codec="json") as eng:
        with pytest.raises(SerializationError, match="'lock'"):
            eng.start(wf, {"id": 1}, threading.Lock(), run_id="locked")
    assert list(store.run_ids()) == []


def test_engine_rejects_bad_options(store: intemporal.Store) -> None:
    with pytest.raises(ValueError):
        Engine(store, durability="sometimes")
    with pytest.raises(ValueError):
        Engine(store, codec="yaml")
    with pytest.raises(ValueError):
        Engine(store, threads=0)


def test_engine_store_argument_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @intemporal.workflow
    def wf() -> int:
        return 5

    with Engine(str(tmp_path / "by-path"), threads=1) as eng:
        assert eng.run(wf, run_id="p") == 5
    assert (tmp_path / "by-path" / "p.jsonl").exists()
    monkeypatch.setenv("INTEMPORAL_HOME", str(tmp_path / "home"))
    with Engine(threads=1) as eng:
        assert eng.run(wf, run_id="h") == 5
    assert (tmp_path / "home" / "h.jsonl").exists()
    monkeypatch.delenv("INTEMPORAL_HOME")
    monkeypatch.chdir(tmp_path)
    with Engine(threads=1) as eng:
        assert eng.run(wf, run_id="d") == 5
    assert (tmp_path / ".intemporal" / "d.jsonl").exists()


def test_many_runs_at_once(engine: Engine) -> None:
    @intemporal.activity
    def add(a: int, b: int) -> int:
        return a + b

    @intemporal.workflow
    def wf(i: int) -> int:
        return add(add(i, 1), 1)

    handles = [engine.start(wf, i, run_id=f"many-{i:02}") for i in range(24)]
    assert [h.result(timeout=20) for h in handles] == [i + 2 for i in range(24)]
    assert len(engine.list_runs(status="completed")) == 24


@intemporal.workflow(name="engine.once")
def counted_once(x: int) -> int:
    BODIES.append(x)
    return x


BODIES: list[int] = []


@pytest.mark.parametrize("where", ["memory", "file-folder"])
def test_a_run_another_engine_took_between_its_creation_and_its_claim_runs_once(
    where: str, tmp_path: Path
) -> None:
    # Given a store whose `create_claimed` is a creation then a claim (the `Store` default:
    # MemoryStore's, a FileStore's run in a folder), and engine B starting the same run id
    # in between (two workers firing one schedule tick) and executing it to its end
    store: intemporal.Store = MemoryStore() if where == "memory" else FileStore(tmp_path)
    run_id = "once" if where == "memory" else "tenant/once"
    BODIES.clear()
    create = store.create
    with Engine(store, threads=2) as a, Engine(store, threads=2) as b:

        def create_then_b_runs_it(rid: str, *args: Any, **kwargs: Any) -> bool:
            made = create(rid, *args, **kwargs)
            if made and rid == run_id:
                assert b.start(counted_once, 1, run_id=run_id).result(timeout=10) == 1
            return made

        store.create = create_then_b_runs_it  # type: ignore[method-assign,assignment]
        # When engine A's start then claims it: it used to execute it again from its start
        assert a.start(counted_once, 1, run_id=run_id).result(timeout=10) == 1
    # Then its body ran once, and its journal holds one end
    assert BODIES == [1]
    assert [e["type"] for e in store.read(run_id)].count("run_completed") == 1


def test_flush_durability_runs_the_same(store: intemporal.Store) -> None:
    with Engine(store, durability="flush", threads=2) as eng:
        assert eng.run(seed_workflow, 2, protocols={MyActivities: Impl()}, run_id="flushed") == {
            "activity": ["processed", 2],
            "protocol": ["X", "child"],
        }
        assert eng.get_run("flushed").status is RunStatus.COMPLETED


def test_start_on_a_closed_engine_raises_and_writes_nothing(store: intemporal.Store) -> None:
    @intemporal.workflow
    def wf() -> int:
        return 1

    eng = Engine(store, threads=1)
    eng.close()
    with pytest.raises(RuntimeError):
        eng.start(wf, run_id="too-late")
    # the caller was told it failed: no run may linger for recover() to execute later
    assert list(store.run_ids()) == []


def test_ctrl_c_inside_run_stops_it_resumable_and_reaches_the_caller(
    store: intemporal.Store,
) -> None:
    # Given a workflow interrupted (as by Ctrl-C) while `engine.run` executes it here
    @intemporal.activity(name="kbd.step")
    def step(x: int) -> int:
        if x == 2:
            raise KeyboardInterrupt
        return x

    @intemporal.workflow(name="kbd.wf")
    def wf() -> list[int]:
        return [step(1), step(2)]

    with Engine(store, threads=2) as engine:
        # When it runs, Then the interrupt reaches the caller instead of a hang
        with pytest.raises(KeyboardInterrupt):
            engine.run(wf, run_id="kbd")
        # and the run is left unfinished, its first step kept, resumable
        info = engine.get_run("kbd")
        assert not info.status.finished and info.steps == 1


def test_default_run_ids_are_random_hex_and_a_forked_child_does_not_repeat_them() -> None:
    # Given ids drawn from the buffered OS randomness
    import re

    from intemporal.runs import new_run_id

    ids = [new_run_id() for _ in range(2000)]
    # Then each is 32 hex digits, and none repeats
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # When the process forks with ids still buffered
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write_end, new_run_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.close(write_end)
    # Then the child's next id is not the parent's next id
    assert child_id != new_run_id()
