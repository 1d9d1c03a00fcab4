"""Fixtures shared by the engine tests: a store of each kind, and an engine over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
