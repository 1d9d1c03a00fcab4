"""Changing code under running workflows, and controlling long runs.

    python samples/long_runs.py                    # a fresh temporary store
    python samples/long_runs.py --store .intemporal

prints, for each tool, what happened:
    patched:   old run -> charged by v1, new run -> charged by v2 (replay: deterministic both)
    fork:      src-... failed at step 2; fork fix-... -> shipped order-9 (reserve ran 1 time)
    continue:  poll-... -> 5 after 5 runs of 3 events each
    timeout:   trip-... cancelled (timed out); compensations: unbook hotel
    terminate: stuck-... cancelled (terminated: duplicate); compensations: none

- `intemporal.patched("charge-v2")` lets a run started by the old code replay the old path
  while new runs take the new one.
- `engine.fork(run_id, from_step)` repairs a failed run once the bug is fixed: the steps
  before `from_step` are copied, not run again.
- `intemporal.continue_as_new(...)` keeps an endless loop in short journals.
- `engine.start(..., timeout=s)` cancels a run at its deadline (its saga rolls back).
- `engine.terminate(run_id, reason)` ends a run now, without compensations.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from typing import Any

import intemporal
from intemporal.verify import verify_replay

CODE = {"deployed": "v1", "buggy": True}
CALLS: list[str] = []


@intemporal.activity
def charge(order: str) -> str:
    return "charged by v1"


@intemporal.activity
def charge_v2(order: str) -> str:
    return "charged by v2"


@intemporal.workflow(name="long_runs.checkout")
def checkout(order: str) -> str:
    if CODE["deployed"] == "v2" and intemporal.patched("charge-v2"):
        paid = charge_v2(order)
    else:
        paid = charge(order)
    intemporal.wait_for_signal("approve")
    return paid


@intemporal.activity
def reserve(order: str) -> str:
    CALLS.append("reserve")
    return order


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def ship(order: str) -> str:
    if CODE["buggy"]:
        raise ValueError("address missing")
    return f"shipped {order}"


@intemporal.workflow(name="long_runs.fulfil")
def fulfil(order: str) -> str:
    return ship(reserve(order))


@intemporal.activity
def poll(cursor: int) -> int:
    return cursor + 1


@intemporal.workflow(name="long_runs.poller")
def poller(cursor: int) -> int:
    cursor = poll(cursor)
    if cursor < 5:
        intemporal.continue_as_new(cursor)  # never returns: a fresh run, a fresh journal
    return cursor


@intemporal.activity
def book(item: str) -> str:
    return item


@intemporal.activity
def unbook(item: str) -> None:
    CALLS.append(f"unbook {item}")


@intemporal.workflow(name="long_runs.trip")
def trip(item: str) -> str:
    with intemporal.saga() as saga:
        book(item)
        saga.add_compensation(unbook, item)
        intemporal.sleep(3600)
        return "done"


def parked(handle: intemporal.RunHandle[Any]) -> None:
    """Wait (up to 10 s) until the run waits for its signal or timer."""
    deadline = time.monotonic() + 10
    while handle.status() != intemporal.RunStatus.WAITING and time.monotonic() < deadline:
        time.sleep(0.01)


def main(store: str) -> None:
    tag = uuid.uuid4().hex[:8]
    with intemporal.Engine(store) as engine:
        # Patching: a run started by v1 waits for approval while v2 is deployed
        old = engine.start(checkout, "order-1")
        parked(old)
        CODE["deployed"] = "v2"
        new = engine.start(checkout, "order-2")
        for handle in (old, new):
            handle.signal("approve")
        said = [old.result(timeout=10), new.result(timeout=10)]
        ok = all(verify_replay(store, h.run_id)[0] for h in (old, new))
        print(
            f"patched:   old run -> {said[0]}, new run -> {said[1]} "
            f"(replay: {'deterministic' if ok else 'MISMATCH'} both)"
        )

        # Fork: a run failed on a bug; once fixed, fork it from the failed step
        src = engine.start(fulfil, "order-9", run_id=f"src-{tag}")
        with contextlib.suppress(ValueError):
            src.result(timeout=10)
        step = next(e["seq"] for e in engine.history(src.run_id) if e["type"] == "activity_failed")
        CODE["buggy"] = False
        fork = engine.fork(src.run_id, step, new_run_id=f"fix-{tag}")
        print(
            f"fork:      {src.run_id} failed at step {step}; fork {fork.run_id} -> "
            f"{fork.result(timeout=10)} (reserve ran {CALLS.count('reserve')} time)"
        )

        # Continue-as-new: five iterations, five short journals, one result
        first = engine.start(poller, 0, run_id=f"poll-{tag}")
        result = first.result(timeout=10)
        chain = [r for r in engine.list_runs() if r.run_id.startswith(first.run_id)]
        sizes = "/".join(sorted({str(len(engine.history(r.run_id))) for r in chain}))
        print(
            f"continue:  {first.run_id} -> {result} after {len(chain)} runs of {sizes} events each"
        )

        # Timeout: the run sleeps past its deadline, is cancelled, and its saga rolls back
        late = engine.start(trip, "hotel", run_id=f"trip-{tag}", timeout=0.3)
        try:
            late.result(timeout=10)
        except intemporal.Cancelled:
            reason = engine.history(late.run_id)[-1]["reason"]
            print(f"timeout:   {late.run_id} cancelled ({reason}); compensations: {CALLS[-1]}")

        # Terminate: ends now, nothing compensated
        CALLS.clear()
        stuck = engine.start(trip, "car", run_id=f"stuck-{tag}")
        parked(stuck)
        engine.terminate(stuck.run_id, reason="duplicate")
        end = engine.history(stuck.run_id)[-1]
        print(
            f"terminate: {stuck.run_id} {engine.get_run(stuck.run_id).status} "
            f"(terminated: {end['reason']}); compensations: {', '.join(CALLS) or 'none'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="the store directory (default: a temporary one)")
    options = parser.parse_args()
    if options.store:
        main(options.store)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
