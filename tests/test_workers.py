"""Workers: engines that execute runs recorded by clients (`Engine(worker=False)`), by queue."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import Engine, FileStore, RunStatus, Store


@intemporal.activity(name="workers.double")
def double(x: int) -> int:
    return x * 2


@intemporal.workflow(name="workers.job")
def job(x: int) -> int:
    return double(x)


def test_a_serving_worker_takes_a_run_a_client_records(store: Store) -> None:
    # Given a worker that serves the store (recover() starts following its doorbell)
    with Engine(store, threads=2) as worker:
        assert worker.recover() == []
        # When a client only records a run
        with Engine(store, worker=False) as client:
            handle = client.start(job, 21, run_id="from-client")
            # Then the worker executes it without being asked again
            assert handle.result(timeout=10) == 42
    assert Engine(store, worker=False).get_run("from-client").status is RunStatus.COMPLETED


def test_a_worker_serves_only_its_queues(store: Store) -> None:
    with Engine(store, threads=2, queues=["emails"]) as worker:
        worker.recover()
        with Engine(store, worker=False) as client:
            billing = client.start(job, 1, run_id="bill-1", queue="billing")
            emails = client.start(job, 2, run_id="mail-1", queue="emails")
            assert emails.result(timeout=10) == 4
            # the billing run is left for a worker of its queue, by the doorbell and recover()
            assert worker.recover() == []
            assert billing.status() is RunStatus.PENDING
    with Engine(store, threads=2, queues=["billing"]) as billing_worker:
        assert [h.run_id for h in billing_worker.recover()] == ["bill-1"]
        assert billing_worker.handle("bill-1").result(timeout=10) == 2


def test_runs_started_on_an_engine_run_there_whatever_its_queues(store: Store) -> None:
    with Engine(store, threads=2, queues=["emails"]) as engine:
        assert engine.run(job, 5, queue="billing") == 10


def test_a_workflow_queue_from_its_decorator_is_recorded(store: Store) -> None:
    @intemporal.workflow(name="workers.queued", queue="reports")
    def queued(x: int) -> int:
        return double(x)

    with Engine(store, worker=False) as client:
        client.start(queued, 3, run_id="q-1")
        assert client.history("q-1")[0]["queue"] == "reports"
    with Engine(store, threads=2, queues=["reports"]) as worker:
        worker.recover()
        wait_until(
            lambda: worker.get_run("q-1").status is RunStatus.COMPLETED, what="the queued run"
        )


def test_the_worker_command_takes_and_reports_a_run_a_client_records(tmp_path: Path) -> None:
    # Given `intemporal worker` serving a store, with the workflow's module importable
    (tmp_path / "wflows.py").write_text(
        "import intemporal\n\n"
        "@intemporal.activity\ndef triple(x):\n    return x * 3\n\n"
        "@intemporal.workflow(name='wflows.job')\ndef job(x):\n    return triple(x)\n"
    )
    store, log = tmp_path / "store", tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "intemporal.cli", "--store", str(store), "worker"]
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [*cmd, "--import", "wflows"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "serving" in log.read_text(), what="the worker to start")
        # When a client records a run
        with Engine(FileStore(store), worker=False) as client:
            client.start(_load(tmp_path), 14, run_id="w-1")
        # Then the worker takes it at once and prints how it ended
        wait_until(lambda: "w-1 completed: 42" in log.read_text(), what="the worker's report")
        assert "started w-1" in log.read_text()  # a new run, not a resumed one
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _load(folder: Path) -> Any:
    sys.path.insert(0, str(folder))
    try:
        import wflows
    finally:
        sys.path.remove(str(folder))
    return wflows.job


def test_a_client_engine_starts_no_thread(store: Store) -> None:
    # Given a client engine (it records runs, it executes none)
    before = {t.ident for t in threading.enumerate()}
    with Engine(store, worker=False) as client:
        # When it records, looks at, signals and cancels runs
        handle = client.start(job, 2, run_id="client-only")
        assert handle.status() is RunStatus.PENDING
        client.signal("client-only", "go", 1)
        assert [i.run_id for i in client.list_runs()] == ["client-only"]
        client.cancel("client-only")
        # Then no thread was started, and the run is still only recorded
        started = [t.name for t in threading.enumerate() if t.ident not in before]
        assert started == []
        assert client.get_run("client-only").status is RunStatus.PENDING


@intemporal.workflow(name="workers.waits")
def waits(x: int) -> int:
    intemporal.set_event("seen", x)
    return intemporal.wait_for_signal("go")


def test_a_client_engine_starts_no_thread_whatever_it_is_asked(store: Store) -> None:
    # Given a client engine that knows a limited queue (a worker would poll it)
    before = {t.ident for t in threading.enumerate()}
    client = Engine(store, worker=False, queues=[intemporal.Queue("few", concurrency=1)])
    # When it records runs of every kind and acts on them as a client does
    plain = client.start(waits, 1, run_id="c-plain")
    client.start(waits, 2, run_id="c-later", delay=3600)
    client.start(waits, 3, run_id="c-few", queue="few")
    assert client.start(waits, 1, run_id="c-plain").run_id == "c-plain"  # idempotent start
    with pytest.raises(TimeoutError):
        plain.result(timeout=0.05)
    assert client.get_event("c-plain", "seen", timeout=0.01) is None
    assert client.handle("c-few").status() is RunStatus.PENDING
    assert [e["type"] for e in client.history("c-later")] == ["run_started"]
    client.signal("c-plain", "go", 5)
    client.cancel("c-later")
    assert {i.run_id for i in client.list_runs()} == {"c-plain", "c-later", "c-few"}
    # Then no thread was started
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []
    # And ending a run nobody executes takes its lease, no thread of the engine: only a
    # store whose leases expire (PostgreSQL) keeps them alive with its heartbeat
    client.terminate("c-few", reason="not needed")
    client.close()
    heartbeat = ["intemporal-pg-heartbeat"] if store.shared_by_hosts else []
    assert [t.name for t in threading.enumerate() if t.ident not in before] in ([], heartbeat)
    assert Engine(store, worker=False).get_run("c-few").status is RunStatus.CANCELLED
