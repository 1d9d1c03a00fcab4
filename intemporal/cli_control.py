"""The `intemporal` commands that change a run's course: fork and terminate.

intemporal fork order-42 --from-step 3 --run-id order-42-fixed
intemporal terminate order-42 --reason "duplicate order"
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from . import cli_render as render
from .cli_render import describe
from .cli_support import (
    ImportOption,
    JsonOption,
    RunArg,
    TimeoutOption,
    UserError,
    _engine,
    _import,
    command,
    print_outcome,
)
from .errors import RunConflict
from .store import check_run_id

RunsToEnd = Annotated[list[str], typer.Argument(metavar="RUN", help="The ids of the runs to end.")]


@command()
def fork(
    ctx: typer.Context,
    run: RunArg,
    from_step: Annotated[
        int,
        typer.Option(
            "--from-step",
            min=1,
            metavar="N",
            help="The first step executed anew (a step number, as `intemporal show` lists them).",
        ),
    ],
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", metavar="NEW", help="The new run's id (default: random)."),
    ] = None,
    imports: ImportOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a new run that repeats RUN up to step N, then executes on with today's code.

    The new run's journal is RUN's up to step N (the child runs started before N are
    reused, not run again); from step N on it executes here, with the code as it is now:
    repair a run after fixing a bug, or run the tail of a failed run again. RUN is not
    touched; `intemporal show NEW` says where the new run came from. Prints the new run's
    id, then its outcome (exit codes as for `resume`).

    \b
    Examples:
      intemporal fork order-42 --from-step 3
      intemporal fork order-42 --from-step 3 --run-id order-42-fixed
      intemporal fork order-42 --from-step 1 --import shop.flows
    """
    for module in imports or []:
        _import(module)
    if run_id is not None:
        check_run_id(run_id)
    with _engine(ctx) as engine:
        try:
            handle = engine.fork(run, from_step, new_run_id=run_id)
        except (ValueError, RunConflict) as exc:
            raise UserError(describe(exc)) from None
        if not as_json:
            typer.echo(handle.run_id)
            render.console(stderr=True).print(
                f"forked from {run} at step {from_step}", soft_wrap=True
            )
        outcome = render.wait(engine, handle, timeout)
    print_outcome(outcome, as_json)


@command()
def terminate(
    ctx: typer.Context,
    runs: RunsToEnd,
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="TEXT", help="Why: recorded with the run's end."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """End runs at once, without compensations: each ends cancelled, recorded with --reason.

    No cancellation is delivered to the workflow, so no saga compensates (`cancel` is the
    polite way). A run no process executes is ended now; one a live process executes
    stops at its next durable operation. Child runs are terminated too; a finished run is
    left as it is. Every id is checked before any run is terminated.

    \b
    Examples:
      intemporal terminate order-42 --reason "duplicate order"
    """
    out = render.console()
    with _engine(ctx, worker=False) as engine:
        infos = [engine.get_run(rid) for rid in runs]
        for info in infos:
            done = info.status.finished
            if not done:
                engine.terminate(info.run_id, reason=reason)
            if as_json:
                obj = {"run_id": info.run_id, "terminated": not done, "reason": reason}
                typer.echo(json.dumps(obj))
            elif done:
                out.print(f"{info.run_id}: already {info.status}; nothing to terminate")
            else:
                out.print(f"{info.run_id}: terminated" + (f" ({reason})" if reason else ""))
