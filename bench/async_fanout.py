"""Many async runs on one event loop: N runs, each awaiting one slow async activity.

    python bench/async_fanout.py                      # 2,000 runs x a 1 s activity, memory + file
    python bench/async_fanout.py --runs 50 --seconds 0.1 --stores memory   # a smoke run

Each run is an `async def` workflow awaiting an `async def` activity that sleeps `seconds`
(slow I/O). All runs are started at once on an `AsyncEngine` and awaited together; they
execute as tasks on the one event loop of this process (no thread per run). Printed: the
wall time from the first start to the last result (the ideal is `seconds`), the time to
start them all, the OS threads of the process, and the memory the runs in flight take:
the growth of the resident set size (RSS) while all of them wait, divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's intemporal

import intemporal

IN_FLIGHT: list[int] = []  # activities awaiting now


@intemporal.activity
async def slow_io(i: int, seconds: float) -> int:
    IN_FLIGHT.append(i)
    await asyncio.sleep(seconds)
    IN_FLIGHT.pop()
    return i


@intemporal.workflow
async def fan_one(i: int, seconds: float) -> int:
    return await slow_io(i, seconds)


def rss_kb() -> int:
    """This process's resident set size, in KiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(store: intemporal.Store | str, runs: int, seconds: float) -> dict[str, float]:
    async with intemporal.AsyncEngine(store, threads=4, durability="flush") as engine:
        await engine.run(fan_one, -1, 0.0)  # warm up: the loop, the pools, the imports
        before = rss_kb()
        started = time.perf_counter()
        handles = await asyncio.gather(*(engine.start(fan_one, i, seconds) for i in range(runs)))
        all_started = time.perf_counter() - started
        while len(IN_FLIGHT) < runs and time.perf_counter() - started < seconds:
            await asyncio.sleep(0.01)
        waiting = len(IN_FLIGHT)
        during = rss_kb()
        threads = threading.active_count()
        results = await asyncio.gather(*(h.result_async(timeout=120) for h in handles))
        took = time.perf_counter() - started
    assert results == list(range(runs)), "a run returned something else"
    return {
        "took": took,
        "start": all_started,
        "waiting": waiting,
        "kb_per_run": (during - before) / runs,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=1.0, help="each activity's sleep")
    parser.add_argument("--stores", default="memory,file", help="memory, file, or both")
    args = parser.parse_args()
    kinds = args.stores.split(",")
    if len(kinds) > 1:  # one process per store: each RSS figure starts from a fresh heap
        print(f"{args.runs:,} async runs, each awaiting a {args.seconds:g} s async activity")
        for kind in kinds:
            cmd = [sys.executable, __file__, "--runs", str(args.runs), "--stores", kind]
            subprocess.run([*cmd, "--seconds", str(args.seconds)], check=True)
        return
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            store = intemporal.MemoryStore() if kind == "memory" else os.path.join(tmp, "store")
            r = asyncio.run(measure(store, args.runs, args.seconds))
        print(
            f"  {kind:6} store: all done in {r['took']:.2f} s (ideal {args.seconds:g} s); "
            f"started in {r['start']:.2f} s; {r['waiting']:.0f} awaiting at once; "
            f"{r['threads']:.0f} OS threads; {r['kb_per_run']:.1f} KiB of RSS per run in flight"
        )


if __name__ == "__main__":
    main()
