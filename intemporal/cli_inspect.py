"""The `intemporal` commands that look at runs without changing them: list, count, show, tree.

They use one vocabulary for a run's state (`cli_timeline.state`): the `RunStatus` values,
and "orphaned" for a run no process executes any more (running, its process gone; or
waiting, the engine that kept it waiting gone). `--status orphaned` filters what the
table shows as orphaned; `--status running`/`waiting` include orphaned runs of that status.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.text import Text

from . import cli_render as render
from . import cli_timeline as view
from .cli_support import JsonOption, Reader, RunArg, UserError, _reader, command, parse_age
from .store import RunInfo, RunStatus

STATES = [
    *(s.value for s in RunStatus),
    RunStatus.STUCK.value,
    "orphaned",
    RunStatus.UNREADABLE.value,
]
StatusOption = Annotated[
    str | None,
    typer.Option(
        "--status",
        "-s",
        metavar="STATE",
        help=f"Only runs in this state: {', '.join(STATES)}.",
        show_default=False,
    ),
]
WorkflowOption = Annotated[
    str | None,
    typer.Option("--workflow", "-w", metavar="NAME", help="Only runs of this workflow (its name)."),
]
QueueOption = Annotated[
    str | None, typer.Option("--queue", "-q", metavar="QUEUE", help="Only runs on this queue.")
]
ParentOption = Annotated[
    str | None, typer.Option("--parent", metavar="RUN", help="Only the child runs of RUN.")
]
_WHEN = "a duration back from now (90s, 15m, 12h, 7d, 2w) or a date (2026-11-29, 2026-11-29T14:30)"
SinceOption = Annotated[
    str | None,
    typer.Option("--since", metavar="WHEN", help=f"Only runs started since WHEN: {_WHEN}."),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", metavar="WHEN", help="Only runs started before WHEN.")
]
UtcOption = Annotated[bool, typer.Option("--utc", help="Show times in UTC (default: local time).")]
DEFAULT_LIMIT = 20


def parse_when(text: str, utc: bool = False) -> float:
    """Epoch seconds for WHEN: a duration back from now ("7d") or a date ("2026-11-29",
    "2026-11-29 14:30", ISO with a zone); a date without a zone is local (UTC with `utc`)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*[smhdw]?", text.lower()):
        return time.time() - parse_age(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{text!r} is not a duration (7d, 12h) or a date (2026-11-29T14:30)", 2
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC) if utc else when.astimezone()  # naive: local time
    return when.timestamp()


def _filters(
    engine: Reader,
    status: str | None,
    workflow: str | None,
    queue: str | None,
    parent: str | None,
    since: str | None,
    until: str | None,
    utc: bool,
) -> dict[str, Any]:
    """The filters as `Store.iter_runs` takes them (checked now: errors before any output)."""
    if status is not None and status.lower() not in STATES:
        raise UserError(f"--status {status!r}: choose one of {', '.join(STATES)}", 2)
    want = status.lower() if status else None
    if parent is not None:
        engine.get_run(parent)  # an unknown parent is an error, not "no runs"
    return {
        "status": None if want in (None, "orphaned") else RunStatus(want),
        "orphaned": want == "orphaned",
        "workflow": workflow,
        "queue": queue,
        "parent": parent,
        "since": parse_when(since, utc) if since else None,
        "until": parse_when(until, utc) if until else None,
    }


def _matching(engine: Reader, filters: dict[str, Any]) -> Iterator[RunInfo]:
    version = filters.get("version")
    for info in engine.store.iter_runs(**_counted(filters)):
        if (not filters["orphaned"] or info.orphaned) and (
            version is None or info.version == version
        ):
            yield info


STREAM = 100  # rows per table printed at a time by `list --all` (it streams)


@command("list")
def list_runs(
    ctx: typer.Context,
    status: StatusOption = None,
    workflow: WorkflowOption = None,
    queue: QueueOption = None,
    parent: ParentOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="At most N runs, the newest.")
    ] = DEFAULT_LIMIT,
    offset: Annotated[
        int, typer.Option("--offset", min=0, metavar="N", help="Skip the N newest first.")
    ] = 0,
    all_runs: Annotated[bool, typer.Option("--all", "-a", help="Every run (no --limit).")] = False,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            metavar="V",
            help="Only runs started by Engine(version=V).",
            show_default=False,
        ),
    ] = None,
    utc: UtcOption = False,
    as_json: JsonOption = False,
) -> None:
    """List runs as a table, newest first: the 20 newest unless --all or --limit N.

    A run's state is its status ("stuck": recovered too often after crashes without
    progress, parked until `intemporal resume RUN`), or "orphaned" when no process executes it any more
    (running and its process gone, or waiting and the engine that kept it waiting gone):
    `intemporal resume --all` or `intemporal worker` continues it. Times are local
    (--utc for UTC) and carry their zone. --json prints one object per run (run_id,
    workflow, status, created_at, updated_at, duration, steps, parent, orphaned, result,
    error). An unreadable run has a damaged journal (or one that is a symbolic link): it
    is listed, never left out, and `intemporal show RUN` says why.

    \b
    Examples:
      intemporal list
      intemporal list --status failed --workflow checkout --since 2d
      intemporal list --status orphaned --all
      intemporal list --status stuck --version 2026.11.2
      intemporal list --limit 50 --offset 50 --utc
      intemporal list --json | jq -r 'select(.orphaned) | .run_id'
    """
    with _reader(ctx) as engine:
        filters = _filters(engine, status, workflow, queue, parent, since, until, utc)
        filters["version"] = version
        runs = _matching(engine, filters)
        page = itertools.islice(runs, offset, None if all_runs else offset + limit)
        if as_json:  # one line per run, printed as it is read
            for info in page:
                typer.echo(json.dumps(info.to_json()))
            return
        out = render.console()
        shown, orphans, unreadable = 0, 0, 0
        for chunk in _chunks(page, STREAM if all_runs else limit):
            table = view.runs_table(chunk, out.width, utc)
            table.show_header = shown == 0
            out.print(table)
            shown += len(chunk)
            orphans += sum(info.orphaned for info in chunk)
            unreadable += sum(info.status is RunStatus.UNREADABLE for info in chunk)
        if not shown:
            given = (status, workflow, queue, parent, since, until, version)
            filtered = offset > 0 or any(f is not None for f in given)  # `--queue ""` too
            out.print("no runs" + (" match" if filtered else " yet"))
            return
        more = not all_runs and next(runs, None) is not None
        if more:
            counted = not filters["orphaned"] and version is None
            total = engine.store.count_runs(**_counted(filters)) if counted else None
            of = f"of {total} runs" if total is not None else "shown, more match"
            out.print(
                f"{offset + 1}-{offset + shown} {of}: --all, --limit N or --offset N for more",
                style="dim",
                soft_wrap=True,
            )
    if orphans:
        note = f"{orphans} orphaned (no process executes them): `intemporal resume --all` continues them"
        out.print(Text(note, style=render.ORPHANED_STYLE), soft_wrap=True)
    if unreadable:  # listed, never left out: `show` says why
        note = f"{unreadable} unreadable (a damaged journal): `intemporal show RUN` says why"
        out.print(Text(note, style=render.STATUS_STYLE[RunStatus.UNREADABLE]), soft_wrap=True)


def _chunks(runs: Iterator[RunInfo], size: int) -> Iterator[list[RunInfo]]:
    while chunk := list(itertools.islice(runs, size)):
        yield chunk


def _counted(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters `Store.iter_runs` takes (orphaned and version are checked per run)."""
    return {k: v for k, v in filters.items() if k not in ("orphaned", "version")}


@command()
def count(
    ctx: typer.Context,
    status: StatusOption = None,
    workflow: WorkflowOption = None,
    queue: QueueOption = None,
    parent: ParentOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print how many runs match the filters (those of `intemporal list`).

    \b
    Examples:
      intemporal count
      intemporal count --status failed --since 24h
      intemporal count --status orphaned --json
    """
    with _reader(ctx) as engine:
        filters = _filters(engine, status, workflow, queue, parent, since, until, False)
        n = None if filters["orphaned"] else engine.store.count_runs(**_counted(filters))
        if n is None:  # a status asks each journal
            n = sum(1 for _ in _matching(engine, filters))
    typer.echo(json.dumps({"count": n}) if as_json else str(n))


def _children(engine: Reader, events: list[Any]) -> dict[str, RunInfo]:
    out = {}
    for cid in view.child_ids(events):
        try:
            out[cid] = engine.get_run(cid)
        except Exception:  # not created yet, or collected
            continue
    return out


@command()
def show(
    ctx: typer.Context,
    run: RunArg,
    full: Annotated[
        bool, typer.Option("--full", help="Show values and the traceback whole, uncut.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Then print new events as they come, until the run ends."
        ),
    ] = False,
    utc: UtcOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the raw journal events, one per line.")
    ] = False,
) -> None:
    """Show one run: status, what it waits for, arguments, result or error, and its journal.

    The timeline has one row per journal event: sequence number, time since the start,
    event, name, attempt, duration and result or error; a child run's row shows how it
    ended. Narrower than 100 columns, each event's details go on the line under it. Long
    values are cut with an ellipsis (--full shows them whole). A failed run's traceback
    is printed as recorded, from the user's code on. --follow keeps printing new events
    until the run ends (Ctrl-C stops watching; the run goes on). --json prints the raw
    events, one per line.

    \b
    Examples:
      intemporal show order-42
      intemporal show order-42 --full --utc
      intemporal show order-42 --follow
      intemporal show order-42 --json | jq -c 'select(.type == "run_failed")'
    """
    with _reader(ctx) as engine:
        events = engine.history(run)
        info = engine.get_run(run)
        if as_json:
            for event in events:
                typer.echo(json.dumps(_masked(event)))  # a Secret's value reads "***"
        else:
            view.show_run(render.console(), info, events, _children(engine, events), utc, full)
        if follow:
            _follow(engine, info, events, utc, full, as_json)


def _masked(value: Any) -> Any:
    from .codec import masked  # (it loads the pickling machinery: not for `list`)

    return masked(value)


FOLLOW_POLL = 0.2  # seconds between two reads of a followed journal


def _pause(seconds: float) -> None:
    """Wait between two reads of a followed journal (a seam for tests)."""
    time.sleep(seconds)


def _follow(
    engine: Reader, info: RunInfo, events: list[Any], utc: bool, full: bool, as_json: bool
) -> None:
    """Print the events a run records from now on, until it ends."""
    out = render.console()
    if not as_json:
        out.print(Text(f"following {info.run_id} (Ctrl-C stops watching)", style="dim"))
    seen_events = len(events)
    seen_rows = len(view.rows(events, {}, utc))
    while not info.status.finished:
        _pause(FOLLOW_POLL)
        events = engine.history(info.run_id)
        info = engine.get_run(info.run_id)
        if len(events) == seen_events:
            continue
        if as_json:
            for event in events[seen_events:]:
                typer.echo(json.dumps(_masked(event)))
        else:
            body = view.rows(events, _children(engine, events), utc)
            for line in view.event_lines(body[seen_rows:], full):
                out.print(line)
            seen_rows = len(body)
        seen_events = len(events)
    if not as_json:
        out.print(Text.assemble("run ", (info.run_id, "bold"), " ended ", view.status_text(info)))


def _tree_json(engine: Reader, info: RunInfo) -> dict[str, Any]:
    node = info.to_json()
    node["children"] = [_tree_json(engine, c) for c in _child_infos(engine, info)]
    return node


def _child_infos(engine: Reader, info: RunInfo) -> list[RunInfo]:
    return list(_children(engine, engine.history(info.run_id)).values())


@command()
def tree(
    ctx: typer.Context,
    run: RunArg,
    utc: UtcOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the tree as one nested JSON object.")
    ] = False,
) -> None:
    """Draw a run and its child runs (and theirs) as a tree, with statuses and durations.

    \b
    Examples:
      intemporal tree order-42
      intemporal tree order-42 --json | jq '.children[].status'
    """
    with _reader(ctx) as engine:
        root = engine.get_run(run)
        if as_json:
            typer.echo(json.dumps(_tree_json(engine, root)))
            return
        drawn = view.run_tree(root, lambda i: _child_infos(engine, i), utc)
    render.console().print(drawn)
