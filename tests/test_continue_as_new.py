"""`intemporal.continue_as_new(...)`: an endless loop in bounded journals, followed to its end."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import Engine, MemoryStore, RunStatus, Store
from intemporal.lineage import next_in_chain
from intemporal.store import Event, Lease
from intemporal.verify import verify_replay


@intemporal.activity
def fetch(cursor: int) -> int:
    return cursor + 1


@intemporal.workflow(name="can.poller")
def poller(cursor: int, until: int) -> int:
    cursor = fetch(cursor)
    if cursor < until:
        intemporal.continue_as_new(cursor, until)
    return cursor


@intemporal.workflow(name="can.parent")
def parent(until: int) -> str:
    return f"child says {poller(0, until)}"


def test_a_thousand_iterations_keep_every_journal_short() -> None:
    # Given a poller that continues as new after each of its 1,000 iterations
    with Engine(MemoryStore(), durability="flush") as engine:
        handle = engine.start(poller, 0, 1000, run_id="poll")
        # Then the first run's handle follows the chain to the last run's result
        assert handle.result(timeout=60) == 1000
        chain = ["poll", *(f"poll~{n}" for n in range(1, 1000))]
        runs = {info.run_id: info for info in engine.list_runs()}
        assert set(runs) == set(chain)
        # And no journal holds more than one iteration's events
        for run_id in chain:
            assert len(engine.history(run_id)) == 3, run_id  # started, fetch, completed
        first = engine.get_run("poll")
        assert first.status is RunStatus.COMPLETED
        assert first.result == {"continued_as": "poll~1"}
        assert engine.history("poll~1")[0]["continued_from"] == "poll"
        assert engine.get_run("poll~999").result == 1000


def test_a_child_that_continues_as_new_returns_its_chains_result(store: Store) -> None:
    with Engine(store) as engine:
        assert engine.run(parent, 3, run_id="par") == "child says 3"
        assert engine.get_run("par/1").result == {"continued_as": "par/1~1"}
        assert engine.history("par/1~2")[0]["parent"] == "par"
        # And `intemporal replay` replays a continued run
        ok, said = verify_replay(store, "par/1")
        assert ok and "continued as new" in said, said


@intemporal.workflow(name="can.listener")
def listener(round_: int) -> str:
    said = intemporal.wait_for_signal("say")
    if round_ < 2:
        intemporal.continue_as_new(round_ + 1)
    return f"round {round_}: {said}"


def _waiting(engine: Engine, run_id: str) -> None:
    def look() -> bool:
        try:
            return engine.get_run(run_id).status is RunStatus.WAITING
        except intemporal.RunNotFound:  # not created yet
            return False

    wait_until(look)


def test_signals_cancel_and_terminate_reach_the_last_run_of_a_chain(engine: Engine) -> None:
    # Given a chain whose runs each wait for a signal
    handle = engine.start(listener, 0, run_id="talk")
    for n, link in enumerate(["talk", "talk~1"]):
        _waiting(engine, link)
        # When the first id is signalled, the live run of the chain takes it
        engine.signal("talk", "say", f"hello {n}")
    _waiting(engine, "talk~2")
    handle.signal("say", "bye")
    # Then the first handle's result is the last run's
    assert handle.result(timeout=10) == "round 2: bye"
    # And terminating a chain by its first id ends its live run
    engine.start(listener, 1, run_id="quiet")
    _waiting(engine, "quiet")
    engine.signal("quiet", "say", "x")
    _waiting(engine, "quiet~1")
    engine.terminate("quiet", reason="enough")
    assert engine.get_run("quiet~1").status is RunStatus.CANCELLED
    with pytest.raises(intemporal.Cancelled, match="enough"):
        engine.handle("quiet").result(timeout=5)


@intemporal.workflow(name="can.adder")
def adder(total: int) -> int:
    n = intemporal.wait_for_signal("add", timeout=30)
    total += fetch(n) - 1
    if n:
        intemporal.continue_as_new(total)
    return total


def test_signals_a_run_left_unread_go_on_to_the_next_run_of_its_chain(engine: Engine) -> None:
    # Given a chain that takes one signal per run, sent four signals at once
    handle = engine.start(adder, 0, run_id="sum")
    for n in [4, 6, 9, 0]:
        engine.signal("sum", "add", n)
    # Then each is taken by one run of the chain, none lost when a run continues as new
    assert handle.result(timeout=20) == 19
    assert engine.get_run("sum~3").result == 19
    taken = [
        e["signal_id"]
        for link in ["sum", "sum~1", "sum~2", "sum~3"]
        for e in engine.history(link)
        if e["type"] == "signal_received"
    ]
    assert len(taken) == len(set(taken)) == 4


@intemporal.workflow(name="can.relay")
def relay(round_: int) -> Any:
    if round_ == 0:
        intemporal.continue_as_new(1)
    return intemporal.wait_for_signal("go", timeout=60)


def test_a_run_adopted_here_while_its_execution_here_claims_it_is_executed(store: Store) -> None:
    # Given the next run of a chain, made for this engine, signalled in the instant before
    # the engine launched it: the signal's poke claims it ("nobody executes it"), the
    # execution launched here then fails its own claim on that lease, and the poke finds
    # the run executing here. It used to release its lease then: nobody executed the run
    # (a chain of signals timed out under load). Each step waits for the one before it.
    adopted, claim_failed, signalled = threading.Event(), threading.Event(), threading.Event()
    create, claim, claim_next = store.create, store.claim, store.claim_next
    poker: list[threading.Thread] = []

    def signal_then_mark() -> None:
        engine.signal("chain~1", "go", "hello")
        signalled.set()

    def creating(run_id: str, *args: Any, **kwargs: Any) -> bool:
        made = create(run_id, *args, **kwargs)
        if run_id == "chain~1":
            poker.append(threading.Thread(target=signal_then_mark, daemon=True))
            poker[0].start()
            assert adopted.wait(10), "the signal's poke never claimed the run"
        return made

    def claiming_next(*args: Any, **kwargs: Any) -> list[Lease]:
        leases = claim_next(*args, **kwargs)
        if [lease.run_id for lease in leases] == ["chain~1"] and not adopted.is_set():
            adopted.set()
            assert claim_failed.wait(10), "the run was never claimed by its execution here"
        return leases

    def claiming(run_id: str, *args: Any, **kwargs: Any) -> Lease | None:
        lease = claim(run_id, *args, **kwargs)
        mine = poker and threading.current_thread() is not poker[0]
        if run_id == "chain~1" and mine and not claim_failed.is_set():
            assert lease is None, "the run's claim must fail while the poke holds it"
            claim_failed.set()
            assert signalled.wait(10), "the signal never returned"
        return lease

    store.create, store.claim, store.claim_next = creating, claiming, claiming_next  # type: ignore[method-assign]
    with Engine(store, threads=2) as engine:
        handle = engine.start(relay, 0, run_id="chain")
        # Then the run is executed here once, with the signal
        assert handle.result(timeout=15) == "hello"
        assert adopted.is_set() and claim_failed.is_set() and signalled.is_set()
        assert [e["type"] for e in engine.history("chain~1")].count("signal_received") == 1


@intemporal.workflow(name="can.stepper")
def stepper(round_: int) -> Any:
    if round_ < 2:  # "p" waits for "a", "p~1" for "go-on", then "p~2" takes "b"
        intemporal.wait_for_signal("a" if round_ == 0 else "go-on", timeout=60)
        intemporal.continue_as_new(round_ + 1)
    return intemporal.wait_for_signal("b", timeout=60)


def test_a_signal_passed_down_a_chain_reaches_a_run_that_continues_as_it_is_sent(
    store: Store,
) -> None:
    # Given a signal "b" for run "p" sent as "p" continues as new, after it passed its
    # unread signals on: the sender passes it on to "p~1", which continues as new itself
    # between the sender's look at it (still waiting) and the send. The sender looked only
    # before the send, so "p~2" never got it (a chain of signals timed out under load).
    send = store.send

    def then(what: Any) -> None:
        threading.Thread(target=what, daemon=True).start()

    def continued(run_id: str) -> bool:
        return engine.get_run(run_id).status is RunStatus.COMPLETED and any(
            e["type"] == "signal_wait" for e in _history(engine, next_in_chain(run_id))
        )

    def sending(run_id: str, message: Event) -> None:
        if message.get("name") == "b" and run_id in ("p", "p~1"):  # the link ends first
            then(lambda: engine.signal(run_id, "a" if run_id == "p" else "go-on"))
            wait_until(lambda: continued(run_id), what=f"{run_id} to continue as new")
        send(run_id, message)

    store.send = sending  # type: ignore[method-assign]
    with Engine(store, threads=2) as engine:
        handle = engine.start(stepper, 0, run_id="p")
        _waiting(engine, "p")
        # When "b" is sent to "p"
        engine.signal("p", "b", "hello")
        # Then the last run takes it
        assert handle.result(timeout=15) == "hello"
        assert engine.get_run("p~2").result == "hello"


def _history(engine: Engine, run_id: str) -> list[Event]:
    try:
        return engine.history(run_id)
    except intemporal.RunNotFound:  # not created yet
        return []


def test_continue_as_new_outside_a_workflow_is_refused() -> None:
    with pytest.raises(RuntimeError):
        intemporal.continue_as_new(1)
