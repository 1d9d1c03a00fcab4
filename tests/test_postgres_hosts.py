"""Workers on separate "hosts": each in its own network namespace, reaching the database
only over its own veth link (slow: `make test-slow`; tests/test_postgres.py has the short
version with plain processes and SIGSTOP instead of a link cut).

Needs root and iproute2 (`ip netns`); without them it skips, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import PgServer, find_bindir, remove, start_server
from process_helpers import wait_until
from test_postgres import _completed, _enqueue, _marks, _worker

from intemporal import RunStatus

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


def test_a_worker_cut_off_past_its_lease_is_fenced_out_when_its_link_is_back(
    tmp_path: Path, hosts: list[Host], linked_server: PgServer
) -> None:
    port, user = linked_server.port, linked_server.user

    def worker(host: Host, **env: str) -> subprocess.Popen[str]:
        dsn = f"postgresql://{user}@10.77.{host.n}.1:{port}/postgres"
        return _worker(tmp_path, dsn, ("ip", "netns", "exec", host.ns), **env)

    a = worker(hosts[0], HANG_AT_ONE="1", HANG_FOR="4")
    b: subprocess.Popen[str] | None = None
    try:
        # Given host A executing a run, in its second step
        store = _enqueue(linked_server.dsn, "cut")
        wait_until(lambda: (a.pid, 1) in _marks(tmp_path) or None, 20, "host A's step 1")
        # When A's link is cut past its lease, and host B serves the same database
        hosts[0].link(False)
        b = worker(hosts[1])
        wait_until(lambda: store.summary("cut").status is RunStatus.COMPLETED, 15, "B's takeover")
        # Then B finished the run; when A's link is back, its late append is refused
        hosts[0].link(True)
        assert a.stdout is not None
        assert a.stdout.readline().split() == ["halted", "cut", "LeaseLost"]
        seqs = _completed(store, "cut")
        assert len(seqs) == 3 == len(set(seqs))  # no step's completion journaled twice
        store.close()
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.kill()
                proc.wait(10)
