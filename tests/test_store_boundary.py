"""The `Store` boundary stays where `intemporal/store/base.py` draws it.

Code outside `intemporal/store/` reaches a store through its public interface only
(`INTERFACE`: runs, ownership, wake-ups, listing), never through a backend's mechanics
(`_is_claimed`, `_changes`, the file store's `path`...). Found with the stdlib `ast`: any
attribute of an expression whose name says it is a store (`store`, `self.store`,
`engine.store`, `self._store`...) must be in `INTERFACE`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import intemporal
from intemporal.store import FileStore, MemoryStore, Store
from intemporal.store.postgres import PostgresStore

PACKAGE = Path(intemporal.__file__).parent

#: what the rest of the package may use of a `Store` (drawn in `store/base.py`'s docstring)
INTERFACE = frozenset(
    {
        # runs
        "create",
        "create_claimed",
        "read",
        "exists",
        "delete",
        "delete_if_ended",
        "delete_ended_trees",
        "run_ids",
        # ownership
        "claim",
        "claim_next",
        "lease_owner",
        # wake-ups
        "send",
        "inbox",
        "wait",
        # listing
        "summary",
        "summary_or_unreadable",
        "list_runs",
        "iter_runs",
        "count_runs",
        "ended_before",
        "queue_starts",
        "close",
        # attributes
        "location",
        "shared_by_hosts",
        "wait_blocks",
    }
)
#: what left the interface (`issues show 14`): private mechanics of the backends now
GONE = ("hold_engine", "engine_alive", "changes", "notify", "is_claimed", "unfinished")


def _store_like(node: ast.expr) -> bool:
    """Whether an expression names a store: `store`, `self.store`, `engine._store`, `Store`."""
    name = (
        node.id
        if isinstance(node, ast.Name)
        else node.attr
        if isinstance(node, ast.Attribute)
        else ""
    )
    return re.fullmatch(r"_?(store|Store)", name) is not None


def _outside_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) of every attribute of a store-like expression in `source`."""
    return [
        (node.lineno, node.attr)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and _store_like(node.value)
    ]


def test_code_outside_the_store_package_uses_only_the_store_interface() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "store" in path.relative_to(PACKAGE).parts[:-1]:
            continue  # the backends themselves
        for line, name in _outside_uses(path.read_text()):
            if name not in INTERFACE:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} uses Store.{name}")
    assert bad == []


def test_the_check_finds_a_call_past_the_interface() -> None:
    # The check itself: a call of a private hook or of a removed name is found, under any
    # of the usual names for a store; a public call or another object's `notify` is not
    source = (
        "engine.store.is_claimed(rid)\n"
        "self._store._changes(0)\n"
        "store.claim(rid)\n"
        "self.changed.notify()\n"
        "Store.ended_before(store, 1.0)\n"
    )
    assert [(line, name) for line, name in _outside_uses(source) if name not in INTERFACE] == [
        (1, "is_claimed"),
        (2, "_changes"),
    ]


def test_the_interface_is_what_the_base_class_declares() -> None:
    public = {name for name in dir(Store) if not name.startswith("_")}
    assert public == INTERFACE
    doc = intemporal.store.base.__doc__ or ""
    assert [name for name in sorted(INTERFACE) if name not in doc] == []


@pytest.mark.parametrize("backend", [Store, MemoryStore, FileStore, PostgresStore])
def test_no_backend_offers_what_left_the_interface(backend: type[Store]) -> None:
    assert [name for name in GONE if hasattr(backend, name)] == []
