"""How the `intemporal` command shows runs: the `list` table, the `show` timeline, outcomes.

No exit codes and no argument parsing (those live in `cli.py`). Values are shown as JSON
when they are plain JSON, else as `repr`, and elided past a width so one huge result
cannot flood a terminal. `follow` waits for runs under a progress bar and prints how
each one ended.

    console.print(runs_table(store.list_runs()))
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .codec import decode, is_exact_json
from .store import Event, RunInfo, RunStatus

if TYPE_CHECKING:
    from .engine import Engine, RunHandle

STATUS_STYLE = {
    RunStatus.PENDING: "cyan",
    RunStatus.RUNNING: "blue",
    RunStatus.WAITING: "yellow",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "magenta",
    RunStatus.UNREADABLE: "bold red",
}
ORPHANED_STYLE = "bold dark_orange"

# Styles for journal events, by type, then by a word in an unknown type (timers, signals...).
EVENT_STYLE = {
    "activity_completed": "green",
    "activity_failed": "red",
    "attempt_failed": "yellow",
    "cancel_delivered": "magenta",
    "run_completed": "bold green",
    "run_failed": "bold red",
    "run_cancelled": "bold magenta",
    "run_suspended": "dim",
    "run_resumed": "dim",
}
EVENT_WORD_STYLE = (
    ("compensat", "magenta"),
    ("cancel", "magenta"),
    ("timer", "cyan"),
    ("signal", "blue"),
    ("child", "bright_blue"),
)
# Fields every event has, or that the timeline shows in their own columns.
_COMMON = {"type", "seq", "name", "ts", "started", "attempts", "attempt"}

TIMELINE_WIDTH = 60  # characters of a value shown in the timeline
HEADER_WIDTH = 400  # characters of args and result shown above it


PIPE_WIDTH = 160  # columns when writing to a file or a pipe: tables are not squeezed to 80
WIDE = 130  # from this width on, `intemporal list` shows every column


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), made per call so it sees the current streams and $COLUMNS."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def elide(text: str, width: int) -> str:
    """`text` cut to `width` characters, ending in "..." when cut."""
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def value_text(value: Any) -> str:
    """A value as JSON when it is plain JSON (what scripts parse), else its `repr`."""
    if is_exact_json(value):
        return json.dumps(value, ensure_ascii=False)
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def stored_text(data: Any, width: int) -> str:
    """A value in its stored (encoded) form, decoded and elided; never raises."""
    try:
        value = decode(data)
    except Exception:  # a dill value whose classes are not importable here
        return "<stored with dill; its type cannot be rebuilt here>"
    return elide(value_text(value), width)


def error_text(err: Any) -> str:
    """ "Type: message" for an error dict recorded in the journal."""
    if not isinstance(err, dict):
        return str(err)
    return f"{err.get('type', '?')}: {err.get('message', '')}"


def fmt_time(ts: float | None) -> str:
    """Epoch seconds as local "YYYY-MM-DD HH:MM:SS"."""
    if not ts:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, ValueError, OSError):  # a damaged journal's time: shown as it is
        return str(ts)


def fmt_duration(seconds: float | None) -> str:
    """A short human duration: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    if seconds is None:
        return ""
    if not math.isfinite(seconds):  # times from a damaged journal
        return "?"
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def status_text(info: RunInfo) -> Text:
    """The run's status, coloured; an orphaned run (running, no owner) reads "orphaned"."""
    if info.orphaned:
        return Text("orphaned", style=ORPHANED_STYLE)
    return Text(info.status.value, style=STATUS_STYLE.get(info.status, ""))


def runs_table(runs: list[RunInfo], width: int = PIPE_WIDTH) -> Table:
    """The `intemporal list` table: one row per run, in the order given (newest first).

    Narrower than `WIDE` columns, it leaves out "updated" and "parent" (`show` has them)
    rather than squeezing the run ids out of sight.
    """
    wide = width >= WIDE
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("run id", overflow="fold", min_width=12)
    table.add_column("workflow", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    if wide:
        table.add_column("updated", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("steps" if not wide else "activities", justify="right", no_wrap=True)
    if wide:
        table.add_column("parent", overflow="fold")
    for info in runs:
        row: list[Text | str] = [
            Text(info.run_id, style=ORPHANED_STYLE if info.orphaned else ""),
            info.workflow,
            status_text(info),
            fmt_time(info.created_at) if wide else fmt_time(info.created_at)[5:],
        ]
        if wide:
            row.append(fmt_time(info.updated_at))
        row += [fmt_duration(info.duration), str(info.steps)]
        if wide:
            row.append(info.parent or "")
        table.add_row(*row)
    return table


def run_header(info: RunInfo, first: Event) -> Table:
    """The key/value block at the top of `intemporal show`."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("run", info.run_id)
    grid.add_row("workflow", info.workflow)
    grid.add_row("status", status_text(info))
    grid.add_row("started", fmt_time(info.created_at))
    grid.add_row("updated", f"{fmt_time(info.updated_at)}  ({fmt_duration(info.duration)} in all)")
    grid.add_row("activities", str(info.steps))
    if info.parent:
        grid.add_row("parent", info.parent)
    if first.get("queue"):
        grid.add_row("queue", str(first["queue"]))
    args = [stored_text(a, HEADER_WIDTH) for a in first.get("args", [])]
    args += [f"{k}={stored_text(v, HEADER_WIDTH)}" for k, v in first.get("kwargs", {}).items()]
    grid.add_row("args", Text(elide(", ".join(args), HEADER_WIDTH) or "(none)"))
    if info.status is RunStatus.COMPLETED:
        grid.add_row("result", Text(stored_text(info.raw.get("result"), HEADER_WIDTH)))
    elif info.raw.get("error"):
        grid.add_row("error", Text(error_text(info.raw["error"]), style="red"))
    if info.orphaned:
        grid.add_row(
            "note",
            Text("no process owns this run (it crashed): intemporal resume " + info.run_id),
        )
    return grid


def _event_style(kind: str) -> str:
    if kind in EVENT_STYLE:
        return EVENT_STYLE[kind]
    return next((style for word, style in EVENT_WORD_STYLE if word in kind), "")


def event_detail(ev: Event) -> Text:
    """The last timeline column: a result, an error, or the event's other fields."""
    kind = ev.get("type", "?")
    if "error" in ev:
        text = error_text(ev["error"])
        if kind == "attempt_failed" and "retry_in" in ev:
            text += f"  (retry in {fmt_duration(ev['retry_in'])})"
        return Text(elide(text, TIMELINE_WIDTH * 2), style="red")
    if "result" in ev:
        return Text(stored_text(ev["result"], TIMELINE_WIDTH))
    if kind == "cancel_delivered":
        return Text("cancellation delivered to the workflow", style="magenta")
    # An event type this version does not know: show its fields generically.
    parts = []
    for key, value in ev.items():
        if key in _COMMON:
            continue
        shown = stored_text(value, TIMELINE_WIDTH // 2)
        if key in ("fire_at", "deadline", "until") and isinstance(value, int | float):
            shown = fmt_time(value)
        parts.append(f"{key}={shown}")
    return Text(elide(" ".join(parts), TIMELINE_WIDTH * 2), style="dim")


def timeline(events: list[Event]) -> Table:
    """The run's journal as a table: one row per event after `run_started`."""
    t0 = events[0].get("ts", 0.0)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("at", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("result / details", overflow="fold")
    for ev in events[1:]:
        kind = str(ev.get("type", "?"))
        ts = ev.get("ts")
        started = ev.get("started")
        took = (
            ts - started
            if isinstance(ts, int | float) and isinstance(started, int | float)
            else None
        )
        attempts = ev.get("attempts", ev.get("attempt", ""))
        table.add_row(
            str(ev.get("seq", "")),
            "+" + fmt_duration(ts - t0) if isinstance(ts, int | float) else "",
            Text(kind, style=_event_style(kind)),
            str(ev.get("name", "")),
            str(attempts),
            fmt_duration(took),
            event_detail(ev),
        )
    return table


def traceback_block(info: RunInfo) -> RenderableType | None:
    """The recorded traceback of a failed or cancelled run, if the journal has one."""
    err = info.raw.get("error")
    if not isinstance(err, dict) or not err.get("traceback"):
        return None
    return Group(
        Text("traceback (as recorded)", style="bold"),
        Text(err["traceback"].rstrip("\n"), style="red"),
    )


def show_run(out: Console, info: RunInfo, events: list[Event]) -> None:
    """Print the whole `intemporal show` view of one run."""
    out.print(run_header(info, events[0]))
    out.print()
    out.print(Text(f"journal: {len(events)} events", style="bold"))
    if len(events) > 1:
        out.print(timeline(events))
    else:
        out.print(Text("  (nothing ran yet)", style="dim"))
    tb = traceback_block(info)
    if tb is not None:
        out.print(tb, soft_wrap=True)  # a traceback keeps its own line breaks


# -- how a run ended, as `start`, `resume` and `worker` print it --------------------------------
@dataclass
class Outcome:
    """How one run ended (or where it stands) when the command stopped waiting for it."""

    run_id: str
    status: str  # a RunStatus value, "error" (it could not go on) or "still-running"
    value: Any = None
    error: str | None = None  # "Type: message"
    waiting_for: str | None = None  # what a waiting run waits for: "signal 'x'", "a timer ..."

    @property
    def ok(self) -> bool:
        """False for a failure: the command then exits 1."""
        return self.status not in ("failed", "error", "still-running")

    def to_json(self) -> dict[str, Any]:
        value = self.value if is_exact_json(self.value) else repr(self.value)
        out = {"run_id": self.run_id, "status": self.status, "result": value, "error": self.error}
        if self.waiting_for is not None:
            out["waiting_for"] = self.waiting_for
        return out


OUTCOME_STYLE = {"error": "bold red", "still-running": "yellow"}


def describe(exc: BaseException) -> str:
    """ "Type: message" for an exception."""
    return f"{type(exc).__name__}: {exc}"


def unreadable_outcomes(runs: list[RunInfo]) -> list[RunHandle | Outcome]:
    """An "error" outcome for each unreadable run listed: `resume --all` reports them."""
    return [
        Outcome(i.run_id, "error", error=f"cannot be read: {i.error}")
        for i in runs
        if i.status is RunStatus.UNREADABLE
    ]


def final_outcome(info: RunInfo) -> Outcome:
    """The outcome of a run as its summary records it."""
    if info.status is RunStatus.COMPLETED:
        return Outcome(info.run_id, info.status.value, value=info.result)
    return Outcome(info.run_id, info.status.value, error=info.error)


def report(out: Console, o: Outcome, as_json: bool) -> None:
    """Print one outcome: "RUN STATUS: result-or-error", or a JSON object with --json."""
    if as_json:
        out.file.write(json.dumps(o.to_json()) + "\n")
        out.file.flush()
        return
    if o.status == RunStatus.COMPLETED:
        detail = value_text(o.value)
    elif o.error is not None:
        detail = o.error
    elif o.status == RunStatus.WAITING:
        detail = (
            f"waits for {o.waiting_for}; `intemporal worker` (or `intemporal resume "
            f"{o.run_id}`) continues it then"
        )
    else:
        detail = "still running when --timeout passed; it stays resumable"
    style = OUTCOME_STYLE.get(o.status) or STATUS_STYLE.get(RunStatus(o.status), "")
    out.print(
        Text.assemble((o.run_id, "bold"), " ", (o.status, style), ": ", detail), soft_wrap=True
    )


SIGNAL_OP = "intemporal.signal:"  # how the journal names a signal wait
LONG_WAIT = 60.0  # seconds: a timer further off than this is not waited for here


def long_wait(events: list[Event]) -> str | None:
    """What a suspended run waits for, if it may take long: a signal, or a distant timer.

    Read from its last `run_suspended` event; None for a short timer or a child run,
    which the engine executing the run finishes by itself.
    """
    for ev in reversed(events):
        if ev.get("type") == "run_suspended":
            reason, until = str(ev.get("reason", "")), ev.get("until")
            if reason.startswith(SIGNAL_OP):
                return f"signal {reason[len(SIGNAL_OP) :]!r}"
            if isinstance(until, int | float) and until - time.time() > LONG_WAIT:
                return f"a timer, due {fmt_time(until)}"
            return None
    return None


def wait(engine: Engine, handle: RunHandle, timeout: float | None) -> Outcome:
    """Wait for a run to end, or for `timeout`; not for a signal or a timer far off.

    Short timers and child runs are waited for: the engine here executes them when due.
    """
    rid = handle.run_id
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
        try:
            return Outcome(rid, RunStatus.COMPLETED.value, value=handle.result(timeout=step))
        except TimeoutError as exc:  # our own timeout, or the workflow's TimeoutError
            info = engine.get_run(rid)
            if info.status.finished:
                return Outcome(rid, info.status.value, error=describe(exc))
            if info.status is RunStatus.WAITING and not engine.store.is_claimed(rid):
                what = long_wait(engine.history(rid))
                if what is not None:  # may take days: do not hold the terminal
                    return Outcome(rid, info.status.value, waiting_for=what)
            if deadline is not None and time.monotonic() >= deadline:
                return Outcome(rid, "still-running")
        except Exception as exc:
            info = engine.get_run(rid)
            status = info.status.value if info.status.finished else "error"
            return Outcome(rid, status, error=describe(exc))
        except BaseException as exc:  # the workflow raised SystemExit, KeyboardInterrupt & co
            if not raised_by_run(exc):
                raise  # this process's own Ctrl-C
            note = "raised by the workflow: the run is not recorded as failed, it stays resumable"
            return Outcome(rid, "error", error=f"{describe(exc)} ({note})")


def raised_by_run(exc: BaseException) -> bool:
    """Whether `exc` came from a run's own code, re-raised by `RunHandle.result`.

    Its traceback then goes on past `result` into frames other than `threading`'s (a
    Ctrl-C of this process stops in `result` or in the `threading` wait under it).
    """
    from .handle import RunHandle

    codes = [frame.f_code for frame, _ in traceback.walk_tb(exc.__traceback__)]
    result = RunHandle.result.__code__
    if result not in codes:
        return False
    return any(c.co_filename != threading.__file__ for c in codes[codes.index(result) + 1 :])


def follow(
    engine: Engine,
    runs: list[RunHandle | Outcome],
    timeout: float | None,
    out: Console,
    as_json: bool,
    bar: bool = False,
) -> list[Outcome]:
    """Wait for each run in turn and print how it ended; with `bar`, under a progress bar."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not (bar and out.is_terminal),  # a pipe gets the result lines only
    )
    outcomes = []
    with progress:
        task = progress.add_task("resuming", total=len(runs))
        for item in runs:
            if not isinstance(item, Outcome):
                progress.update(task, description=f"waiting for {item.run_id}")
                item = wait(engine, item, timeout)
            report(progress.console, item, as_json)
            outcomes.append(item)
            progress.advance(task)
    return outcomes
