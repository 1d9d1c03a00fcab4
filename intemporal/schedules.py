"""Cron schedules: `@intemporal.scheduled` workflows, started once per tick by the workers.

    @intemporal.scheduled("*/5 * * * *")          # every five minutes, UTC
    @intemporal.workflow
    def report(tick: datetime) -> None: ...

Every worker engine that imports a scheduled workflow takes part: at each tick each one
starts the run `"<workflow name>@<tick as YYYY-MM-DDTHH:MM:SSZ>"`, and idempotent start
makes all but the first a no-op, so each tick starts exactly one run however many
workers there are. A worker that was down for ticks starts only the ones after it came
back, unless `catch_up=True` (then the ones after the last tick recorded in the store).
Cron expressions are read by croniter: five fields (minute precision), or six with the
seconds first (`"*/10 * * * * *"`: every ten seconds); all times are UTC.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from .api import Workflow, workflow
from .clock import Clock
from .store import Store, check_run_id

log = logging.getLogger("intemporal")

TICK_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CATCH_UP_MAX = 1000  # missed ticks started at most, the newest, when a worker catches up
WATCH = 0.2  # seconds between two looks at the clock (a virtual one may jump)

W = TypeVar("W")

_schedules: dict[str, Schedule] = {}  # workflow name -> its schedule
_lock = threading.Lock()


def _croniter() -> Any:
    """croniter's class, imported on first use: `import intemporal` stays light (it pulls
    in dateutil and pytz, ~0.2 s)."""
    from croniter import croniter

    return croniter


def tick_text(tick: float) -> str:
    """A tick (epoch seconds) as it appears in run ids: `2026-01-31T09:05:00Z`."""
    return datetime.fromtimestamp(tick, UTC).strftime(TICK_FORMAT)


def parse_tick(text: str) -> datetime | None:
    """The UTC datetime of a tick written by `tick_text`; None if `text` is not one."""
    try:
        return datetime.strptime(text, TICK_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Schedule:
    """One scheduled workflow: its cron expression, queue and catch-up choice."""

    workflow: Workflow[Any, Any]
    cron: str
    queue: str | None = None
    catch_up: bool = False

    @property
    def name(self) -> str:
        return self.workflow.name

    def run_id(self, tick: float) -> str:
        """The id of the run of tick `tick` (epoch seconds)."""
        return f"{self.name}@{tick_text(tick)}"

    def next_tick(self, after: float) -> float:
        """The first tick strictly after `after` (epoch seconds)."""
        start = datetime.fromtimestamp(after, UTC)
        it = _croniter()(self.cron, start, second_at_beginning=True)
        return float(it.get_next(datetime).timestamp())

    def ticks(self, after: float, until: float, most: int = CATCH_UP_MAX) -> list[float]:
        """The ticks in `(after, until]` (epoch seconds), the newest `most`, oldest first."""
        it = _croniter()(
            self.cron, datetime.fromtimestamp(until + 1e-3, UTC), second_at_beginning=True
        )
        out: list[float] = []
        while len(out) < most:
            tick = float(it.get_prev(datetime).timestamp())
            if tick <= after:
                break
            if tick <= until:
                out.append(tick)
        return out[::-1]


def scheduled(cron: str, *, queue: str | None = None, catch_up: bool = False) -> Callable[[W], W]:
    """Start a workflow at each tick of `cron` (UTC), once across all workers.

    >>> @intemporal.scheduled("0 9 * * 1-5", queue="reports")
    ... @intemporal.workflow
    ... def morning_report(tick: datetime) -> None: ...

    Goes on a `@workflow` (or a plain function, made one); its first parameter receives
    the tick, a `datetime` in UTC (recorded in the journal as `YYYY-MM-DDTHH:MM:SSZ`).
    `cron`: five fields, or six with seconds first. `queue`: the queue its runs are
    recorded on (default: the workflow's). `catch_up`: a worker that comes back after
    missed ticks starts them (the newest 1000 at most); by default it does not. Raises
    `ValueError` for an expression croniter cannot read or a workflow name that cannot
    be part of a run id (give the workflow `name=`).
    """
    if not isinstance(cron, str) or not _croniter().is_valid(cron, second_at_beginning=True):
        raise ValueError(
            f"not a cron expression: {cron!r} (five fields, or six with seconds first)"
        )

    def decorate(fn: W) -> W:
        wf: Workflow[Any, Any] = fn if isinstance(fn, Workflow) else workflow(cast(Any, fn))
        sched = Schedule(wf, cron, queue, catch_up)
        try:
            check_run_id(sched.run_id(0.0))
        except ValueError:
            raise ValueError(
                f"workflow name {wf.name!r} cannot be part of a run id: give it "
                "@intemporal.workflow(name=...) of letters, digits and -_.:/"
            ) from None
        if not getattr(wf.fn, "_takes_tick", False):
            wf.fn = _takes_tick(wf.fn)
        with _lock:
            _schedules[wf.name] = sched
        return cast(W, wf)

    return decorate


def _takes_tick(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, given its first argument as a `datetime` when it arrives as a recorded tick."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str):
            tick = parse_tick(args[0])
            if tick is not None:
                args = (tick, *args[1:])
        return fn(*args, **kwargs)

    call._takes_tick = True  # type: ignore[attr-defined]
    return call


def schedules() -> list[Schedule]:
    """Every schedule declared in this process, by workflow name."""
    with _lock:
        return [_schedules[name] for name in sorted(_schedules)]


def forget(name: str) -> None:
    """Drop the schedule of workflow `name` from this process (tests; a reload)."""
    with _lock:
        _schedules.pop(name, None)


def latest_tick(store: Store, sched: Schedule) -> float | None:
    """The newest tick of `sched` the store has a run of (epoch seconds), or None."""
    prefix = sched.name + "@"
    ticks = [
        parse_tick(info.run_id[len(prefix) :])
        for info in store.list_runs(workflow=sched.name)
        if info.run_id.startswith(prefix)
    ]
    found = [t.timestamp() for t in ticks if t is not None]
    return max(found) if found else None


class Scheduler:
    """The schedules one worker engine fires: a thread that starts each tick's run.

    `start` is the engine's `start` (idempotent by run id: the same tick started by
    several workers is one run); `store` is read for the last tick recorded (`catch_up`).
    `served`: the queues the engine serves (None: all). Time is read on `clock`.
    """

    def __init__(
        self,
        start: Callable[..., Any],
        store: Store,
        clock: Clock,
        closing: threading.Event,
        served: list[str] | None,
    ) -> None:
        self._start, self._store, self._clock = start, store, clock
        self._closing, self._served = closing, served
        self._last: dict[str, float] = {}  # schedule name -> the last tick handled here
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def mine(self) -> list[Schedule]:
        """The declared schedules whose queue this engine serves."""
        return [
            s
            for s in schedules()
            if self._served is None or (s.queue or s.workflow.queue) in self._served
        ]

    @property
    def thread(self) -> threading.Thread | None:
        """The thread firing ticks (None until started); it ends once `closing` is set."""
        return self._thread

    def start(self) -> None:
        """Start the thread, once, if there is a schedule to fire. The engine's start is
        the moment its ticks count from: a tick that comes before the thread's first look
        (a virtual clock advanced at once) is still fired."""
        with self._mutex:
            if self._thread is None and self.mine() and not self._closing.is_set():
                for sched in self.mine():
                    try:
                        self._begin(sched)
                    except Exception as exc:  # the store away: the thread's first look sets it
                        log.warning("schedule %s: %s", sched.name, exc)
                self._thread = threading.Thread(
                    target=self._run, name="intemporal-schedules", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._closing.is_set():
            due = math.inf
            for sched in self.mine():
                try:
                    due = min(due, self.fire(sched))
                except Exception as exc:  # the store away, say: the next look tries again
                    log.warning("schedule %s: %s", sched.name, exc)
            self._closing.wait(max(0.0, min(due - self._clock.time(), WATCH)))

    def _begin(self, sched: Schedule) -> float:
        """The tick `sched` counts from in this engine, set at its first sight: now (what
        came before is not ours to fire), or with `catch_up` the last tick with a run."""
        if sched.name not in self._last:
            now = self._clock.time()
            latest = latest_tick(self._store, sched) if sched.catch_up else None
            self._last[sched.name] = now if latest is None else min(latest, now)
        return self._last[sched.name]

    def fire(self, sched: Schedule) -> float:
        """Start the runs of `sched`'s ticks that came; return when the next one comes.

        Every tick since the last one handled here is started (the newest `CATCH_UP_MAX`):
        an engine that was up for them misses none, even when its clock jumped (a virtual
        one advanced by hours, a stalled process)."""
        last = self._begin(sched)
        ticks = sched.ticks(last, self._clock.time())
        for tick in ticks:
            if self._closing.is_set():
                break
            self._start(
                sched.workflow, tick_text(tick), run_id=sched.run_id(tick), queue=sched.queue
            )
            self._last[sched.name] = tick
        return sched.next_tick(self._last[sched.name])
