"""The bench's child processes: each prints one JSON object on its last line of output.

    python bench/child.py rec-run --store S --run-id R --k 1000 --side F   (BENCH_KILL_AT=500)
    python bench/child.py rec-recover --store S
    python bench/child.py replay-build --store S --run-id R --k 10000       (BENCH_KILL_AT=10000)
    python bench/child.py replay-resume --store S --run-id R --k 10000
    python bench/child.py waiting --store S --n 10000 --threads 16 --deadline 120
    python bench/child.py list --store S --limit 50

Timings start before `import intemporal` where the import is part of what is measured.
"""

import time

T_START = time.perf_counter()
T_START_WALL = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402


def _proc_status() -> dict[str, int]:
    """VmRSS (kB) and Threads of this process, from /proc (Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def rec_run(a: argparse.Namespace) -> dict:
    import workload

    import intemporal

    with intemporal.Engine(a.store, threads=2) as engine:
        engine.run(workload.long_workflow, a.k, 1, a.side, run_id=a.run_id)
    return {"completed": True}  # only when BENCH_KILL_AT is past the end


def rec_recover(a: argparse.Namespace) -> dict:
    import workload  # noqa: F401 - registers the workflows this process resumes

    import intemporal

    t_import = time.perf_counter()
    with intemporal.Engine(a.store, threads=8) as engine:
        handles = engine.recover()
        results = [h.result(timeout=600) for h in handles]
    t_done = time.perf_counter()
    return {
        "import_s": t_import - T_START,
        "recover_to_done_s": t_done - t_import,
        "runs": len(handles),
        "results": results,
    }


def replay_build(a: argparse.Namespace) -> dict:
    import workload

    import intemporal

    with intemporal.Engine(a.store, threads=2, durability="flush") as engine:
        engine.run(workload.long_workflow, a.k + 1, 1, None, run_id=a.run_id)
    return {"completed": True}


def replay_resume(a: argparse.Namespace) -> dict:
    import workload

    import intemporal

    workload.MARKS["at"] = a.k
    t0 = time.perf_counter()
    with intemporal.Engine(a.store, threads=2) as engine:
        handle = engine.resume(a.run_id)
        t_resumed = time.perf_counter()
        result = handle.result(timeout=600)
    t_done = time.perf_counter()
    first = workload.MARKS.get("first_new")
    return {
        "import_s": t0 - T_START,
        "resume_call_s": t_resumed - t0,
        "resume_to_first_new_s": None if first is None else first - t0,
        "process_start_to_first_new_s": None if first is None else first - T_START,
        "first_new_wall": workload.MARKS.get("first_new_wall"),
        "resume_to_done_s": t_done - t0,
        "result": result,
    }


def waiting(a: argparse.Namespace) -> dict:
    import workload

    import intemporal

    if not hasattr(intemporal, "wait_for_signal"):
        return {"available": False}
    before = _proc_status()
    deadline = time.monotonic() + a.deadline
    out: dict = {"available": True, "n": a.n, "threads_option": a.threads}
    with intemporal.Engine(a.store, threads=a.threads) as engine:
        t0 = time.perf_counter()
        handles = [
            engine.start(workload.waiting_workflow, i, run_id=f"wait-{i}") for i in range(a.n)
        ]
        out["start_all_s"] = time.perf_counter() - t0
        pending = list(handles)
        while pending and time.monotonic() < deadline:
            pending = [h for h in pending if h.status() is not intemporal.RunStatus.WAITING]
            if pending:
                time.sleep(0.05)
        out["all_waiting_s"] = time.perf_counter() - t0
        out["not_waiting"] = len(pending)
        during = _proc_status()
        out["rss_mb"] = during.get("VmRSS", 0) / 1024
        out["rss_before_mb"] = before.get("VmRSS", 0) / 1024
        out["threads"] = during.get("Threads", 0)
        sent: dict[str, float] = {}
        t1 = time.perf_counter()
        for i, h in enumerate(handles):
            sent[h.run_id] = time.time()
            h.signal("go", i)
        out["signal_all_s"] = time.perf_counter() - t1
        failed = 0
        for h in handles:
            try:
                h.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                failed += 1
        out["not_finished"] = failed
        lat = sorted(workload.WOKE[r] - sent[r] for r in sent if r in workload.WOKE)
        out["woken"] = len(lat)
        if lat:
            out["wake_p50_ms"] = statistics.median(lat) * 1e3
            out["wake_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
        out["peak_rss_mb"] = _proc_status().get("VmHWM", 0) / 1024
    return out


def list_runs(a: argparse.Namespace) -> dict:
    import intemporal

    t0 = time.perf_counter()
    with intemporal.Engine(a.store, threads=1) as engine:
        runs = engine.list_runs(limit=a.limit)
    t1 = time.perf_counter()
    return {
        "import_s": t0 - T_START,
        "list_s": t1 - t0,
        "run_ids": [r.run_id for r in runs],
        "statuses": sorted({str(r.status) for r in runs}),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "mode",
        choices=["rec-run", "rec-recover", "replay-build", "replay-resume", "waiting", "list"],
    )
    ap.add_argument("--store", required=True)
    ap.add_argument("--run-id")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--side")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--limit", type=int, default=50)
    a = ap.parse_args()
    fn = {
        "rec-run": rec_run,
        "rec-recover": rec_recover,
        "replay-build": replay_build,
        "replay-resume": replay_resume,
        "waiting": waiting,
        "list": list_runs,
    }[a.mode]
    out = fn(a)
    print(json.dumps(out, default=str), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: not part of any measured figure


if __name__ == "__main__":
    main()
