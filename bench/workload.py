"""The benchmark workload: a workflow of K activities, activity i returns {"i", "x", "y"}.

The same shape as `../shared/bench/bench_dbos.py` runs on DBOS. This module is imported
by name (`workload`) in the bench's child processes too, so a resumed run finds its code.

    with intemporal.Engine(store) as engine:
        engine.run(seq_workflow, 10, 0)        # 10 durable activities
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import intemporal

#: latencies (seconds) of activity calls seen from the workflow, when `TIMING` is on
LATENCIES: list[float] = []
TIMING = False
#: MARKS["at"] = i: note perf_counter()/time() when activity i first runs (replay scenario)
MARKS: dict[str, float] = {}
#: time.time() at which each waiting run woke up (waiting scenario)
WOKE: dict[str, float] = {}
_lock = threading.Lock()


@intemporal.activity
def step(i: int, x: int) -> dict[str, int]:
    """One unit of work: returns a small dict built from its input."""
    return {"i": i, "x": x, "y": x + i}


@intemporal.workflow
def seq_workflow(k: int, x: int) -> int:
    """K durable activities in a row; records each call's latency when `TIMING` is on."""
    acc = 0
    if TIMING:
        lat = []
        for i in range(k):
            t0 = time.perf_counter()
            acc += step(i, x)["y"]
            lat.append(time.perf_counter() - t0)
        with _lock:
            LATENCIES.extend(lat)
        return acc
    for i in range(k):
        acc += step(i, x)["y"]
    return acc


@intemporal.workflow
def fan_out_workflow(n: int, x: int) -> int:
    """`n` activities submitted at once, then joined: their results share a sync."""
    futures = [intemporal.submit(step, i, x) for i in range(n)]
    return sum(r["y"] for r in intemporal.join_all(futures))


def _kill_at() -> int:
    # Read from the environment, not from the run's arguments: the resuming process
    # replays the same arguments and must not kill itself again.
    return int(os.environ.get("BENCH_KILL_AT", "-1"))


@intemporal.activity
def side_step(i: int, x: int, side: str | None) -> dict[str, int]:
    """`step` with a side effect (a line "i time_ns" appended to `side`) and a crash point."""
    if side:
        with open(side, "a") as f:
            f.write(f"{i} {time.time_ns()}\n")
    mark_at = MARKS.get("at")
    if mark_at is not None and i == mark_at and "first_new" not in MARKS:
        MARKS["first_new"] = time.perf_counter()
        MARKS["first_new_wall"] = time.time()
    if i == _kill_at():
        os.kill(os.getpid(), signal.SIGKILL)  # in flight: this activity is not recorded
    return {"i": i, "x": x, "y": x + i}


@intemporal.workflow
def long_workflow(k: int, x: int, side: str | None) -> int:
    """K activities with side effects: the recovery and replay scenarios."""
    acc = 0
    for i in range(k):
        acc += side_step(i, x, side)["y"]
    return acc


@intemporal.workflow
def waiting_workflow(n: int) -> Any:
    """Wait for the signal "go", note when it arrived, return its payload."""
    payload = intemporal.wait_for_signal("go")  # type: ignore[attr-defined]
    WOKE[intemporal.run_id()] = time.time()
    return payload
