"""What one durable workflow costs in scenario 1: wall, CPU and syncs of the write-ahead log.

    python bench/seq_cost.py                    # W=300 runs of K=10 by engine.run
    python bench/seq_cost.py --w 300 --k 0      # the same runs without activities
    python bench/seq_cost.py --quick            # a smoke run (the test suite runs it)

Prints one JSON line: per workflow, wall µs, CPU µs (`time.process_time`: every thread of
the process) and the log's syncs, after up to 20 runs to warm up. The sync count is the steady
figure on a busy machine; to compare two versions of the code, run this script from each
tree alternately (`PYTHONPATH=<tree> python <tree>/bench/seq_cost.py`) and pair the
invocations.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for _p in (str(BENCH), str(BENCH.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import workload  # noqa: E402

import intemporal  # noqa: E402


def measure(w: int, k: int, folder: str) -> dict[str, float]:
    """`w` runs of `workload.seq_workflow(k)` by `engine.run` on a durable file store in
    `folder`: wall µs, CPU µs and log syncs per workflow."""
    store = intemporal.FileStore(folder)
    with intemporal.Engine(store, threads=2, durability="fsync") as engine:
        for j in range(min(20, w)):  # warm-up: threads, imports, the log's files
            engine.run(workload.seq_workflow, k, -1 - j)
        log = getattr(store, "_wal", None)
        syncs = log.syncs if log is not None else 0
        t0, c0 = time.perf_counter(), time.process_time()
        for j in range(w):
            engine.run(workload.seq_workflow, k, j)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        syncs = (log.syncs - syncs) if log is not None else -1
    return {
        "W": w,
        "K": k,
        "wall_us_per_workflow": round(wall / w * 1e6, 1),
        "cpu_us_per_workflow": round(cpu / w * 1e6, 1),
        "syncs_per_workflow": syncs / w if syncs >= 0 else -1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--w", type=int, default=300, help="runs (default 300)")
    parser.add_argument("--k", type=int, default=10, help="activities per run (default 10)")
    parser.add_argument("--quick", action="store_true", help="W=5: a smoke run")
    parser.add_argument("--tmp", default=None, help="where the store goes (default: tmp)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the store (deleting thousands of journals makes the next invocation's "
        "file creation dearer on some filesystems: alternate invocations with it)",
    )
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="intemporal-seq-cost-", dir=args.tmp)
    try:
        print(json.dumps(measure(5 if args.quick else args.w, args.k, folder)))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
