"""OpenTelemetry tracing: an observer that turns runs into spans (`pip install intemporal[otel]`).

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())     # before the Engine is made
    with intemporal.Engine() as engine:             # tracing=True: on when a provider is set
        engine.run(checkout, order)

Each execution of a run is a span `workflow <name>`; each activity attempt a child span
`activity <name>` (a failed attempt has error status and the exception recorded). Timers,
signals received, cancellation, suspension, compensation and child runs started are span
events. Replayed steps emit nothing: a resumed run traces only the work it does now.

One trace per run, across crashes and hosts: the trace context current where a run is
created (the caller's span, the parent workflow's span for a child, or a fresh trace) is
journaled in its first event as W3C `traceparent` (`headers`), and every execution of the
run, in any process, is a child of it. Code in an activity sees the activity's span as
current, so spans it opens (auto-instrumented HTTP, SQL) nest under it.

The `opentelemetry` package is imported only by a program that already imported it: an
engine made where no tracer provider is configured installs no observer and pays nothing.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Mapping
from typing import Any

from . import observe as ob

RUN_ID = "intemporal.run_id"
WORKFLOW = "intemporal.workflow"
ACTIVITY = "intemporal.activity"
SEQ = "intemporal.seq"
ATTEMPT = "intemporal.attempt"
QUEUE = "intemporal.queue"
STATUS = "intemporal.status"


def tracing_observer(setting: Any) -> ob.Observer | None:
    """The observer `Engine(tracing=setting)` installs, or None when there is nothing to trace.

    `setting`: True (OpenTelemetry's global tracer provider, if the program configured one:
    OpenTelemetry not imported, or its provider the default no-op proxy, gives None),
    False (None), or a `TracerProvider` to use instead of the global one (tests).
    """
    if setting is False or setting is None:
        return None
    if setting is not True:
        return Tracing(setting)
    if "opentelemetry.trace" not in sys.modules:
        return None  # nobody configured a provider without importing the API: stay lazy
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return Tracing(provider)


class _Open:
    """One execution's open spans: the workflow's, and each attempt in flight by step."""

    __slots__ = ("attempts", "ended", "span", "token", "workflow")

    def __init__(self, span: Any, token: Any, workflow: str) -> None:
        self.span, self.token, self.workflow = span, token, workflow
        self.ended = False  # finished or suspended: it has its status
        self.attempts: dict[int, tuple[Any, Any]] = {}


class Tracing(ob.Observer):
    """Spans for runs and activity attempts on `provider` (an OpenTelemetry `TracerProvider`)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace, self._context = trace, context
        self._tracer = provider.get_tracer("intemporal")
        self._propagator = TraceContextTextMapPropagator()
        self._open: dict[str, _Open] = {}  # run id -> its execution here
        self._lock = threading.Lock()

    # -- the trace context journaled with a run --------------------------------------------
    def headers(self, rec: ob.RunCreated) -> Mapping[str, str] | None:
        trace = self._trace
        ctx = None
        if not trace.get_current_span().get_span_context().is_valid:
            fresh = trace.SpanContext(
                trace_id=random.getrandbits(128) or 1,
                span_id=random.getrandbits(64) or 1,
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(fresh))
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, ctx)
        return carrier

    # -- executions ----------------------------------------------------------------------------
    def _begin(
        self, run_id: str, workflow: str, queue: str | None, headers: Mapping[str, str]
    ) -> Any:
        parent = self._propagator.extract(dict(headers)) if headers else None
        attributes = {RUN_ID: run_id, WORKFLOW: workflow}
        if queue:
            attributes[QUEUE] = queue
        span = self._tracer.start_span(f"workflow {workflow}", parent, attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        with self._lock:
            self._open[run_id] = _Open(span, token, workflow)
        return span

    def on_run_started(self, rec: ob.RunStarted) -> None:
        self._begin(rec.run_id, rec.workflow, rec.queue, rec.headers)

    def on_run_resumed(self, rec: ob.RunResumed) -> None:
        span = self._begin(rec.run_id, rec.workflow, rec.queue, rec.headers)
        span.add_event("intemporal.resumed", {"intemporal.after": rec.after})

    def on_run_suspended(self, rec: ob.RunSuspended) -> None:
        attrs: dict[str, Any] = {"intemporal.reason": rec.reason}
        if rec.until is not None:
            attrs["intemporal.until"] = rec.until
        self._event(rec.run_id, "intemporal.suspended", attrs)
        self._status(rec.run_id, "waiting")

    def on_run_finished(self, rec: ob.RunFinished) -> None:
        run = self._status(rec.run_id, rec.status.value)
        if run is None:
            return
        if rec.error is not None and rec.status.value == "failed":
            self._failed(run.span, rec.error)

    def on_run_stopped(self, rec: ob.RunStopped) -> None:
        with self._lock:
            run = self._open.pop(rec.run_id, None)
        if run is None:
            return
        # Stopped unrecorded (an error, or its engine shutting down): it resumes later.
        spans = [span for span, _ in run.attempts.values()]  # in flight: never finished here
        for span in spans if run.ended else [*spans, run.span]:
            span.set_attribute(STATUS, "stopped")
            if rec.error is not None:
                self._failed(span, rec.error)
        for span in spans:
            span.end()
        run.span.end()
        self._context.detach(run.token)  # the thread's context as it was before the run

    # -- activity attempts ----------------------------------------------------------------------
    def on_activity_started(self, rec: ob.ActivityStarted) -> None:
        if rec.replaying:
            return
        run = self._open.get(rec.run_id)
        attributes = {
            RUN_ID: rec.run_id,
            ACTIVITY: rec.activity,
            SEQ: rec.seq,
            ATTEMPT: rec.attempt,
        }
        parent = None
        if run is not None:
            attributes[WORKFLOW] = run.workflow
            parent = self._trace.set_span_in_context(run.span)  # a submitted one runs elsewhere
        span = self._tracer.start_span(f"activity {rec.activity}", parent, attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        if run is not None:
            run.attempts[rec.seq] = (span, token)
        else:
            span.end()
            self._context.detach(token)

    def on_attempt_failed(self, rec: ob.AttemptFailed) -> None:
        if not rec.replaying:
            self._end_attempt(rec.run_id, rec.seq, rec.error, "retrying")

    def on_activity_finished(self, rec: ob.ActivityFinished) -> None:
        if not rec.replaying:
            self._end_attempt(rec.run_id, rec.seq, rec.error, "completed")

    def _end_attempt(self, run_id: str, seq: int, error: BaseException | None, status: str) -> None:
        run = self._open.get(run_id)
        opened = run.attempts.pop(seq, None) if run is not None else None
        if opened is None:
            return  # cancelled during a retry's backoff: its last attempt span already ended
        span, token = opened
        span.set_attribute(STATUS, status if error is None or status == "retrying" else "failed")
        if error is not None:
            self._failed(span, error)
        span.end()
        self._context.detach(token)

    # -- span events ------------------------------------------------------------------------------
    def on_timer_started(self, rec: ob.TimerStarted) -> None:
        if not rec.replaying:
            attrs = {
                SEQ: rec.seq,
                "intemporal.seconds": rec.seconds,
                "intemporal.fire_at": rec.fire_at,
            }
            self._event(rec.run_id, "intemporal.timer", attrs)

    def on_signal_received(self, rec: ob.SignalReceived) -> None:
        if not rec.replaying:
            attrs = {"intemporal.signal": rec.name, "intemporal.signal_id": rec.signal_id or ""}
            self._event(rec.run_id, "intemporal.signal_received", attrs)

    def on_cancelled(self, rec: ob.CancelDelivered) -> None:
        if not rec.replaying:
            self._event(rec.run_id, "intemporal.cancelled", {SEQ: rec.seq})

    def on_compensation(self, rec: ob.Compensation) -> None:
        if not rec.replaying:
            attrs = {"intemporal.compensations": list(rec.compensations)}
            self._event(rec.run_id, "intemporal.compensation", attrs)

    def on_child_started(self, rec: ob.ChildStarted) -> None:
        if not rec.replaying:
            attrs = {"intemporal.child_run_id": rec.child_id, WORKFLOW: rec.workflow}
            self._event(rec.run_id, "intemporal.child_started", attrs)

    def _event(self, run_id: str, name: str, attrs: dict[str, Any]) -> None:
        run = self._open.get(run_id)
        if run is not None:
            run.span.add_event(name, attrs)

    def _status(self, run_id: str, status: str) -> _Open | None:
        run = self._open.get(run_id)
        if run is not None:
            run.span.set_attribute(STATUS, status)
            run.ended = True
        return run

    def _failed(self, span: Any, error: BaseException) -> None:
        status = self._trace.StatusCode.ERROR
        span.record_exception(error)
        span.set_status(self._trace.Status(status, f"{type(error).__name__}: {error}"))
