"""`RunHandle` (intemporal/handle.py) uses public Engine calls only: those `EngineCalls` names.

A handle is given an engine and may use only what the `EngineCalls` protocol lists, each a
public (no underscore), documented name of `intemporal.Engine`; handle.py imports nothing
of the engine or its runtime, so the engine can be rebuilt behind it.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import intemporal
from intemporal import Engine, MemoryStore
from intemporal import handle as handle_module

HANDLE = Path(handle_module.__file__)


def _protocol_members(tree: ast.Module) -> set[str]:
    (proto,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EngineCalls"]
    names = set()
    for node in proto.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


def _engine_reads(tree: ast.Module) -> dict[str, int]:
    """Every attribute handle.py reads off an engine (`engine.X`, `self.engine.X`): line."""
    reads: dict[str, int] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        on_engine = (isinstance(base, ast.Name) and base.id == "engine") or (
            isinstance(base, ast.Attribute)
            and base.attr == "engine"
            and isinstance(base.value, ast.Name)
            and base.value.id == "self"
        )
        if on_engine:
            reads.setdefault(node.attr, node.lineno)
    return reads


def test_a_handle_reads_only_what_engine_calls_lists() -> None:
    # Given handle.py and the protocol it types its engine with
    tree = ast.parse(HANDLE.read_text())
    allowed = _protocol_members(tree)
    # Then every name it reads off an engine is in that protocol
    reads = _engine_reads(tree)
    assert {"execution", "get_run", "codec", "clock"} <= set(reads)  # the walk sees them
    assert {name: line for name, line in reads.items() if name not in allowed} == {}


def test_engine_calls_are_public_documented_names_of_engine() -> None:
    members = _protocol_members(ast.parse(HANDLE.read_text()))
    assert [m for m in members if m.startswith("_")] == []
    with Engine(MemoryStore(), worker=False) as engine:
        for name in sorted(members):
            value = getattr(engine, name)  # each is there on a real engine
            if inspect.ismethod(value):
                assert inspect.getdoc(value), f"Engine.{name} has no docstring"
    # And every one is named in the protocol's docstring, which says what it is
    doc = inspect.getdoc(handle_module.EngineCalls) or ""
    assert [m for m in sorted(members) if f"`{m}" not in doc] == []


def test_handle_py_imports_nothing_of_the_engine() -> None:
    tree = ast.parse(HANDLE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    engine_side = {m for m in imported if "engine" in m or "runtime" in m}
    assert engine_side == set()
    assert intemporal.RunHandle is handle_module.RunHandle
