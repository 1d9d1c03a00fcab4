"""The store failing under a run: an error for the caller, never a hang, never user code.

Every kind of store failure below stops the run where it is, unrecorded: the workflow's
own `except Exception` never sees it, `engine.run()` / `handle.result()` raise
`intemporal.StoreUnavailable` (its cause chained) instead of waiting, the run stays
resumable, and once the store is back at most the step in flight runs again.

| kind of failure                         | how it is made                         | tests                                  |
| --------------------------------------- | -------------------------------------- | -------------------------------------- |
| disk full (ENOSPC, short writes)        | a real 2 MB tmpfs, filled              | test_disk_full_*                       |
| read-only store (EROFS)                 | the tmpfs remounted read-only          | test_read_only_*                       |
| a short write (a prefix of the line)    | os.write / os.pwritev write a prefix   | test_a_short_write_*                   |
| an OSError or a driver's own exception  | the lease's append (or create) raises  | test_a_store_failure_at_*              |
|   at the run's creation (start)         |   create / create_claimed              |                                        |
|   at an activity's result / retry       |   activity_completed, attempt_failed,  |                                        |
|                                         |   activity_failed; from a pool thread  |                                        |
|                                         |   (submit), joined or not              |                                        |
|   at a timer / signal / child event     |   timer_started, signal_wait,          |                                        |
|                                         |   child_started, a child's own append  |                                        |
|   at recorded values, events            |   side_effect, event_set               |                                        |
|   at the run's end or its suspension    |   run_completed, run_failed,           |                                        |
|                                         |   run_suspended                        |                                        |
|   ... on the file and memory stores, on the caller's thread (run) and on pool threads    |
|   (start + result), with durability "fsync" and "flush"                                   |
| a store's own exception type            | a MemoryStore subclass (a "database")  | test_a_database_error_*                |
| a relaunched run (after a wait) fails   | signal_received on a pool thread       | test_a_failure_after_a_wait_*          |
| the store fences this process out       | the lease raises LeaseLost             | test_a_lease_lost_*                    |
| a client waits for an event of the run  | get_event(timeout=None)                | test_get_event_on_a_run_stopped_*      |
| the workflow raises KeyboardInterrupt / | run, start + result, worker --once,    | test_an_interrupt_*, test_worker_once_*|
|   SystemExit                            | in a child run executed inline         |                                        |
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls

import intemporal
from intemporal import Engine, FileStore, MemoryStore, PostgresStore, Store, StoreUnavailable
from intemporal.store.file import FileLease
from intemporal.store.memory import MemoryLease
from intemporal.store.postgres import PostgresLease

calls = Calls()


class DriverError(Exception):
    """What a database driver raises: not an OSError."""


# -- the workflows: each swallows any Exception, so a store error leaking to it shows ----------
@intemporal.activity(name="sf.step")
def step(key: str, size: int = 0) -> str:
    calls.hit(key)
    return key + "x" * size


@intemporal.activity(name="sf.flaky", retry=intemporal.RetryPolicy(initial_interval=0.001))
def flaky(key: str) -> str:
    calls.hit(key)
    if calls[key] == 1:
        raise ValueError("first attempt fails")
    return key


@intemporal.activity(name="sf.broken", retry=intemporal.RetryPolicy(max_attempts=1))
def broken(key: str) -> str:
    calls.hit(key)
    raise ValueError("always fails")


@intemporal.workflow(name="sf.child")
def child(key: str) -> str:
    return step(key)


@intemporal.workflow(name="sf.kinds")
def kinds(kind: str, tag: str) -> Any:
    try:
        first = step(f"{tag}-a")
        if kind == "attempt_failed":
            return [first, flaky(f"{tag}-b")]
        if kind == "activity_failed":
            try:
                broken(f"{tag}-b")
            except ValueError:
                return [first, "handled"]
        if kind == "timer_started":
            intemporal.sleep(0.01)
        if kind == "run_suspended":
            intemporal.sleep(1.2)  # longer than an inline wait: the run parks
        if kind == "signal_wait":
            try:
                intemporal.wait_for_signal("go", timeout=0.05)
            except intemporal.SignalTimeout:
                return [first, "no signal"]
        if kind in ("child_started", "child_append"):
            return [first, child(f"{tag}-c")]
        if kind == "side_effect":
            intemporal.side_effect(len, "abc")
        if kind == "event_set":
            intemporal.set_event("state", "half way")
        if kind == "run_failed":
            raise LookupError("the workflow's own failure")
        if kind == "submitted":  # the record is appended on an activity pool thread
            futures = [intemporal.submit(step, f"{tag}-b"), intemporal.submit(step, f"{tag}-c")]
            return [first, *intemporal.join_all(futures)]
        if kind == "submitted_unjoined":  # the workflow returns without its result
            intemporal.submit(step, f"{tag}-b")
            return [first, "not joined"]
        return [first, step(f"{tag}-b")]
    except LookupError:
        raise
    except Exception as exc:  # the store's error must never arrive here
        return f"swallowed {type(exc).__name__}"


def expected(kind: str, tag: str) -> Any:
    if kind == "activity_failed":
        return [f"{tag}-a", "handled"]
    if kind == "signal_wait":
        return [f"{tag}-a", "no signal"]
    if kind in ("child_started", "child_append"):
        return [f"{tag}-a", f"{tag}-c"]
    if kind == "submitted":
        return [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
    if kind == "submitted_unjoined":
        return [f"{tag}-a", "not joined"]
    return [f"{tag}-a", f"{tag}-b"]


# -- breaking a store on purpose -----------------------------------------------------------------
class Breaker:
    """Makes the store raise `error()` at the `nth` append of an event of type `kind`
    (or at the run's creation for kind "create"), until `fixed()`."""

    def __init__(self, kind: str, error: Callable[[], Exception], nth: int = 1) -> None:
        self.kind, self.error, self.nth = kind, error, nth
        self.armed, self.seen, self.raised = True, 0, 0

    def hit(self, event: dict[str, Any]) -> None:
        if not self.armed:
            return
        kind = event.get("type")
        if self.kind == "child_append":  # an append to the child's own journal
            kind = "child_append" if "/" in str(event.get("_run")) else None
        if kind == self.kind:
            self.seen += 1
            if self.seen == self.nth:
                self.raised += 1
                raise self.error()

    def fixed(self) -> None:
        self.armed = False


@pytest.fixture
def breaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Breaker]]:
    made: list[Breaker] = []

    def make(kind: str, error: Callable[[], Exception], nth: int = 1) -> Breaker:
        b = Breaker(kind, error, nth)
        made.append(b)
        for lease_type in (FileLease, MemoryLease, PostgresLease):
            original = lease_type.append

            def append(self: Any, event: Any, sync: bool, _orig: Any = original) -> None:
                b.hit({**event, "_run": self.run_id})
                _orig(self, event, sync)

            monkeypatch.setattr(lease_type, "append", append)
        original_result = FileLease.append_result  # its own: the line spelled from the parts

        def append_result(self: Any, *parts: Any, _orig: Any = original_result) -> None:
            b.hit({"type": "activity_completed", "_run": self.run_id})
            _orig(self, *parts)

        monkeypatch.setattr(FileLease, "append_result", append_result)
        for store_type in (FileStore, MemoryStore, PostgresStore):
            for name in ("create", "create_claimed"):
                orig = getattr(store_type, name)

                def create(
                    self: Any, run_id: str, first: Any, *more: Any, _o: Any = orig
                ) -> Any:  # `more`: sync, and the owner
                    if "/" not in run_id:
                        b.hit({"type": "create"})
                    return _o(self, run_id, first, *more)

                monkeypatch.setattr(store_type, name, create)
        return b

    yield make
    for b in made:
        b.fixed()


def enospc() -> Exception:
    return OSError(errno.ENOSPC, "No space left on device")


def erofs() -> Exception:
    return OSError(errno.EROFS, "Read-only file system")


def execute(engine: Engine, caller: str, wf: Any, *args: Any, run_id: str) -> Any:
    """Run `wf` on the caller's thread (`run`) or on a pool thread (`start` + `result`)."""
    if caller == "run":
        return engine.run(wf, *args, run_id=run_id)
    return engine.start(wf, *args, run_id=run_id).result(timeout=30)


KINDS = [
    "activity_completed",
    "attempt_failed",
    "activity_failed",
    "timer_started",
    "signal_wait",
    "child_started",
    "child_append",
    "side_effect",
    "event_set",
    "run_completed",
    "run_failed",
    "submitted",
    "submitted_unjoined",
]


@pytest.mark.file_errors  # on PostgreSQL only the driver's errors, "fsync" (conftest.py)
@pytest.mark.parametrize(
    "error_kind,error",
    [
        ("disk-full", enospc),
        ("read-only", erofs),
        ("driver", lambda: DriverError("connection lost")),
    ],
    ids=["disk-full", "read-only", "driver"],
)
@pytest.mark.parametrize(
    "caller,durability",
    [("run", "fsync"), ("start", "flush"), ("run", "flush"), ("start", "fsync")],
)
@pytest.mark.parametrize("kind", KINDS)
def test_a_store_failure_at_any_append_stops_the_run_resumable_and_reaches_the_caller(
    store: Store,
    breaker: Callable[..., Breaker],
    kind: str,
    caller: str,
    durability: str,
    error_kind: str,
    error: Callable[[], Exception],
) -> None:
    cause = error()
    what = getattr(cause, "errno", None) or type(cause).__name__
    tag = f"{kind}-{caller}-{durability}-{what}-{type(store).__name__}"
    # Given a store that fails at the first append of one kind of event
    nth = 2 if kind in ("activity_completed", "submitted", "submitted_unjoined") else 1
    b = breaker(  # at the nth event of that kind: an activity's record is b's, not a's
        "activity_completed" if kind.startswith("submitted") else kind, error, nth
    )
    with Engine(store, threads=2, durability=durability) as engine:
        # When a workflow that swallows every Exception runs into it
        with pytest.raises(StoreUnavailable) as caught:
            execute(engine, caller, kinds, kind, tag, run_id=tag)
        # Then the caller gets StoreUnavailable, its cause chained, instead of a hang
        assert b.raised == 1
        assert type(caught.value.__cause__) is type(error())
        assert "resum" in str(caught.value)
        # and the run is left unfinished, readable and listed
        info = engine.get_run(tag)
        assert not info.status.finished
        assert tag in [i.run_id for i in engine.list_runs()]
        ran = dict(calls.counts)
        # When the store is back and the run is resumed
        b.fixed()
        result = engine.resume(tag).result(timeout=30) if kind != "run_failed" else None
        if kind == "run_failed":
            with pytest.raises(LookupError):
                engine.resume(tag).result(timeout=30)
    # Then it ends as it would have, and at most the step in flight ran again
    if kind != "run_failed":
        assert result == expected(kind, tag)
    for key, n in calls.counts.items():
        if key.startswith(tag):
            assert n - ran.get(key, 0) <= 1 and n <= 2 + (kind == "attempt_failed"), (key, n)
    assert calls[f"{tag}-a"] == 1


@pytest.mark.parametrize("caller", ["run", "start"])
def test_a_store_failure_at_the_runs_creation_raises_store_unavailable(
    store: Store, breaker: Callable[..., Breaker], caller: str
) -> None:
    tag = f"create-{caller}-{type(store).__name__}"
    b = breaker("create", lambda: DriverError("database down"))
    with Engine(store, threads=2) as engine:
        with pytest.raises(StoreUnavailable) as caught:
            execute(engine, caller, kinds, "plain", tag, run_id=tag)
        assert isinstance(caught.value.__cause__, DriverError)
        assert "start it again" in str(caught.value)
        assert not store.exists(tag) and calls[f"{tag}-a"] == 0
        b.fixed()
        assert execute(engine, caller, kinds, "plain", tag, run_id=tag) == expected("plain", tag)


def test_a_store_failure_when_a_run_parks_reaches_result(
    store: Store, breaker: Callable[..., Breaker]
) -> None:
    tag = f"suspend-{type(store).__name__}"
    b = breaker("run_suspended", enospc)
    with Engine(store, threads=2) as engine:
        handle = engine.start(kinds, "run_suspended", tag, run_id=tag)
        with pytest.raises(StoreUnavailable):
            handle.result(timeout=30)
        b.fixed()
        assert engine.resume(tag).result(timeout=30) == expected("run_suspended", tag)
    assert calls[f"{tag}-a"] == 1 and calls[f"{tag}-b"] == 1


@intemporal.workflow(name="sf.waits")
def waits(tag: str) -> Any:
    first = step(f"{tag}-a")
    try:
        got = intemporal.wait_for_signal("go")
    except Exception as exc:
        return f"swallowed {type(exc).__name__}"
    return [first, got, step(f"{tag}-b")]


@pytest.mark.parametrize("error", [enospc, lambda: DriverError("gone")], ids=["oserror", "driver"])
def test_a_failure_after_a_wait_reaches_the_handle_of_the_first_execution(
    store: Store, breaker: Callable[..., Breaker], error: Callable[[], Exception]
) -> None:
    # Given a run parked waiting for a signal, its handle waiting for the result
    tag = f"wait-{type(store).__name__}-{error().__class__.__name__}"
    b = breaker("signal_received", error)
    with Engine(store, threads=2) as engine:
        handle = engine.start(waits, tag, run_id=tag)
        deadline = time.monotonic() + 10
        while engine.get_run(tag).status is not intemporal.RunStatus.WAITING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # When the signal comes and the execution that takes it cannot journal it
        engine.signal(tag, "go", "ready")
        # Then the handle raises StoreUnavailable instead of waiting forever
        with pytest.raises(StoreUnavailable):
            handle.result(timeout=30)
        assert b.raised == 1
        # and the run is not taken again by recover() on its own, only when resumed
        assert engine.recover() == []
        b.fixed()
        assert engine.resume(tag).result(timeout=30) == [f"{tag}-a", "ready", f"{tag}-b"]
    assert calls[f"{tag}-a"] == 1 and calls[f"{tag}-b"] == 1


# -- a store of another kind: its own exceptions -------------------------------------------------
class FlakyDatabase(MemoryStore):
    """A store whose driver raises its own exception on the activity's record while `down`."""

    down = True

    def claim(self, run_id: str, owner: str = "") -> Any:
        lease = super().claim(run_id, owner)
        if lease is None:
            return None
        store, inner = self, lease.append

        def append(event: dict[str, Any], sync: bool) -> None:
            if store.down and event["type"] == "activity_completed":
                raise DriverError("server closed the connection unexpectedly")
            inner(event, sync)

        lease.append = append  # type: ignore[method-assign]
        return lease

    def create_claimed(self, run_id: str, first: Any, sync: bool = True, owner: str = "") -> Any:
        if not self.create(run_id, first, sync):
            return None
        return self.claim(run_id, owner)


@intemporal.workflow(name="sf.catches")
def catches(tag: str) -> str:
    try:
        return step(tag)
    except Exception:
        return "caught"


@pytest.mark.parametrize("caller", ["run", "start"])
def test_a_database_error_never_reaches_the_workflows_except_exception(caller: str) -> None:
    # Given a store whose driver raises its own (not OSError) exception on an append
    db = FlakyDatabase()
    tag = f"db-{caller}"
    with Engine(db, threads=2) as engine:
        # When a workflow that catches every Exception runs its activity
        with pytest.raises(StoreUnavailable) as caught:
            execute(engine, caller, catches, tag, run_id=tag)
        # Then the workflow never saw it: the run is not completed "caught"
        assert isinstance(caught.value.__cause__, DriverError)
        assert not engine.get_run(tag).status.finished
        assert [e["type"] for e in engine.history(tag)] == ["run_started"]
        # and once the database is back, the resumed run records the activity: it ran twice
        db.down = False
        assert engine.resume(tag).result(timeout=30) == tag
    assert calls[tag] == 2


def test_store_unavailable_is_in_the_error_tree_and_pickles() -> None:
    import pickle

    err = StoreUnavailable("cannot write", "r1")
    assert isinstance(err, intemporal.StoreError) and isinstance(err, intemporal.IntemporalError)
    assert issubclass(intemporal.LeaseLost, intemporal.StoreError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is StoreUnavailable and str(back) == "cannot write" and back.run_id == "r1"
    assert not intemporal.is_suspension(err)
    assert "StoreUnavailable" in intemporal.errors.__doc__  # drawn in the tree
    assert "LeaseLost" in intemporal.__all__ and "StoreUnavailable" in intemporal.__all__


# -- the workflow interrupting itself: KeyboardInterrupt, SystemExit ------------------------------
INTERRUPT = {"on": True}


@intemporal.activity(name="sf.interrupting")
def interrupting(key: str, what: str, exit_code: int | None) -> str:
    calls.hit(key)
    if INTERRUPT["on"] and what == "activity":
        raise KeyboardInterrupt if exit_code is None else SystemExit(exit_code)
    return key


@intemporal.workflow(name="sf.interrupts")
def interrupts(tag: str, where: str, exit_code: int | None) -> list[str]:
    try:
        first = step(f"{tag}-a")
        second = interrupting(f"{tag}-b", where, exit_code)
        if INTERRUPT["on"] and where == "workflow":
            raise KeyboardInterrupt if exit_code is None else SystemExit(exit_code)
        return [first, second]
    except Exception:
        return ["swallowed"]


@pytest.mark.parametrize("exit_code", [None, 3], ids=["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("where", ["workflow", "activity"])
@pytest.mark.parametrize("caller", ["run", "start"])
def test_an_interrupt_raised_by_a_run_reaches_the_caller_and_leaves_it_resumable(
    store: Store, caller: str, where: str, exit_code: int | None
) -> None:
    tag = f"intr-{caller}-{where}-{exit_code}-{type(store).__name__}"
    INTERRUPT["on"] = True
    try:
        with Engine(store, threads=2) as engine:
            # When the run raises KeyboardInterrupt or SystemExit
            with pytest.raises(KeyboardInterrupt if exit_code is None else SystemExit):
                execute(engine, caller, interrupts, tag, where, exit_code, run_id=tag)
            # Then the caller gets it at once; the run stays unfinished and is not retaken
            assert not engine.get_run(tag).status.finished
            assert engine.recover() == []
            # and a resume once the cause is gone finishes it, the first step not run again
            INTERRUPT["on"] = False
            assert engine.resume(tag).result(timeout=30) == [f"{tag}-a", f"{tag}-b"]
    finally:
        INTERRUPT["on"] = False
    assert calls[f"{tag}-a"] == 1 and calls[f"{tag}-b"] == (2 if where == "activity" else 1)


WORKER_MODULE = """
import intemporal

@intemporal.activity
def step(x):
    return x

@intemporal.workflow
def stops(how):
    step(1)
    if how == "kbd":
        raise KeyboardInterrupt
    if how == "exit":
        raise SystemExit(4)
    return "done"
"""


def test_worker_once_exits_with_one_line_when_runs_interrupt_themselves(tmp_path: Path) -> None:
    # Given runs recorded as pending whose workflows raise KeyboardInterrupt, SystemExit
    (tmp_path / "stopmod.py").write_text(textwrap.dedent(WORKER_MODULE))
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "INTEMPORAL_HOME": str(store)}

    def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "intemporal.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    for how in ("kbd", "exit", "fine"):
        assert (
            cli("start", "stopmod:stops", f'["{how}"]', "--run-id", how, "--detach").returncode == 0
        )
    # When `worker --once` takes them
    started = time.monotonic()
    done = cli("worker", "--once", "--interval", "0.05", "--import", "stopmod", timeout=60)
    # Then it exits promptly, 1, with one line per stopped run and no traceback
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done
    assert "Traceback" not in done.stdout + done.stderr
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ "  # a worker's log line starts with its time
    lines = [re.sub(stamp, "", ln) for ln in done.stdout.splitlines()]
    assert any(ln.startswith("kbd ") and "KeyboardInterrupt" in ln for ln in lines), lines
    assert any(ln.startswith("exit ") and "SystemExit: 4" in ln for ln in lines), lines
    assert any(ln.startswith("fine ") and "completed" in ln for ln in lines), lines
    # and the stopped runs stay resumable (not failed)
    with Engine(FileStore(store), worker=False) as engine:
        for rid in ("kbd", "exit"):
            assert not engine.get_run(rid).status.finished
        assert engine.get_run("fine").status is intemporal.RunStatus.COMPLETED


@intemporal.workflow(name="sf.interrupting_child")
def interrupting_child(tag: str) -> str:
    step(f"{tag}-c")
    if INTERRUPT["on"]:
        raise KeyboardInterrupt
    return f"{tag}-c"


@intemporal.workflow(name="sf.parent_of_interrupting")
def parent_of_interrupting(tag: str) -> list[str]:
    try:
        return [step(f"{tag}-a"), interrupting_child(tag)]
    except Exception:
        return ["swallowed"]


@pytest.mark.parametrize("caller", ["run", "start"])
def test_an_interrupt_in_a_child_run_stops_its_parent_too(store: Store, caller: str) -> None:
    # Given a parent whose child (executed inline) raises KeyboardInterrupt
    tag = f"child-intr-{caller}-{type(store).__name__}"
    INTERRUPT["on"] = True
    try:
        with Engine(store, threads=2) as engine:
            # Then the caller gets it at once, instead of the parent waiting for the child
            with pytest.raises(KeyboardInterrupt):
                execute(engine, caller, parent_of_interrupting, tag, run_id=tag)
            assert not engine.get_run(tag).status.finished
            # and both resume once the cause is gone, no step run twice but the child's
            INTERRUPT["on"] = False
            assert engine.resume(tag).result(timeout=30) == [f"{tag}-a", f"{tag}-c"]
    finally:
        INTERRUPT["on"] = False
    assert calls[f"{tag}-a"] == 1 and calls[f"{tag}-c"] == 1


@pytest.mark.parametrize("caller", ["run", "start"])
def test_a_lease_lost_reaches_the_caller_as_it_is(
    store: Store, breaker: Callable[..., Breaker], caller: str
) -> None:
    # Given a store that fences this process out of the run (another worker took it over)
    tag = f"fenced-{caller}-{type(store).__name__}"
    breaker("activity_completed", lambda: intemporal.LeaseLost(f"run {tag!r} taken over"), 2)
    with Engine(store, threads=2) as engine:
        # Then the caller gets LeaseLost itself, and the run is left to its new owner
        with pytest.raises(intemporal.LeaseLost, match="taken over"):
            execute(engine, caller, kinds, "plain", tag, run_id=tag)
        assert engine.history(tag)[-1]["type"] == "activity_completed"


@intemporal.workflow(name="sf.publishes")
def publishes(tag: str) -> str:
    step(f"{tag}-a")
    intemporal.set_event("done", True)
    return tag


def test_get_event_on_a_run_stopped_by_the_store_raises_instead_of_waiting(
    store: Store, breaker: Callable[..., Breaker]
) -> None:
    # Given a run that stops on the store before it publishes its event
    tag = f"event-{type(store).__name__}"
    breaker("activity_completed", enospc)
    with Engine(store, threads=2) as engine:
        engine.start(publishes, tag, run_id=tag)
        # When a client waits for the event with no timeout, Then it is told, not left waiting
        with pytest.raises(StoreUnavailable):
            engine.get_event(tag, "done")
