"""The event loop an engine executes async workflows on, and how an execution is driven.

An execution (`Executor._execution`) is a generator: plain code (claiming the run, replay
bookkeeping, the verdict) that yields once, for an async workflow, the coroutine to await.
`drive` runs one on the calling thread (a plain workflow never yields); `drive_async`
runs one as a task on a loop, so an async run holds no thread while it waits.

`Engine` owns a `LoopThread` (started at the first async run); `AsyncEngine` uses the loop
of the application that entered it instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Generator
from typing import Any

Steps = Generator[Awaitable[Any], Any, None]


def drive(steps: Steps) -> None:
    """Run an execution of a plain workflow on this thread to its end."""
    for _ in steps:
        raise RuntimeError("a plain workflow's execution awaited something")


async def drive_async(steps: Steps) -> None:
    """Run an execution on the running loop: await what it yields, send back the outcome."""
    try:
        awaited = steps.send(None)
        while True:
            try:
                value = await awaited
            except BaseException as exc:
                awaited = steps.throw(exc)
            else:
                awaited = steps.send(value)
    except StopIteration:
        pass


class LoopThread:
    """An event loop on a daemon thread of its own: where a sync `Engine` runs async runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="intemporal-loop", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def stop(self) -> None:
        """Stop the loop once what is scheduled now has run, and wait for its thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join()
