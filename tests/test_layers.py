"""The import rules of the package (README, "Development"): each module imports only lower layers.

Every `intemporal` module has a rank; an import (at the top, under `TYPE_CHECKING`, or inside
a function) must go to a module of a strictly lower rank, so no import cycle can form. Front
ends (the CLI, the web view) are imported by front ends only. A new module gets a rank here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import intemporal

PACKAGE = Path(intemporal.__file__).parent

# Lowest first. Same rank: neither imports the other.
RANKS = {
    # the vocabulary: nothing but the error tree below it
    "errors": 0,
    "trust": 0,
    "clock": 0,
    "events": 1,
    # values
    "pickling": 2,
    "codec": 3,
    "failures": 4,
    # storage, and the observer seam (both speak the journal's vocabulary only)
    "observe": 5,
    "store.runinfo": 4,
    "store.base": 5,
    "tracing": 6,
    "store.safefs": 1,
    "store.uring": 1,
    "store.walfile": 2,
    "store.waldirect": 2,
    "store.wallogged": 3.5,
    "store.walcheckpoint": 2.5,
    "store.wal": 3,
    "store.queueing": 2,
    "queues": 3,
    "store.fileio": 6,
    "store.pending": 5.5,
    "store.index": 6,
    "store.indexlease": 6.2,
    "store.filelist": 6.5,
    "store.filegc": 6.7,
    "store.spares": 6.6,
    "store.memory": 7,
    "store.file": 7,
    "store.locate": 7,
    "store.postgres_schema": 6,
    "store.postgres_wake": 6,
    "store.postgres_lease": 6,
    "store.postgres": 7,
    "store": 8,
    # one run's context: what executes on a thread (attempts), replay, durable operations
    "attempts": 8,
    "deadlines": 8,
    "run_journal": 7.9,
    "activity_steps": 8,
    "replay": 9,
    "async_replay": 10,
    "control": 10,
    "versions": 10,
    # what workflow code calls
    "api": 10,
    "workflow_api": 11,
    "patching": 11,
    "saga": 11,
    "loader": 11,
    "runs": 12,
    "async_api": 12,
    "schedules": 12,
    # above one run: handles, parking, housekeeping, dry replay
    "handle": 13,
    "parking": 13,
    "housekeeping": 13,
    "verify": 14,
    "lineage": 13,
    "start_api": 14,
    "runtime": 14,
    "runtime.executor": 14,
    "runtime.lifecycle": 14,
    "runtime.starting": 14.5,
    "runtime.worker": 14.7,
    "runtime.control": 14.7,
    "runtime.aio": 13,
    "runtime.queues": 13,
    "engine": 15,
    "testing": 16,
    "async_engine": 16,
    "pytest_plugin": 17,
    # front ends
    "cli_coerce": 17.5,
    "cli_render": 18,
    "cli_timeline": 19,
    "cli_support": 19,
    "ui_view": 19,
    "ui_app": 20,
    "cli_inspect": 20,
    "cli_control": 20,
    "cli_worker": 20,
    "cli_queues": 20,
    "cli_gc": 20,
    "ui": 21,
    "cli_run": 21.5,
    "cli": 22,
    "": 30,  # intemporal/__init__.py: re-exports
}
FRONT_ENDS = {
    "cli",
    "cli_coerce",
    "cli_run",
    "cli_control",
    "cli_inspect",
    "cli_render",
    "cli_support",
    "cli_timeline",
    "cli_worker",
    "cli_queues",
    "cli_gc",
    "ui",
    "ui_app",
    "ui_view",
}
# Imports made late, inside a function, against the ranks, each with its reason.
LATE = {
    ("pickling", "loader"): "unpickling a value may load the script that defines it",
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported intemporal module, line, late) for every import in the file."""
    mod = _module(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    package = [p for p in package if p]
    out = []
    tree = ast.parse(path.read_text())
    late_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                targets.append(".".join([*base, node.module]))
            else:
                targets.extend(".".join([*base, a.name]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("intemporal"):
            targets.append(str(node.module)[len("intemporal.") :])
        elif isinstance(node, ast.Import):
            targets.extend(
                a.name[len("intemporal.") :] for a in node.names if a.name.startswith("intemporal.")
            )
        for t in targets:
            # `from .store import x` names the package; `from . import cli_render` a module
            out.append(
                (
                    t if t in RANKS else t.rsplit(".", 1)[0],
                    getattr(node, "lineno", 0),
                    id(node) in late_nodes,
                )
            )
    return out


def _all_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "ui_files" not in p.parts]


def test_every_module_has_a_rank() -> None:
    assert sorted(_module(p) for p in _all_modules() if _module(p) not in RANKS) == []


def test_each_module_imports_only_lower_layers() -> None:
    bad = []
    for path in _all_modules():
        mod = _module(path)
        for target, line, late in _imports(path):
            if target not in RANKS:
                bad.append(f"{mod}:{line} imports unknown {target}")
            elif late and (mod, target) in LATE:
                continue
            elif RANKS[target] >= RANKS[mod]:
                bad.append(f"{mod}:{line} imports {target} (rank {RANKS[target]} >= {RANKS[mod]})")
            elif target in FRONT_ENDS and mod not in FRONT_ENDS:
                bad.append(f"{mod}:{line} imports the front end {target}")
    assert bad == []


def test_no_import_cycle_at_load_time() -> None:
    # The ranks forbid cycles; this checks the graph itself too, late imports left out.
    graph: dict[str, set[str]] = {}
    for path in _all_modules():
        graph[_module(path)] = {t for t, _, late in _imports(path) if not late}
    seen: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in seen:
                visit(nxt, [*stack, node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])
