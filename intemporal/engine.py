"""The engine: starts runs, executes them on threads, resumes and recovers them.

    with intemporal.Engine(store=".intemporal", threads=8) as engine:
        handle = engine.start(booking, order, run_id="order-42")   # returns at once
        result = handle.result(timeout=60)

A run executes on one pool thread, top to bottom, holding its store lease from start to
stop; activities run inline on that thread unless they have a timeout. `RunHandle` waits
on the in-process execution when there is one, and otherwise reads the store, so a handle
works for runs executed by another process too.
"""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .api import Workflow, as_workflow
from .codec import decode, decode_error, encode, encode_error
from .errors import Cancelled, NonDeterminismError, SerializationError, Suspend
from .loader import load_workflow, workflow_ref
from .replay import RunContext, _current
from .store import Event, Lease, RunInfo, RunStatus, Store, check_run_id, open_store
from .store.base import TERMINAL_EVENTS

WATCH_INTERVAL = 0.1  # seconds between looks at the inboxes of the runs executing here


class _Execution:
    """One run executing (or queued to execute) in this engine, and how it ended."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.done = threading.Event()
        self.ctx: RunContext | None = None
        self.outcome: tuple[str, Any] | None = (
            None  # ("ok", value) | ("error", exc) | ("stopped", None)
        )
        self.inbox_cursor = 0

    def finish(self, kind: str, value: Any = None) -> None:
        self.outcome = (kind, value)


class RunHandle:
    """A reference to one run: its id, status and result, from any process.

    >>> handle = engine.start(booking, order)
    >>> handle.result(timeout=60)
    """

    def __init__(self, engine: Engine, run_id: str, execution: _Execution | None = None) -> None:
        self.engine, self.run_id, self._exe = engine, run_id, execution

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    def status(self) -> RunStatus:
        """The run's current `RunStatus`."""
        return self.engine.get_run(self.run_id).status

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish: return its value, or raise its exception (or `Cancelled`).

        Raises `TimeoutError` if it has not finished within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.005
        while True:
            exe = self._exe or self.engine._active.get(self.run_id)
            if exe is not None:
                if not exe.done.wait(_remaining(deadline)):
                    break
                self._exe = None
                if exe.outcome is not None and exe.outcome[0] == "ok":
                    return exe.outcome[1]
                if exe.outcome is not None and exe.outcome[0] == "error":
                    raise exe.outcome[1]
            info = self.engine.get_run(self.run_id)
            if info.status.finished:
                return _final(info)
            if deadline is not None and time.monotonic() >= deadline:
                break
            # Executed elsewhere (another process, or waiting): poll the store with a deadline.
            time.sleep(min(poll, _remaining(deadline) or poll))
            poll = min(poll * 2, 0.1)
        raise TimeoutError(f"run {self.run_id!r} did not finish within {timeout} s")

    def cancel(self) -> None:
        """Request cancellation of the run (see `Engine.cancel`)."""
        self.engine.cancel(self.run_id)

    def signal(self, name: str, payload: Any = None, signal_id: str | None = None) -> None:
        """Send the run a signal (see `Engine.signal`)."""
        self.engine.signal(self.run_id, name, payload, signal_id=signal_id)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _final(info: RunInfo) -> Any:
    """The value of a finished run, or its exception raised again."""
    if info.status is RunStatus.COMPLETED:
        return info.result
    err = info.raw.get("error")
    exc = decode_error(err) if err else Cancelled(f"run {info.run_id!r} was cancelled")
    if info.status is RunStatus.CANCELLED and not isinstance(exc, Cancelled):
        exc = Cancelled(f"run {info.run_id!r} was cancelled")
    raise exc


def _encode_args(
    wf: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], codec: str
) -> tuple[list[Any], dict[str, Any]]:
    """Encode a run's arguments, naming the one that cannot be stored."""
    try:
        names = list(inspect.signature(wf.fn).parameters)
    except (TypeError, ValueError):
        names = []
    out_args, out_kwargs = [], {}
    for i, value in enumerate(args):
        label = f"{names[i]!r} (position {i})" if i < len(names) else f"at position {i}"
        out_args.append(_encode_arg(wf, label, value, codec))
    for key, value in kwargs.items():
        out_kwargs[key] = _encode_arg(wf, repr(key), value, codec)
    return out_args, out_kwargs


def _encode_arg(wf: Workflow[Any, Any], label: str, value: Any, codec: str) -> Any:
    try:
        return encode(value, codec)
    except SerializationError as exc:
        raise SerializationError(
            f"argument {label} of workflow {wf.name!r} cannot be stored: {exc}"
        ) from exc


def _protocol_refs(protocols: dict[type, Any]) -> dict[str, Any]:
    """Where to find each protocol implementation again: its class, by import path."""
    return {
        f"{p.__module__}:{p.__qualname__}": f"{type(i).__module__}:{type(i).__qualname__}"
        for p, i in protocols.items()
    }


class Engine:
    """Runs workflows durably on a thread pool over a `Store`.

    `store`: a directory path (`FileStore`), a `Store`, a URL, or None for
    `$INTEMPORAL_HOME`, else `./.intemporal`. `durability="fsync"` makes an activity done
    once its result is on disk; `"flush"` once the OS has it (survives a killed process,
    not a power cut). `codec="auto"` stores JSON where a value round-trips exactly, else
    dill; `"json"` never uses dill. Leaving `with` stops taking work, lets in-flight
    activities finish and leaves every unfinished run durable and resumable.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        threads: int = 8,
        queues: list[str] | None = None,
        worker: bool = True,
        durability: str = "fsync",
        codec: str = "auto",
    ) -> None:
        if durability not in ("fsync", "flush"):
            raise ValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
        if codec not in ("auto", "json"):
            raise ValueError(f"codec must be 'auto' or 'json', not {codec!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.store = open_store(store)
        self.threads, self.queues, self.worker = threads, queues, worker
        self.durability, self.codec, self.sync = durability, codec, durability == "fsync"
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="intemporal-run")
        self._active: dict[str, _Execution] = {}
        self._mutex = threading.Lock()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- Host protocol, used by RunContext ------------------------------------------------
    @property
    def closing(self) -> bool:
        """True once `close()` began: runs stop at their next durable operation."""
        return self._closing.is_set()

    def pause(self, ctx: RunContext, seconds: float) -> None:
        """Wait `seconds` on the run's thread; cut short by cancellation or shutdown."""
        if seconds > 0:
            ctx.wake.wait(seconds)
        if self.closing:
            from .errors import _Shutdown

            raise _Shutdown("the engine is shutting down")

    # -- starting and resuming -------------------------------------------------------------
    def start(
        self,
        fn: Any,
        *args: Any,
        run_id: str | None = None,
        protocols: dict[type, Any] | None = None,
        queue: str | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> RunHandle:
        """Start `fn(*args, **kwargs)` as a durable run and return its handle at once.

        Starting an existing `run_id` returns a handle to that run (and resumes it if it
        was left behind); the same id for another workflow raises `RunConflict`.
        """
        wf = as_workflow(fn)
        run_id = check_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        kwargs = dict(kwargs or {})
        protocols = dict(protocols or {})
        enc_args, enc_kwargs = _encode_args(wf, args, kwargs, self.codec)
        first: Event = {
            "type": "run_started",
            "run_id": run_id,
            "workflow": wf.name,
            "args": enc_args,
            "kwargs": enc_kwargs,
            "ref": workflow_ref(wf),
            "queue": queue or wf.queue,
            "ts": round(time.time(), 6),
        }
        if protocols:
            first["protocols"] = _protocol_refs(protocols)
        if not self.store.create(run_id, first):
            return self._existing(run_id, wf, protocols)
        if not self.worker:
            return RunHandle(self, run_id)
        return RunHandle(self, run_id, self._launch(run_id, wf, args, kwargs, protocols, [first]))

    def _existing(
        self, run_id: str, wf: Workflow[Any, Any], protocols: dict[type, Any]
    ) -> RunHandle:
        recorded = self.store.read(run_id)[0].get("workflow")
        if recorded != wf.name:
            from .errors import RunConflict

            raise RunConflict(run_id, str(recorded), wf.name)
        info = self.store.summary(run_id)
        if self.worker and not info.status.finished and info.status is not RunStatus.WAITING:
            if not self.store.is_claimed(run_id):
                return self.resume(run_id, protocols=protocols)
        return RunHandle(self, run_id, self._active.get(run_id))

    def run(self, fn: Any, *args: Any, **options: Any) -> Any:
        """Start `fn(*args)` and wait for its result: `start(...).result()`."""
        return self.start(fn, *args, **options).result()

    def resume(
        self,
        run_id: str,
        *,
        protocols: dict[type, Any] | None = None,
        imports: list[str] | None = None,
    ) -> RunHandle:
        """Continue a run that is not completed (crashed, failed, or left behind).

        Completed activities are not run again; the one in flight at a crash runs again.
        A finished run is left as it is (a failed one is retried from its failed step).
        """
        events = self.store.read(check_run_id(run_id))
        info = self.store.summary(run_id)
        if info.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            return RunHandle(self, run_id)
        wf = load_workflow(events[0], imports)
        args = [decode(a) for a in events[0].get("args", [])]
        kwargs = {k: decode(v) for k, v in events[0].get("kwargs", {}).items()}
        if protocols is None:
            protocols = _rebuild_protocols(events[0].get("protocols", {}))
        exe = self._launch(run_id, wf, tuple(args), kwargs, protocols, None)
        return RunHandle(self, run_id, exe)

    def recover(self) -> list[RunHandle]:
        """Resume every unfinished run whose owner is gone; return their handles."""
        handles = []
        for run_id in list(self.store.run_ids()):
            if run_id in self._active:
                continue
            try:
                info = self.store.summary(run_id)
            except Exception:  # unreadable journal: `intemporal show` reports it
                continue
            if not info.status.finished and not self.store.is_claimed(run_id):
                handles.append(self.resume(run_id))
        return handles

    def _launch(
        self,
        run_id: str,
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        protocols: dict[type, Any],
        events: list[Event] | None,
    ) -> _Execution:
        with self._mutex:
            if self.closing:
                raise RuntimeError("the engine is closed; start a new Engine to run more work")
            exe = self._active.get(run_id)
            if exe is not None:
                return exe
            exe = self._active[run_id] = _Execution(run_id)
        self._pool.submit(self._execute, exe, wf, args, kwargs, protocols, events)
        self._ensure_watcher()
        return exe

    def _execute(
        self,
        exe: _Execution,
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        protocols: dict[type, Any],
        events: list[Event] | None,
    ) -> None:
        lease: Lease | None = None
        try:
            lease = self.store.claim(exe.run_id)
            if lease is None:  # another process owns it: the handle follows the store
                exe.finish("stopped")
                return
            if events is None:
                events = self.store.read(exe.run_id)
            self._run_body(exe, lease, events, wf, args, kwargs, protocols)
        except BaseException as exc:  # store errors: report to the waiting handle
            exe.finish("error", exc)
        finally:
            if lease is not None:
                lease.release()
            with self._mutex:
                self._active.pop(exe.run_id, None)
            exe.done.set()

    def _run_body(
        self,
        exe: _Execution,
        lease: Lease,
        events: list[Event],
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        protocols: dict[type, Any],
    ) -> None:
        last = events[-1]["type"]
        if last in ("run_completed", "run_cancelled"):
            exe.finish("stopped")  # finished by someone else meanwhile
            return
        if last == "run_failed":  # resuming a failed run: retry what failed
            resumed: Event = {"type": "run_resumed", "ts": round(time.time(), 6)}
            lease.append(resumed, True)
            events.append(resumed)
        ctx = exe.ctx = RunContext(self, lease, events, protocols)
        messages, exe.inbox_cursor = self.store.inbox(exe.run_id)
        self._deliver(exe, messages)
        if ctx.cancel_requested.is_set() and len(events) == 1:
            # cancelled before it began: the body never runs
            exc = Cancelled(f"run {exe.run_id!r} was cancelled before it started")
            ctx.append({"type": "run_cancelled", "error": encode_error(exc)}, True)
            exe.finish("error", exc)
            return
        token = _current.set(ctx)
        try:
            result = wf.fn(*args, **kwargs)
            ctx.check_complete()
            try:
                value = encode(result, self.codec)
            except SerializationError as exc:
                raise SerializationError(
                    f"the result of workflow {wf.name!r} cannot be stored: {exc}"
                ) from exc
            ctx.append({"type": "run_completed", "result": value}, True)
            exe.finish("ok", result)
        except Suspend:
            exe.finish("stopped")
        except BaseException as exc:
            if ctx.poisoned is not None:  # never record a verdict reached by divergent code
                exe.finish("error", ctx.poisoned)
            elif isinstance(exc, Exception):
                kind = "run_cancelled" if isinstance(exc, Cancelled) else "run_failed"
                ctx.append({"type": kind, "error": encode_error(exc)}, True)
                exe.finish("error", exc)
            else:
                exe.finish("error", exc)  # KeyboardInterrupt & co: stop, leave it resumable
        finally:
            _current.reset(token)

    # -- messages from outside: cancellation (and signals) ----------------------------------
    def _deliver(self, exe: _Execution, messages: list[Event]) -> None:
        ctx = exe.ctx
        if ctx is None:
            return
        for msg in messages:
            if msg.get("type") == "cancel":
                ctx.cancel_requested.set()
                ctx.wake.set()

    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            with self._mutex:
                if self._watcher is None:
                    self._watcher = threading.Thread(
                        target=self._watch, name="intemporal-watcher", daemon=True
                    )
                    self._watcher.start()

    def _watch(self) -> None:
        """Look at the inboxes of the runs executing here, so other processes can reach them."""
        while not self._closing.wait(WATCH_INTERVAL):
            for exe in list(self._active.values()):
                if exe.ctx is None:
                    continue
                try:
                    messages, exe.inbox_cursor = self.store.inbox(exe.run_id, exe.inbox_cursor)
                except Exception:  # a run deleted under us; its execution reports it
                    continue
                if messages:
                    self._deliver(exe, messages)

    # -- looking at runs ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo:
        """The run's `RunInfo`; raises `RunNotFound` for an unknown id."""
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

    def handle(self, run_id: str) -> RunHandle:
        """A handle to an existing run; raises `RunNotFound` for an unknown id."""
        if not self.store.exists(check_run_id(run_id)):
            from .errors import RunNotFound

            raise RunNotFound(run_id)
        return RunHandle(self, run_id, self._active.get(run_id))

    # -- control -------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> None:
        """Request cancellation: the workflow gets `Cancelled` at its next durable operation.

        Cancelling a finished run changes nothing; an unknown id raises `RunNotFound`.
        """
        info = self.get_run(run_id)
        if info.status.finished:
            return
        self.store.send(run_id, {"type": "cancel", "ts": round(time.time(), 6)})
        exe = self._active.get(run_id)
        if exe is not None and exe.ctx is not None:
            exe.ctx.cancel_requested.set()
            exe.ctx.wake.set()

    def signal(
        self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None
    ) -> None:
        """Deliver a signal to a run (see `wait_for_signal`)."""
        raise NotImplementedError("signals are not supported yet")

    def close(self) -> None:
        """Stop taking work, let in-flight activities finish, leave unfinished runs resumable."""
        with self._mutex:
            self._closing.set()
            for exe in self._active.values():
                if exe.ctx is not None:
                    exe.ctx.wake.set()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuild_protocols(refs: dict[str, str]) -> dict[type, Any]:
    """Recreate protocol implementations recorded at start, where their class takes no arguments."""
    import importlib

    out: dict[type, Any] = {}
    for proto_ref, impl_ref in refs.items():
        try:
            pm, pq = proto_ref.split(":", 1)
            im, iq = impl_ref.split(":", 1)
            proto = _dotted(importlib.import_module(pm), pq)
            out[proto] = _dotted(importlib.import_module(im), iq)()
        except Exception:  # reported when the workflow calls the protocol without an implementation
            continue
    return out


def _dotted(obj: Any, qualname: str) -> Any:
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = ["TERMINAL_EVENTS", "Engine", "NonDeterminismError", "RunHandle"]
