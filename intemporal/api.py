"""The decorators and stubs users write workflows with.

    @intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=5), timeout=30.0)
    def book_hotel(order: dict) -> str: ...

    @intemporal.workflow
    def booking(order: dict) -> str:
        return book_hotel(order)          # durable inside a run, a plain call outside

Decorated functions keep their signature (`Activity[P, R]`, `Workflow[P, R]`), so type
checkers and IDEs still see the user's function.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from . import attempts, replay
from .clock import check_seconds

_current_run = attempts._current.get  # the run context of the workflow on this thread, or a step

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried: attempt n waits `min(initial_interval * backoff**(n-1), max_interval)`.

    >>> RetryPolicy(max_attempts=5, initial_interval=0.5).delay(3)
    2.0

    An exception whose type is in `non_retryable` (or a subclass) fails at once;
    `max_attempts=1` means no retry. Intervals are in seconds. Raises `ValueError`, naming
    the field, for values that make no sense: `max_attempts` not an int >= 1, an interval
    negative, NaN or infinite, `backoff` below 1 (or NaN, infinite), `non_retryable`
    holding anything but exception classes.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "non_retryable", _check_policy(self))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); never raises.

        Always between 0 and `max_interval`, however large `attempt` is (no overflow).
        """
        initial, cap, backoff = self.initial_interval, self.max_interval, self.backoff
        if initial >= cap or initial == 0:
            return float(min(initial, cap))
        exponent = max(int(attempt), 1) - 1
        # Compared in logarithms first: past the cap, `backoff ** exponent` may overflow.
        log_delay = math.log(initial) + exponent * math.log(backoff)
        if log_delay >= math.log(cap):
            return float(cap)
        try:
            return float(min(initial * backoff**exponent, cap))
        except OverflowError:  # a tiny initial_interval times a huge power: still below the cap
            return float(min(math.exp(log_delay), cap))

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Tell whether failed attempt `attempt` with `exc` is followed by another one."""
        return attempt < self.max_attempts and not isinstance(exc, self.non_retryable)


def _check_policy(policy: RetryPolicy) -> tuple[type[BaseException], ...]:
    """The policy's `non_retryable` as a tuple; `ValueError` naming a field that makes no sense."""
    attempts: Any = policy.max_attempts
    try:
        whole = None if isinstance(attempts, bool) else operator.index(attempts)
    except TypeError:
        whole = None
    if whole is None or whole < 1:
        raise ValueError(f"RetryPolicy.max_attempts must be an int >= 1, not {attempts!r}")
    for field, low in (("initial_interval", 0.0), ("max_interval", 0.0), ("backoff", 1.0)):
        value = getattr(policy, field)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and value >= low):
            raise ValueError(
                f"RetryPolicy.{field} must be a finite number >= {low:g}, not {value!r}"
            )
    given: Any = policy.non_retryable
    classes = tuple(given) if isinstance(given, tuple | list | set | frozenset) else (given,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ValueError(f"RetryPolicy.non_retryable must hold exception classes, not {cls!r}")
    return classes


DEFAULT_RETRY = RetryPolicy()


def is_async(fn: Any) -> bool:
    """Whether `fn` is an `async def` function (a workflow or an activity run on an event loop)."""
    return inspect.iscoroutinefunction(getattr(fn, "fn", fn))


class Activity(Generic[P, R]):
    """A function made durable: inside a workflow each call is journaled and replayed.

    Called outside a workflow (or inside another activity) it simply runs. It keeps the
    function's signature, `__name__`, `__qualname__`, `__doc__` and `__wrapped__`. An
    `async def` activity runs on the engine's event loop; inside an async workflow every
    activity call returns an awaitable. Raises `TypeError` for an async generator.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        if inspect.isasyncgenfunction(fn):
            raise TypeError(f"{fn!r} is an async generator: an activity returns one value")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.retry = retry or DEFAULT_RETRY
        self.timeout = timeout
        functools.update_wrapper(self, fn)
        REGISTRY.note_activity(self)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx: replay.RunContext | None = _current_run()  # type: ignore[assignment]
        if ctx is None:
            return cast(R, attempts.run_plainly(self.fn, args, kwargs))
        if type(ctx) is tuple:  # inside a run's activity (its `attempts.Step`): a plain call
            return self.fn(*args, **kwargs)
        # The hot path of every durable call: no `cast` call, no lookup in a module.
        return ctx.call_activity(self.name, self.fn, args, kwargs, self.retry, self.timeout)

    def __repr__(self) -> str:
        return f"<intemporal.activity {self.name}>"


class Workflow(Generic[P, R]):
    """A function that runs durably when started on an `Engine`.

    Called outside a workflow it runs plainly; inside one it runs as a child run. It keeps
    the function's signature, `__name__`, `__qualname__`, `__doc__` and `__wrapped__`. An
    `async def` workflow executes on an event loop (`intemporal.async_replay`). Raises
    `TypeError` for an async generator.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        queue: str | None = None,
        *,
        timeout: float | None = None,
        _register: bool = True,
    ) -> None:
        if inspect.isasyncgenfunction(fn):
            raise TypeError(f"{fn!r} is an async generator: a workflow returns one value")
        self.fn = fn
        self.name = name or fn.__qualname__
        self.queue = queue
        self.timeout = check_seconds(timeout, "timeout")  # a whole run's, in seconds
        functools.update_wrapper(self, fn)
        if _register:  # a copy loaded from one run's journal is that run's only: not registered
            REGISTRY.add(self)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = replay.current()
        if ctx is None:
            return self.fn(*args, **kwargs)
        return cast(R, ctx.call_child(self, args, kwargs))

    def __repr__(self) -> str:
        return f"<intemporal.workflow {self.name}>"


def import_path(fn: Any) -> str:
    """Where `fn` is defined, as "module:qualname": a workflow's identity.

    A function of a module run as `python -m package.module` is named by that module, as
    another process imports it; one of a script run as `python script.py` is "__main__:...".
    """
    module = getattr(fn, "__module__", None) or "__main__"
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name
    return f"{module}:{getattr(fn, '__qualname__', None) or type(fn).__qualname__}"


class Registry:
    """Every workflow defined in this process, keyed by import path: how a resumed run finds its code.

    Two modules may both define `checkout`: the import path (`"a:checkout"`, `"b:checkout"`)
    tells them apart, and the display name (`name=`) is only a fallback. Defining a second
    workflow, or activity, under a name another import path already uses logs a warning
    naming both (once per pair), since the journal and the CLI know steps by that name.
    """

    def __init__(self) -> None:
        #: (import path, display name) -> workflow; a later definition at the same place wins
        self.workflows: dict[tuple[str, str], Workflow[Any, Any]] = {}
        self._paths: dict[str, set[str]] = {}  # display name -> the import paths using it
        self._activity_paths: dict[str, str] = {}  # activity name -> import path of its function
        self._warned: set[tuple[str, str, str]] = set()

    def add(self, wf: Workflow[Any, Any]) -> None:
        """Register `wf`; warn if another import path defines a workflow of the same name."""
        path = import_path(wf.fn)
        paths = self._paths.setdefault(wf.name, set())
        for other in sorted(paths - {path}):
            self._warn("workflow", wf.name, other, path)
        paths.add(path)
        self.workflows[(path, wf.name)] = wf

    def note_activity(self, act: Activity[Any, Any]) -> None:
        """Remember which function an activity name stands for; warn when it changes."""
        if not hasattr(act.fn, "__qualname__"):
            return  # a partial or a callable object: nothing names its place
        path = import_path(act.fn)
        other = self._activity_paths.setdefault(act.name, path)
        if other != path:
            self._warn("activity", act.name, other, path)
            self._activity_paths[act.name] = path

    def _warn(self, kind: str, name: str, first: str, second: str) -> None:
        if (name, first, second) not in self._warned:
            self._warned.add((name, first, second))
            log.warning(
                "%s name %r is taken: %s and %s both use it; resumed runs find a workflow "
                "by its import path, but the journal and the CLI show steps by name "
                "(give one of them name=...)",
                kind,
                name,
                _shown(first),
                _shown(second),
            )

    def find(self, path: str, name: str | None = None) -> Workflow[Any, Any] | None:
        """The workflow defined at `path` (called `name` when several are), or None."""
        if name is not None and (path, name) in self.workflows:
            return self.workflows[(path, name)]
        found = [wf for (p, _), wf in self.workflows.items() if p == path]
        return found[0] if len(found) == 1 else None

    def named(self, name: str) -> list[Workflow[Any, Any]]:
        """The workflows whose display name is `name`, whatever their import path."""
        found = (self.workflows.get((path, name)) for path in sorted(self._paths.get(name, ())))
        return [wf for wf in found if wf is not None]


def _shown(path: str) -> str:
    """An import path as a user knows it: a script loaded by the loader shows its file."""
    module, _, qualname = path.partition(":")
    if module.startswith(SCRIPT_PREFIX):
        module = getattr(sys.modules.get(module), "__file__", None) or module
    return f"{module}:{qualname}"


log = logging.getLogger("intemporal")
SCRIPT_PREFIX = "__intemporal_script_"  # the module name of a script `loader.load_script` loads
REGISTRY = Registry()


@overload
def activity(fn: Callable[P, R], /) -> Activity[P, R]: ...
@overload
def activity(
    *, name: str | None = None, retry: RetryPolicy | None = None, timeout: float | None = None
) -> Callable[[Callable[P, R]], Activity[P, R]]: ...
def activity(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Activity[P, R] | Callable[[Callable[P, R]], Activity[P, R]]:
    """Make a function a durable activity: `@activity` or `@activity(retry=..., timeout=...)`."""

    def wrap(f: Callable[P, R]) -> Activity[P, R]:
        return Activity(f, name=name, retry=retry, timeout=timeout)

    return wrap(fn) if fn is not None else wrap


@overload
def workflow(fn: Callable[P, R], /) -> Workflow[P, R]: ...
@overload
def workflow(
    *, name: str | None = None, queue: str | None = None, timeout: float | None = None
) -> Callable[[Callable[P, R]], Workflow[P, R]]: ...
def workflow(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    timeout: float | None = None,
) -> Workflow[P, R] | Callable[[Callable[P, R]], Workflow[P, R]]:
    """Make a function a workflow: `@workflow` or `@workflow(name=..., queue=..., timeout=...)`.

    `timeout`: seconds each run may take in all (`engine.start(timeout=...)` overrides
    it); then the run gets `Cancelled` and ends cancelled, "timed out". A child run never
    outlives its parent's deadline. Raises `ValueError` for a timeout not above 0.
    """

    def wrap(f: Callable[P, R]) -> Workflow[P, R]:
        return Workflow(f, name=name, queue=queue, timeout=timeout)

    return wrap(fn) if fn is not None else wrap


def as_workflow(fn: Any) -> Workflow[Any, Any]:
    """Return `fn` as a `Workflow`, decorating a plain function on the fly (for a journal
    that names an undecorated function); `TypeError` for an activity or a non-callable."""
    if isinstance(fn, Workflow):
        return fn
    if callable(fn) and not isinstance(fn, Activity):
        return Workflow(fn)
    raise TypeError(f"{fn!r} is not a workflow function")


def require_workflow(fn: Any, where: str) -> Workflow[Any, Any]:
    """`fn` if it is a `@workflow`; else `TypeError` saying what it is and what `where` expects."""
    if isinstance(fn, Workflow):
        return fn
    raise TypeError(f"{where} takes a @intemporal.workflow, not {not_a_workflow(fn)}")


def not_a_workflow(obj: Any) -> str:
    """What `obj` is, and how to make it a workflow, for an error message."""
    if isinstance(obj, Activity):
        return (
            f"the activity {obj.name!r}: an activity is a step that a workflow calls; "
            f"call it from a @intemporal.workflow function and start that"
        )
    name = getattr(obj, "__qualname__", None)
    if name is not None and callable(obj):
        return f"the plain function {name!r}: decorate it with @intemporal.workflow"
    return f"{type(obj).__name__} {obj!r}"


def stub(
    fn: Callable[P, R], *, retry: RetryPolicy | None = None, timeout: float | None = None
) -> Activity[P, R]:
    """Make any callable a durable activity; options override the decorator's.

    >>> pay = stub(charge, timeout=5.0)
    """
    if isinstance(fn, Activity):
        return Activity(
            fn.fn,
            name=fn.name,
            retry=retry or fn.retry,
            timeout=timeout if timeout is not None else fn.timeout,
        )
    return Activity(fn, retry=retry, timeout=timeout)


class _ProtocolStub:
    """A proxy whose public method calls are durable activities named "Proto.method"."""

    def __init__(
        self,
        proto: type,
        retry: RetryPolicy | None,
        timeout: float | None,
        methods: dict[str, dict[str, Any]],
    ) -> None:
        self._proto, self._retry, self._timeout, self._methods = proto, retry, timeout, methods

    def __getattr__(self, method: str) -> Callable[..., Any]:
        proto = self._proto
        if method.startswith("_") or not callable(getattr(proto, method, None)):
            raise AttributeError(f"{proto.__qualname__} has no public method {method!r}")
        opts = self._methods.get(method, {})
        name = f"{proto.__qualname__}.{method}"

        def call_impl(*args: Any, **kwargs: Any) -> Any:
            ctx = replay.current() or replay.activity_context()
            if ctx is None:
                raise RuntimeError(f"{name} called outside a workflow: no implementation")
            return getattr(ctx.protocol_impl(proto), method)(*args, **kwargs)

        call_impl.__qualname__ = name
        act: Activity[..., Any] = Activity(
            call_impl,
            name=name,
            retry=opts.get("retry", self._retry),
            timeout=opts.get("timeout", self._timeout),
        )
        return act


def stub_protocol(
    proto: Callable[..., T],
    *,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    methods: dict[str, dict[str, Any]] | None = None,
) -> T:
    """Return a proxy of `proto` whose method calls are durable activities "Proto.method".

    `proto` is any class: a `typing.Protocol`, an ABC or a plain class (typed as a callable
    so that type checkers accept a Protocol and an ABC, and see the proxy as a `Proto`).
    The implementation is registered at start: `engine.start(wf, protocols={Proto: Impl()})`.
    `methods={"query": {"retry": RetryPolicy(max_attempts=1)}}` sets one method's options.
    """
    if not isinstance(proto, type):
        raise TypeError(f"stub_protocol() takes a class, not {proto!r}")
    return cast(T, _ProtocolStub(proto, retry, timeout, dict(methods or {})))
