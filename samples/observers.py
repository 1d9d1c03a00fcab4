"""Watching runs: the `intemporal` logger, and an `Observer` of your own.

    python samples/observers.py                    # journals go to a fresh temporary directory
    python samples/observers.py --store .intemporal

prints (the log lines on stderr, through `logging`)
    INFO run 'flaky-…' (charge_order) started
    WARNING activity charge (step 1 of run 'flaky-…') failed on attempt 1: ConnectionError: …
    WARNING activity charge (step 1 of run 'flaky-…') failed on attempt 2: ConnectionError: …
    INFO run 'flaky-…' (charge_order) completed in 0.1 s
    charge: 3 attempts, 2 failed, replayed 1
    result: charged 42

Every engine logs run starts and ends (INFO), each failed attempt with its retry delay
(WARNING) and each resume of a crashed run (INFO). An `intemporal.Observer` gets the same
moments as small records; `replaying` tells a step replayed from the journal (the run
executing again after waiting, here for a signal) from one that runs now.
"""

from __future__ import annotations

import argparse
import collections
import logging
import tempfile
import time

import intemporal
from intemporal.observe import ActivityFinished, AttemptFailed

_calls: collections.Counter[str] = collections.Counter()


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=5, initial_interval=0.01))
def charge(amount: int) -> str:
    _calls["charge"] += 1
    if _calls["charge"] < 3:  # the payment service is flaky: two failures, then it works
        raise ConnectionError("payment service unreachable")
    return f"charged {amount}"


@intemporal.workflow
def charge_order(amount: int) -> str:
    done = charge(amount)
    intemporal.wait_for_signal("shipped")  # the run waits without a thread, then replays
    return done


class StepCounts(intemporal.Observer):
    """Counts attempts per activity, keeping replays apart."""

    def __init__(self) -> None:
        self.attempts: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.replayed: collections.Counter[str] = collections.Counter()

    def on_attempt_failed(self, rec: AttemptFailed) -> None:
        self.failed[rec.activity] += 1

    def on_activity_finished(self, rec: ActivityFinished) -> None:
        if rec.replaying:
            self.replayed[rec.activity] += 1
        else:
            self.attempts[rec.activity] += rec.attempts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    counts = StepCounts()
    with (
        tempfile.TemporaryDirectory(prefix="intemporal-observers-") as tmp,
        intemporal.Engine(store=opts.store or tmp, observers=[counts]) as engine,
    ):
        handle = engine.start(charge_order, 42, run_id=f"flaky-{intemporal.uuid4().hex[:6]}")
        deadline = time.monotonic() + 30
        while handle.status() is not intemporal.RunStatus.WAITING:  # for the signal
            if time.monotonic() > deadline:
                raise SystemExit("the run did not reach its wait within 30 s")
            time.sleep(0.01)
        handle.signal("shipped")
        result = handle.result(timeout=30)
    print(
        f"charge: {counts.attempts['charge']} attempts, {counts.failed['charge']} failed, "
        f"replayed {counts.replayed['charge']}"
    )
    print(f"result: {result}")


if __name__ == "__main__":
    main()
