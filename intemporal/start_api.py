"""The typed face of `Engine.start` and `Engine.run`: a workflow's own arguments, checked.

    handle = engine.start(checkout, "order-42", 100)         # RunHandle[list[str]]
    n: int = engine.run(checkout, "order-42", 100)           # a type error: list[str]
    engine.run(checkout, 42, "x")                            # a type error: (str, int)
    engine.start(wf, order, approval_timeout=5)              # the workflow's keyword

A type checker sees `start(fn: Workflow[P, R], *args: P.args, **kwargs: P.kwargs) ->
RunHandle[R]`. Python's typing cannot put keyword options between `*args: P.args` and
`**kwargs: P.kwargs` (PEP 612), so a call that passes an engine option (`run_id=`,
`queue=`, ...) matches a second signature: its result type is still `R`, and the option
is checked, but the workflow's arguments are not.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from .api import Workflow
from .clock import check_seconds
from .handle import RunHandle

P = ParamSpec("P")
R = TypeVar("R")

#: The engine's own options of `start`/`run`; any other keyword is the workflow's.
OPTIONS = ("run_id", "queue", "priority", "delay", "timeout", "protocols", "kwargs")


class StartOptions:
    """The options of one `start`: keyword-only, with the defaults of `Engine.start`."""

    def __init__(
        self,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        delay: float | timedelta | None = None,
        timeout: float | None = None,
        protocols: Mapping[Any, Any] | None = None,
    ) -> None:
        self.run_id, self.queue, self.protocols = run_id, queue, dict(protocols or {})
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {priority!r}")
        self.priority = priority
        self.timeout = check_seconds(timeout, "timeout")  # the whole run's: `deadlines.py`
        self.delay = _seconds(delay)


def _seconds(delay: float | timedelta | None) -> float | None:
    """`delay` in seconds (a number or a `timedelta`); `ValueError` if negative or not finite."""
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"delay must be seconds (a number) or a timedelta, not {delay!r}")
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
    return float(seconds)


def workflow_kwargs(given: Mapping[str, Any] | None, passed: dict[str, Any]) -> dict[str, Any]:
    """The workflow's keyword arguments: `kwargs={...}` and those passed straight through.

    Raises `TypeError` naming a keyword given both ways.
    """
    both = sorted(set(given or {}) & set(passed))
    if both:
        raise TypeError(f"keyword argument {both[0]!r} given both directly and in kwargs=")
    return {**(given or {}), **passed}


class StartAPI:
    """`start` and `run`, typed from the workflow's signature (mixed into `Engine`)."""

    _start: Callable[..., RunHandle[Any]]  # the engine's: (fn, args, kwargs, StartOptions, inline)

    @overload
    def start(  # an async workflow: its handle's result is what the coroutine returns
        self, fn: Workflow[P, Coroutine[Any, Any, R]], /, *args: Any, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(self, fn: Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, run_id: str | None, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, queue: str | None, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, priority: int, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, delay: float | timedelta | None, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, timeout: float | None, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, protocols: Mapping[Any, Any] | None, **kw: Any
    ) -> RunHandle[R]: ...
    @overload
    def start(
        self, fn: Workflow[P, R], /, *args: Any, kwargs: Mapping[str, Any] | None, **kw: Any
    ) -> RunHandle[R]: ...

    def start(self, fn: Any, /, *args: Any, **kwargs: Any) -> RunHandle[Any]:
        """Start workflow `fn(*args, **kwargs)` as a durable run; return its `RunHandle` at once.

        Keywords other than the options below are the workflow's own
        (`engine.start(wf, order, approval_timeout=5)`); `kwargs={...}` passes them too,
        and is how to pass a workflow keyword that has an option's name.

        - `run_id`: 1-200 characters of letters, digits and `-_.:@/` (default: random hex).
          Starting an existing id returns a handle to that run (and resumes it if it was
          left behind); the same id for another workflow raises `RunConflict`.
        - `queue`: the queue to record the run on (default: the workflow's).
        - `priority`: an int; within a queue, runs with a lower value start first (ties:
          the older first) when the queue's limits hold runs back (`intemporal.Queue`).
        - `delay`: seconds (or a `timedelta`) the run stays pending before it starts.
        - `timeout`: seconds (or a `timedelta`) the whole run may take, counted from now
          (default: the workflow's `@workflow(timeout=...)`, else none): then the run gets
          `Cancelled` (its sagas roll back) and ends cancelled, "timed out".
        - `protocols`: `{Proto: implementation}` for `stub_protocol` proxies.

        Raises `TypeError` if `fn` is not a `@workflow` (an activity, a plain function),
        `SerializationError` naming an argument that cannot be stored.
        """
        return self._begin(fn, args, kwargs, inline=False)

    @overload
    def run(self, fn: Workflow[P, Coroutine[Any, Any, R]], /, *args: Any, **kw: Any) -> R: ...
    @overload
    def run(self, fn: Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def run(self, fn: Workflow[P, R], /, *args: Any, run_id: str | None, **kw: Any) -> R: ...
    @overload
    def run(self, fn: Workflow[P, R], /, *args: Any, queue: str | None, **kw: Any) -> R: ...
    @overload
    def run(self, fn: Workflow[P, R], /, *args: Any, priority: int, **kw: Any) -> R: ...
    @overload
    def run(
        self, fn: Workflow[P, R], /, *args: Any, delay: float | timedelta | None, **kw: Any
    ) -> R: ...
    @overload
    def run(self, fn: Workflow[P, R], /, *args: Any, timeout: float | None, **kw: Any) -> R: ...
    @overload
    def run(
        self, fn: Workflow[P, R], /, *args: Any, protocols: Mapping[Any, Any] | None, **kw: Any
    ) -> R: ...
    @overload
    def run(
        self, fn: Workflow[P, R], /, *args: Any, kwargs: Mapping[str, Any] | None, **kw: Any
    ) -> R: ...

    def run(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Start workflow `fn` and wait for its result: `start(...).result()`, same arguments.

        The run executes on the calling thread until it finishes or waits. Raises what
        `start` and `RunHandle.result` raise.
        """
        return self._begin(fn, args, kwargs, inline=True).result()

    def _begin(
        self, fn: Any, args: tuple[Any, ...], given: dict[str, Any], inline: bool
    ) -> RunHandle[Any]:
        """Split the engine's options from the workflow's keywords, then start."""
        options = {name: given.pop(name) for name in OPTIONS if name in given}
        kwargs = workflow_kwargs(options.pop("kwargs", None), given)
        return self._start(fn, args, kwargs, StartOptions(**options), inline)
