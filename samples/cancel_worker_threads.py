"""Cancelling an activity that does its work on threads of its own.

    python samples/cancel_worker_threads.py [--store DIR]

An activity resizes a batch of images on a `ThreadPoolExecutor` it creates. Each helper
calls `intemporal.heartbeat()` between two slices of work, so a cancelled run stops them.
`heartbeat()` finds the run through the activity's context, which a new thread does not
inherit: the activity submits each job under a copy of it,
`pool.submit(contextvars.copy_context().run, fn, ...)`, taken on the activity's thread.
(Without the copy, `heartbeat()` on a helper raises an error saying so; it never misses
a cancellation in silence.)

The run is cancelled while the helpers work: their next heartbeat raises
`intemporal.Cancelled`, the activity lets it escape, and the run ends `cancelled`.
"""

from __future__ import annotations

import argparse
import contextvars
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import intemporal

WORKING = threading.Event()  # set once a helper has started: the moment to cancel
STOPPED: list[str] = []  # what each helper's heartbeat raised


def resize(name: str) -> str:
    """One image in 200 slices of 10 ms, with a heartbeat between two slices."""
    WORKING.set()
    try:
        for _ in range(200):
            intemporal.heartbeat()  # raises Cancelled once the run is cancelled
            time.sleep(0.01)
    except intemporal.Cancelled:
        STOPPED.append(name)
        raise
    return f"{name} resized"


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def resize_all(names: list[str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        # Each job runs under a copy of this activity's context: heartbeat() sees the run.
        jobs = [pool.submit(contextvars.copy_context().run, resize, name) for name in names]
        return [job.result() for job in jobs]


@intemporal.workflow
def thumbnails(names: list[str]) -> list[str]:
    return resize_all(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store directory (default: a temporary one)")
    store = parser.parse_args().store or tempfile.mkdtemp(prefix="intemporal-threads-")
    with intemporal.Engine(store, threads=2) as engine:
        run_id = f"thumbs-{uuid.uuid4().hex[:8]}"
        handle = engine.start(thumbnails, ["a.png", "b.png", "c.png"], run_id=run_id)
        WORKING.wait(10)
        started = time.monotonic()
        handle.cancel()
        try:
            handle.result(timeout=10)
        except intemporal.Cancelled:
            print(f"result() raised Cancelled after {time.monotonic() - started:.2f} s")
        print(f"helpers stopped by their heartbeat: {len(STOPPED)}")
        print(f"run {run_id} is {handle.status()}")


if __name__ == "__main__":
    main()
