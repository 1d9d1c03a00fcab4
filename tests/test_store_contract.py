"""The `Store` contract: what every backend does, at the level of its own operations.

Written against the memory store (the reference), run on every store: `STORES` names them,
`SHARED` the ones other processes can open (for exclusion across processes). A new backend
(PostgreSQL) joins by adding a factory here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import (
    FileStore,
    LeaseLost,
    MemoryStore,
    PostgresStore,
    RunNotFound,
    RunStatus,
    Store,
)
from intemporal import events as ev
from intemporal.store.base import Lease
from intemporal.store.queueing import QueueSpec

STORES: dict[str, Callable[[Path, pytest.FixtureRequest], Store]] = {
    "memory": lambda tmp, request: MemoryStore(),
    "file": lambda tmp, request: FileStore(tmp / "store"),
    "postgres": lambda tmp, request: PostgresStore(request.getfixturevalue("pg_dsn"), lease=2.0),
}
SHARED = ["file", "postgres"]
LEASED = {"postgres": ["short-lease"]}  # the holder's lease expires 1 s after it dies


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    st = STORES[request.param](tmp_path, request)
    yield st
    st.close()


def started(run_id: str, workflow: str = "w", ts: float = 1.0, **more: Any) -> dict[str, Any]:
    return {"type": ev.RUN_STARTED, "run_id": run_id, "workflow": workflow, "ts": ts, **more}


def make(store: Store, run_id: str, *tail: dict[str, Any], **first: Any) -> None:
    """A run whose journal is `run_started` (with `first`) and then `tail`, unclaimed."""
    assert store.create(run_id, started(run_id, **first))
    if tail:
        lease = store.claim(run_id)
        assert lease is not None
        for event in tail:
            lease.append({"ts": 2.0, **event}, False)
        lease.release()


def step(seq: int) -> dict[str, Any]:
    return {"type": ev.ACTIVITY_COMPLETED, "seq": seq, "name": "a", "result": seq}


# -- create, read, delete ------------------------------------------------------------------------
def test_create_once_then_read(store: Store) -> None:
    assert store.create("r1", started("r1"))
    assert not store.create("r1", started("r1", workflow="other"))  # the first one stays
    assert store.read("r1") == [started("r1")]
    assert store.exists("r1") and not store.exists("r2")
    with pytest.raises(RunNotFound):
        store.read("r2")
    with pytest.raises(RunNotFound):
        store.claim("r2")


def test_delete_removes_the_run_and_its_inbox(store: Store) -> None:
    make(store, "gone", step(1))
    store.send("gone", {"type": ev.CANCEL, "ts": 1.0})
    store.delete("gone")
    assert not store.exists("gone") and "gone" not in list(store.run_ids())
    with pytest.raises(RunNotFound):
        store.read("gone")
    assert store.create("gone", started("gone", workflow="again"))  # the id is free again
    assert store.inbox("gone") == ([], 0)


# -- claims and leases ---------------------------------------------------------------------------
def test_claim_excludes_other_owners_until_released(store: Store) -> None:
    make(store, "r")
    lease = store.claim("r", "one")
    assert lease is not None and lease.run_id == "r"
    assert store.claim("r", "two") is None
    lease.append({"type": ev.RUN_COMPLETED, "result": 1, "ts": 3.0}, True)
    lease.release()
    again = store.claim("r", "two")
    assert again is not None
    assert isinstance(again.token, int) and again.token >= lease.token
    again.renew()  # the owner is still there
    again.release()
    assert [e["type"] for e in store.read("r")] == [ev.RUN_STARTED, ev.RUN_COMPLETED]


def test_a_released_or_fenced_lease_appends_nothing(store: Store) -> None:
    # Given a lease given up, and the run claimed again by someone else
    make(store, "r")
    old = store.claim("r", "one")
    assert old is not None
    old.release()
    new = store.claim("r", "two")
    assert new is not None
    # When the old owner appends, Then it is told it lost the run, and nothing is written
    with pytest.raises(LeaseLost):
        old.append(step(1), True)
    new.append(step(1), True)
    new.release()
    assert [e.get("seq") for e in store.read("r")] == [None, 1]


def test_create_claimed_is_owned_from_the_start(store: Store) -> None:
    lease = store.create_claimed("c", started("c"), True, "me")
    assert lease is not None
    assert store.claim("c") is None
    assert store.create_claimed("c", started("c")) is None
    lease.append(step(1), True)
    lease.release()
    assert [e.get("seq") for e in store.read("c")] == [None, 1]


# -- claim_next: who may execute what now ---------------------------------------------------------
def test_claim_next_takes_exactly_the_runs_nobody_executes(store: Store) -> None:
    # Given runs in every state
    make(store, "pending")
    make(store, "midway", step(1))  # its owner stopped: running, unowned
    make(store, "done", {"type": ev.RUN_COMPLETED, "result": 1})
    make(store, "failed", {"type": ev.RUN_FAILED, "error": {"type": "E", "message": "m"}})
    make(store, "cancelled", {"type": ev.RUN_CANCELLED, "error": {"type": "C", "message": "m"}})
    make(store, "busy")
    held = store.claim("busy", "other")
    assert held is not None
    # When an owner asks for work, Then it gets the pending and the abandoned runs, claimed
    leases = store.claim_next("me")
    assert sorted(lease.run_id for lease in leases) == ["midway", "pending"]
    assert store.claim("pending") is None and store.claim("midway") is None
    # And nobody gets them twice
    assert store.claim_next("you") == []
    for lease in leases:
        lease.release()
    held.release()


def parked_by(owner: str) -> dict[str, Any]:
    return {"type": ev.RUN_SUSPENDED, "reason": "signal:go", "until": None, "owner": owner}


def test_a_waiting_run_stays_with_its_live_owner_and_goes_to_any_worker_once_it_is_gone(
    store: Store,
) -> None:
    # Given a run parked by an owner whose own lease holds
    alive = store.lease_owner("parker")
    assert alive.owner == "parker"
    make(store, "parked", parked_by("parker"))
    alive.renew()  # a heartbeat: the owner still lives
    # Then no other worker takes it, and it is not shown orphaned
    assert store.claim_next("me") == []
    info = store.summary("parked")
    assert (info.status, info.owner, info.orphaned) == (RunStatus.WAITING, "parker", False)
    # When the owner gives its lease up (an engine closing), Then the run was left by a dead
    # owner: shown orphaned, and the next worker that asks takes it
    alive.release()
    alive.release()  # idempotent
    assert store.summary("parked").orphaned
    (lease,) = store.claim_next("me")
    assert lease.run_id == "parked"
    lease.release()


def test_summary_says_whether_a_live_lease_holds_the_run(store: Store) -> None:
    # Given runs nobody holds
    make(store, "r")
    make(store, "parked", parked_by("gone"))
    make(store, "failed", {"type": ev.RUN_FAILED, "error": {"type": "E", "message": "m"}})
    ids = ("r", "parked", "failed")
    assert not any(store.summary(rid).executing for rid in ids)
    # When each is claimed, Then the store reports the unfinished ones executing, not the
    # finished one (whose summary never depends on an owner: a claim tells)
    leases = [store.claim(rid, "other") for rid in ids]
    infos = {rid: store.summary(rid) for rid in ids}
    assert {rid: i.executing for rid, i in infos.items()} == {
        "r": True,
        "parked": True,
        "failed": False,
    }
    assert infos["r"].status is RunStatus.RUNNING and not infos["r"].orphaned
    assert sorted(i.run_id for i in store.list_runs() if i.executing) == ["parked", "r"]
    assert store.claim("failed") is None
    # And once released, nobody holds them
    for lease in leases:
        assert lease is not None
        lease.release()
    assert not any(store.summary(rid).executing for rid in ids)


def test_iter_runs_lists_the_unfinished_runs_with_their_queue_and_start(store: Store) -> None:
    make(store, "delayed", ts=1.0, queue="q", start_at=50.0)
    make(store, "parked", parked_by("gone"), ts=2.0)
    make(store, "done", {"type": ev.RUN_COMPLETED, "result": 1}, ts=3.0, queue="q")
    make(store, "failed", {"type": ev.RUN_FAILED, "error": {"type": "E", "message": "m"}})
    infos = {i.run_id: i for i in store.iter_runs(unfinished=True)}
    assert sorted(infos) == ["delayed", "parked"]
    assert (infos["delayed"].queue, infos["delayed"].start_at) == ("q", 50.0)
    assert (infos["parked"].queue, infos["parked"].start_at) == (None, None)
    assert [i.run_id for i in store.iter_runs(queue="q")] == ["done", "delayed"]
    assert [i.run_id for i in store.iter_runs(queue="q", unfinished=True)] == ["delayed"]


def test_claim_next_keeps_to_queues_limit_among_and_skip(store: Store) -> None:
    for i in range(4):
        make(store, f"a{i}", queue="a")
    make(store, "b0", queue="b")
    make(store, "none")
    # queues
    got = store.claim_next("me", ["b"])
    assert [lease.run_id for lease in got] == ["b0"]
    # limit
    two = store.claim_next("me", ["a"], 2)
    assert len(two) == 2 and all(lease.run_id.startswith("a") for lease in two)
    # among and skip
    rest = {f"a{i}" for i in range(4)} - {lease.run_id for lease in two}
    first, second = sorted(rest)
    assert store.claim_next("me", None, among=[first, "b0"], skip={first}) == []
    (only,) = store.claim_next("me", None, 1, among=["nobody", first, second])
    assert only.run_id == first
    for lease in [*got, *two, only]:
        lease.release()


def test_a_run_one_worker_passes_over_is_not_hidden_from_another(store: Store) -> None:
    # Given a pending run, and a worker slow to decide it passes over it (another version's)
    make(store, "r")
    asked, decided = threading.Event(), threading.Event()
    passed: list[list[Lease]] = []

    class Slow:
        def __contains__(self, run_id: object) -> bool:
            asked.set()
            decided.wait(10)
            return True

    other = threading.Thread(target=lambda: passed.append(store.claim_next("other", skip=Slow())))
    other.start()
    assert asked.wait(10)
    # When another worker claims meanwhile, Then it takes the run (the first locked nothing)
    try:
        got = store.claim_next("me")
    finally:
        decided.set()
        other.join(10)
    assert [lease.run_id for lease in got] == ["r"] and passed == [[]]
    got[0].release()


# -- claim_next with queue limits: decided under the queue's lock ---------------------------------
def _done(lease: Lease) -> None:
    lease.append({"type": ev.RUN_COMPLETED, "result": 1, "ts": 9.0}, True)
    lease.release()


def test_claim_next_keeps_a_queue_within_its_concurrency(store: Store) -> None:
    # Given five pending runs of a queue that executes two at once
    specs = {"q": QueueSpec("q", concurrency=2)}
    for i in range(5):
        make(store, f"r{i}", queue="q", ts=float(i + 1))
    # When workers claim, Then two start (the oldest), and nobody takes a third
    first = store.claim_next("a", ["q"], specs=specs)
    assert sorted(lease.run_id for lease in first) == ["r0", "r1"]
    assert store.claim_next("b", ["q"], specs=specs) == []
    # A run released before it recorded anything keeps its slot, and is taken again
    first[1].release()
    (again,) = store.claim_next("b", ["q"], specs=specs)
    assert again.run_id == "r1"
    # When one finishes, Then exactly one more starts
    _done(first[0])
    assert [lease.run_id for lease in store.claim_next("b", ["q"], specs=specs)] == ["r2"]


def test_claim_next_starts_by_priority_then_age_and_not_before_due(store: Store) -> None:
    specs = {"q": QueueSpec("q", concurrency=1)}
    now = time.time()
    make(store, "late", queue="q", ts=1.0, start_at=now + 60)  # delayed a minute
    for name, priority, ts in [("low", 5, 2.0), ("high-old", -1, 3.0), ("high-new", -1, 4.0)]:
        make(store, name, queue="q", ts=ts, priority=priority)
    order = []
    for _ in range(3):
        (lease,) = store.claim_next("w", ["q"], specs=specs, now=now)
        order.append(lease.run_id)
        _done(lease)
    assert order == ["high-old", "high-new", "low"]
    assert store.claim_next("w", ["q"], specs=specs, now=now) == []  # "late" is not due
    (lease,) = store.claim_next("w", ["q"], specs=specs, now=now + 61)
    assert lease.run_id == "late"
    lease.release()


def test_claim_next_keeps_a_queue_within_its_rate(store: Store) -> None:
    # Given a queue that starts at most two runs a minute
    specs = {"q": QueueSpec("q", rate=(2, 60.0))}
    for i in range(4):
        make(store, f"r{i}", queue="q", ts=float(i + 1))
    got = store.claim_next("w", ["q"], specs=specs)
    assert len(got) == 2
    for lease in got:
        _done(lease)
    # Then finished runs still count in the window (counted 15% longer); later two more start
    assert store.claim_next("w", ["q"], specs=specs) == []
    assert store.queue_starts("q", time.time() - 60) == 2
    later = store.claim_next("w", ["q"], specs=specs, now=time.time() + 70)
    assert sorted(lease.run_id for lease in later) == ["r2", "r3"]
    for lease in later:
        lease.release()


def test_claim_next_lets_child_runs_share_their_parents_slot(store: Store) -> None:
    # Given a queue full with its parent run, and that run's child on the same queue
    specs = {"q": QueueSpec("q", concurrency=1)}
    make(store, "p", queue="q")
    (parent,) = store.claim_next("w", ["q"], specs=specs)
    make(store, "p/1", queue="q", parent="p")
    make(store, "other", queue="q")
    # Then the child is taken (no deadlock), the other top-level run is not
    assert [lease.run_id for lease in store.claim_next("w", ["q"], specs=specs)] == ["p/1"]
    # And a look at named runs (a doorbell) leaves a limited queue's pending runs alone
    assert store.claim_next("w", ["q"], specs=specs, among=["other"]) == []
    parent.release()


def test_two_workers_never_both_take_the_last_slot(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given ten pending runs of a queue of two, and six workers (each its own store object
    # where the store is shared by processes) claiming at the same instant
    kind = request.node.callspec.params["store"]
    specs = {"q": QueueSpec("q", concurrency=2)}
    for i in range(10):
        make(store, f"r{i}", queue="q")
    stores = [store if kind == "memory" else STORES[kind](tmp_path, request) for _ in range(6)]
    go = threading.Barrier(len(stores))
    taken: list[Lease] = []

    def worker(st: Store, name: str) -> None:
        go.wait()
        taken.extend(st.claim_next(name, ["q"], specs=specs))

    threads = [threading.Thread(target=worker, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Then exactly two runs started
    assert len(taken) == 2 and len({lease.run_id for lease in taken}) == 2
    for lease in taken:
        lease.release()
    for st in stores:
        if st is not store:
            st.close()


# -- inbox, wake-ups ---------------------------------------------------------------------------------
def test_send_and_read_the_inbox_by_cursor(store: Store) -> None:
    make(store, "r")
    with pytest.raises(RunNotFound):
        store.send("nobody", {"type": ev.CANCEL, "ts": 1.0})
    store.send("r", {"type": ev.SIGNAL, "name": "go", "payload": 1, "ts": 1.0})
    store.send("r", {"type": ev.SIGNAL, "name": "go", "payload": 2, "signal_id": "s2", "ts": 2.0})
    messages, cursor = store.inbox("r")
    assert [m["payload"] for m in messages] == [1, 2]
    assert messages[0]["signal_id"] and messages[1]["signal_id"] == "s2"  # stamped if missing
    assert store.inbox("r", cursor) == ([], cursor)
    store.send("r", {"type": ev.CANCEL, "ts": 3.0})
    later, _ = store.inbox("r", cursor)
    assert [m["type"] for m in later] == [ev.CANCEL]


def test_wait_returns_the_runs_messaged_since_the_cursor(store: Store) -> None:
    make(store, "r")
    make(store, "s")
    _, cursor = store.wait(None, 0)  # start now: earlier messages are not news
    ids, cursor = store.wait(cursor, 0.05)
    assert ids == []
    # a message sent while someone waits wakes the wait
    sent = threading.Event()

    def send_later() -> None:
        sent.wait(5)
        store.send("s", {"type": ev.CANCEL, "ts": 1.0})

    sender = threading.Thread(target=send_later)
    sender.start()
    sent.set()
    t0 = time.monotonic()
    ids, cursor = store.wait(cursor, 10)
    sender.join()
    assert time.monotonic() - t0 < 5
    assert ids is None or ids == ["s"]  # None: "look at every run you hold"
    assert store.wait(cursor, 0)[0] == []


def test_a_run_created_for_any_worker_wakes_the_waiting_ones(store: Store) -> None:
    # Given a worker waiting for wake-ups
    _, cursor = store.wait(None, 0)
    ids, cursor = store.wait(cursor, 0.05)
    assert ids == []
    # When one run is created for its creator to execute, and one for any worker
    assert store.create("mine", started("mine"), owner="creator")
    assert store.create("any", started("any"))
    # Then the wait names the second only: nobody called anything but `create`
    seen: set[str] = set()
    deadline = time.monotonic() + 5
    while "any" not in seen and time.monotonic() < deadline:
        ids, cursor = store.wait(cursor, 1.0)
        seen |= set(ids or ())
    assert seen == {"any"}
    assert not store.create("any", started("any"))  # an existing run rings nothing
    assert store.wait(cursor, 0)[0] == []


# -- listing ---------------------------------------------------------------------------------------
def test_list_runs_newest_first_filtered(store: Store) -> None:
    make(store, "old", ts=1.0)
    make(store, "mid", {"type": ev.RUN_COMPLETED, "result": 1}, ts=2.0, workflow="x")
    make(store, "new", step(1), ts=3.0)
    assert [i.run_id for i in store.list_runs()] == ["new", "mid", "old"]
    assert [i.run_id for i in store.list_runs(limit=2)] == ["new", "mid"]
    assert [i.run_id for i in store.list_runs(status=RunStatus.COMPLETED)] == ["mid"]
    assert [i.run_id for i in store.list_runs(workflow="w")] == ["new", "old"]
    info = store.summary("new")
    assert (info.status, info.steps, info.orphaned) == (RunStatus.RUNNING, 1, True)


# -- across processes --------------------------------------------------------------------------------
HOLDER = """
import sys
from intemporal import PostgresStore
from intemporal.store import open_store

# a store whose leases expire (PostgreSQL) gets a short one when argv[3] is given
store = open_store(sys.argv[1]) if len(sys.argv) < 4 else PostgresStore(sys.argv[1], lease=1.0)
lease = store.claim(sys.argv[2], "child")
assert lease is not None, "the child could not claim the run"
lease.append({"type": "activity_completed", "seq": 1, "name": "a", "result": 1, "ts": 2.0}, True)
print("held", flush=True)
sys.stdin.read()  # hold the run until killed
"""


def spawn(script: str, store: Store, kind: str, *args: str) -> subprocess.Popen[str]:
    """A child process running `script` on `store` (its location, then `args`; a short
    lease where leases expire), once it printed "held"."""
    assert store.location is not None
    proc = subprocess.Popen(
        [sys.executable, "-c", script, store.location, *args, *LEASED.get(kind, [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n", proc.stderr
    return proc


def kill_then_claim_next(proc: subprocess.Popen[str], store: Store) -> list[Lease]:
    """SIGKILL `proc`, then what `claim_next` gives within 5 s (leases expire meanwhile)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while not (got := store.claim_next("me")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


@pytest.mark.parametrize("kind", SHARED)
def test_a_claim_excludes_other_processes_until_the_owner_dies(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a run claimed by another process
    store = STORES[kind](tmp_path, request)
    make(store, "r")
    proc = spawn(HOLDER, store, kind, "r")
    try:
        # Then nobody here may execute it
        assert store.claim("r", "me") is None
        assert store.claim_next("me") == []
        assert store.summary("r").status is RunStatus.RUNNING and not store.summary("r").orphaned
        # When its owner dies, Then the run is left for anyone: claim_next takes it (once
        # the dead owner's lease expired, where the store's leases expire)
        (lease,) = kill_then_claim_next(proc, store)
        assert lease.run_id == "r"
        lease.append({"type": ev.RUN_COMPLETED, "result": 1, "ts": 3.0}, True)
        lease.release()
        assert [e["type"] for e in store.read("r")][-2:] == [
            ev.ACTIVITY_COMPLETED,
            ev.RUN_COMPLETED,
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        store.close()


OWNER_HOLDER = """
import sys
from intemporal import PostgresStore
from intemporal.store import open_store

store = open_store(sys.argv[1]) if len(sys.argv) < 3 else PostgresStore(sys.argv[1], lease=1.0)
store.lease_owner("parker")
print("held", flush=True)
sys.stdin.read()  # live until killed
"""


@pytest.mark.parametrize("kind", SHARED)
def test_a_run_parked_by_an_owner_in_another_process_is_taken_once_that_process_dies(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a waiting run whose owner (an engine) lives in another process
    store = STORES[kind](tmp_path, request)
    make(store, "parked", parked_by("parker"))
    proc = spawn(OWNER_HOLDER, store, kind)
    try:
        # Then this process does not take it
        assert store.claim_next("me") == []
        assert not store.summary("parked").orphaned
        # When the owner's process dies, Then the run is left by a dead owner: taken here
        (lease,) = kill_then_claim_next(proc, store)
        assert lease.run_id == "parked"
        lease.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        store.close()


# -- the least a backend implements ------------------------------------------------------------------
class MinimalStore(Store):
    """Only the abstract operations (a memory store underneath): everything else is the base's."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    def create(
        self, run_id: str, first: dict[str, Any], sync: bool = True, owner: str | None = None
    ) -> bool:
        return self._inner.create(run_id, first, sync, owner)

    def read(self, run_id: str) -> list[dict[str, Any]]:
        return self._inner.read(run_id)

    def exists(self, run_id: str) -> bool:
        return self._inner.exists(run_id)

    def claim(self, run_id: str, owner: str = "") -> Any:
        return self._inner.claim(run_id, owner)

    def send(self, run_id: str, message: dict[str, Any]) -> None:
        self._inner.send(run_id, message)

    def inbox(self, run_id: str, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        return self._inner.inbox(run_id, cursor)

    def run_ids(self) -> Iterator[str]:
        return self._inner.run_ids()

    def delete(self, run_id: str) -> None:
        self._inner.delete(run_id)


@intemporal.activity
def contract_step(x: int) -> int:
    return x + 1


@intemporal.workflow
def contract_flow(x: int) -> int:
    got = intemporal.wait_for_signal("go")
    return contract_step(x + got)


def test_a_store_with_only_the_abstract_operations_runs_workflows() -> None:
    # Given a backend that implements only what `Store` requires
    store = MinimalStore()
    with intemporal.Engine(store, threads=2) as engine:
        # When a run waits for a signal, and gets it
        handle = engine.start(contract_flow, 1, run_id="min")
        wait_until(lambda: handle.status() is RunStatus.WAITING, what="the run waits")
        assert not store.summary("min").executing  # the default probe: claim, give back
        handle.signal("go", 10)
        # Then it finishes: with no doorbell, `wait` says "look at every run you hold"
        assert handle.result(timeout=10) == 12
    make(store, "left")
    (lease,) = store.claim_next("me")
    assert lease.run_id == "left"
    lease.release()
