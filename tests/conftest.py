"""Fixtures shared by the engine tests: a store of each kind, and an engine over it."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Cli, cli_on
from pg_server import INSTALL, PgServer, find_bindir, remove, start_server

from intemporal import Engine, FileStore, MemoryStore, PostgresStore, Store

_databases = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    """Children this suite Ctrl-Cs (workers, samples) stop on SIGINT even when the suite
    itself was started with SIGINT ignored (`make test &` from a script, nohup): an
    ignored signal stays ignored across exec, a handled one is reset to the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server for the whole session (started once, on first use).

    Skipped, saying how to install it, when Debian's server binaries are missing; in CI
    (`CI=true`) that is a failure: `.ci/run` installs them first.
    """
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL server binaries in CI: {INSTALL}")
        pytest.skip(f"no PostgreSQL server binaries (outside CI, a skip): {INSTALL}")
    server = start_server(bindir)
    yield server
    remove(server)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    import psycopg

    name = f"t{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.dsn.rsplit("/", 1)[0] + "/" + name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the combinations that do not exist rather than skipping them: a test
    marked `file_errors` injects a disk's `OSError`s or picks `durability="flush"`, which a
    database store has no counterpart of (it fails with its driver's errors)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        on_postgres = params.get("store") == "postgres" and item.get_closest_marker("file_errors")
        disk_only = params.get("error_kind") != "driver" or params.get("durability") == "flush"
        (dropped if on_postgres and disk_only else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@pytest.fixture(params=["file", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store: a `FileStore` under `tmp_path`, a `MemoryStore`, or a `PostgresStore`
    in a new database of the session's throwaway server."""
    st: Store
    if request.param == "file":
        st = FileStore(tmp_path / "store")
    elif request.param == "memory":
        st = MemoryStore()
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        st = PostgresStore(server.dsn, lease=3.0, schema=f"t{os.getpid()}_{next(_databases)}")
    yield st
    st.close()


@pytest.fixture
def file_store(tmp_path: Path) -> FileStore:
    """A fresh `FileStore`, for the tests about the file format itself."""
    return FileStore(tmp_path / "store")


@pytest.fixture
def engine(store: Store) -> Iterator[Engine]:
    """An `Engine(store, threads=4)`, closed after the test."""
    eng = Engine(store, threads=4)
    try:
        yield eng
    finally:
        eng.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The file store's directory that the CLI tests point `--store` at."""
    return tmp_path / "store"


@pytest.fixture
def cli(home: Path) -> Cli:
    """Run `intemporal --store HOME ARGS...` in this process, 200 columns wide."""
    return cli_on(home)


@pytest.fixture
def file_engine(home: Path) -> Iterator[Engine]:
    """An `Engine` over the file store at `home`, closed after the test."""
    with Engine(str(home), threads=4) as eng:
        yield eng
