"""A throwaway PostgreSQL server for the tests: `initdb` + `pg_ctl` in a temp folder.

Debian's server binaries (`pg_config --bindir`, or /usr/lib/postgresql/*/bin) run as an
unprivileged user when the tests run as root (`initdb` refuses root): `nobody`, owner of
the temp folder. The server listens on a free loopback port, trusts local connections,
and is stopped (and its folder removed) at the end of the session. Outside CI, a machine
without the binaries skips the PostgreSQL tests (`apt-get install postgresql`); in CI
(`CI=true`) that is a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL = "install Debian's server: apt-get install postgresql (or set PG_BINDIR)"


@dataclass
class PgServer:
    """A running throwaway server: `dsn` of its `postgres` database, `stop()` to end it."""

    bindir: Path
    data: Path
    port: int
    user: str
    root: Path
    listen: str = "127.0.0.1"  # listen_addresses: "*" for the multi-host test's links
    durable: bool = False  # fsync on (the benchmark); the tests run with fsync off (-F)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        """Run `pg_ctl ARGS` on this server's data folder, as its owner."""
        _run(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-s", *args])

    def start(self) -> None:
        opts = f"-p {self.port} -h '{self.listen}' -k {self.data} -c max_connections=300"
        if not self.durable:
            opts += " -F"
        self.ctl("-w", "-t", "30", "-l", str(self.root / "log"), "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-w", "-m", mode, "stop")


def find_bindir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: $PG_BINDIR, `pg_config --bindir`, Debian's folder."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _run(user: str, argv: list[str]) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stdout}{proc.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    bindir: Path,
    listen: str = "127.0.0.1",
    trust: str = "",
    durable: bool = False,
    parent: Path | None = None,
) -> PgServer:
    """initdb a new cluster in a temp folder and start it; the caller stops it.

    `listen`: its listen_addresses; `trust`: a network (`10.77.0.0/16`) whose clients it
    trusts too, beside the loopback; `durable`: fsync on (default off: tests need no
    durability against power cuts); `parent`: the folder to make its folder in."""
    root = Path(tempfile.mkdtemp(prefix="intemporal-pg-", dir=parent))
    user = "nobody" if os.geteuid() == 0 else os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        os.chmod(root, 0o700)
        shutil.chown(root, user)
    else:
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    data = root / "data"
    _run(
        user,
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            user,
            "-N",
            "-E",
            "UTF8",
            "--locale=C",
        ],
    )
    if trust:
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {trust} trust\n")
    server = PgServer(bindir, data, free_port(), user, root, listen, durable)
    server.start()
    return server


def remove(server: PgServer) -> None:
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
