"""Changing a workflow's code while runs of it are in flight: `patched()` and `deprecate_patch()`.

    @intemporal.workflow
    def checkout(order: dict) -> str:
        if intemporal.patched("charge-v2"):
            charge_v2(order)          # runs that reach this point with this code
        else:
            charge(order)             # runs whose journal already passed it without the marker
        return ship(order)

A patch marker is a journal line (`patch`, with the id and the step it follows) that takes
no sequence number: adding a `patched()` call, or deleting it once `deprecate_patch()` has
outlived the old runs, never shifts the steps a journal recorded.

`patched(id)` returns True in a run whose journal holds the marker, and in a run that reaches
the call for the first time (it records the marker then); False in a run whose journal
already holds steps after this point without the marker (it was started by the old code and
got past here), or that has ended. The answer is kept for the rest of the execution: a
second call with the same id answers the same.
"""

from __future__ import annotations

import weakref

from .events import FINAL_EVENTS, PATCH
from .replay import RunContext, current

_decided: weakref.WeakKeyDictionary[RunContext, dict[str, bool]] = weakref.WeakKeyDictionary()


def _decisions(ctx: RunContext) -> dict[str, bool]:
    """The patch ids answered in this execution, starting from the journal's markers."""
    found = _decided.get(ctx)
    if found is None:
        found = {str(e.get("patch_id")): True for e in ctx.events if e.get("type") == PATCH}
        _decided[ctx] = found
    return found


def patched(patch_id: str) -> bool:
    """Whether this run takes the new path of patch `patch_id` (see the module's docstring).

    `patch_id`: a non-empty string naming the change ("charge-v2"). Outside a workflow
    (a workflow called plainly) it returns True: the code as it is now. Raises `TypeError`
    for an id that is not a non-empty string.
    """
    _check(patch_id)
    ctx = current()
    if ctx is None:
        return True
    decided = _decisions(ctx)
    if patch_id in decided:
        return decided[patch_id]
    ended = any(e.get("type") in FINAL_EVENTS for e in ctx.events)
    if ctx.seq < ctx.last_recorded or ended:
        decided[patch_id] = False  # the old code went past this point: replay the old path
        return False
    ctx.append(
        {"type": PATCH, "name": f"intemporal.patch:{patch_id}", "patch_id": patch_id, "at": ctx.seq}
    )
    decided[patch_id] = True
    return True


def deprecate_patch(patch_id: str) -> None:
    """Declare that every run still in flight took the new path of `patch_id`.

    Once no run of the old code can reach this point any more, replace
    `if patched(id): new() else: old()` with `deprecate_patch(id); new()`. It records
    nothing (markers already written stay harmless), so it can be deleted later without
    breaking a replay. A later `patched(patch_id)` in the same execution returns True.
    Raises `TypeError` for an id that is not a non-empty string.
    """
    _check(patch_id)
    ctx = current()
    if ctx is not None:
        _decisions(ctx)[patch_id] = True


def decisions(ctx: RunContext) -> dict[str, bool]:
    """The patches an execution answered so far: id -> True (new path) or False (old path)."""
    return dict(_decided.get(ctx) or {})


def _check(patch_id: object) -> None:
    if not isinstance(patch_id, str) or not patch_id:
        raise TypeError(f"a patch id is a non-empty string, not {patch_id!r}")
