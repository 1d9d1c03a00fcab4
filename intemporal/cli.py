"""The `intemporal` command: see, start, resume, cancel and signal runs from a terminal.

    intemporal list --status failed
    intemporal show order-42
    intemporal resume --all
    intemporal replay order-42 --import shop.flows

Every command finds the store as `Engine` does (`intemporal.store.locate`): `--store
PATH_OR_URL`, else `$INTEMPORAL_HOME`, else the nearest `.intemporal` in this folder or a
parent, else `./.intemporal`. The commands live in `cli_run.py` (start, resume, result,
cancel, signal, replay, ui), `cli_gc.py` (gc), `cli_inspect.py` (list, count, show, tree), `cli_control.py`,
`cli_queues.py` and `cli_worker.py`; the app, its root options and what they share in
`cli_support.py`. A user error (an unknown run id, bad JSON, a missing store, a module that
does not import) prints one red line on stderr and exits 1; a usage error exits 2.
`INTEMPORAL_DEBUG=1` shows the traceback instead.

This module is the entry point and stays small: `intemporal list` (or `show`, `tree`,
`count`, `gc`) imports only the module that command lives in, not the engine nor the other
commands, so the commands that only look start fast; any other command line (`--help`
included) loads them all. `from intemporal.cli import app` gives the app with every command.
Kept out of `import intemporal`: Typer and Rich load only when the command runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

#: the commands that only look at runs (and `gc`), and the module each lives in
LOOKING = {
    "list": "cli_inspect",
    "count": "cli_inspect",
    "show": "cli_inspect",
    "tree": "cli_inspect",
    "gc": "cli_gc",  # not only looking, but no engine either: 100,000 runs, every 0.1 s counts
}
_ROOT_VALUES = {"--store"}  # root options that take a value (`--store PATH`)
_HELP = {"--help", "-h"}  # before the command, the root's help: every command listed


def command_name(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not a root option; None
    for none, or when the root's `--help` comes first (`intemporal --help list` lists every
    command, as the root's help does)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _ROOT_VALUES:
            skip = True
        elif arg == "--" or arg in _HELP:
            return None
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    """The console-script entry point: `intemporal COMMAND ...`."""
    for stream in (sys.stdout, sys.stderr):  # a stored lone surrogate is shown escaped,
        reconfigure = getattr(stream, "reconfigure", None)  # not the end of the command
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    module = LOOKING.get(command_name(sys.argv[1:]) or "")
    importlib.import_module(f"intemporal.{module or 'cli_run'}")  # registers its commands
    from .cli_support import app

    app(prog_name="intemporal")


def __getattr__(name: str) -> Any:
    """`app` and the names this module had before it became the entry point: every command
    registered (`from intemporal.cli import app, parse_age`)."""
    if name.startswith("__"):
        raise AttributeError(name)
    from . import cli_run, cli_support

    for module in (cli_run, cli_support):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
