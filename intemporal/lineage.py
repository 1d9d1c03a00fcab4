"""Runs made from runs: continue-as-new (an endless loop in bounded journals) and fork.

    @intemporal.workflow
    def poller(cursor: int) -> int:
        cursor = fetch_new(cursor)
        intemporal.sleep(60)
        intemporal.continue_as_new(cursor)     # never returns: "<run>~1", "<run>~2", ...

    handle = engine.fork("order-42", from_step=3)   # steps 1-2 copied, 3 on executes anew

Continue-as-new ends the run `completed`, its result a pointer `{"continued_as": next}`,
and starts the next run of the chain (same workflow, same queue and parent, the deadline
carried over, the signals it left unread sent on) with a journal of its own: `"<run_id>~<n>"`. `RunHandle.result()` follows the
chain to its last run. The next run is created before the current one records its end,
so a crash between the two replays to the same call and finds it made.

A fork is a new run whose journal is a copy of the source's steps before `from_step` (the
child runs they started copied too, so they are not run again), ending in `run_forked`;
it then executes from `from_step` on with today's code. The source is not touched.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .clock import Clock
from .errors import ContinueAsNew, RunConflict, store_call
from .events import (
    CHILD_STARTED,
    PATCH,
    RUN_COMPLETED,
    RUN_FORKED,
    SIGNAL,
    SIGNAL_RECEIVED,
    Event,
)
from .replay import RunContext, current
from .runs import check_same_run, first_event
from .store import Lease, Store, check_run_id

if TYPE_CHECKING:
    from .api import Workflow

_CHAIN = re.compile(r"(.*)~(\d+)")


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run and start a fresh run of the same workflow with these arguments.

    Never returns. The run ends `completed` with the result `{"continued_as": next_id}`;
    the next run, `"<run_id>~<n>"`, has a journal of its own, so a loop that runs forever
    (a poller, a subscription) never grows one journal without bound. `handle.result()`
    on the first run follows the chain to the last. The arguments must be storable
    (else the run fails with `SerializationError`). Raises `RuntimeError` outside a workflow.
    """
    if current() is None:
        raise RuntimeError("intemporal.continue_as_new() can only be called inside a workflow")
    raise ContinueAsNew(args, kwargs)


def next_in_chain(run_id: str) -> str:
    """The id of the run that continues `run_id`: "r" -> "r~1", "r~1" -> "r~2"."""
    m = _CHAIN.fullmatch(run_id)
    return f"{m.group(1)}~{int(m.group(2)) + 1}" if m else f"{run_id}~1"


def stamp(first: Event, version: str | None, deadline: float | None) -> Event:
    """`first` (a `run_started`) with the engine's code version and the run's deadline."""
    if version is not None:
        first["code_version"] = version
    if deadline is not None:
        first["deadline"] = deadline
    return first


class ChainHost(Protocol):
    """What continuing a run needs from the engine executing it."""

    store: Store
    codec: str
    sync: bool
    version: str | None
    clock: Clock
    engine_id: str

    def _with_headers(self, first: Event) -> Event: ...


def continue_run(
    host: ChainHost,
    ctx: RunContext,
    events: list[Event],
    wf: Workflow[Any, Any],
    protocols: dict[type, Any],
    exc: ContinueAsNew,
) -> str:
    """Create the next run of the chain and end run `ctx.run_id` pointing at it; its id.

    The caller launches the next run. Raises `SerializationError` (nothing written) when
    the new arguments cannot be stored.
    """
    ctx.before_effect()  # the next run may depend on the last results: durable first
    first, nxt = events[0], next_in_chain(ctx.run_id)
    check_run_id(nxt)
    parent = first.get("parent")
    queue, now = first.get("queue"), host.clock.time()
    new = first_event(nxt, wf, exc.args, exc.kwargs, host.codec, queue, protocols, parent, now)
    new["continued_from"] = ctx.run_id
    if first.get("priority"):  # its place in its queue, kept along the chain
        new["priority"] = first["priority"]
    stamp(host._with_headers(new), host.version, first.get("deadline"))
    with store_call(nxt, f"create run {nxt!r}"):
        # Launched by the caller: no wake-up for other workers (`Store.create`'s `owner`).
        # Made before a crash? Then it must be the same run.
        if not host.store.create(nxt, new, host.sync, host.engine_id):
            check_same_run(nxt, host.store.read(nxt)[0], wf, parent=parent)
        replay_signals(host.store, ctx.run_id, nxt, host.store.read(ctx.run_id))
    ctx.append({"type": RUN_COMPLETED, "result": {"continued_as": nxt}, "continued_as": nxt})
    with store_call(nxt, f"send run {nxt!r} the signals of {ctx.run_id!r}"):
        # those sent while it ended (a signal's id is taken once: none arrives twice)
        replay_signals(host.store, ctx.run_id, nxt, host.store.read(ctx.run_id))
    return nxt


# -- fork ------------------------------------------------------------------------------------------
def check_step(events: list[Event], from_step: object, run_id: str) -> int:
    """`from_step` if it names a step of the run or the one after its last; else an error."""
    last = max((e["seq"] for e in events if isinstance(e.get("seq"), int)), default=0)
    if isinstance(from_step, bool) or not isinstance(from_step, int):
        raise TypeError(f"from_step must be a step number (an int), not {from_step!r}")
    if not 1 <= from_step <= last + 1:
        raise ValueError(
            f"from_step must be between 1 and {last + 1} for run {run_id!r} "
            f"(its last recorded step is {last}), not {from_step}"
        )
    return from_step


def _renamed(events: list[Event], old: str, new: str) -> list[Event]:
    """`events` with every child id under run `old` moved under run `new`."""
    out = []
    for ev in events:
        if ev["type"] == CHILD_STARTED and str(ev.get("child_id", "")).startswith(old + "/"):
            ev = {**ev, "child_id": new + ev["child_id"][len(old) :]}
        out.append(ev)
    return out


def fork_events(
    events: list[Event], source: str, new_id: str, from_step: int, now: float
) -> list[Event]:
    """The journal of a fork of run `source` from step `from_step`: its first event, the
    steps before `from_step` (with the patch markers decided there), then `run_forked`."""
    first = {k: v for k, v in events[0].items() if k not in ("parent", "start_at")}
    first.update(run_id=new_id, ts=round(now, 6), forked_from={"run_id": source, "step": from_step})
    if events[0].get("deadline") is not None:  # the same length of time, counted from now
        first["deadline"] = round(now + events[0]["deadline"] - events[0].get("ts", now), 6)
    kept = [
        ev
        for ev in events[1:]
        if (isinstance(ev.get("seq"), int) and ev["seq"] < from_step)
        or (ev["type"] == PATCH and ev.get("at", 0) < from_step)
    ]
    forked: Event = {"type": RUN_FORKED, "from_run": source, "from_step": from_step}
    return [first, *_renamed(kept, source, new_id), {**forked, "ts": round(now, 6)}]


def write_journal(store: Store, lease: Lease, events: list[Event], sync: bool) -> None:
    """Append `events` (all but a journal's first) through `lease`, syncing the last one."""
    for i, ev in enumerate(events):
        lease.append(ev, sync and i == len(events) - 1)


def copy_children(store: Store, events: list[Event], source: str, new_id: str) -> None:
    """Copy the child runs that `events` (a fork's kept steps) started, with their own
    children, from under run `source` to under run `new_id`; children never created are
    left for the fork to create."""
    for ev in events:
        if ev["type"] != CHILD_STARTED or not str(ev.get("child_id", "")).startswith(new_id + "/"):
            continue
        cid = ev["child_id"]
        old = source + cid[len(new_id) :]
        if not store.exists(old) or store.exists(cid):
            continue
        journal = _renamed(store.read(old), old, cid)
        parent = cid.rpartition("/")[0]
        lease = store.create_claimed(cid, {**journal[0], "run_id": cid, "parent": parent}, False)
        if lease is None:
            continue
        try:
            write_journal(store, lease, journal[1:], True)
        finally:
            lease.release()
        copy_children(store, journal, old, cid)


def replay_signals(store: Store, source: str, new_id: str, kept: list[Event]) -> None:
    """Send run `new_id` the signals of run `source` that the journal `kept` did not take:
    for a fork, those the steps at and after `from_step` took and those still queued; for
    the next run of a chain, those its previous run left unread."""
    used = {ev.get("signal_id") for ev in kept if ev["type"] == SIGNAL_RECEIVED}
    messages, _ = store.inbox(source)
    for msg in messages:
        if msg.get("type") == SIGNAL and msg.get("signal_id") not in used:
            store.send(new_id, msg)


def check_fork(store: Store, new_id: str, source: str, from_step: int) -> None:
    """Raise `RunConflict` unless existing run `new_id` is this very fork (a repeated call)."""
    first = store.read(new_id)[0]
    if first.get("forked_from") != {"run_id": source, "step": from_step}:
        raise RunConflict(
            new_id, str(first.get("workflow")), f"a fork of run {source!r} from step {from_step}"
        )


def fork_run(
    store: Store,
    source: str,
    events: list[Event],
    from_step: int,
    new_id: str,
    now: float,
    version: str | None,
    sync: bool,
) -> Lease | None:
    """Write the fork `new_id` of run `source` (its journal: `events`) from step `from_step`,
    and return its lease, to execute it; None when `new_id` is this very fork already.

    `version`: the code version of the engine that forks (None: the source's stays).
    Raises `RunConflict` when `new_id` is another run.
    """
    journal = fork_events(events, source, new_id, from_step, now)
    stamp(journal[0], version, None)
    lease = store.create_claimed(new_id, journal[0], False)
    if lease is None:
        check_fork(store, new_id, source, from_step)
        return None
    try:
        write_journal(store, lease, journal[1:-1], False)
        copy_children(store, journal, source, new_id)
        replay_signals(store, source, new_id, journal)
        write_journal(store, lease, journal[-1:], sync)
    except BaseException:
        lease.release()
        raise
    return lease
