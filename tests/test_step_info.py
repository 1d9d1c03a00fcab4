"""What a step can see (issue 12, section 8): `intemporal.info()` inside an activity, and
`engine.get_event` on a run that does not exist yet.

| kind                                          | tests                                          |
| --------------------------------------------- | ---------------------------------------------- |
| info() in an activity: inline, timeout thread, | test_info_inside_an_activity_*                 |
| submitted, retried, resumed mid-retry          |                                                |
| info() in a workflow                          | test_info_inside_a_workflow_has_no_activity    |
| get_event before the run exists               | test_get_event_waits_for_a_run_that_*          |
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import intemporal
from intemporal import Engine, RunNotFound

SEEN: list[Any] = []
FLAKY: dict[str, int] = {}


@intemporal.activity(name="info.charge")
def charge(order: str) -> str:
    i = intemporal.info()
    SEEN.append(i)
    return f"{i.run_id}/{i.seq}/{i.attempt}"  # an idempotency key


@intemporal.activity(name="info.slow", timeout=5.0)
def charge_with_timeout(order: str) -> str:
    SEEN.append((intemporal.info(), intemporal.run_id(), threading.current_thread().name))
    return order


@intemporal.activity(
    name="info.flaky", retry=intemporal.RetryPolicy(max_attempts=3, initial_interval=0.001)
)
def flaky(order: str) -> int:
    SEEN.append(intemporal.info())
    FLAKY[order] = FLAKY.get(order, 0) + 1
    if FLAKY[order] < 3:
        raise ConnectionError("try again")
    return FLAKY[order]


@intemporal.workflow(name="info.wf")
def wf(order: str) -> list[Any]:
    first = intemporal.info()
    key = charge(order)
    slow = charge_with_timeout(order)
    again = intemporal.submit(charge, order).result()
    tries = flaky(order)
    return [first.activity, first.attempt, first.seq, key, slow, again, tries]


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()
    FLAKY.clear()


def test_info_inside_an_activity_names_the_run_the_activity_its_seq_and_attempt(
    engine: Engine,
) -> None:
    out = engine.run(wf, "o-1", run_id="info-1")

    # Inside the workflow: no activity
    assert out[:3] == [None, None, 0]
    # Inline, on the timeout thread, submitted, and on each retry
    inline, (timed, rid, thread), submitted, *retries = SEEN
    assert (inline.run_id, inline.workflow, inline.activity) == ("info-1", "info.wf", "info.charge")
    assert (inline.seq, inline.attempt, inline.parent) == (1, 1, None)
    assert out[3] == "info-1/1/1"
    assert (timed.activity, timed.seq, timed.attempt, rid) == ("info.slow", 2, 1, "info-1")
    assert thread.startswith("intemporal-activity")  # really on the timeout's own thread
    assert (submitted.activity, submitted.seq) == ("info.charge", 3) and out[5] == "info-1/3/1"
    assert [(r.activity, r.seq, r.attempt) for r in retries] == [
        ("info.flaky", 4, 1),
        ("info.flaky", 4, 2),
        ("info.flaky", 4, 3),
    ]


def test_info_inside_an_activity_keeps_counting_attempts_across_a_resume(engine: Engine) -> None:
    from helpers import clone_prefix

    engine.run(wf, "o-2", run_id="full")
    events = engine.history("full")
    # Cut after the first failed attempt of `flaky`: the resumed run goes on with attempt 2
    keep = next(i for i, e in enumerate(events) if e["type"] == "attempt_failed") + 1
    clone_prefix(engine.store, "full", "cut", keep=keep)
    SEEN.clear()
    FLAKY["o-2"] = 1

    engine.resume("cut").result(timeout=10)

    assert [(i.run_id, i.seq, i.attempt) for i in SEEN] == [("cut", 4, 2), ("cut", 4, 3)]


def test_info_inside_a_workflow_has_no_activity(engine: Engine) -> None:
    @intemporal.workflow(name="info.child")
    def child() -> Any:
        return intemporal.info()

    @intemporal.workflow(name="info.parent")
    def parent() -> Any:
        charge("x")
        return [intemporal.info(), child()]

    me, kid = engine.run(parent, run_id="fam")
    assert (me.run_id, me.workflow, me.activity, me.attempt, me.seq) == (
        "fam",
        "info.parent",
        None,
        None,
        1,
    )
    assert (kid.run_id, kid.parent, kid.activity) == ("fam/2", "fam", None)


def test_info_outside_a_run_raises() -> None:
    with pytest.raises(RuntimeError, match="inside a workflow or an activity"):
        intemporal.info()
    with pytest.raises(RuntimeError):  # an activity called plainly is not a step
        charge("plain")


# -- get_event before the run exists ------------------------------------------------------------
@intemporal.workflow(name="info.publisher")
def publisher(state: str) -> str:
    intemporal.set_event("state", state)
    return state


def _asking(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once `get_event` has looked for the run and not found it."""
    asked, real = threading.Event(), engine.history

    def spy(run_id: str) -> Any:
        try:
            return real(run_id)
        except RunNotFound:
            asked.set()
            raise

    monkeypatch.setattr(engine, "history", spy)
    return asked


@pytest.mark.parametrize("timeout", [10.0, None])
def test_get_event_waits_for_a_run_that_is_started_after_the_call(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    # Given a reader that subscribes before the run exists, and found no run
    asked = _asking(engine, monkeypatch)
    got: list[Any] = []
    reader = threading.Thread(
        target=lambda: got.append(engine.get_event("later", "state", timeout)), daemon=True
    )
    reader.start()
    assert asked.wait(10)
    assert reader.is_alive() and got == []  # still waiting: neither an error nor None

    # When the run is started afterwards
    engine.run(publisher, "ready", run_id="later")

    # Then the reader gets the value
    reader.join(15)
    assert got == ["ready"]


def test_get_event_of_a_run_that_never_comes_raises_run_not_found_after_the_timeout(
    engine: Engine,
) -> None:
    started = time.monotonic()
    with pytest.raises(RunNotFound):
        engine.get_event("never", "state", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
