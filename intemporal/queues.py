"""Queues with limits: `intemporal.Queue`, and the queues this process declared.

    emails = intemporal.Queue("emails", concurrency=2, rate=(10, 1.0))

    with intemporal.Engine(queues=[emails, "default"]) as engine:
        engine.start(send_welcome, user, queue="emails", priority=-1, delay=30)

A queue is a name runs are recorded on; a `Queue` gives it limits that hold for the whole
store (every worker of a file store on one host, of a PostgreSQL store on any host):
`concurrency` runs at once, `worker_concurrency` runs at once in one engine, `rate=(limit,
period_seconds)` starts in any rolling window. A `Queue` made at a module's top level
declares itself, as a workflow does: `intemporal worker --queue emails --import app` uses
the limits that `app` declares. How the store decides is in `store/queueing.py`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass

from .store.queueing import QueueSpec

_declared: dict[str, Queue] = {}
_lock = threading.Lock()


def _positive(name: str, value: object, kind: type = int) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
    if not ok or not (0 < value < math.inf):  # type: ignore[operator]
        what = "a positive int" if kind is int else "a positive number of seconds"
        raise ValueError(f"Queue {name} must be {what} or None, not {value!r}")


@dataclass(frozen=True)
class Queue:
    """A named queue and its limits; making one declares it in this process.

    >>> Queue("emails", concurrency=2, worker_concurrency=1, rate=(10, 1.0))

    `concurrency`: the most runs of the queue executing at once across every worker of
    the store (a run holds its slot from its start until it finishes, sleeps and waits
    included; its child runs share it). `worker_concurrency`: the most at once in one
    engine. `rate`: `(limit, period_seconds)`, at most `limit` runs started in any rolling
    window of `period_seconds`. None: no limit. A later `Queue` of the same name replaces
    the declaration. Raises `ValueError` for an empty name or a limit that is not
    positive (`rate` must be a pair of a positive int and a positive number); `TypeError` for a
    limit given by position.
    """

    name: str
    _: KW_ONLY  # `Queue("q", 2)` would not say which limit 2 is
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a Queue needs a non-empty name, not {self.name!r}")
        for field in ("concurrency", "worker_concurrency"):
            if getattr(self, field) is not None:
                _positive(field, getattr(self, field))
        if self.rate is not None:
            if not isinstance(self.rate, tuple | list) or len(self.rate) != 2:
                raise ValueError(f"Queue rate must be (limit, period_seconds), not {self.rate!r}")
            _positive("rate limit", self.rate[0])
            _positive("rate period", self.rate[1], float)
            object.__setattr__(self, "rate", (self.rate[0], float(self.rate[1])))
        with _lock:
            _declared[self.name] = self

    @property
    def limited(self) -> bool:
        """Whether the queue has any limit (starts of its runs go through the store)."""
        return (
            self.concurrency is not None
            or self.worker_concurrency is not None
            or self.rate is not None
        )

    def spec(self, local: int | None = None) -> QueueSpec:
        """The limits as the store takes them, with `local` more allowed for this caller."""
        return QueueSpec(self.name, self.concurrency, self.rate, local)


def declared() -> dict[str, Queue]:
    """Every `Queue` made in this process, by name (the latest of each name)."""
    with _lock:
        return dict(_declared)


def split(queues: Iterable[str | Queue] | None) -> tuple[list[str] | None, dict[str, Queue]]:
    """`Engine(queues=...)`: the names served, and the `Queue`s among them by name.

    Raises `TypeError` for an item that is neither a name nor a `Queue`.
    """
    if queues is None:
        return None, {}
    if isinstance(queues, str | Queue):
        raise TypeError("queues must be a list of names or Queue objects, not one of them")
    names: list[str] = []
    given: dict[str, Queue] = {}
    for q in queues:
        if isinstance(q, Queue):
            names.append(q.name)
            given[q.name] = q
        elif isinstance(q, str):
            names.append(q)
        else:
            raise TypeError(f"queues takes names and intemporal.Queue objects, not {q!r}")
    return names, given
