"""What the web view (`intemporal ui`) shows, computed from journals: pure, no web framework.

`timeline(events, children)` lays one run's journal out as a Gantt chart: a row per
durable operation (activity, timer, signal wait, child run, ...), a bar per activity
attempt (failed ones carry their error), waits as hatched gaps with their reason, the
saga's compensations in a group of their own, and markers where the run was suspended,
crashed and resumed. `run_tree` walks a run's children. `filter_runs` is the runs table's
search and paging. Values are shown through `cli_render.stored_text`, which never unpickles.

    tl = timeline(engine.history("order-42"), {})
    [(row.name, len(row.bars)) for row in tl.rows]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .cli_render import SIGNAL_OP, error_text, fmt_duration, fmt_time, stored_text
from .events import (
    ACTIVITY_COMPLETED,
    ACTIVITY_FAILED,
    ATTEMPT_FAILED,
    CHILD_STARTED,
    COMPENSATION_STARTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_RECOVERED,
    RUN_RESUMED,
    RUN_STARTED,
    RUN_SUSPENDED,
    SIGNAL_RECEIVED,
    SIGNAL_TIMEOUT,
    SIGNAL_WAIT,
    TIMER_STARTED,
)
from .store import Event, RunInfo

VALUE_WIDTH = 200  # characters of a value shown in a bar's details
MIN_WIDTH = 0.4  # percent: the narrowest bar drawn, so a 1 ms step stays visible
TREE_LIMIT = 500  # runs shown in one tree page at most


@dataclass
class Bar:
    """One span on a row: an attempt, a wait, a child run; `left`/`width` in percent."""

    start: float
    end: float
    kind: str  # ok | failed | retry | backoff | wait | child | point | running
    label: str
    detail: str = ""  # shown on hover and when clicked: an error, a result, a reason
    traceback: str = ""
    attempt: int | None = None
    left: float = 0.0
    width: float = 0.0

    @property
    def took(self) -> str:
        """The span's duration, for people."""
        return fmt_duration(self.end - self.start)


@dataclass
class Row:
    """One durable operation of the run (by sequence number) and its bars."""

    seq: int | None
    name: str
    kind: str  # activity | timer | signal | child | compensation | other
    bars: list[Bar] = field(default_factory=list)
    child: str | None = None  # a child run's id: the row links to it
    compensation: bool = False


@dataclass
class Marker:
    """A moment across all rows: suspended, woke up, crashed, resumed, finished."""

    at: float
    kind: str  # suspended | woke | crash | resumed | finished
    label: str
    left: float = 0.0


@dataclass
class Timeline:
    """A run's journal as a Gantt chart: rows of bars and markers between `t0` and `t1`."""

    t0: float
    t1: float
    rows: list[Row]
    markers: list[Marker]
    gaps: list[Bar]  # time no process recorded anything: between a crash and its resume

    @property
    def span(self) -> str:
        """The chart's width in time, for people."""
        return fmt_duration(self.t1 - self.t0)

    def failures(self) -> list[tuple[Row, Bar]]:
        """Every failed attempt, retried or not, with its row, in the order of the rows."""
        return [(row, bar) for row in self.rows for bar in row.bars if bar.kind in _FAILED]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _Builder:
    """Walks a journal once, oldest event first, and collects rows, markers and gaps."""

    def __init__(self, events: list[Event], children: dict[str, RunInfo], now: float) -> None:
        self.events, self.children, self.now = events, children, now
        self.rows: dict[int | str, Row] = {}
        self.markers: list[Marker] = []
        self.gaps: list[Bar] = []
        self.next_start: dict[int, float] = {}  # a retried attempt starts after its backoff
        self.open_waits: dict[int, Bar] = {}
        self.compensating: list[str] = []  # names still to come in the compensation group
        self.prev_ts = _num(events[0].get("ts")) or 0.0
        self.prev_type = RUN_STARTED

    def row(self, ev: Event, kind: str) -> Row:
        seq = ev.get("seq")
        key: int | str = seq if isinstance(seq, int) else f"#{len(self.rows)}"
        if key not in self.rows:
            name = str(ev.get("name", ev.get("type", "?")))
            comp = kind == "activity" and name in self.compensating
            if comp:
                self.compensating.remove(name)
            self.rows[key] = Row(
                seq if isinstance(seq, int) else None,
                name,
                "compensation" if comp else kind,
                compensation=comp,
            )
        return self.rows[key]

    def build(self) -> Timeline:
        for ev in self.events[1:]:
            ts = _num(ev.get("ts")) or self.prev_ts
            handler = _HANDLERS.get(str(ev.get("type")), _other)
            handler(self, ev, ts)
            self.prev_ts, self.prev_type = ts, str(ev.get("type"))
        finished = self.prev_type in _FINAL
        end = self.prev_ts if finished else max(self.prev_ts, self.now)
        for bar in self.open_waits.values():
            bar.end, bar.kind = end, "wait"
            bar.label += " (still waiting)"
        t0 = _num(self.events[0].get("ts")) or 0.0
        rows = list(self.rows.values())
        return _layout(Timeline(t0, end, rows, self.markers, self.gaps))


def _attempt_failed(b: _Builder, ev: Event, ts: float) -> None:
    row = b.row(ev, "activity")
    seq = ev.get("seq")
    start = _num(ev.get("started"))  # recorded by newer engines; else after the backoff
    if start is None and isinstance(seq, int):
        start = b.next_start.pop(seq, None)
    if start is None:
        start = b.prev_ts
    attempt = ev.get("attempt")
    retry_in = _num(ev.get("retry_in"))
    detail = error_text(ev.get("error"))
    if retry_in is not None:
        detail += f" (retried after {fmt_duration(retry_in)})"
        if isinstance(seq, int):
            b.next_start[seq] = ts + retry_in
            row.bars.append(Bar(ts, ts + retry_in, "backoff", "backoff", f"backoff {detail}"))
    row.bars.append(
        Bar(start, ts, "retry", f"attempt {attempt} failed", detail, _tb(ev), _int(attempt))
    )


def _activity_done(b: _Builder, ev: Event, ts: float) -> None:
    row = b.row(ev, "activity")
    seq = ev.get("seq")
    if isinstance(seq, int):
        b.next_start.pop(seq, None)
    start = _num(ev.get("started")) or b.prev_ts
    attempts = _int(ev.get("attempts"))
    if ev.get("type") == ACTIVITY_FAILED:
        bar = Bar(start, ts, "failed", f"attempt {attempts} failed", error_text(ev.get("error")))
        bar.traceback = _tb(ev)
    else:
        result = stored_text(ev.get("result"), VALUE_WIDTH)
        bar = Bar(start, ts, "ok", f"attempt {attempts} ok", f"result: {result}")
    bar.attempt = attempts
    row.bars.append(bar)


def _timer(b: _Builder, ev: Event, ts: float) -> None:
    row = b.row(ev, "timer")
    fire_at = _num(ev.get("fire_at")) or ts
    seconds = _num(ev.get("seconds"))
    reason = f"sleep {fmt_duration(seconds)}" if seconds is not None else "timer"
    row.bars.append(Bar(ts, fire_at, "wait", reason, f"{reason}, due {fmt_time(fire_at)}"))


def _signal_wait(b: _Builder, ev: Event, ts: float) -> None:
    row = b.row(ev, "signal")
    name = str(ev.get("name", ""))[len(SIGNAL_OP) :]
    deadline = _num(ev.get("deadline"))
    detail = f"wait for signal {name!r}" + (f" until {fmt_time(deadline)}" if deadline else "")
    bar = Bar(ts, ts, "running", f"signal {name!r}", detail)
    row.bars.append(bar)
    if isinstance(ev.get("seq"), int):
        b.open_waits[ev["seq"]] = bar


def _signal_end(b: _Builder, ev: Event, ts: float) -> None:
    row = b.row(ev, "signal")
    bar = b.open_waits.pop(ev.get("seq"), None)  # type: ignore[arg-type]
    received = ev.get("type") == SIGNAL_RECEIVED
    name = str(ev.get("signal") or str(ev.get("name", ""))[len(SIGNAL_OP) :])
    what = (
        f"signal {name!r} received: {stored_text(ev.get('payload'), VALUE_WIDTH)}"
        if received
        else f"no signal {name!r} within {ev.get('timeout')} s"
    )
    if bar is None:  # queued before the wait: consumed at once
        row.bars.append(Bar(ts, ts, "point", f"signal {name!r}", what + " (already queued)"))
        return
    bar.end, bar.kind = ts, "wait" if received else "failed"
    bar.detail += f"; {what}"


def _child(b: _Builder, ev: Event, ts: float) -> None:
    row = b.row(ev, "child")
    cid = str(ev.get("child_id", ""))
    row.child = cid or None
    info = b.children.get(cid)
    if info is None:
        row.bars.append(Bar(ts, ts, "point", f"child {cid}", "child run not found"))
        return
    end = info.updated_at if info.status.finished else max(info.updated_at, b.now)
    detail = f"child run {cid}: {info.status.value}"
    if info.error:
        detail += f": {info.error}"
    elif info.status.finished:
        detail += f", result {stored_text(info.raw.get('result'), VALUE_WIDTH)}"
    row.bars.append(Bar(ts, end, "child", f"{info.workflow} ({info.status.value})", detail))


def _compensation(b: _Builder, ev: Event, ts: float) -> None:
    names = ev.get("compensations")
    b.compensating = [str(n) for n in names] if isinstance(names, list) else []
    b.markers.append(Marker(ts, "compensate", "compensating: " + ", ".join(b.compensating)))


def _suspended(b: _Builder, ev: Event, ts: float) -> None:
    reason = str(ev.get("reason", ""))
    if reason.startswith(SIGNAL_OP):
        reason = f"signal {reason[len(SIGNAL_OP) :]!r}"
    until = _num(ev.get("until"))
    label = f"suspended: waits for {reason}" + (f" until {fmt_time(until)}" if until else "")
    b.markers.append(Marker(ts, "suspended", label))


def _resumed(b: _Builder, ev: Event, ts: float) -> None:
    if b.prev_type == RUN_SUSPENDED:
        b.markers.append(Marker(ts, "woke", "woke up"))
    elif b.prev_type in _FINAL:
        b.markers.append(Marker(ts, "resumed", f"resumed after it ended {b.prev_type[4:]}"))


def _recovered(b: _Builder, ev: Event, ts: float) -> None:
    """`run_recovered`: the journal had stopped without a suspension (its process died)."""
    b.markers.append(Marker(b.prev_ts, "crash", "crash: nothing recorded after this"))
    b.markers.append(Marker(ts, "resumed", "resumed after the crash"))
    lost = fmt_duration(ts - b.prev_ts)
    b.gaps.append(Bar(b.prev_ts, ts, "gap", "crash", f"no process ran it for {lost}"))


def _finished(b: _Builder, ev: Event, ts: float) -> None:
    kind = str(ev.get("type", ""))[4:]
    b.markers.append(Marker(ts, "finished", kind))


def _other(b: _Builder, ev: Event, ts: float) -> None:
    if "seq" not in ev:
        return  # a run-level event without a step (a future type): the raw journal has it
    row = b.row(ev, "other")
    kind = str(ev.get("type"))
    detail = kind
    if "result" in ev:
        detail += f": {stored_text(ev['result'], VALUE_WIDTH)}"
    elif "value" in ev:
        detail += f": {stored_text(ev['value'], VALUE_WIDTH)}"
    row.bars.append(Bar(ts, ts, "point", kind, detail))


_HANDLERS: dict[str, Callable[[_Builder, Event, float], None]] = {
    ATTEMPT_FAILED: _attempt_failed,
    ACTIVITY_COMPLETED: _activity_done,
    ACTIVITY_FAILED: _activity_done,
    TIMER_STARTED: _timer,
    SIGNAL_WAIT: _signal_wait,
    SIGNAL_RECEIVED: _signal_end,
    SIGNAL_TIMEOUT: _signal_end,
    CHILD_STARTED: _child,
    COMPENSATION_STARTED: _compensation,
    RUN_SUSPENDED: _suspended,
    RUN_RESUMED: _resumed,
    RUN_RECOVERED: _recovered,
    RUN_COMPLETED: _finished,
    RUN_FAILED: _finished,
    RUN_CANCELLED: _finished,
}
_FINAL = (RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED)
_FAILED = ("retry", "failed")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tb(ev: Event) -> str:
    err = ev.get("error")
    tb = err.get("traceback") if isinstance(err, dict) else None
    return tb if isinstance(tb, str) else ""


def _layout(tl: Timeline) -> Timeline:
    """Place every bar and marker in percent of the chart's width (bars clipped to it)."""
    span = max(tl.t1 - tl.t0, 1e-6)

    def pos(t: float) -> float:
        return min(100.0, max(0.0, (t - tl.t0) / span * 100))

    for bar in [b for row in tl.rows for b in row.bars] + tl.gaps:
        bar.left = pos(bar.start)
        bar.width = max(MIN_WIDTH, pos(bar.end) - bar.left)
        bar.left = min(bar.left, 100.0 - MIN_WIDTH)
    for m in tl.markers:
        m.left = pos(m.at)
    return tl


def timeline(
    events: list[Event], children: dict[str, RunInfo], now: float | None = None
) -> Timeline:
    """A run's journal (oldest first, as `Engine.history` gives it) as a Gantt chart.

    `children` maps child run ids to their `RunInfo` (for the child rows' end and status);
    `now` (epoch seconds, default the clock) ends the bars of an unfinished run.
    """
    return _Builder(events, children, time.time() if now is None else now).build()


def child_ids(events: Iterable[Event]) -> list[str]:
    """The ids of the child runs a journal started, in order."""
    return [
        str(ev["child_id"])
        for ev in events
        if ev.get("type") == CHILD_STARTED and ev.get("child_id")
    ]


@dataclass
class TreeNode:
    """A run in a tree page: its summary, depth (0 for the root) and whether it was found."""

    run_id: str
    depth: int
    info: RunInfo | None


def run_tree(
    root: str, read: Callable[[str], list[Event]], info: Callable[[str], RunInfo]
) -> list[TreeNode]:
    """A run and its children, grandchildren... depth first, at most `TREE_LIMIT` runs.

    `read` and `info` are `Engine.history` and `Engine.get_run`; a child missing from the
    store is listed with `info=None`.
    """
    out: list[TreeNode] = []
    stack = [(root, 0)]
    while stack and len(out) < TREE_LIMIT:
        rid, depth = stack.pop()
        try:
            node = TreeNode(rid, depth, info(rid))
            kids = child_ids(read(rid))
        except KeyError:  # RunNotFound: a child that was deleted
            out.append(TreeNode(rid, depth, None))
            continue
        out.append(node)
        stack.extend((kid, depth + 1) for kid in reversed(kids))
    return out


@dataclass
class RunFilter:
    """The runs table's search: a run id substring, a queue, a time range (epoch seconds)."""

    search: str = ""
    queue: str = ""
    since: float | None = None
    until: float | None = None

    def keeps(self, info: RunInfo, queue_of: Callable[[RunInfo], str | None]) -> bool:
        """True when `info` passes every condition set."""
        if self.search and self.search.lower() not in info.run_id.lower():
            return False
        if self.since is not None and info.created_at < self.since:
            return False
        if self.until is not None and info.created_at > self.until:
            return False
        return not self.queue or (queue_of(info) or "") == self.queue
