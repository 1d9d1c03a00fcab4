"""The `intemporal` commands that run workflows and change runs: start, resume, result,
cancel, signal, replay, ui (gc: `cli_gc.py`); importing this module registers every command
of the CLI (it imports the other command modules in the order `intemporal --help` lists them).

`intemporal/cli.py` is the entry point: it imports only the module a command lives in.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from . import cli_control, cli_inspect, cli_queues, cli_worker  # noqa: F401 - they register their commands
from . import cli_render as render
from . import cli_timeline as view
from .cli_render import Outcome, describe, exit_code
from .cli_support import (
    _USER_ERRORS,
    ImportOption,
    JsonOption,
    RunArg,
    RunsArg,
    TimeoutOption,
    UserError,
    _engine,
    _import,
    _load_target,
    _open,
    _parse_args,
    _parse_json,
    command,
    parse_age,
    print_outcome,
)
from .errors import IntemporalError
from .handle import RunHandle
from .housekeeping import resumable
from .start_api import PRIORITY_MAX, PRIORITY_MIN
from .store import check_run_id
from .ui import ui
from .verify import verify_replay

_command = command  # the name commands were registered with before the split into modules


@command()
def resume(
    ctx: typer.Context,
    runs: Annotated[
        list[str] | None,
        typer.Argument(metavar="RUN", help="The ids of the runs to resume.", show_default=False),
    ] = None,
    all_runs: Annotated[
        bool,
        typer.Option(
            "--all", help="Resume every unfinished run nobody executes: pending, orphaned, waiting."
        ),
    ] = False,
    failed: Annotated[
        bool,
        typer.Option("--failed", help="With --all (implied): retry failed and stuck runs too."),
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
    a timer over a minute off) is left to `intemporal worker`. A run another live process
    executes (or keeps waiting) is left to it: "another process has it", exit 0.

    --all takes every unfinished run that no live process has: pending, orphaned
    (running, its process gone), and waiting with its engine gone; failed runs only with
    --failed (which also takes stuck runs). Child runs are left to their parent. Runs it does not take are not touched.

    Exits 0 unless a run resumed here ends failed or cannot go on (1), or --timeout
    passes with a run still going (3); usage errors exit 2.

    \b
    Examples:
      intemporal resume order-42
      intemporal resume order-42 order-43 --import shop.flows
      intemporal resume --all
      intemporal resume --all --failed --timeout 600
    """
    if bool(runs) == (all_runs or failed):
        raise UserError("give the RUN ids to resume, or --all / --failed (not both)", 2)
    for module in imports or []:
        _import(module)
    out = render.console()
    started: list[RunHandle | Outcome] = []
    with _engine(ctx) as engine:
        if not runs:  # oldest first; child runs are left to their parent, which resumes them
            # every run: a finished one damaged since must be said too, not skipped
            listed = list(reversed(engine.list_runs()))
            targets = [i for i in listed if resumable(engine.store, i, failed)]
            started += render.unreadable_outcomes(listed)  # reported, never skipped in silence
            if not targets and not started:
                what = "unfinished or failed" if failed else "unfinished"
                out.print(f"nothing to resume: no {what} run that no process has")
                return
        else:
            targets = [engine.get_run(rid) for rid in runs]  # all known, or none run
        for info in targets:
            try:
                started.append(
                    render.elsewhere(engine, info) or engine.resume(info.run_id, imports=imports)
                )
            except _USER_ERRORS as exc:  # this run cannot go on; the others still may
                started.append(Outcome(info.run_id, "error", error=describe(exc)))
        outcomes = render.follow(engine, started, timeout, out, as_json)
    code = exit_code(outcomes)
    if code:
        raise typer.Exit(code)


@command()
def result(
    ctx: typer.Context,
    run: RunArg,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait for a run to end, wherever it executes, and print its result.

    Runs nothing itself: a worker, or the process that started it, executes the run.
    Prints the result (JSON, else its repr), or the error; --json prints one object. It
    never unpickles: a value stored with dill is shown as <dill: TYPE, SIZE>.
    Exit codes as for `resume`: 0 completed (or cancelled), 1 failed, 3 --timeout passed
    first (the run goes on).

    \b
    Examples:
      intemporal result order-42
      intemporal result order-42 --timeout 30 --json | jq .result
    """
    with _engine(ctx, worker=False) as engine:
        outcome = render.settle(engine, engine.handle(run).run_id, timeout)
    print_outcome(outcome, as_json)


@command()
def cancel(
    ctx: typer.Context,
    runs: RunsArg,
    as_json: JsonOption = False,
) -> None:
    """Request cancellation of runs.

    The workflow gets intemporal.Cancelled at its next durable operation (at once if it
    waits), so its saga can compensate. Says who delivers it: the live process executing
    the run (or keeping it waiting), or, when no process has it, `intemporal resume RUN`
    or a worker. A finished run is left as it is. Every id is checked before any run is
    cancelled. --json prints one object per run (run_id, status, requested, held_by).

    \b
    Examples:
      intemporal cancel order-42
      intemporal list -s waiting --json | jq -r .run_id | xargs intemporal cancel
    """
    out = render.console()
    with _engine(ctx, worker=False) as engine:
        infos = [engine.get_run(rid) for rid in runs]
        for info in infos:
            held = render.held_by(engine, info)
            requested = not info.status.finished
            if requested:
                engine.cancel(info.run_id)
            if as_json:
                obj = {"run_id": info.run_id, "status": info.status.value}
                typer.echo(json.dumps({**obj, "requested": requested, "held_by": held}))
            elif not requested:
                out.print(
                    f"{info.run_id}: already {info.status}; nothing to cancel", soft_wrap=True
                )
            elif held == "executing":
                out.print(
                    f"{info.run_id}: cancellation requested; the live process executing it "
                    "delivers it at the run's next durable operation",
                    soft_wrap=True,
                )
            elif held == "waiting":
                out.print(
                    f"{info.run_id}: cancellation requested; the live engine keeping it "
                    "waiting delivers it now",
                    soft_wrap=True,
                )
            else:
                out.print(
                    f"{info.run_id}: cancellation requested; no process executes it now: "
                    f"`intemporal worker` or `intemporal resume {info.run_id}` delivers it",
                    soft_wrap=True,
                )


@command("signal")
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
        typer.Option(
            "--id", metavar="ID", help="A signal id: the same id sent twice is delivered once."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a signal to a run: `wait_for_signal(NAME)` in the workflow returns the payload.

    Signals sent before the workflow waits are queued, oldest first per name. Give --id
    to make a retried send safe: a signal id is delivered at most once. Says how the run
    will take it (a live process has it, or `intemporal worker` / `resume` runs it), and
    warns when the run waits for a signal of another name. --json prints one object
    (run_id, signal, held_by, waits_for).

    \b
    Examples:
      intemporal signal expense-7 approve '{"by": "alice"}'
      intemporal signal order-42 shipped --id shipment-991
    """
    payload = None if payload_json is None else _parse_json(payload_json, "PAYLOAD_JSON")
    with _engine(ctx, worker=False) as engine:
        info = engine.get_run(run)
        held = render.held_by(engine, info)
        waits = (
            render.awaited_signal(engine.history(run)) if info.status.value == "waiting" else None
        )
        try:
            engine.signal(run, name, payload, signal_id=signal_id)
        except NotImplementedError as exc:
            raise UserError(f"this engine cannot deliver signals yet: {exc}") from None
    if as_json:
        obj = {"run_id": run, "signal": name, "held_by": held, "waits_for": waits}
        typer.echo(json.dumps(obj))
        return
    out = render.console()
    if held is None:
        how = (
            f"no process executes it now: `intemporal worker` or `intemporal resume {run}` "
            "runs it and the workflow takes the signal then"
        )
    else:
        how = f"the live process {'executing' if held == 'executing' else 'keeping'} it takes it"
    out.print(f"signal {name!r} sent to {run}; {how}", soft_wrap=True)
    if waits is not None and waits != name:
        warning = (
            f"warning: run {run} waits for signal {waits!r}, not {name!r}: the signal stays "
            f"queued until the workflow asks for {name!r}"
        )
        render.console(stderr=True).print(Text(warning, style="yellow"), soft_wrap=True)


@command()
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
            "--run-id",
            metavar="ID",
            help="The run's id (default: random). Starting it twice runs it once.",
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
    queue: Annotated[
        str | None, typer.Option(metavar="QUEUE", help="The queue to record the run on.")
    ] = None,
    priority: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=PRIORITY_MIN,
            max=PRIORITY_MAX,
            help="Within its queue, a lower N starts first (ties: the older).",
        ),
    ] = 0,
    delay: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Keep the run pending this long first: 30s, 15m, 2h, 1d.",
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run of MODULE:WORKFLOW and, by default, run it here to the end.

    MODULE is imported from the current folder. Prints the run id, then the result (JSON,
    else its repr); --json prints one object. --detach only records the run as pending and
    returns, like `temporal workflow start`: `intemporal worker` (or `resume RUN`) runs it.
    An existing run id is not started again: it says so (on stderr) and reports that run.
    MODULE is a module name (`nightly`), not a file (`nightly.py`). Exits 1 if the run fails, 3 if --timeout passes
    first (as `resume`).

    \b
    Examples:
      intemporal start shop.flows:checkout '["order-42", 100]' --run-id order-42
      intemporal start shop.flows:checkout '{"order_id": "order-43", "amount": 5}'
      intemporal start shop.flows:nightly --detach
      intemporal start shop.flows:remind '["u-7"]' --queue emails --delay 30s
    """
    wf = _load_target(target)
    args, kwargs = _parse_args(args_json)
    seconds = parse_age(delay, "--delay", "30s") if delay is not None else None
    if run_id is not None:
        check_run_id(run_id)
    with _engine(ctx, worker=wait, create=True) as engine:
        known = engine.store.exists(run_id) if run_id is not None else False
        handle = engine.start(
            wf,
            *args,
            run_id=run_id,
            kwargs=kwargs,
            queue=queue,
            priority=priority,
            delay=seconds,
        )
        if known:  # idempotent start: say so, then report the run as it stands
            info = engine.get_run(handle.run_id)
            what = "already ran" if info.status.finished else "already exists"
            render.console(stderr=True).print(
                f"run {handle.run_id} {what} ({view.state(info)}, started "
                f"{render.fmt_time(info.created_at)}): not started again",
                soft_wrap=True,
            )
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
    print_outcome(outcome, as_json)


from . import cli_gc  # noqa: E402, F401 - registers `gc` here: `intemporal --help` lists it after start


@command()
def replay(
    ctx: typer.Context,
    runs: RunsArg,
    imports: ImportOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay recorded runs against the current code, running no activity.

    Reports "deterministic" or the first mismatch: the step's sequence number, what the
    journal recorded and what the code asks for now. Exits 0 when every run replays, 1
    otherwise: run it in CI before a deploy, on the runs still in flight. --json prints
    one object per run (run_id, deterministic, message).

    \b
    Examples:
      intemporal replay order-42
      intemporal replay order-42 --import shop.flows
      intemporal list -s running --json | jq -r .run_id | xargs intemporal replay
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
        if as_json:
            typer.echo(json.dumps({"run_id": rid, "deterministic": ok, "message": message}))
        else:
            out.print(
                Text(f"{rid}: {message}", style="green" if ok else "bold red"), soft_wrap=True
            )
    if not all_ok:
        raise typer.Exit(1)


_command("ui")(ui)  # the web view: intemporal/ui.py (needs the extra intemporal[ui])
