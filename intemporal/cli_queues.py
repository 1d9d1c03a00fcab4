"""`intemporal queues` and `intemporal schedules`: what the queues hold, when schedules fire.

    intemporal queues --import shop.flows        # each queue: limits, pending, executing, ...
    intemporal schedules --import shop.flows     # each schedule: cron, queue, next tick

Limits and schedules are declared in code (`intemporal.Queue`, `@intemporal.scheduled`):
--import loads the modules that declare them; without it the queues are the ones that
hold unfinished runs, their limits unknown here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import typer
from rich import box
from rich.table import Table

from . import cli_render as render
from .cli_support import ImportOption, JsonOption, UserError, _import, _open, command
from .events import RunStatus
from .queues import Queue, declared
from .schedules import latest_tick, schedules, tick_text
from .store import MemoryStore, Store

NO_QUEUE = "(none)"  # how a run recorded on no queue is shown


@dataclass
class QueueLine:
    """One queue as `intemporal queues` shows it."""

    name: str | None
    queue: Queue | None = None
    pending: int = 0
    executing: int = 0
    delayed: int = 0
    started: int | None = None  # in the current rate window (None: no rate)

    def to_json(self) -> dict[str, Any]:
        q = self.queue
        return {
            "queue": self.name,
            "concurrency": q.concurrency if q else None,
            "worker_concurrency": q.worker_concurrency if q else None,
            "rate": list(q.rate) if q and q.rate else None,
            "pending": self.pending,
            "executing": self.executing,
            "delayed": self.delayed,
            "started_in_window": self.started,
        }


def queue_lines(store: Store, now: float) -> list[QueueLine]:
    """Each queue declared or holding unfinished top-level runs, with its counts.

    Pending: waiting for a worker (or for room in the queue); delayed: pending with a
    `start_at` still ahead; executing: started and not finished (running, waiting, or
    claimed by a worker), the runs that hold a slot.
    """
    lines: dict[str | None, QueueLine] = {n: QueueLine(n, q) for n, q in declared().items()}
    for info in store.iter_runs(unfinished=True):
        if info.parent is not None or info.status is RunStatus.UNREADABLE:
            continue  # a child run shares its parent's slot; `list` shows an unreadable one
        line = lines.setdefault(info.queue, QueueLine(info.queue))
        if info.status is not RunStatus.PENDING:  # started, or claimed by a worker now
            line.executing += 1
        elif info.start_at is not None and info.start_at > now:
            line.delayed += 1
        else:
            line.pending += 1
    for line in lines.values():
        if line.queue is not None and line.queue.rate is not None:
            line.started = store.queue_starts(line.queue.name, now - line.queue.rate[1])
    return sorted(lines.values(), key=lambda li: (li.name is None, li.name or ""))


def _store(ctx: typer.Context, declared_here: bool) -> Store:
    """The store; an empty one when it does not exist yet but the code declares something
    to show (a queue, a schedule): nothing ran, which is worth saying too."""
    try:
        return _open(ctx)
    except UserError:
        if not declared_here:
            raise
        return MemoryStore()


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


@command()
def queues(ctx: typer.Context, imports: ImportOption = None, as_json: JsonOption = False) -> None:
    """Show each queue: its limits, runs pending / executing / delayed, starts in the window.

    A queue is listed when --import declares it (`intemporal.Queue`) or when it holds
    unfinished runs. Executing runs hold a slot of the queue's concurrency (sleeping and
    waiting ones too); delayed runs wait for their `--delay`; "started" counts the runs
    started in the current window of a rate limit. --json prints one object per queue
    (queue, concurrency, worker_concurrency, rate, pending, executing, delayed,
    started_in_window).

    \b
    Examples:
      intemporal queues --import shop.flows
      intemporal queues --json | jq 'select(.pending > 100)'
    """
    for module in imports or []:
        _import(module)
    store = _store(ctx, bool(declared()))
    try:
        lines = queue_lines(store, time.time())
    finally:
        store.close()
    columns = [
        ("queue", "left"),
        *((c, "right") for c in ("concurrency", "per worker", "rate", "pending")),
        *((c, "right") for c in ("executing", "delayed", "started")),
    ]
    rows = []
    for line in lines:
        q = line.queue
        rows.append(
            [
                line.name if line.name is not None else NO_QUEUE,
                _limit(q.concurrency if q else None),
                _limit(q.worker_concurrency if q else None),
                f"{q.rate[0]}/{q.rate[1]:g}s" if q and q.rate else "-",
                str(line.pending),
                str(line.executing),
                str(line.delayed),
                _limit(line.started),
            ]
        )
    empty = "no queues: none declared (--import MODULE) and no unfinished runs"
    _show([line.to_json() for line in lines], as_json, empty, columns, rows)


def _show(
    objects: list[dict[str, Any]],
    as_json: bool,
    empty: str,
    columns: list[tuple[str, str]],
    rows: list[list[str]],
) -> None:
    """Print one JSON object per line, or a table of `columns` (name, justify) and `rows`."""
    if as_json:
        for obj in objects:
            typer.echo(json.dumps(obj))
        return
    out = render.console()
    if not rows:
        out.print(empty)
        return
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    out.print(table)


@command("schedules")
def list_schedules(
    ctx: typer.Context, imports: ImportOption = None, as_json: JsonOption = False
) -> None:
    """Show each schedule (`@intemporal.scheduled`) the imported modules declare: its cron
    expression (UTC), queue, catch-up choice, next tick and the last tick that has a run.

    Workers that import the same modules start one run per tick, with the id
    `WORKFLOW@YYYY-MM-DDTHH:MM:SSZ`. --json prints one object per schedule (workflow,
    cron, queue, catch_up, next, last).

    \b
    Examples:
      intemporal schedules --import shop.reports
      intemporal schedules --import shop.reports --json
    """
    for module in imports or []:
        _import(module)
    found = schedules()
    now = time.time()
    rows: list[dict[str, Any]] = []
    store = _store(ctx, bool(found))
    try:
        for sched in found:
            last = latest_tick(store, sched)
            rows.append(
                {
                    "workflow": sched.name,
                    "cron": sched.cron,
                    "queue": sched.queue or sched.workflow.queue,
                    "catch_up": sched.catch_up,
                    "next": tick_text(sched.next_tick(now)),
                    "last": tick_text(last) if last is not None else None,
                }
            )
    finally:
        store.close()
    names = ("workflow", "cron", "queue", "catch up", "next tick (UTC)", "last run")
    table_rows = [
        [
            row["workflow"],
            row["cron"],
            row["queue"] or NO_QUEUE,
            "yes" if row["catch_up"] else "no",
            row["next"],
            row["last"] or "-",
        ]
        for row in rows
    ]
    empty = "no schedules: --import the modules that declare @intemporal.scheduled"
    _show(rows, as_json, empty, [(n, "left") for n in names], table_rows)
