"""How `intemporal list`, `show` and `tree` draw runs: the runs table, a run's header and
timeline, its recorded traceback, and the tree of a run and its children.

Every view reads at 80 columns: below `NARROW` columns the timeline puts each event's
details on the line under it, cut with an ellipsis (`full=True` shows them whole).
Times carry their zone (local by default, UTC with `utc=True`).

    console.print(runs_table(engine.list_runs(), console.width))
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .cli_render import (
    ORPHANED_STYLE,
    SIGNAL_OP,
    STATUS_STYLE,
    elide,
    error_text,
    fmt_duration,
    fmt_time,
    stored_text,
    value_text,
)
from .events import (
    ACTIVITY_COMPLETED,
    ACTIVITY_FAILED,
    ATTEMPT_FAILED,
    CANCEL_DELIVERED,
    CHILD_STARTED,
    PATCH,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_FORKED,
    RUN_RECOVERED,
    RUN_RESUMED,
    RUN_STUCK,
    RUN_SUSPENDED,
)
from .store import Event, RunInfo, RunStatus

NARROW = 100  # below this many columns, details go under the event line
WIDE = 160  # from this width on, `intemporal list` shows every column
VALUE_CAP = 4000  # characters of one value ever rendered (a terminal line cuts it further)
HEADER_WIDTH = 400  # characters of args and result shown in the header without --full

# Styles for journal events, by type, then by a word in an unknown type (timers, signals...).
EVENT_STYLE = {
    ACTIVITY_COMPLETED: "green",
    ACTIVITY_FAILED: "red",
    ATTEMPT_FAILED: "yellow",
    CANCEL_DELIVERED: "magenta",
    RUN_COMPLETED: "bold green",
    RUN_FAILED: "bold red",
    RUN_CANCELLED: "bold magenta",
    RUN_SUSPENDED: "dim",
    RUN_RESUMED: "bold yellow",
    RUN_RECOVERED: "bold yellow",
    RUN_STUCK: "bold red",
    RUN_FORKED: "bold yellow",
    PATCH: "cyan",
}
EVENT_WORD_STYLE = (
    ("compensat", "magenta"),
    ("cancel", "magenta"),
    ("timer", "cyan"),
    ("signal", "blue"),
    ("child", "bright_blue"),
)
# Fields every event has, that the timeline shows in their own columns, or that are internal.
_COMMON = {"type", "seq", "name", "ts", "started", "attempts", "attempt", "owner"}
_TIMES = ("fire_at", "deadline", "until")


# -- words and times -------------------------------------------------------------------------------
def state(info: RunInfo) -> str:
    """The one word every command uses for a run's state: a `RunStatus` value or "orphaned"."""
    return "orphaned" if info.orphaned else info.status.value


def status_text(info: RunInfo) -> Text:
    """The run's state, coloured (`state`)."""
    if info.orphaned:
        return Text("orphaned", style=ORPHANED_STYLE)
    return Text(info.status.value, style=STATUS_STYLE.get(info.status, ""))


def orphan_note(info: RunInfo) -> str | None:
    """Why nobody executes an orphaned run, and what continues it; None if it is not one."""
    if not info.orphaned:
        return None
    if info.status is RunStatus.WAITING:
        return (
            "the engine that kept it waiting has stopped: `intemporal worker` continues it "
            f"when it is due, `intemporal resume {info.run_id}` now"
        )
    return (
        "its process stopped mid-run (crashed, killed or interrupted): "
        f"`intemporal resume {info.run_id}` continues it"
    )


def _event_style(kind: str) -> str:
    if kind in EVENT_STYLE:
        return EVENT_STYLE[kind]
    return next((style for word, style in EVENT_WORD_STYLE if word in kind), "")


def _in(until: Any, utc: bool) -> str:
    if not isinstance(until, int | float):
        return ""
    left = until - time.time()
    when = fmt_time(until, utc)
    return f"{when} (in {fmt_duration(left)})" if left > 0 else f"{when} (due)"


# -- the runs table --------------------------------------------------------------------------------
def runs_table(runs: list[RunInfo], width: int, utc: bool = False) -> Table:
    """The `intemporal list` table: one row per run, in the order given (newest first).

    Narrower than `WIDE` columns it leaves out "updated" and "parent" (`show` has them) and
    shortens the start time (its zone goes in the caption), rather than squeezing the run
    ids out of sight; the columns it shows keep their names.
    """
    wide = width >= WIDE
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    if not wide and runs:
        table.caption = "times in " + fmt_time(runs[0].created_at, utc).rsplit(" ", 1)[-1]
        table.caption_justify = "left"
    table.add_column("run id", overflow="fold", min_width=12)
    table.add_column("workflow", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    if wide:
        table.add_column("updated", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("activities", justify="right", no_wrap=True)
    if wide:
        table.add_column("parent", overflow="fold")
    for info in runs:
        row: list[Text | str] = [
            Text(info.run_id, style=ORPHANED_STYLE if info.orphaned else ""),
            info.workflow,
            status_text(info),
            fmt_time(info.created_at, utc) if wide else fmt_time(info.created_at, utc, True)[:11],
        ]
        if wide:
            row.append(fmt_time(info.updated_at, utc))
        row += [fmt_duration(info.duration), str(info.steps)]
        if wide:
            row.append(info.parent or "")
        table.add_row(*row)
    return table


# -- what a run waits for --------------------------------------------------------------------------
def waiting_for(events: list[Event], children: dict[str, RunInfo], utc: bool = False) -> str | None:
    """What a waiting run waits for, from its last `run_suspended`: a signal (and its
    deadline), a timer, child runs, a retry; None if it never suspended."""
    last = next((e for e in reversed(events) if e.get("type") == RUN_SUSPENDED), None)
    if last is None:
        return None
    reason, until = str(last.get("reason", "")), last.get("until")
    if reason.startswith(SIGNAL_OP):
        name = reason[len(SIGNAL_OP) :]
        return f"signal {name!r}, " + (
            f"deadline {_in(until, utc)}" if until is not None else "no deadline"
        )
    if reason.startswith("child ") or (reason.startswith("intemporal.join") and children):
        busy = [f"{i.run_id} ({state(i)})" for i in children.values() if not i.status.finished]
        return "child runs " + ", ".join(busy or [reason[len("child ") :]])
    if reason == "intemporal.sleep":
        return f"a timer, due {_in(until, utc)}"
    if reason == "retry backoff":
        return f"an activity's next attempt, due {_in(until, utc)}"
    return reason + (f" until {_in(until, utc)}" if until is not None else "")


# -- the header ------------------------------------------------------------------------------------
def run_header(
    info: RunInfo, events: list[Event], children: dict[str, RunInfo], utc: bool, full: bool
) -> Table:
    """The key/value block at the top of `intemporal show`."""
    first = events[0]
    cap = VALUE_CAP if full else HEADER_WIDTH
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("run", info.run_id)
    grid.add_row("workflow", info.workflow)
    grid.add_row("status", status_text(info))
    if info.status is RunStatus.WAITING:
        grid.add_row("waits for", waiting_for(events, children, utc) or "?")
    grid.add_row("started", fmt_time(info.created_at, utc))
    grid.add_row(
        "updated", f"{fmt_time(info.updated_at, utc)} ({fmt_duration(info.duration)} in all)"
    )
    grid.add_row("activities", str(info.steps))
    if children:
        done = sum(i.status.finished for i in children.values())
        grid.add_row(
            "child runs", f"{len(children)} ({done} finished): `intemporal tree {info.run_id}`"
        )
    if info.parent:
        grid.add_row("parent", info.parent)
    if first.get("queue"):
        grid.add_row("queue", str(first["queue"]))
    for key, value in lineage(info, first, utc):
        grid.add_row(key, value)
    args = [stored_text(a, cap) for a in first.get("args", [])]
    args += [f"{k}={stored_text(v, cap)}" for k, v in first.get("kwargs", {}).items()]
    cut: dict[str, Any] = {} if full else {"no_wrap": True, "overflow": "ellipsis"}
    grid.add_row("args", Text(elide(", ".join(args), cap) or "(none)", **cut))
    if info.status is RunStatus.COMPLETED:
        grid.add_row("result", Text(stored_text(info.raw.get("result"), cap), **cut))
    elif info.raw.get("error"):
        grid.add_row("error", Text(error_text(info.raw["error"]), style="red"))
    recovered = sum(e.get("type") == RUN_RECOVERED for e in events)
    if recovered:
        times = "once" if recovered == 1 else f"{recovered} times"
        grid.add_row(
            "resumed", f"{times} after a crash (or a stop mid-step): `run_recovered` below"
        )
    note = orphan_note(info)
    if note:
        grid.add_row("note", Text(note, style=ORPHANED_STYLE))
    return grid


def lineage(info: RunInfo, first: Event, utc: bool) -> list[tuple[str, str]]:
    """Where a run came from and where it went (fork, continue-as-new), its code version,
    its deadline, and why a stuck run is parked: `show`'s rows for them."""
    rows = []
    forked = first.get("forked_from")
    if isinstance(forked, dict):
        rows.append(("forked from", f"{forked.get('run_id')} at step {forked.get('step')}"))
    if first.get("continued_from"):
        rows.append(("continued from", str(first["continued_from"])))
    if info.raw.get("continued_as"):
        rows.append(("continued as", f"{info.raw['continued_as']} (`intemporal show` it)"))
    if info.version is not None:
        rows.append(("version", info.version))
    if isinstance(first.get("deadline"), int | float):
        rows.append(("deadline", fmt_time(first["deadline"], utc)))
    if info.status is RunStatus.STUCK:
        n = info.raw.get("recoveries", "?")
        rows.append(
            (
                "stuck",
                f"recovered {n} times in a row after crashes without progress: fix the "
                f"cause, then `intemporal resume {info.run_id}`",
            )
        )
    return rows


# -- the timeline ----------------------------------------------------------------------------------
@dataclass
class Row:
    """One timeline row: the event's own columns and its details."""

    seq: str
    at: str
    kind: str
    name: str
    attempt: str
    took: str
    detail: Text


def event_detail(ev: Event, children: dict[str, RunInfo], utc: bool) -> Text:
    """What a timeline row says beyond its columns: a result, an error, a child's outcome."""
    kind = str(ev.get("type", "?"))
    if kind == CHILD_STARTED:
        child = children.get(str(ev.get("child_id")))
        if child is None:
            return Text(f"{ev.get('child_id')}: not created yet", style="dim")
        took = f" in {fmt_duration(child.duration)}" if child.status.finished else ""
        text = Text.assemble((child.run_id, "bold"), " ", status_text(child), took)
        if child.status is RunStatus.COMPLETED:
            text.append(" → " + stored_text(child.raw.get("result"), VALUE_CAP))
        elif child.error:
            text.append(": " + child.error, style="red")
        return text
    if kind == RUN_SUSPENDED:
        return Text("waits for " + (waiting_for([ev], children, utc) or "?"), style="dim")
    if kind == RUN_RECOVERED:
        return Text("resumed after a crash: its last execution stopped unrecorded", style="yellow")
    if kind == RUN_RESUMED:
        return Text("resumed after it failed: the failed step is retried")
    if kind == RUN_FORKED:
        return Text(f"the steps above are copied from run {ev.get('from_run')}")
    if kind == RUN_STUCK:
        said = f"parked after {ev.get('recoveries')} recoveries in a row without progress"
        return Text(said + ": resume it once the cause is fixed", style="red")
    if kind == PATCH:
        return Text(f"took the new path of patch {ev.get('patch_id')!r}", style="cyan")
    if "error" in ev:
        said = error_text(ev["error"])
        if kind == ATTEMPT_FAILED and "retry_in" in ev:  # first: a long error is cut at its end
            said = f"(retry in {fmt_duration(ev['retry_in'])}) {said}"
        return Text(said, style="red")
    if "result" in ev:
        return Text(stored_text(ev["result"], VALUE_CAP))
    if kind == CANCEL_DELIVERED:
        return Text("cancellation delivered to the workflow", style="magenta")
    parts = []  # an event type with no special rendering: its other fields
    for key, value in ev.items():
        if key in _COMMON:
            continue
        shown = stored_text(value, VALUE_CAP)
        if key in _TIMES and isinstance(value, int | float):
            shown = fmt_time(value, utc)
        parts.append(f"{key}={shown}")
    return Text(" ".join(parts), style="dim")


def _collapsed(events: list[Event]) -> Iterable[tuple[Event, int]]:
    """Events after `run_started`, a `run_suspended` repeating the one before (the run woke,
    found nothing to do and parked again) folded into it, with how many times it came."""
    out: list[list[Any]] = []
    for ev in events[1:]:
        prev = out[-1][0] if out else None
        if (
            ev.get("type") == RUN_SUSPENDED
            and prev is not None
            and prev.get("type") == RUN_SUSPENDED
            and (prev.get("reason"), prev.get("until")) == (ev.get("reason"), ev.get("until"))
        ):
            out[-1][1] += 1
            continue
        out.append([ev, 1])
    return [(ev, n) for ev, n in out]


def rows(events: list[Event], children: dict[str, RunInfo], utc: bool) -> list[Row]:
    """The timeline's rows, oldest first."""
    t0 = events[0].get("ts", 0.0)
    out = []
    for ev, times in _collapsed(events):
        kind = str(ev.get("type", "?"))
        ts, started = ev.get("ts"), ev.get("started")
        num = isinstance(ts, int | float)
        took = None
        if isinstance(ts, int | float) and isinstance(started, int | float):
            took = ts - started
        detail = event_detail(ev, children, utc)
        if times > 1:  # said first: a long detail is cut at its end
            detail = Text(f"({times} times) ", style=detail.style) + detail
        name = str(ev.get("name", ""))
        if name.startswith(SIGNAL_OP):
            name = "signal " + name[len(SIGNAL_OP) :]
        out.append(
            Row(
                str(ev.get("seq", "")),
                "+" + fmt_duration(ts - t0) if num else "",
                kind,
                name,
                str(ev.get("attempts", ev.get("attempt", ""))),
                fmt_duration(took),
                detail,
            )
        )
    return out


def timeline(
    events: list[Event], children: dict[str, RunInfo], width: int, utc: bool, full: bool
) -> RenderableType:
    """The run's journal: a table from `NARROW` columns on, else two lines per event."""
    body = rows(events, children, utc)
    overflow: Any = "fold" if full else "ellipsis"
    if width >= NARROW:
        cells = [(r.seq, r.at, r.kind, r.name, r.attempt, r.took) for r in body]
        heads = ("seq", "at", "event", "name", "attempt", "took")
        fixed = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
        fixed[3] = min(fixed[3], 40)  # a long name folds rather than squeezing the details
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
        for i, head in enumerate(heads):
            right = head in ("seq", "at", "attempt", "took")
            table.add_column(
                head,
                justify="right" if right else "left",
                no_wrap=i != 3,
                overflow="fold",
                min_width=fixed[i],
                max_width=fixed[i],
            )
        room = max(20, width - sum(fixed) - 3 * len(heads) - 2)  # 3 between columns, 1 at edges
        table.add_column(
            "result / details", overflow=overflow, no_wrap=not full, width=None if full else room
        )
        for r in body:
            table.add_row(
                r.seq,
                r.at,
                Text(r.kind, style=_event_style(r.kind)),
                r.name,
                r.attempt,
                r.took,
                r.detail,
            )
        return table
    return Group(*event_lines(body, full))


def event_lines(body: list[Row], full: bool) -> list[Text]:
    """Timeline rows as lines: the event, then its details indented under it."""
    overflow: Any = "fold" if full else "ellipsis"
    lines: list[Text] = []
    for r in body:
        head = Text.assemble(
            (f"{r.seq:>3} " if r.seq else "    "),
            (f"{r.at:>7} ", "dim"),
            (r.kind, _event_style(r.kind)),
        )
        if r.name:
            head.append(f"  {r.name}", style="bold")
        if r.attempt and r.attempt != "1":
            head.append(f"  attempt {r.attempt}")
        if r.took:
            head.append(f"  took {r.took}", style="dim")
        lines.append(head)
        if r.detail.plain:
            detail = Text("            ") + r.detail
            detail.overflow, detail.no_wrap = overflow, not full
            lines.append(detail)
    return lines


# -- the traceback ---------------------------------------------------------------------------------
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_MODULES = {  # "engine", "runtime/executor", "store/file"...: this package's modules
    os.path.relpath(os.path.join(d, n), _PACKAGE)[:-3].replace(os.sep, "/")
    for d, _, names in os.walk(_PACKAGE)
    for n in names
    if n.endswith(".py")
}
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+')


def _engine_frame(filename: str) -> bool:
    """Whether a recorded frame is this package's own (here, or where the run was recorded)."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep):
        return True
    parts = re.split(r"[\\/]", filename)
    if "intemporal" not in parts[:-1]:
        return False
    at = len(parts) - 1 - parts[::-1].index("intemporal")
    return "/".join(parts[at + 1 :])[:-3] in _MODULES


def user_traceback(text: str) -> tuple[str, int]:
    """A recorded traceback without the engine's frames (it starts at the user's code), and
    how many frames were left out."""
    out: list[str] = []
    dropped = 0
    skipping = False
    for line in text.rstrip("\n").splitlines():
        m = _FRAME.match(line)
        if m:
            skipping = _engine_frame(m.group("file"))
            dropped += skipping
        elif not line.startswith("    "):
            skipping = False  # "Traceback...", the exception line, "During handling ..."
        if not skipping:
            out.append(line)
    return "\n".join(out), dropped


def traceback_block(info: RunInfo, full: bool) -> RenderableType | None:
    """The recorded traceback of a failed or cancelled run, from the user's code on."""
    err = info.raw.get("error")
    if not isinstance(err, dict) or not err.get("traceback"):
        return None
    text, dropped = (err["traceback"].rstrip("\n"), 0) if full else user_traceback(err["traceback"])
    title = Text("traceback (as recorded", style="bold")
    title.append(f"; {dropped} intemporal frames left out, --full shows them)" if dropped else ")")
    return Group(title, Text(text, style="red"))


def show_run(
    out: Console,
    info: RunInfo,
    events: list[Event],
    children: dict[str, RunInfo],
    utc: bool = False,
    full: bool = False,
) -> None:
    """Print the whole `intemporal show` view of one run."""
    out.print(run_header(info, events, children, utc, full))
    out.print()
    out.print(Text(f"journal: {len(events)} events", style="bold"))
    if len(events) > 1:
        out.print(timeline(events, children, out.width, utc, full))
    else:
        out.print(Text("  (nothing ran yet)", style="dim"))
    tb = traceback_block(info, full)
    if tb is not None:
        out.print(tb, soft_wrap=True)  # a traceback keeps its own line breaks


def child_ids(events: list[Event]) -> list[str]:
    """The ids of the child runs a journal started, in order."""
    return [
        str(e["child_id"]) for e in events if e.get("type") == CHILD_STARTED and "child_id" in e
    ]


# -- the tree --------------------------------------------------------------------------------------
def run_label(info: RunInfo, utc: bool) -> Text:
    """One tree node: "order-42  checkout  completed  2.1s → result"."""
    text = Text.assemble((info.run_id, "bold"), "  ", info.workflow, "  ", status_text(info))
    text.append(f"  {fmt_duration(info.duration)}", style="dim")
    if info.status is RunStatus.COMPLETED:
        text.append("  → " + elide(value_text(info.result), 60))
    elif info.error:
        text.append("  " + elide(info.error, 80), style="red")
    return text


def run_tree(
    root: RunInfo, children_of: Callable[[RunInfo], list[RunInfo]], utc: bool = False
) -> Tree:
    """A run and its children, drawn as a tree (`children_of` reads one run's children)."""
    tree = Tree(run_label(root, utc))
    stack = [(root, tree)]
    while stack:
        info, node = stack.pop()
        for child in children_of(info):
            stack.append((child, node.add(run_label(child, utc))))
    return tree
