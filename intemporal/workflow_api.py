"""Functions a workflow calls on its own run: `intemporal.run_id()`, `intemporal.info()`."""

from __future__ import annotations

from .replay import RunContext, WorkflowInfo, current


def _ctx(what: str) -> RunContext:
    ctx = current()
    if ctx is None:
        raise RuntimeError(f"intemporal.{what}() can only be called inside a workflow")
    return ctx


def run_id() -> str:
    """The id of the run this workflow executes in."""
    return _ctx("run_id").run_id


def info() -> WorkflowInfo:
    """The current run's id, workflow name and parent."""
    return _ctx("info").info()
