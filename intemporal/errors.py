"""The errors intemporal raises, as one rooted tree.

    Exception
     +-- IntemporalError                 every library error below derives from it
     |    +-- RunNotFound                no run has that id
     |    +-- RunConflict                the id is taken by a run of another workflow
     |    +-- NonDeterminismError        the code asks for a different step than the journal holds
     |    +-- JournalCorrupted           a journal line in the middle cannot be read
     |    +-- SerializationError         a value cannot be stored (or read back)
     |    |    +-- DillRefused           a pickled value where unpickling is refused
     |    +-- ActivityTimeout            (also a TimeoutError) one attempt ran out of time
     |    +-- SignalTimeout              (also a TimeoutError) no signal came in time
     |    +-- WorkflowNotFound           the code of a recorded workflow cannot be loaded
     |    +-- RemoteError                an exception whose type cannot be rebuilt on replay
     |    +-- CompensationError          one or more saga compensations failed
     |    +-- RunStuck                   recovered too often without progress: parked until resumed
     |    +-- StoreError                 the store failed under a run, which stops unrecorded
     |         +-- StoreUnavailable      the store cannot be read or written (disk full,
     |         |                         read-only, database down): free it, then resume
     |         +-- LeaseLost             this process no longer owns the run: it writes nothing more
     |         +-- UnsafeStore           (also a PermissionError) a symlink in the store, or
     |                                   (strict) a store others may write to
     +-- Cancelled                       the run was cancelled (an Exception, so sagas see it)
    BaseException
     +-- Suspend                         engine control flow: the run stops here for now
          +-- _Wait                      waiting for a timer, a signal or a child run
          +-- _Shutdown                  the engine is closing
          +-- StoreFailure               the store failed (or a child run's journal is damaged):
          |                              the run stops, the error goes to the caller, never to
          |                              the workflow's `except Exception`
          +-- ContinueAsNew              `continue_as_new()`: this run ends, a fresh one goes on
          +-- Terminated                 `engine.terminate()`: the run ends now, no compensations

`Suspend` and its subclasses are never raised at user code that catches `Exception`:
they unwind the workflow's thread when it waits, or when the engine shuts down.
`is_suspension(exc)` tells them apart for code that catches `BaseException`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class IntemporalError(Exception):
    """Raised for any error of the library itself; the root of the tree above."""


class RunNotFound(IntemporalError, KeyError):
    """Raised when no run has the given id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"no run with id {self.run_id!r}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id,))


class RunConflict(IntemporalError):
    """Raised when a run id is already taken by a run of another workflow."""

    def __init__(self, run_id: str, existing: str, requested: str) -> None:
        super().__init__(
            f"run {run_id!r} already exists for workflow {existing!r}, not {requested!r}"
        )
        self.run_id, self.existing, self.requested = run_id, existing, requested

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.existing, self.requested))


class NonDeterminismError(IntemporalError):
    """Raised when replay finds the code asking for another step than the journal recorded.

    The journal is left untouched: restore the code (or fix it) and resume again.
    """

    def __init__(self, seq: int, recorded: str, new: str) -> None:
        super().__init__(
            f"non-deterministic workflow at step {seq}: the journal recorded {recorded!r}, "
            f"the code now asks for {new!r}"
        )
        self.seq, self.recorded, self.new = seq, recorded, new

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.seq, self.recorded, self.new))


class JournalCorrupted(IntemporalError):
    """Raised when a journal line that is not the torn last line cannot be read."""

    def __init__(self, path: str, line: int, reason: str = "") -> None:
        msg = f"journal {path} is corrupted at line {line}"
        super().__init__(msg + (f": {reason}" if reason else ""))
        self.path, self.line, self.reason = path, line, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.reason))


class SerializationError(IntemporalError, TypeError):
    """Raised when a value (an argument, a result) cannot be stored in the journal."""


class DillRefused(SerializationError):
    """Raised when a value stored with dill is read where unpickling is refused.

    `Engine(codec="json")` never unpickles (a signal sent by another process included),
    and commands that only look at a store (`list`, `show`, `replay`) never do. The
    message names the run and the journal line.
    """


class ActivityTimeout(IntemporalError, TimeoutError):
    """Raised when one attempt of an activity runs longer than its `timeout`."""


class SignalTimeout(IntemporalError, TimeoutError):
    """Raised when `wait_for_signal(name, timeout=...)` sees no signal in time."""


class WorkflowNotFound(IntemporalError):
    """Raised when the code of a recorded workflow cannot be found or imported."""


class RemoteError(IntemporalError):
    """Raised for a recorded exception whose type cannot be rebuilt here.

    `type_name` is the original type (`module.Qualname`), `message` its message and
    `reason` why it cannot be rebuilt. A replay that meets one stops the run there,
    unrecorded, rather than let the workflow see another exception than it saw first.
    """

    def __init__(self, type_name: str, message: str, reason: str = "") -> None:
        super().__init__(f"{type_name}: {message}" + (f" ({reason})" if reason else ""))
        self.type_name, self.message, self.reason = type_name, message, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.reason))


class CompensationError(IntemporalError):
    """Raised (as the `__context__`-free note on a saga's error) when compensations fail."""


class RunStuck(IntemporalError):
    """Raised when a run was recovered after a crash more than `Engine(max_recoveries=...)`
    times without progress: it is parked (`RunStatus.STUCK`) until a person resumes it."""

    def __init__(self, run_id: str, recoveries: int) -> None:
        super().__init__(
            f"run {run_id!r} is stuck: recovered {recoveries} times after a crash without "
            f"progress; fix the cause, then `intemporal resume {run_id}`"
        )
        self.run_id, self.recoveries = run_id, recoveries

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.recoveries))


class StoreError(IntemporalError):
    """Raised when the store fails under a run: the run stops where it is, unrecorded.

    What was journaled before stays; the step in flight is not recorded and runs again
    when the run is resumed. The store's own exception is chained as `__cause__`.
    """

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.run_id))


class UnsafeStore(StoreError, PermissionError):
    """Raised when a store cannot be trusted, naming the path.

    A symbolic link stands where one of the store's own files or folders should be (a
    journal, an inbox, the doorbell, a lock, a child run's folder): it is never followed.
    With `Engine(strict=True)` (`intemporal --strict`), also a store folder that group or
    others may write to, or that another user owns. Also a `PermissionError`. A
    `StoreError`: met under a run (a child run's folder or inbox), it stops the run
    unrecorded, as a store failure does, and never reaches the workflow's own code.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"unsafe store: {path} {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class StoreUnavailable(StoreError):
    """Raised when the store cannot be read or written (disk full, read-only, database down).

    Raised by `engine.run()`, `handle.result()`, `engine.start()` and `resume` instead of
    waiting: the run stays resumable. Free the disk (or bring the store back), then
    `engine.resume(run_id)` or `intemporal resume RUN`; at most the step in flight runs again.
    """


class LeaseLost(StoreError):
    """Raised when this process no longer owns a run (another worker took it over).

    The run's execution here stops and writes nothing more; its new owner carries on.
    """


def store_error(
    exc: BaseException, doing: str, run_id: str | None = None, started: bool = True
) -> StoreError:
    """`exc`, raised by a store while `doing` something, as the `StoreError` a caller gets.

    A `StoreError` is returned as it is; any other exception (an `OSError`, a database
    driver's error) becomes a `StoreUnavailable` naming it, with `exc` as its `__cause__`.
    `started`: whether the run exists (it stays resumable) or was not created at all.
    """
    if isinstance(exc, StoreError):
        return exc
    if started:
        after = (
            "the run stopped unrecorded and stays resumable; "
            "free the disk or fix the store, then resume it"
        )
    else:
        after = "nothing was recorded; free the disk or fix the store, then start it again"
    err = StoreUnavailable(
        f"store unavailable: cannot {doing}: {type(exc).__name__}: {exc} ({after})", run_id
    )
    err.__cause__ = exc
    return err


class Cancelled(Exception):
    """Raised inside a workflow (or by `heartbeat()` in an activity) when its run is cancelled.

    An `Exception`, so `except Exception:` and sagas see it and can roll back.
    """


class Suspend(BaseException):
    """Raised by the engine to unwind a workflow that must stop for now (wait or shutdown).

    Derives from `BaseException` so `except Exception:` in user code never swallows it.
    """


class _Wait(Suspend):
    """Raised when a workflow must wait (a timer, a signal, a child run) without a thread.

    The engine records the run as waiting and executes it again, replaying its journal,
    when `until` (epoch seconds, or None for "no timer") passes or a message arrives.
    """

    def __init__(self, reason: str, until: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.until = reason, until


class _Shutdown(Suspend):
    """Raised at a workflow's next durable operation when its engine is closing."""


def is_suspension(exc: BaseException) -> bool:
    """Tell whether `exc` is the engine's own control flow, which user code must re-raise."""
    return isinstance(exc, Suspend)


class StoreFailure(Suspend):
    """Raised when the store fails under a run: the run stops, unrecorded and resumable.

    A `BaseException` (a `Suspend`), so the workflow's own `except Exception` never sees
    the store's error; `error` is the `StoreError` the run's caller gets instead.
    """

    def __init__(self, error: StoreError | JournalCorrupted) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def store_call(
    run_id: str, doing: str, *, caller: bool = False, started: bool = True
) -> Iterator[None]:
    """Turn a store's failure inside the block into `StoreFailure`, the engine's control flow
    that stops a run; with `caller`, into the `StoreError` itself, for the caller to get.

    `doing` says what failed ("write the journal of run 'r'"); `started` whether the run
    exists (see `store_error`). Errors of the library that say something about the run
    (`RunNotFound`, `RunConflict`) and the engine's own control flow pass unchanged. A
    damaged journal (`JournalCorrupted`, a child run's, say) met under a run stops it like
    a store failure: the workflow's own `except` never sees it; the caller gets it.
    """
    try:
        yield
    except (IntemporalError, Suspend) as exc:
        if isinstance(exc, JournalCorrupted) and not caller:
            raise StoreFailure(exc) from exc
        if not isinstance(exc, StoreError):
            raise
        err: StoreError = exc
    except Exception as exc:
        err = store_error(exc, doing, run_id, started)
    else:
        return
    if caller:
        raise err from err.__cause__
    raise StoreFailure(err) from err


class ContinueAsNew(Suspend):
    """Raised by `intemporal.continue_as_new(...)`: the run ends and a fresh run of the same
    workflow starts with these arguments (`args`, `kwargs`) and a journal of its own."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("continue as new")
        self.args, self.kwargs = args, kwargs


class Terminated(Suspend):
    """Raised at a workflow's next durable operation once `engine.terminate()` asked for it:
    the run ends `CANCELLED` at once, its compensations not run (`reason` is recorded)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "terminated")
        self.reason = reason
