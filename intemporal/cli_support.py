"""What the `intemporal` command's commands share: the app, options, user errors, the store.

A user error prints one red line on stderr and exits 1 (2 for a usage error); with
`--json` it is one JSON object on stderr instead (`{"error": ..., "code": ...}`).
`INTEMPORAL_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.text import Text
from typer._click import exceptions as click
from typer.core import TyperGroup

from . import cli_coerce
from . import cli_render as render
from .cli_render import Outcome
from .errors import IntemporalError
from .store import (
    Event,
    Located,
    RunInfo,
    RunStatus,
    Store,
    check_run_id,
    locate,
    open_store,
    redact,
)

if TYPE_CHECKING:  # loaded by the commands that run workflows, not by `list` or `show`
    from .engine import Engine


class UserError(Exception):
    """Raised by a command for a mistake the user can fix: printed as one red line."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# Errors a user causes and can fix; anything else is a bug and keeps its traceback.
_USER_ERRORS = (UserError, IntemporalError, ValueError, OSError, ImportError, NotImplementedError)


def _fail(message: str, code: int = 1, as_json: bool = False) -> typer.Exit:
    """Say `message` on stderr (red line, or a JSON object with --json); the Exit to raise."""
    if as_json:
        sys.stderr.write(json.dumps({"error": message, "code": code}) + "\n")
        sys.stderr.flush()
    else:
        text = Text(f"error: {message}", style="bold red")
        render.console(stderr=True).print(text, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _user_errors(as_json: bool = False) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise _fail(
            "interrupted; unfinished runs stay durable and resumable", 130, as_json
        ) from None
    except BrokenPipeError:  # the reader left (`intemporal list --json | head`): stop quietly
        with contextlib.suppress(Exception):  # and keep the exit-time flush from failing too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None
    except RecursionError:  # a journal (or an argument) nested deeper than Python can follow
        if os.environ.get("INTEMPORAL_DEBUG"):
            raise
        raise _fail("a value is nested too deep to read or show (RecursionError)") from None
    except _USER_ERRORS as exc:
        if os.environ.get("INTEMPORAL_DEBUG"):
            raise
        raise _fail(str(exc) or type(exc).__name__, getattr(exc, "code", 1), as_json) from None


class JsonErrorsGroup(TyperGroup):
    """The command group: with `--json` anywhere on the line, a usage error is JSON too."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kw: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        json_errors = "--json" in argv and standalone_mode
        try:
            code = super().main(
                argv, prog_name, complete_var, not json_errors, windows_expand_args, **kw
            )
            if not json_errors:
                return code
        except click.ClickException as exc:
            raise SystemExit(_fail(exc.format_message(), exc.exit_code, True).exit_code) from None
        except typer.Abort:
            raise SystemExit(_fail("aborted", 1, True).exit_code) from None
        raise SystemExit(code if isinstance(code, int) else 0)


cli_coerce.install()  # usual option values read without Pydantic: a faster start

app = typer.Typer(
    name="intemporal",
    cls=JsonErrorsGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets; never print them
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # click's plain help: no `<bool>` metavars, choices kept whole
)

_STORE_HELP = (
    "The store: a directory (file store) or a URL. Default: $INTEMPORAL_HOME, else the "
    "nearest .intemporal in this folder or a parent, else ./.intemporal."
)
StoreOption = Annotated[str | None, typer.Option(metavar="PATH_OR_URL", help=_STORE_HELP)]


StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        envvar="INTEMPORAL_STRICT",
        help="Refuse a store folder that group or others may write to, or another user owns.",
    ),
]


@app.callback()
def _root(ctx: typer.Context, store: StoreOption = None, strict: StrictOption = False) -> None:
    """Durable workflows from the terminal: list, inspect, start, resume, cancel and signal runs.

    The store is --store PATH_OR_URL, else $INTEMPORAL_HOME, else the nearest .intemporal
    directory in this folder or a parent (as git finds .git), else ./.intemporal: the same
    rule as Engine(store=None). Every command takes --json.

    \b
    Examples:
      intemporal list --status failed
      intemporal show order-42
      intemporal resume --all
    """
    ctx.obj = store  # the location, read by _open
    ctx.meta[STRICT] = strict
    _add_cwd()
    _show_warnings()


F = TypeVar("F", bound=Callable[..., Any])


def command(name: str | None = None) -> Callable[[F], F]:
    """Register a command whose user errors print one red line (JSON with --json), no traceback."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with _user_errors(bool(kwargs.get("as_json"))):
                return fn(*args, **kwargs)

        app.command(name or fn.__name__)(guarded)
        return fn

    return register


_IMPORT_HELP = (
    "Import MODULE (or load the script at a path ending in .py) first, so its workflows "
    "are found (repeatable)."
)
ImportOption = Annotated[
    list[str] | None, typer.Option("--import", "-i", metavar="MODULE", help=_IMPORT_HELP)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, one object per line.")]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run id.")]
RunsArg = Annotated[list[str], typer.Argument(metavar="RUN", help="The run ids.")]
TimeoutOption = Annotated[
    float | None,
    typer.Option(metavar="SECONDS", help="Stop waiting after SECONDS (runs stay resumable)."),
]


# -- the store, modules and arguments ---------------------------------------------------------
def _located(ctx: typer.Context) -> Located:
    return locate(ctx.find_root().obj)


def _location(ctx: typer.Context) -> str:
    return _located(ctx).where


def _open(ctx: typer.Context, create: bool = False) -> Store:
    """The store as `locate` finds it; a read command refuses to create a missing directory."""
    found = _located(ctx)
    where = found.where
    is_path = where != "memory:" and "://" not in where  # a URL is the store's to refuse
    if is_path and not create and not os.path.isdir(where):
        raise UserError(
            f"no store at {redact(where)} ({found.looked_text()}): pass --store PATH, set "
            "$INTEMPORAL_HOME, or run from the project folder that holds .intemporal"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store(where, strict=bool(ctx.meta.get(STRICT)))
    for warning in caught:  # a store others may write to: one yellow line on stderr
        message = Text(f"warning: {warning.message}", style="yellow")
        render.console(stderr=True).print(message, soft_wrap=True)
    return store


#: `ctx.meta` key: `intemporal --strict` refuses a store others may write to
STRICT = "intemporal.strict"


def _engine(ctx: typer.Context, **options: Any) -> Engine:
    from .engine import Engine

    return Engine(_open(ctx, create=options.pop("create", False)), **options)


class Reader:
    """What the commands that only look (`list`, `show`, `tree`, `count`) ask of an `Engine`,
    answered by the store alone: a process that imports no engine starts faster."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get_run(self, run_id: str) -> RunInfo:
        """As `Engine.get_run`: the run's `RunInfo`; `RunNotFound` for an unknown id."""
        return self.store.summary(check_run_id(run_id))

    def history(self, run_id: str) -> list[Event]:
        """As `Engine.history`: the run's journal events, oldest first."""
        return self.store.read(check_run_id(run_id))

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _reader(ctx: typer.Context) -> Reader:
    return Reader(_open(ctx))


def _add_cwd() -> None:
    # As `python -m` does: modules next to where the command runs are importable.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import(module: str) -> ModuleType:
    """Import MODULE, or load a script given by its path (`--import path/to/shop.py`)."""
    _add_cwd()
    from .loader import import_code

    try:
        return import_code(module)
    except Exception as exc:  # the module's own top level may raise anything
        raise UserError(f"cannot import module {module!r}: {type(exc).__name__}: {exc}") from exc


class _WarningLine(logging.Handler):
    """Prints the loader's warnings as one yellow line on stderr (a script that starts runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = Text(f"warning: {record.getMessage()}", style="yellow")
        render.console(stderr=True).print(text, soft_wrap=True)


def _show_warnings() -> None:
    log = logging.getLogger("intemporal.loader")
    if not any(isinstance(h, _WarningLine) for h in log.handlers):
        handler = _WarningLine(logging.WARNING)
        log.addHandler(handler)


def _load_target(target: str) -> Any:
    module, sep, qualname = target.partition(":")
    if not (sep and module and qualname):
        raise UserError(f"expected MODULE:WORKFLOW (e.g. shop.flows:checkout), got {target!r}", 2)
    if module.endswith(".py") or "/" in module or os.sep in module:
        raise UserError(_module_hint(module, qualname), 2)
    from .api import Workflow, not_a_workflow

    obj: Any = _import(module)
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module {module!r} has no workflow {qualname!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Workflow):
        raise UserError(f"{target} is {not_a_workflow(obj)}; `start` takes a @intemporal.workflow")
    return obj


def _module_hint(path: str, qualname: str) -> str:
    """What to type instead of a file path in MODULE:WORKFLOW."""
    rel = os.path.relpath(os.path.abspath(path))
    stem = rel[:-3] if rel.endswith(".py") else rel
    dotted = stem.replace(os.sep, ".").replace("/", ".")
    if stem.startswith("..") or not dotted.replace(".", "").replace("_", "").isalnum():
        folder = os.path.dirname(os.path.abspath(path))
        name = os.path.basename(stem)
        return (
            f"MODULE is a module name, not a file: run from {folder} (or add it to "
            f"PYTHONPATH) and give {name}:{qualname}"
        )
    return f"MODULE is a module name, not a file: did you mean {dotted}:{qualname}?"


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        detail = (
            f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
        )
        raise UserError(f"{what} is not valid JSON ({detail}): {render.elide(text, 60)}") from None


def _parse_args(text: str | None) -> tuple[list[Any], dict[str, Any]]:
    if text is None:
        return [], {}
    value = _parse_json(text, "ARGS_JSON")
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        return [], value
    raise UserError(
        "ARGS_JSON must be a JSON list of arguments ('[\"order-42\", 100]') "
        'or an object of keyword arguments (\'{"order_id": "order-42"}\')'
    )


class Finished(StrEnum):
    """The states `gc --status` takes: the finished ones."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str, option: str = "--older-than", example: str = "7d") -> float:
    """Seconds in an age such as "90s", "15m", "12h", "7d" or "2w" (a bare number is seconds)."""
    m = _AGE.fullmatch(text.strip().lower())
    if m is None:
        raise UserError(f"{option} {text!r}: use a number and s, m, h, d or w, e.g. {example}", 2)
    return float(m.group(1)) * _UNITS[m.group(2)]


def print_outcome(outcome: Outcome, as_json: bool) -> None:
    """The result alone on stdout when the run completed, else the outcome; exit its code."""
    if outcome.status == RunStatus.COMPLETED and not as_json:
        typer.echo(render.value_text(outcome.value))
    else:
        render.report(render.console(), outcome, as_json)
    if outcome.code:
        raise typer.Exit(outcome.code)
