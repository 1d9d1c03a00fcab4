"""`heartbeat()` from threads an activity starts: never a silent no-op.

| where heartbeat() runs                                     | after a cancel                     |
| ---------------------------------------------------------- | ---------------------------------- |
| the activity's own thread (and its timeout thread)         | raises `Cancelled`                 |
| a helper thread / pool thread run under                    | raises `Cancelled`                 |
| `contextvars.copy_context().run` taken on the activity's    |                                    |
| a plain `threading.Thread` or `ThreadPoolExecutor` thread  | raises `IntemporalError` (before   |
| without that context                                       | and after the cancel), naming the  |
|                                                            | fix                                |
| a workflow, or an activity called plainly outside any run  | does nothing                       |
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from process_helpers import wait_until

import intemporal
from intemporal import Cancelled, Engine, IntemporalError, RetryPolicy, RunStatus

STARTED = threading.Event()  # the helper is running
CANCEL_SENT = threading.Event()  # the test has cancelled the run
SEEN: list[BaseException] = []  # what the helper's heartbeat raised


@pytest.fixture(autouse=True)
def _reset() -> None:
    STARTED.clear()
    CANCEL_SENT.clear()
    SEEN.clear()


def helper_work() -> str:
    """Work in slices, heartbeating between them, once the run was cancelled."""
    STARTED.set()
    CANCEL_SENT.wait(10)
    try:
        for _ in range(500):
            intemporal.heartbeat()
            threading.Event().wait(0.01)
    except BaseException as exc:
        SEEN.append(exc)
        raise
    return "never cancelled"


def in_thread(fn: Callable[[], str], copied: bool) -> str:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    if copied:
        ctx = contextvars.copy_context()
        thread = threading.Thread(target=ctx.run, args=(target,))
    else:
        thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return str(box["value"])


def in_pool(fn: Callable[[], str], copied: bool) -> str:
    with ThreadPoolExecutor(2) as pool:
        if copied:
            return pool.submit(contextvars.copy_context().run, fn).result()
        return pool.submit(fn).result()


HELPERS = {"thread": in_thread, "pool": in_pool}


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def crunch(how: str, copied: bool) -> str:
    return HELPERS[how](helper_work, copied)


@intemporal.workflow(name="hb.crunching")
def crunching(how: str, copied: bool) -> str:
    return crunch(how, copied)


def start_and_cancel(engine: Engine, how: str, copied: bool) -> intemporal.RunHandle:
    handle = engine.start(crunching, how, copied, run_id=f"hb-{how}-{copied}")
    assert STARTED.wait(10)
    handle.cancel()
    CANCEL_SENT.set()
    return handle


@pytest.mark.parametrize("how", ["thread", "pool"])
def test_heartbeat_in_a_helper_under_the_copied_context_raises_cancelled(
    engine: Engine, how: str
) -> None:
    # Given an activity whose helper thread runs under contextvars.copy_context().run
    handle = start_and_cancel(engine, how, copied=True)

    # Then the helper's heartbeat raises Cancelled, and the run ends cancelled
    with pytest.raises(Cancelled):
        handle.result(timeout=10)
    assert [type(e) for e in SEEN] == [Cancelled]
    assert handle.status() is RunStatus.CANCELLED


@pytest.mark.parametrize("how", ["thread", "pool"])
def test_heartbeat_in_a_helper_without_the_context_raises_a_clear_error(
    engine: Engine, how: str
) -> None:
    # Given an activity whose helper thread (a plain Thread, a pool it creates) heartbeats
    handle = start_and_cancel(engine, how, copied=False)

    # Then heartbeat never returns quietly: it raises an error naming the fix
    with pytest.raises(IntemporalError) as caught:
        handle.result(timeout=10)
    assert len(SEEN) == 1 and SEEN[0] is caught.value
    message = str(caught.value)
    assert "activity's own thread" in message and "contextvars.copy_context().run" in message
    assert handle.status() is not RunStatus.COMPLETED


def test_the_error_comes_at_the_first_heartbeat_not_only_after_a_cancel(engine: Engine) -> None:
    CANCEL_SENT.set()  # the helper starts heartbeating at once; nobody cancels
    with pytest.raises(IntemporalError, match="copy_context"):
        engine.run(crunching, "thread", False, run_id="uncancelled")


@intemporal.activity
def on_its_own_thread() -> str:
    intemporal.heartbeat()
    return "ok"


def test_heartbeat_in_an_activity_called_plainly_does_nothing_while_an_engine_works(
    engine: Engine,
) -> None:
    # Given an engine in this process executing an activity right now
    handle = engine.start(crunching, "thread", True, run_id="busy")
    assert STARTED.wait(10)
    try:
        # Then an activity called plainly (a test, a REPL) still heartbeats quietly
        assert on_its_own_thread() == "ok"
    finally:
        handle.cancel()
        CANCEL_SENT.set()
    with pytest.raises(Cancelled):
        handle.result(timeout=10)


def test_heartbeat_with_no_activity_executing_does_nothing() -> None:
    def quiet() -> str:
        intemporal.heartbeat()
        return "quiet"

    assert in_thread(quiet, copied=False) == "quiet"


def test_heartbeat_on_the_timeout_thread_raises_cancelled(engine: Engine) -> None:
    @intemporal.activity(retry=RetryPolicy(max_attempts=1), timeout=30)
    def timed() -> str:
        return helper_work()

    @intemporal.workflow(name="hb.timed")
    def timed_wf() -> str:
        return timed()

    handle = engine.start(timed_wf, run_id="timed")
    assert STARTED.wait(10)
    handle.cancel()
    CANCEL_SENT.set()
    with pytest.raises(Cancelled):
        handle.result(timeout=10)
    wait_until(lambda: handle.status() is RunStatus.CANCELLED, what="the run to be cancelled")
