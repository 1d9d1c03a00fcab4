"""What executes on this thread: the run whose workflow or activity it is, and heartbeats.

A context variable (`_current`) says which run's workflow, or which activity attempt (the
run, the activity, its step and attempt), executes on a thread; `run_attempt` sets it
around one attempt of an activity, on the calling thread or, with a timeout, on a daemon
thread. `heartbeat()` reads it to deliver a cancellation to the activity. Nothing here knows the journal: a run context
(`intemporal.replay.RunContext`) is seen through `Attempting`.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ActivityTimeout, Cancelled, IntemporalError


class Attempting(Protocol):
    """A run context as the thread it executes on sees it (`intemporal.replay.RunContext`)."""

    @property
    def run_id(self) -> str: ...

    @property
    def workflow(self) -> str: ...

    @property
    def parent(self) -> str | None: ...

    def _cancel_pending(self) -> bool:
        """Whether the run was cancelled and the cancellation is not delivered yet."""


#: the attempt of a run's activity executing on this thread: (run context, activity name,
#: seq, attempt), made into a `WorkflowInfo` only when `info()` asks (no object built)
Step = tuple[Attempting, str, int, int]

#: What executes on this thread: a run's workflow (its run context), an attempt of a run's
#: activity (its `Step`: a tuple), or neither (None). One variable, not one for each: an
#: attempt sets one (~2,000 instructions less per step on the hot path).
_current: contextvars.ContextVar[Attempting | Step | None] = contextvars.ContextVar(
    "intemporal_run", default=None
)


_plain: contextvars.ContextVar[bool] = contextvars.ContextVar("intemporal_plain", default=False)
# One item per attempt of a run's activity executing now, on any thread (`heartbeat` tells
# a helper thread from a thread outside runs only while there are some): a list, appended
# and popped, costs less than a set of thread ids.
_ATTEMPTS: list[None] = []


def current_run() -> Attempting | None:
    """The run whose workflow executes on this thread (None in an activity, or outside runs)."""
    ctx = _current.get()
    return None if isinstance(ctx, tuple) else ctx


def _step() -> Step | None:
    step = _current.get()
    return step if isinstance(step, tuple) else None


def step_info() -> WorkflowInfo | None:
    """What `intemporal.info()` tells the activity executing on this thread (None outside one)."""
    step = _step()
    if step is None:
        return None
    ctx, name, seq, attempt = step
    return WorkflowInfo(ctx.run_id, ctx.workflow, ctx.parent, name, seq, attempt)


def attempting() -> Attempting | None:
    """The run whose activity executes on this thread (None outside an attempt)."""
    step = _step()
    return None if step is None else step[0]


@dataclass(frozen=True)
class WorkflowInfo:
    """What `intemporal.info()` tells a workflow, or an activity, about its run and step.

    `activity` is the activity's name, `seq` its sequence number and `attempt` its attempt
    (1-based) inside an activity; inside a workflow `activity` and `attempt` are None and
    `seq` is the number of durable operations so far. An activity builds an idempotency
    key from `run_id` and `seq`: the same on every attempt and every resume.
    """

    run_id: str
    workflow: str
    parent: str | None
    activity: str | None = None
    seq: int | None = None
    attempt: int | None = None


def run_attempt(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    step: Step,
) -> Any:
    """Execute one attempt of an activity: `step` is (run context, name, seq, attempt)."""
    # Inside an activity, decorated calls run plainly and heartbeat() finds this run.
    token = _current.set(step)
    _ATTEMPTS.append(None)
    try:
        if timeout is None:
            return fn(*args, **kwargs)  # inline: no thread hand-off on the hot path
        return _run_with_timeout(step[1], fn, args, kwargs, timeout)
    finally:
        _ATTEMPTS.pop()
        _current.reset(token)


def enter_attempt(step: Step) -> None:
    """Mark the current context as executing the attempt `step` of a run's activity: for an
    async activity, called in the fresh context (`contextvars.copy_context`) of its task."""
    _current.set(step)


def _run_with_timeout(
    name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
) -> Any:
    """Run one attempt on a daemon thread and give up waiting after `timeout` seconds.

    Python cannot kill a thread: a timed-out attempt is abandoned, not stopped, which is
    why activities should be idempotent and why the thread is a daemon.
    """
    done = threading.Event()
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"intemporal-activity-{name}", daemon=True).start()
    if not done.wait(timeout):
        raise ActivityTimeout(f"activity {name!r} timed out after {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_plainly(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call an activity outside any run (a test, a REPL): `heartbeat()` in it does nothing."""
    token = _plain.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _plain.reset(token)


HEARTBEAT_THREAD = (
    "intemporal.heartbeat() was called on a thread that has no activity context (a thread "
    "or a pool the activity started), so it cannot see the run's cancellation. Call it on "
    "the activity's own thread, or run the helper under the activity's context: "
    "threading.Thread(target=contextvars.copy_context().run, args=(fn, ...)) or "
    "pool.submit(contextvars.copy_context().run, fn, ...), with copy_context() called on "
    "the activity's thread"
)


def heartbeat() -> None:
    """Tell the engine an activity is alive; raise `Cancelled` if its run was cancelled.

    It must run on the activity's thread, or in a thread that runs under a copy of the
    activity's context (`contextvars.copy_context().run`). Called on another thread while
    this process executes activities, it raises `IntemporalError` saying so, instead of
    silently missing a cancellation. In a workflow, or in an activity called plainly
    outside any run, it does nothing.
    """
    step = _current.get()
    if type(step) is tuple:
        ctx = step[0]
        if ctx._cancel_pending():
            raise Cancelled(f"run {ctx.run_id!r} was cancelled")
        return
    if _ATTEMPTS and step is None and not _plain.get():
        raise IntemporalError(HEARTBEAT_THREAD)
