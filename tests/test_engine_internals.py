"""Tests observe the engine through its public API, never its internals (issue 14).

A test that reads `engine._active` or `engine._pool` breaks when the engine is rebuilt
behind its facade, and tests nothing a user can see. Found with the stdlib `ast`: in every
test file, a name bound to an `Engine` (`with Engine(...) as x`, `x = Engine(...)`,
`intemporal.testing.engine()`, a parameter typed `Engine`) has no underscore attribute read.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
MAKERS = {"Engine", "AsyncEngine", "engine"}  # `intemporal.testing.engine()` too


def _maker(node: ast.expr | None) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name in MAKERS


def _typed(arg: ast.arg) -> bool:
    """Whether a parameter is annotated as an engine."""
    assert arg.annotation is not None
    return ast.unparse(arg.annotation) in ("Engine", "AsyncEngine", "intemporal.Engine")


def _engine_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.withitem) and _maker(node.context_expr):
            if isinstance(node.optional_vars, ast.Name):
                names.add(node.optional_vars.id)
        elif isinstance(node, ast.Assign) and _maker(node.value):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.arg) and node.annotation is not None and _typed(node):
            names.add(node.arg)
    return names


def _internal_reads(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    engines = _engine_names(tree)
    return [
        (node.lineno, f"{node.value.id}.{node.attr}")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in engines
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_the_check_finds_an_internal_read() -> None:
    # Given test code of each kind that reads an engine's internals, Then each is found
    source = (
        "def t(engine: Engine) -> None:\n    engine._active\n"
        "with Engine(s) as w:\n    w._pool\n"
        "c = Engine(s, worker=False)\nc._mutex\n"
        "with Engine(s) as ok:\n    ok.store._private_of_the_store\n"
    )
    found = sorted(what for _, what in _internal_reads(source))
    assert found == ["c._mutex", "engine._active", "w._pool"]


def test_no_test_reads_engine_internals() -> None:
    found = [
        f"{path.name}:{line}: {what}"
        for path in sorted(TESTS.glob("*.py"))
        for line, what in _internal_reads(path.read_text())
    ]
    assert found == []
