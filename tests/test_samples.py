"""Every sample in samples/ runs, exits 0, and (where listed below) prints what it promises.

Each sample runs in its own process, as a user would run it: `python samples/X.py
--store DIR`, with a fresh store and working directory. A sample added to samples/ is
picked up automatically; give it an entry in `EXPECTED` to check its output too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TIMEOUT = 60  # seconds; every sample is meant to finish in a few


def check_hello(out: str) -> None:
    assert '{"activity": ["processed", 1], "protocol": ["X", "child"]}' in out


def check_protocols(out: str) -> None:
    assert "{'apple': 'R-0001', 'pear': 'out of stock'}" in out
    assert out.count("attempt_failed") == 2  # the flaky warehouse, retried per its policy


def check_booking_saga(out: str) -> None:
    # the failure roll-back: LIFO, in the call log and in the journal; the card error
    assert "calls:   book_hotel, book_flight, charge_card, cancel_flight, cancel_hotel\n" in out
    assert (
        "journal: book_hotel ok, book_flight ok, charge_card failed, cancel_flight ok, "
        "cancel_hotel ok\n"
    ) in out
    assert "result() raised CardDeclined: card declined for trip-declined-" in out
    assert re.search(r"run trip-declined-\w+ is failed: CardDeclined: card declined", out), out
    # the cancellation roll-back: the sleeping run is woken at once, undone, cancelled
    assert "calls:   book_hotel, book_flight, cancel_flight, cancel_hotel\n" in out
    took = re.search(r"result\(\) raised Cancelled after ([0-9.]+) s", out)
    assert took is not None and float(took.group(1)) < 10, (
        out
    )  # its result(timeout=10), not an hour
    assert re.search(r"run trip-cancelled-\w+ is cancelled: Cancelled", out), out


def check_crash_and_resume(out: str) -> None:
    assert "Killed the worker with SIGKILL" in out
    assert "orphaned=True" in out
    assert "result: 2470 " in out  # the same as an uninterrupted run
    assert "steps run: 20 of 20" in out
    twice = re.search(r"activities that ran twice: (\d+)", out)
    assert twice is not None, out
    assert int(twice.group(1)) <= 1  # at most the step in flight at the kill


def check_approval(out: str) -> None:
    run = re.search(r"Started run (expense-[0-9a-f]{8})", out)
    assert run is not None, out
    assert "progress: 0.5, status: waiting" in out
    # the exact command a user runs to approve it, then its output
    assert re.search(
        rf"intemporal --store \S+ signal {run.group(1)} approve '{{\"by\": \"alice\"}}'", out
    ), out
    assert f"signal 'approve' sent to {run.group(1)}" in out
    assert "progress: 1.0" in out
    assert "'status': 'paid'" in out
    assert "paid 240 EUR to bob (approved by alice)" in out


def check_fan_out(out: str) -> None:
    assert "map-reduce over 10 inputs in 5 chunks, one child run each:" in out
    rows = re.findall(
        r"^  (fan-out-[0-9a-f]{8})/(\d+)  \[.*\]  -> (\d+)  \(completed\)$", out, re.M
    )
    assert [int(seq) for _, seq, _ in rows] == [1, 2, 3, 4, 5], out  # "<parent>/<seq>"
    assert len({parent for parent, _, _ in rows}) == 1
    assert sum(int(value) for _, _, value in rows) == 385
    assert "result: 385 (sum of the squares of 1..10)" in out


def check_cancel_worker_threads(out: str) -> None:
    assert "helpers stopped by their heartbeat: 3" in out
    assert re.search(r"run thumbs-[0-9a-f]{8} is cancelled", out), out


def check_disk_full(out: str) -> None:
    assert "run() raised StoreUnavailable: store unavailable: cannot write the journal" in out
    assert "status: running, journal: run_started, activity_completed\n" in out
    assert "after freeing the disk: shipped order-7\n" in out
    assert "calls: reserve 1, charge 2, ship 1\n" in out


def check_ui_demo(out: str) -> None:
    assert re.search(
        r"^order: +order-\w+ -> \{'reservation': 'R-\w+', 'approved_by': 'alice'", out, re.M
    ), out
    assert re.search(
        r"^trip: +trip-\w+ failed: card declined for 980 EUR \(compensated\)$", out, re.M
    )
    assert re.search(r"^crash: +crash-\w+ resumed -> box-1-label \+ parcel-\w+-label$", out, re.M)
    assert re.search(r"^expense: +expense-\w+ waits for the signal 'approve'$", out, re.M)
    assert re.search(r"^see them: intemporal --store \S+ ui ", out, re.M)


def check_typed(out: str) -> None:
    assert "order-1: ['reserved apple for order-1', 'reserved pear for order-1', " in out
    assert "'charged 105 for order-1', 'M-1']" in out  # express=True passed straight through
    assert "order-2: [" in out and "'charged 20 for order-2', 'M-2']" in out
    assert "sent: ['customer@example.com: order-1: 3 steps'" in out


def check_tracing(out: str) -> None:
    # the span tree the sample's docstring promises, as printed
    doc = (SAMPLES / "tracing.py").read_text().split("prints\n", 1)[1].split("\n\n", 1)[0]
    assert textwrap.dedent(doc) + "\n" in out, out


def check_observers(out: str) -> None:
    # two failed attempts, then success; replayed once when the signal woke the run
    assert "charge: 3 attempts, 2 failed, replayed 1" in out
    assert "result: charged 42" in out


def check_secret_token(out: str) -> None:
    assert "result: {'user': 'alice', 'authorized': True}" in out
    assert "the token, printed: Secret(***)" in out
    assert re.search(r"intemporal show: args +\"alice\", Secret\(\*\*\*\)", out), out


def check_async_crawl(out: str) -> None:
    took = re.search(r"5 pages fetched in ([0-9.]+) s", out)
    # gathered: one after the other, 5 fetches of 0.2 s each take 1.0 s at the least
    assert took is not None and float(took.group(1)) < 1.0, out
    assert "checksum from the fast mirror" in out
    assert "journal: fetch x5, mirror x2 (1 cancelled), store, run_completed" in out
    assert "the sync Engine ran it too: 5 pages" in out


def check_long_runs(out: str) -> None:
    assert "old run -> charged by v1, new run -> charged by v2 (replay: deterministic both)" in out
    assert re.search(
        r"fork: +src-\w+ failed at step 2; fork fix-\w+ -> shipped order-9 \(reserve ran 1 time\)",
        out,
    ), out
    assert re.search(r"continue: +poll-\w+ -> 5 after 5 runs of 3 events each", out), out
    assert re.search(
        r"timeout: +trip-\w+ cancelled \(timed out\); compensations: unbook hotel", out
    ), out
    assert re.search(
        r"terminate: +stuck-\w+ cancelled \(terminated: duplicate\); compensations: none", out
    ), out


def check_queues(out: str) -> None:
    assert "first two sent: urgent-0, urgent-1 (priority 0" in out
    assert "at most 2 at once (concurrency=2)" in out
    late = re.search(r"reminder started ([0-9.]+) s after", out)
    assert late is not None and float(late.group(1)) >= 0.5, out
    ticks = re.findall(r"heartbeat@(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)", out)
    assert len(ticks) == 2 and ticks[0] < ticks[1], out


EXPECTED: dict[str, Callable[[str], None]] = {
    "async_crawl.py": check_async_crawl,
    "long_runs.py": check_long_runs,
    "queues.py": check_queues,
    "secret_token.py": check_secret_token,
    "tracing.py": check_tracing,
    "observers.py": check_observers,
    "typed.py": check_typed,
    "cancel_worker_threads.py": check_cancel_worker_threads,
    "hello.py": check_hello,
    "protocols.py": check_protocols,
    "crash_and_resume.py": check_crash_and_resume,
    "fan_out.py": check_fan_out,
    "booking_saga.py": check_booking_saga,
    "approval.py": check_approval,
    "disk_full.py": check_disk_full,
    "ui_demo.py": check_ui_demo,
}

ARGS: dict[str, list[str]] = {  # extra arguments, so that no sample waits for a person
    "approval.py": ["--auto"],
}


def run_sample(path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INTEMPORAL_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_sample_runs(sample: Path, tmp_path: Path) -> None:
    # Given a sample and an empty store
    store = tmp_path / "store"

    # When it runs as `python samples/X.py --store DIR`
    proc = run_sample(sample, tmp_path, "--store", str(store), *ARGS.get(sample.name, []))

    # Then it exits 0 and prints what it promises
    assert proc.returncode == 0, f"{sample.name} failed:\n{proc.stdout}\n{proc.stderr}"
    check = EXPECTED.get(sample.name)
    if check is not None:
        check(proc.stdout)


def test_listed_samples_exist() -> None:
    missing = [name for name in EXPECTED if not (SAMPLES / name).exists()]
    assert not missing


def test_hello_runs_without_a_store_argument(tmp_path: Path) -> None:
    proc = run_sample(SAMPLES / "hello.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    check_hello(proc.stdout)


def test_approval_is_signalled_from_the_cli_within_seconds(tmp_path: Path) -> None:
    # Given the approval sample, approved by the CLI in a subprocess
    started = time.monotonic()
    proc = run_sample(SAMPLES / "approval.py", tmp_path, "--store", str(tmp_path / "store"))

    # Then (auto mode: stdin is not a terminal) the CLI's signal, not the 300 s approval
    # timeout, ends the wait: the run is paid, well before that timeout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--auto: running that command in a subprocess" in proc.stdout
    check_approval(proc.stdout)
    assert time.monotonic() - started < 300
