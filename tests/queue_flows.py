"""Workflows on limited queues, for tests/test_queues.py and its worker processes.

A worker process runs `intemporal --store S worker --import queue_flows --queue q3-limited`
from this folder; the activity appends "start end pid" lines to the file it is given, so
the test can count how many executed at once across processes.
"""

from __future__ import annotations

import os
import time

import intemporal

LIMITED = intemporal.Queue("q3-limited", concurrency=3)  # declared at import, as a user would


@intemporal.activity
def hold(marks: str, seconds: float) -> float:
    """Sleep `seconds`, appending this execution's start and end times to `marks`."""
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    with open(marks, "a") as f:
        f.write(f"{start} {end} {os.getpid()}\n")
    return start


@intemporal.workflow(queue="q3-limited")
def limited(marks: str, seconds: float) -> float:
    return hold(marks, seconds)


def most_at_once(marks: str) -> int:
    """The most executions in `marks` that overlapped in time."""
    edges = []
    with open(marks) as f:
        for line in f:
            start, end, _ = line.split()
            edges += [(float(start), 1), (float(end), -1)]
    now = peak = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak
