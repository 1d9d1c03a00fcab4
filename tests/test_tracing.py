"""OpenTelemetry tracing (`intemporal[otel]`): spans per run and per attempt, one trace per run.

Each test gives its engine its own SDK `TracerProvider` with an in-memory exporter
(`Engine(tracing=provider)`), so nothing here sets OpenTelemetry's global provider.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from process_helpers import run_and_kill, wait_until

import intemporal
from intemporal import Engine, FileStore, RetryPolicy, Store
from intemporal.tracing import tracing_observer


class Spans:
    """A provider whose finished spans are kept in memory, with ways to look at them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [s.name for s in self.all()]
        return found[0]


@pytest.fixture
def spans() -> Spans:
    return Spans()


@pytest.fixture
def traced(store: Store, spans: Spans) -> Iterator[Engine]:
    """An engine over each store that traces to `spans`."""
    with Engine(store, threads=4, tracing=spans.provider) as eng:
        yield eng


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes[key]


def trace_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.trace_id


_calls: dict[str, int] = {}
_gate: dict[str, threading.Event] = {}


@intemporal.activity
def tr_add(x: int) -> int:
    return x + 1


@intemporal.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.001, backoff=1.0))
def tr_flaky(key: str) -> str:
    _calls[key] = _calls.get(key, 0) + 1
    if _calls[key] <= 2:
        raise ConnectionError(f"flaky {_calls[key]}")
    return key


@intemporal.activity(retry=RetryPolicy(max_attempts=1))
def tr_fails_until_fixed(key: str) -> str:
    if key not in _gate:
        raise RuntimeError("not yet")
    return key


_user_tracer: list[trace.Tracer] = []


@intemporal.activity
def tr_opens_a_span(x: int) -> str:
    with _user_tracer[0].start_as_current_span("user work") as span:  # as an HTTP client would
        return format(span.get_span_context().trace_id, "032x")


@intemporal.workflow
def tr_two_steps(x: int) -> int:
    return tr_add(tr_add(x))


@intemporal.workflow
def tr_retrying(key: str) -> str:
    return tr_flaky(key)


@intemporal.workflow
def tr_half_done(key: str) -> str:
    tr_add(1)
    return tr_fails_until_fixed(key)


@intemporal.workflow
def tr_parent(x: int) -> int:
    return tr_two_steps(x) + 1


@intemporal.workflow
def tr_child_then_fail(key: str) -> str:
    tr_two_steps(1)
    return tr_fails_until_fixed(key)


@intemporal.workflow
def tr_user_span(x: int) -> str:
    return tr_opens_a_span(x)


@intemporal.activity(timeout=10)
def tr_current_with_timeout(x: int) -> int:
    return trace.get_current_span().get_span_context().span_id


@intemporal.workflow
def tr_elsewhere(x: int) -> list[int]:
    futures = [intemporal.submit(tr_add, i) for i in range(3)]
    intemporal.join_all(futures)
    return [tr_current_with_timeout(x)]


@intemporal.workflow
def tr_events(x: int) -> int:
    intemporal.sleep(0)
    intemporal.wait_for_signal("go")
    saga = intemporal.Saga()
    saga.add_compensation(tr_add, 0)
    saga.compensate()
    return x


def test_spans_nest_caller_workflow_activity_with_attributes(traced: Engine, spans: Spans) -> None:
    # Given a run started inside the caller's own span
    caller = spans.provider.get_tracer("test")
    with caller.start_as_current_span("caller") as mine:
        assert traced.run(tr_two_steps, 1, run_id="nest", queue="q1") == 3
    # Then: caller -> workflow tr_two_steps -> two activity spans, one trace
    wf = spans.one("workflow tr_two_steps")
    acts = spans.named("activity tr_add")
    assert len(acts) == 2
    assert parent_of(wf) == mine.get_span_context().span_id
    assert {parent_of(a) for a in acts} == {span_id(wf)}
    assert {trace_id(s) for s in spans.all()} == {mine.get_span_context().trace_id}
    assert wf.attributes is not None and acts[0].attributes is not None
    assert dict(wf.attributes) == {
        "intemporal.run_id": "nest",
        "intemporal.workflow": "tr_two_steps",
        "intemporal.queue": "q1",
        "intemporal.status": "completed",
    }
    assert sorted(attr(a, "intemporal.seq") for a in acts) == [1, 2]
    assert dict(acts[0].attributes) | {"intemporal.seq": 0} == {
        "intemporal.run_id": "nest",
        "intemporal.workflow": "tr_two_steps",
        "intemporal.activity": "tr_add",
        "intemporal.seq": 0,
        "intemporal.attempt": 1,
        "intemporal.status": "completed",
    }


def test_a_run_a_client_records_is_traced_under_the_clients_span(
    store: Store, spans: Spans
) -> None:
    # Given a client engine recording a run inside the caller's span, and a worker
    with Engine(store, worker=False, tracing=spans.provider) as client:
        with spans.provider.get_tracer("test").start_as_current_span("caller") as mine:
            client.start(tr_two_steps, 1, run_id="queued")
    assert [s.name for s in spans.all()] == ["caller"]  # the client executes nothing
    # When a worker executes it
    with Engine(store, tracing=spans.provider) as worker:
        assert worker.resume("queued").result(timeout=10) == 3
    # Then its span is the caller's child, in the caller's trace
    wf = spans.one("workflow tr_two_steps")
    assert parent_of(wf) == mine.get_span_context().span_id
    assert trace_id(wf) == mine.get_span_context().trace_id


def test_one_span_per_attempt_failed_ones_with_error_status(traced: Engine, spans: Spans) -> None:
    key = f"k-{uuid.uuid4().hex}"
    assert traced.run(tr_retrying, key, run_id="retry") == key
    attempts = sorted(spans.named("activity tr_flaky"), key=lambda s: attr(s, "intemporal.attempt"))
    assert [attr(s, "intemporal.attempt") for s in attempts] == [1, 2, 3]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    first_failure = attempts[0].events[0]
    assert first_failure.name == "exception"
    assert first_failure.attributes is not None
    assert first_failure.attributes["exception.type"] == "ConnectionError"
    assert first_failure.attributes["exception.message"] == "flaky 1"


def test_a_child_run_is_a_child_span_of_its_parent(traced: Engine, spans: Spans) -> None:
    assert traced.run(tr_parent, 1, run_id="fam") == 4
    parent, child = spans.one("workflow tr_parent"), spans.one("workflow tr_two_steps")
    assert parent_of(child) == span_id(parent)
    assert child.attributes is not None and child.attributes["intemporal.run_id"] == "fam/1"
    assert {parent_of(a) for a in spans.named("activity tr_add")} == {span_id(child)}
    assert len({trace_id(s) for s in spans.all()}) == 1
    started = [e for e in parent.events if e.name == "intemporal.child_started"]
    assert started and started[0].attributes is not None
    assert started[0].attributes["intemporal.child_run_id"] == "fam/1"


def test_a_span_an_activity_opens_is_the_activity_spans_child(traced: Engine, spans: Spans) -> None:
    _user_tracer[:] = [spans.provider.get_tracer("user")]
    traced.run(tr_user_span, 1, run_id="ctx")
    user, act = spans.one("user work"), spans.one("activity tr_opens_a_span")
    assert parent_of(user) == span_id(act)


def test_submitted_and_timed_activities_nest_under_their_run(traced: Engine, spans: Spans) -> None:
    # activities on the activity pool, and one on a thread of its own (its timeout)
    (seen,) = traced.run(tr_elsewhere, 1, run_id="pool")
    wf = spans.one("workflow tr_elsewhere")
    acts = spans.named("activity tr_add")
    assert len(acts) == 3 and {parent_of(a) for a in acts} == {span_id(wf)}
    timed = spans.one("activity tr_current_with_timeout")
    assert parent_of(timed) == span_id(wf) and seen == span_id(timed)


def test_timer_signal_and_compensation_are_span_events(traced: Engine, spans: Spans) -> None:
    traced.signal(traced.start(tr_events, 1, run_id="ev").run_id, "go", 1)
    assert traced.handle("ev").result(timeout=10) == 1
    names = [e.name for s in spans.named("workflow tr_events") for e in s.events]
    for wanted in ("intemporal.timer", "intemporal.signal_received", "intemporal.compensation"):
        assert names.count(wanted) == 1, names


@intemporal.workflow
def tr_sleeps(x: int) -> int:
    intemporal.sleep(3600)
    return x


def test_suspension_and_cancellation_are_span_events(traced: Engine, spans: Spans) -> None:
    # Given a run suspended in a long sleep
    handle = traced.start(tr_sleeps, 1, run_id="zz")
    wait_until(lambda: spans.named("workflow tr_sleeps"), what="the first execution's span")
    # When it is cancelled
    traced.cancel("zz")
    with pytest.raises(intemporal.Cancelled):
        handle.result(timeout=10)
    wait_until(lambda: len(spans.named("workflow tr_sleeps")) == 2, what="the second span")
    first, second = spans.named("workflow tr_sleeps")
    assert [e.name for e in first.events] == ["intemporal.timer", "intemporal.suspended"]
    assert first.attributes is not None and first.attributes["intemporal.status"] == "waiting"
    assert [e.name for e in second.events] == ["intemporal.resumed", "intemporal.cancelled"]
    assert second.attributes is not None and second.attributes["intemporal.status"] == "cancelled"


_entered, _release = threading.Event(), threading.Event()


@intemporal.activity
def tr_blocks(x: int) -> int:
    _entered.set()
    _release.wait(10)
    return x


@intemporal.workflow
def tr_cut(x: int) -> int:
    tr_blocks(x)
    return tr_add(x)


def test_an_execution_cut_by_shutdown_ends_its_span_as_stopped(store: Store, spans: Spans) -> None:
    # Given a run in an activity when its engine begins to close
    _entered.clear()
    _release.clear()
    engine = Engine(store, tracing=spans.provider)
    engine.start(tr_cut, 1, run_id="cut")
    assert _entered.wait(10)
    closer = threading.Thread(target=engine.close)
    closer.start()
    wait_until(lambda: engine.closing, what="the engine closing")
    # When the activity ends: the run stops at its next step, unrecorded
    _release.set()
    closer.join(10)
    # Then its span ended, marked stopped (not an error); the activity in flight completed
    wf = spans.one("workflow tr_cut")
    assert attr(wf, "intemporal.status") == "stopped"
    assert wf.status.status_code is StatusCode.UNSET
    assert attr(spans.one("activity tr_blocks"), "intemporal.status") == "completed"
    assert spans.named("activity tr_add") == []


def test_resuming_a_finished_run_emits_nothing(traced: Engine, spans: Spans) -> None:
    traced.run(tr_two_steps, 1, run_id="done")
    before = len(spans.all())
    assert traced.resume("done").result(timeout=10) == 3
    assert len(spans.all()) == before == 3


def test_resuming_a_half_done_run_traces_only_new_work(traced: Engine, spans: Spans) -> None:
    key = f"half-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError):
        traced.run(tr_half_done, key, run_id="half")
    assert len(spans.named("activity tr_add")) == 1
    failed = spans.one("workflow tr_half_done")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["intemporal.status"] == "failed"
    _gate[key] = threading.Event()
    assert traced.resume("half").result(timeout=10) == key
    # tr_add replayed: still one span; the failed activity ran again: two spans
    assert len(spans.named("activity tr_add")) == 1
    assert len(spans.named("activity tr_fails_until_fixed")) == 2
    first, second = spans.named("workflow tr_half_done")
    assert trace_id(first) == trace_id(second) and parent_of(first) == parent_of(second)


def test_a_finished_child_is_not_traced_again_when_its_parent_resumes(
    traced: Engine, spans: Spans
) -> None:
    key = f"child-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError):
        traced.run(tr_child_then_fail, key, run_id="pc")
    _gate[key] = threading.Event()
    assert traced.resume("pc").result(timeout=10) == key
    assert len(spans.named("workflow tr_child_then_fail")) == 2
    assert len(spans.named("workflow tr_two_steps")) == 1  # the child ran once: one span
    assert len(spans.named("activity tr_add")) == 2


def test_tracing_false_installs_nothing(store: Store, spans: Spans) -> None:
    with Engine(store, tracing=False) as eng:
        eng.run(tr_two_steps, 1, run_id="off")
        assert "headers" not in eng.history("off")[0]
    assert spans.all() == []
    assert tracing_observer(False) is None


_EXPORTER = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

class Lines(SpanExporter):
    def export(self, spans):
        with open(SPANS, "a") as out:
            for s in spans:
                out.write(json.dumps([s.name, format(s.context.trace_id, "032x")]) + "\\n")
        return SpanExportResult.SUCCESS

if IN_CHILD:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Lines()))
    trace.set_tracer_provider(provider)
"""


def test_one_trace_id_across_a_sigkill_and_a_resume_in_another_process(
    tmp_path: Path, spans: Spans
) -> None:
    # Given a run whose process is killed in its second activity
    body = (
        f"SPANS = {str(tmp_path / 'spans.jsonl')!r}\n"
        + _EXPORTER
        + textwrap.dedent(
            """
        @intemporal.activity
        def first(x):
            record("first")
            return x

        @intemporal.activity
        def second(x):
            record("second")
            hang()
            return x + 1

        @intemporal.workflow(name=WF_NAME)
        def WORKFLOW(x):
            return second(first(x))
        """
        )
    )
    crash = run_and_kill(tmp_path, body, lines=2, args=(1,))
    before = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    assert [name for name, _ in before] == ["activity first"]
    headers = crash.events()[0]["headers"]
    assert headers["traceparent"].split("-")[1] == before[0][1]
    # When another process resumes it
    with Engine(FileStore(crash.store), tracing=spans.provider) as eng:
        assert eng.resume(crash.run_id).result(timeout=20) == 2
    # Then its spans continue the same trace, and the replayed activity is not traced again
    assert sorted(s.name for s in spans.all()) == ["activity second", f"workflow {crash.wf_name}"]
    assert {format(trace_id(s), "032x") for s in spans.all()} == {before[0][1]}


def test_a_program_with_a_global_provider_traces_by_default(tmp_path: Path) -> None:
    # In a fresh interpreter: a provider set before the Engine is made is used; tracing=False wins
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import intemporal
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)

            @intemporal.activity
            def step(x):
                return x

            @intemporal.workflow
            def wf(x):
                return step(x)

            with intemporal.Engine({str(tmp_path / "store")!r}) as engine:
                engine.run(wf, 1)
            with intemporal.Engine({str(tmp_path / "store")!r}, tracing=False) as engine:
                engine.run(wf, 2)
            print(sorted(s.name for s in exporter.get_finished_spans()))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "['activity step', 'workflow wf']"


@pytest.mark.parametrize(
    "program,printed",
    [
        # OpenTelemetry never imported: the engine imports none of it
        ("intemporal.Engine(STORE); print('opentelemetry' in sys.modules)", "False"),
        # imported, but its provider is the default no-op proxy: no tracing observer
        (
            "from opentelemetry import trace; from intemporal.tracing import tracing_observer;"
            " print(tracing_observer(True))",
            "None",
        ),
    ],
)
def test_no_provider_configured_means_no_observer_and_no_import(
    tmp_path: Path, program: str, printed: str
) -> None:
    code = f"import sys, intemporal; STORE = {str(tmp_path / 's')!r}; {program}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == printed
