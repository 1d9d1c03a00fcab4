"""intemporal's side of each benchmark scenario; every function returns a dict of figures.

The scenario numbers follow the performance issue: 1 sequential durable, 2 concurrent
durable, 3 flush durability, 4 recovery, 5 replay, 6 waiting at scale, 7 CLI and import.
Child processes run `bench/child.py` with the repo on PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workload

import intemporal
from intemporal.store.file import dumps

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CHILD = BENCH / "child.py"


@dataclass
class Sizes:
    """How big each scenario is; `quick()` gives the smoke-test sizes."""

    reps: int = 5
    seq_w: int = 300
    seq_k: int = 10
    long_w: int = 5
    long_k: int = 1000
    conc_w: int = 1000
    conc_k: int = 10
    conc_threads: int = 32
    rec_k: int = 1000
    rec_kill: int = 500
    rec_reps: int = 5
    replay_k: int = 10_000
    replay_reps: int = 5
    wait_n: int = 10_000
    wait_threads: int = 16
    wait_deadline: float = 300.0
    list_n: int = 100_000
    list_limit: int = 50
    import_reps: int = 5
    plain_w: int = 200_000
    pg_seq_w: int = 300  # scenario 8, PostgreSQL (bench/pg_bench.py)
    pg_seq_k: int = 10
    pg_conc_w: int = 1000
    pg_conc_k: int = 10
    pg_conc_reps: int = 3
    pg_scale_w: int = 1000
    pg_scale_k: int = 10
    pg_latency_n: int = 200
    pg_latency_gap: float = 0.02
    pg_kills: int = 10
    pg_lease: float = 2.0
    quick: bool = False

    @classmethod
    def quick_sizes(cls) -> Sizes:
        return cls(
            reps=3,
            seq_w=20,
            seq_k=3,
            long_w=2,
            long_k=100,
            conc_w=40,
            conc_k=3,
            rec_k=60,
            rec_kill=30,
            rec_reps=1,
            replay_k=500,
            replay_reps=1,
            wait_n=100,
            wait_deadline=15.0,
            list_n=1000,
            import_reps=3,
            plain_w=20_000,
            pg_seq_w=20,
            pg_seq_k=3,
            pg_conc_w=40,
            pg_conc_k=3,
            pg_conc_reps=1,
            pg_scale_w=20,
            pg_scale_k=3,
            pg_latency_n=5,
            pg_latency_gap=0.01,
            pg_kills=1,
            pg_lease=1.0,
            quick=True,
        )


def settle() -> None:
    """Write back now what earlier work left dirty (`os.sync`), before a measurement.

    On the bench's disk (ext4 without a journal, mounted with `discard`) creating a file
    cost ~150-300 µs instead of ~10 µs for several seconds after thousands of files were
    deleted, and while the kernel wrote back thousands of new ones ~30 s after they were
    made (measured on 2026-11-25). So no scenario pays for another's files: stores are
    set aside (`Ctx.drop`) and deleted only when the bench ends, and each scenario starts
    after this sync. Its own files a scenario still pays for.
    """
    if hasattr(os, "sync"):
        os.sync()


@dataclass
class Ctx:
    """Where a bench run keeps its temporary stores, and how big it is."""

    tmp: Path
    sizes: Sizes
    log: Any = print
    notes: list[str] = field(default_factory=list)
    dropped: int = 0

    def store(self, name: str) -> Path:
        path = self.tmp / name
        self.drop(path)
        return path

    def drop(self, path: Path) -> None:
        """Set `path` aside, to be deleted when the whole bench ends (see `settle`)."""
        if path.exists():
            trash = self.tmp / ".trash"
            trash.mkdir(exist_ok=True)
            self.dropped += 1
            path.rename(trash / f"{self.dropped}-{path.name}")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(BENCH)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.update(extra)
    return env


def run_child(
    mode: str, *args: str, timeout: float = 600, expect_kill: bool = False, **env: str
) -> dict[str, Any]:
    """Run `child.py mode args...`; return its JSON (or {} for a child that was SIGKILLed)."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), mode, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
        cwd=REPO,
    )
    if expect_kill:
        if proc.returncode != -9:
            raise RuntimeError(
                f"child {mode} should have been killed, exit {proc.returncode}:\n{proc.stderr[-2000:]}"
            )
        return {}
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def med(values: list[float]) -> float:
    return statistics.median(values)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


# -- 1 and 3: sequential -------------------------------------------------------------------
def sequential(ctx: Ctx, durability: str) -> dict[str, Any]:
    """W workflows of K activities, one after another; K=0 batches give the per-workflow cost."""
    sz = ctx.sizes
    w, k = sz.seq_w, sz.seq_k
    store = ctx.store(f"seq-{durability}")
    times_k, times_0 = [], []
    with intemporal.Engine(store, threads=4, durability=durability) as engine:
        engine.run(workload.seq_workflow, k, -1)  # warm-up

        def batch(kk: int) -> float:
            t0 = time.perf_counter()
            for j in range(w):
                engine.run(workload.seq_workflow, kk, j)
            return time.perf_counter() - t0

        for _ in range(sz.reps):
            times_k.append(batch(k))
        for _ in range(sz.reps):
            times_0.append(batch(0))
        # long runs: the per-workflow cost spread over many activities, beside one sync in
        # place measured just before (this disk's latency drifts over minutes)
        inplace = inplace_sync_us(ctx, 100) if durability == "fsync" else None
        times_long, cpu_long = [], []
        for _ in range(sz.reps):
            t0, c0 = time.perf_counter(), time.process_time()  # CPU: every thread's
            for j in range(sz.long_w):
                engine.run(workload.seq_workflow, sz.long_k, j)
            times_long.append(time.perf_counter() - t0)
            cpu_long.append(time.process_time() - c0)
        fan = fan_out_syncs(engine, runs=3 if sz.quick else 20)
        fan.update(seq_syncs(engine, k, runs=3 if sz.quick else 20))
    ctx.drop(store)
    t_k, t_0 = med(times_k), med(times_0)
    return {
        "long_W": sz.long_w,
        "long_K": sz.long_k,
        "us_per_step_long_runs": med(times_long) / (sz.long_w * sz.long_k) * 1e6,
        "us_per_step_long_runs_reps": [
            round(t / (sz.long_w * sz.long_k) * 1e6, 1) for t in times_long
        ],
        "cpu_us_per_step_long_runs_reps": [
            round(t / (sz.long_w * sz.long_k) * 1e6, 1) for t in cpu_long
        ],
        **fan,
        "inplace_sync_us": inplace,
        "W": w,
        "K": k,
        "reps": sz.reps,
        "reps_s": [round(t, 3) for t in times_k],
        "steps_per_s": w * k / t_k,
        "us_per_step_all_in": t_k / (w * k) * 1e6,
        "us_per_workflow_K0": t_0 / w * 1e6,
        "us_per_step_marginal": (t_k - t_0) / (w * k) * 1e6,
    }


def syncs_per_run(engine: Any, workflow: Any, n: int, runs: int) -> list[int]:
    """The syncs of the store's write-ahead log in each of `runs` runs of `workflow(n, j)`
    ([] without a log)."""
    log = getattr(engine.store, "_wal", None)
    if log is None:
        return []
    counts = []
    for j in range(runs):
        before = log.syncs
        engine.run(workflow, n, j)
        counts.append(log.syncs - before)
    return counts


def fan_out_syncs(engine: Any, n: int = 10, runs: int = 20) -> dict[str, Any]:
    """Syncs per run of `workload.fan_out_workflow` (submit `n` activities, join them,
    return): counted by the store's write-ahead log (max over `runs` runs)."""
    counts = syncs_per_run(engine, workload.fan_out_workflow, n, runs)
    if not counts:
        return {}
    return {"fan_out_n": n, "fan_out_syncs_max": max(counts), "fan_out_syncs_med": med(counts)}


def seq_syncs(engine: Any, k: int, runs: int = 20) -> dict[str, Any]:
    """Syncs per run of `workload.seq_workflow` (`k` activities in a row), by `engine.run`:
    counted by the store's write-ahead log (max over `runs` runs)."""
    counts = syncs_per_run(engine, workload.seq_workflow, k, runs)
    return {"seq_syncs_max": max(counts)} if counts else {}


# -- 2: concurrent -------------------------------------------------------------------------
def concurrent(ctx: Ctx) -> dict[str, Any]:
    """W workflows started at once on `threads=32`; activity latency seen from the workflow."""
    sz = ctx.sizes
    w, k = sz.conc_w, sz.conc_k
    totals, starts, p50s, p99s = [], [], [], []
    store = ctx.store("conc")
    for rep in range(sz.reps):
        with intemporal.Engine(store, threads=sz.conc_threads, durability="fsync") as engine:
            engine.run(workload.seq_workflow, k, -1)  # warm-up: threads, imports
            workload.LATENCIES.clear()
            workload.TIMING = True
            try:
                t0 = time.perf_counter()
                handles = [engine.start(workload.seq_workflow, k, rep * w + j) for j in range(w)]
                t1 = time.perf_counter()
                for h in handles:
                    h.result(timeout=600)
                t2 = time.perf_counter()
            finally:
                workload.TIMING = False
        lat = list(workload.LATENCIES)
        totals.append(t2 - t0)
        starts.append(t1 - t0)
        p50s.append(pct(lat, 0.5) * 1e6)
        p99s.append(pct(lat, 0.99) * 1e6)
    ctx.drop(store)
    t = med(totals)
    return {
        "W": w,
        "K": k,
        "threads": sz.conc_threads,
        "reps": sz.reps,
        "reps_s": [round(x, 3) for x in totals],
        "start_phase_s": med(starts),
        "steps_per_s": w * k / t,
        "p50_us": med(p50s),
        "p99_us": med(p99s),
    }


# -- 4: recovery ---------------------------------------------------------------------------
def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def recovery(ctx: Ctx) -> dict[str, Any]:
    """A K-activity run SIGKILLed inside activity `kill` (after `kill` completed), then
    a fresh process recovers it: spawn-to-last-activity time and activities run twice."""
    sz = ctx.sizes
    runs = []
    for rep in range(sz.rec_reps):
        store = ctx.store(f"rec-{rep}")
        side = ctx.tmp / f"rec-{rep}.side"
        side.unlink(missing_ok=True)
        run_child(
            "rec-run",
            "--store",
            str(store),
            "--run-id",
            "rec-wf",
            "--k",
            str(sz.rec_k),
            "--side",
            str(side),
            expect_kill=True,
            BENCH_KILL_AT=str(sz.rec_kill),
        )
        before = _lines(side)
        t0_ns = time.time_ns()
        t0 = time.perf_counter()
        out = run_child("rec-recover", "--store", str(store))
        wall = time.perf_counter() - t0
        after = _lines(side)[len(before) :]
        if not after or out.get("runs") != 1:
            raise RuntimeError(f"recovery ran nothing: {out}")
        idx_before = {int(x.split()[0]) for x in before}
        idx_after = [int(x.split()[0]) for x in after]
        runs.append(
            {
                "side_effects_before_kill": len(before),
                "re_executed": len(before) + len(after) - sz.rec_k,
                "re_executed_indices": sorted(idx_before & set(idx_after)),
                "spawn_to_last_step_s": (int(after[-1].split()[1]) - t0_ns) / 1e9,
                "spawn_to_first_new_step_s": (int(after[0].split()[1]) - t0_ns) / 1e9,
                "spawn_to_exit_s": wall,
                "child_import_s": out["import_s"],
                "recover_to_done_s": out["recover_to_done_s"],
            }
        )
        ctx.drop(store)
        side.unlink(missing_ok=True)
    return {
        "K": sz.rec_k,
        "kill_at": sz.rec_kill,
        "reps": sz.rec_reps,
        "spawn_to_last_step_s": med([r["spawn_to_last_step_s"] for r in runs]),
        "spawn_to_first_new_step_s": med([r["spawn_to_first_new_step_s"] for r in runs]),
        "child_import_s": med([r["child_import_s"] for r in runs]),
        "recover_to_done_s": med([r["recover_to_done_s"] for r in runs]),
        "re_executed_max": max(r["re_executed"] for r in runs),
        "runs": runs,
    }


# -- 5: replay -----------------------------------------------------------------------------
def replay(ctx: Ctx) -> dict[str, Any]:
    """A run with N completed activities (built once, killed in activity N), resumed in a
    fresh process per rep from a copy of its journal: time to its next new activity."""
    sz = ctx.sizes
    n = sz.replay_k
    built = ctx.store("replay-built")
    run_child(
        "replay-build",
        "--store",
        str(built),
        "--run-id",
        "replay-wf",
        "--k",
        str(n),
        expect_kill=True,
        BENCH_KILL_AT=str(n),
    )
    journal = built / "replay-wf.jsonl"
    completed = sum(
        1 for line in journal.read_bytes().splitlines() if b"activity_completed" in line
    )
    reps = []
    for rep in range(sz.replay_reps):
        store = ctx.store(f"replay-{rep}")
        store.mkdir(mode=0o700)
        shutil.copy(journal, store / journal.name)
        t_spawn = time.time()
        out = run_child(
            "replay-resume", "--store", str(store), "--run-id", "replay-wf", "--k", str(n)
        )
        if out.get("resume_to_first_new_s") is None:
            raise RuntimeError(f"the resumed run never reached activity {n}: {out}")
        out["spawn_to_first_new_s"] = out["first_new_wall"] - t_spawn
        reps.append(out)
        ctx.drop(store)
    size = journal.stat().st_size
    ctx.drop(built)
    return {
        "completed_activities": completed,
        "journal_bytes": size,
        "reps": sz.replay_reps,
        "resume_to_first_new_s": med([r["resume_to_first_new_s"] for r in reps]),
        "spawn_to_first_new_s": med([r["spawn_to_first_new_s"] for r in reps]),
        "import_s": med([r["import_s"] for r in reps]),
    }


# -- 6: waiting at scale -------------------------------------------------------------------
def waiting(ctx: Ctx) -> dict[str, Any]:
    """N runs waiting for a signal on one engine (threads=16): RSS, threads, wake-up latency."""
    if not hasattr(intemporal, "wait_for_signal"):
        return {"available": False}
    sz = ctx.sizes
    store = ctx.store("waiting")
    try:
        out = run_child(
            "waiting",
            "--store",
            str(store),
            "--n",
            str(sz.wait_n),
            "--threads",
            str(sz.wait_threads),
            "--deadline",
            str(sz.wait_deadline),
            timeout=sz.wait_deadline + 120,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        out = {"available": True, "error": str(exc).strip().splitlines()[-1][:300]}
    ctx.drop(store)
    return out


# -- 7: list over a big store, and import time ----------------------------------------------
def build_store(ctx: Ctx, root: Path, n: int, spacing: float = 0.1) -> list[str]:
    """Write `n` finished runs straight into `root`, in the engine's own journal format.

    The format is copied from a real run executed by the engine (so it follows the engine
    as it evolves); each copy gets its own run id and times, runs created `spacing` s
    apart and ending in the past, the file's mtime set to its last event (as the engine's
    appends leave it), and a lock file beside it, as every executed run has.
    Returns the run ids, oldest first.
    """
    sample = ctx.store("list-sample")
    with intemporal.Engine(sample, threads=1, durability="flush") as engine:
        engine.run(workload.seq_workflow, 10, 0, run_id="template")
        template = engine.history("template")
    ctx.drop(sample)
    t_first = template[0]["ts"]
    offsets = [ev["ts"] - t_first for ev in template]
    started = [ev.get("started", t_first) - t_first for ev in template]
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = time.time() - n * spacing - 60
    ids = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(n):
        rid = f"run-{i:06d}"
        created = round(base + i * spacing, 6)
        lines = []
        for ev, off, st in zip(template, offsets, started, strict=True):
            ev = dict(ev)
            ev["ts"] = round(created + off, 6)
            if "started" in ev:
                ev["started"] = round(created + st, 6)
            if "run_id" in ev:
                ev["run_id"] = rid
            lines.append(dumps(ev))
        path = root / f"{rid}.jsonl"
        fd = os.open(path, flags, 0o600)
        os.write(fd, b"".join(lines))
        os.close(fd)
        updated = created + offsets[-1]
        os.utime(path, (updated, updated))
        os.close(os.open(root / f"{rid}.lock", flags, 0o600))
        ids.append(rid)
    return ids


def cli_command(store: Path, limit: int) -> list[str] | None:
    """The `intemporal list` command line, or None while `intemporal.cli` does not exist."""
    if importlib.util.find_spec("intemporal.cli") is None:
        return None
    exe = Path(sys.executable).with_name("intemporal")
    if exe.exists():
        return [str(exe), "--store", str(store), "list", "--limit", str(limit)]
    prog = (
        "import sys; from intemporal.cli import main; sys.argv[0] = 'intemporal'; sys.exit(main())"
    )
    return [sys.executable, "-c", prog, "--store", str(store), "list", "--limit", str(limit)]


def list_big(ctx: Ctx) -> dict[str, Any]:
    """`intemporal list --limit 50` over N finished runs (or `Engine.list_runs` without a CLI)."""
    sz = ctx.sizes
    store = ctx.store("list")
    t0 = time.perf_counter()
    ids = build_store(ctx, store, sz.list_n)
    build_s = time.perf_counter() - t0
    expected = list(reversed(ids[-sz.list_limit :]))
    out: dict[str, Any] = {"runs": sz.list_n, "build_s": build_s, "reps": sz.reps}
    # in-process Engine.list_runs, in a fresh process per rep (checks the answer too)
    api, api_wall = [], []
    for _ in range(sz.reps):
        t = time.perf_counter()
        res = run_child("list", "--store", str(store), "--limit", str(sz.list_limit))
        api_wall.append(time.perf_counter() - t)
        api.append(res["list_s"])
        out["api_correct"] = res["run_ids"] == expected
    out["api_list_s"] = med(api)
    out["api_process_s"] = med(api_wall)
    cmd = cli_command(store, sz.list_limit)
    out["cli"] = cmd is not None
    if cmd is not None:
        walls = []
        for _ in range(sz.reps):
            t = time.perf_counter()
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=600
            )
            walls.append(time.perf_counter() - t)
            out["cli_exit"] = proc.returncode
            if proc.returncode != 0:
                out["cli_error"] = (proc.stderr or proc.stdout).strip()[-300:]
                break
        out["cli_s"] = med(walls)
        # the table may elide columns on a narrow terminal: check the answer with --json
        proc = subprocess.run(
            [*cmd, "--json"], capture_output=True, text=True, env=child_env(), cwd=REPO
        )
        try:
            got = [json.loads(line)["run_id"] for line in proc.stdout.splitlines() if line]
        except (ValueError, KeyError):
            got = []
        out["cli_correct"] = proc.returncode == 0 and got == expected
    ctx.drop(store)
    return out


def import_time(python: str, module: str, reps: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of `python -c "import module"` in a fresh process (after one warm-up)."""
    cmd = [python, "-c", f"import {module}"]
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
    walls = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
        walls.append(time.perf_counter() - t)
    return med(walls)


def import_top(module: str, n: int = 6) -> list[tuple[str, float]]:
    """The modules whose import costs most (cumulative ms), from `python -X importtime`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((parts[2].rstrip(), int(parts[1]) / 1000))
    top = sorted(rows, key=lambda r: -r[1])[:n]
    return [(name.strip(), ms) for name, ms in top]


# -- plain Python ceiling ------------------------------------------------------------------
def plain_python(ctx: Ctx) -> dict[str, Any]:
    """µs per step of the same workflow as plain Python (shared bench_plain.py, or inline)."""
    script = REPO.parent / "shared" / "bench" / "bench_plain.py"
    sz = ctx.sizes
    if script.exists():
        proc = subprocess.run(
            [sys.executable, str(script), "--w", str(sz.plain_w), "--k", "10", "--reps", "3"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode == 0:
            return {"source": "bench_plain.py", **json.loads(proc.stdout)}

    def step(i: int, x: int) -> dict[str, int]:
        return {"i": i, "x": x, "y": x + i}

    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        for j in range(sz.plain_w):
            acc = 0
            for i in range(10):
                acc += step(i, j)["y"]
        ts.append(time.perf_counter() - t0)
    return {"source": "inline loop", "us_per_step": med(ts) / (sz.plain_w * 10) * 1e6}


def _timed(ctx: Ctx, name: str, flags: int, each: Any, prepare: Any = None, n: int = 200) -> float:
    """Median µs of `each(fd, i)` over `n` calls on a scratch file opened with `flags`."""
    path = ctx.tmp / name
    fd = os.open(path, flags, 0o600)
    lat = []
    try:
        if prepare is not None:
            prepare(fd)
        for i in range(n):
            t0 = time.perf_counter()
            each(fd, i)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return med(lat) * 1e6


_LINE = b"x" * 149 + b"\n"


def fdatasync_us(ctx: Ctx, n: int = 200) -> float:
    """Median cost of appending a 150-byte line and fdatasync-ing it, on the bench's disk."""

    def append(fd: int, i: int) -> None:
        os.write(fd, _LINE)
        os.fdatasync(fd)

    return _timed(ctx, "probe.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, append, n=n)


def inplace_sync_us(ctx: Ctx, n: int = 200) -> float:
    """Median cost of one 150-byte write + sync in place into a preallocated, zero-filled
    file (`pwritev` with RWF_DSYNC where Linux has it): what one write-ahead log sync costs
    on the bench's disk, the floor of a durable activity."""
    dsync = getattr(os, "RWF_DSYNC", 0)

    def zeros(fd: int) -> None:
        os.write(fd, bytes(1 << 20))
        os.fsync(fd)

    def in_place(fd: int, i: int) -> None:
        if dsync:
            os.pwritev(fd, [_LINE], i * 150, dsync)
        else:
            os.pwrite(fd, _LINE, i * 150)
            os.fdatasync(fd)

    return _timed(ctx, "probe-inplace.bin", os.O_RDWR | os.O_CREAT, in_place, zeros, n)


def create_file_us(ctx: Ctx, n: int = 200) -> float:
    """Median cost of creating (and closing) one empty file in the bench's directory.

    Every run creates one journal file; on some machines (a watched folder, say) creating
    a file costs far more than writing one, which no engine-level change can avoid.
    """
    folder = ctx.tmp / "create-probe"
    folder.mkdir(exist_ok=True)
    lat = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            os.close(os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            lat.append(time.perf_counter() - t0)
    finally:
        ctx.drop(folder)
    return med(lat) * 1e6
