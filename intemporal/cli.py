"""The `intemporal` command: see, start, resume, cancel and signal runs from a terminal.

    intemporal list --status failed
    intemporal show order-42
    intemporal resume --all
    intemporal replay order-42 --import shop.flows

Every command finds the store as `Engine` does: `--store PATH_OR_URL`, else
`$INTEMPORAL_HOME`, else `./.intemporal`. A user error (an unknown run id, bad JSON, a
missing store, a module that does not import) prints one red line on stderr and exits 1;
a usage error exits 2. `INTEMPORAL_DEBUG=1` shows the traceback instead.

Kept out of `import intemporal`: Typer and Rich load only when the command runs.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text

from . import cli_render as render
from .cli_render import Outcome, describe, final_outcome, report
from .cli_support import (
    _USER_ERRORS,
    STATES,
    STRICT,
    Finished,
    UserError,
    _add_cwd,
    _engine,
    _import,
    _load_target,
    _location,
    _open,
    _parse_args,
    _parse_json,
    _user_errors,
    parse_age,
    parse_state,
)
from .errors import IntemporalError
from .handle import RunHandle
from .store import RunStatus, check_run_id, redact
from .verify import verify_replay

app = typer.Typer(
    name="intemporal",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets; never print them
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="markdown",
)

F = TypeVar("F", bound=Callable[..., Any])


def _command(name: str | None = None) -> Callable[[F], F]:
    """Register a command whose user errors print one red line instead of a traceback."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with _user_errors():
                return fn(*args, **kwargs)

        app.command(name or fn.__name__)(guarded)
        return fn

    return register


# -- commands --------------------------------------------------------------------------------------
_STORE_HELP = "The store: a directory (file store) or a URL. Default: ./.intemporal"
StoreOption = Annotated[
    str | None, typer.Option(envvar="INTEMPORAL_HOME", metavar="PATH_OR_URL", help=_STORE_HELP)
]
_IMPORT_HELP = "Import MODULE first, so its workflows are found (repeatable)."
ImportOption = Annotated[
    list[str] | None, typer.Option("--import", "-i", metavar="MODULE", help=_IMPORT_HELP)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, one object per line.")]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run id.")]
RunsArg = Annotated[list[str], typer.Argument(metavar="RUN", help="The run ids.")]
TimeoutOption = Annotated[
    float | None,
    typer.Option(metavar="SECONDS", help="Stop waiting after SECONDS (runs stay resumable)."),
]


StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        envvar="INTEMPORAL_STRICT",
        help="Refuse a store folder that group or others may write to, or another user owns.",
    ),
]


@app.callback()
def _root(ctx: typer.Context, store: StoreOption = None, strict: StrictOption = False) -> None:
    """Durable workflows from the terminal: list, inspect, start, resume, cancel and signal runs.

    The store is --store PATH_OR_URL, else $INTEMPORAL_HOME, else ./.intemporal (as for Engine).

    Examples:

        intemporal list --status failed
        intemporal show order-42
        intemporal resume --all
    """
    ctx.obj = store  # the location, read by _open
    ctx.meta[STRICT] = strict
    _add_cwd()


@_command("list")
def list_runs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", metavar="STATE", help=f"Only runs in this state: {', '.join(STATES)}."
        ),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow (its name).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="At most N runs, the newest.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs as a table, newest first.

    An orphaned run is running but no process owns it any more (it crashed): `intemporal
    resume --all` continues it. An unreadable run has a damaged journal (or one that is a
    symbolic link): it is listed, never left out, and `show` says why. --json prints one object per run (run_id, workflow,
    status, created_at, updated_at, duration, steps, parent, orphaned, result, error).

    Examples:

        intemporal list
        intemporal list --status failed --workflow checkout --limit 20
        intemporal list --json | jq -r 'select(.orphaned) | .run_id'
    """
    with _engine(ctx, worker=False) as engine:
        runs = engine.list_runs(status=parse_state(status), workflow=workflow, limit=limit)
    if as_json:
        for info in runs:
            typer.echo(json.dumps(info.to_json()))
        return
    out = render.console()
    if not runs:
        out.print("no runs" + (" match" if status or workflow else " yet"))
        return
    out.print(render.runs_table(runs, out.width))
    orphans = sum(info.orphaned for info in runs)
    if orphans:
        note = (
            f"{orphans} orphaned (no process owns them): `intemporal resume --all` continues them"
        )
        out.print(Text(note, style=render.ORPHANED_STYLE))
    unreadable = sum(info.status is RunStatus.UNREADABLE for info in runs)
    if unreadable:
        note = f"{unreadable} unreadable (a damaged journal): `intemporal show RUN` says why"
        out.print(Text(note, style=render.STATUS_STYLE[RunStatus.UNREADABLE]))


@_command()
def show(
    ctx: typer.Context,
    run: RunArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the raw journal events, one per line.")
    ] = False,
) -> None:
    """Show one run: status, arguments, result or error, and its journal as a timeline.

    The timeline has one row per journal event: sequence number, time since the start,
    event, name, attempt, duration and result (elided when long) or error. A failed run's
    traceback is printed as recorded. --json prints the raw events, one per line.

    Examples:

        intemporal show order-42
        intemporal show order-42 --json | jq -c 'select(.type == "activity_completed")'
    """
    with _engine(ctx, worker=False) as engine:
        events = engine.history(run)
        info = engine.get_run(run)
    if as_json:
        for event in events:
            typer.echo(json.dumps(event))
        return
    render.show_run(render.console(), info, events)


@_command()
def resume(
    ctx: typer.Context,
    runs: Annotated[
        list[str] | None,
        typer.Argument(metavar="RUN", help="The ids of the runs to resume.", show_default=False),
    ] = None,
    all_runs: Annotated[
        bool, typer.Option("--all", help="Resume every orphaned, failed or pending run.")
    ] = False,
    imports: ImportOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume runs in this process, wait for them and print each result.

    Completed activities are not run again; the one in flight at a crash runs again. The
    code is found as recorded at start: its module, the script run as `python script.py`
    (without its `__main__` block), or the journal's copy; --import MODULE names it. A
    failed run is retried from its failed step; a run that comes to wait for a signal (or
    a timer over a minute off) is left to `intemporal worker`. Exits 1 if a run failed.

    Examples:

        intemporal resume order-42
        intemporal resume order-42 order-43 --import shop.flows
        intemporal resume --all
    """
    if bool(runs) == all_runs:
        raise UserError("give the RUN ids to resume, or --all (not both)", 2)
    for module in imports or []:
        _import(module)
    out = render.console()
    started: list[RunHandle | Outcome] = []
    with _engine(ctx) as engine:
        if all_runs:  # oldest first; child runs are left to their parent, which resumes them
            listed = list(reversed(engine.list_runs()))
            targets = [
                i.run_id
                for i in listed
                if i.parent is None
                and (i.orphaned or i.status in (RunStatus.FAILED, RunStatus.PENDING))
                and not engine.store.is_claimed(i.run_id)
            ]
            started += render.unreadable_outcomes(listed)  # reported, never skipped in silence
            if not targets and not started:
                out.print("nothing to resume: no orphaned, failed or pending runs")
                return
        else:
            targets = [engine.get_run(rid).run_id for rid in runs or []]  # all known, or none run
        for rid in targets:
            if engine.store.is_claimed(rid):
                note = f"{rid}: another process is executing it; waiting for it to end"
                render.console(stderr=True).print(note, soft_wrap=True)
            try:
                started.append(engine.resume(rid, imports=imports))
            except _USER_ERRORS as exc:  # this run cannot go on; the others still may
                started.append(Outcome(rid, "error", error=describe(exc)))
        outcomes = render.follow(engine, started, timeout, out, as_json, bar=all_runs)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@_command()
def cancel(
    ctx: typer.Context,
    runs: RunsArg,
) -> None:
    """Request cancellation of runs.

    The workflow gets intemporal.Cancelled at its next durable operation (at once if it
    waits), so its saga can compensate. A run no process executes gets it when resumed;
    a finished run is left as it is. Every id is checked before any run is cancelled.

    Examples:

        intemporal cancel order-42
        intemporal list --status waiting --json | jq -r .run_id | xargs intemporal cancel
    """
    out = render.console()
    with _engine(ctx, worker=False) as engine:
        infos = [engine.get_run(rid) for rid in runs]
        for info in infos:
            if info.status.finished:
                out.print(f"{info.run_id}: already {info.status}; nothing to cancel")
                continue
            engine.cancel(info.run_id)
            note = ""
            if not engine.store.is_claimed(info.run_id):
                note = (
                    f" (no process executes it now: `intemporal resume {info.run_id}` delivers it)"
                )
            out.print(f"{info.run_id}: cancellation requested{note}", soft_wrap=True)


@_command("signal")
def signal_run(
    ctx: typer.Context,
    run: RunArg,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The signal's name: wait_for_signal(NAME).")
    ],
    payload_json: Annotated[
        str | None,
        typer.Argument(metavar="PAYLOAD_JSON", help="The payload, as JSON (default: null)."),
    ] = None,
    signal_id: Annotated[
        str | None,
        typer.Option("--id", help="A signal id: the same id sent twice is delivered once."),
    ] = None,
) -> None:
    """Send a signal to a run: `wait_for_signal(NAME)` in the workflow returns the payload.

    Signals sent before the workflow waits are queued, oldest first per name. Give --id
    to make a retried send safe: a signal id is delivered at most once.

    Examples:

        intemporal signal expense-7 approve '{"by": "alice"}'
        intemporal signal order-42 shipped --id shipment-991
    """
    payload = None if payload_json is None else _parse_json(payload_json, "PAYLOAD_JSON")
    with _engine(ctx, worker=False) as engine:
        engine.get_run(run)
        try:
            engine.signal(run, name, payload, signal_id=signal_id)
        except NotImplementedError as exc:
            raise UserError(f"this engine cannot deliver signals yet: {exc}") from None
    render.console().print(f"signal {name!r} sent to {run}", soft_wrap=True)


@_command()
def start(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="MODULE:WORKFLOW", help="Where the workflow is defined.")
    ],
    args_json: Annotated[
        str | None,
        typer.Argument(
            metavar="ARGS_JSON",
            help="A JSON list of positional arguments, or an object of keyword arguments.",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", help="The run's id (default: random). Starting it twice runs it once."
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--detach",
            help="--wait (default): run it here until it ends. --detach: only record it as "
            "pending, for `intemporal worker` or `intemporal resume` to run.",
        ),
    ] = True,
    queue: Annotated[str | None, typer.Option(help="The queue to record the run on.")] = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run of MODULE:WORKFLOW and, by default, run it here to the end.

    MODULE is imported from the current folder. Prints the run id, then the result (JSON,
    else its repr); --json prints one object. --detach only records the run as pending and
    returns, like `temporal workflow start`: `intemporal worker` (or `resume RUN`) runs it.
    An existing run id is not started again. Exits 1 if the run fails.

    Examples:

        intemporal start shop.flows:checkout '["order-42", 100]' --run-id order-42
        intemporal start shop.flows:checkout '{"order_id": "order-43", "amount": 5}'
        intemporal start shop.flows:nightly --detach
    """
    wf = _load_target(target)
    args, kwargs = _parse_args(args_json)
    if run_id is not None:
        check_run_id(run_id)
    with _engine(ctx, worker=wait, create=True) as engine:
        handle = engine.start(wf, *args, run_id=run_id, kwargs=kwargs, queue=queue)
        if not wait:
            status = engine.get_run(handle.run_id).status
            if as_json:
                typer.echo(json.dumps({"run_id": handle.run_id, "status": status.value}))
            else:
                typer.echo(handle.run_id)
                render.console(stderr=True).print(
                    f"recorded as {status}: `intemporal worker` or "
                    f"`intemporal resume {handle.run_id}` runs it",
                    soft_wrap=True,
                )
            return
        if not as_json:
            typer.echo(handle.run_id)
        outcome = render.wait(engine, handle, timeout)
    if outcome.status == RunStatus.COMPLETED and not as_json:
        typer.echo(render.value_text(outcome.value))
    else:
        report(render.console(), outcome, as_json)
    if not outcome.ok:
        raise typer.Exit(1)


@_command()
def gc(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Only runs that ended longer ago: 90s, 15m, 12h, 7d, 2w.",
        ),
    ],
    status: Annotated[
        Finished | None, typer.Option(case_sensitive=False, help="Only runs that ended so.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete finished runs (completed, failed, cancelled) that ended longer ago than AGE.

    Unfinished runs are never deleted, nor runs a process owns. Prints how many runs were
    removed.

    Examples:

        intemporal gc --older-than 7d
        intemporal gc --older-than 12h --status completed
        intemporal gc --older-than 30d --dry-run
    """
    seconds = parse_age(older_than)
    store = _open(ctx)
    cutoff = time.time() - seconds
    doomed = [
        info
        for info in store.list_runs(status=status and RunStatus(status))
        if info.status.finished and info.updated_at <= cutoff and not store.is_claimed(info.run_id)
    ]
    out = render.console()
    for info in doomed:
        if dry_run:
            out.print(
                f"would remove {info.run_id} ({info.status}, {info.workflow})", soft_wrap=True
            )
        else:
            store.delete(info.run_id)
    out.print(f"{'would remove' if dry_run else 'removed'} {len(doomed)} run(s)")


@_command()
def worker(
    ctx: typer.Context,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", metavar="Q", help="A queue to serve (repeatable).", show_default=False
        ),
    ] = None,
    imports: ImportOption = None,
    interval: Annotated[
        float, typer.Option(min=0.01, metavar="SECONDS", help="Seconds between two looks for work.")
    ] = 1.0,
    threads: Annotated[int, typer.Option(min=1, help="Runs executed at the same time.")] = 8,
    once: Annotated[
        bool, typer.Option("--once", help="Take the work there is now, finish it, and exit.")
    ] = False,
) -> None:
    """Execute runs until stopped (Ctrl-C): every pending run and every orphaned one.

    Every second it calls Engine.recover(), which resumes each unfinished run no process
    owns (started with --detach, or crashed), and prints how each ended; runs recorded
    meanwhile are taken at once. With --queue it serves only those queues.
    On Ctrl-C the runs stop at their next durable operation and stay resumable.

    Examples:

        intemporal worker --import shop.flows
        intemporal worker --queue emails --queue billing --threads 16
        intemporal worker --once
    """
    for module in imports or []:
        _import(module)
    out = render.console()
    watching: dict[str, RunHandle] = {}
    reported: set[str] = set()
    with _engine(ctx, create=True, threads=threads, queues=queues or None) as engine:
        where = redact(engine.store.location or _location(ctx))
        served = f"queues {', '.join(queues)}" if queues else "every queue"
        out.print(f"worker on {where}, serving {served} (Ctrl-C to stop)", soft_wrap=True)
        try:
            while True:
                try:
                    for handle in engine.recover():
                        if handle.run_id not in watching:
                            out.print(f"resumed {handle.run_id}", soft_wrap=True)
                            watching[handle.run_id] = handle
                    while engine.adopted:  # recorded by clients meanwhile, taken at once
                        handle = engine.adopted.popleft()
                        out.print(f"took {handle.run_id}", soft_wrap=True)
                        watching[handle.run_id] = handle
                except _USER_ERRORS as exc:
                    if str(exc) not in reported:  # say it once, keep serving the rest
                        reported.add(str(exc))
                        out.print(Text(f"cannot resume a run: {exc}", style="red"), soft_wrap=True)
                for rid in list(watching):
                    info = engine.get_run(rid)
                    if info.status.finished:
                        report(out, final_outcome(info), False)
                        del watching[rid]
                    elif once and info.status is RunStatus.WAITING:  # it may take days
                        what = render.long_wait(engine.history(rid))
                        if what is not None and not engine.store.is_claimed(rid):
                            report(out, Outcome(rid, info.status.value, waiting_for=what), False)
                            del watching[rid]
                if once and not watching:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            out.print("stopping: unfinished runs stay durable and resumable")


@_command()
def replay(
    ctx: typer.Context,
    runs: RunsArg,
    imports: ImportOption = None,
) -> None:
    """Replay recorded runs against the current code, running no activity.

    Reports "deterministic" or the first mismatch: the step's sequence number, what the
    journal recorded and what the code asks for now. Exits 0 when every run replays, 1
    otherwise: run it in CI before a deploy, on the runs still in flight.

    Examples:

        intemporal replay order-42
        intemporal replay order-42 --import shop.flows
        intemporal list --status running --json | jq -r .run_id | xargs intemporal replay
    """
    for module in imports or []:
        _import(module)
    store = _open(ctx)
    out = render.console()
    all_ok = True
    for rid in runs:
        try:
            ok, message = verify_replay(store, rid, imports)
        except IntemporalError:
            raise
        except Exception as exc:  # rebuilding the recorded arguments failed
            raise UserError(f"cannot replay run {rid!r}: {type(exc).__name__}: {exc}") from exc
        all_ok = all_ok and ok
        out.print(Text(f"{rid}: {message}", style="green" if ok else "bold red"), soft_wrap=True)
    if not all_ok:
        raise typer.Exit(1)


def main() -> None:
    """The console-script entry point: `intemporal COMMAND ...`."""
    app(prog_name="intemporal")


if __name__ == "__main__":
    main()
