"""`AsyncEngine`: the engine for asyncio applications, whose async runs share their loop.

    async with intemporal.AsyncEngine(store=".intemporal") as engine:
        handle = await engine.start(crawl, urls, run_id="crawl-1")
        pages = await handle.result_async(timeout=60)
        # or: pages = await engine.run(crawl, urls)

The same engine as `intemporal.Engine` (same options, same store, same journal), with
awaitable calls. Async workflows and async activities execute as tasks on the event loop
that first awaits the engine, so an activity may use the application's async clients;
plain workflows and plain activities execute on the engine's threads. Calls that read or
write the store run on a worker thread (`asyncio.to_thread`) so the loop never blocks on
a disk or a database.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import fields
from typing import Any, ParamSpec, TypeVar, overload

from .api import Workflow
from .engine import Engine
from .handle import RunHandle
from .store import RunInfo, RunStatus, Store

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class AsyncEngine:
    """Runs workflows durably for asyncio code: `intemporal.Engine` with awaitable calls.

    `store` and the keyword options are `Engine`'s (`threads`, `queues`, `worker`,
    `durability`, `codec`, `observers`, `clock`, `strict`, `tracing`). Use it as
    `async with AsyncEngine(...) as engine:`, or call `await engine.close()` at the end:
    leaving stops taking work, lets in-flight activities finish and leaves every
    unfinished run durable and resumable. `engine.engine` is the underlying `Engine`.
    Raises what `Engine` raises for bad options.
    """

    def __init__(self, store: Store | str | os.PathLike[str] | None = None, **options: Any) -> None:
        self.engine = Engine(store, **options)

    def _bind(self) -> None:
        """Execute async runs on the running loop (the first one that awaits this engine)."""
        loop = asyncio.get_running_loop()
        with self.engine._mutex:
            if self.engine._loop is None:
                self.engine._loop = loop
            elif self.engine._loop is not loop:
                raise RuntimeError("an AsyncEngine serves the event loop it was first used on")

    async def _call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        self._bind()
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    @overload
    async def start(
        self, fn: Workflow[P, Coroutine[Any, Any, R]], /, *args: Any, **options: Any
    ) -> RunHandle[R]: ...
    @overload
    async def start(self, fn: Workflow[P, R], /, *args: Any, **options: Any) -> RunHandle[R]: ...
    async def start(self, fn: Any, /, *args: Any, **options: Any) -> RunHandle[Any]:
        """Start a run (see `Engine.start`: `run_id`, `protocols`, `queue`, `priority`,
        `delay`, `kwargs`, ...); returns its `RunHandle` at once (`await handle.result_async()`)."""
        return await self._call(self.engine.start, fn, *args, **options)

    @overload
    async def run(
        self, fn: Workflow[P, Coroutine[Any, Any, R]], /, *args: Any, **options: Any
    ) -> R: ...
    @overload
    async def run(self, fn: Workflow[P, R], /, *args: Any, **options: Any) -> R: ...
    async def run(self, fn: Any, /, *args: Any, **options: Any) -> Any:
        """Start a run and await its result (see `Engine.run`); raises what the workflow raised."""
        handle = await self.start(fn, *args, **options)
        return await handle.result_async()

    async def resume(
        self,
        run_id: str,
        *,
        protocols: Mapping[Any, Any] | None = None,
        imports: list[str] | None = None,
    ) -> RunHandle[Any]:
        """Continue a run that is not completed (see `Engine.resume`)."""
        return await self._call(self.engine.resume, run_id, protocols=protocols, imports=imports)

    async def recover(self) -> list[RunHandle[Any]]:
        """Resume every unfinished run that no live process owns (see `Engine.recover`)."""
        return await self._call(self.engine.recover)

    async def cancel(self, run_id: str) -> None:
        """Request cancellation of a run (see `Engine.cancel`); `RunNotFound` for an unknown id."""
        await self._call(self.engine.cancel, run_id)

    async def signal(
        self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None
    ) -> None:
        """Deliver a signal to a run (see `Engine.signal`)."""
        await self._call(self.engine.signal, run_id, name, payload, signal_id)

    async def get_event(self, run_id: str, key: str, timeout: float | None = None) -> Any:
        """The latest value a run published under `key`, awaited up to `timeout` seconds
        (see `Engine.get_event`)."""
        return await self._call(self.engine.get_event, run_id, key, timeout)

    # Quick reads of the store: answered at once, and awaitable too (`await engine.get_run(r)`
    # and `engine.get_run(r)` both give the `RunInfo`), as a sync caller or an async one expects.
    def get_run(self, run_id: str) -> _ReadyInfo:
        """The run's `RunInfo` (also awaitable); `RunNotFound` for an unknown id."""
        info = self.engine.get_run(run_id)
        return _ReadyInfo(**{f.name: getattr(info, f.name) for f in fields(info)})

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> _ReadyList[RunInfo]:
        """Runs, newest first, optionally filtered (see `Engine.list_runs`); also awaitable."""
        return _ReadyList(self.engine.list_runs(status, workflow, limit))

    def history(self, run_id: str) -> _ReadyList[dict[str, Any]]:
        """The run's journal events, oldest first (see `Engine.history`); also awaitable."""
        return _ReadyList(self.engine.history(run_id))

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle to an existing run (`await handle.result_async()`); `RunNotFound` if none."""
        return self.engine.handle(run_id)

    async def close(self) -> None:
        """Stop taking work; await the async runs (they stop at their next await) and the
        activities in flight; unfinished runs stay durable and resumable."""
        engine = self.engine
        engine._stop_steps()
        runs = [asyncio.wrap_future(f) for f in list(engine._async_runs)]
        if runs and engine._loop is asyncio.get_running_loop():
            await asyncio.wait(runs)
        await asyncio.to_thread(engine.close)

    async def __aenter__(self) -> AsyncEngine:
        self._bind()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _ready(value: T) -> Generator[Any, None, T]:
    return value
    yield  # a generator: `await` on it returns `value` at once


class _ReadyInfo(RunInfo):
    """A `RunInfo` that may also be awaited (it is ready)."""

    def __await__(self) -> Generator[Any, None, RunInfo]:
        return _ready(self)


class _ReadyList(list[T]):
    """A list that may also be awaited (it is ready)."""

    def __await__(self) -> Generator[Any, None, list[T]]:
        return _ready(self)
