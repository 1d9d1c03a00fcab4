"""Workers on separate "hosts": each in its own network namespace, reaching the database
only over its own veth link (slow: `make test-slow`; tests/test_postgres.py has the short
version with plain processes and SIGSTOP instead of a link cut).

Needs root and iproute2 (`ip netns`); without them it skips, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import PgServer, find_bindir, remove, start_server
from process_helpers import wait_until
from test_postgres import ENGINE_OF, _completed, _enqueue, _marks, _owners, _worker

from intemporal import PostgresStore, RunStatus

pytestmark = pytest.mark.slow


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Host:
    """Network namespace `itp<pid>h<n>`, linked to this one by a veth pair on 10.77.n.0/24."""

    def __init__(self, n: int) -> None:
        self.ns, self.outside, self.n = f"itp{os.getpid()}h{n}", f"itpv{os.getpid() % 10000}h{n}", n
        ip("netns", "add", self.ns)
        ip("link", "add", self.outside, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        ip("addr", "add", f"10.77.{n}.1/24", "dev", self.outside)
        ip("link", "set", self.outside, "up")
        for cmd in (
            ["addr", "add", f"10.77.{n}.2/24", "dev", "eth0"],
            ["link", "set", "eth0", "up"],
            ["link", "set", "lo", "up"],
        ):
            ip("netns", "exec", self.ns, "ip", *cmd)

    def link(self, up: bool) -> None:
        ip("link", "set", self.outside, "up" if up else "down")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2; test_postgres.py pauses instead")
    made: list[Host] = []
    try:
        for n in (1, 2):
            made.append(Host(n))
        yield made
    finally:
        for h in made:
            h.remove()


@pytest.fixture
def linked_server(hosts: list[Host]) -> Iterator[PgServer]:
    bindir = find_bindir()
    assert bindir is not None, "no PostgreSQL server binaries"
    server = start_server(bindir, listen="*", trust="10.77.0.0/16")
    yield server
    remove(server)


def _on(host: Host, server: PgServer, tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    """A worker process on `host`, reaching the database over its link only."""
    dsn = f"postgresql://{server.user}@10.77.{host.n}.1:{server.port}/postgres"
    return _worker(tmp_path, dsn, ("ip", "netns", "exec", host.ns), **env)


def _stop(*procs: subprocess.Popen[str] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


RUNS = ("run-1", "run-2")  # as many as a worker executes at once (threads=2)


def _all_completed(store: PostgresStore) -> bool:
    return all(store.summary(run_id).status is RunStatus.COMPLETED for run_id in RUNS)


def _check_journals(store: PostgresStore, first: str, then: str) -> None:
    """Each run: every step's completion journaled once, host A's engine then host B's."""
    for run_id in RUNS:
        seqs = _completed(store, run_id)
        assert len(seqs) == 3 == len(set(seqs)), (run_id, seqs)  # no step journaled twice
        assert _owners(store.read(run_id)) == [first, then], run_id  # never at once


def test_runs_of_a_host_whose_worker_is_killed_complete_on_another_within_lease_plus_2s(
    tmp_path: Path, hosts: list[Host], linked_server: PgServer
) -> None:
    # Given host A executing two runs, each in its second step, and host B serving too
    a = _on(hosts[0], linked_server, tmp_path, HANG_AT_ONE="1")
    b: subprocess.Popen[str] | None = None
    try:
        store = _enqueue(linked_server.dsn, *RUNS)
        wait_until(lambda: _marks(tmp_path).count((a.pid, 1)) == 2 or None, 20, "A's steps 1")
        b = _on(hosts[1], linked_server, tmp_path)
        # When A's worker is SIGKILLed
        a.kill()
        a.wait(10)
        killed_at = time.monotonic()
        # Then B completes both runs within lease (1 s) + 2 s
        wait_until(lambda: _all_completed(store), 10, "both runs completed")
        assert time.monotonic() - killed_at < 1.0 + 2.0
        _check_journals(store, ENGINE_OF[a.pid], ENGINE_OF[b.pid])
        store.close()
    finally:
        _stop(a, b)


def test_a_worker_cut_off_past_its_lease_is_fenced_out_when_its_link_is_back(
    tmp_path: Path, hosts: list[Host], linked_server: PgServer
) -> None:
    a = _on(hosts[0], linked_server, tmp_path, HANG_AT_ONE="1", HANG_FOR="4")
    b: subprocess.Popen[str] | None = None
    try:
        # Given host A executing two runs, each in its second step
        store = _enqueue(linked_server.dsn, *RUNS)
        wait_until(lambda: _marks(tmp_path).count((a.pid, 1)) == 2 or None, 20, "A's steps 1")
        # When A's link is cut past its lease, and host B serves the same database
        hosts[0].link(False)
        b = _on(hosts[1], linked_server, tmp_path)
        wait_until(lambda: _all_completed(store), 15, "both runs completed")
        done = {run_id: store.read(run_id) for run_id in RUNS}
        # Then B finished the runs; when A's link is back, its late appends are refused
        hosts[0].link(True)
        assert a.stdout is not None
        halted = sorted(a.stdout.readline().split() for _ in RUNS)
        assert halted == [["halted", run_id, "LeaseLost"] for run_id in RUNS]
        assert {run_id: store.read(run_id) for run_id in RUNS} == done  # A wrote nothing
        _check_journals(store, ENGINE_OF[a.pid], ENGINE_OF[b.pid])
        store.close()
    finally:
        _stop(a, b)
