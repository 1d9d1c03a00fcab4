"""What a new run's index row costs: `RunIndex.created` alone, and on `start()`'s thread.

    python bench/index_row_cost.py            # 2,000 calls; then 1,000 starts, 3 reps
    PYTHONPATH=/tmp/base python bench/index_row_cost.py   # another checkout, for A/B

1. `RunIndex.created` called 2,000 times on an open index: median, mean and p99 of each
   call (wall, µs) and CPU per call (the mean includes the merges every 256 rows).
2. Scenario 2's start loop (1,000 `start()` of K=10 on threads=32, and on a client engine
   that executes nothing): wall and CPU of the caller's thread in `FileStore._index_row`
   per start, medians over 3 reps. Run A and B one after the other, several times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import workload  # noqa: E402

import intemporal  # noqa: E402
from intemporal.store import file as file_module  # noqa: E402
from intemporal.store.index import RunIndex  # noqa: E402


def per_call(root: Path, n: int) -> dict[str, float]:
    (root / "calls").mkdir()
    index = RunIndex(str(root / "calls"), lambda: iter(()))
    assert index.ready()
    first = {"type": "run_started", "workflow": "bench.flow", "ts": time.time(), "queue": None}
    wall = []
    c0 = time.process_time()
    for i in range(n):
        t = time.perf_counter_ns()
        index.created(f"run-{i:06d}", first)
        wall.append((time.perf_counter_ns() - t) / 1000)
    cpu = (time.process_time() - c0) / n * 1e6
    index.close()
    return {
        "median_us": statistics.median(wall),
        "mean_us": statistics.mean(wall),
        "p99_us": sorted(wall)[int(n * 0.99)],
        "cpu_us": cpu,
    }


def on_start(root: Path, runs: int, reps: int) -> dict[str, Any]:
    real = file_module.FileStore._index_row
    spent = {"wall": 0.0, "cpu": 0.0}

    def timed(self: Any, run_id: str, first: Any) -> None:
        w, c = time.perf_counter(), time.thread_time()
        try:
            real(self, run_id, first)
        finally:
            spent["wall"] += time.perf_counter() - w
            spent["cpu"] += time.thread_time() - c

    file_module.FileStore._index_row = timed  # type: ignore[method-assign]
    out: dict[str, Any] = {}
    try:
        for worker in (True, False):
            walls, cpus = [], []
            for _ in range(reps):
                store = Path(tempfile.mkdtemp(dir=root))
                with intemporal.Engine(store, threads=32, worker=worker) as engine:
                    if worker:
                        engine.run(workload.seq_workflow, 10, -1)
                    spent["wall"] = spent["cpu"] = 0.0
                    handles = [engine.start(workload.seq_workflow, 10, j) for j in range(runs)]
                    for h in handles if worker else ():
                        h.result(timeout=600)
                walls.append(spent["wall"] / runs * 1e6)
                cpus.append(spent["cpu"] / runs * 1e6)
            out["busy engine" if worker else "client engine"] = {
                "wall_us": statistics.median(walls),
                "cpu_us": statistics.median(cpus),
            }
    finally:
        file_module.FileStore._index_row = real  # type: ignore[method-assign]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="index-row-", dir=a.tmp))
    try:
        result = {"checkout": os.path.dirname(os.path.dirname(intemporal.__file__))}
        result["RunIndex.created"] = per_call(root, a.calls)
        result["_index_row on start()'s thread"] = on_start(root, a.runs, a.reps)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(_rounded(result), indent=1))


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 1) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
