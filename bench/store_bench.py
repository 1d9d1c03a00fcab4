"""`make bench-store`: the file store at scale (issue 18's index and cheap-win targets).

    python bench/store_bench.py                 # every scenario, 100,000 runs, medians of 5
    python bench/store_bench.py --runs 2000 --reps 3 --only list,gc   # a quick look
    python bench/store_bench.py --baseline ../main   # the same scenarios on another checkout,
                                                     # side by side (before / after)

Scenarios (each prints median, min and max of `--reps` fresh processes):
  import   `python -c "import intemporal"`, whole process
  parked   RSS of one process holding 10,000 runs parked waiting for a signal (flush mode)
  list     `intemporal list --limit 10` and `list --status failed --limit 10`, whole process,
           over a store of `--runs` runs (1% failed), built fast in flush mode on 16 threads
  recover  `Engine(store).recover()` over that store (a worker's start-up), in-process time
  gc       `intemporal gc --older-than 0s` deleting every run of a copy of that store

`--baseline DIR` runs the same command lines with DIR's intemporal (its own `.venv`, else
this Python with DIR on `PYTHONPATH`), pair by pair with ours, so both see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

PARKED_CHILD = r"""
import json, sys, time
import intemporal

@intemporal.workflow
def parked(n):
    return intemporal.wait_for_signal("go")

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

store, n = sys.argv[1], int(sys.argv[2])
with intemporal.Engine(store, threads=8, durability="flush") as engine:
    handles = [engine.start(parked, i, run_id=f"p-{i}") for i in range(n)]  # kept, as users do
    deadline = time.monotonic() + 600
    while len(engine._sleeping) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    import gc
    gc.collect()
    print(json.dumps({"parked": len(engine._sleeping), "rss_mb": rss()}))
    for i in range(n):
        engine.store.send(f"p-{i}", {"type": "cancel", "ts": time.time()})
"""

BUILD_CHILD = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
import intemporal

@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def step(i):
    if i % 100 == 7:
        raise ValueError(f"run {i} fails")
    return i

@intemporal.workflow
def job(i):
    return step(i)

store, n = sys.argv[1], int(sys.argv[2])
with intemporal.Engine(store, threads=16, durability="flush") as engine:
    def one(i):
        try:
            engine.run(job, i, run_id=f"run-{i:06d}")
        except ValueError:
            pass
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n), chunksize=256))
"""

RECOVER_CHILD = r"""
import json, sys, time
import intemporal
t0 = time.perf_counter()
engine = intemporal.Engine(sys.argv[1], threads=4)
t1 = time.perf_counter()
handles = engine.recover()
t2 = time.perf_counter()
engine.close()
print(json.dumps({"recover_s": t2 - t1, "open_s": t1 - t0, "resumed": len(handles)}))
"""


class Side:
    """One checkout of intemporal: how to run its Python and its CLI."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root = name, root
        venv = root / ".venv" / "bin" / "python"
        self.python = str(venv) if venv.exists() else sys.executable
        self.env = {**os.environ, "PYTHONPATH": str(root)}
        self.env.pop("INTEMPORAL_HOME", None)
        # Compiled once, so no figure pays for compiling (PYTHONDONTWRITEBYTECODE=1 would
        # otherwise make every process compile every module again).
        subprocess.run(
            [self.python, "-m", "compileall", "-q", str(root / "intemporal")],
            check=True,
            capture_output=True,
        )

    def py(self, *args: str) -> list[str]:
        return [self.python, *args]

    def cli(self, store: Path, *args: str) -> list[str]:
        prog = "import sys; from intemporal.cli import main; sys.argv[0] = 'intemporal'; main()"
        return [self.python, "-c", prog, "--store", str(store), *args]


def timed(cmd: list[str], env: dict[str, str], timeout: float = 900) -> tuple[float, str]:
    t = time.perf_counter()
    # Not from a checkout's folder: `python -c` puts the working folder first on sys.path.
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tempfile.gettempdir()
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[-3:]} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return wall, proc.stdout


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    v = sorted(x * scale for x in values)
    return f"{statistics.median(v):.{digits}f} ({v[0]:.{digits}f}-{v[-1]:.{digits}f})"


def paired(
    sides: list[Side], reps: int, measure: Callable[[Side], float]
) -> dict[str, list[float]]:
    """`measure` each side in turn, rep by rep (A B A B ...): both see the same machine."""
    out: dict[str, list[float]] = {s.name: [] for s in sides}
    for _ in range(reps):
        for s in sides:
            out[s.name].append(measure(s))
    return out


def report(title: str, results: dict[str, list[float]], unit: str, scale: float, target: str):
    cells = ", ".join(f"{name} {spread(v, scale)}" for name, v in results.items())
    print(f"{title}: {cells} {unit}   (target {target})", flush=True)


def bench_import(sides: list[Side], reps: int) -> None:
    for s in sides:  # warm the page cache and the bytecode
        timed(s.py("-c", "import intemporal"), s.env)
    res = paired(sides, reps, lambda s: timed(s.py("-c", "import intemporal"), s.env)[0])
    report("import intemporal (whole process)", res, "ms", 1e3, "≤ 40 ms")


def bench_parked(sides: list[Side], reps: int, tmp: Path, n: int) -> None:
    def one(s: Side) -> float:
        store = Path(tempfile.mkdtemp(dir=tmp, prefix="parked-"))
        try:
            _, out = timed(s.py("-c", PARKED_CHILD, str(store), str(n)), s.env)
            got = json.loads(out.splitlines()[-1])
            assert got["parked"] == n, got
            return float(got["rss_mb"])
        finally:
            shutil.rmtree(store, ignore_errors=True)

    res = paired(sides, reps, one)
    report(f"RSS with {n:,} parked runs", res, "MB", 1.0, "≤ 40 MB")


def build(side: Side, store: Path, n: int) -> float:
    t = time.perf_counter()
    timed(side.py("-c", BUILD_CHILD, str(store), str(n)), side.env, timeout=3600)
    return time.perf_counter() - t


def bench_store(sides: list[Side], reps: int, tmp: Path, n: int, only: set[str]) -> None:
    # One store, built once with the newest side, read by every side: the journals are
    # the same format. Each side first lists it once (an index builds itself then).
    store = tmp / "store"
    secs = build(sides[0], store, n)
    print(f"built {n:,} runs in {secs:.1f} s (flush mode, 16 threads)", flush=True)
    for s in sides:
        timed(s.cli(store, "list", "--limit", "1"), s.env)
    if "list" in only:
        empty = tmp / "empty"
        empty.mkdir()
        res = paired(sides, reps, lambda s: timed(s.cli(empty, "list", "--limit", "10"), s.env)[0])
        report("intemporal list --limit 10, an empty store (the CLI's own floor)", res, "s", 1, "-")
        for args, target in (
            (("list", "--limit", "10"), "≤ 0.25 s"),
            (("list", "--status", "failed", "--limit", "10"), "≤ 0.3 s"),
            (("list", "--workflow", "job", "--limit", "10"), "-"),
        ):
            res = paired(sides, reps, lambda s, a=args: timed(s.cli(store, *a), s.env)[0])
            report(f"intemporal {' '.join(args)}, {n:,} runs", res, "s", 1.0, target)
    if "recover" in only:

        def rec(s: Side) -> float:
            _, out = timed(s.py("-c", RECOVER_CHILD, str(store)), s.env)
            return float(json.loads(out.splitlines()[-1])["recover_s"])

        res = paired(sides, reps, rec)
        report(f"engine.recover(), {n:,} runs, none to resume", res, "s", 1.0, "≤ 0.1 s")
    if "gc" in only:
        gc_reps = max(1, min(reps, 3))
        cpu: dict[str, list[float]] = {s.name: [] for s in sides}

        def gc_one(s: Side) -> float:
            copy = tmp / f"gc-{s.name}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(store, copy, symlinks=True)
            timed(s.cli(copy, "list", "--limit", "1"), s.env)  # its index, if it keeps one
            os.sync()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, _ = timed(s.cli(copy, "gc", "--older-than", "0s"), s.env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[s.name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            left = sum(1 for p in copy.rglob("*.jsonl"))
            shutil.rmtree(copy, ignore_errors=True)
            if left:
                raise RuntimeError(f"gc left {left} runs")
            return wall

        res = paired(sides, gc_reps, gc_one)
        report(f"intemporal gc deleting {n:,} runs (whole process)", res, "s", 1.0, "≤ 5 s")
        report(
            "  the same, CPU (user + sys, its threads and the kernel's workers)", cpu, "s", 1, "-"
        )
    shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=100_000, help="runs in the store (100,000)")
    p.add_argument("--parked", type=int, default=10_000, help="parked runs (10,000)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per figure (5)")
    p.add_argument("--only", default="import,parked,list,recover,gc")
    p.add_argument("--baseline", type=Path, help="another checkout to measure beside this one")
    p.add_argument("--tmp", type=Path, help="where temporary stores go")
    a = p.parse_args()
    only = set(a.only.split(","))
    sides = [Side("this", REPO)]
    if a.baseline is not None:
        sides.append(Side("baseline", a.baseline.resolve()))
    tmp = Path(tempfile.mkdtemp(prefix="intemporal-store-bench-", dir=a.tmp))
    print(f"{len(sides)} side(s): " + ", ".join(f"{s.name}={s.root}" for s in sides))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, tmp {tmp}", flush=True)
    try:
        if "import" in only:
            bench_import(sides, a.reps)
        if "parked" in only:
            bench_parked(sides, a.reps, tmp, a.parked)
        if only & {"list", "recover", "gc"}:
            bench_store(sides, a.reps, tmp, a.runs, only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
