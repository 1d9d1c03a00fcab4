"""The engine: starts runs, executes them on threads, suspends, wakes, resumes and recovers them.

    with intemporal.Engine(store=".intemporal", threads=8) as engine:
        handle = engine.start(booking, order, run_id="order-42")   # returns at once
        result = handle.result(timeout=60)

`Engine` is a facade: its public methods are typed and documented here (`start` and `run`
in `start_api.py`, typed from the workflow's signature; `recover` and `poke` in
`runtime/worker.py`) and done by its parts, each a module named by its role (README
"Development"): `runtime/lifecycle.py` (options, what an engine holds, `close`),
`runtime/starting.py` (`start`, `run`, `resume`), `runtime/executor.py` (executing a run
on a pool thread), `runtime/worker.py` (taking runs, waking them) and `runtime/control.py`
(`cancel`, `terminate`, `signal`, `fork`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .clock import Clock
from .control import MAX_RECOVERIES
from .errors import RunNotFound
from .handle import Execution, RunHandle, wait_for_event
from .observe import Observer
from .queues import Queue
from .runtime.control import Control
from .runtime.executor import Executor
from .runtime.lifecycle import Lifecycle
from .runtime.worker import Worker
from .start_api import StartAPI
from .store import Event, RunInfo, RunStatus, Store, check_run_id


class Engine(StartAPI, Control, Worker, Executor, Lifecycle):
    """Runs workflows durably on a thread pool over a `Store`.

    `store`: a directory path (`FileStore`), a `Store`, a URL, or None for
    `$INTEMPORAL_HOME`, else the nearest `.intemporal` directory in the current folder or
    a parent (as git finds `.git`), else `./.intemporal` (the `intemporal` command's rule). `durability="fsync"` makes an activity done
    once its result is on disk; `"flush"` once the OS has it (survives a killed process,
    not a power cut). `codec="auto"` stores JSON where a value round-trips exactly, else
    a pickle (executing a run unpickles: trust the store as code); `"json"` never writes
    nor reads a pickle (`DillRefused`). `worker=False` makes a client that records runs
    without executing them. `queues`: the queues a worker takes runs of (None: all), as
    names or `intemporal.Queue`s whose limits it keeps (README "Queues and schedules"); a
    worker also fires the `@scheduled` workflows of those queues. Leaving `with` stops
    taking work, lets in-flight activities finish and leaves every unfinished run durable and resumable. `clock`: the time source
    (default the real one; `intemporal.testing` passes a virtual one that skips waits).
    `strict=True` refuses a store others may write (`UnsafeStore`). `observers`:
    `intemporal.Observer`s told of each run and step (a `LoggingObserver` is always there).
    `tracing`: OpenTelemetry spans (README "Tracing") when True and the program configured
    a tracer provider before making the engine; False never; or a `TracerProvider` to use.
    `version`: the code version recorded on each run this engine starts (`RunInfo.version`);
    `versions`: the versions of the runs it executes when it recovers or adopts runs
    (default: its own version only; every run when it has none; None in it stands for runs
    without a version) — README "Changing code under running workflows". `max_recoveries`:
    how many times in a row a run is recovered after a crash without progress before it is
    parked as `RunStatus.STUCK` (default 50).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        threads: int = 8,
        queues: Sequence[str | Queue] | None = None,
        worker: bool = True,
        durability: str = "fsync",
        codec: str = "auto",
        observers: Sequence[Observer] = (),
        clock: Clock | None = None,
        strict: bool = False,
        tracing: Any = True,
        version: str | None = None,
        versions: Collection[str | None] | None = None,
        max_recoveries: int = MAX_RECOVERIES,
    ) -> None:
        super().__init__(
            store,
            threads=threads,
            queues=queues,
            worker=worker,
            durability=durability,
            codec=codec,
            observers=observers,
            clock=clock,
            strict=strict,
            tracing=tracing,
            version=version,
            versions=versions,
            max_recoveries=max_recoveries,
        )

    # -- starting and resuming (`start` and `run` are typed in `start_api.py`) --------------
    def resume(
        self,
        run_id: str,
        *,
        protocols: Mapping[Any, Any] | None = None,
        imports: list[str] | None = None,
    ) -> RunHandle[Any]:
        """Continue a run that is not completed (crashed, failed, waiting, or left behind).

        Completed activities are not run again; the one in flight at a crash runs again.
        A completed or cancelled run is left as it is; a failed one is retried from its
        failed step with a fresh retry budget.
        """
        check_run_id(run_id)
        return self._resume(run_id, protocols, imports, None)

    # -- looking at runs ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo:
        """The run's `RunInfo` (never unpickled); raises `RunNotFound` for an unknown id."""
        return self.store.summary(check_run_id(run_id))

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally filtered by status and workflow name."""
        return self.store.list_runs(status=status, workflow=workflow, limit=limit)

    def history(self, run_id: str) -> list[Event]:
        """The run's journal events, oldest first (each has `type`, `ts`, and `seq` where it has one)."""
        return self.store.read(check_run_id(run_id))

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle to an existing run; raises `RunNotFound` for an unknown id."""
        if not self.store.exists(check_run_id(run_id)):
            raise RunNotFound(run_id)
        return RunHandle(self, run_id, self._active.get(run_id))

    def execution(self, run_id: str) -> Execution | None:
        """The `intemporal.handle.Execution` of `run_id` in this engine now, or None if the run
        does not execute here: what a `RunHandle` waits on."""
        return self._active.get(run_id)

    def get_event(self, run_id: str, key: str, timeout: float | None = None) -> Any:
        """The latest value the run published under `key` with `intemporal.set_event`.

        Waits up to `timeout` seconds (None: until the run finishes) for the run to exist and
        for a first value: None if there is none by then; `RunNotFound` if there is no run.
        """
        return wait_for_event(self, run_id, key, timeout)

    # -- control -------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> None:
        """Request cancellation: the workflow gets `Cancelled` at its next durable operation.

        A sleeping or signal-waiting run gets it at once; running children are cancelled
        too. Cancelling a finished run changes nothing; an unknown id raises `RunNotFound`.
        A run that continued as new passes it on to the run that continues it.
        """
        self._cancel(run_id)

    def terminate(self, run_id: str, reason: str | None = None) -> None:
        """End a run at once, without compensations: it ends `CANCELLED`, recorded with `reason`.

        No `Cancelled` is delivered, so no saga compensates and no `except` in the workflow
        runs (`cancel` is the polite way). A run no process executes is ended here and now;
        one a live process executes stops at its next durable operation (an activity in
        flight finishes first). Its unfinished child runs are terminated too; a run that
        continued as new, the last run of its chain. A finished run is left as it is; an unknown id raises `RunNotFound`; a reason not a string `TypeError`.
        """
        self._terminate(run_id, reason)

    def fork(self, run_id: str, from_step: int, new_run_id: str | None = None) -> RunHandle[Any]:
        """A new run that repeats run `run_id` up to step `from_step`, then executes on with
        today's code; returns its handle (the run executes here, as `resume` does).

        Its journal is a copy of the source's steps before `from_step` (sequence numbers, as
        `intemporal show` lists them); the child runs they started are copied too, not run
        again; signals consumed from `from_step` on are queued to it again. The source is
        untouched; the fork records where it came from (`intemporal show` says so).
        `new_run_id` defaults to a random id; forking again to an id that is this very fork
        returns its handle. Raises `RunNotFound`, `ValueError` for a step outside 1..(last
        step + 1) or a bad id, `RunConflict` if `new_run_id` is taken by another run.
        """
        return self._fork(run_id, from_step, new_run_id)

    def signal(
        self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None
    ) -> None:
        """Deliver a signal to a run; `wait_for_signal(name)` in the workflow returns `payload`.

        Sending the same `signal_id` twice delivers it once. An unknown run raises
        `RunNotFound`; a finished run refuses signals with `IntemporalError`. A run that
        continued as new passes it on to the last run of its chain.
        """
        self._signal(run_id, name, payload, signal_id)

    def close(self) -> None:
        """Stop taking work, let in-flight activities finish, leave unfinished runs resumable."""
        self._shut_down()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
