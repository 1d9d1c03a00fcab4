"""Which runs `gc` may delete and which ones `resume --all` takes: rules over `Store` calls.

Written once, above the stores, with nothing but `Store` operations (`ended_before`,
`claim`, `read`, `delete`, `delete_if_ended`), so every backend (the file store, memory,
PostgreSQL) follows the same rules: whether a live process has a run is decided by
claiming it.

    trees = collectable(store, older_than=7 * 86400, status="completed")
    delete_trees(store, trees)

**Deleting.** A parent run reads its child runs again whenever it is replayed (after a
crash, a suspension, or the resume of a failed run), and a child that is not there any
more is started again: its activities run twice. So `gc` deletes whole trees: a top-level
run (one with no parent in the store) together with every run below it (children,
grandchildren). A tree goes only when every run in it is finished (completed, failed or
cancelled), none is owned by a live process, the last of them ended before the cutoff, and
the top-level run has the status asked for. A child is never deleted on its own, and a
parent never without its children.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import IntemporalError, RunNotFound
from .events import TERMINAL_EVENTS
from .store.base import RunStatus, Store
from .store.runinfo import RunInfo

_FINISHED = frozenset(s for s in RunStatus if s.finished)


@dataclass
class Tree:
    """A top-level run and every run below it; `runs` lists the deepest first (deletion order)."""

    root: RunInfo
    runs: list[RunInfo] = field(default_factory=list)

    @property
    def ended(self) -> float:
        """When the last run of the tree recorded its last event (epoch seconds)."""
        return max(info.updated_at for info in self.runs)


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Python's cyclic garbage collector paused while `gc` looks at and deletes many runs:
    the objects it makes (rows, `RunInfo`s, trees) hold no cycles, and over 100,000 runs
    the collector's passes cost a third of `collectable`'s CPU."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def trees(store: Store, cutoff: float | None = None) -> tuple[list[Tree], set[str]]:
    """The runs of the store grouped in trees, and the ids of the runs that cannot be read.

    A run whose recorded parent is not in the store is a top-level run. With `cutoff`
    (epoch seconds), a store may leave out trees whose top-level run had not ended by
    then (`Store.ended_before`: the file store asks its index).
    """
    if cutoff is None:
        infos, unreadable = Store.ended_before(store, float("inf"))
    else:
        infos, unreadable = store.ended_before(cutoff)
    children: dict[str, list[RunInfo]] = {}
    roots = []
    for info in infos.values():
        if info.parent is not None and info.parent in infos:
            children.setdefault(info.parent, []).append(info)
        else:
            roots.append(info)

    def deepest_first(info: RunInfo) -> list[RunInfo]:
        if info.run_id not in children:  # most runs: a tree of one
            return [info]
        below = [r for child in children[info.run_id] for r in deepest_first(child)]
        return [*below, info]

    found = [Tree(r, deepest_first(r) if r.run_id in children else [r]) for r in roots]
    return found, unreadable


def collectable(
    store: Store,
    *,
    older_than: float,
    status: RunStatus | str | None = None,
    now: float | None = None,
    unreadable: set[str] | None = None,
    probe: bool = True,
) -> list[Tree]:
    """The trees `gc` may delete: see the module docstring for the rule.

    `older_than`: seconds since the tree's last run ended; `status`: the status its
    top-level run must have (a finished one), or None for any finished status.
    `unreadable`, if given, receives the ids of the runs that cannot be read: never
    collected (nor any tree they may belong to), for the caller to report. `probe=False`
    leaves out the trees' runs a live process owns only when deleting (`delete_trees`
    claims each run, and leaves a taken tree whole): one claim per run fewer.
    """
    want = RunStatus(status) if status is not None else None
    cutoff = (time.time() if now is None else now) - older_than
    found, damaged = trees(store, cutoff)
    if unreadable is not None:
        unreadable |= damaged
    out = []
    for tree in found:
        if want is not None and tree.root.status is not want:
            continue
        if len(tree.runs) == 1:  # most trees: one run (the rule below, 100,000 times cheaper)
            if tree.root.status not in _FINISHED or tree.root.updated_at > cutoff:
                continue
        elif not all(info.status.finished for info in tree.runs) or tree.ended > cutoff:
            continue
        # A run that cannot be read may be a child: keep every run its id may sit under.
        if damaged and any(u.startswith(i.run_id + "/") for u in damaged for i in tree.runs):
            continue
        if probe and any(taken(store, info.run_id) for info in tree.runs):
            continue  # a failed run being resumed right now (`delete_trees` claims anyway)
        out.append(tree)
    return out


def taken(store: Store, run_id: str) -> bool:
    """Whether a live process holds run `run_id` now, finished runs too (`RunInfo.executing`
    does not say for them: a failed run being resumed): claimed, and given back at once."""
    try:
        lease = store.claim(run_id)
    except RunNotFound:  # deleted meanwhile: nobody's
        return False
    if lease is None:
        return True
    lease.release()
    return False


def delete_trees(
    store: Store,
    doomed: list[Tree],
    unreadable: set[str] | None = None,
    undeletable: dict[str, str] | None = None,
) -> list[Tree]:
    """Delete each tree whole; return the trees deleted.

    The store's bulk way first (`Store.delete_ended_trees`: the file store holds one lock
    for the whole store, deletes top-level runs before the runs below them, and reads only
    journals changed since they ended). Else run by run, the top-level run first: every run
    of a tree is claimed and read again. Either way a tree one of whose runs another
    process took meanwhile (a resume), or that changed since it was looked at, is left
    whole. So is a tree with a run that cannot be read: its id goes to `unreadable`.

    A run whose files cannot be deleted (`chattr +i`, a read-only file system: an
    `OSError` other than a missing file) stays, and so does every run below it; its id
    goes to `undeletable` with why ("Operation not permitted: a.jsonl"), and every other
    run is deleted. Such a tree is returned with the runs that went, if any (its top-level
    run went, then); the next `gc` tries the runs left again.
    """
    found: set[str] = set()
    failed: dict[str, str] = {}
    bulk = store.delete_ended_trees([tree.runs for tree in doomed], found, failed)
    if unreadable is not None:
        unreadable |= found
    if bulk is not None:  # the store's own way (the file store: one lock for all)
        deleted = [tree for tree, gone in zip(doomed, bulk, strict=True) if gone]
        if failed:
            deleted += [part for tree in doomed if (part := _part(tree, failed)) is not None]
    else:
        deleted = _one_by_one(store, doomed, unreadable, failed)
    if undeletable is not None:
        undeletable.update(failed)
    return deleted


def _part(tree: Tree, failed: dict[str, str]) -> Tree | None:
    """What went of a tree some of whose runs could not be deleted (those, and every run
    below them, stay): None when nothing did, or when none of its runs failed."""
    if not any(info.run_id in failed for info in tree.runs):
        return None
    kept: set[str] = set()
    for info in reversed(tree.runs):  # the top-level run first, each run before its children
        if info.run_id in failed or (info.parent is not None and info.parent in kept):
            kept.add(info.run_id)
    if tree.root.run_id in kept:
        return None
    return Tree(tree.root, [info for info in tree.runs if info.run_id not in kept])


def _one_by_one(
    store: Store, doomed: list[Tree], unreadable: set[str] | None, failed: dict[str, str]
) -> list[Tree]:
    """`delete_trees` without the store's bulk way: each run claimed and read again."""
    deleted = []
    for tree in doomed:
        leases = []
        try:
            if len(tree.runs) == 1:  # most trees: one run, deleted in one step
                try:
                    if store.delete_if_ended(tree.root.run_id, tree.root.updated_at):
                        deleted.append(tree)
                except IntemporalError:
                    raise
                except OSError as exc:
                    failed[tree.root.run_id] = _why(exc)
                continue
            for info in tree.runs:
                lease = store.claim(info.run_id)
                if lease is None:
                    break
                leases.append(lease)
                last = store.read(info.run_id)[-1]
                if last["type"] not in TERMINAL_EVENTS or last.get("ts", 0.0) != info.updated_at:
                    break
            else:
                skipped: set[str] = set()
                for info in reversed(tree.runs):  # a parent before the runs below it
                    if info.parent is not None and info.parent in skipped:
                        skipped.add(info.run_id)
                        continue
                    try:
                        store.delete(info.run_id)
                    except IntemporalError:
                        raise
                    except OSError as exc:
                        failed[info.run_id] = _why(exc)
                        skipped.add(info.run_id)
                part = _part(tree, failed) if skipped else tree
                if part is not None:
                    deleted.append(part)
        except RunNotFound:  # deleted meanwhile, by another gc
            continue
        except IntemporalError:  # damaged, or a link: left alone, and said
            if unreadable is not None:
                unreadable.add(info.run_id if len(tree.runs) > 1 else tree.root.run_id)
        finally:
            for lease in leases:
                lease.release()
    return deleted


def _why(exc: OSError) -> str:
    """Why a run's file could not be deleted: "Operation not permitted: a.jsonl"."""
    return f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)


def resumable(store: Store, info: RunInfo, failed: bool = False) -> bool:
    """Whether `resume --all` takes this run: unfinished and nobody's, or failed (or stuck)
    with `failed`.

    Unfinished and nobody's: pending, running with no owner (orphaned), or waiting with
    no live engine holding it. Child runs are left to their parent, which resumes them
    (a child whose parent is gone is taken like a top-level run).
    """
    if info.parent is not None and store.exists(info.parent):
        return False
    if info.status is RunStatus.FAILED or info.status is RunStatus.STUCK:
        wanted = failed
    elif info.status is RunStatus.PENDING:
        wanted = True
    elif info.status is RunStatus.WAITING:
        wanted = info.orphaned or info.owner is None
    else:
        wanted = info.status is RunStatus.RUNNING and info.orphaned
    if info.status is RunStatus.FAILED:  # being resumed elsewhere? `executing` does not say
        return wanted and not taken(store, info.run_id)
    return wanted and not info.executing
