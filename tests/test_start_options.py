"""`engine.start`/`run` at run time: workflow keywords pass through, the engine's options are
keyword-only, only workflows start runs, an async generator is refused, `delay` keeps a run pending."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_on

import intemporal
from intemporal import Engine, RunStatus


@intemporal.activity
def charge(order_id: str, amount: int) -> str:
    return f"charged {amount} for {order_id}"


@intemporal.workflow
def approve(order: str, approval_timeout: float = 60.0, *, note: str = "") -> dict[str, Any]:
    return {"order": order, "approval_timeout": approval_timeout, "note": note}


@intemporal.workflow
def takes_anything(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


@intemporal.workflow
def stamped() -> float:
    return intemporal.now().timestamp()


def plain_function(order: str) -> str:
    return order


# -- workflow keywords ------------------------------------------------------------------------
def test_workflow_keywords_pass_straight_through(engine: Engine) -> None:
    # When a workflow's keyword arguments are given as keywords of run/start
    result = engine.run(approve, "o-1", approval_timeout=5, note="rush")
    handle = engine.start(approve, order="o-2", approval_timeout=7, run_id="o-2")

    # Then the workflow gets them, beside the engine's own options
    assert result == {"order": "o-1", "approval_timeout": 5, "note": "rush"}
    assert handle.result(timeout=5) == {"order": "o-2", "approval_timeout": 7, "note": ""}
    assert handle.run_id == "o-2"


def test_kwargs_option_keeps_working_and_merges(engine: Engine) -> None:
    assert engine.run(approve, "o", kwargs={"approval_timeout": 3}) == {
        "order": "o",
        "approval_timeout": 3,
        "note": "",
    }
    # kwargs= is how a workflow gets a keyword that has an engine option's name
    assert engine.run(takes_anything, 1, kwargs={"run_id": "mine", "timeout": 2}, x=3) == [
        [1],
        {"run_id": "mine", "timeout": 2, "x": 3},
    ]


def test_a_keyword_given_twice_is_a_type_error(engine: Engine) -> None:
    with pytest.raises(TypeError, match="'note' given both directly and in kwargs="):
        engine.start(approve, "o", note="a", kwargs={"note": "b"})
    assert engine.list_runs() == []  # nothing recorded


def test_keyword_arguments_are_replayed_on_resume(engine: Engine) -> None:
    # Given a run started with a keyword argument, resumed from its journal
    engine.run(approve, "o", approval_timeout=9, run_id="kw")
    # Then its recorded arguments hold the keyword
    first = engine.history("kw")[0]
    assert first["kwargs"] == {"approval_timeout": 9}


# -- only workflows start runs ----------------------------------------------------------------
@pytest.mark.parametrize("call", ["start", "run"])
def test_an_activity_cannot_start_a_run(engine: Engine, call: str) -> None:
    with pytest.raises(TypeError) as caught:
        getattr(engine, call)(charge, "o", 1)
    message = str(caught.value)
    assert "takes a @intemporal.workflow" in message
    assert "the activity 'charge'" in message
    assert engine.list_runs() == []


def test_a_plain_function_cannot_start_a_run(engine: Engine) -> None:
    with pytest.raises(TypeError, match="the plain function 'plain_function': decorate it"):
        engine.start(plain_function, "o")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"takes a @intemporal\.workflow, not int 3"):
        engine.start(3)  # type: ignore[call-overload]
    assert engine.list_runs() == []


def test_cli_start_of_an_activity_says_what_it_is(tmp_path: Path) -> None:
    # Given a module defining an activity and a workflow
    (tmp_path / "shop_flows.py").write_text(
        "import intemporal\n\n"
        "@intemporal.activity\ndef charge(order_id: str) -> str:\n    return order_id\n\n"
        "def helper(order_id: str) -> str:\n    return order_id\n"
    )
    cli = cli_on(tmp_path / "store")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        # When `intemporal start` is pointed at the activity, or at a plain function
        activity = cli("start", "shop_flows:charge", '["o"]')
        plain = cli("start", "shop_flows:helper", '["o"]')
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shop_flows", None)

    # Then it exits 1 with one line naming it and what is expected, and records nothing
    assert activity.exit_code == 1, activity.output
    assert "shop_flows:charge is the activity 'charge'" in activity.output
    assert "takes a @intemporal.workflow" in activity.output
    assert "Traceback" not in activity.output
    assert plain.exit_code == 1
    assert "shop_flows:helper is the plain function 'helper'" in plain.output
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*.jsonl"))


# -- async def --------------------------------------------------------------------------------
def test_async_generator_is_refused_by_the_decorators() -> None:
    # async def functions are workflows and activities (tests/test_async.py); a generator is not
    async def pages(url: str):  # type: ignore[no-untyped-def]
        yield url

    with pytest.raises(TypeError, match="async generator: an activity returns one value"):
        intemporal.activity(pages)
    with pytest.raises(TypeError, match="async generator: a workflow returns one value"):
        intemporal.workflow(pages)


# -- delay, priority, timeout -----------------------------------------------------------------
def test_delay_keeps_the_run_pending_until_due(engine: Engine) -> None:
    # Given a run started with a delay
    started = time.time()
    handle = engine.start(stamped, delay=1.2, run_id="later")

    # Then it is pending (nothing ran) until the delay passes, then it runs
    assert engine.get_run("later").status is RunStatus.PENDING
    assert [e["type"] for e in engine.history("later")] == ["run_started"]
    ran_at = handle.result(timeout=10)
    assert ran_at - started >= 1.2
    assert engine.history("later")[0]["start_at"] >= started + 1.2


def test_delay_takes_a_timedelta_and_survives_a_new_engine(store: intemporal.Store) -> None:
    # Given a delayed run recorded by an engine that closes before it is due
    with Engine(store, threads=2) as first:
        first.start(stamped, delay=timedelta(seconds=1.5), run_id="d")
    due = store.read("d")[0]["start_at"]
    # When another engine recovers it
    with Engine(store, threads=2) as second:
        handles = second.recover()
        assert [h.run_id for h in handles] == ["d"]
        assert second.get_run("d").status is RunStatus.PENDING
        # Then it still starts only when due
        assert handles[0].result(timeout=10) >= due


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"delay": -1}, ValueError),
        ({"delay": float("nan")}, ValueError),
        ({"delay": "soon"}, TypeError),
        ({"priority": "high"}, TypeError),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    engine: Engine, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        engine.start(stamped, **options)
    assert engine.list_runs() == []


def test_priority_and_timeout_are_taken(engine: Engine) -> None:
    engine.run(stamped, priority=0, timeout=None)  # the defaults are accepted
    engine.run(stamped, priority=5, timeout=30)  # tests/test_queues.py, tests/test_run_timeout.py
    assert len(engine.list_runs()) == 2


def test_a_delayed_run_can_be_cancelled_before_it_starts(engine: Engine) -> None:
    # Given a run that starts in an hour
    handle = engine.start(stamped, delay=3600, run_id="never")
    # When it is cancelled
    handle.cancel()
    # Then it ends cancelled at once, its body never run
    with pytest.raises(intemporal.Cancelled):
        handle.result(timeout=5)
    assert engine.get_run("never").status is RunStatus.CANCELLED
    assert [e["type"] for e in engine.history("never")] == ["run_started", "run_cancelled"]
