"""Crash soak: the concurrent benchmark scenario, SIGKILLed at random moments, resumed.

Given N workflows of K activities started at once in a child process on `threads=32`
(scenario 2 of `make bench`: 1,000 x 10 in the slow variant), when that process is
SIGKILLed in the middle of its start loop, and each process resuming the runs is SIGKILLed
again at a random moment a few times, and a last process finishes the job, then every run
completed with the result of an uninterrupted run, every activity ran at least once, and
activities ran again only as often as a kill can catch them in flight (at most `threads`
per kill).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from intemporal import Engine, RunStatus

THREADS = 32

WORKER = textwrap.dedent(
    """
    import os, sys
    import intemporal

    STORE, SIDE, N, K, VIA = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

    @intemporal.activity
    def step(run, i, x):
        fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{run} {i}\\n".encode())
        os.close(fd)
        return {"i": i, "x": x, "y": x + i}

    @intemporal.workflow(name="soak")
    def soak(k, x):
        run = intemporal.run_id()
        return sum(step(run, i, x)["y"] for i in range(k))

    if __name__ == "__main__":
        with intemporal.Engine(STORE, threads=THREADS) as engine:
            # Idempotent: new runs start, orphaned ones resume, finished ones return.
            if VIA == "start":
                handles = [engine.start(soak, K, j, run_id=f"r{j}") for j in range(N)]
                for h in handles:
                    h.result(timeout=120)
            else:  # THREADS callers executing runs inline, as a web server's threads would
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(THREADS) as callers:
                    list(callers.map(lambda j: engine.run(soak, K, j, run_id=f"r{j}"), range(N)))
        print("all done", flush=True)
    """
).replace("THREADS", str(THREADS))


def soak(tmp_path: Path, n: int, k: int, kills: int, seed: int, via: str = "start") -> None:
    """`via="start"`: one thread starts every run (scenario 2); `via="run"`: THREADS caller
    threads execute them inline with `engine.run`, while the pool resumes orphaned ones."""
    rng = random.Random(seed)
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "soak_worker.py"
    script.write_text(WORKER)
    store, side = tmp_path / "store", tmp_path / "side.txt"
    cmd = [sys.executable, str(script), str(store), str(side), str(n), str(k), via]
    done_kills = 0
    total = n * k
    # The first kill lands in the start loop, once a random number of journals exist; the
    # others when the side-effect file reaches a random, growing number of lines.
    targets = sorted(rng.sample(range(1, int(total * 0.9)), kills - 1))
    schedule = [(_journals, rng.randrange(1, n // 2), store)] + [(_lines, t, side) for t in targets]
    for count, target, path in schedule:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while count(path) < target and proc.poll() is None:
                assert time.monotonic() < deadline, f"never reached {target} in {path.name}"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                done_kills += 1
            proc.communicate(timeout=30)
        if count is _journals:  # the kill did land in the start loop: runs were left unstarted
            assert _journals(store) < n, "the start loop finished before its kill"
    assert done_kills == kills, "a worker finished before its kill: the kills landed nowhere"
    last = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert last.returncode == 0, last.stderr[-3000:]

    counts = collections.Counter(tuple(line.split()) for line in side.read_text().splitlines())
    with Engine(store) as engine:
        for j in range(n):
            info = engine.get_run(f"r{j}")
            assert info.status is RunStatus.COMPLETED, (info.run_id, info.status, info.error)
            assert info.result == sum(j + i for i in range(k))
    missing = [
        (f"r{j}", str(i)) for j in range(n) for i in range(k) if (f"r{j}", str(i)) not in counts
    ]
    assert not missing, f"activities never ran: {missing[:5]}"
    again = sum(c - 1 for c in counts.values())
    in_flight = THREADS * (2 if via == "run" else 1)  # the callers' runs and the pool's
    assert again <= done_kills * in_flight, f"{again} re-runs for {done_kills} kills"


def _journals(store: Path) -> int:
    try:
        return sum(1 for name in os.listdir(store) if name.endswith(".jsonl"))
    except FileNotFoundError:
        return 0


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def test_concurrent_runs_survive_random_kills(tmp_path: Path) -> None:
    soak(tmp_path, n=1000, k=10, kills=4, seed=7)


def test_runs_executed_by_caller_threads_survive_random_kills(tmp_path: Path) -> None:
    # `engine.run` creates each journal claimed and syncs it at its first durable step
    soak(tmp_path, n=300, k=10, kills=4, seed=11, via="run")


@pytest.mark.slow
def test_concurrent_runs_survive_many_random_kills(tmp_path: Path) -> None:
    for seed in range(int(time.time()), int(time.time()) + 5):
        soak(tmp_path / str(seed), n=1000, k=10, kills=12, seed=seed)
        soak(tmp_path / f"{seed}-run", n=1000, k=10, kills=12, seed=seed, via="run")
