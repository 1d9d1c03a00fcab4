"""Sagas: undo completed steps, last first, when a multi-step business process fails.

    @intemporal.workflow
    def booking(order):
        with intemporal.saga() as saga:          # compensates on any Exception, re-raises
            h = book_hotel(order)
            saga.add_compensation(cancel_hotel, h)
            f = book_flight(order)
            saga.add_compensation(cancel_flight, f)
            charge_card(order)                   # fails: cancel_flight(f), then cancel_hotel(h)
        return "booked"

Compensations run as durable activities, so a crash in the middle of compensating resumes
with the compensations still owed: none skipped, none of the completed ones repeated. A
compensation that fails after its retries is recorded; the rest still run, and the error
being handled gets a note naming the failed ones (or, with no error being handled,
`compensate()` raises `CompensationError`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec

from . import replay
from .activity_steps import Steps, run_steps
from .api import Activity, stub
from .async_replay import run_steps_async
from .errors import Cancelled, CompensationError
from .events import COMPENSATION_STARTED
from .observe import Compensation

P = ParamSpec("P")


class Saga:
    """A stack of compensations; `compensate()` runs them last-registered first."""

    def __init__(self) -> None:
        self._steps: list[tuple[Activity[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self.failures: list[tuple[str, BaseException]] = []

    def add_compensation(self, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Register `fn(*args, **kwargs)` to run, as a durable activity, if the saga compensates."""
        act = fn if isinstance(fn, Activity) else stub(fn)
        self._steps.append((act, args, kwargs))

    def compensate(self) -> None:
        """Run the registered compensations, last first; each runs once even if others fail.

        A cancellation requested while compensating is delivered once, to the compensation
        that was next or running (`heartbeat()`); that compensation then runs again.
        In an async workflow, `await saga.compensate_async()` instead.
        """
        if getattr(replay.current(), "is_async", False):
            raise TypeError(
                "saga.compensate() in an async workflow: use await saga.compensate_async(), "
                "or async with intemporal.saga() as saga:"
            )
        run_steps(self._rollback())

    async def compensate_async(self) -> None:
        """`compensate()` for an async workflow: each compensation is awaited, last first."""
        await run_steps_async(self._rollback())

    def _rollback(self) -> Steps:
        """The compensations, last first, as calls for a driver (a thread's or a loop's)."""
        self._mark()
        failures: list[tuple[str, BaseException]] = []
        while self._steps:
            act, args, kwargs = self._steps.pop()
            call = functools.partial(act, *args, **kwargs)
            try:
                try:
                    yield call
                except Cancelled:
                    # A cancellation requested mid-rollback is delivered here, once: run
                    # the compensation it stopped again rather than skip it.
                    yield call
            except Exception as exc:  # recorded in the journal by the activity; keep going
                failures.append((act.name, exc))
        self._settle(failures)

    def _mark(self) -> None:
        """Journal that compensating starts (so `intemporal show` tells compensations apart)."""
        ctx = replay.current()
        if ctx is None or not self._steps:
            return
        seq, rec = ctx.next("intemporal.compensate")
        names = [act.name for act, _, _ in reversed(self._steps)]
        if ctx.observer.on_compensation:
            replaying = rec is not None
            ctx.observer.on_compensation(Compensation(ctx.run_id, tuple(names), replaying))
        if rec is None:
            ctx.append(
                {
                    "type": COMPENSATION_STARTED,
                    "seq": seq,
                    "name": "intemporal.compensate",
                    "compensations": names,
                }
            )

    def _settle(self, failures: list[tuple[str, BaseException]]) -> None:
        """Note the compensations that failed on the error being handled, or raise them."""
        self.failures.extend(failures)
        if not failures:
            return
        summary = "compensations failed: " + "; ".join(
            f"{name} ({type(exc).__name__}: {exc})" for name, exc in failures
        )
        handling = sys.exc_info()[1]
        if isinstance(handling, Exception):
            handling.add_note(summary)  # re-raised by the caller's `raise`, note included
            return
        raise CompensationError(summary)

    def __enter__(self) -> Saga:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception):
            try:
                raise exc  # so compensate() sees it as the error being handled
            except Exception:
                self.compensate()

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """`async with saga() as s:` compensates on any `Exception` (awaited), which goes on."""
        error = exc_info[1]
        if isinstance(error, Exception):
            try:
                raise error  # so compensate_async() sees it as the error being handled
            except Exception:
                await self.compensate_async()


def saga() -> Saga:
    """A new `Saga`: use it with try/except and `compensate()`, or as `with saga() as s:`;
    in an async workflow, `await saga.compensate_async()` or `async with saga() as s:`."""
    return Saga()
