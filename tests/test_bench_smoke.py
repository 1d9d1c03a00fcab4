"""The benchmark stays runnable: `bench/run.py --quick --no-dbos` prints a figure per scenario."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_bench_prints_a_figure_for_every_scenario(tmp_path: Path) -> None:
    # Given the bench at its smoke sizes, without the DBOS baseline
    results = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-dbos"]
    # When it runs (`timeout` only stops a hang: speed is the bench's business, not a test's)
    proc = subprocess.run(
        [*cmd, "--results", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then it succeeds, and every scenario 1-7 printed a figure (or says why not)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for n in range(1, 8):
        figures = re.findall(rf"^  \[{n}\] .*?: intemporal (\S+)", proc.stdout, re.MULTILINE)
        assert figures, f"scenario {n} printed no figure:\n{proc.stdout[-3000:]}"
        assert any(re.match(r"[\d,.]+$", f) for f in figures) or (
            n == 6 and "not available yet" in proc.stdout
        ), f"scenario {n} printed no number: {figures}"
    # and the results file holds the table and the command that produced it
    text = results.read_text()
    assert "python bench/run.py --quick --no-dbos" in text
    assert "| scenario | metric | intemporal | DBOS |" in text
    assert "DBOS not measured" in text


def test_start_profile_splits_the_callers_time_by_system_call(tmp_path: Path) -> None:
    # Given the scenario-2 profile at its smoke size
    cmd = [sys.executable, str(REPO / "bench" / "start_profile.py"), "--quick"]
    # When it runs
    proc = subprocess.run(
        [*cmd, "--tmp", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    # Then it prints the whole call, create's share, each timed call and a throughput
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = dict(re.findall(r"^  (\S.*?\S)\s{2,}(\d+)\s", proc.stdout, re.MULTILINE))
    for row in ("start(), the whole call", "FileStore.create, all of it", "open", "link"):
        assert row in rows, proc.stdout
    # the run's first line made durable: in the write-ahead log (pwritev with RWF_DSYNC)
    assert "pwritev" in rows or "fdatasync" in rows, proc.stdout
    assert 0 < int(rows["FileStore.create, all of it"]) <= int(rows["start(), the whole call"])
    assert re.search(r"throughput of the busy engine: [\d,]+ steps/s", proc.stdout), proc.stdout
    assert list(tmp_path.iterdir()) == []  # its stores removed


def test_async_fanout_bench_runs_at_smoke_size() -> None:
    # Given the async fan-out bench at a smoke size: 50 runs each awaiting a 0.2 s activity
    cmd = [sys.executable, str(REPO / "bench" / "async_fanout.py"), "--runs", "50"]
    proc = subprocess.run(
        [*cmd, "--seconds", "0.2", "--stores", "memory"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then every run awaited at once, on one loop, and the figures are printed
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"memory store: all done in [\d.]+ s .*50 awaiting at once", proc.stdout)
    assert re.search(r"[\d.]+ KiB of RSS per run in flight", proc.stdout), proc.stdout
