"""Storage backends behind one `Store` interface, and `open_store` to pick one."""

from __future__ import annotations

import os

from .base import Event, Lease, RunInfo, RunStatus, Store, check_run_id, summarize
from .file import FileStore
from .locate import Located, locate
from .memory import MemoryStore
from .postgres import PostgresStore

__all__ = [
    "Event",
    "FileStore",
    "Lease",
    "Located",
    "MemoryStore",
    "PostgresStore",
    "RunInfo",
    "RunStatus",
    "Store",
    "check_run_id",
    "locate",
    "open_store",
    "summarize",
]


def open_store(store: Store | str | os.PathLike[str] | None = None) -> Store:
    """Return a `Store` for a path, a URL, an instance, or None (`locate()`: $INTEMPORAL_HOME,
    else the nearest `.intemporal` in this folder or a parent, else ./.intemporal)."""
    if isinstance(store, Store):
        return store
    if store is None:
        store = locate().where
    text = os.fspath(store)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text)
    if text == "memory:":
        return MemoryStore()
    return FileStore(text)
