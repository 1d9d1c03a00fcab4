"""Checking that today's code still replays a recorded run: `intemporal replay RUN`.

    ok, message = verify_replay(".intemporal", "order-42", imports=["shop.flows"])

The workflow runs against its recorded journal with every operation answered from the
journal; nothing is executed and nothing is written. It stops at the first operation the
journal does not hold (an unfinished run goes no further), so a deploy can be checked in
CI against the runs still in flight: a renamed, added or removed step before that point
is reported with its sequence number, what the journal recorded and what the code now
asks for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .api import is_async
from .async_replay import AsyncRunContext
from .attempts import _current
from .clock import Clock
from .codec import READ_ONLY, code_ref
from .errors import ContinueAsNew, DillRefused, NonDeterminismError, Suspend
from .events import FINAL_EVENTS, RESTART_EVENTS
from .handle import chain_end
from .loader import load_workflow
from .observe import NO_OBSERVERS
from .patching import decisions
from .replay import NOT_READY, RunContext
from .runs import recorded_args
from .store import Event, Lease, Store, check_run_id, open_store

if TYPE_CHECKING:
    from .api import Workflow

_FINAL = FINAL_EVENTS  # a run that ended so; "failed" may be resumed


class _ReachedEnd(BaseException):
    """Raised where the code needs something the journal does not hold: replay stops there.

    A `BaseException`, so `except Exception:` in the workflow does not swallow it.
    """

    def __init__(self, seq: int | None, name: str, why: str = "") -> None:
        super().__init__(name)
        self.seq, self.name, self.why = seq, name, why


class _DryLease(Lease):
    """A lease that writes nothing: any append means the code went past the journal."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def append(self, event: Event, sync: bool) -> None:
        raise _ReachedEnd(event.get("seq"), str(event.get("name", event.get("type", "?"))))

    def release(self) -> None:
        pass


class _DryHost:
    """The engine side of a dry replay: no threads, no waiting, children read from the store."""

    codec = READ_ONLY  # a check never unpickles: a pickled value ends it there
    clock = Clock()
    sync = False
    closing = False
    observer = NO_OBSERVERS  # a check is not an execution: nobody is told

    def __init__(self, store: Store) -> None:
        self.store = store

    def pause(self, ctx: RunContext, seconds: float) -> None:
        pass

    def run_child(
        self,
        ctx: RunContext,
        seq: int,
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: bool,
    ) -> Any:
        return self.child_result(ctx, seq) if wait else None

    def submit_activity(self, job: Callable[[], None]) -> None:
        raise _ReachedEnd(None, "submit", "a submitted activity would run here")

    def child_result(self, ctx: RunContext, seq: int) -> Any:
        """A finished child's recorded outcome; an unfinished child ends the replay here."""
        cid = f"{ctx.run_id}/{seq}"
        try:
            info = chain_end(self.store.summary, self.store.summary(cid))
        except Exception:
            raise _ReachedEnd(seq, cid, f"child run {cid!r} was not created yet") from None
        if not info.status.finished:
            raise _ReachedEnd(seq, cid, f"child run {cid!r} has not finished")
        return ctx.replayed(info.raw)  # its result, or its exception raised again

    def __getattr__(self, name: str) -> Any:
        # An engine feature newer than this module: stop here rather than guess.
        raise _ReachedEnd(None, name, f"the engine feature {name!r} cannot be replayed dry")


class _DryContext(RunContext):
    """A run context that answers only from the journal: a new operation ends the replay."""

    def next(self, name: str, *args: Any, **kwargs: Any) -> tuple[int, Event | None]:
        seq, rec = super().next(name, *args, **kwargs)
        if rec is None:
            raise _ReachedEnd(seq, name)
        return seq, rec


class _DryAsyncContext(_DryContext, AsyncRunContext):
    """`_DryContext` for an async workflow, run on an event loop of its own."""

    async def wait(self, seq: int, name: str, until: float | None, ready: Callable[[], Any]) -> Any:
        value, _ = self.look(seq, name, until, ready)
        if value is NOT_READY:
            raise _ReachedEnd(seq, "wait")
        return value


def _run_async(ctx: AsyncRunContext, work: Any) -> None:
    """Run an async workflow's coroutine on `ctx`'s loop; then stop what is left, quietly."""
    loop = ctx.loop
    try:
        loop.run_until_complete(work)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left))
        loop.close()


def _final_event(events: list[Event]) -> str | None:
    kinds = [e["type"] for e in events]
    last = next((k for k in reversed(kinds) if k in _FINAL or k in RESTART_EVENTS), None)
    return last if last in _FINAL else None


def _steps(n: int) -> str:
    return f"{n} recorded step" + ("" if n == 1 else "s")


def _mismatch(err: NonDeterminismError) -> str:
    return f"mismatch at step {err.seq}: recorded {err.recorded!r}, now {err.new!r}"


def verify_replay(
    store: Store | str | None, run_id: str, imports: list[str] | None = None
) -> tuple[bool, str]:
    """Replay run `run_id` against the current code without running anything.

    Returns `(True, "deterministic: ...")` or `(False, "mismatch at step N: recorded
    'a', now 'b'")`; `(True, "not checked: ...")` when the run's arguments are stored with
    dill (a check never unpickles). A deterministic replay names the path each
    `intemporal.patched()` took ("patch 'charge-v2': old path"). Raises `RunNotFound`,
    `WorkflowNotFound`, or whatever rebuilding the recorded arguments raises.
    """
    seen: list[RunContext] = []
    ok, message = _verify(store, run_id, imports, seen)
    taken = decisions(seen[0]) if seen else {}
    if ok and taken and message.startswith("deterministic"):
        paths = "; ".join(
            f"patch {p!r}: {'new' if new else 'old'} path" for p, new in taken.items()
        )
        message += f" ({paths})"
    return ok, message


def _verify(
    store: Store | str | None, run_id: str, imports: list[str] | None, seen: list[RunContext]
) -> tuple[bool, str]:
    st = open_store(store)
    events = st.read(check_run_id(run_id))
    first = events[0]
    ref = code_ref(first.get("ref") or {}, READ_ONLY)  # no unpickling of the function copy
    wf = load_workflow({**first, "ref": ref}, imports)
    try:
        args, kwargs = recorded_args(first, READ_ONLY)
    except DillRefused as exc:  # nothing to check without unpickling: say so, not a mismatch
        return True, f"not checked: {exc}"
    ctx: RunContext
    if is_async(wf.fn):

        def ended(cid: str) -> float | None:
            try:
                info = st.summary(cid)
            except Exception:
                return None
            return info.updated_at if info.status.finished else None

        loop = asyncio.new_event_loop()
        ctx = _DryAsyncContext(_DryHost(st), _DryLease(run_id), events, None, loop, ended)
    else:
        ctx = _DryContext(_DryHost(st), _DryLease(run_id), events)
    seen.append(ctx)
    end: _ReachedEnd | None = None
    outcome = "returned"
    token = _current.set(ctx)
    try:
        if isinstance(ctx, AsyncRunContext):
            _run_async(ctx, wf.fn(*args, **kwargs))
        else:
            wf.fn(*args, **kwargs)
    except _ReachedEnd as exc:
        end = exc
    except ContinueAsNew:
        outcome = "continued as new"
    except Suspend:  # it would wait here (a timer not yet due, a signal not yet sent)
        end = _ReachedEnd(ctx.seq, "wait")
    except Exception as exc:
        outcome = f"raised {type(exc).__name__}"
    finally:
        _current.reset(token)
    if isinstance(ctx.poisoned, DillRefused):  # as far as a check may read
        read = _steps(ctx.seq - 1)
        return True, f"deterministic: {read} replay; not checked further: {ctx.poisoned}"
    if isinstance(ctx.poisoned, NonDeterminismError):  # also when the workflow caught it
        return False, _mismatch(ctx.poisoned)
    if ctx.poisoned is not None:
        return False, f"cannot check past step {ctx.seq}: {ctx.poisoned}"
    final = _final_event(events)
    if end is not None:
        done = ctx.seq - 1 if end.seq == ctx.seq else ctx.seq
        if final is not None and end.seq is not None and end.seq > ctx.last_recorded:
            return False, (
                f"mismatch at step {end.seq}: recorded <workflow {final.removeprefix('run_')}>, "
                f"now {end.name!r}"
            )
        why = f" ({end.why})" if end.why else ""
        return True, (
            f"deterministic: {_steps(done)} replay; the run would continue with {end.name!r}{why}"
        )
    try:
        ctx.check_complete()
    except NonDeterminismError:
        if isinstance(ctx.poisoned, NonDeterminismError):
            recorded = ctx.poisoned.recorded
            now = "<workflow returned>" if outcome == "returned" else f"<workflow {outcome}>"
            return False, f"mismatch at step {ctx.poisoned.seq}: recorded {recorded!r}, now {now!r}"
    return True, f"deterministic: {_steps(ctx.seq)} replay and the workflow {outcome}"
