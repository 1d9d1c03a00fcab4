"""Retries: the backoff formula, budgets, non-retryable errors, timeouts, and crashes mid-retry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Calls
from hypothesis import given, settings
from hypothesis import strategies as st
from process_helpers import journal_events, run_and_kill, wait_until

import intemporal
from intemporal import ActivityTimeout, Engine, FileStore, MemoryStore, RetryPolicy, RunStatus
from intemporal.store import Lease

FAST: dict[str, Any] = dict(initial_interval=0.01, backoff=2.0, max_interval=0.04)


class PaymentDeclined(ValueError):
    """A subclass of a non-retryable type: fails at once too."""


# -- the policy itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=60.0),
            [1, 2, 4, 8, 16, 32, 60, 60],
        ),
        (
            RetryPolicy(initial_interval=0.5, backoff=3.0, max_interval=5.0),
            [0.5, 1.5, 4.5, 5, 5, 5, 5, 5],
        ),
        (RetryPolicy(initial_interval=0.25, backoff=1.0, max_interval=9.0), [0.25] * 8),
        (RetryPolicy(initial_interval=0.0), [0.0] * 8),
    ],
)
def test_delay_is_min_of_initial_times_backoff_power_and_max(
    policy: RetryPolicy, expected: list[float]
) -> None:
    for n, want in enumerate(expected, 1):
        formula = min(policy.initial_interval * policy.backoff ** (n - 1), policy.max_interval)
        assert policy.delay(n) == pytest.approx(want)
        assert policy.delay(n) == pytest.approx(formula)


def test_policy_defaults_and_validation() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.initial_interval, p.backoff, p.max_interval, p.non_retryable) == (
        3,
        1.0,
        2.0,
        60.0,
        (),
    )
    for bad in (
        dict(max_attempts=0),
        dict(initial_interval=-1),
        dict(max_interval=-1),
        dict(backoff=0.5),
    ):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
    assert RetryPolicy(non_retryable=[KeyError]).non_retryable == (KeyError,)  # type: ignore[arg-type]


def test_activity_defaults_to_three_attempts_and_no_timeout() -> None:
    @intemporal.activity
    def plain() -> None: ...

    assert plain.retry == RetryPolicy()
    assert plain.timeout is None


# -- retrying inside a run -----------------------------------------------------------------


def _flaky(calls: Calls, succeed_on: int | None, exc: type[Exception] = OSError) -> Any:
    """A function failing with `exc("attempt n")` until attempt `succeed_on` (never if None)."""
    stamps: list[float] = []

    def flaky() -> str:
        stamps.append(time.monotonic())
        calls.hit("attempt")
        n = calls["attempt"]
        if succeed_on is None or n < succeed_on:
            raise exc(f"attempt {n}")
        return f"ok on {n}"

    flaky.stamps = stamps  # type: ignore[attr-defined]
    return flaky


def test_retries_until_success_with_backoff(engine: Engine) -> None:
    calls = Calls()
    fn = _flaky(calls, succeed_on=4)
    policy = RetryPolicy(max_attempts=5, **FAST)
    act = intemporal.activity(retry=policy)(fn)

    @intemporal.workflow
    def wf() -> str:
        return act()

    assert engine.run(wf, run_id="retried") == "ok on 4"
    assert calls["attempt"] == 4
    events = engine.history("retried")
    failed = [e for e in events if e["type"] == "attempt_failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]
    assert [e["retry_in"] for e in failed] == [policy.delay(1), policy.delay(2), policy.delay(3)]
    assert [e["error"]["message"] for e in failed] == ["attempt 1", "attempt 2", "attempt 3"]
    done = next(e for e in events if e["type"] == "activity_completed")
    assert done["attempts"] == 4
    # the engine really waited (lower bounds only: a busy machine may wait longer)
    gaps = [b - a for a, b in zip(fn.stamps, fn.stamps[1:], strict=False)]
    for n, gap in enumerate(gaps, 1):
        assert gap >= policy.delay(n) * 0.9, (n, gap)


def test_exhausted_attempts_fail_the_run_with_the_last_error(engine: Engine) -> None:
    calls = Calls()
    act = intemporal.activity(retry=RetryPolicy(max_attempts=3, **FAST))(_flaky(calls, None))

    @intemporal.workflow
    def wf() -> str:
        return act()

    h = engine.start(wf, run_id="exhausted")
    with pytest.raises(OSError, match=r"^attempt 3$"):
        h.result(timeout=10)
    assert calls["attempt"] == 3
    assert h.status() is RunStatus.FAILED
    types = [e["type"] for e in engine.history("exhausted")]
    assert types == [
        "run_started",
        "attempt_failed",
        "attempt_failed",
        "activity_failed",
        "run_failed",
    ]
    last = engine.history("exhausted")[3]
    assert last["attempts"] == 3 and last["error"]["message"] == "attempt 3"
    info = engine.get_run("exhausted")
    assert info.error is not None and "attempt 3" in info.error


def test_workflow_may_catch_an_exhausted_activity(engine: Engine) -> None:
    calls = Calls()
    act = intemporal.activity(retry=RetryPolicy(max_attempts=2, **FAST))(_flaky(calls, None))

    @intemporal.activity
    def fallback() -> str:
        return "fallback"

    @intemporal.workflow
    def wf() -> str:
        try:
            return act()
        except OSError as exc:
            return f"{fallback()} after {exc}"

    assert engine.run(wf) == "fallback after attempt 2"
    assert calls["attempt"] == 2


@pytest.mark.parametrize("exc", [ValueError, PaymentDeclined], ids=["listed", "subclass"])
def test_non_retryable_errors_fail_at_once(engine: Engine, exc: type[Exception]) -> None:
    calls = Calls()
    policy = RetryPolicy(max_attempts=5, non_retryable=(KeyError, ValueError), **FAST)
    act = intemporal.activity(retry=policy)(_flaky(calls, None, exc))

    @intemporal.workflow
    def wf() -> str:
        return act()

    with pytest.raises(exc, match="attempt 1"):
        engine.run(wf, run_id="fatal")
    assert calls["attempt"] == 1
    events = engine.history("fatal")
    assert [e["type"] for e in events] == ["run_started", "activity_failed", "run_failed"]
    assert events[1]["attempts"] == 1


def test_errors_not_listed_as_non_retryable_are_retried(engine: Engine) -> None:
    calls = Calls()
    policy = RetryPolicy(max_attempts=3, non_retryable=(ValueError,), **FAST)
    act = intemporal.activity(retry=policy)(_flaky(calls, 3, LookupError))

    @intemporal.workflow
    def wf() -> str:
        return act()

    assert engine.run(wf) == "ok on 3"


def test_max_attempts_one_means_no_retry(engine: Engine) -> None:
    calls = Calls()
    act = intemporal.activity(retry=RetryPolicy(max_attempts=1))(_flaky(calls, None))

    @intemporal.workflow
    def wf() -> str:
        return act()

    with pytest.raises(OSError, match="attempt 1"):
        engine.run(wf, run_id="once")
    assert calls["attempt"] == 1
    assert [e["type"] for e in engine.history("once")] == [
        "run_started",
        "activity_failed",
        "run_failed",
    ]


# -- timeouts ------------------------------------------------------------------------------


def test_timed_out_attempt_counts_as_a_failed_attempt(engine: Engine) -> None:
    calls = Calls()
    gate = threading.Event()

    @intemporal.activity(retry=RetryPolicy(max_attempts=3, **FAST), timeout=0.05)
    def slow_then_fast() -> str:
        calls.hit("attempt")
        if calls["attempt"] == 1:
            gate.wait(10)  # abandoned by the engine after 0.05 s
            return "too late"
        return "fast"

    @intemporal.workflow
    def wf() -> str:
        return slow_then_fast()

    try:
        assert engine.run(wf, run_id="timeout-retry") == "fast"
    finally:
        gate.set()
    events = engine.history("timeout-retry")
    failed = [e for e in events if e["type"] == "attempt_failed"]
    assert len(failed) == 1 and failed[0]["error"]["type"] == "ActivityTimeout"
    done = next(e for e in events if e["type"] == "activity_completed")
    assert done["attempts"] == 2 and done["result"] == "fast"


def test_timeout_on_every_attempt_fails_with_activity_timeout(engine: Engine) -> None:
    calls = Calls()
    gate = threading.Event()

    @intemporal.activity(retry=RetryPolicy(max_attempts=2, **FAST), timeout=0.03)
    def hangs() -> None:
        calls.hit("attempt")
        gate.wait(10)

    @intemporal.workflow
    def wf() -> None:
        hangs()

    try:
        h = engine.start(wf, run_id="timeouts")
        with pytest.raises(ActivityTimeout) as info:
            h.result(timeout=10)
    finally:
        gate.set()
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, intemporal.IntemporalError)
    assert calls["attempt"] == 2
    assert h.status() is RunStatus.FAILED
    err = engine.get_run("timeouts").error
    assert err is not None and err.startswith("ActivityTimeout")


def test_timeout_can_be_non_retryable(engine: Engine) -> None:
    calls = Calls()
    gate = threading.Event()
    policy = RetryPolicy(max_attempts=5, non_retryable=(TimeoutError,), **FAST)

    @intemporal.activity(retry=policy, timeout=0.03)
    def hangs() -> None:
        calls.hit("attempt")
        gate.wait(10)

    @intemporal.workflow
    def wf() -> None:
        hangs()

    try:
        with pytest.raises(ActivityTimeout):
            engine.run(wf)
    finally:
        gate.set()
    assert calls["attempt"] == 1


def test_timeout_does_not_affect_a_fast_activity(engine: Engine) -> None:
    @intemporal.activity(timeout=5.0)
    def quick(x: int) -> int:
        # runs with the run's context: nested activities run plainly, protocols resolve
        return x + 1

    @intemporal.workflow
    def wf() -> int:
        return quick(1)

    assert engine.run(wf) == 2


# -- the budget survives a crash -------------------------------------------------------------


def test_attempt_count_survives_an_engine_shutdown_during_backoff(store: intemporal.Store) -> None:
    calls = Calls()
    # attempt 1 waits 0.01 s, attempt 2 would wait 3 s: the engine stops during that wait
    policy = RetryPolicy(max_attempts=3, initial_interval=0.01, backoff=10_000.0, max_interval=3.0)
    act = intemporal.activity(retry=policy)(_flaky(calls, None))

    @intemporal.workflow
    def wf() -> str:
        return act()

    first = Engine(store, threads=2)
    try:
        first.start(wf, run_id="budget")

        def two_failures() -> bool:
            return sum(e["type"] == "attempt_failed" for e in store.read("budget")) == 2

        wait_until(two_failures, what="two failed attempts in the journal")
    finally:
        first.close()  # cuts the backoff short; the run stays resumable
    assert calls["attempt"] == 2
    # a 3 s backoff parks the run (WAITING) instead of holding its thread; either way it
    # is unfinished and nobody owns it any more
    info = store.summary("budget")
    assert info.status in (RunStatus.RUNNING, RunStatus.WAITING) and info.orphaned

    with Engine(store, threads=2) as second:
        with pytest.raises(OSError, match="attempt 3"):
            second.resume("budget").result(timeout=10)
    assert calls["attempt"] == 3  # one attempt left of three, not a fresh budget
    last = [e for e in store.read("budget") if e["type"] == "activity_failed"]
    assert len(last) == 1 and last[0]["attempts"] == 3


class _HookedLease(Lease):
    def __init__(self, inner: Lease, hook: Callable[[dict[str, Any]], None]) -> None:
        self.run_id, self._inner, self._hook = inner.run_id, inner, hook

    def append(self, event: dict[str, Any], sync: bool) -> None:
        self._inner.append(event, sync)
        self._hook(event)

    def release(self) -> None:
        self._inner.release()


class HookedStore(MemoryStore):
    """A memory store that calls `hook(event)` on the appending thread after each append."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[dict[str, Any]], None] = lambda event: None

    def claim(self, run_id: str, owner: str = "") -> Lease | None:
        lease = super().claim(run_id, owner)
        return None if lease is None else _HookedLease(lease, lambda e: self.hook(e))


def test_shutdown_between_a_failed_attempt_and_its_backoff_is_not_lost() -> None:
    # close() lands after `attempt_failed` is journaled but before the engine starts the
    # backoff wait: the wait must still be cut short (else close() blocks for the backoff).
    store = HookedStore()
    calls = Calls()
    act = intemporal.activity(retry=RetryPolicy(max_attempts=3, initial_interval=3.0))(
        _flaky(calls, None)
    )

    @intemporal.workflow
    def wf() -> str:
        return act()

    engine = Engine(store, threads=2)
    closer = threading.Thread(target=engine.close)

    def hook(event: dict[str, Any]) -> None:
        if event["type"] == "attempt_failed":
            closer.start()
            wait_until(lambda: engine.closing, what="close() to begin")

    store.hook = hook
    try:
        engine.start(wf, run_id="closing")
        wait_until(lambda: closer.ident is not None, what="the closer thread")
        closer.join(timeout=2.0)  # well before the 3 s backoff would end
        assert not closer.is_alive(), "close() waited for the 3 s backoff: shutdown ignored"
    finally:
        engine.close()
    assert calls["attempt"] == 1
    assert store.summary("closing").status is RunStatus.RUNNING  # resumable


RETRY_SCRIPT = """
# In the child the backoff before the attempt after the kill point is long (minutes), so
# the kill lands inside it; in the test process (resuming) every backoff is 0.01 s.
POLICY = (
    intemporal.RetryPolicy(max_attempts=3, initial_interval={initial}, backoff={backoff})
    if IN_CHILD
    else intemporal.RetryPolicy(max_attempts=3, initial_interval=0.01, backoff=1.0)
)


@intemporal.activity(retry=POLICY)
def flaky():
    record("attempt")
    raise ValueError("always down")


@intemporal.workflow(name=WF_NAME)
def wf():
    return flaky()


WORKFLOW = wf
"""


@pytest.mark.parametrize("failed_before_kill", [1, 2])
def test_attempt_count_survives_a_sigkill_during_backoff(
    tmp_path: Path, failed_before_kill: int
) -> None:
    def ready(store: Path, run_id: str) -> bool:
        events = journal_events(store, run_id)
        return sum(e["type"] == "attempt_failed" for e in events) >= failed_before_kill

    # kill after 1 failure: wait 600 s after attempt 1; after 2: 0.01 s, then 60 s (capped)
    initial, backoff = (600.0, 1.0) if failed_before_kill == 1 else (0.01, 100_000.0)
    body = RETRY_SCRIPT.format(initial=initial, backoff=backoff)
    crash = run_and_kill(tmp_path, body, lines=failed_before_kill, ready=ready)
    assert len(crash.lines()) == failed_before_kill
    with Engine(FileStore(crash.store), threads=2) as engine:
        with pytest.raises(ValueError, match="always down"):
            engine.resume(crash.run_id).result(timeout=10)
        assert engine.get_run(crash.run_id).status is RunStatus.FAILED
    assert len(crash.lines()) == 3  # never more than max_attempts in total
    events = crash.events()
    assert [e["attempt"] for e in events if e["type"] == "attempt_failed"] == [1, 2]
    assert [e["attempts"] for e in events if e["type"] == "activity_failed"] == [3]


def test_a_resumed_run_waits_out_the_rest_of_its_backoff(store: intemporal.Store) -> None:
    # Given a run whose attempt 1 failed and whose retry is due in 0.6 s, then stopped
    calls = Calls()
    policy = RetryPolicy(max_attempts=2, initial_interval=0.6, backoff=1.0)

    @intemporal.activity(name="backoff.flaky", retry=policy)
    def flaky() -> str:
        calls.hit("flaky")
        if calls["flaky"] == 1:
            raise ValueError("down")
        return "up"

    @intemporal.workflow(name="backoff.wf")
    def wf() -> str:
        return flaky()

    engine = Engine(store, threads=2)
    engine.start(wf, run_id="later")
    wait_until(lambda: calls["flaky"] == 1, what="the first attempt")
    engine.close()  # cuts the backoff short; the run stays resumable
    failed = next(e for e in engine.history("later") if e["type"] == "attempt_failed")
    # When it is resumed, then attempt 2 starts no earlier than the recorded retry time
    with Engine(store, threads=2) as again:
        assert again.resume("later").result(timeout=10) == "up"
        done = next(e for e in again.history("later") if e["type"] == "activity_completed")
    assert done["started"] >= failed["ts"] + failed["retry_in"] - 0.01


# -- any policy: `delay` never raises; nonsense is refused when the policy is made -----------
def test_delay_of_a_tiny_interval_at_a_huge_attempt_is_the_cap_not_an_overflow() -> None:
    policy = RetryPolicy(max_attempts=2000, initial_interval=0.001, max_interval=0.001)
    assert policy.delay(1025) == 0.001
    assert RetryPolicy(max_attempts=2000, initial_interval=0.002, max_interval=7.0).delay(2000) == 7
    assert (
        RetryPolicy(initial_interval=1e-300, max_interval=1e300, backoff=1.5).delay(10**9) == 1e300
    )


finite = st.floats(min_value=0, max_value=1e308, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    attempts=st.integers(min_value=1, max_value=10**6),
    initial=finite,
    cap=finite,
    backoff=st.floats(min_value=1, max_value=1e308, allow_nan=False, allow_infinity=False),
    attempt=st.integers(min_value=1, max_value=10**12),
)
def test_delay_never_raises_and_stays_within_zero_and_the_cap(
    attempts: int, initial: float, cap: float, backoff: float, attempt: int
) -> None:
    policy = RetryPolicy(
        max_attempts=attempts, initial_interval=initial, max_interval=cap, backoff=backoff
    )
    delay = policy.delay(attempt)
    assert 0 <= delay <= cap and delay == delay
    if attempt == 1:
        assert delay == min(initial, cap)


NONSENSE = [
    dict(max_attempts=0),
    dict(max_attempts=-3),
    dict(max_attempts=2.5),
    dict(max_attempts=True),
    dict(max_attempts="3"),
    dict(initial_interval=-0.001),
    dict(initial_interval=float("nan")),
    dict(initial_interval=float("inf")),
    dict(max_interval=float("nan")),
    dict(max_interval=float("inf")),
    dict(max_interval=-1),
    dict(backoff=float("nan")),
    dict(backoff=float("inf")),
    dict(backoff=0.999),
    dict(backoff=-2),
    dict(non_retryable=("ValueError",)),
    dict(non_retryable=(ValueError, 3)),
]


@pytest.mark.parametrize("fields", NONSENSE, ids=[repr(f) for f in NONSENSE])
def test_nonsense_policy_values_raise_value_error_when_the_policy_is_made(
    fields: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{next(iter(fields))}"):
        RetryPolicy(**fields)


@given(value=st.one_of(st.floats(max_value=-1e-9), st.just(float("nan"))))
def test_any_negative_or_nan_interval_is_refused(value: float) -> None:
    for field in ("initial_interval", "max_interval", "backoff"):
        with pytest.raises(ValueError):
            RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_a_single_non_retryable_class_is_taken_as_a_tuple_of_one() -> None:
    assert RetryPolicy(non_retryable=KeyError).non_retryable == (KeyError,)  # type: ignore[arg-type]


# -- every resume of a failed run retries the step that failed it ------------------------------
LOADER: dict[str, Any] = {"broken": True, "calls": Calls()}


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def load_once() -> str:
    LOADER["calls"].hit("load")
    if LOADER["broken"]:
        raise ConnectionError("the warehouse is down")
    return "loaded"


@intemporal.activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.001))
def load_twice() -> str:
    return load_once.fn()


@intemporal.activity
def prepare() -> str:
    LOADER["calls"].hit("prepare")
    return "ready"


@intemporal.workflow(name="retry.import_once")
def import_once() -> str:
    return load_once()


@intemporal.workflow(name="retry.import_after_prepare")
def import_after_prepare() -> str:
    return prepare() + " " + load_twice()


def test_each_resume_of_a_failed_run_retries_its_failed_step(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run failed by an activity with max_attempts=1
    monkeypatch.setitem(LOADER, "broken", True)
    calls = LOADER["calls"] = Calls()
    with pytest.raises(ConnectionError):
        engine.run(import_once, run_id="load")
    # When it is resumed while the cause persists, it fails again (the activity ran again)
    with pytest.raises(ConnectionError):
        engine.resume("load").result(timeout=10)
    assert calls["load"] == 2
    # And once the cause is fixed, the next resume runs it a third time and succeeds
    LOADER["broken"] = False
    assert engine.resume("load").result(timeout=10) == "loaded"
    assert calls["load"] == 3
    assert engine.get_run("load").status is RunStatus.COMPLETED


@pytest.mark.parametrize("failing_resumes", [2, 4])
def test_many_failing_resumes_each_retry_with_a_fresh_budget(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, failing_resumes: int
) -> None:
    monkeypatch.setitem(LOADER, "broken", True)
    calls = LOADER["calls"] = Calls()
    with pytest.raises(ConnectionError):
        engine.run(import_after_prepare, run_id="prep")
    for _ in range(failing_resumes):
        with pytest.raises(ConnectionError):
            engine.resume("prep").result(timeout=10)
    LOADER["broken"] = False
    assert engine.resume("prep").result(timeout=10) == "ready loaded"
    # two attempts per failing execution, one for the last; the completed step ran once
    assert calls["load"] == 2 * (1 + failing_resumes) + 1
    assert calls["prepare"] == 1
