"""Sagas: compensations run last-registered first, durably, and failures among them are reported.

The booking saga of the API contract (`book_hotel`, `book_flight`, `charge_card`, then
`cancel_flight(f)`, `cancel_hotel(h)`) runs against a shared call log, in the
try/except form and in the `with intemporal.saga() as saga:` form.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls
from process_helpers import run_and_kill

import intemporal
from intemporal import Engine, FileStore, RetryPolicy, RunStatus
from intemporal.errors import CompensationError

ONCE = RetryPolicy(max_attempts=1)
FAST_TWICE = RetryPolicy(max_attempts=2, initial_interval=0.001, backoff=1.0)

LOG = Calls()  # the shared call log; reset before every test


@pytest.fixture(autouse=True)
def fresh_log() -> Iterator[Calls]:
    global LOG
    LOG = Calls()
    yield LOG


class CardDeclined(Exception):
    """The payment provider refused the card."""


class NoSeats(Exception):
    """The flight is full."""


# -- the booking saga -----------------------------------------------------------------------


@intemporal.activity(retry=ONCE)
def book_hotel(order: dict[str, Any]) -> str:
    LOG.hit("book_hotel")
    return f"H-{order['id']}"


@intemporal.activity(retry=ONCE)
def book_flight(order: dict[str, Any]) -> str:
    LOG.hit("book_flight")
    if order.get("fail") == "book_flight":
        raise NoSeats(f"no seats for {order['id']}")
    return f"F-{order['id']}"


@intemporal.activity(retry=ONCE)
def charge_card(order: dict[str, Any]) -> str:
    LOG.hit("charge_card")
    if order.get("fail") == "charge_card":
        raise CardDeclined(f"card declined for {order['id']}")
    return "paid"


@intemporal.activity
def cancel_hotel(h: str) -> None:
    LOG.hit("cancel_hotel")
    assert h.startswith("H-")


@intemporal.activity
def cancel_flight(f: str) -> None:
    LOG.hit("cancel_flight")
    assert f.startswith("F-")


@intemporal.activity(retry=FAST_TWICE)
def cancel_flight_broken(f: str) -> None:
    LOG.hit("cancel_flight_broken")
    raise ConnectionError(f"airline unreachable while cancelling {f}")


@intemporal.workflow
def booking_saga(order: dict[str, Any]) -> str:
    saga = intemporal.saga()
    try:
        h = book_hotel(order)
        saga.add_compensation(cancel_hotel, h)
        f = book_flight(order)
        undo_flight = cancel_flight_broken if order.get("broken") else cancel_flight
        saga.add_compensation(undo_flight, f)
        charge_card(order)
        return "booked"
    except Exception:
        saga.compensate()  # cancel_flight(f), then cancel_hotel(h): LIFO
        raise


@intemporal.workflow
def booking_saga_with(order: dict[str, Any]) -> str:
    with intemporal.saga() as saga:
        h = book_hotel(order)
        saga.add_compensation(cancel_hotel, h)
        f = book_flight(order)
        undo_flight = cancel_flight_broken if order.get("broken") else cancel_flight
        saga.add_compensation(undo_flight, f)
        charge_card(order)
    return "booked"


BOTH_FORMS = pytest.mark.parametrize(
    "wf", [booking_saga, booking_saga_with], ids=["try-except", "with"]
)

ROLLED_BACK = ["book_hotel", "book_flight", "charge_card", "cancel_flight", "cancel_hotel"]


def activity_log(engine: Engine, run_id: str) -> list[tuple[str, str]]:
    """(name, outcome) of each finished activity in the run's journal, in journal order."""
    return [
        (e["name"], "failed" if e["type"] == "activity_failed" else "ok")
        for e in engine.history(run_id)
        if e["type"] in ("activity_completed", "activity_failed")
    ]


@BOTH_FORMS
def test_failed_charge_rolls_back_last_registered_first(engine: Engine, wf: Any) -> None:
    # Given an order whose card is declined
    order = {"id": "o1", "fail": "charge_card"}

    # When the saga runs
    handle = engine.start(wf, order, run_id="o1")

    # Then its result is charge_card's exception, type and message
    with pytest.raises(CardDeclined, match="card declined for o1"):
        handle.result(timeout=10)
    # and the completed steps were undone, last first, each once
    assert LOG.order == ROLLED_BACK
    # and the journal tells the same story
    assert activity_log(engine, "o1") == [
        ("book_hotel", "ok"),
        ("book_flight", "ok"),
        ("charge_card", "failed"),
        ("cancel_flight", "ok"),
        ("cancel_hotel", "ok"),
    ]
    info = engine.get_run("o1")
    assert info.status is RunStatus.FAILED
    assert info.error is not None and "CardDeclined: card declined for o1" in info.error
    assert engine.history("o1")[-1]["type"] == "run_failed"


@BOTH_FORMS
def test_failed_run_reports_the_original_error_from_a_fresh_handle(engine: Engine, wf: Any) -> None:
    # Given a saga that failed and rolled back
    with pytest.raises(CardDeclined):
        engine.run(wf, {"id": "o2", "fail": "charge_card"}, run_id="o2")

    # When another handle (as from another process) asks for the result
    # Then it raises the same exception type and message
    with pytest.raises(CardDeclined, match="card declined for o2"):
        engine.handle("o2").result(timeout=5)


@BOTH_FORMS
def test_step_failing_before_its_add_compensation_registers_nothing(
    engine: Engine, wf: Any
) -> None:
    # Given an order whose flight cannot be booked (its compensation is never registered)
    order = {"id": "o3", "fail": "book_flight"}

    # When the saga runs
    with pytest.raises(NoSeats, match="no seats for o3"):
        engine.run(wf, order, run_id="o3")

    # Then only the hotel, which was booked, is cancelled; the flight is not "cancelled"
    assert LOG.order == ["book_hotel", "book_flight", "cancel_hotel"]
    assert activity_log(engine, "o3") == [
        ("book_hotel", "ok"),
        ("book_flight", "failed"),
        ("cancel_hotel", "ok"),
    ]
    assert engine.get_run("o3").status is RunStatus.FAILED


@BOTH_FORMS
def test_happy_path_runs_no_compensation(engine: Engine, wf: Any) -> None:
    # Given an order that goes through
    # When the saga runs
    result = engine.run(wf, {"id": "o4"}, run_id="o4")

    # Then it is booked and nothing is undone
    assert result == "booked"
    assert LOG.order == ["book_hotel", "book_flight", "charge_card"]
    assert engine.get_run("o4").status is RunStatus.COMPLETED
    assert [name for name, _ in activity_log(engine, "o4")] == LOG.order


@BOTH_FORMS
def test_failing_compensation_is_recorded_and_the_rest_still_run(engine: Engine, wf: Any) -> None:
    # Given a saga whose flight compensation always fails (2 attempts, tiny interval)
    order = {"id": "o5", "fail": "charge_card", "broken": True}

    # When the card is declined
    with pytest.raises(CardDeclined, match="card declined for o5") as caught:
        engine.run(wf, order, run_id="o5")

    # Then the broken compensation was tried per its policy, and the hotel still cancelled
    assert LOG.order == [
        "book_hotel",
        "book_flight",
        "charge_card",
        "cancel_flight_broken",
        "cancel_flight_broken",
        "cancel_hotel",
    ]
    events = engine.history("o5")
    broken = [e for e in events if e.get("name") == "cancel_flight_broken"]
    assert [e["type"] for e in broken] == ["attempt_failed", "activity_failed"]
    assert broken[-1]["attempts"] == 2
    assert broken[-1]["error"]["type"] == "ConnectionError"
    # and the run's error names the compensation that failed, and why
    info = engine.get_run("o5")
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert "CardDeclined: card declined for o5" in info.error
    assert "cancel_flight_broken" in info.error
    assert "airline unreachable" in info.error
    notes = getattr(caught.value, "__notes__", [])
    assert any("cancel_flight_broken" in n for n in notes)


def test_compensate_outside_an_error_raises_compensation_error(engine: Engine) -> None:
    # Given a workflow that compensates deliberately (no error being handled)
    @intemporal.workflow(name="undo-on-purpose")
    def undo_on_purpose() -> str:
        saga = intemporal.saga()
        saga.add_compensation(cancel_hotel, "H-1")
        saga.add_compensation(cancel_flight_broken, "F-1")
        try:
            saga.compensate()
        except CompensationError as exc:
            failed = [name for name, _ in saga.failures]
            return f"{failed} | {exc}"
        return "no error"

    # When it runs
    out = engine.run(undo_on_purpose, run_id="undo")

    # Then the failure is reported as CompensationError naming it, after the rest ran
    assert out.startswith("['cancel_flight_broken'] | compensations failed: cancel_flight_broken")
    assert LOG.order == ["cancel_flight_broken", "cancel_flight_broken", "cancel_hotel"]


def release_room(room: str, *, reason: str) -> str:
    """A plain (undecorated) function: `add_compensation` makes it a durable activity."""
    LOG.hit(f"release {room} ({reason})")
    return room


def test_plain_function_compensation_with_kwargs_is_durable(engine: Engine) -> None:
    # Given a compensation that is a plain function taking keyword arguments
    @intemporal.workflow(name="plain-undo")
    def plain_undo() -> None:
        with intemporal.saga() as saga:
            saga.add_compensation(release_room, "101", reason="declined")
            saga.add_compensation(release_room, "102", reason="declined")
            charge_card({"id": "p", "fail": "charge_card"})

    # When the step after them fails
    with pytest.raises(CardDeclined):
        engine.run(plain_undo, run_id="plain")

    # Then they ran last first, as journaled activities
    assert LOG.order == ["charge_card", "release 102 (declined)", "release 101 (declined)"]
    names = [name for name, _ in activity_log(engine, "plain")]
    assert names == ["charge_card", "release_room", "release_room"]


def test_with_form_leaves_non_exceptions_alone(engine: Engine) -> None:
    # Given a `with` saga that returns normally from inside the block
    @intemporal.workflow(name="early-return")
    def early_return() -> str:
        with intemporal.saga() as saga:
            h = book_hotel({"id": "e"})
            saga.add_compensation(cancel_hotel, h)
            return h

    # When it runs, Then nothing is compensated
    assert engine.run(early_return, run_id="early") == "H-e"
    assert LOG.order == ["book_hotel"]


def test_resuming_a_rolled_back_saga_repeats_nothing(engine: Engine) -> None:
    # Given a saga that failed and rolled back: its failure was handled (compensated)
    with pytest.raises(CardDeclined):
        engine.run(booking_saga, {"id": "o6", "fail": "charge_card"}, run_id="o6")
    before = len(LOG.order)

    # When the failed run is resumed
    with pytest.raises(CardDeclined, match="card declined for o6"):
        engine.resume("o6").result(timeout=10)

    # Then it replays to the same end: retrying the charge after the bookings were
    # cancelled would book nothing and charge the card, so no step runs again
    assert LOG.order[before:] == []
    assert engine.get_run("o6").status is RunStatus.FAILED


# -- crash in the middle of compensating ----------------------------------------------------

CRASH_BODY = """
ONCE = intemporal.RetryPolicy(max_attempts=1)


@intemporal.activity(retry=ONCE)
def book(what):
    record("book", what)
    return what


@intemporal.activity(retry=ONCE)
def charge():
    record("charge")
    raise ValueError("card declined")


@intemporal.activity
def undo(what, hang_on):
    record("undo", what)
    if what == hang_on:
        hang()  # the child is killed here; in the test process this returns at once
    return what


@intemporal.workflow(name=WF_NAME)
def wf(hang_on):
    saga = intemporal.saga()
    try:
        for what in ("hotel", "flight", "car"):
            saga.add_compensation(undo, book(what), hang_on)
        charge()
        return "booked"
    except Exception:
        saga.compensate()
        raise


WORKFLOW = wf
"""


@pytest.mark.parametrize("hang_on", ["car", "flight", "hotel"])
def test_sigkill_while_compensating_resumes_the_rollback_without_repeats(
    tmp_path: Path, hang_on: str
) -> None:
    # Given a child process rolling back a failed saga, killed inside compensation `hang_on`
    undo_order = ["car", "flight", "hotel"]
    before = ["book hotel", "book flight", "book car", "charge"]
    in_flight = before + [f"undo {w}" for w in undo_order[: undo_order.index(hang_on) + 1]]
    crash = run_and_kill(
        tmp_path,
        CRASH_BODY,
        args=(hang_on,),
        lines=len(in_flight),
        run_id=f"crash-{hang_on}",
    )
    assert crash.lines() == in_flight
    assert not any(
        e["type"].startswith("run_") and e["type"] != "run_started" for e in crash.events()
    )

    # When the run is resumed in this process
    with Engine(FileStore(crash.store), threads=2) as engine:
        with pytest.raises(ValueError, match="card declined"):
            engine.resume(crash.run_id).result(timeout=10)
        assert engine.get_run(crash.run_id).status is RunStatus.FAILED

    # Then the in-flight compensation ran once more, the others exactly once, none skipped,
    # and nothing before the rollback ran again
    counts = crash.counts()
    for line in before:
        assert counts[line] == 1, line
    for what in undo_order:
        assert counts[f"undo {what}"] == (2 if what == hang_on else 1), what
    assert crash.lines() == in_flight + [f"undo {hang_on}"] + [
        f"undo {w}" for w in undo_order[undo_order.index(hang_on) + 1 :]
    ]
    undone = [
        e["result"]
        for e in crash.events()
        if e["type"] == "activity_completed" and e["name"] == "undo"
    ]
    assert undone == undo_order  # one journal record per compensation


def test_the_journal_marks_where_compensating_begins(engine: Engine) -> None:
    # Given a saga that rolls back
    with pytest.raises(CardDeclined):
        engine.run(booking_saga, {"id": "o9", "fail": "charge_card"}, run_id="o9")
    # Then one marker, right after the failed step, names the compensations in the order they run
    events = engine.history("o9")
    marks = [e for e in events if e["type"] == "compensation_started"]
    assert len(marks) == 1
    assert marks[0]["compensations"] == ["cancel_flight", "cancel_hotel"]
    failed = next(i for i, e in enumerate(events) if e["type"] == "activity_failed")
    assert events[failed + 1] is marks[0]


def test_importing_the_saga_submodule_keeps_intemporal_saga_the_function() -> None:
    # Given a fresh process that imports `intemporal.saga` the module (for `Saga`, say)
    # before using `intemporal.saga()`: the import system binds the submodule on the package
    code = (
        "import intemporal\nfrom intemporal.saga import Saga\n"
        "assert callable(intemporal.saga) and intemporal.saga.__module__ == 'intemporal.saga'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # Then `intemporal.saga` is still the function (it was the module: "not callable")
    assert done.returncode == 0, done.stderr
