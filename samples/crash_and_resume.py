"""Crash and resume: kill a worker process mid-run, then finish the run from its journal.

    python samples/crash_and_resume.py [--store DIR]

1. A worker process (this script, re-run with `--worker`) starts a workflow of 20
   activities; each takes ~20 ms and appends its step number to a side-effect file.
2. After about 8 steps this process kills the worker with SIGKILL: no cleanup, no
   `finally`, exactly like a power cut of that process.
3. The run is left "running" with no owner: orphaned, and resumable.
4. `Engine(store).resume(run_id)` finishes it here. Steps whose completion reached the
   journal are replayed from it, not run again; only the step in flight at the kill may
   run a second time (at-least-once), so the side-effect file shows 0 or 1 repeats.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import intemporal

STEPS = 20
KILL_AFTER = 8  # steps seen in the side-effect file before the worker is killed


@intemporal.activity
def step(effects: str, i: int) -> int:
    """One unit of work with a visible side effect: a line in the `effects` file."""
    time.sleep(0.02)
    with open(effects, "a") as f:
        f.write(f"{i}\n")
    return i * i


@intemporal.workflow
def twenty_steps(effects: str) -> int:
    return sum(step(effects, i) for i in range(STEPS))


EXPECTED = sum(i * i for i in range(STEPS))  # what an uninterrupted run returns


def worker(store: str, run_id: str, effects: str) -> None:
    """The child process: start the run and work on it until killed."""
    with intemporal.Engine(store=store) as engine:
        engine.run(twenty_steps, effects, run_id=run_id)


def side_effects(path: Path) -> list[int]:
    """The step numbers recorded in the side-effect file, complete lines only."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split("\n")[:-1] if line]


def demo(store: str, effects_dir: str, keep: bool) -> None:
    run_id = f"crash-demo-{uuid.uuid4().hex[:8]}"
    effects = Path(effects_dir) / f"{run_id}.effects"
    journal = Path(store) / f"{run_id}.jsonl"

    cmd = [sys.executable, __file__, "--worker", "--store", store, "--run-id", run_id]
    child = subprocess.Popen([*cmd, "--effects", str(effects)])
    print(f"1. Started worker process {child.pid}: run {run_id!r}, {STEPS} steps of ~20 ms each")

    deadline = time.monotonic() + 10
    while len(side_effects(effects)) < KILL_AFTER and child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            sys.exit("the worker made no progress within 10 s; giving up")
        time.sleep(0.002)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        print(f"2. Killed the worker with SIGKILL after {len(side_effects(effects))} steps ran")
    else:  # a very slow machine start-up could let it finish first; the demo still holds
        print(f"2. The worker exited (code {child.returncode}) before it could be killed")

    with intemporal.Engine(store=store) as engine:
        info = engine.get_run(run_id)
        print(
            f"3. Run {run_id!r} is {info.status}, orphaned={info.orphaned}: "
            f"{info.steps} steps are in its journal ({journal})"
        )
        print("4. Resuming it in this process with Engine(store).resume(run_id) ...")
        result = engine.resume(run_id).result(timeout=30)

    ran = collections.Counter(side_effects(effects))
    twice = sorted(i for i, n in ran.items() if n > 1)
    print(f"   result: {result} (an uninterrupted run returns {EXPECTED})")
    print(f"   steps run: {len(ran)} of {STEPS}, {sum(ran.values())} executions in all")
    which = f" (step {', '.join(map(str, twice))}, in flight at the kill)" if twice else ""
    print(f"   activities that ran twice: {len(twice)}{which}")
    if keep:
        print(f"Done. Read the journal with: cat {journal}")
    else:
        print("Done. (The temporary store is gone; pass --store DIR to keep the journal.)")
    if result != EXPECTED or len(ran) != STEPS or len(twice) > 1:
        sys.exit("unexpected outcome: see above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--effects", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        worker(opts.store, opts.run_id, opts.effects)
        return
    with tempfile.TemporaryDirectory(prefix="intemporal-crash-") as tmp:
        demo(opts.store or os.path.join(tmp, "store"), tmp, keep=opts.store is not None)


if __name__ == "__main__":
    main()
