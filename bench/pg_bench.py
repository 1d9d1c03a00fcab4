"""Scenario 8 of `make bench`: the PostgreSQL store, side by side with DBOS on the same server.

    python bench/run.py --only postgres           # this scenario alone

One throwaway PostgreSQL server (`tests/pg_server.py`: `initdb` + `pg_ctl` in the bench's
temporary folder) runs with durable settings (fsync, synchronous_commit and
full_page_writes on), one database per measurement. On it, in this order:

- DBOS sequential and concurrent (`../shared/bench/bench_dbos.py --db-url`), when DBOS is
  installed (bench/.venv-dbos);
- sequential: W workflows of K steps one after another on one engine (`engine.run`);
- concurrent: W workflows started at once on one engine (threads=32), all waited for;
- scale-out: 1, 2 and 4 worker processes (`bench/pg_worker.py`) on one database, a client
  (`Engine(worker=False)`) enqueues W runs at once: steps/s from the first enqueue to the
  last completion; then it enqueues runs one at a time, spaced out, and the claim latency
  of each is its first step's start minus its `run_started` (one clock: one machine);
- takeover: two worker processes with a short lease; a run executing on one of them, that
  process is SIGKILLed, and the time until the other appends the run's next event is taken
  from the journal (each event names the engine that appended it: `owner`). Repeated.

Every figure is a median over repetitions with its min-max; ratios use DBOS's figures
from the same invocation.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import scenarios as sc
import workload

from intemporal import Engine, PostgresStore

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
import pg_server  # noqa: E402  (the tests' throwaway server)

WORKER = BENCH / "pg_worker.py"
SCALE = (1, 2, 4)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# -- the server --------------------------------------------------------------------------
class Server:
    """A durable throwaway server, one database per name asked for (`url`)."""

    def __init__(self, parent: Path) -> None:
        bindir = pg_server.find_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries: " + pg_server.INSTALL)
        os.chmod(parent, 0o755)  # the server runs as `nobody` when the bench runs as root
        self.pg = pg_server.start_server(bindir, durable=True, parent=parent)

    def url(self, name: str, create: bool = True) -> str:
        if create:
            with psycopg.connect(self.pg.dsn, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.pg.dsn.rsplit("/", 1)[0] + "/" + name

    def settings(self) -> dict[str, str]:
        names = ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        with psycopg.connect(self.pg.dsn, autocommit=True) as conn:
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]

    def close(self) -> None:
        pg_server.remove(self.pg)


# -- DBOS --------------------------------------------------------------------------------
def dbos_side(server: Server, py: Path, work: Path, sz: sc.Sizes, log: Any) -> dict[str, Any]:
    """DBOS's sequential and concurrent figures on its own databases of `server`."""
    import dbos_side as dbos

    out: dict[str, Any] = {}
    log("  DBOS on PostgreSQL, sequential ...")
    seq_args = ["seq", "--w", str(sz.pg_seq_w), "--k", str(sz.pg_seq_k), "--reps", str(sz.reps)]
    res = dbos.run(py, work, [*seq_args, "--db-url", server.url("dbos_seq", create=False)])
    out["version"], s = res.get("dbos"), res["sequential"]
    out["seq"] = {"steps_per_s": _per_s(s["reps_s"], s["W"] * s["K"]), "raw": s}
    log("  DBOS on PostgreSQL, concurrent ...")
    conc_args = ["conc", "--w", str(sz.pg_conc_w), "--k", str(sz.pg_conc_k)]
    conc_args += ["--reps", str(sz.pg_conc_reps * 2)]  # bench_dbos halves it
    res = dbos.run(py, work, [*conc_args, "--db-url", server.url("dbos_conc", create=False)])
    c = res["concurrent"]
    best = max(("start_workflow", "queue"), key=lambda m: c[m]["steps_per_s"])
    out["conc"] = {
        "steps_per_s": _per_s(c[best]["reps_s"], c["W"] * c["K"]),
        "how": best,
        "raw": c,
    }
    return out


def _per_s(seconds: list[float], work: int) -> dict[str, float]:
    return spread([work / s for s in seconds])


# -- intemporal on one engine ------------------------------------------------------------
def sequential(url: str, sz: sc.Sizes) -> dict[str, Any]:
    """W workflows of K steps, one after another (`engine.run`), `reps` times."""
    times = []
    with Engine(PostgresStore(url), threads=8) as engine:
        engine.run(workload.seq_workflow, sz.pg_seq_k, 0)  # warm-up: connections, schema
        for _ in range(sz.reps):
            t0 = time.perf_counter()
            for j in range(sz.pg_seq_w):
                engine.run(workload.seq_workflow, sz.pg_seq_k, j)
            times.append(time.perf_counter() - t0)
    return {
        "W": sz.pg_seq_w,
        "K": sz.pg_seq_k,
        "reps_s": times,
        "steps_per_s": _per_s(times, sz.pg_seq_w * sz.pg_seq_k),
    }


def concurrent(url: str, sz: sc.Sizes) -> dict[str, Any]:
    """W workflows started at once on one engine (threads=32), all waited for."""
    times = []
    with Engine(PostgresStore(url), threads=32) as engine:
        engine.run(workload.seq_workflow, sz.pg_conc_k, 0)
        for _ in range(sz.pg_conc_reps):
            t0 = time.perf_counter()
            handles = [
                engine.start(workload.seq_workflow, sz.pg_conc_k, j) for j in range(sz.pg_conc_w)
            ]
            for h in handles:
                h.result(timeout=600)
            times.append(time.perf_counter() - t0)
    work = sz.pg_conc_w * sz.pg_conc_k
    return {
        "W": sz.pg_conc_w,
        "K": sz.pg_conc_k,
        "reps_s": times,
        "steps_per_s": _per_s(times, work),
    }


# -- worker processes --------------------------------------------------------------------
class Workers:
    """`n` worker processes (`pg_worker.py`) serving `url`; `ids` maps engine id -> process."""

    def __init__(self, url: str, n: int, threads: int = 16, lease: float = 15.0) -> None:
        self.url, self.options = url, ["--threads", str(threads), "--lease", str(lease)]
        self.ids: dict[str, subprocess.Popen[str]] = {}
        for _ in range(n):
            self.spawn()

    def spawn(self) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), self.url, *self.options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=sc.child_env(),
            cwd=REPO,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if line[:1] != ["serving"]:
            proc.kill()
            raise RuntimeError(f"a bench worker did not start: {line}")
        self.ids[line[1]] = proc
        return line[1]

    def kill(self, engine_id: str) -> None:
        proc = self.ids.pop(engine_id)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.ids.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.ids.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_done(url: str, n: int, timeout: float = 600) -> float:
    """Wait until `n` runs of the database are completed; the epoch time of the last."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            done, last = conn.execute(
                "SELECT count(*), max(updated_at) FROM intemporal.runs WHERE status = 'completed'"
            ).fetchone()  # type: ignore[misc]
            if done >= n:
                return float(last)
            time.sleep(0.02)
    raise RuntimeError(f"the runs did not complete within {timeout} s")


def _first_step_delay(events: list[dict[str, Any]]) -> float | None:
    """Seconds from a run's `run_started` to the start of its first step."""
    for ev in events:
        if ev["type"] == "activity_completed":
            return float(ev.get("started", ev["ts"])) - float(events[0]["ts"])
    return None


def scale_out(server: Server, n: int, sz: sc.Sizes) -> dict[str, Any]:
    """Throughput and claim latency with `n` worker processes on one database."""
    url = server.url(f"scale{n}")
    store = PostgresStore(url)  # the schema, made before the workers race for it
    workers = Workers(url, n)
    try:
        with Engine(store, worker=False) as client:
            t0 = time.time()
            for j in range(sz.pg_scale_w):
                client.start(workload.seq_workflow, sz.pg_scale_k, j)
            enqueued = time.time() - t0
            last = _wait_done(url, sz.pg_scale_w)
            owners = {
                e.get("owner") for info in store.list_runs() for e in store.read(info.run_id)[1:2]
            }
            ids = []
            for j in range(sz.pg_latency_n):  # one at a time: the latency of an idle worker
                ids.append(client.start(workload.seq_workflow, sz.pg_scale_k, j).run_id)
                time.sleep(sz.pg_latency_gap)
            _wait_done(url, sz.pg_scale_w + sz.pg_latency_n)
            delays = [_first_step_delay(store.read(r)) for r in ids]
    finally:
        workers.close()
        store.close()
    lat = sorted(d for d in delays if d is not None)
    return {
        "workers": n,
        "W": sz.pg_scale_w,
        "K": sz.pg_scale_k,
        "steps_per_s": sz.pg_scale_w * sz.pg_scale_k / (last - t0),
        "enqueue_s": enqueued,
        "workers_that_took_runs": len(owners - {None}),
        "claim_latency_ms": {"p50": sc.pct(lat, 0.5) * 1e3, "p99": sc.pct(lat, 0.99) * 1e3},
        "latency_runs": len(lat),
    }


def takeover(server: Server, sz: sc.Sizes, log: Any) -> dict[str, Any]:
    """Kill the worker executing a run, `pg_kills` times: how long until the other continues."""
    url = server.url("takeover")
    store = PostgresStore(url)
    workers = Workers(url, 2, threads=4, lease=sz.pg_lease)
    times, doubled, overlaps = [], 0, 0
    try:
        with Engine(store, worker=False) as client:
            for i in range(sz.pg_kills):
                run_id = f"takeover-{i}"
                client.start(workload.slow_workflow, 100_000, 0.01, run_id=run_id)
                owner = _wait_owner(store, run_id, steps=5)
                killed_at = time.time()
                workers.kill(owner)
                events = _wait_event(
                    store, run_id, lambda e, o=owner: e.get("owner") not in (o, None)
                )
                times.append(events[-1]["ts"] - killed_at)
                client.cancel(run_id)
                seqs = [e["seq"] for e in store.read(run_id) if e["type"] == "activity_completed"]
                doubled += len(seqs) - len(set(seqs))
                overlaps += not _owners_in_turn(store.read(run_id))
                workers.spawn()
    finally:
        workers.close()
        store.close()
    log(f"  takeover after SIGKILL: {', '.join(f'{t:.2f}' for t in times)} s")
    return {
        "kills": len(times),
        "lease_s": sz.pg_lease,
        "seconds": times,
        "spread": spread(times),
        "p90": sc.pct(times, 0.9),
        "steps_journaled_twice": doubled,
        "runs_with_owners_overlapping": overlaps,
    }


def _wait_owner(store: PostgresStore, run_id: str, steps: int) -> str:
    """The engine executing `run_id`, once it journaled `steps` steps."""
    events = _wait_event(store, run_id, lambda e: e.get("seq") == steps)
    return str(events[-1]["owner"])


def _wait_event(store: PostgresStore, run_id: str, test: Any, timeout: float = 60) -> list[Any]:
    """The journal of `run_id` up to its first event for which `test` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = store.read(run_id)
        for i, ev in enumerate(events):
            if test(ev):
                return events[: i + 1]
        time.sleep(0.01)
    raise RuntimeError(f"run {run_id!r}: the awaited event did not come within {timeout} s")


def _owners_in_turn(events: list[dict[str, Any]]) -> bool:
    """True if each engine's events form one block (no two engines wrote in turns)."""
    seen: list[str] = []
    for ev in events[1:]:
        owner = ev.get("owner")
        if owner and (not seen or seen[-1] != owner):
            if owner in seen:
                return False
            seen.append(owner)
    return True


# -- the scenario ------------------------------------------------------------------------
def measure(ctx: sc.Ctx, dbos_py: Path | None, log: Any = print) -> dict[str, Any]:
    """Scenario 8: every measurement above on one durable throwaway server."""
    if pg_server.find_bindir() is None:
        return {"skipped": "no PostgreSQL server binaries: " + pg_server.INSTALL}
    server = Server(ctx.tmp)
    sz = ctx.sizes
    try:
        out: dict[str, Any] = {"server": server.settings(), "sizes": _sizes(sz)}
        if dbos_py is not None:
            work = ctx.tmp / "dbos-pg"
            work.mkdir(exist_ok=True)
            out["dbos"] = dbos_side(server, dbos_py, work, sz, log)
        log("  intemporal sequential ...")
        out["seq"] = sequential(server.url("seq"), sz)
        log("  intemporal concurrent ...")
        out["conc"] = concurrent(server.url("conc"), sz)
        out["scale"] = []
        for n in SCALE:
            log(f"  intemporal scale-out, {n} worker process(es) ...")
            out["scale"].append(scale_out(server, n, sz))
        log("  intemporal takeover after SIGKILL ...")
        out["takeover"] = takeover(server, sz, log)
    finally:
        server.close()
    return out


def _sizes(sz: sc.Sizes) -> dict[str, Any]:
    return {k: v for k, v in sz.__dict__.items() if k.startswith("pg_") or k == "reps"}


# -- the table ---------------------------------------------------------------------------
def _cell(s: dict[str, float], digits: int = 0, unit: str = "") -> str:
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}-{f.format(s['max'])})"


def tabulate(r: dict[str, Any], table: Any) -> None:
    """Add scenario 8's rows and notes to `table` (bench/run.py's `Table`)."""
    if "skipped" in r:
        table.add("8", "not measured", r["skipped"])
        return
    d, z = r.get("dbos") or {}, r["sizes"]
    for key, what in (("seq", "sequential"), ("conc", "concurrent, one engine, threads=32")):
        ours, theirs = r[key]["steps_per_s"], (d.get(key) or {}).get("steps_per_s")
        ratio = ours["median"] / theirs["median"] if theirs else None
        table.add(
            "8",
            f"{what}: steps/s (W={r[key]['W']:,}, K={r[key]['K']})",
            _cell(ours),
            _cell(theirs) if theirs else None,
            ratio=ratio,
            target="≥ 3x DBOS",
            met=None if ratio is None else ratio >= 3,
        )
    for s in r["scale"]:
        lat = s["claim_latency_ms"]
        table.add(
            "8",
            f"scale-out, {s['workers']} worker process(es): steps/s (W={s['W']:,}, K={s['K']})"
            " / claim latency p50, p99",
            f"{s['steps_per_s']:,.0f} / {lat['p50']:,.1f}, {lat['p99']:,.1f} ms",
        )
    t = r["takeover"]
    table.add(
        "8",
        f"takeover after SIGKILL, lease {t['lease_s']:g} s: median (min-max), {t['kills']} kills",
        _cell(t["spread"], 2, " s"),
        target=f"≤ lease + 2 s ({t['lease_s'] + 2:g} s)",
        met=t["spread"]["max"] <= t["lease_s"] + 2,
    )
    srv = r["server"]
    table.notes.append(
        f"8: one throwaway PostgreSQL {srv['server_version']} server (fsync={srv['fsync']}, "
        f"synchronous_commit={srv['synchronous_commit']}, full_page_writes="
        f"{srv['full_page_writes']}) on the bench's disk, one database per measurement, "
        "DBOS and intemporal one after the other in this invocation; figures are medians "
        f"over {z['reps']} repetitions (concurrent: {z['pg_conc_reps']}) with min-max in "
        "brackets; the ratio divides the medians. Clients, workers and the server share the "
        "machine's cores (and any other work running on them)."
        + (
            f" DBOS {d.get('version', '?')}'s concurrent figure is the better of "
            f"start_workflow and a queue (it used {d['conc']['how']})."
            if d.get("conc")
            else " DBOS was not measured."
        )
    )
    table.notes.append(
        f"8: scale-out: a client enqueues {z['pg_scale_w']:,} runs at once to N worker "
        "processes (bench/pg_worker.py, threads=16 each): steps/s from the first enqueue to "
        f"the last completion; then {z['pg_latency_n']} runs one every "
        f"{z['pg_latency_gap'] * 1000:.0f} ms, whose claim latency is the start of the first "
        "step minus the run's `run_started` (one machine, one clock). Every worker took runs: "
        + ", ".join(f"{s['workers']}: {s['workers_that_took_runs']}" for s in r["scale"])
        + "."
    )
    table.notes.append(
        f"8: takeover: two worker processes with lease={t['lease_s']:g} s (renewed by each "
        "append and each third of it, so a busy run is taken over about one lease after the "
        "kill); "
        "the one executing a run of 10 ms steps is SIGKILLed after 5 steps, and the time runs "
        "from the kill to the other's first event in the journal (its `owner` field names "
        f"the engine). p90 {t['p90']:.2f} s; all: "
        + ", ".join(f"{x:.2f}" for x in t["seconds"])
        + f" s. Steps journaled twice: {t['steps_journaled_twice']}; runs where two engines "
        f"wrote in turns: {t['runs_with_owners_overlapping']}. DBOS has no counterpart: it "
        "recovers a dead executor's workflows only in a process with the same executor id."
    )
