"""Queue limits as a store enforces them: which pending runs may start now, decided atomically.

A queue with limits (`QueueSpec`: `concurrency`, `rate`) admits its pending runs under one
lock per queue held by the store (the memory store's mutex, the file store's flock on
its ledger `.queues/<name>-<hash>.ledger`, a PostgreSQL advisory transaction lock, the
ledger there being the `started_at` column of `runs`), so two workers never both
take its last slot. What the decision reads is the queue's *ledger*: one entry per run it
admitted, `(run_id, started_at)`, kept while the run is unfinished (it holds a slot) or
its start is inside the rate window.

    spec = QueueSpec("emails", concurrency=2, rate=(10, 1.0))
    leases = store.claim_next(owner, ["emails"], specs={"emails": spec}, now=time.time())

A run holds its slot from its admission until it finishes, sleeps and signal waits
included (as in DBOS); child runs never pass the gate: they share their parent's slot.
Within a queue, pending runs start by `priority` (lower first), then by age; a run whose
`start_at` (from `start(delay=...)`) is still ahead is not taken. Pure but for the store
calls given to it (and `flocked_ledger`, the file store's): no clock, the caller passes
`now`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..events import RunState, RunStatus

try:
    import fcntl
except ImportError:  # not on this system: `FileStore._queue_ledger` keeps ledgers in-process
    fcntl = None  # type: ignore[assignment]

L = TypeVar("L")  # a store's lease

#: a queue's ledger: (run id, admitted at, epoch seconds), oldest first
Ledger = list[tuple[str, float]]
RATE_MARGIN = 0.15  # how much longer than its period a rate window is counted (`window`)
RATE_SLACK = 0.05  # seconds: the least it is counted longer


@dataclass(frozen=True)
class QueueSpec:
    """The limits a store enforces on one queue, for one claim.

    `concurrency`: the most runs of the queue started and not finished at once, across
    every worker of the store (None: no limit). `rate`: `(limit, period_seconds)`, at most
    `limit` runs admitted in any rolling window of `period_seconds` (None: no limit).
    `local`: at most this many more for this caller now (an engine's `worker_concurrency`
    room; None: no limit).
    """

    name: str
    concurrency: int | None = None
    rate: tuple[int, float] | None = None
    local: int | None = None

    @property
    def limited(self) -> bool:
        """Whether the store must decide under the queue's lock (concurrency or rate)."""
        return self.concurrency is not None or self.rate is not None

    def room(self, active: int, recent: int) -> int:
        """How many more runs may start, with `active` holding slots and `recent` admitted
        inside the rate window."""
        free = math.inf if self.local is None else self.local
        if self.concurrency is not None:
            free = min(free, self.concurrency - active)
        if self.rate is not None:
            free = min(free, self.rate[0] - recent)
        return int(max(0, min(free, 1 << 30)))

    def window(self, now: float) -> float:
        """The start of the rate window ending `now` (`now` itself when there is no rate).

        Longer than the period by `RATE_MARGIN` of it (at least `RATE_SLACK` seconds): a
        run's first step comes some milliseconds after its admission (a database round
        trip or two, a busy host), so the start times its own steps record keep the limit
        too, not only the admission times.
        """
        if self.rate is None:
            return now
        period = self.rate[1]
        return now - period - max(period * RATE_MARGIN, RATE_SLACK)


def fresh(state: RunState) -> bool:
    """Whether a run is one a queue admits: top-level and not started yet (pending)."""
    return state.parent is None and state.status is RunStatus.PENDING


def due(state: RunState, now: float) -> bool:
    """Whether a run's delayed start (`start_at`) has come."""
    return state.start_at is None or state.start_at <= now


def order(states: list[RunState]) -> list[RunState]:
    """Pending runs in the order a queue starts them: lower priority value, then older."""
    return sorted(states, key=lambda s: (s.priority, s.created_at, s.run_id))


def admit(
    spec: QueueSpec,
    ledger: Ledger,
    candidates: list[RunState],
    now: float,
    unfinished: Callable[[str], bool],
    claim: Callable[[str], L | None],
) -> list[L]:
    """Admit pending runs of one queue; the caller holds the queue's lock and saves `ledger`.

    `candidates` are the queue's pending top-level runs nobody holds (those not due are
    left); `unfinished(id)`
    tells whether a ledger's run still holds its slot; `claim(id)` claims a run (None:
    taken meanwhile). A candidate already in the ledger (admitted, then released before it
    recorded anything) is claimed again without a new slot. `ledger` is updated in place:
    finished runs out of the rate window dropped, the runs admitted now appended.
    """
    since = spec.window(now)
    kept: Ledger = []
    holding: set[str] = set()
    recent = 0
    for run_id, at in ledger:
        active = unfinished(run_id)
        if active:
            holding.add(run_id)
        if at > since:
            recent += 1
        if active or at > since:
            kept.append((run_id, at))
    leases: list[L] = []
    room = spec.room(len(holding), recent)
    for state in order(candidates):
        if not due(state, now):
            continue
        again = state.run_id in holding
        if not again and room <= 0:
            continue
        lease = claim(state.run_id)
        if lease is None:
            continue
        leases.append(lease)
        if not again:
            room -= 1
            kept.append((state.run_id, now))
    ledger[:] = kept
    return leases


def started_since(ledger: Ledger, since: float) -> int:
    """How many runs of a ledger were admitted after `since`."""
    return sum(1 for _, at in ledger if at > since)


def group(states: list[RunState]) -> Iterator[tuple[str | None, list[RunState]]]:
    """Pending runs grouped by queue, each group in start order."""
    by: dict[str | None, list[RunState]] = {}
    for s in states:
        by.setdefault(s.queue, []).append(s)
    for queue, members in by.items():
        yield queue, order(members)


def limited(specs: Mapping[str, QueueSpec] | None, queue: str | None) -> QueueSpec | None:
    """The spec of `queue` if it has a limit the store enforces, else None."""
    spec = (specs or {}).get(queue) if queue is not None else None
    return spec if spec is not None and (spec.limited or spec.local is not None) else None


def file_name(queue: str) -> str:
    """A file name for queue `queue`'s ledger: readable, safe, and unique to the name."""
    plain = "".join(c if c.isalnum() or c in "-_" else "_" for c in queue)[:40]
    return f"{plain}-{hashlib.sha1(queue.encode()).hexdigest()[:12]}.ledger"


def parse_ledger(data: bytes) -> Ledger:
    """A ledger from its file (`dump_ledger`); a torn or empty file reads as empty."""
    try:
        return [(str(run_id), float(at)) for run_id, at in json.loads(data or b"[]")]
    except (ValueError, TypeError):
        return []


def dump_ledger(ledger: Ledger) -> bytes:
    """A ledger as the bytes of its file."""
    return json.dumps([[run_id, at] for run_id, at in ledger]).encode()


def lock_key(text: str) -> int:
    """A 60-bit advisory lock key (a PostgreSQL bigint) named by `text`."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def flocked_ledger(fd: int) -> Iterator[Ledger]:
    """The ledger in file `fd`, under an exclusive `flock` until the block ends; what the
    block changed is written back then, and `fd` closed (which drops the lock).

    A crash mid-write can leave a torn file, read back as an empty ledger: the queue's
    slots are then counted afresh from the runs admitted after it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ledger = parse_ledger(os.pread(fd, max(os.fstat(fd).st_size, 1), 0))
        before = list(ledger)
        yield ledger
        if ledger != before:
            text = dump_ledger(ledger)
            os.pwrite(fd, text, 0)
            os.ftruncate(fd, len(text))
    finally:
        os.close(fd)
