"""The PostgreSQL store end to end: URLs everywhere a store is named, its schema's version,
credentials never printed, a database that is not there, and workers that die or stall.

The store contract (tests/test_store_contract.py) and the engine suites (through the
`store` fixture of conftest.py) run on PostgreSQL too; this file holds what only a shared
database has. Each test gets a new database on the session's throwaway server.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_server import PgServer, free_port
from process_helpers import wait_until
from typer.testing import CliRunner

import intemporal
from intemporal import Engine, PostgresStore, RunStatus, StoreUnavailable
from intemporal.cli import app
from intemporal.store import Event, open_store
from intemporal.store.postgres_schema import VERSION


@intemporal.activity(name="pg.double")
def double(x: int) -> int:
    return 2 * x


@intemporal.workflow(name="pg.flow")
def flow(x: int) -> int:
    return double(x) + double(x + 1)


def cli(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None, **(env or {})})
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# -- a URL wherever a store is named ---------------------------------------------------------------
def test_a_url_names_the_store_for_the_engine_the_cli_and_intemporal_home(pg_dsn: str) -> None:
    # Given a run made by Engine(store="postgresql://...")
    with Engine(store=pg_dsn) as engine:
        assert isinstance(engine.store, PostgresStore)
        assert engine.run(flow, 3, run_id="pg-1") == 6 + 8
    # Then the CLI reads it with --store URL, and with INTEMPORAL_HOME=URL
    code, out = cli("--store", pg_dsn, "list")
    assert code == 0 and "pg-1" in out and "completed" in out
    code, out = cli("show", "pg-1", env={"INTEMPORAL_HOME": pg_dsn})
    assert code == 0 and "14" in out
    code, out = cli("--store", pg_dsn, "list", "--json")
    assert code == 0 and [json.loads(line)["run_id"] for line in out.splitlines()] == ["pg-1"]
    # And gc deletes it once old enough
    time.sleep(1.1)
    code, out = cli("--store", pg_dsn, "gc", "--older-than", "1s")
    assert code == 0, out
    assert list(open_store(pg_dsn).run_ids()) == []


def test_a_lease_sync_makes_the_appends_made_without_one_durable(
    pg_server: PgServer, pg_dsn: str
) -> None:
    # Given a server whose log writer flushes asynchronous commits only every 10 s
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            store = PostgresStore(pg_dsn)
            lease = store.create_claimed("synced", {"type": "run_started", "workflow": "w"})
            assert lease is not None
            # When results are appended without a sync (submitted activities) and then synced
            for seq in (1, 2):
                lease.append({"type": "side_effect", "seq": seq, "value": seq}, False)
            (written,) = admin.execute("SELECT pg_current_wal_insert_lsn()").fetchone() or ()
            lease.sync()
            # Then the server's log is on disk past them (`join_all` returns only then)
            (flushed,) = admin.execute("SELECT pg_current_wal_flush_lsn()").fetchone() or ()
            lease.release()
            store.close()
        finally:
            admin.execute("ALTER SYSTEM RESET wal_writer_delay")
            admin.execute("SELECT pg_reload_conf()")
    assert _lsn(flushed) >= _lsn(written)


def _lsn(text: str) -> int:
    high, low = str(text).split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_the_schema_is_created_once_and_a_newer_one_is_refused(pg_dsn: str) -> None:
    # Given a store opened twice (the second open migrates nothing)
    PostgresStore(pg_dsn, schema="app").close()
    PostgresStore(pg_dsn, schema="app").close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT version FROM app.schema_version").fetchall()
        assert rows == [(v,) for v in range(1, VERSION + 1)]
        # When a newer intemporal migrated it further
        conn.execute("INSERT INTO app.schema_version VALUES (%s)", (VERSION + 1,))
    # Then this one refuses it, naming both versions
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(pg_dsn, schema="app")
    assert f"version {VERSION + 1}" in str(caught.value) and f"version {VERSION})" in str(
        caught.value
    )


# -- a database that is not there ------------------------------------------------------------------
def test_an_unreachable_database_raises_store_unavailable_and_never_prints_the_password() -> None:
    url = f"postgresql://app:hunter2secret@127.0.0.1:{free_port()}/flows"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        Engine(store=url)
    assert time.monotonic() - t0 < 10
    assert "hunter2secret" not in str(caught.value) and "app:***@" in str(caught.value)
    code, out = cli("--store", url, "list")
    assert code != 0 and "hunter2secret" not in out and "Traceback" not in out
    assert "unavailable" in out


def test_a_run_stopped_by_the_database_going_away_resumes_once_it_is_back(
    pg_dsn: str, pg_server: object
) -> None:
    server = pg_server
    store = PostgresStore(pg_dsn, lease=2.0)
    with Engine(store, threads=2) as engine:
        assert engine.run(flow, 1, run_id="before") == 2 + 4
        server.stop()  # type: ignore[attr-defined]
        try:
            with pytest.raises(StoreUnavailable):
                engine.run(flow, 2, run_id="during")
        finally:
            server.start()  # type: ignore[attr-defined]
        # The pool's old connections are gone: the next call connects again
        assert engine.run(flow, 5, run_id="after") == 10 + 12
        assert engine.get_run("before").status is RunStatus.COMPLETED
    store.close()  # its heartbeat thread and connections end with the test


def test_a_client_waiting_for_a_result_is_told_when_the_database_goes_away(
    pg_dsn: str, pg_server: PgServer
) -> None:
    # Given a client-only engine waiting for a run no worker executes yet
    with Engine(PostgresStore(pg_dsn), worker=False) as client:
        waiting = client.start(flow, 1, run_id="enqueued")
        # When the database goes away
        pg_server.stop()
        try:
            # Then the wait raises StoreUnavailable at once instead of hanging
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                waiting.result(timeout=30)
            with pytest.raises(StoreUnavailable):
                client.run(flow, 2, run_id="later")
            assert time.monotonic() - t0 < 10
        finally:
            pg_server.start()
        # and once it is back the run is there, still pending for a worker
        assert client.get_run("enqueued").status is RunStatus.PENDING


# -- wake-ups -------------------------------------------------------------------------------------
def test_a_run_created_for_this_engine_is_never_offered_to_its_watcher(pg_dsn: str) -> None:
    # Given the store's looks for ready runs (the watcher's) made in the instant a run
    # created for this process's own engine has committed, before `create` returns: a
    # watcher that took it there made its queued execution's claim fail, then gave its own
    # up ("executing here"), and the run stayed pending for good (a 20 s timeout under load)
    store = PostgresStore(pg_dsn)
    insert, seen = store._insert, list[str]()

    def insert_then_look(run_id: str, first: Event, owner: str | None, ring: bool = False) -> Any:
        rows = insert(run_id, first, owner, ring)
        store._freed = True  # a run ended here: the watcher looks for pending runs
        seen.extend(store._pending() + store._safety_poll())
        return rows

    store._insert = insert_then_look  # type: ignore[method-assign]
    first: Event = {"type": "run_started", "workflow": "w"}
    try:
        # When runs are created for this engine, one of them twice (an idempotent start)
        assert store.create("mine", first, owner="engine-1")
        assert not store.create("mine", first, owner="engine-1")
        assert store.create("also-mine", first, owner="engine-1")
        # Then no look named them, nor does one after
        assert seen == []
        assert store._pending() + store._safety_poll() == []
        # And a run recorded for any worker (a client's) is offered at once
        assert store.create("theirs", first)
        assert seen == ["theirs", "theirs"]
        # And once this engine claims its runs, nothing is left hidden
        assert store.claim("mine") is not None and store.claim("also-mine") is not None
        assert store._created == {}
    finally:
        store.close()


# -- closing: nothing left open --------------------------------------------------------------------
def _backends(dsn: str) -> int:
    """How many connections other than this query's the server has to `dsn`'s database."""
    query = """SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()"""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def test_an_engine_closed_then_its_store_closed_leave_no_connection_open(pg_dsn: str) -> None:
    # Given stores (kept referenced) each used by an engine that ran a workflow, the engine
    # closed, then the store: the engine's watcher, still waiting in the store as close()
    # returned, used to open the store's listener again or pool its connection after it
    stores = []
    for i in range(3):
        store = PostgresStore(pg_dsn, lease=2.0, schema=f"closing{i}")
        stores.append(store)
        with Engine(store, threads=2) as engine:
            assert engine.run(flow, i) == 4 * i + 2
        store.close()
    # Then the server ends every connection of theirs
    wait_until(lambda: _backends(pg_dsn) == 0, what="the closed stores' connections to end")


def test_closing_the_store_ends_a_wait_in_progress_and_its_listener(pg_dsn: str) -> None:
    # Given a thread waiting for news in the store, on its listener
    store = PostgresStore(pg_dsn)
    cursor = store.wait(None, 0)[1]
    store.wait(cursor, 0.01)  # the listener opens
    ended = threading.Event()

    def waiting() -> None:
        store.wait(cursor, 30)
        ended.set()

    thread = threading.Thread(target=waiting, daemon=True)
    thread.start()
    wait_until(lambda: store._listen_lock.locked(), what="the thread to listen")
    # When the store is closed: never the listener under the thread using it (libpq frees
    # it), the thread closes it as its wait ends
    store.close()
    # Then the wait ends without its timeout, and no connection is left open
    assert ended.wait(10)
    wait_until(lambda: _backends(pg_dsn) == 0, what="the listener to close")


# -- workers that die or stall -------------------------------------------------------------------
WORKER = """
import os, sys, threading
import intemporal
from intemporal import Engine, PostgresStore

MARKS = sys.argv[2]

@intemporal.activity(name="pgw.step")
def step(i: int) -> int:
    with open(MARKS, "a") as f:
        f.write(f"{os.getpid()} {i}\\n")
    if i == 1 and os.environ.get("HANG_AT_ONE") == "1":
        threading.Event().wait(float(os.environ.get("HANG_FOR", "1e9")))
    return i

@intemporal.workflow(name="pgw.flow")
def flow(n: int) -> int:
    return sum(step(i) for i in range(n))

if __name__ == "__main__":
    engine = Engine(PostgresStore(sys.argv[1], lease=1.0), threads=2)
    engine.recover()
    print("serving", engine.engine_id, flush=True)
    told = set()
    while True:  # say which runs stopped here unrecorded, and why
        for run_id, exc in list(engine.halted.items()):
            if run_id not in told:
                told.add(run_id)
                print("halted", run_id, type(exc).__name__, flush=True)
        threading.Event().wait(0.05)
"""


def _worker(
    tmp_path: Path, dsn: str, prefix: tuple[str, ...] = (), **env: str
) -> subprocess.Popen[str]:
    """Start WORKER on `dsn` (behind `prefix`, e.g. `ip netns exec NS`); return once it serves
    (`ENGINE_OF[pid]`: its engine's id, the `owner` of the events it appends)."""
    script = tmp_path / "pgworker.py"
    script.write_text(textwrap.dedent(WORKER))
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(script), dsn, str(tmp_path / "marks")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None
    said = proc.stdout.readline().split()
    assert said[:1] == ["serving"], proc.stderr
    ENGINE_OF[proc.pid] = said[1]
    return proc


ENGINE_OF: dict[int, str] = {}  # worker process id -> the id of its engine


def _owners(events: list[dict[str, object]]) -> list[str]:
    """The engines that wrote a run's journal, in turn; asserts that they never overlapped.

    Each engine wrote one block of events (none wrote again after another took over), and
    no step of a block began (`started`) before the previous block's last event.
    """
    blocks: list[tuple[str, float, float]] = []  # (owner, first start, last ts)
    for ev in events[1:]:
        owner, ts = str(ev["owner"]), float(ev["ts"])  # type: ignore[arg-type]
        begin = min(ts, float(ev.get("started", ts)))  # type: ignore[arg-type]
        if blocks and blocks[-1][0] == owner:
            blocks[-1] = (owner, min(blocks[-1][1], begin), ts)
            continue
        assert owner not in [b[0] for b in blocks], f"engine {owner} wrote again: {events}"
        blocks.append((owner, begin, ts))
    for before, after in itertools.pairwise(blocks):
        assert after[1] >= before[2], f"{after[0]} began before {before[0]} ended: {events}"
    return [b[0] for b in blocks]


def _cli_worker(dsn: str, cwd: Path, module: str, *options: str) -> subprocess.Popen[str]:
    """`intemporal --store DSN worker --import MODULE OPTIONS` in `cwd`, once it serves."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "intemporal.cli",
            "--store",
            dsn,
            "worker",
            "--import",
            module,
            *options,
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and "serving" in proc.stdout.readline(), proc.stderr
    return proc


def _marks(tmp_path: Path) -> list[tuple[int, int]]:
    path = tmp_path / "marks"
    text = path.read_text() if path.exists() else ""
    return [(int(p), int(i)) for p, i in (line.split() for line in text.splitlines())]


def _completed(store: PostgresStore, run_id: str) -> list[int]:
    return [e["seq"] for e in store.read(run_id) if e["type"] == "activity_completed"]


@intemporal.workflow(name="pgw.flow")
def pgw_flow(n: int) -> int:
    raise AssertionError("executed by the worker processes only")


def _enqueue(dsn: str, *run_ids: str) -> PostgresStore:
    """Record runs of `pgw.flow` (3 steps) from a client engine (it executes nothing)."""
    store = PostgresStore(dsn, lease=1.0)
    with Engine(store, worker=False) as client:
        for run_id in run_ids:
            client.start(pgw_flow, 3, run_id=run_id)
    return store


def test_a_killed_workers_run_is_taken_over_once_its_lease_expires(
    tmp_path: Path, pg_dsn: str
) -> None:
    # Given a worker process executing a run, stuck in its second step
    first = _worker(tmp_path, pg_dsn, HANG_AT_ONE="1")
    try:
        store = _enqueue(pg_dsn, "taken")
        wait_until(lambda: (first.pid, 1) in _marks(tmp_path), 20, "the first worker's step 1")
        # When it is SIGKILLed, and another worker serves the same database
        first.kill()
        first.wait(10)
        expires = time.monotonic() + 1.0  # the lease, at the latest
        second = _worker(tmp_path, pg_dsn)
        serving = time.monotonic()  # its start is not counted: on a loaded host it took 5 s
        try:
            # Then the second one finishes the run within 3 s of the lease's expiry (or of
            # its start, if later): a safety poll (RESCAN, 1 s), then the claim and two
            # steps (2 s for their few ms of work on a host loaded 10 times over)
            wait_until(lambda: store.summary("taken").status is RunStatus.COMPLETED, 10, "takeover")
            assert time.monotonic() - max(expires, serving) < 3.0
            assert (second.pid, 1) in _marks(tmp_path)
            assert (second.pid, 0) not in _marks(tmp_path)  # step 0 was journaled: not again
            seqs = _completed(store, "taken")
            assert len(seqs) == 3 and len(set(seqs)) == 3
            # each event names its engine: the first worker's, then the second's, never mixed
            assert _owners(store.read("taken")) == [ENGINE_OF[first.pid], ENGINE_OF[second.pid]]
        finally:
            second.kill()
            second.wait(10)
            store.close()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)


def test_a_stalled_worker_past_its_lease_is_fenced_out_and_writes_nothing(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The short version of tests/test_postgres_hosts.py's link cut (slow, network
    namespaces): plain processes, and a SIGSTOP/SIGCONT pause instead of the cut."""
    # Given a worker paused (SIGSTOP) in step 1 of a run, past its lease
    stale = _worker(tmp_path, pg_dsn, HANG_AT_ONE="1", HANG_FOR="0.3")
    try:
        store = _enqueue(pg_dsn, "fenced")
        wait_until(lambda: (stale.pid, 1) in _marks(tmp_path), 20, "the stale worker's step 1")
        os.kill(stale.pid, signal.SIGSTOP)
        # When another worker takes the run over and finishes it
        other = _worker(tmp_path, pg_dsn)
        try:
            wait_until(lambda: store.summary("fenced").status is RunStatus.COMPLETED, 10, "end")
            assert (other.pid, 1) in _marks(tmp_path)
        finally:
            other.kill()
            other.wait(10)
        done = store.read("fenced")
        # And the stalled worker wakes up and tries to record its step
        os.kill(stale.pid, signal.SIGCONT)
        # Then its late append is refused (LeaseLost) and the run stops there, unrecorded
        assert stale.stdout is not None
        assert stale.stdout.readline().split() == ["halted", "fenced", "LeaseLost"]
        # the journal is as the new owner left it: no step's completion in it twice
        assert store.read("fenced") == done
        seqs = _completed(store, "fenced")
        assert len(seqs) == 3 and len(set(seqs)) == 3
        assert _owners(done) == [ENGINE_OF[stale.pid], ENGINE_OF[other.pid]]
    finally:
        stale.kill()
        stale.wait(10)


SLOW = """
import os, time
import intemporal

@intemporal.activity(name="pgt.wait_for_go")
def wait_for_go(folder: str) -> str:
    open(os.path.join(folder, "in-flight"), "w").close()
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.01)
    return "went"

@intemporal.workflow(name="pgt.slow")
def slow(folder: str) -> str:
    return wait_for_go(folder) + wait_for_go(folder)
"""


@intemporal.workflow(name="pgt.slow")
def pgt_slow(folder: str) -> str:
    raise AssertionError("executed by the worker process only")


def _worker_in_flight(
    tmp_path: Path, pg_dsn: str, *options: str
) -> tuple[subprocess.Popen[str], PostgresStore]:
    """`intemporal worker OPTIONS` executing run "graceful", its activity in flight."""
    (tmp_path / "slowflows.py").write_text(SLOW)
    proc = _cli_worker(pg_dsn, tmp_path, "slowflows", "--interval", "0.05", *options)
    store = PostgresStore(pg_dsn)
    with Engine(store, worker=False) as client:
        client.start(pgt_slow, str(tmp_path), run_id="graceful")
    assert proc.stdout is not None
    wait_until(lambda: "started graceful" in proc.stdout.readline(), 20, "the run started")  # type: ignore[union-attr]
    wait_until(lambda: (tmp_path / "in-flight").exists(), 20, "the activity in flight")
    return proc, store


def test_sigterm_stops_the_worker_gracefully_releasing_its_runs(
    tmp_path: Path, pg_dsn: str
) -> None:
    # Given `intemporal worker` executing an activity
    proc, store = _worker_in_flight(tmp_path, pg_dsn)
    try:
        # When it gets SIGTERM (as systemd and docker send), and the activity then ends
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in proc.stdout.readline(), 10, "the worker stopping")  # type: ignore[union-attr]
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=30)
        # Then it exits 0, saying what it left, the step in flight recorded, the run released
        assert proc.returncode == 0, err
        assert "left 1 unfinished run(s), resumable by any worker: graceful" in out
        steps = [e for e in store.read("graceful") if e["type"] == "activity_completed"]
        assert len(steps) == 1
        info = store.summary("graceful")
        assert not info.executing  # released now, not when its lease expires
        assert info.status is RunStatus.RUNNING and info.orphaned
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("second_signal", [False, True], ids=["grace-over", "second-signal"])
def test_an_activity_that_does_not_end_stops_the_worker_after_its_grace_or_a_second_signal(
    tmp_path: Path, pg_dsn: str, second_signal: bool
) -> None:
    # Given `intemporal worker --grace 0.5` executing an activity that does not end
    proc, store = _worker_in_flight(
        tmp_path, pg_dsn, "--grace", "0.5" if not second_signal else "60"
    )
    try:
        # When it gets SIGTERM (and, maybe, a second one)
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in proc.stdout.readline(), 10, "the worker stopping")  # type: ignore[union-attr]
        if second_signal:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        # Then it exits: at once on a second signal, else once the grace period is over,
        # saying what it left; the run stays resumable (its step in flight runs again)
        if second_signal:
            assert proc.returncode == 128 + signal.SIGTERM, err
        else:
            assert proc.returncode == 1, err
            assert "grace period of 0.5 s over" in out
            assert "left 1 unfinished run(s), resumable by any worker: graceful" in out
        assert "Traceback" not in err
        assert not [e for e in store.read("graceful") if e["type"] == "activity_completed"]
        assert store.summary("graceful").status is not RunStatus.COMPLETED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


MANY_HOSTS = Path(__file__).resolve().parent.parent / "samples" / "many_hosts"


def test_the_many_hosts_sample_shares_the_runs_between_two_workers(pg_dsn: str) -> None:
    # Given two `intemporal worker` processes on one database (two "hosts")
    workers = [
        _cli_worker(pg_dsn, MANY_HOSTS, "flows", "--threads", "4", "--interval", "0.1")
        for _ in range(2)
    ]
    try:
        # When the producer enqueues 40 orders and waits for them
        producer = subprocess.run(
            [sys.executable, "producer.py", "--store", pg_dsn, "--count", "40", "--wait"],
            cwd=MANY_HOSTS,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # Then all complete, executed by both workers
        assert producer.returncode == 0, producer.stderr
        assert "enqueued 40 orders" in producer.stdout
        assert "all 40 completed, by 2 worker process(es)" in producer.stdout
    finally:
        for w in workers:
            w.kill()
            w.wait(10)


def test_a_restart_of_the_database_in_the_middle_of_50_runs_loses_none(
    pg_dsn: str, pg_server: PgServer
) -> None:
    # Given a worker executing 50 runs
    worker = _cli_worker(pg_dsn, MANY_HOSTS, "flows", "--interval", "0.1")
    try:
        store = PostgresStore(pg_dsn)
        with Engine(store, worker=False) as client:
            for n in range(50):
                client.start(many_hosts_order, n, run_id=f"order-{n}")

        def done() -> int:
            return sum(i.status is RunStatus.COMPLETED for i in store.list_runs())

        wait_until(lambda: done() >= 5, 30, "the first runs")
        # When the database restarts in the middle of them
        pg_server.stop()
        pg_server.start()
        # Then all complete once it is back, each step recorded once
        assert done() < 50  # it did restart in the middle
        wait_until(lambda: done() == 50, 60, "all 50 runs")
        for n in range(50):
            seqs = [e["seq"] for e in store.read(f"order-{n}") if e["type"] == "activity_completed"]
            assert len(seqs) == 3 == len(set(seqs)), (n, seqs)
        store.close()
    finally:
        worker.kill()
        worker.wait(10)


@intemporal.workflow(name="many_hosts.order")
def many_hosts_order(number: int) -> list[str]:
    raise AssertionError("executed by the worker processes only")
