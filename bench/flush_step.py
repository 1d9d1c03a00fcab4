"""What one activity costs in scenario 3's long runs: `durability="flush"`, W runs of K
activities by `engine.run` on a `FileStore` (nothing synced: the engine's own Python);
with `--durability fsync`, scenario 1's long runs (on tmpfs: a durable step's Python
without the disk's wait).

    python bench/flush_step.py                      # W=5 x K=1,000, 5 reps: wall and CPU µs
    python bench/flush_step.py --profile            # cProfile of one rep, top 25 by own time
    python bench/flush_step.py --baseline DIR       # A/B: this tree and DIR's, alternately
    python bench/flush_step.py --instructions       # per activity, by valgrind's callgrind
    python bench/flush_step.py --quick              # a smoke run (the test suite runs it)
    python bench/flush_step.py --durability fsync --tmp /dev/shm --instructions
                                                    # a durable step's Python (tmpfs: no disk)
    python bench/flush_step.py --store ...          # the store's part alone: the journal's
                                                    # append, then `Lease.sync()`

Prints one JSON line per measurement: µs per activity, wall and CPU (`time.process_time`:
every thread), median and min-max over the reps. With `--baseline DIR`, child processes
of this script run from each tree in turn (`--rounds` pairs, each `--reps` reps) and the
medians of both are printed, with each round's CPU ratio (this tree / the baseline): the
same machine, the same minutes. `--instructions` runs this script under `valgrind
--tool=callgrind` (user space, every thread) with K=1,200 and K=200 (W=1, one rep, after a
warm-up run of the same K) and prints the difference per activity: a count that a busy
machine does not move (with `--baseline DIR`, for both trees).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def store_steps(store: Any, sync: bool) -> Callable[[int, int], None]:
    """`steps(k, j)`: the store's part of k activities in a row, without the engine: each
    result appended unsynced to one run's journal (`Lease.append_result`), then, with
    `sync`, made durable as the run's next effect makes it (`Lease.sync()`)."""
    first = {"type": "run_started", "workflow": "w", "args": [], "kwargs": {}, "ts": 1.0}
    lease = store.create_claimed("steps", first, sync)
    result, seqs = {"i": 1, "x": 2, "y": 3}, iter(range(1, 1 << 62))

    def steps(k: int, j: int) -> None:
        append, durable = lease.append_result, lease.sync
        started = time.time_ns() // 1000
        for seq in itertools.islice(seqs, k):
            append(seq, "step", 1, started, result, started + 7, "engine", False)
            if sync:
                durable()

    return steps


def measure(
    w: int,
    k: int,
    reps: int,
    folder: str,
    profile: bool = False,
    durability: str = "flush",
    store_only: bool = False,
) -> dict[str, object]:
    """`reps` times `w` runs of `workload.seq_workflow(k)` in `durability` mode: µs per
    activity. `store_only`: the store's part of each activity alone (`store_steps`)."""
    import workload

    import intemporal

    store = intemporal.FileStore(folder)
    walls, cpus = [], []
    with intemporal.Engine(store, threads=4, durability=durability) as engine:

        def runs(k: int, j: int) -> None:
            engine.run(workload.seq_workflow, k, j)

        run = store_steps(store, durability == "fsync") if store_only else runs
        run(k, -1)  # warm-up
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for j in range(w):
                run(k, j)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return {}
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            for j in range(w):
                run(k, j)
            walls.append((time.perf_counter() - t0) / (w * k) * 1e6)
            cpus.append((time.process_time() - c0) / (w * k) * 1e6)
    return {
        "W": w,
        "K": k,
        "wall_us": round(statistics.median(walls), 2),
        "wall_min_max": [round(min(walls), 2), round(max(walls), 2)],
        "cpu_us": round(statistics.median(cpus), 2),
        "cpu_min_max": [round(min(cpus), 2), round(max(cpus), 2)],
    }


def child(tree: str, args: argparse.Namespace) -> dict[str, object]:
    """This script's measurement run by a child process with `tree` first on its path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, str(BENCH)]))
    cmd = [sys.executable, str(BENCH / "flush_step.py"), "--w", str(args.w), "--k", str(args.k)]
    cmd += ["--reps", str(args.reps), "--durability", args.durability]
    cmd += ["--store"] if args.store else []
    cmd += ["--tmp", args.tmp] if args.tmp else []
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def instructions(tree: str, args: argparse.Namespace, big: int = 1200, small: int = 200) -> float:
    """Instructions per activity (callgrind, every thread) of this script run from `tree`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, str(BENCH)]), PYTHONHASHSEED="0")
    counts = []
    for k in (big, small):
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
        cmd += [str(BENCH / "flush_step.py"), "--w", "1", "--k", str(k), "--reps", "1"]
        cmd += ["--durability", args.durability] + (["--tmp", args.tmp] if args.tmp else [])
        cmd += ["--store"] if args.store else []
        err = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stderr
        refs = [ln for ln in err.splitlines() if "I   refs:" in ln or "I refs:" in ln]
        counts.append(int(refs[-1].split(":")[1].replace(",", "")))
    return (counts[0] - counts[1]) / (2 * (big - small))  # the warm-up run does K too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--w", type=int, default=5, help="runs per rep (default 5)")
    parser.add_argument("--k", type=int, default=1000, help="activities per run (default 1,000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--profile", action="store_true", help="cProfile one rep")
    parser.add_argument("--baseline", help="another checkout: measured alternately with this one")
    parser.add_argument("--rounds", type=int, default=5, help="A/B pairs (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: W=2 K=50, 2 reps")
    parser.add_argument("--instructions", action="store_true", help="count them (valgrind)")
    parser.add_argument("--tmp", help="folder for the temporary store (default: the system's)")
    parser.add_argument(
        "--store", action="store_true", help="the store's part of each activity alone"
    )
    parser.add_argument(
        "--durability", default="flush", choices=("flush", "fsync"), help="the engine's mode"
    )
    args = parser.parse_args()
    if args.instructions:
        trees = [("this", str(BENCH.parent))]
        if args.baseline:
            trees.append(("baseline", str(Path(args.baseline).resolve())))
        for name, tree in trees:
            print(
                json.dumps(
                    {"tree": name, "instructions_per_activity": round(instructions(tree, args))}
                )
            )
        return
    if args.quick:
        args.w, args.k, args.reps = 2, 50, 2
    if args.baseline:
        here = str(BENCH.parent)
        base = str(Path(args.baseline).resolve())
        rows: dict[str, list[dict[str, object]]] = {"this": [], "baseline": []}
        for i in range(args.rounds):
            order = [("this", here), ("baseline", base)]
            for name, tree in order if i % 2 == 0 else order[::-1]:
                rows[name].append(child(tree, args))
        for name, got in rows.items():
            cpu = [float(r["cpu_us"]) for r in got]  # type: ignore[arg-type]
            wall = [float(r["wall_us"]) for r in got]  # type: ignore[arg-type]
            print(
                json.dumps(
                    {
                        "tree": name,
                        "cpu_us": round(statistics.median(cpu), 2),
                        "cpu_rounds": cpu,
                        "wall_us": round(statistics.median(wall), 2),
                        "wall_rounds": wall,
                    }
                )
            )
        ratios = [
            round(float(a["cpu_us"]) / float(b["cpu_us"]), 3)  # type: ignore[arg-type]
            for a, b in zip(rows["this"], rows["baseline"], strict=True)
        ]
        print(json.dumps({"cpu_ratio_this_over_baseline": ratios}))
        return
    for p in (str(BENCH), str(BENCH.parent)):
        if p not in sys.path:
            sys.path.insert(1, p)
    folder = tempfile.mkdtemp(prefix="flush-step-", dir=args.tmp)
    try:
        figures = measure(
            args.w,
            args.k,
            args.reps,
            os.path.join(folder, "store"),
            args.profile,
            args.durability,
            args.store,
        )
        if figures:
            print(json.dumps(figures))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
