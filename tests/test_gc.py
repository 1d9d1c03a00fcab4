"""`gc` never deletes what an unfinished run still needs: runs go by whole trees.

| kind                                   | right                                                    |
| -------------------------------------- | -------------------------------------------------------- |
| finished child of a waiting parent     | kept; after the signal the child is not run again         |
| finished child of a crashed parent     | kept (SIGKILLed process); the resume does not run it again|
| finished child of a failed parent      | kept: resuming the parent reads it                        |
| finished parent with children, grand-  | all removed together, the child folders gone; `--dry-run`|
| children                               | lists every one and deletes nothing                       |
| `--status S`                           | selects by the top-level run; a child never goes alone    |
| `--older-than AGE`                     | counts from the last run of the tree to end               |
| a run another process owns             | kept                                                      |

The rule is `intemporal.housekeeping`, over `Store` calls only: each test of the rule runs
on the file store and on the memory store.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from helpers import Calls, cli_on
from process_helpers import journal_events, run_and_kill, wait_until
from typer.testing import Result

import intemporal
from intemporal import Engine, FileStore, RetryPolicy, RunStatus, Store
from intemporal.housekeeping import collectable, delete_trees

CALLS = Calls()
GO = {"fail": False}


@pytest.fixture(autouse=True)
def _reset() -> None:
    global CALLS
    CALLS = Calls()
    GO["fail"] = False


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def charge() -> str:
    CALLS.hit("charge")
    return "charged"


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def explode() -> str:
    CALLS.hit("explode")
    raise ValueError("declined")


@intemporal.workflow(name="gc.pay")
def pay() -> str:
    return charge()


@intemporal.workflow(name="gc.order")
def order() -> str:
    r = pay()  # child run "o/1" completes
    intemporal.wait_for_signal("go")  # the parent waits; gc runs now
    return r


@intemporal.workflow(name="gc.grandchild")
def grandchild(x: int) -> int:
    charge()
    return x


@intemporal.workflow(name="gc.middle")
def middle(x: int) -> int:
    return grandchild(x) + grandchild(x + 1)


@intemporal.workflow(name="gc.family")
def family(x: int) -> int:
    return middle(x) + len(pay())


@intemporal.workflow(name="gc.refused")
def refused() -> str:
    return explode()


@intemporal.workflow(name="gc.forgiving")
def forgiving() -> str:
    try:
        refused()  # a failed child, handled
    except ValueError:
        return "handled"
    return "unreachable"


@intemporal.workflow(name="gc.paid_then_failed")
def paid_then_failed() -> str:
    r = pay()
    if GO["fail"]:
        explode()
    return r


def gc(store: Path, *args: str) -> Result:
    result = cli_on(store)("gc", *args)
    assert result.exit_code == 0, result.output
    return result


def removed(result: Result) -> int:
    last = result.stdout.strip().splitlines()[-1]
    return int(last.split()[-2])


def ids(store: Store) -> set[str]:
    return set(store.run_ids())


# -- the example: a waiting parent keeps its finished child ------------------------------
def test_gc_keeps_the_finished_child_of_a_waiting_parent(tmp_path: Path) -> None:
    home = tmp_path / "store"
    with Engine(str(home), threads=2) as engine:
        # Given a parent whose child run completed, now waiting for a signal
        handle = engine.start(order, run_id="o")
        wait_until(lambda: engine.get_run("o").status is RunStatus.WAITING, what="o to wait")
        assert engine.get_run("o/1").status is RunStatus.COMPLETED

        # When gc runs with an age every run passes
        assert removed(gc(home, "--older-than", "0s")) == 0
        assert "o/1" not in gc(home, "--older-than", "0s", "--dry-run").stdout

        # Then the signal finishes the parent with the child's recorded result: charged once
        handle.signal("go")
        assert handle.result(timeout=10) == "charged"
    assert CALLS["charge"] == 1
    assert ids(FileStore(home)) == {"o", "o/1"}


def test_the_rule_keeps_children_of_unfinished_parents_on_every_store(store: Store) -> None:
    with Engine(store, threads=2) as engine:
        handle = engine.start(order, run_id="o")
        wait_until(lambda: engine.get_run("o").status is RunStatus.WAITING, what="o to wait")
        assert collectable(store, older_than=0) == []
        handle.signal("go")
        assert handle.result(timeout=10) == "charged"
        # Finished now: the parent and its child go together
        [tree] = collectable(store, older_than=0)
        assert [i.run_id for i in tree.runs] == ["o/1", "o"]
        assert delete_trees(store, [tree]) == [tree]
    assert ids(store) == set()


# -- a crashed parent keeps its finished child ------------------------------------------------------
CRASH_SCRIPT = """
@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def charge():
    record("charge")
    return "charged"


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def ship(x):
    record("ship")
    hang()   # the process is killed here, after the child finished
    return x + " and shipped"


@intemporal.workflow(name=WF_NAME + "-pay")
def pay():
    return charge()


@intemporal.workflow(name=WF_NAME)
def order():
    return ship(pay())


WORKFLOW = order
"""


def test_gc_keeps_the_finished_child_of_a_crashed_parent(tmp_path: Path) -> None:
    # Given a process SIGKILLed inside the parent's step that follows a completed child
    crash = run_and_kill(tmp_path, CRASH_SCRIPT, lines=2, run_id="o")
    assert crash.lines() == ["charge", "ship"]
    assert journal_events(crash.store, "o/1")[-1]["type"] == "run_completed"

    # When gc runs
    assert removed(gc(crash.store, "--older-than", "0s")) == 0

    # Then the resumed parent replays the child's result: charge ran once
    with Engine(FileStore(crash.store), threads=2) as engine:
        assert engine.resume("o").result(timeout=10) == "charged and shipped"
    assert collections.Counter(crash.lines()) == {"charge": 1, "ship": 2}

    # And once the parent finished, both go
    assert removed(gc(crash.store, "--older-than", "0s")) == 2
    assert list(crash.store.glob("o*")) == []


# -- a finished tree goes whole --------------------------------------------------------------------
def test_a_finished_parent_goes_with_its_children_and_grandchildren(tmp_path: Path) -> None:
    home = tmp_path / "store"
    with Engine(str(home), threads=2) as engine:
        assert engine.run(family, 1, run_id="fam") == 1 + 2 + len("charged")
        engine.run(pay, run_id="alone")
    tree = {"fam", "fam/1", "fam/1/1", "fam/1/2", "fam/2"}
    assert ids(FileStore(home)) == tree | {"alone"}

    dry = gc(home, "--older-than", "0s", "--dry-run").stdout
    assert removed(gc(home, "--older-than", "0s", "--dry-run")) == 6
    for rid in tree | {"alone"}:
        assert f"would remove {rid} (" in dry
    assert "child of fam/1" in dry and ids(FileStore(home)) == tree | {"alone"}

    assert removed(gc(home, "--older-than", "0s")) == 6
    assert ids(FileStore(home)) == set()
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == []


def test_a_failed_parent_keeps_its_children_until_it_goes_itself(tmp_path: Path) -> None:
    home = tmp_path / "store"
    GO["fail"] = True
    with Engine(str(home), threads=2) as engine:
        with pytest.raises(ValueError):
            engine.run(paid_then_failed, run_id="pf")
        # `--status completed` matches the child, not its top-level run: nothing goes
        assert removed(gc(home, "--older-than", "0s", "--status", "completed")) == 0
        # the failed parent is resumed: its child's result is replayed, not charged again
        GO["fail"] = False
        assert engine.resume("pf").result(timeout=10) == "charged"
    assert CALLS["charge"] == 1
    assert removed(gc(home, "--older-than", "0s", "--status", "completed")) == 2


def test_status_selects_by_the_top_level_run_and_a_child_never_goes_alone(
    tmp_path: Path,
) -> None:
    home = tmp_path / "store"
    with Engine(str(home), threads=2) as engine:
        assert engine.run(forgiving, run_id="fg") == "handled"
        with pytest.raises(ValueError):
            engine.run(refused, run_id="lone-failure")
    assert FileStore(home).summary("fg/1").status is RunStatus.FAILED

    # The failed child of a completed parent is not taken by --status failed
    failed = gc(home, "--older-than", "0s", "--status", "failed")
    assert removed(failed) == 1  # the failed top-level run only
    assert ids(FileStore(home)) == {"fg", "fg/1"}

    # --status completed takes the completed parent, and its failed child with it, once old
    assert removed(gc(home, "--older-than", "1d", "--status", "completed")) == 0
    assert removed(gc(home, "--older-than", "0s", "--status", "completed")) == 2
    assert ids(FileStore(home)) == set()


def test_older_than_counts_from_the_last_run_of_the_tree(store: Store) -> None:
    with Engine(store, threads=2) as engine:
        engine.run(family, 2, run_id="fam")
    infos = {rid: store.summary(rid) for rid in store.run_ids()}
    first_end = min(i.updated_at for i in infos.values())
    last_end = infos["fam"].updated_at
    assert last_end == max(i.updated_at for i in infos.values())

    # A cutoff between the first child's end and the parent's keeps the whole tree
    between = (first_end + last_end) / 2
    assert collectable(store, older_than=0, now=between) == []
    assert collectable(store, older_than=3600, now=last_end + 3599) == []
    [tree] = collectable(store, older_than=3600, now=last_end + 3600)
    assert {i.run_id for i in tree.runs} == set(infos)


def test_a_tree_with_a_run_owned_by_a_process_is_kept(store: Store) -> None:
    with Engine(store, threads=2) as engine:
        engine.run(family, 3, run_id="fam")
    lease = store.claim("fam/1/2")  # e.g. a resume of it, in flight
    assert lease is not None
    try:
        assert collectable(store, older_than=0) == []
    finally:
        lease.release()
    [tree] = collectable(store, older_than=0)
    # Claimed between the look and the deletion: the tree is left whole
    lease = store.claim("fam")
    assert lease is not None
    try:
        assert delete_trees(store, [tree]) == []
    finally:
        lease.release()
    assert len(ids(store)) == 5
    assert delete_trees(store, [tree]) == [tree] and ids(store) == set()


def test_a_child_whose_parent_is_gone_is_a_top_level_run(store: Store) -> None:
    with Engine(store, threads=2) as engine:
        engine.run(family, 4, run_id="fam")
    store.delete("fam")  # e.g. removed by hand
    roots = sorted(tree.root.run_id for tree in collectable(store, older_than=0))
    assert roots == ["fam/1", "fam/2"]
