"""The `intemporal gc` command: delete finished runs, by whole trees (`housekeeping.py`).

Its own module, so `intemporal gc` starts without the engine or the other commands
(`cli.py` imports only this one for it): over 100,000 runs every part of its time counts.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from . import cli_render as render
from .cli_support import Finished, JsonOption, UserError, _open, command, parse_age
from .housekeeping import bulk, collectable, delete_trees
from .store import RunStatus


@command()
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
    status: Annotated[  # text, checked here: an enum option would load Pydantic (cli_coerce)
        str | None,
        typer.Option(
            metavar="<completed|failed|cancelled>",
            help="Only runs that ended so.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete finished runs (completed, failed, cancelled) that ended longer ago than AGE.

    A parent run reads its child runs again when it is replayed, so runs go by whole
    trees: a top-level run with all its child runs, once every one of them is finished
    and no process owns any, the last ended longer ago than AGE, and the top-level run
    ended with --status. A child run is never deleted while its parent is unfinished
    (waiting, crashed, pending), nor on its own. Prints how many runs were removed;
    --dry-run lists them (children included) and deletes nothing. --json prints one
    object per run (run_id, status, workflow, parent, action; error for a run kept by a
    failed unlink). A run whose journal cannot be read is left alone and named on stderr,
    and the command exits 1; so is a run whose files cannot be deleted (a file made
    immutable, a read-only file system), with the runs below it: every other run is
    deleted, and the next gc tries it again.

    \b
    Examples:
      intemporal gc --older-than 7d
      intemporal gc --older-than 12h --status completed
      intemporal gc --older-than 30d --dry-run
    """
    seconds = parse_age(older_than)
    states = [s.value for s in Finished]
    if status is not None and status.lower() not in states:
        raise UserError(f"--status {status!r}: choose one of {', '.join(states)}", 2)
    store = _open(ctx)
    unreadable: set[str] = set()
    undeletable: dict[str, str] = {}  # run id -> why its files could not be unlinked
    with bulk():
        doomed = collectable(
            store,
            older_than=seconds,
            status=status and RunStatus(status.lower()),
            unreadable=unreadable,
            probe=dry_run,
        )
        # the top-level run first, then what it started
        listed = [i for tree in doomed for i in reversed(tree.runs)] if dry_run or as_json else []
        doomed = doomed if dry_run else delete_trees(store, doomed, unreadable, undeletable)
        store.close()  # the file store's index drops the deleted runs' rows now
        gone = {i.run_id for tree in doomed for i in tree.runs}
    out = render.console()
    for info in listed:
        if as_json:
            action = "would remove" if dry_run else "removed" if info.run_id in gone else "kept"
            obj: dict[str, str | None] = {"run_id": info.run_id, "status": info.status.value}
            obj |= {"workflow": info.workflow, "parent": info.parent, "action": action}
            if info.run_id in undeletable:
                obj["error"] = undeletable[info.run_id]
            typer.echo(json.dumps(obj))
        else:
            below = f", child of {info.parent}" if info.parent else ""
            out.print(
                f"would remove {info.run_id} ({info.status}, {info.workflow}{below})",
                soft_wrap=True,
            )
    if not as_json:
        out.print(f"{'would remove' if dry_run else 'removed'} {len(gone)} run(s)")
    err = render.console(stderr=True)
    for rid in sorted(unreadable):  # left alone, never skipped in silence
        err.print(
            f"error: {rid} cannot be read (a damaged journal): left alone; "
            f"`intemporal show {rid}` says why",
            style="red",
            soft_wrap=True,
        )
    for rid, why in sorted(undeletable.items()):  # so are the runs below it
        err.print(
            f"error: {rid} cannot be deleted ({why}): left alone, with the runs below it; "
            "the next `gc` tries again",
            style="red",
            soft_wrap=True,
            markup=False,
        )
    if unreadable or undeletable:
        raise typer.Exit(1)
