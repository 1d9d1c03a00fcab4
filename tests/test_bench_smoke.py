"""The benchmark stays runnable: `bench/run.py --quick --no-dbos` prints a figure per scenario."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pg_server import INSTALL, find_bindir

REPO = Path(__file__).resolve().parent.parent


def test_quick_bench_prints_a_figure_for_every_scenario(tmp_path: Path) -> None:
    # Given the bench at its smoke sizes, without the DBOS baseline
    results = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-dbos"]
    cmd += ["--only", "1,2,3,4,5,6,7"]  # 8 (PostgreSQL): the test below
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
    # (a run created claimed when a thread is free to execute it, else through create)
    claimed = rows.get("created claimed + synced, all of it", "0")
    made = int(rows["FileStore.create, all of it"]) + int(claimed)
    assert 0 < made <= int(rows["start(), the whole call"])
    assert re.search(r"throughput of the busy engine: [\d,]+ steps/s", proc.stdout), proc.stdout
    assert list(tmp_path.iterdir()) == []  # its stores removed


def _quick_figures(script: str, tmp: Path) -> dict[str, Any]:
    """The one JSON line `bench/<script> --quick --tmp <tmp>` prints (it must succeed)."""
    cmd = [sys.executable, str(REPO / "bench" / script), "--quick", "--tmp", str(tmp)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


def test_seq_cost_counts_k_syncs_per_workflow_of_k_activities(tmp_path: Path) -> None:
    # Given the scenario-1 cost script at its smoke size (5 runs of K=10), When it runs
    figures = _quick_figures("seq_cost.py", tmp_path)
    # Then it prints one JSON line: 10 syncs per workflow (the end shares the last
    # result's), some wall and CPU time, and leaves no store behind
    assert (figures["W"], figures["K"]) == (5, 10)
    assert figures["syncs_per_workflow"] in (10.0, -1)  # -1: no write-ahead log here
    assert figures["wall_us_per_workflow"] > 0 and figures["cpu_us_per_workflow"] > 0
    assert list(tmp_path.iterdir()) == []


def test_flush_step_prints_the_cost_of_one_activity(tmp_path: Path) -> None:
    # Given scenario 3's per-activity script at its smoke size (2 runs of K=50, 2 reps)
    figures = _quick_figures("flush_step.py", tmp_path)
    # Then it prints one JSON line of wall and CPU µs per activity, and leaves no store behind
    assert (figures["W"], figures["K"]) == (2, 50)
    assert 0 < figures["cpu_min_max"][0] <= figures["cpu_us"] <= figures["cpu_min_max"][1]
    assert figures["wall_us"] > 0
    assert list(tmp_path.iterdir()) == []


def test_step_floor_prints_each_way_against_the_probe(tmp_path: Path) -> None:
    # Given the durable step's floor script at its smoke size (one round of 20 steps a way)
    figures = _quick_figures("step_floor.py", tmp_path)
    # Then it prints each way's wall and CPU µs per step and its ratio to the sync in place,
    # and leaves nothing behind
    assert set(figures) == {"rounds", "n", "probe", "floor", "warm", "engine"}
    assert figures["probe"]["over_probe"] == 1.0
    for way in ("floor", "warm", "engine"):
        assert figures[way]["wall_us"] > 0 and figures[way]["over_probe"] >= 0
    assert list(tmp_path.iterdir()) == []


def test_index_row_cost_prints_its_figures(tmp_path: Path) -> None:
    # Given the index row's cost script at a smoke size
    cmd = [sys.executable, str(REPO / "bench" / "index_row_cost.py"), "--tmp", str(tmp_path)]
    cmd += ["--calls", "300", "--runs", "20", "--reps", "1"]
    # When it runs
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    # Then it prints the cost of `created` alone and on start()'s thread, and cleans up
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert 0 < figures["RunIndex.created"]["median_us"] <= figures["RunIndex.created"]["p99_us"]
    assert set(figures["_index_row on start()'s thread"]) == {"busy engine", "client engine"}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # ~10-25 s: a server, seven worker processes, a lease to expire
def test_quick_postgres_scenario_prints_its_figures(tmp_path: Path) -> None:
    # Given scenario 8 at its smoke size (a throwaway PostgreSQL server), without DBOS
    if find_bindir() is None and os.environ.get("CI") != "true":
        pytest.skip("no PostgreSQL server binaries (outside CI): " + INSTALL)
    results = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-dbos"]
    # When it runs
    proc = subprocess.run(
        [*cmd, "--only", "postgres", "--results", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then each measurement printed a figure: sequential, concurrent, 3 scale-outs, takeover
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^  \[8\] (.*?): intemporal (\S+)", proc.stdout, re.MULTILINE)
    assert [r[0].split(":")[0].split(",")[0] for r in rows] == [
        "sequential",
        "concurrent",
        "scale-out",
        "scale-out",
        "scale-out",
        "takeover after SIGKILL",
    ], proc.stdout
    assert all(re.match(r"[\d,.]+$", figure) for _, figure in rows), rows
    assert "Steps journaled twice: 0" in results.read_text()


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
