"""What the `intemporal` command's commands share: user errors, the store, modules, arguments.

A user error prints one red line on stderr and exits 1 (2 for a usage error);
`INTEMPORAL_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from enum import StrEnum
from types import ModuleType
from typing import Any

import typer
from rich.text import Text

from . import cli_render as render
from .engine import Engine
from .errors import IntemporalError
from .store import RunStatus, Store, open_store


class UserError(Exception):
    """Raised by a command for a mistake the user can fix: printed as one red line."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# Errors a user causes and can fix; anything else is a bug and keeps its traceback.
_USER_ERRORS = (UserError, IntemporalError, ValueError, OSError, ImportError, NotImplementedError)


def _fail(message: str, code: int = 1) -> typer.Exit:
    render.console(stderr=True).print(Text(f"error: {message}", style="bold red"), soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise _fail("interrupted; unfinished runs stay durable and resumable", 130) from None
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
        raise _fail(str(exc) or type(exc).__name__, getattr(exc, "code", 1)) from None


# -- the store, modules and arguments ---------------------------------------------------------
def _location(ctx: typer.Context) -> str:
    return ctx.obj or os.environ.get("INTEMPORAL_HOME") or ".intemporal"


def _open(ctx: typer.Context, create: bool = False) -> Store:
    """The store named by --store; a read command refuses to create a missing directory.

    Its location is shown with any password hidden (`redact`); a warning about it (a
    store others may write to) is printed as one yellow line on stderr.
    """
    where = _location(ctx)
    is_path = where != "memory:" and "://" not in where
    if is_path and not create and not os.path.isdir(where):
        raise UserError(f"no store at {where}: pass --store PATH or set $INTEMPORAL_HOME")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_store(where, strict=bool(ctx.meta.get(STRICT)))
    for warning in caught:
        message = Text(f"warning: {warning.message}", style="yellow")
        render.console(stderr=True).print(message, soft_wrap=True)
    return store


#: `ctx.meta` key: `intemporal --strict` refuses a store others may write to
STRICT = "intemporal.strict"


def _engine(ctx: typer.Context, **options: Any) -> Engine:
    return Engine(_open(ctx, create=options.pop("create", False)), **options)


def _add_cwd() -> None:
    # As `python -m` does: modules next to where the command runs are importable.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import(module: str) -> ModuleType:
    _add_cwd()
    try:
        return importlib.import_module(module)
    except Exception as exc:  # the module's own top level may raise anything
        raise UserError(f"cannot import module {module!r}: {type(exc).__name__}: {exc}") from exc


def _load_target(target: str) -> Any:
    module, sep, qualname = target.partition(":")
    if not (sep and module and qualname):
        raise UserError(f"expected MODULE:WORKFLOW (e.g. shop.flows:checkout), got {target!r}", 2)
    obj: Any = _import(module)
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module {module!r} has no workflow {qualname!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{target} is a {type(obj).__name__}, not a workflow function")
    return obj


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


#: what `list --status` takes: a run's six states, and "unreadable" (a damaged journal)
STATES = (*RunStatus, RunStatus.UNREADABLE)


def parse_state(text: str | None) -> RunStatus | None:
    """The `RunStatus` named by `text` (any case), None for None; a usage error otherwise."""
    if text is None:
        return None
    try:
        return RunStatus(text.lower())
    except ValueError:
        raise UserError(f"--status {text!r}: use one of {', '.join(STATES)}", 2) from None


class Finished(StrEnum):
    """The states `gc --status` takes: the finished ones."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """Seconds in an age such as "90s", "15m", "12h", "7d" or "2w" (a bare number is seconds)."""
    m = _AGE.fullmatch(text.strip().lower())
    if m is None:
        raise UserError(f"--older-than {text!r}: use a number and s, m, h, d or w, e.g. 7d", 2)
    return float(m.group(1)) * _UNITS[m.group(2)]
