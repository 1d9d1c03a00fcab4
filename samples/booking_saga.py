"""The booking saga: undo the finished steps, last first, when a trip cannot be completed.

    python samples/booking_saga.py                    # journals go to a fresh temporary directory
    python samples/booking_saga.py --store .intemporal

Two trips are booked with the same workflow:

1. The card is declined: `charge_card` fails, so the saga cancels the flight, then the
   hotel (last registered, first undone), and the run ends `failed` with the card error.
2. The trip is held before payment (a durable `intemporal.sleep` of an hour) and the
   customer gives up: `handle.cancel()` wakes the sleeping run with `intemporal.Cancelled`,
   the same `except Exception` rolls back, and the run ends `cancelled`.

Each compensation is a durable activity: a crash in the middle of rolling back resumes
with the compensations still owed, and none of the finished ones runs again.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from typing import Any

import intemporal

CALLS: list[str] = []  # what the activities did, in order


class CardDeclined(Exception):
    """The payment provider refused the card."""


@intemporal.activity
def book_hotel(order: dict[str, Any]) -> str:
    CALLS.append("book_hotel")
    return f"hotel-{order['id']}"


@intemporal.activity
def book_flight(order: dict[str, Any]) -> str:
    CALLS.append("book_flight")
    return f"flight-{order['id']}"


PAYMENTS: dict[str, str] = {}  # the payment service: one payment per idempotency key


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))  # never charge twice
def charge_card(order: dict[str, Any]) -> str:
    # The run id and the step's sequence number are the same on a retry and after a crash:
    # a payment service that dedupes on this key charges once, whatever runs again.
    step = intemporal.info()  # .run_id, .workflow, .activity, .seq, .attempt
    key = f"{step.run_id}/{step.seq}"
    CALLS.append("charge_card")
    if order["card"] == "declined":
        raise CardDeclined(f"card declined for {order['id']}")
    return PAYMENTS.setdefault(key, f"payment-{order['id']}")


@intemporal.activity
def cancel_hotel(hotel: str) -> None:
    CALLS.append("cancel_hotel")


@intemporal.activity
def cancel_flight(flight: str) -> None:
    CALLS.append("cancel_flight")


@intemporal.workflow
def booking_saga(order: dict[str, Any]) -> str:
    saga = intemporal.saga()
    try:
        h = book_hotel(order)
        saga.add_compensation(cancel_hotel, h)
        f = book_flight(order)
        saga.add_compensation(cancel_flight, f)
        if order.get("hold"):
            intemporal.sleep(order["hold"])  # a durable wait: holds no thread, survives a crash
        charge_card(order)
        return "booked"
    except Exception:  # CardDeclined, or intemporal.Cancelled
        saga.compensate()  # cancel_flight(f), then cancel_hotel(h): LIFO
        raise


def journal(engine: intemporal.Engine, run_id: str) -> str:
    """The activities in the run's journal, with their outcome."""
    return ", ".join(
        f"{e['name']} {'ok' if e['type'] == 'activity_completed' else 'failed'}"
        for e in engine.history(run_id)
        if e["type"] in ("activity_completed", "activity_failed")
    )


def report(engine: intemporal.Engine, run_id: str) -> None:
    info = engine.get_run(run_id)
    print(f"   calls:   {', '.join(CALLS)}")
    print(f"   journal: {journal(engine, run_id)}")
    print(f"   run {run_id} is {info.status}: {info.error}")


def declined(engine: intemporal.Engine, tag: str) -> None:
    print("1. The card is declined: the saga rolls back")
    CALLS.clear()
    run_id = f"trip-declined-{tag}"
    try:
        engine.run(booking_saga, {"id": run_id, "card": "declined"}, run_id=run_id)
    except CardDeclined as exc:
        print(f"   result() raised CardDeclined: {exc}")
    report(engine, run_id)


def cancelled(engine: intemporal.Engine, tag: str) -> None:
    print("2. The trip is held for an hour before payment, and cancelled meanwhile")
    CALLS.clear()
    run_id = f"trip-cancelled-{tag}"
    handle = engine.start(booking_saga, {"id": run_id, "card": "ok", "hold": 3600}, run_id=run_id)
    deadline = time.monotonic() + 10
    while handle.status() is not intemporal.RunStatus.WAITING:  # booked, now sleeping
        if time.monotonic() > deadline:
            raise SystemExit("the trip never reached its hold; giving up")
        time.sleep(0.005)
    print(f"   {', '.join(CALLS)} done; the run is {handle.status()} (asleep); cancelling it")
    started = time.monotonic()
    handle.cancel()
    try:
        handle.result(timeout=10)
    except intemporal.Cancelled:
        took = time.monotonic() - started
        print(f"   result() raised Cancelled after {took:.2f} s, not an hour")
    report(engine, run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    tag = uuid.uuid4().hex[:8]  # fresh run ids: the sample can run again on the same store
    with (
        tempfile.TemporaryDirectory(prefix="intemporal-saga-") as tmp,
        intemporal.Engine(store=opts.store or tmp) as engine,
    ):
        declined(engine, tag)
        cancelled(engine, tag)


if __name__ == "__main__":
    main()
