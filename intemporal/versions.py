"""Code versions: which runs an engine executes, by the `Engine(version=...)` that started them.

    Engine(version="2026.11.2")                                 # records it; executes only its runs
    Engine(version="2026.11.2", versions={"2026.11.1", "2026.11.2"})   # drains the older runs too

A run records the version of the engine that started it (`run_started.code_version`,
`RunInfo.version`). An engine with a version takes (recovers, adopts from clients) only the
runs of its `versions`, by default its own; `None` in `versions` stands for runs recorded
without a version. An engine without a version and without `versions` takes every run. A
run named explicitly (`resume`, `fork`) is executed whatever its version.
"""

from __future__ import annotations

from collections.abc import Collection, Container

from .store import Store


def accepted(
    version: str | None, versions: Collection[str | None] | None
) -> frozenset[str | None] | None:
    """The versions an engine takes (None: every run); `TypeError` for a version not a string."""
    for v in [version, *(versions or ())]:
        if v is not None and (not isinstance(v, str) or not v):
            raise TypeError(f"a code version is a non-empty string, not {v!r}")
    if isinstance(versions, str):
        raise TypeError(f"versions is a collection of versions, not the string {versions!r}")
    if versions is not None:
        return frozenset(versions)
    return None if version is None else frozenset({version})


class OtherVersions:
    """The runs to skip when claiming: those `held` already, and those of another version.

    A live view for `Store.claim_next(skip=...)`: each run's version is read when asked.
    """

    def __init__(self, held: Container[str], store: Store, versions: frozenset[str | None]) -> None:
        self._held, self._store, self._versions = held, store, versions

    def __contains__(self, run_id: object) -> bool:
        if run_id in self._held:
            return True
        if not isinstance(run_id, str):
            return False
        try:
            return self._store.summary(run_id).version not in self._versions
        except Exception:  # deleted meanwhile, or unreadable: not this engine's to take
            return True
