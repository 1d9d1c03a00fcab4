"""`make bench`: intemporal's benchmark scenarios, side by side with DBOS on SQLite.

    python bench/run.py                    # everything; writes bench/RESULTS.md
    python bench/run.py --quick --no-dbos  # a smoke run in seconds (the test suite runs it)
    python bench/run.py --only 1,3         # some scenarios: 1 seq, 2 conc, 3 flush,
                                           # 4 recovery, 5 replay, 6 waiting, 7 list+import,
                                           # 8 postgres (bench/pg_bench.py)

DBOS is installed on first use into bench/.venv-dbos (never into the project) and its
`../shared/bench/bench_dbos.py` runs there; without it, each figure is printed with its
ratio to plain Python only. Temporary stores live in the system's temporary folder when
it is on the same disk as bench/ (else bench/.tmp) and are removed; `--tmp DIR` picks one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _p in (str(BENCH), str(REPO)):  # the repo's intemporal, whatever the install state
    if _p not in sys.path:
        sys.path.insert(0, _p)

import dbos_side  # noqa: E402
import scenarios as sc  # noqa: E402

SCENARIOS = {
    "1": "seq",
    "2": "conc",
    "3": "flush",
    "4": "recovery",
    "5": "replay",
    "6": "waiting",
    "7": "list",
    "8": "postgres",
}
TITLES = {
    "1": "sequential, durable (fsync)",
    "2": "concurrent, durable, threads=32",
    "3": "sequential, durability='flush'",
    "4": "recovery after SIGKILL",
    "5": "replay of a long run",
    "6": "waiting at scale",
    "7": "CLI list and import",
    "8": "PostgreSQL, same server as DBOS",
}


# -- the machine -----------------------------------------------------------------------------
def machine(tmp: Path) -> dict[str, Any]:
    def cmd(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    fs = ""
    df = cmd("df", "-T", str(tmp)).splitlines()
    if len(df) >= 2 and len(df[1].split()) >= 2:
        fs = df[1].split()[1]
    if not fs:
        fs = cmd("stat", "-f", "-c", "%T", str(BENCH)).strip() or "?"
    return {
        "nproc": (cmd("nproc").strip() or str(os.cpu_count())),
        "filesystem": fs,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


# -- formatting ------------------------------------------------------------------------------
def num(v: Any, digits: int | None = None) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{digits}f}"


class Table:
    """Rows of (scenario, metric, intemporal, DBOS, ratio, target, met)."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.plain: list[list[str]] = []
        self.notes: list[str] = []

    def add(
        self,
        n: str,
        metric: str,
        ours: Any,
        dbos: Any = None,
        *,
        ratio: float | None = None,
        target: str = "",
        met: bool | None = None,
        unit: str = "",
        digits: int | None = None,
    ) -> None:
        def cell(v: Any) -> str:
            return num(v, digits) + (
                f" {unit}" if unit and not isinstance(v, str) and v is not None else ""
            )

        row = [
            f"{n} {TITLES[n]}",
            metric,
            cell(ours),
            cell(dbos),
            "—" if ratio is None else f"{ratio:,.1f}x",
            target or "—",
            "—" if met is None else ("yes" if met else "**NO**"),
        ]
        self.rows.append(row)

    def markdown(self) -> str:
        head = ["scenario", "metric", "intemporal", "DBOS", "ratio (x better)", "target", "met"]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out)


def ratio_hi(ours: float | None, base: float | None) -> float | None:
    """Throughput ratio: how many times intemporal's figure exceeds the baseline's."""
    return ours / base if ours and base else None


def ratio_lo(ours: float | None, base: float | None) -> float | None:
    """Time ratio: how many times less time intemporal takes than the baseline."""
    return base / ours if ours and base else None


# -- the run ---------------------------------------------------------------------------------
def parse_only(values: list[str] | None) -> list[str]:
    if not values:
        return list(SCENARIOS)
    names = {v: k for k, v in SCENARIOS.items()}
    out = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            key = part if part in SCENARIOS else names.get(part)
            if key is None:
                raise SystemExit(f"unknown scenario {part!r}: use 1-8 or {', '.join(names)}")
            out.append(key)
    return sorted(set(out))


def dbos_figures(
    only: list[str], quick: bool, tmp: Path, reps: int, log: Any
) -> tuple[dict[str, Any], str]:
    """Run the DBOS side of the selected scenarios; return its figures and why any is missing."""
    py, why = dbos_side.ensure(log)
    if py is None:
        return {}, why
    out: dict[str, Any] = {"python": str(py)}
    work = tmp / "dbos"
    work.mkdir(exist_ok=True)
    w, k = ("10", "3") if quick else ("300", "10")
    try:
        if {"1", "3"} & set(only):
            log("DBOS sequential ...")
            sc.settle()
            res = dbos_side.run(py, work, ["seq", "--w", w, "--k", k, "--reps", str(reps)])
            out["seq"], out["pragmas"], out["version"] = (
                res["sequential"],
                res.get("pragmas"),
                res.get("dbos"),
            )
        if "2" in only:
            log("DBOS concurrent ...")
            sc.settle()
            res = dbos_side.run(py, work, ["conc", "--w", w, "--k", k, "--reps", str(reps)])
            out["conc"], out["version"] = res["concurrent"], res.get("dbos")
        if "4" in only:
            log("DBOS recovery ...")
            sc.settle()
            rk, kill, rr = ("60", "30", "1") if quick else ("1000", "500", "3")
            res = dbos_side.run(
                py, work, ["recovery", "--rk", rk, "--kill-at", kill, "--rec-reps", rr]
            )
            out["recovery"], out["version"] = res["recovery_runs"], res.get("dbos")
        if "7" in only:
            log("DBOS import time ...")
            out["import_s"] = sc.import_time(str(py), "dbos", 3 if quick else 5)
    except (RuntimeError, ValueError, KeyError, OSError, subprocess.SubprocessError) as exc:
        return out, f"DBOS failed to run: {str(exc).strip().splitlines()[0][:300]}"
    return out, ""  # its folder is deleted with the bench's, at the end (`sc.settle`)


def scratch_folder(asked: str | None) -> Path:
    """Where temporary stores go: the same disk as the project, but not a watched folder.

    Some workspaces make creating a file in the project's tree cost ~0.3 ms (seen here)
    against ~10 µs elsewhere on the same disk; every run creates one journal. The system
    temporary folder is used only when it is on the same device as `bench/` (never a
    tmpfs, where fsync is free): the disk, and so every fsync, stays the same for both
    intemporal and DBOS, which run in the same folder.
    """
    if asked:
        return Path(asked)
    system = Path(tempfile.gettempdir())
    try:
        if os.stat(system).st_dev == os.stat(BENCH).st_dev:
            return system
    except OSError:
        pass
    return BENCH / ".tmp"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    ap.add_argument("--only", action="append", help="scenarios to run: numbers 1-8 or names")
    ap.add_argument(
        "--no-dbos", action="store_true", help="skip DBOS (print ratios to plain Python)"
    )
    ap.add_argument("--reps", type=int, help="repetitions where a scenario repeats (default 5)")
    ap.add_argument(
        "--results",
        help="where to write the results (default bench/RESULTS.md; with --quick, "
        "bench/.tmp/RESULTS-quick.md so a smoke run never overwrites the real figures)",
    )
    ap.add_argument(
        "--tmp",
        metavar="DIR",
        help="where the temporary stores go (default: the system's temporary folder when it "
        "is on the same disk as bench/, else bench/.tmp)",
    )
    ap.add_argument(
        "--rerender",
        metavar="RESULTS_MD",
        help="rebuild a results file from the raw figures it holds (after changing the notes)",
    )
    args = ap.parse_args()
    if args.rerender:
        path = Path(args.rerender)
        raw = json.loads(path.read_text().split("```json\n", 1)[1].split("\n```", 1)[0])
        path.write_text(render(raw))
        print(f"re-rendered {path}")
        return 0
    only = parse_only(args.only)
    sizes = sc.Sizes.quick_sizes() if args.quick else sc.Sizes()
    if args.reps:
        sizes.reps = args.reps
    results_path = Path(
        args.results
        or (BENCH / ".tmp" / "RESULTS-quick.md" if args.quick else BENCH / "RESULTS.md")
    )
    command = "python bench/run.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    if os.environ.get("MAKELEVEL") and not sys.argv[1:]:
        command = "make bench  (" + command + ")"

    tmp = scratch_folder(args.tmp) / f"intemporal-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    ctx = sc.Ctx(tmp=tmp, sizes=sizes)
    t_begin = time.perf_counter()
    try:
        return _run(args, only, sizes, ctx, results_path, command, t_begin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    only: list[str],
    sizes: sc.Sizes,
    ctx: sc.Ctx,
    results_path: Path,
    command: str,
    t_begin: float,
) -> int:
    def log(msg: str) -> None:
        print(msg, flush=True)

    mach = machine(ctx.tmp)
    mach["scratch"] = str(ctx.tmp.parent)
    mach["fdatasync_us"] = sc.fdatasync_us(ctx)
    mach["create_file_us"] = sc.create_file_us(ctx)
    mach["inplace_sync_us"] = sc.inplace_sync_us(ctx)
    log(
        f"machine: nproc={mach['nproc']}, filesystem={mach['filesystem']}, "
        f"python {mach['python']}, append+fdatasync {mach['fdatasync_us']:.0f} µs, "
        f"sync in place {mach['inplace_sync_us']:.0f} µs, "
        f"create a file {mach['create_file_us']:.0f} µs"
    )
    raw: dict[str, Any] = {"machine": mach, "sizes": sizes.__dict__}

    # -- the baseline first: if it cannot be installed we know at once -----------------------
    dbos: dict[str, Any] = {}
    if args.no_dbos:
        why = "skipped (--no-dbos)"
    else:
        dbos, why = dbos_figures(only, args.quick, ctx.tmp, sizes.reps, log)
    if why:
        log(f"DBOS: {why}; intemporal's figures are shown with their ratio to plain Python")
    raw["dbos"] = dbos
    plain = sc.plain_python(ctx)
    raw["plain"] = plain
    plain_us = plain["us_per_step"]
    log(f"plain Python: {plain_us:.3f} µs per step ({plain['source']})")

    res: dict[str, Any] = {}
    raw["intemporal"] = res
    measure = {
        "1": lambda: sc.sequential(ctx, "fsync"),
        "2": lambda: sc.concurrent(ctx),
        "3": lambda: sc.sequential(ctx, "flush"),
        "4": lambda: sc.recovery(ctx),
        "5": lambda: sc.replay(ctx),
        "6": lambda: sc.waiting(ctx),
        "7": lambda: measure_list(ctx),
        "8": lambda: measure_postgres(ctx, dbos.get("python"), log),
    }
    probes: dict[str, float] = {}
    raw["create_file_us_before"] = probes  # this disk's mood drifts: see scenario 3's note
    for n in only:
        sc.settle()
        probes[n] = sc.create_file_us(ctx)
        log(f"\n[{n}] {TITLES[n]} (creating a file costs {probes[n]:.0f} µs now) ...")
        t0 = time.perf_counter()
        res[n] = measure[n]()
        for row in tabulate({**raw, "intemporal": {n: res[n]}}).rows:
            log(
                f"  [{n}] {row[1]}: intemporal {row[2]} | DBOS {row[3]} | ratio {row[4]} "
                f"| target {row[5]} | met {row[6]}"
            )
        log(f"  ({time.perf_counter() - t0:.0f} s)")

    mach["loadavg_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    raw["elapsed_s"] = time.perf_counter() - t_begin
    raw["command"], raw["why_no_dbos"] = command, why
    report = render(raw)
    print("\n" + report)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(report)
    log(f"written to {results_path}")
    return 0


def measure_postgres(ctx: sc.Ctx, dbos_python: str | None, log: Any) -> dict[str, Any]:
    """Scenario 8 (bench/pg_bench.py): imported here, so psycopg is needed only for it."""
    import pg_bench

    return pg_bench.measure(ctx, Path(dbos_python) if dbos_python else None, log)


def measure_list(ctx: sc.Ctx) -> dict[str, Any]:
    """Scenario 7: the listing, and the import time of the package."""
    r = sc.list_big(ctx)
    r["import_s"] = sc.import_time(
        sys.executable, "intemporal", ctx.sizes.import_reps, sc.child_env()
    )
    r["import_top_ms"] = sc.import_top("intemporal")
    return r


def long_reps(table: Table, n: str, r: dict[str, Any]) -> None:
    """The long runs' repetitions: wall and CPU time per activity, min-max and median."""
    wall, cpu = r.get("us_per_step_long_runs_reps"), r.get("cpu_us_per_step_long_runs_reps")
    if not wall or not cpu:
        return
    table.add(
        n,
        "long runs, µs per activity: wall min-max / CPU (all threads) median, min-max",
        f"{min(wall):,.1f}-{max(wall):,.1f} / {statistics.median(cpu):,.1f} "
        f"({min(cpu):,.1f}-{max(cpu):,.1f})",
        None,
    )


def tabulate(raw: dict[str, Any]) -> Table:
    """The results table (and notes) from the raw figures of a run."""
    table = Table()
    res, dbos, mach = raw["intemporal"], raw["dbos"], raw["machine"]
    sizes = sc.Sizes(**raw["sizes"])
    plain_us = raw["plain"]["us_per_step"]
    d_seq = dbos.get("seq") or {}

    def vs_plain(n: str, what: str, us: float) -> None:
        table.plain.append([f"{n} {TITLES[n]}", what, f"{us:,.1f} µs", f"{us / plain_us:,.0f}x"])

    if "1" in res:
        r = res["1"]
        d = d_seq.get("steps_per_s")
        per_rep = [r["W"] * r["K"] / t for t in r.get("reps_s", [])] or [r["steps_per_s"]]
        table.add(
            "1",
            f"steps/s (W={r['W']}, K={r['K']})",
            r["steps_per_s"],
            d,
            ratio=ratio_hi(r["steps_per_s"], d),
            target="≥ 15x DBOS in every rep",
            met=None if d is None else min(per_rep) >= 15 * d,
        )
        if d:
            table.add(
                "1",
                f"ratio of each of the {len(per_rep)} reps to DBOS's median (min-max)",
                f"{min(per_rep) / d:,.1f}-{max(per_rep) / d:,.1f}x",
                None,
            )
        table.add(
            "1",
            "µs per activity, all-in",
            r["us_per_step_all_in"],
            d_seq.get("us_per_step_all_in"),
            ratio=ratio_lo(r["us_per_step_all_in"], d_seq.get("us_per_step_all_in")),
            unit="µs",
        )
        table.add(
            "1",
            "µs per activity, marginal (K vs K=0)",
            r["us_per_step_marginal"],
            d_seq.get("us_per_step_marginal"),
            ratio=ratio_lo(r["us_per_step_marginal"], d_seq.get("us_per_step_marginal")),
            unit="µs",
        )
        table.add(
            "1",
            "µs per workflow with K=0",
            r["us_per_workflow_K0"],
            d_seq.get("us_per_workflow_K0"),
            ratio=ratio_lo(r["us_per_workflow_K0"], d_seq.get("us_per_workflow_K0")),
            unit="µs",
        )
        inplace = r.get("inplace_sync_us") or mach.get("inplace_sync_us")
        table.add(
            "1",
            f"µs per activity in long runs (W={r['long_W']}, K={r['long_K']:,})",
            r["us_per_step_long_runs"],
            None,
            unit="µs",
            target=None if inplace is None else f"≤ 1.15x {inplace:.0f} µs (a sync in place)",
            met=None if inplace is None else r["us_per_step_long_runs"] <= 1.15 * inplace,
        )
        long_reps(table, "1", r)
        if "seq_syncs_max" in r:
            table.add(
                "1",
                f"syncs per run of K={r['K']} activities in a row (`run()`)",
                r["seq_syncs_max"],
                None,
                target=f"≤ {r['K']}",
                met=r["seq_syncs_max"] <= r["K"],
            )
        if "fan_out_syncs_max" in r:
            table.add(
                "1",
                f"syncs per run that submits {r['fan_out_n']} activities, joins, returns",
                r["fan_out_syncs_max"],
                None,
                target="≤ 2",
                met=r["fan_out_syncs_max"] <= 2,
            )
        vs_plain("1", "per activity, all-in", r["us_per_step_all_in"])
        # `run()` creates the journal claimed and unsynced; each sync is one write in
        # place of the store's write-ahead log (the first carries the creation), and the
        # run's end shares the last activity's.
        syncs = r.get("seq_syncs_max", r["K"])
        sync_us = mach.get("inplace_sync_us") or mach["fdatasync_us"]
        floor = syncs * sync_us / r["K"]
        table.notes.append(
            f"1: each workflow costs {syncs} syncs (each activity's result is synced before "
            "the next one executes, the last one with the run's end), each one "
            "write in place into the store's preallocated write-ahead log (the journal is "
            "written at once without a sync, its new name made durable by the log: no "
            f"folder sync); at {sync_us:.0f} µs per sync in place measured alone on this "
            f"disk (an append + fdatasync: {mach['fdatasync_us']:.0f} µs) that is "
            f"~{floor:.0f} µs per activity; the all-in figure puts them at "
            f"~{r['us_per_step_all_in'] * r['K'] / syncs:.0f} µs each during the run (this "
            "disk's latency drifts), the Python work being ~10 µs per activity (scenario 3). "
            "The syncs rows count the log's syncs of one run; in a fan-out the 10 results "
            "are appended unsynced as they come and synced together with the run's end."
        )
    if "2" in res:
        r = res["2"]
        dc = dbos.get("conc") or {}
        d_best = (
            max(
                (dc.get(m, {}).get("steps_per_s") or 0 for m in ("start_workflow", "queue")),
                default=0,
            )
            or None
        )
        table.add(
            "2",
            f"steps/s ({r['W']} workflows, K={r['K']})",
            r["steps_per_s"],
            d_best,
            ratio=ratio_hi(r["steps_per_s"], d_best),
            target="≥ 50x DBOS",
            met=None if d_best is None else r["steps_per_s"] >= 50 * d_best,
        )
        table.add(
            "2",
            "activity latency p50 / p99",
            f"{r['p50_us'] / 1000:,.2f} / {r['p99_us'] / 1000:,.1f} ms",
            None,
        )
        table.add(
            "2", "time to start all (main thread)", r["start_phase_s"], None, unit="s", digits=2
        )
        vs_plain("2", "per activity (wall / steps)", 1e6 / r["steps_per_s"])
        total = r["W"] * r["K"] / r["steps_per_s"]
        table.notes.append(
            f"2: the start loop on the caller's thread took {r['start_phase_s']:.2f} s of the "
            f"{total:.2f} s: every `start()` creates the run's journal (unsynced) and waits "
            "for its record in the write-ahead log to be synced before returning, one after "
            "another, while 32 run threads contend for the GIL; their syncs and the starts' "
            "share the log's group commits."
        )
        table.notes.append(
            "2: `python bench/start_profile.py` splits one `start()` by system call (the "
            "journal's `open` and `link`, the log's synced `pwritev` when this thread leads "
            "the group commit). A journal a power cut leaves nameless is put back by the "
            "log's replay, and `gc` logs each deletion, so a replay does not undo it."
        )
        if dc:
            table.notes.append(
                f"2: DBOS's figure is the better of start_workflow and a queue "
                f"(concurrency {dc.get('queue_worker_concurrency')}), at W={dc.get('W')}, "
                f"{max(3, sizes.reps // 2)} reps each."
            )
    if "3" in res:
        r = res["3"]
        da = d_seq.get("us_per_step_all_in")
        table.add(
            "3",
            f"µs per activity, all-in (W={r['W']}, K={r['K']})",
            r["us_per_step_all_in"],
            da,
            ratio=ratio_lo(r["us_per_step_all_in"], da),
            target="≤ 30 µs",
            met=r["us_per_step_all_in"] <= 30,
            unit="µs",
        )
        table.add(
            "3",
            f"µs per activity in long runs (W={r['long_W']}, K={r['long_K']:,})",
            r["us_per_step_long_runs"],
            None,
            target="≤ 8 µs",
            met=r["us_per_step_long_runs"] <= 8,
            unit="µs",
        )
        long_reps(table, "3", r)
        dm = d_seq.get("us_per_step_marginal")
        table.add(
            "3",
            "µs per activity, marginal (K vs K=0)",
            r["us_per_step_marginal"],
            dm,
            ratio=ratio_lo(r["us_per_step_marginal"], dm),
            unit="µs",
        )
        table.add(
            "3",
            "µs per workflow with K=0",
            r["us_per_workflow_K0"],
            d_seq.get("us_per_workflow_K0"),
            ratio=ratio_lo(r["us_per_workflow_K0"], d_seq.get("us_per_workflow_K0")),
            unit="µs",
        )
        vs_plain("3", "per activity, long runs", r["us_per_step_long_runs"])
        table.notes.append(
            "3: DBOS has no flush mode; its column is its default (synchronous=FULL) run. "
            "The target is judged on the all-in figure of the W=300, K=10 workload; the long-run "
            "row shows the activity's own cost with the per-workflow cost spread thin. The "
            "marginal figure (K=10 minus K=0 batches) is noisy: it subtracts two timings "
            f"dominated by fsyncs. Per workflow {r['us_per_workflow_K0']:,.0f} µs "
            f"(= {r['us_per_workflow_K0'] / r['K']:,.0f} µs per activity at K={r['K']}) in "
            "flush mode, which syncs nothing: most of it is creating the run's journal file "
            f"({mach.get('create_file_us', 0):.0f} µs to create an empty file in this folder "
            "on this machine at the start of the bench, "
            f"{raw.get('create_file_us_before', {}).get('3', 0):.0f} µs just before scenario 3), "
            "then the run's bookkeeping. On this disk (ext4 without a journal) creating a file "
            "costs ~300 µs instead of ~10 µs while the kernel writes back the metadata of "
            "thousands of files created or deleted ~30 s before (measured on 2026-11-25), "
            "which moved this all-in figure between 15 and 47 µs over runs of the bench: each "
            "scenario now starts after `os.sync()`, so it no longer pays for the previous "
            "one's files. The long-run row, one file per 1,000 activities, does not move."
        )
    if "4" in res:
        r = res["4"]
        drs = dbos.get("recovery") or []
        key = "spawn_to_last_step_s (recovery complete)"
        d = sc.med([x[key] for x in drs]) if drs else None
        d_re = max(x["re_executed_steps"] for x in drs) if drs else None
        rt = ratio_lo(r["spawn_to_last_step_s"], d)
        table.add(
            "4",
            f"spawn → run complete ({r['K']} activities, killed at {r['kill_at']})",
            r["spawn_to_last_step_s"],
            d,
            ratio=rt,
            target="≥ 5x DBOS",
            met=None if rt is None else rt >= 5,
            unit="s",
            digits=3,
        )
        table.add(
            "4",
            "activities run twice (max over reps)",
            r["re_executed_max"],
            d_re,
            target="≤ 1",
            met=r["re_executed_max"] <= 1,
            digits=0,
        )
        table.add(
            "4",
            "of which: interpreter + import intemporal",
            r["child_import_s"],
            None,
            unit="s",
            digits=3,
        )
        table.notes.append(
            f"4: intemporal {r['reps']} reps, DBOS {len(drs) or '—'} reps (each spawns two "
            "processes); the activity kills its own process inside activity kill_at, so "
            "exactly one activity is in flight."
        )
    if "5" in res:
        r = res["5"]
        table.add(
            "5",
            f"resume → next new activity ({r['completed_activities']:,} done)",
            r["resume_to_first_new_s"],
            None,
            target="≤ 0.5 s",
            met=r["resume_to_first_new_s"] <= 0.5,
            unit="s",
            digits=3,
        )
        table.add(
            "5",
            "same, from process spawn (interpreter + import)",
            r["spawn_to_first_new_s"],
            None,
            unit="s",
            digits=3,
        )
        table.notes.append(
            f"5: {r['reps']} reps, each a fresh process on a copy of the journal "
            f"({r['journal_bytes'] or 0:,} bytes)."
        )
    if "6" in res:
        r = res["6"]
        if not r.get("available"):
            table.add(
                "6",
                f"{sizes.wait_n:,} runs waiting for a signal",
                "not available yet",
                None,
                target="≤ 500 MB; wake p50 ≤ 50 ms",
            )
            table.notes.append("6: `intemporal.wait_for_signal` does not exist yet: not measured.")
        elif "error" in r:
            table.add(
                "6",
                f"{sizes.wait_n:,} runs waiting for a signal",
                "failed",
                None,
                target="≤ 500 MB",
                met=False,
            )
            table.notes.append(f"6: failed: {r['error']}")
        else:
            table.add(
                "6",
                f"RSS with {r['n']:,} runs waiting (threads={r['threads_option']})",
                r["rss_mb"],
                None,
                target="≤ 500 MB",
                met=r["rss_mb"] <= 500 and not r["not_waiting"],
                unit="MB",
            )
            table.add("6", "OS threads in the process", r["threads"], None, digits=0)
            p50 = r.get("wake_p50_ms")
            table.add(
                "6",
                "wake-up latency p50 / p99",
                "—" if p50 is None else f"{p50:,.1f} / {r['wake_p99_ms']:,.1f} ms",
                None,
                target="p50 ≤ 50 ms",
                met=p50 is not None and p50 <= 50 and not r["not_finished"],
            )
            table.notes.append(
                f"6: one rep; all waiting after {r['all_waiting_s']:.1f} s "
                f"({r['not_waiting']} never waiting), {r['woken']:,} woken, "
                f"{r['not_finished']} not finished."
            )
    if "7" in res:
        r = res["7"]
        if r["cli"]:
            table.add(
                "7",
                f"`intemporal list --limit 50`, {r['runs']:,} finished runs",
                r.get("cli_s"),
                None,
                target="≤ 1 s",
                met=bool(r.get("cli_correct")) and r["cli_s"] <= 1,
                unit="s",
                digits=3,
            )
        else:
            table.add(
                "7",
                f"Engine(store).list_runs(limit=50), {r['runs']:,} runs (process wall)",
                r["api_process_s"],
                None,
                target="≤ 1 s",
                met=r["api_correct"] and r["api_process_s"] <= 1,
                unit="s",
                digits=3,
            )
            table.notes.append(
                "7: `intemporal.cli` does not exist yet: timed `Engine(store).list_runs(limit=50)` "
                "in a fresh process instead (interpreter start included)."
            )
        table.add(
            "7", "Engine.list_runs(limit=50) call alone", r["api_list_s"], None, unit="s", digits=3
        )
        ours_imp = r["import_s"]
        d_imp = dbos.get("import_s")
        table.add(
            "7",
            '`python -c "import intemporal"` (vs `import dbos`)',
            ours_imp * 1e3,
            None if d_imp is None else d_imp * 1e3,
            ratio=ratio_lo(ours_imp, d_imp),
            target="≤ 150 ms",
            met=ours_imp <= 0.150,
            unit="ms",
        )
        table.notes.append(
            f"7: the store was written directly in the engine's journal format "
            f"({r['runs']:,} runs + lock files, {r['build_s']:.1f} s to build), runs created 0.1 s "
            f"apart; answers checked against the newest {sizes.list_limit}: "
            f"{'correct' if r['api_correct'] else 'WRONG'}. Import: median of "
            f"{sizes.import_reps} fresh interpreters; slowest imports (ms, cumulative): "
            + ", ".join(f"{n} {ms:.0f}" for n, ms in r["import_top_ms"][:5])
        )
    if "8" in res:
        import pg_bench

        pg_bench.tabulate(res["8"], table)
    return table


def render(raw: dict[str, Any]) -> str:
    """RESULTS.md: the command, the machine, the table, the notes and the raw figures."""
    table = tabulate(raw)
    mach, dbos, plain = raw["machine"], raw["dbos"], raw["plain"]
    why = raw.get("why_no_dbos", "" if dbos else "not measured")
    sizes = sc.Sizes(**raw["sizes"])
    command, elapsed = raw.get("command", "?"), raw.get("elapsed_s", 0.0)
    now = raw.setdefault("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` on {now}, in {elapsed:.0f} s"
        + (" — **quick smoke sizes: not the scenarios' figures**." if sizes.quick else "."),
        "",
        f"Machine: nproc {mach['nproc']}, filesystem {mach['filesystem']} "
        f"(stores in {mach.get('scratch', 'bench/.tmp')}), "
        f"Python {mach['python']}, {mach['platform']}; append + fdatasync of one line: "
        f"{mach['fdatasync_us']:.0f} µs (median of 200); one write + sync in place into a "
        f"preallocated file: {mach.get('inplace_sync_us', 0):.0f} µs (median of 200); "
        "creating an empty file: "
        f"{mach.get('create_file_us', 0):.0f} µs (median of 200); 1-minute load average "
        f"{num(mach['loadavg_start'], 2)} at the start, {num(mach['loadavg_end'], 2)} at the end "
        "(anything else running competes for the same cores and disk).",
        "",
    ]
    if dbos and not why:
        prag = dbos.get("pragmas") or {}
        pg = (raw["intemporal"].get("8") or {}).get("dbos") or {}
        version = dbos.get("version") or pg.get("version", "?")
        lines.append(
            f"Baseline: DBOS {version} on SQLite (scenario 8: on the same PostgreSQL server) "
            + (
                f"(journal_mode={prag.get('journal_mode')}, synchronous={prag.get('synchronous')}) "
                if prag
                else ""
            )
            + "from `../shared/bench/bench_dbos.py`, run in `bench/.venv-dbos` during the same run."
        )
    else:
        lines.append(f"Baseline: **DBOS not measured** — {why}. Ratios to plain Python below.")
    lines += [
        "",
        f"Medians over {sizes.reps} repetitions unless a note says otherwise. "
        "Ratio: how many times better intemporal's figure is (higher throughput or less time).",
        "",
        table.markdown(),
        "",
        f"Against plain Python ({plain['us_per_step']:.3f} µs per step, {plain['source']}):",
        "",
        "| scenario | figure | intemporal | slower than plain Python |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table.plain]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in table.notes]
    lines += [
        "",
        "<details><summary>raw figures (JSON)</summary>",
        "",
        "```json",
        json.dumps(raw, indent=1, default=str),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
