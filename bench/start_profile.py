"""Where the caller's time goes in scenario 2: `start()` after `start()` on a busy engine.

    python bench/start_profile.py               # 1,000 runs of K=10 on threads=32, 3 reps
    python bench/start_profile.py --quick       # a smoke run (the test suite runs it)

Scenario 2 is as fast as its start loop: the runs finish about as soon as the last one is
started. This runs that loop and times, on the caller's thread only, each system call the
file store makes to create a journal, plus one `os.fstat` per start: a call that costs
~1 µs alone, so what it takes here is the wait to get the GIL back from the run threads.
The same loop on a client engine (`worker=False`: it records the runs, nothing executes
them) gives each call's cost alone. Medians over the repetitions; per start, in µs.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
for _p in (str(BENCH), str(BENCH.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import workload  # noqa: E402

import intemporal  # noqa: E402
from intemporal.store import file as file_module  # noqa: E402
from intemporal.store import fileio, waldirect, walfile  # noqa: E402
from intemporal.store import wal as wal_module  # noqa: E402

TIMED = ("open", "pwritev", "write", "fdatasync", "link", "fsync", "close")


class _TimedOs:
    """`os` for the store's modules, timing the calls in TIMED made on one thread."""

    def __init__(self, thread: int, spent: collections.Counter[str]) -> None:
        self._thread, self._spent = thread, spent

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in TIMED:
            return real

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._thread:
                return real(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self._spent[name] += time.perf_counter() - t0

        return timed


def profile(
    runs: int, k: int, threads: int, reps: int, tmp: Path, worker: bool
) -> dict[str, float]:
    """Per-start µs of each timed call, `create` as a whole, the GIL probe and the loop."""
    per_rep: dict[str, list[float]] = collections.defaultdict(list)
    spent: collections.Counter[str] = collections.Counter()
    timed = _TimedOs(threading.get_ident(), spent)
    real_create = file_module.FileStore.create

    def create(self: Any, *args: Any, **kwargs: Any) -> bool:
        t0 = time.perf_counter()
        try:
            return real_create(self, *args, **kwargs)
        finally:
            spent["FileStore.create, all of it"] += time.perf_counter() - t0

    for module in (file_module, fileio, wal_module, walfile, waldirect):
        module.os = timed  # type: ignore[attr-defined]
    file_module.FileStore.create = create  # type: ignore[method-assign]
    try:
        for _ in range(reps):
            store = Path(tempfile.mkdtemp(prefix="start-profile-", dir=tmp))
            with intemporal.Engine(store, threads=threads, worker=worker) as engine:
                if worker:
                    engine.run(workload.seq_workflow, k, -1)  # warm-up
                spent.clear()
                t0 = time.perf_counter()
                handles = []
                for j in range(runs):
                    handles.append(engine.start(workload.seq_workflow, k, j))
                    t1 = time.perf_counter()
                    os.fstat(0)
                    spent["GIL probe (os.fstat)"] += time.perf_counter() - t1
                loop = time.perf_counter() - t0 - spent["GIL probe (os.fstat)"]
                for h in handles if worker else ():
                    h.result(timeout=600)
                total = time.perf_counter() - t0
            for name, seconds in spent.items():
                per_rep[name].append(seconds / runs * 1e6)
            per_rep["start(), the whole call"].append(loop / runs * 1e6)
            per_rep["steps/s"].append(runs * k / total)
    finally:
        for module in (file_module, fileio, wal_module, walfile, waldirect):
            module.os = os  # type: ignore[attr-defined]
        file_module.FileStore.create = real_create  # type: ignore[method-assign]
    return {name: statistics.median(values) for name, values in per_rep.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50 runs, 1 rep: a smoke run")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    a = ap.parse_args()
    if a.quick:
        a.runs, a.reps = 50, 1
    # Stores are deleted at the end only: deleting thousands of files slowed the creation
    # of new ones for seconds on this disk (see `settle` in scenarios.py).
    root = Path(tempfile.mkdtemp(prefix="start-profile-", dir=a.tmp))
    try:
        busy = profile(a.runs, a.k, a.threads, a.reps, root, worker=True)
        alone = profile(a.runs, a.k, a.threads, a.reps, root, worker=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    whole = busy.pop("start(), the whole call")
    steps = busy.pop("steps/s")
    print(f"{a.runs} start() calls, K={a.k}, threads={a.threads}, {a.reps} reps (medians, µs)")
    print(f"  {'':34} {'busy engine':>12} {'share':>6} {'alone':>8}")
    print(
        f"  {'start(), the whole call':34} {whole:12.0f} {'':>6} {alone.pop('start(), the whole call'):8.0f}"
    )
    for name, us in sorted(busy.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34} {us:12.0f} {us / whole:6.0%} {alone.get(name, 0.0):8.0f}")
    print(f"  throughput of the busy engine: {steps:,.0f} steps/s")


if __name__ == "__main__":
    main()
