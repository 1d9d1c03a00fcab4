"""Storage backends behind one `Store` interface, and `open_store` to pick one."""

from __future__ import annotations

import os
import re

from .base import Event, Lease, RunInfo, RunStatus, Store, check_run_id, summarize
from .file import FileStore
from .locate import Located, locate
from .memory import MemoryStore

__all__ = [
    "Event",
    "FileStore",
    "Lease",
    "Located",
    "MemoryStore",
    "RunInfo",
    "RunStatus",
    "Store",
    "check_run_id",
    "locate",
    "open_store",
    "redact",
    "summarize",
]


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
        raise NotImplementedError(
            f"the PostgreSQL store is not available yet (store {redact(text)})"
        )
    if text == "memory:":
        return MemoryStore()
    scheme = _URL.match(text)
    if scheme:  # never a folder named "mysql:": a mistyped URL must not become one
        raise ValueError(f"no store for URLs of scheme {scheme.group(1)!r}: {redact(text)}")
    return FileStore(text, strict=strict)


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_PARAM = re.compile(
    r"((?:^|[?&;\s])(?:password|passwd|pwd|secret|token|sslpassword)=)[^&;\s]*", re.I
)


def redact(location: str) -> str:
    """`location` (a path, a URL or a DSN) fit to print: any password in it shown as `***`.

    >>> redact("postgresql://app:s3cret@db:5432/prod?password=x")
    'postgresql://app:***@db:5432/prod?password=***'
    """
    m = _URL.match(location)
    if m:  # the user info ends at the last "@": a password may hold "@", "/" or "?"
        at = location.rfind("@", m.end())
        if at >= 0:
            user, colon, _ = location[m.end() : at].partition(":")
            location = m.group() + user + (":***" if colon else "") + location[at:]
    return _SECRET_PARAM.sub(r"\1***", location)
