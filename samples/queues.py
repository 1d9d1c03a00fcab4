"""Queues with limits, priorities and delays, and a cron schedule, on one engine.

    python samples/queues.py                  # journals go to a fresh temporary directory
    python samples/queues.py --store .intemporal

The "emails" queue sends at most 2 at once (across every worker of the store) and 20 a
second. Eight emails are recorded at once, the urgent ones with a lower priority value;
a reminder is delayed by half a second. The activity notes when each send begins and
ends, so the output shows that never more than 2 ran at once and that the urgent ones
went first. A heartbeat workflow is scheduled every second (`* * * * * *`, seconds
first): it runs once per tick, with the run id "heartbeat@<tick>".

prints (times differ)
    first two sent: urgent-0, urgent-1 (priority 0; the news have 5)
    at most 2 at once (concurrency=2)
    reminder started 0.5 s after it was recorded (delay=0.5)
    heartbeat runs: heartbeat@2026-11-29T12:00:01Z, heartbeat@2026-11-29T12:00:02Z
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from datetime import datetime

import intemporal

emails = intemporal.Queue("emails", concurrency=2, rate=(20, 1.0))
_lock = threading.Lock()
_busy = [0, 0]  # sending now, most at once


@intemporal.activity
def send(to: str) -> float:
    """Pretend to send an email (50 ms); return when the send began."""
    began = time.time()
    with _lock:
        _busy[0] += 1
        _busy[1] = max(_busy[1], _busy[0])
    time.sleep(0.05)
    with _lock:
        _busy[0] -= 1
    return began


@intemporal.workflow(queue="emails")
def email(to: str) -> float:
    return send(to)


@intemporal.scheduled("* * * * * *")  # every second (six fields: seconds first), UTC
@intemporal.workflow(name="heartbeat")
def heartbeat(tick: datetime) -> str:
    return f"alive at {tick:%H:%M:%S}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intemporal-queues-") as tmp:
        store = opts.store or tmp
        # A client records the emails first, so the worker sees all of them at once.
        with intemporal.Engine(store=store, worker=False) as client:
            names = [f"news-{i}" for i in range(6)] + ["urgent-0", "urgent-1"]
            handles = {
                to: client.start(email, to, priority=0 if to.startswith("urgent") else 5)
                for to in names
            }
        # A worker of every queue: it uses the limits `emails` declared at import.
        with intemporal.Engine(store=store) as engine:
            recorded = time.time()
            reminder = engine.start(email, "reminder", delay=0.5)
            began = {to: h.result(timeout=30) for to, h in handles.items()}
            late = reminder.result(timeout=30) - recorded
            deadline = time.monotonic() + 10
            ticks: list[str] = []
            while len(ticks) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
                ticks = sorted(
                    r.run_id
                    for r in engine.list_runs(workflow="heartbeat")
                    if r.status == intemporal.RunStatus.COMPLETED
                )
    order = sorted(began, key=began.__getitem__)
    print("first two sent:", ", ".join(sorted(order[:2])), "(priority 0; the news have 5)")
    print(f"at most {_busy[1]} at once (concurrency=2)")
    print(f"reminder started {late:.1f} s after it was recorded (delay=0.5)")
    print("heartbeat runs:", ", ".join(ticks[:2]))


if __name__ == "__main__":
    main()
