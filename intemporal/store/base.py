"""The storage interface every backend implements (what a listing shows of a run: `runinfo.py`).

A `Store` keeps, per run, an append-only journal of events (dicts that JSON can hold), an
inbox that any process may append messages to (signals, cancellation), and an ownership
claim: the process executing a run holds its `Lease` until it stops, and only the lease
appends to the journal. Replay, retries and locking policy live above, in the engine.

    store = MemoryStore()
    store.create("r1", {"type": "run_started", "workflow": "wf", "ts": 0.0})  # rings `wait`
    lease = store.claim("r1", owner)     # None when another owner holds the run
    lease.append({"type": "run_completed", "result": 1, "ts": 1.0}, sync=True)
    lease.release()
    leases = store.claim_next(owner, queues=None, limit=8)   # the runs to execute now
    ids, cursor = store.wait(cursor, timeout=1.0)            # runs created or messaged since
    alive = store.lease_owner(owner)     # while held, the runs `owner` parked stay its own

The interface speaks of runs, ownership and wake-ups; this is all of it (nothing outside
`intemporal/store/` calls anything else: `tests/test_store_boundary.py` checks it):

    runs        create(run_id, first, sync, owner)   create_claimed(...) -> Lease | None
                read   exists   delete   delete_if_ended   run_ids
                delete_ended_trees(trees, unreadable, undeletable)   `gc`'s bulk way, or None
    ownership   claim(run_id, owner) -> Lease | None      a named run: a resume, a child
                claim_next(owner, queues, limit) -> [Lease]  what `owner` may execute
                    now: pending (and due), running with no live lease (its process
                    died), waiting with a dead owner; `among` = the ids `wait` named;
                    each limited queue's room decided under its lock (`_queue_ledger`)
                lease_owner(owner) -> OwnerLease     an engine's own lease: while it holds,
                    the waiting runs it parked are not "left by a dead owner"
                Lease: token, append (LeaseLost once fenced out), sync, renew, release
    wake-ups    send(run_id, message)   inbox(run_id, cursor)   wait(cursor, timeout)
    listing     summary -> RunInfo (status, queue, owner, `executing`: a live lease holds
                the unfinished run now)   summary_or_unreadable   list_runs   iter_runs
                count_runs   ended_before (what `gc` looks at)   queue_starts   close
    attributes  location (a URL or path)   shared_by_hosts   wait_blocks

A store rings its own doorbell: `create` (a run for whichever worker takes it) and `send`
wake `wait`; nobody else rings. A backend implements the abstract operations (create, read,
exists, claim, send, inbox, run_ids, delete); the rest is written once here over them and
over private hooks a backend may replace with something cheaper: `_is_claimed` (a live
lease holds the run; this default claims and gives back), `_changes` (the doorbell `wait`
polls; this default has none: "look at every run"), `_owner_alive` (with `lease_owner`:
whether the owner that parked a waiting run lives), `_unfinished` (the runs `claim_next`
looks at), `_queue_ledger` (a limited queue's lock and ledger; this default: one process)
and `_modified_at`. The file store keeps its flock on the journal as the run's lease, a
`.doorbell` file, and a flock per engine (`.engines/ID.lock`) as the owner's lease;
PostgreSQL keeps leases in rows with an expiry renewed by a heartbeat, a doorbell table
with LISTEN/NOTIFY, and an `engines` table of owners' leases.
`tests/test_store_contract.py` is what every backend must pass.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from ..errors import IntemporalError, RunNotFound
from ..events import SIGNAL, TERMINAL_EVENTS, Event, RunState, RunStatus, fold, result_event
from . import queueing
from .queueing import QueueSpec
from .runinfo import RunInfo, summarize

POLL = 0.02  # seconds between looks of the polling `Store.wait`
_LEDGER_LOCK = threading.Lock()  # the default `Store._queue_ledger`'s lock (one process)


def with_signal_id(message: Event) -> Event:
    """`message`, with a fresh `signal_id` if it is a signal without one.

    A run takes each signal id once (a retried send is not a second signal): a signal sent
    without an id gets its own, so two of them are two signals, not one.
    """
    if message.get("type") == SIGNAL and not message.get("signal_id"):
        return {**message, "signal_id": uuid.uuid4().hex}
    return message


class Lease(ABC):
    """Ownership of one run: the right to append to its journal, held until `release()`.

    `token` names this claim: a store that can lose a lease (a database whose owner stopped
    renewing) raises it with every claim of the run and refuses appends of an older one
    (`LeaseLost`). Where the operating system holds the lock (the file store's flock, the
    memory store's mutex) a lease is lost only by its release, and `renew` has nothing to do.
    """

    run_id: str
    token: int = 0
    #: whether a run appends an activity's result unsynced and makes it durable with its
    #: next effect (`sync()`, or its next synced append): True where that sync costs what
    #: a synced append does (a file's write-ahead log, an fdatasync), so a run saves one;
    #: False where `sync()` is a round trip of its own (a database): results are synced
    defer_sync: bool = True

    @abstractmethod
    def append(self, event: Event, sync: bool) -> None:
        """Append one event; with `sync`, return only once it is on stable storage.

        Raises `LeaseLost` once the lease is released (or fenced out by a newer claim):
        the caller writes nothing more.
        """

    def append_result(
        self,
        seq: int,
        name: str,
        attempts: int,
        started: int,
        result: Any,
        ts: int,
        owner: str,
        sync: bool,
    ) -> None:
        """Append an activity's result: the event `result_event` makes of these (`started`
        and `ts` in whole microseconds since the epoch). A store whose journal is text
        spells its line from the parts here (the hot path of every step)."""
        self.append(result_event(seq, name, attempts, started, result, ts, owner), sync)

    def sync(self) -> None:  # noqa: B027 - where every append is durable, nothing to do
        """Make every event appended so far durable, those appended with `sync=False` too
        (submitted activities' results, synced together when the workflow joins them)."""

    def renew(self) -> None:  # noqa: B027 - a heartbeat: nothing to do where the OS holds the lock
        """Tell the store this owner still executes the run; `LeaseLost` if it no longer does."""

    @abstractmethod
    def release(self) -> None:
        """Give the run up so another process (or a later resume) may claim it."""


class OwnerLease:
    """An owner's (an engine's) own lease, from `Store.lease_owner`: held while it lives.

    A waiting run records the owner that parked it (`run_suspended`'s `owner`); while that
    owner's lease holds, the run is its own (it wakes the run itself, on a timer or a
    message) and `claim_next` leaves it. Once released (`Engine.close`), or lapsed with its
    process (the file store's flock, a database row's expiry), the run is *left by a dead
    owner* and any worker takes it. `renew` is a heartbeat: nothing to do where the OS holds
    the lock; a store with expiring rows renews them itself while the process lives.
    """

    def __init__(
        self,
        owner: str,
        release: Callable[[], None] | None = None,
        renew: Callable[[], None] | None = None,
    ) -> None:
        self.owner = owner
        self._release, self._renew = release, renew

    def renew(self) -> None:
        """Tell the store this owner still lives."""
        if self._renew is not None and self._release is not None:
            self._renew()

    def release(self) -> None:
        """Give the lease up: the runs this owner parked become any worker's. Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            release()


class Store(ABC):
    """The storage interface: journals, inboxes and ownership, per run id (module docstring)."""

    #: a URL or path that names this store for another process (None: not shareable)
    location: str | None = None
    #: workers on many hosts share it: an engine claims only the runs it can execute now
    shared_by_hosts: bool = False
    #: `wait` returns as soon as a message comes (a database's LISTEN): an engine's watcher
    #: waits in it instead of sleeping between looks
    wait_blocks: bool = False

    @abstractmethod
    def create(
        self, run_id: str, first: Event, sync: bool = True, owner: str | None = None
    ) -> bool:
        """Create a run whose journal starts with `first`; False if it exists.

        With `sync`, return only once the run is on stable storage. `owner`: the engine
        that claims the run itself next (a worker's own `start`, a parent's child run); None
        for a run any worker may take, for which the store rings its doorbell (`wait`
        returns its id), so a waiting worker takes it without polling.
        """

    def create_claimed(
        self, run_id: str, first: Event, sync: bool = True, owner: str = ""
    ) -> Lease | None:
        """Create a run and claim it, to execute it at once; None if it exists or is taken.

        With `sync`, the run reaches stable storage no later than the lease's first synced
        append (or its release): the caller executes it before telling anyone it exists
        (`Engine.run`), so a store may fold the creation's sync into that append.
        """
        if not self.create(run_id, first, sync, owner):
            return None
        lease = self.claim(run_id, owner)
        if lease is not None and len(self.read(run_id)) > 1:  # another owner executed it in
            lease.release()  # between: the caller must not execute it again from its start
            return None
        return lease

    @abstractmethod
    def read(self, run_id: str) -> list[Event]:
        """Return a run's events, oldest first; raise `RunNotFound` if there is no such run."""

    @abstractmethod
    def exists(self, run_id: str) -> bool:
        """Tell whether a run with this id exists."""

    @abstractmethod
    def claim(self, run_id: str, owner: str = "") -> Lease | None:
        """Take ownership of run `run_id` for `owner` (an engine id), to execute it now.

        None when another owner holds it; `RunNotFound` if there is no such run. The named
        way in: a resume, a child its parent executes inline. `claim_next` finds the runs.
        """

    def claim_next(
        self,
        owner: str,
        queues: Collection[str] | None = None,
        limit: int | None = None,
        *,
        among: Iterable[str] | None = None,
        skip: Container[str] = (),
        specs: Mapping[str, QueueSpec] | None = None,
        now: float | None = None,
    ) -> list[Lease]:
        """Claim, for `owner`, up to `limit` runs it may execute now; return their leases.

        Ready means: unfinished, of one of `queues` (None: any), and pending, or running
        with no live owner (its process died), or waiting with a dead owner. A failed run
        is not ready (it is resumed on request only). `among`: look only at these run ids
        (the ones a wake-up named; None: every unfinished run); `skip`: ids the caller
        already holds or passes over, asked before any run is locked (a run one worker passes
        over stays free for the others). Each run is checked again once claimed, so two owners never both
        take it. A run that cannot be read is left for `show` to report.

        Pending top-level runs are taken by priority then age; those of a queue in `specs`
        with limits only once their `start_at` (epoch seconds, compared with `now`, default
        the real time) has come and as the limits allow, decided under the queue's lock
        (`queueing.admit`), and only in a full look (`among` None).
        """
        now = time.time() if now is None else now
        leases: list[Lease] = []
        fresh: list[RunState] = []
        for run_id in self._unfinished() if among is None else among:
            if limit is not None and len(leases) >= limit:
                break
            if run_id in skip:
                continue
            try:
                state = fold(self.read(run_id))
                if queues is not None and state.queue not in queues:
                    continue
                if queueing.fresh(state):  # pending: only `_start_fresh` takes it
                    if self._is_claimed(run_id):  # executing now (or a probe holds it)
                        continue
                    # A run not due yet is taken only where no limit holds it back: its
                    # engine parks it until then. A limited queue admits it once due.
                    if queueing.due(state, now) or not queueing.limited(specs, state.queue):
                        state.run_id = run_id
                        fresh.append(state)
                    continue
                if not self._ready(run_id, queues):
                    continue
                lease = self.claim(run_id, owner)
                if lease is not None and not self._ready(run_id, queues, claimed=True):
                    lease.release()  # it changed between the look and the claim
                    lease = None
            except Exception:  # deleted meanwhile, or unreadable: not ours to report here
                continue
            if lease is not None:
                leases.append(lease)
        room = None if limit is None else limit - len(leases)
        return leases + self._start_fresh(owner, fresh, specs, room, now, among is not None)

    def _ready(self, run_id: str, queues: Collection[str] | None, claimed: bool = False) -> bool:
        """Whether `claim_next` takes this run (`claimed`: we hold its claim now)."""
        state = fold(self.read(run_id))
        if queues is not None and state.queue not in queues:
            return False
        if state.status is RunStatus.WAITING:
            return bool(state.owner) and not self._owner_alive(str(state.owner))
        if state.status is RunStatus.PENDING or state.status is RunStatus.RUNNING:
            return claimed or not self._is_claimed(run_id)
        return False

    def _start_fresh(
        self,
        owner: str,
        fresh: list[RunState],
        specs: Mapping[str, QueueSpec] | None,
        room: int | None,
        now: float,
        partial: bool,
    ) -> list[Lease]:
        """Claim pending top-level runs (`fresh`), queue by queue, as their limits allow."""
        leases: list[Lease] = []
        for queue, members in queueing.group(fresh):
            left = None if room is None else room - len(leases)
            if left is not None and left <= 0:
                break
            spec = queueing.limited(specs, queue)
            if spec is None:
                for state in members[:left]:
                    lease = self._claim_fresh(state.run_id, owner)
                    if lease is not None:
                        leases.append(lease)
                continue
            if partial or queue is None:  # a full look decides for the whole queue
                continue
            if left is not None:
                spec = replace(
                    spec, local=min(left, spec.local if spec.local is not None else left)
                )
            with self._queue_ledger(queue) as ledger:
                leases += queueing.admit(
                    spec,
                    ledger,
                    members,
                    now,
                    self._holds_slot,
                    lambda run_id: self._claim_fresh(run_id, owner),
                )
        return leases

    def _claim_fresh(self, run_id: str, owner: str) -> Lease | None:
        """Claim a pending run; None if taken, or no longer pending once claimed."""
        try:
            lease = self.claim(run_id, owner)
            if lease is not None and not queueing.fresh(fold(self.read(run_id))):
                lease.release()  # started or finished by another owner meanwhile
                return None
            return lease
        except Exception:  # deleted meanwhile, or unreadable: not ours to report here
            return None

    def _holds_slot(self, run_id: str) -> bool:
        """Whether an admitted run still holds its queue slot: it exists and is unfinished."""
        try:
            return self.read(run_id)[-1]["type"] not in TERMINAL_EVENTS
        except RunNotFound:
            return False
        except Exception:  # unreadable: count it, rather than let one run too many start
            return True

    @contextlib.contextmanager
    def _queue_ledger(self, name: str) -> Iterator[queueing.Ledger]:
        """Hold queue `name`'s lock and yield its ledger (`queueing.admit`), saved on exit.

        This default keeps both in this process (enough for the memory store); a store
        shared by processes keeps them where those processes see them.
        """
        with _LEDGER_LOCK:
            ledgers: dict[str, queueing.Ledger] = self.__dict__.setdefault("_ledgers", {})
            yield ledgers.setdefault(name, [])

    def queue_starts(self, name: str, since: float) -> int:
        """How many runs of queue `name` its limits admitted after `since` (epoch seconds)."""
        with self._queue_ledger(name) as ledger:
            return queueing.started_since(ledger, since)

    def lease_owner(self, owner: str) -> OwnerLease:
        """Take `owner`'s own lease (an engine id): see `OwnerLease`. Raises `RuntimeError`
        where another live holder has that id (an id is unique to its engine).

        This default holds nothing: a waiting run then stays with the engine that parked it
        (`_owner_alive` says yes), and is resumed by name if that engine is gone.
        """
        return OwnerLease(owner)

    # -- private hooks, written once here over the abstract operations; a backend may
    # replace them with something cheaper. Only the store's own calls use them.
    def _is_claimed(self, run_id: str) -> bool:
        """Whether a live lease holds the run now (what `summary` reports as `executing`).

        This default claims the run and gives it back at once.
        """
        lease = self.claim(run_id)
        if lease is None:
            return True
        lease.release()
        return False

    @abstractmethod
    def send(self, run_id: str, message: Event) -> None:
        """Append a message (a signal, a cancellation request) to the run's inbox, durably.

        A signal without a `signal_id` gets a fresh one (`with_signal_id`).
        """

    @abstractmethod
    def inbox(self, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        """Return the inbox messages after `cursor`, and the cursor to pass next time."""

    def wait(self, cursor: Any, timeout: float) -> tuple[list[str] | None, Any]:
        """Wait up to `timeout` seconds for a wake-up; return the runs it names (created for
        any worker, or messaged), and the cursor to pass next time (None as `cursor`: start
        now, returning `([], cursor)`).

        The ids may be None for "look at every run you hold" (the store lost track). This
        one polls `_changes` every `POLL` seconds; a store that can block (a database's
        LISTEN) overrides it.
        """
        if cursor is None:
            return self._changes(None)
        deadline = time.monotonic() + timeout
        while True:
            ids, cursor = self._changes(cursor)
            left = deadline - time.monotonic()
            if ids is None or ids or left <= 0:
                return ids, cursor
            time.sleep(min(POLL, left))

    def _changes(self, cursor: int | None = None) -> tuple[list[str] | None, int]:
        """Which runs the doorbell named since `cursor`: the ids, or None for "look at all".

        A cheap doorbell for `wait`: with `cursor=None` it returns `([], now)`, the cursor
        to start from. This default has no doorbell: always "look at all".
        """
        return ([], 0) if cursor is None else (None, 0)

    @abstractmethod
    def run_ids(self) -> Iterator[str]:
        """Yield the id of every run in the store, in no particular order."""

    @abstractmethod
    def delete(self, run_id: str) -> None:
        """Remove a run and everything stored for it."""

    def _owner_alive(self, owner: str) -> bool:
        """Whether `owner`'s lease (`lease_owner`) holds, in any process.

        This default says yes: see `lease_owner`.
        """
        return True

    def _unfinished(self) -> Iterator[str]:
        """Yield the ids of runs not finished (no terminal event); backends may read less."""
        for run_id in self.run_ids():
            try:
                if self.read(run_id)[-1]["type"] not in TERMINAL_EVENTS:
                    yield run_id
            except Exception:  # deleted meanwhile, or unreadable: `show` reports it
                continue

    def ended_before(self, cutoff: float) -> tuple[dict[str, RunInfo], set[str]]:
        """What `gc` looks at: the runs of every tree whose top-level run may have ended by
        `cutoff` (epoch seconds), by id, and the ids of the runs that cannot be read.

        This default returns every run of the store; a backend with an index returns less.
        """
        infos: dict[str, RunInfo] = {}
        unreadable: set[str] = set()
        for rid in self.run_ids():
            try:
                infos[rid] = self.summary(rid)
            except Exception:  # damaged, or deleted meanwhile: never collected blindly
                unreadable.add(rid)
        return infos, unreadable

    def delete_if_ended(self, run_id: str, updated_at: float) -> bool:
        """Delete a run nobody owns whose journal still ends with a terminal event stamped
        `updated_at` (what `gc` saw); False, deleting nothing, otherwise.

        Raises `RunNotFound`, and `JournalCorrupted` (or `UnsafeStore`) for a journal that
        cannot be read. This default claims, reads and deletes; a backend may do it in fewer
        steps (the file store: one descriptor locked, read and unlinked).
        """
        lease = self.claim(run_id)
        if lease is None:
            return False
        try:
            last = self.read(run_id)[-1]
            if last["type"] not in TERMINAL_EVENTS or last.get("ts", 0.0) != updated_at:
                return False
            self.delete(run_id)
            return True
        finally:
            lease.release()

    def delete_ended_trees(
        self,
        trees: list[list[RunInfo]],
        unreadable: set[str],
        undeletable: dict[str, str] | None = None,
    ) -> list[bool] | None:
        """`gc`'s bulk way, where a backend has one: delete each group of runs (a tree,
        deepest first, as `ended_before` described them) whole, or not at all when one of
        its runs is owned, changed since, gone, or cannot be read (its id then goes to
        `unreadable`); one bool per group, True where it was deleted. A run whose files
        cannot be unlinked (`EPERM`, `EROFS`, ...) stays with every run below it, its id in
        `undeletable` with why; the rest of its group is deleted (the group says False).

        None when the backend has no bulk way now: the caller claims and deletes run by
        run (`housekeeping.delete_trees`). This default returns None.
        """
        return None

    def summary(self, run_id: str) -> RunInfo:
        """Return the run's `RunInfo`; backends may override with a cheaper read."""
        return self._adopt(summarize(run_id, self.read(run_id), self._is_claimed(run_id)))

    def summary_or_unreadable(self, run_id: str) -> RunInfo | None:
        """The run's `RunInfo` for a listing; an `UNREADABLE` one saying why it cannot be read.

        None when the run was deleted meanwhile. A damaged journal is listed, not skipped:
        its status is `RunStatus.UNREADABLE` and its `error` the reason.
        """
        try:
            return self.summary(run_id)
        except RunNotFound:
            return None
        except Exception as exc:  # whatever the damage: listing goes on and shows it
            reason = (
                str(exc) if isinstance(exc, IntemporalError) else f"{type(exc).__name__}: {exc}"
            )
            when = self._modified_at(run_id)
            return RunInfo(run_id, "?", RunStatus.UNREADABLE, when, when, error=reason)

    def _modified_at(self, run_id: str) -> float:
        """When the run's journal last changed (epoch seconds), where a store knows; else 0."""
        return 0.0

    def _adopt(self, info: RunInfo) -> RunInfo:
        """Mark a waiting run orphaned when the engine that parked it is gone."""
        if info.status is RunStatus.WAITING and info.owner and not self._owner_alive(info.owner):
            info.orphaned = True
        return info

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        """Return run summaries, newest first, filtered by status and workflow name."""
        want = RunStatus(status) if status is not None else None
        out = []
        for rid in self.run_ids():
            info = self.summary_or_unreadable(rid)
            if info is not None and info.matches(want, workflow):
                out.append(info)
        out.sort(key=lambda i: (i.created_at, i.run_id), reverse=True)
        return out[:limit] if limit is not None else out

    def iter_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        queue: str | None = None,
        parent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        unfinished: bool = False,
    ) -> Iterator[RunInfo]:
        """Run summaries newest first, filtered, yielded as they are read (`intemporal list`).

        `since`/`until` bound `created_at` (epoch seconds, `until` excluded); `unfinished`:
        only the runs not finished (pending, running, waiting, stuck, and the unreadable
        ones, which may be any). This default reads every run first; the file store reads
        only the runs asked for (its index); with `unfinished`, the ones `_unfinished` names.
        """
        if unfinished:  # a few among many finished runs: not every summary
            infos = [self.summary_or_unreadable(rid) for rid in self._unfinished()]
            want = RunStatus(status) if status is not None else None
            found = [i for i in infos if i is not None and i.matches(want, workflow)]
            found.sort(key=lambda i: (i.created_at, i.run_id), reverse=True)
        for info in found if unfinished else self.list_runs(status=status, workflow=workflow):
            if self._kept(info, queue, parent, since, until, unfinished):
                yield info

    def _kept(
        self,
        info: RunInfo,
        queue: str | None,
        parent: str | None,
        since: float | None,
        until: float | None,
        unfinished: bool = False,
    ) -> bool:
        """Whether `info` passes `iter_runs`' filters (beyond status and workflow)."""
        return (
            (parent is None or info.parent == parent)
            and (since is None or info.created_at >= since)
            and (until is None or info.created_at < until)
            and (queue is None or info.queue == queue)
            and not (unfinished and info.status.finished)
        )

    def count_runs(self, **filters: Any) -> int | None:
        """How many runs `iter_runs(**filters)` yields, where a store can tell without reading
        them (None: it cannot)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release whatever the store holds open."""
