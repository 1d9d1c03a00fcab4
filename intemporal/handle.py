"""`RunHandle`: a reference to one run, its status and its result, from any process.

Also the record of one execution of a run in this process (`Execution`), which a handle
waits on when the run executes here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .clock import Clock
from .codec import DILL_TAG, decode
from .errors import (
    Cancelled,
    DillRefused,
    JournalCorrupted,
    RemoteError,
    RunNotFound,
    RunStuck,
    SerializationError,
    StoreError,
    StoreFailure,
    store_call,
)
from .events import EVENT_SET, TERMINAL_EVENTS
from .failures import decode_error, rebuild_error
from .store import Event, Lease, RunInfo, RunStatus

R = TypeVar("R")

if TYPE_CHECKING:
    from .api import Workflow
    from .replay import RunContext


class EngineCalls(Protocol):
    """The public calls of `intemporal.Engine` a handle uses, and nothing else of it
    (`tests/test_handle_calls.py` checks): its `codec` and `clock`, `halted` (run id -> the
    error its execution here stopped on, unrecorded), `changed` (a `threading.Condition`
    notified whenever an execution here stops), `execution(run_id)` (the `Execution` of
    the run in this engine now, or None), `get_run`, `history`, `cancel` and `signal`."""

    codec: str
    clock: Clock
    halted: dict[str, BaseException]
    changed: threading.Condition

    def execution(self, run_id: str) -> Execution | None: ...
    def get_run(self, run_id: str) -> RunInfo: ...
    def history(self, run_id: str) -> list[Event]: ...
    def cancel(self, run_id: str) -> None: ...
    def signal(
        self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None
    ) -> None: ...


#: the `done` of every parked execution: already set, shared (a parked run keeps no lock)
DONE = threading.Event()
DONE.set()


class Execution:
    """One run executing (or queued to execute) in this engine, and how it ended: what
    `Engine.execution(run_id)` returns and a `RunHandle` waits on.

    A handle reads `run_id`, `done` (a `threading.Event`, set once this execution stopped),
    `outcome` (None while it executes; then `("ok", value)`, `("error", exception)`,
    `("continued", next_run_id)` or `("stopped", why)` for a run that suspended or that
    another process executes) and `ctx` (its `RunContext`, while it executes). The rest is
    the executor's (`runtime/executor.py`).
    """

    __slots__ = (
        "args",
        "claiming",
        "ctx",
        "done",
        "handoff",
        "inbox_cursor",
        "inbox_lock",
        "inline",
        "kwargs",
        "outcome",
        "parent",
        "protocols",
        "rewake",
        "run_id",
        "start_at",
        "terminal",
        "wf",
    )

    def __init__(
        self,
        run_id: str,
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        protocols: dict[type, Any],
        parent: str | None = None,
    ) -> None:
        self.run_id, self.wf, self.args, self.kwargs = run_id, wf, args, kwargs
        self.protocols, self.parent = protocols, parent
        self.done = threading.Event()
        self.ctx: RunContext | None = None
        # ("ok", value) | ("error", exc) | ("stopped", exc); None while executing
        self.outcome: tuple[str, Any] | None = None
        self.inbox_cursor = 0
        self.inbox_lock = threading.Lock()  # one reader of its inbox at a time: in its order
        self.rewake = False  # a message came while executing: execute again if it suspends
        self.inline = False  # executed on its parent's thread
        self.terminal = False  # this execution recorded the run's end
        self.start_at: float | None = None  # start(delay=): not launched before (epoch s)
        # Launched without a lease, its thread about to claim the run: an adopter here that
        # holds the claim meanwhile hands its lease over (`handoff`) instead of dropping it.
        self.claiming = False
        self.handoff: Lease | None = None

    def finish(self, kind: str, value: Any = None, terminal: bool = False) -> None:
        self.outcome, self.terminal = (kind, value), terminal

    def raise_halt(self) -> None:
        """Raise what stopped this execution unrecorded, to a parent that executed it inline:
        a store failure as `StoreFailure`, an interrupt (KeyboardInterrupt & co) as it is."""
        kind, value = self.outcome or ("stopped", None)
        if kind != "error" or self.terminal:
            return
        if isinstance(value, StoreError | JournalCorrupted):
            raise StoreFailure(value)
        if isinstance(value, BaseException) and not isinstance(value, Exception):
            raise value


class RunHandle(Generic[R]):
    """A reference to one run: its id, status and result (`RunHandle[R]`: `result()` is an `R`).

    >>> handle = engine.start(booking, order)
    >>> handle.result(timeout=60)
    """

    def __init__(
        self, engine: EngineCalls, run_id: str, execution: Execution | None = None
    ) -> None:
        self.engine, self.run_id, self._exe = engine, run_id, execution

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    def status(self) -> RunStatus:
        """The run's current `RunStatus`."""
        return self.engine.get_run(self.run_id).status

    def result(self, timeout: float | None = None) -> R:
        """Wait for the run to finish: return its value, or raise its exception (or `Cancelled`).

        Raises `TimeoutError` if it has not finished within `timeout` seconds, and
        `StoreUnavailable` if the store failed under the run (it stays resumable), instead
        of waiting; an interrupt the workflow raised (`KeyboardInterrupt`, `SystemExit`)
        is raised again here. On a virtual clock (`intemporal.testing`) waiting here lets
        the run's timers fire at once. Called on the event loop its async run executes on,
        it raises `RuntimeError` (waiting would stop that loop): `await result_async()` there.
        """
        exe = self._exe or self.engine.execution(self.run_id)
        if exe is not None and exe.ctx is not None and _on_its_loop(exe.ctx):
            raise RuntimeError(
                f"handle.result() on the event loop that executes run {self.run_id!r} would "
                f"never return: use `await handle.result_async()`"
            )
        with self.engine.clock.awaited():
            return self._wait(timeout)

    def _wait(self, timeout: float | None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.005
        run_id = self.run_id  # moves along a chain of runs that continued as new
        while True:
            exe = self._exe or self.engine.execution(run_id)
            self._exe = None
            if exe is not None:
                if not exe.done.wait(_remaining(deadline)):
                    break
                if exe.outcome is not None and exe.outcome[0] == "ok":
                    return exe.outcome[1]
                if exe.outcome is not None and exe.outcome[0] == "error":
                    raise exe.outcome[1]
                if exe.outcome is not None and exe.outcome[0] == "continued":
                    run_id = exe.outcome[1]
                    continue
            with store_call(run_id, f"read run {run_id!r}", caller=True):
                info = chain_end(self.engine.get_run, self.engine.get_run(run_id))
            if info.run_id != run_id:
                run_id = info.run_id
                continue
            if info.status.finished:
                return final_outcome(info, self.engine)
            if info.status is RunStatus.STUCK:
                raise RunStuck(run_id, info.raw.get("recoveries", 0))
            raise_if_halted(self.engine, run_id)
            left = _remaining(deadline)
            if left == 0:
                break
            # Waiting here, or executed elsewhere: wake on any local change, poll the store.
            with self.engine.changed:
                if self.engine.execution(run_id) is None:
                    self.engine.changed.wait(poll if left is None else min(poll, left))
            poll = min(poll * 2, 0.1)
        raise TimeoutError(f"run {self.run_id!r} did not finish within {timeout} s")

    async def result_async(self, timeout: float | None = None) -> R:
        """`result()` for async code: await the run's end without blocking the event loop.

        Returns the run's value, or raises its exception (or `Cancelled`); `TimeoutError`
        after `timeout` seconds; `StoreUnavailable` if the store failed under the run.
        """
        with self.engine.clock.awaited():  # a virtual clock may skip the run's waits
            return await self._wait_async(timeout)

    async def _wait_async(self, timeout: float | None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.002
        while True:
            finished, value = self._poll()
            if finished:
                return value
            left = _remaining(deadline)
            if left == 0:
                raise TimeoutError(f"run {self.run_id!r} did not finish within {timeout} s")
            await asyncio.sleep(poll if left is None else min(poll, left))
            poll = min(poll * 1.5, 0.05)

    def _poll(self) -> tuple[bool, Any]:
        """`(True, value)` if the run finished (its error raised), else `(False, None)`."""
        exe = self._exe or self.engine.execution(self.run_id)
        if exe is not None and not exe.done.is_set():
            self._exe = exe
            return False, None
        self._exe = None
        if exe is not None and exe.outcome is not None and exe.outcome[0] == "ok":
            return True, exe.outcome[1]
        if exe is not None and exe.outcome is not None and exe.outcome[0] == "error":
            raise exe.outcome[1]
        with store_call(self.run_id, f"read run {self.run_id!r}", caller=True):
            info = self.engine.get_run(self.run_id)
        if info.status.finished:
            return True, final_outcome(info, self.engine)
        raise_if_halted(self.engine, self.run_id)
        return False, None

    def cancel(self) -> None:
        """Request cancellation of the run (see `Engine.cancel`)."""
        self.engine.cancel(self.run_id)

    def signal(self, name: str, payload: Any = None, signal_id: str | None = None) -> None:
        """Send the run a signal (see `Engine.signal`)."""
        self.engine.signal(self.run_id, name, payload, signal_id=signal_id)


def _on_its_loop(ctx: RunContext) -> bool:
    """Whether this thread runs the event loop that executes `ctx`'s async run."""
    loop = getattr(ctx, "loop", None)
    try:
        return loop is not None and asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs on this thread
        return False


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def chain_end(get_run: Callable[[str], RunInfo], info: RunInfo) -> RunInfo:
    """The last run of the chain `info` starts: each run that continued as new (completed,
    `continued_as` in its outcome) is followed to the next with `get_run`."""
    while info.status is RunStatus.COMPLETED and info.raw.get("continued_as"):
        info = get_run(str(info.raw["continued_as"]))
    return info


def raise_if_halted(engine: EngineCalls, run_id: str) -> None:
    """Raise the error the run's execution here stopped on, unrecorded (`Engine.halted`):
    a store failure, an interrupt. Nothing will change the run until it is resumed."""
    halted = engine.halted.get(run_id)
    if halted is not None and engine.execution(run_id) is None:
        raise halted


def final_outcome(info: RunInfo, engine: EngineCalls, ctx: RunContext | None = None) -> Any:
    """The value of a finished run, or its exception raised again.

    Decoded with the engine's codec: `codec="json"` refuses a pickled value (`DillRefused`).
    For a parent replaying its child's outcome (`ctx`), an outcome that cannot be read
    back as it was first seen stops the parent instead (`RunContext.halt`).
    """
    where = f"the outcome of run {info.run_id!r}"
    err = info.raw.get("error")
    try:
        if info.status is RunStatus.COMPLETED:
            data = info.raw.get("result")
            if type(data) is dict and DILL_TAG in data:  # only then worth a read for the message
                where += _line_of(engine, info)
            return decode(data, engine.codec, where)
        exc = rebuild_error(err, engine.codec, where) if err else None
    except (RemoteError, SerializationError) as bad:
        if ctx is not None:
            ctx.halt(bad)
        if isinstance(bad, DillRefused) and err:  # again, with the line in the message
            raise decode_error(err, engine.codec, where + _line_of(engine, info)) from None
        raise
    if info.status is RunStatus.CANCELLED and not isinstance(exc, Cancelled):
        exc = Cancelled(f"run {info.run_id!r} was cancelled")
    assert exc is not None
    raise exc


def _line_of(engine: EngineCalls, info: RunInfo) -> str:
    """ " (journal line N)" for the event that ended the run, as far as it can be read."""
    try:
        events = engine.history(info.run_id)
    except Exception:
        return ""
    found = [i for i, e in enumerate(events) if e == info.raw]
    return f" (journal line {found[-1] + 1})" if found else ""


def wait_for_event(engine: EngineCalls, run_id: str, key: str, timeout: float | None) -> Any:
    """The latest value run `run_id` set under `key`, waiting for a first one (`get_event`).

    A run that does not exist yet is waited for too (a client may ask before it starts
    the run): `RunNotFound` if it still does not exist when `timeout` passes.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = 0.005
    while True:
        try:
            events = engine.history(run_id)
        except RunNotFound:
            if _remaining(deadline) == 0:
                raise
            events = []
        values = [e["value"] for e in events if e["type"] == EVENT_SET and e.get("key") == key]
        if values:
            line = 1 + max(
                i for i, e in enumerate(events) if e["type"] == EVENT_SET and e.get("key") == key
            )
            where = f"event {key!r} of run {run_id!r} (journal line {line})"
            return decode(values[-1], engine.codec, where)
        if events and events[-1]["type"] in TERMINAL_EVENTS:
            return None
        raise_if_halted(engine, run_id)
        left = _remaining(deadline)
        if left == 0:
            return None
        time.sleep(poll if left is None else min(poll, left))  # the writer may be elsewhere
        poll = min(poll * 2, 0.1)
