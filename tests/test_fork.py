"""`engine.fork(run_id, from_step, new_run_id=None)`: repair a failed run with fixed code.

The fork's journal is the source's up to the step (its child runs reused, not run again);
it executes on from there with today's code; the source is untouched.
"""

from __future__ import annotations

import collections

import pytest

import intemporal
from intemporal import Engine, RunConflict, RunNotFound, RunStatus, Store

ran: collections.Counter[str] = collections.Counter()
BUGGY = {"on": True}


@intemporal.activity
def reserve(order: str) -> str:
    ran["reserve"] += 1
    return f"reserved {order}"


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def charge(order: str) -> str:
    ran["charge"] += 1
    if BUGGY["on"]:
        raise ValueError("bug: amount is None")
    return f"charged {order}"


@intemporal.activity
def ship(order: str) -> str:
    ran["ship"] += 1
    return f"shipped {order}"


@intemporal.workflow(name="fork.pack")
def pack(order: str) -> str:
    ran["pack"] += 1
    return f"packed {order}"


@intemporal.workflow(name="fork.order")
def order_flow(order: str) -> list[str]:
    steps = [reserve(order), pack(order)]  # steps 1 and 2 (a child run)
    steps.append(charge(order))  # step 3
    steps.append(ship(order))
    return steps


def test_a_failed_run_forked_from_its_failed_step_completes(store: Store) -> None:
    ran.clear()
    BUGGY["on"] = True
    with Engine(store) as engine:
        # Given a run that failed at step 3 on a bug
        with pytest.raises(ValueError, match="bug"):
            engine.run(order_flow, "o-1", run_id="src")
        source = engine.history("src")
        assert [e["seq"] for e in source if e["type"] == "activity_failed"] == [3]
        # When the bug is fixed and the run forked from the failed step
        BUGGY["on"] = False
        handle = engine.fork("src", 3, new_run_id="src-fixed")
        # Then the fork completes, and nothing before step 3 ran again (the child reused)
        assert handle.result(timeout=10) == [
            "reserved o-1",
            "packed o-1",
            "charged o-1",
            "shipped o-1",
        ]
        assert ran == {"reserve": 1, "pack": 1, "charge": 2, "ship": 1}
        assert engine.get_run("src-fixed/2").status is RunStatus.COMPLETED
        # And the source is untouched; the fork records where it came from
        assert engine.history("src") == source
        assert engine.get_run("src").status is RunStatus.FAILED
        first = engine.history("src-fixed")[0]
        assert first["forked_from"] == {"run_id": "src", "step": 3}
        assert "parent" not in first
        # And forking again to the same id is the same fork; another run there is a conflict
        assert engine.fork("src", 3, new_run_id="src-fixed").result(timeout=5)[-1] == "shipped o-1"
        with pytest.raises(RunConflict):
            engine.fork("src", 2, new_run_id="src-fixed")


def test_a_fork_from_step_one_reruns_everything_and_bad_steps_are_refused(store: Store) -> None:
    ran.clear()
    BUGGY["on"] = False
    with Engine(store) as engine:
        engine.run(order_flow, "o-2", run_id="done")
        again = engine.fork("done", 1)
        assert again.run_id != "done"
        assert again.result(timeout=10)[0] == "reserved o-2"
        assert ran["reserve"] == 2 and ran["pack"] == 2
        for bad in (0, 6):
            with pytest.raises(ValueError, match="between 1 and 5"):
                engine.fork("done", bad)
        with pytest.raises(TypeError):
            engine.fork("done", "2")  # type: ignore[arg-type]
        with pytest.raises(RunNotFound):
            engine.fork("nobody", 1)
