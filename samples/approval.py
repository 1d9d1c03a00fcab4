"""Expense approval: a workflow that waits for a person, who approves it from the command line.

    python samples/approval.py [--store DIR] [--auto] [--timeout SECONDS]

1. An expense report is submitted. The workflow checks it against the policy (an
   activity), publishes its progress with `intemporal.set_event`, then waits for the
   signal "approve" with `intemporal.wait_for_signal("approve", timeout=...)`.
2. While it waits the run holds no thread: it is suspended, its state in the journal.
   Anyone can read its progress with `engine.get_event(run_id, "progress")`.
3. This script prints the command that approves it, for example

       intemporal --store .intemporal signal expense-1a2b3c4d approve '{"by": "alice"}'

   Run it in another terminal. With --auto (the default when stdin is not a terminal,
   as in tests) the script runs that command itself, in a subprocess.
4. The engine notices the signal and the workflow continues with its payload: it pays
   the expense and returns. With no approval within the timeout, the workflow gets
   `intemporal.SignalTimeout` and returns "expired" instead.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import intemporal

APPROVAL_LIMIT = 100  # expenses above this need a person's approval


@intemporal.activity
def check_policy(report: dict[str, Any]) -> str:
    """The policy check: a durable step, not run again when the run replays after the wait."""
    if report["amount"] <= 0:
        raise ValueError(f"an expense must be positive, not {report['amount']}")
    return "needs approval" if report["amount"] > APPROVAL_LIMIT else "auto-approved"


@intemporal.activity
def pay(report: dict[str, Any], approver: str) -> str:
    """Pay the employee back (here: describe the payment)."""
    return f"paid {report['amount']} {report['currency']} to {report['employee']} ({approver})"


@intemporal.workflow
def expense_approval(report: dict[str, Any], timeout: float) -> dict[str, Any]:
    intemporal.set_event("progress", 0.25)
    verdict = check_policy(report)
    approver = "policy"
    if verdict == "needs approval":
        intemporal.set_event("progress", 0.5)  # waiting for approval
        try:
            decision = intemporal.wait_for_signal("approve", timeout=timeout)
        except intemporal.SignalTimeout:
            intemporal.set_event("progress", 1.0)
            return {"status": "expired", "report": report["id"]}
        approver = f"approved by {decision['by']}"
        intemporal.set_event("progress", 0.75)
    receipt = pay(report, approver)
    intemporal.set_event("progress", 1.0)
    return {"status": "paid", "report": report["id"], "receipt": receipt}


def wait_for_progress(engine: intemporal.Engine, run_id: str, at_least: float) -> float:
    """Poll the run's published progress until it reaches `at_least` (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        progress = engine.get_event(run_id, "progress", timeout=1) or 0.0
        if progress >= at_least or time.monotonic() > deadline:
            return progress
        time.sleep(0.01)


def wait_for_status(handle: intemporal.RunHandle, want: intemporal.RunStatus) -> str:
    """Poll the run's status until it is `want` (5 s at most); return the last one seen."""
    deadline = time.monotonic() + 5
    while (status := handle.status()) is not want and time.monotonic() < deadline:
        time.sleep(0.01)
    return str(status)


def demo(store: str, auto: bool, timeout: float, kept: bool = True) -> None:
    """Start an expense run on `store` and approve it; `kept=False`: a temporary store,
    deleted when this script ends (so no command to resume from it later is printed)."""
    report = {"id": "EXP-7", "employee": "bob", "amount": 240, "currency": "EUR"}
    run_id = f"expense-{uuid.uuid4().hex[:8]}"
    with intemporal.Engine(store=store) as engine:
        handle = engine.start(expense_approval, report, timeout, run_id=run_id)
        print(f"Started run {run_id}: expense {report['id']}, {report['amount']} EUR")
        progress = wait_for_progress(engine, run_id, 0.5)
        status = wait_for_status(handle, intemporal.RunStatus.WAITING)
        print(f"progress: {progress}, status: {status} (suspended: it holds no thread)")

        payload = '{"by": "alice"}'
        command = ["intemporal", "--store", store, "signal", run_id, "approve", payload]
        print("Approve it with:")
        print(f"    {shlex.join(command)}")
        if auto:
            # The same command, run as another process would: through the store's inbox.
            print("(--auto: running that command in a subprocess)")
            cli = [sys.executable, "-m", "intemporal.cli", *command[1:]]
            sent = subprocess.run(cli, capture_output=True, text=True, timeout=30)
            if sent.returncode != 0:
                sys.exit(f"the signal command failed:\n{sent.stdout}{sent.stderr}")
            print(f"    {sent.stdout.strip()}")
        try:
            if not auto:
                print(f"Waiting up to {timeout:g} s (Ctrl-C leaves the run durable and waiting)")
            result = handle.result(timeout=timeout + 10)
        except KeyboardInterrupt:
            if not kept:
                print("\nStopped. The store was temporary and is deleted now, with the run:")
                print("pass --store DIR to keep it, signal the run and resume it later.")
                return
            again = shlex.join(["intemporal", "--store", store, "resume", run_id])
            print(f"\nStopped; the run waits in its journal. Signal it, then: {again}")
            return
        print(f"progress: {engine.get_event(run_id, 'progress', timeout=1)}")
        print(f"result: {result}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    parser.add_argument(
        "--auto",
        action="store_true",
        help="send the approval from a subprocess (the default when stdin is not a terminal)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for approval (300)"
    )
    opts = parser.parse_args()
    auto = opts.auto or not sys.stdin.isatty()
    if opts.store:
        demo(opts.store, auto, opts.timeout)
        return
    with tempfile.TemporaryDirectory(prefix="intemporal-approval-") as tmp:
        demo(tmp, auto, opts.timeout, kept=False)


if __name__ == "__main__":
    main()
