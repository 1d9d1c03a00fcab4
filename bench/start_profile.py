"""Where the caller's time goes in scenario 2: `start()` after `start()` on a busy engine.

    python bench/start_profile.py               # 1,000 runs of K=10 on threads=32, 3 reps
    python bench/start_profile.py --quick       # a smoke run (the test suite runs it)
    python bench/start_profile.py --spares-ab   # spare files on/off, in one process
    python bench/start_profile.py --cost        # what the whole scenario costs: CPU, syncs,
                                                # context switches (--durability flush too)

Scenario 2 is as fast as its start loop: the runs finish about as soon as the last one is
started. This runs that loop and times, on the caller's thread only, each system call the
file store makes to create a journal, plus one `os.fstat` per start: a call that costs
~1 µs alone, so what it takes here is the wait to get the GIL back from the run threads.
The same loop on a client engine (`worker=False`: it records the runs, nothing executes
them) gives each call's cost alone. Medians over the repetitions; per start, in µs. The
busy engine creates a run claimed when a thread is free to execute it (its first line
synced before `start()` returns, the lease handed to that thread: "created claimed +
synced"), else through `FileStore.create`, as the client engine always does.

The store creates a journal from a spare file (`intemporal/store/spares.py`: an unnamed
file a background thread opened ahead of need) when one is ready: then the `open` is not
on the caller's thread and not counted here; the last line says how many starts had one.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
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
from intemporal.runtime import starting  # noqa: E402
from intemporal.store import file as file_module  # noqa: E402
from intemporal.store import fileio, waldirect, walfile  # noqa: E402
from intemporal.store import spares as spares_module  # noqa: E402
from intemporal.store import wal as wal_module  # noqa: E402

# the store's, whose `os` is timed
MODULES = (file_module, fileio, wal_module, walfile, waldirect, spares_module)
TIMED = ("open", "pwritev", "write", "fdatasync", "link", "fsync", "close")
# a worker engine with a thread free creates the run claimed, synced, and hands its lease over
CLAIMED = "created claimed + synced, all of it"


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
    real_claimed = starting.Starting._create_claimed

    def create(self: Any, *args: Any, **kwargs: Any) -> bool:
        t0 = time.perf_counter()
        try:
            return real_create(self, *args, **kwargs)
        finally:
            spent["FileStore.create, all of it"] += time.perf_counter() - t0

    def create_claimed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_claimed(self, *args, **kwargs)
        finally:
            spent[CLAIMED] += time.perf_counter() - t0

    for module in MODULES:
        module.os = timed  # type: ignore[attr-defined]
    file_module.FileStore.create = create  # type: ignore[method-assign]
    starting.Starting._create_claimed = create_claimed  # type: ignore[method-assign]
    try:
        for _ in range(reps):
            store = Path(tempfile.mkdtemp(prefix="start-profile-", dir=tmp))
            with intemporal.Engine(store, threads=threads, worker=worker) as engine:
                if worker:
                    engine.run(workload.seq_workflow, k, -1)  # warm-up
                spent.clear()
                pool = getattr(engine.store, "_spares", None)  # spare files (spares.py)
                taken = pool.taken if pool is not None else 0
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
                spared = (pool.taken - taken) / runs if pool is not None else 0.0
            for name, seconds in spent.items():
                per_rep[name].append(seconds / runs * 1e6)
            per_rep["start(), the whole call"].append(loop / runs * 1e6)
            per_rep["steps/s"].append(runs * k / total)
            per_rep["spared"].append(spared)
    finally:
        for module in MODULES:
            module.os = os  # type: ignore[attr-defined]
        file_module.FileStore.create = real_create  # type: ignore[method-assign]
        starting.Starting._create_claimed = real_claimed  # type: ignore[method-assign]
    return {name: statistics.median(values) for name, values in per_rep.items()}


def spares_ab(blocks: int, per: int, tmp: Path) -> None:
    """Spare files on and off in one process, in alternating blocks of `per` runs (off: the
    caller opens its own unnamed file, as before them): the same disk, the same load.

    Three ways a run is created: `start()` on a client engine, `run()` of a workflow of no
    activity, `start()` of K=10 runs on an engine executing them on 32 threads. Prints,
    per run, the medians over the blocks (min-max) of the wall time, the caller thread's
    CPU and the whole process's CPU (the background thread's included), in µs."""
    print(f"spare files on/off, {blocks} alternating blocks of {per} runs (medians, min-max; µs)")
    for way, worker, threads, k in (
        ("start(), client engine", False, 4, 0),
        ("run(), K=0", True, 4, 0),
        ("start(), busy engine (K=10)", True, 32, 10),
    ):
        got: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        store = Path(tempfile.mkdtemp(prefix="spares-ab-", dir=tmp))
        with intemporal.Engine(store, threads=threads, worker=worker) as engine:
            pool = engine.store._spares  # type: ignore[attr-defined]
            take, n = pool.take, 0
            for b in range(-1, blocks):  # block -1 warms up (the pool grows), not counted
                on = b % 2 == 0 or b < 0
                pool.take = take if on else (lambda: -1)
                t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
                for _ in range(per):
                    if way.startswith("run"):
                        engine.run(workload.seq_workflow, k, n)
                    else:
                        engine.start(workload.seq_workflow, k, n)
                    n += 1
                t1, c1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
                if b >= 0:
                    got[on].append(((t1 - t0) / per, (c1 - c0) / per, (p1 - p0) / per))
        for on in (False, True):
            cells = []
            for i, what in enumerate(("wall", "caller CPU", "process CPU")):
                us = [row[i] * 1e6 for row in got[on]]
                cells.append(f"{what} {statistics.median(us):5.0f} ({min(us):.0f}-{max(us):.0f})")
            print(f"  {way:28} spares {'on ' if on else 'off'}  " + "  ".join(cells))


def cost(runs: int, k: int, threads: int, reps: int, tmp: Path, durability: str) -> None:
    """Scenario 2 as `make bench` runs it, with what it cost the process: per repetition,
    the start loop and the whole wall time, the CPU of the process (user and system) and
    of the caller's thread, the log's syncs and the context switches (voluntary: a thread
    blocked, on a lock or the GIL; involuntary: preempted). Medians (min-max).

    Steadier than wall time on a shared machine; compare two checkouts by running this
    file from each (`PYTHONPATH=/other/checkout python /other/checkout/bench/...`)."""
    rows: dict[str, list[float]] = collections.defaultdict(list)
    for rep in range(reps):
        store = Path(tempfile.mkdtemp(prefix="start-cost-", dir=tmp))
        with intemporal.Engine(store, threads=threads, durability=durability) as engine:
            engine.run(workload.seq_workflow, k, -1)  # warm-up: threads, imports
            wal = getattr(engine.store, "_wal", None)
            syncs = wal.syncs if wal is not None else 0
            r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
            t0 = time.perf_counter()
            handles = [engine.start(workload.seq_workflow, k, rep * runs + j) for j in range(runs)]
            t1, c1 = time.perf_counter(), time.thread_time()
            for h in handles:
                h.result(timeout=600)
            t2, r2 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            rows["start loop, s"].append(t1 - t0)
            rows["all done, s"].append(t2 - t0)
            rows["steps/s"].append(runs * k / (t2 - t0))
            rows["process CPU, user s"].append(r2.ru_utime - r0.ru_utime)
            rows["process CPU, system s"].append(r2.ru_stime - r0.ru_stime)
            rows["caller's CPU per start, µs"].append((c1 - c0) / runs * 1e6)
            rows["syncs of the log"].append((wal.syncs - syncs) if wal is not None else 0)
            rows["context switches, voluntary"].append(r2.ru_nvcsw - r0.ru_nvcsw)
            rows["context switches, involuntary"].append(r2.ru_nivcsw - r0.ru_nivcsw)
    print(
        f"{runs} x {k}, threads={threads}, durability={durability}, {reps} reps: median (min-max)"
    )
    for name, values in rows.items():
        med = statistics.median(values)
        fmt = "{:,.3f}" if name.endswith(" s") else "{:,.0f}"
        print(
            f"  {name:32} {fmt.format(med):>10} ({fmt.format(min(values))}-{fmt.format(max(values))})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50 runs, 1 rep: a smoke run")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument(
        "--spares-ab",
        action="store_true",
        help="spare files on and off in one process, alternating blocks (see `spares_ab`)",
    )
    ap.add_argument(
        "--cost",
        action="store_true",
        help="what the whole scenario costs the process: CPU, syncs, context switches",
    )
    ap.add_argument("--durability", choices=["fsync", "flush"], default="fsync")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.reps = 50, 1
    # Stores are deleted at the end only: deleting thousands of files slowed the creation
    # of new ones for seconds on this disk (see `settle` in scenarios.py).
    root = Path(tempfile.mkdtemp(prefix="start-profile-", dir=a.tmp))
    if a.cost:
        try:
            cost(a.runs, a.k, a.threads, a.reps, root, a.durability)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    if a.spares_ab:
        try:
            spares_ab(4 if a.quick else 20, 25 if a.quick else 100, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    try:
        busy = profile(a.runs, a.k, a.threads, a.reps, root, worker=True)
        alone = profile(a.runs, a.k, a.threads, a.reps, root, worker=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    whole = busy.pop("start(), the whole call")
    steps = busy.pop("steps/s")
    alone.pop("steps/s", None)
    spared, spared_alone = busy.pop("spared"), alone.pop("spared")
    print(f"{a.runs} start() calls, K={a.k}, threads={a.threads}, {a.reps} reps (medians, µs)")
    print(f"  {'':34} {'busy engine':>12} {'share':>6} {'alone':>8}")
    print(
        f"  {'start(), the whole call':34} {whole:12.0f} {'':>6} {alone.pop('start(), the whole call'):8.0f}"
    )
    for name in sorted(busy.keys() | alone.keys(), key=lambda n: -busy.get(n, 0.0)):
        us = busy.get(name, 0.0)
        print(f"  {name:34} {us:12.0f} {us / whole:6.0%} {alone.get(name, 0.0):8.0f}")
    print(f"  throughput of the busy engine: {steps:,.0f} steps/s")
    print(
        f"  journals made from a spare file: {spared:.0%} busy, {spared_alone:.0%} alone"
        " (unnamed files opened ahead by a background thread: their `open` is not the caller's)"
    )


if __name__ == "__main__":
    main()
