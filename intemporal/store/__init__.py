"""Storage backends behind one `Store` interface, and `open_store` to pick one."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import Event, Lease, OwnerLease, RunStatus, Store
from .file import FileStore
from .locate import Located, locate
from .memory import MemoryStore
from .runinfo import _URL, RunInfo, check_run_id, redact, summarize

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = [
    "Event",
    "FileStore",
    "Lease",
    "Located",
    "MemoryStore",
    "OwnerLease",
    "PostgresStore",
    "RunInfo",
    "RunStatus",
    "Store",
    "check_run_id",
    "locate",
    "open_store",
    "redact",
    "summarize",
]


def __getattr__(name: str) -> Any:
    """`PostgresStore`, imported on first use: `import intemporal` does not load it."""
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    store: Store | str | os.PathLike[str] | None = None, *, strict: bool = False
) -> Store:
    """Return a `Store` for a path, a URL, an instance, or None (`locate()`).

    `locate()`: $INTEMPORAL_HOME, else the nearest `.intemporal` in this folder or a
    parent, else ./.intemporal.

    `strict`: refuse (`UnsafeStore`) an existing store folder that group or others may
    write to, or that another user owns, instead of warning once. A URL of a scheme with no
    store raises `ValueError`, its password hidden (`redact`).
    """
    if isinstance(store, Store):
        return store
    if store is None:
        store = locate().where
    text = os.fspath(store)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(text)
    if text == "memory:":
        return MemoryStore()
    scheme = _URL.match(text)
    if scheme:  # never a folder named "mysql:": a mistyped URL must not become one
        raise ValueError(f"no store for URLs of scheme {scheme.group(1)!r}: {redact(text)}")
    return FileStore(text, strict=strict)
