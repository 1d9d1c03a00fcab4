"""Fixtures shared by the engine tests: a store of each kind, and an engine over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Cli, cli_on

from intemporal import Engine, FileStore, MemoryStore, Store


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh store: a `FileStore` in a new directory under `tmp_path`, or a `MemoryStore`."""
    if request.param == "file":
        return FileStore(tmp_path / "store")
    return MemoryStore()


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
