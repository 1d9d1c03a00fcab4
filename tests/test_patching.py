"""Changing a workflow's code under runs in flight: `intemporal.patched()` and `deprecate_patch()`.

A run started by the old code (no patch) and parked on a signal, then resumed by the new
code, takes the old path; a run started by the new code takes the new one; `intemporal
replay` (here `verify_replay`) finds both deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import cli_on
from process_helpers import wait_until

import intemporal
from intemporal import Engine, RunStatus, Store
from intemporal.verify import verify_replay

calls: list[str] = []


@intemporal.activity
def charge(order: str) -> str:
    calls.append(f"charge {order}")
    return "charged-v1"


@intemporal.activity
def charge_v2(order: str) -> str:
    calls.append(f"charge_v2 {order}")
    return "charged-v2"


@intemporal.activity
def ship(order: str) -> str:
    calls.append(f"ship {order}")
    return "shipped"


VERSION = {"code": "old"}  # which body `checkout` runs: the deploy, in one process


def _old(order: str) -> list[str]:
    paid = charge(order)
    approval = intemporal.wait_for_signal("approve")
    return [paid, approval, ship(order)]


def _new(order: str) -> list[str]:
    paid = charge_v2(order) if intemporal.patched("charge-v2") else charge(order)
    approval = intemporal.wait_for_signal("approve")
    return [paid, approval, ship(order)]


@intemporal.workflow(name="patching.checkout")
def checkout(order: str) -> list[str]:
    return (_new if VERSION["code"] == "new" else _old)(order)


@pytest.fixture(autouse=True)
def _old_code() -> Iterator[None]:
    VERSION["code"] = "old"
    calls.clear()
    yield
    VERSION["code"] = "old"


def _park(engine: Engine, run_id: str) -> None:
    engine.start(checkout, run_id, run_id=run_id)
    wait_until(lambda: engine.get_run(run_id).status is RunStatus.WAITING)


def test_an_old_run_takes_the_old_path_and_a_new_run_the_new_one(store: Store) -> None:
    # Given a run started by the old code, parked on a signal
    with Engine(store) as engine:
        _park(engine, "old-run")
    # When the code is deployed with the patch, and the old run is resumed and a new one started
    VERSION["code"] = "new"
    with Engine(store) as engine:
        old = engine.resume("old-run")
        engine.start(checkout, "new-run", run_id="new-run")
        wait_until(lambda: engine.get_run("new-run").status is RunStatus.WAITING)
        old.signal("approve", "yes")
        engine.signal("new-run", "approve", "ok")
        # Then the old run replays the old path; the new run takes the new one
        assert old.result(timeout=10) == ["charged-v1", "yes", "shipped"]
        assert engine.handle("new-run").result(timeout=10) == ["charged-v2", "ok", "shipped"]
        old_events = engine.history("old-run")
        new_events = engine.history("new-run")
    assert calls.count("charge old-run") == 1  # never charged twice, never charged by v2
    assert "charge_v2 old-run" not in calls
    assert not any(e["type"] == "patch" for e in old_events)
    markers = [e for e in new_events if e["type"] == "patch"]
    assert [(m["patch_id"], m["at"]) for m in markers] == [("charge-v2", 0)]
    # And `intemporal replay` finds both deterministic with today's code, naming the path taken
    ok_old, said_old = verify_replay(store, "old-run")
    ok_new, said_new = verify_replay(store, "new-run")
    assert ok_old and "patch 'charge-v2': old path" in said_old, said_old
    assert ok_new and "patch 'charge-v2': new path" in said_new, said_new


def test_a_patch_after_the_journal_end_takes_the_new_path(store: Store) -> None:
    # Given an old run parked before the point the patch changes
    @intemporal.workflow(name="patching.late")
    def late(order: str) -> str:
        approval = intemporal.wait_for_signal("approve")
        if VERSION["code"] == "new" and intemporal.patched("ship-v2"):
            return f"{approval}: v2"
        return f"{approval}: {ship(order)}"

    with Engine(store) as engine:
        engine.start(late, "o", run_id="late")
        wait_until(lambda: engine.get_run("late").status is RunStatus.WAITING)
    # When the new code resumes it: the journal never went past the patch
    VERSION["code"] = "new"
    with Engine(store) as engine:
        handle = engine.resume("late")
        handle.signal("approve", "yes")
        # Then the new path is taken, and recorded
        assert handle.result(timeout=10) == "yes: v2"
    assert not calls  # the old `ship` step never ran


def test_a_finished_run_replays_the_old_path_and_deprecate_patch_records_nothing(
    tmp_path: Path,
) -> None:
    # Given a run finished by the old code
    with Engine(tmp_path / "s") as engine:
        h = engine.start(checkout, "done", run_id="done")
        wait_until(lambda: engine.get_run("done").status is RunStatus.WAITING)
        h.signal("approve", "y")
        h.result(timeout=10)
    # Then the patched code replays it deterministically (the old path)
    VERSION["code"] = "new"
    replayed = cli_on(tmp_path / "s")("replay", "done")
    assert replayed.exit_code == 0, replayed.output
    assert "deterministic" in replayed.stdout and "patch 'charge-v2': old path" in replayed.stdout

    # And once no old run remains, deprecate_patch keeps the new path and writes no marker
    @intemporal.workflow(name="patching.deprecated")
    def deprecated(order: str) -> str:
        intemporal.deprecate_patch("charge-v2")
        assert intemporal.patched("charge-v2")
        return charge_v2(order)

    with Engine(tmp_path / "s") as engine:
        assert engine.run(deprecated, "d", run_id="dep") == "charged-v2"
        assert [e["type"] for e in engine.history("dep")][1:] == [
            "activity_completed",
            "run_completed",
        ]


def test_patched_outside_a_workflow_is_the_current_code_and_ids_are_checked() -> None:
    assert intemporal.patched("anything") is True
    intemporal.deprecate_patch("anything")
    with pytest.raises(TypeError):
        intemporal.patched("")
    with pytest.raises(TypeError):
        intemporal.patched(3)  # type: ignore[arg-type]
