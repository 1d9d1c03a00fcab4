"""Fill a store with runs worth looking at, then browse them with `intemporal ui`.

    python samples/ui_demo.py --store .intemporal-ui
    intemporal --store .intemporal-ui ui --open        # needs: pip install 'intemporal[ui]'

It leaves four runs behind:
- `order-...`: an activity that fails twice and succeeds on its third attempt, a timer, a
  wait for the signal "approve" (sent by this script), a child run that ships the order,
  a secret argument (the page shows `***`) and a result stored with dill (a tuple);
- `trip-...`: a saga whose payment fails: its compensations run, the run fails with the
  card's error and traceback;
- `crash-...`: a worker process killed mid-run (`os._exit`), then resumed here: the
  timeline marks the crash and the resume;
- `expense-...`: waiting for a signal nobody sent yet.

With `--serve` it then serves the web view itself until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid

import intemporal

CRASH_ENV = "UI_DEMO_CRASH"  # set in the worker process that dies mid-run
_tries: dict[str, int] = {}


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=4, initial_interval=0.05))
def reserve_stock(order_id: str) -> str:
    """Fails twice (the warehouse is flaky), then reserves."""
    _tries[order_id] = _tries.get(order_id, 0) + 1
    if _tries[order_id] < 3:
        raise ConnectionError(f"warehouse unreachable (try {_tries[order_id]})")
    return f"R-{order_id[-4:]}"


@intemporal.activity
def charge(order_id: str, token: intemporal.Secret[str], amount: int) -> tuple[str, int]:
    """Charges the card; the token is a secret, the receipt a tuple (stored with dill)."""
    time.sleep(0.02)
    return (f"receipt-{order_id[-4:]}", amount)


@intemporal.activity
def pack(order_id: str) -> str:
    time.sleep(0.03)
    if os.environ.get(CRASH_ENV):
        os._exit(3)  # the worker dies here, like a power cut of that process
    return f"parcel-{order_id[-4:]}"


@intemporal.activity
def label(parcel: str) -> str:
    time.sleep(0.02)
    return f"{parcel}-label"


@intemporal.workflow
def ship(order_id: str) -> str:
    parcel = pack(order_id)
    return label(parcel)


@intemporal.workflow
def order(order_id: str, token: intemporal.Secret[str]) -> dict[str, object]:
    reservation = reserve_stock(order_id)
    intemporal.sleep(0.2)
    approval = intemporal.wait_for_signal("approve")
    receipt = charge(order_id, token, 240)
    tracking = ship(order_id)  # a child run: "<run id>/<seq>"
    return {
        "reservation": reservation,
        "approved_by": approval,
        "receipt": list(receipt),
        "tracking": tracking,
    }


@intemporal.activity
def book(what: str, nights: int = 2) -> dict[str, object]:
    """Books a hotel or a flight: the booking is what its compensation cancels."""
    time.sleep(0.01 * nights)
    return {"booking": f"{what}-booked", "nights": nights}


@intemporal.activity
def cancel_booking(booking: dict[str, object]) -> None:
    time.sleep(0.01)


class CardDeclined(Exception):
    pass


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def pay(amount: int) -> None:
    raise CardDeclined(f"card declined for {amount} EUR")


@intemporal.workflow
def trip(amount: int) -> str:
    saga = intemporal.saga()
    try:
        hotel = book("hotel")
        saga.add_compensation(cancel_booking, hotel)
        flight = book("flight")
        saga.add_compensation(cancel_booking, flight)
        pay(amount)
        return "booked"
    except Exception:
        saga.compensate()
        raise


@intemporal.workflow
def packing(order_id: str) -> str:
    box = label("box-1")
    parcel = pack(order_id)  # the crash worker dies in here
    return f"{box} + {label(parcel)}"


@intemporal.workflow
def expense(amount: int) -> str:
    who = intemporal.wait_for_signal("approve")
    return f"{amount} approved by {who}"


def wait_status(engine: intemporal.Engine, run_id: str, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while engine.get_run(run_id).status != status:
        if time.monotonic() > deadline:
            sys.exit(f"run {run_id} did not become {status} within {timeout} s")
        time.sleep(0.02)


def fill(store: str) -> dict[str, str]:
    """Make the four runs; return their ids by kind."""
    tag = uuid.uuid4().hex[:8]
    ids = {k: f"{k}-{tag}" for k in ("order", "trip", "crash", "expense")}
    # The crash: a worker process dies inside `pack`; the run is left orphaned.
    worker = [sys.executable, __file__, "--crash-worker", ids["crash"], "--store", store]
    subprocess.run(worker, env={**os.environ, CRASH_ENV: "1"}, check=False, timeout=60)
    with intemporal.Engine(store) as engine:
        h = engine.start(
            order, ids["order"], intemporal.Secret("tok_live_123"), run_id=ids["order"]
        )
        wait_status(engine, ids["order"], "waiting")
        h.signal("approve", "alice")
        print(f"order:   {h.run_id} -> {h.result(timeout=30)}")
        try:
            engine.run(trip, 980, run_id=ids["trip"])
        except CardDeclined as exc:
            print(f"trip:    {ids['trip']} failed: {exc} (compensated)")
        print(
            f"crash:   {ids['crash']} resumed -> {engine.resume(ids['crash']).result(timeout=30)}"
        )
        engine.start(expense, 120, run_id=ids["expense"])
        wait_status(engine, ids["expense"], "waiting")
        print(f"expense: {ids['expense']} waits for the signal 'approve'")
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=".intemporal-ui", help="the store to fill")
    parser.add_argument("--serve", action="store_true", help="then serve the web view")
    parser.add_argument("--crash-worker", metavar="RUN_ID", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crash_worker:  # the worker process that dies mid-run
        with intemporal.Engine(args.store) as engine:
            engine.run(packing, args.crash_worker, run_id=args.crash_worker)
        return
    ids = fill(args.store)
    command = [sys.executable, "-m", "intemporal.cli", "--store", args.store, "ui"]
    print(f"\nsee them: intemporal --store {args.store} ui   (then open /runs/{ids['order']})")
    if args.serve:
        subprocess.run(command, check=False)


if __name__ == "__main__":
    main()
