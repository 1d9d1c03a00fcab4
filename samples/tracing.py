"""OpenTelemetry tracing: a run's spans, printed as a tree (needs `pip install intemporal[otel]`
and the OpenTelemetry SDK, `pip install opentelemetry-sdk`).

    python samples/tracing.py                    # journals go to a fresh temporary directory
    python samples/tracing.py --store .intemporal --console   # also each span as JSON

prints
    result: ['R-order-7', 'paid order-7', 'label order-7']
    handle request
      workflow checkout  [run_id=checkout-order-7 status=completed]  events: timer, child_started
        activity reserve  [seq=2 attempt=1]
          SELECT stock
        activity charge  [seq=3 attempt=1]  ERROR ConnectionError: gateway timeout
        activity charge  [seq=3 attempt=2]
        workflow ship  [run_id=checkout-order-7/4 status=completed]
          activity label  [seq=1 attempt=1]

A tracer provider is configured before the Engine is made: that is all it takes. The run
is started inside the caller's span, so its `workflow` span is that span's child; each
activity attempt is a span of its own, the failed one with error status; the child run
`ship` is a child span of its parent's. Point an OTLP exporter at Jaeger or Tempo instead
of the in-memory one to see the same tree there.
"""

from __future__ import annotations

import argparse
import tempfile

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import intemporal

_gateway_calls = 0


@intemporal.activity
def reserve(order: str) -> str:
    """Reserve the goods; the span opened here nests under this activity's span."""
    with trace.get_tracer("shop").start_as_current_span("SELECT stock"):
        return f"R-{order}"


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=3, initial_interval=0.01))
def charge(order: str) -> str:
    """Charge the card: the payment gateway times out once, then answers."""
    global _gateway_calls
    _gateway_calls += 1
    if _gateway_calls == 1:
        raise ConnectionError("gateway timeout")
    return f"paid {order}"


@intemporal.activity
def label(order: str) -> str:
    return f"label {order}"


@intemporal.workflow
def ship(order: str) -> str:
    """A child run: its span is a child of the parent run's span."""
    return label(order)


@intemporal.workflow
def checkout(order: str) -> list[str]:
    intemporal.sleep(0.01)  # a durable timer: a span event
    return [reserve(order), charge(order), ship(order)]


def print_tree(spans: list[ReadableSpan]) -> None:
    """Print spans indented under their parents, in start order."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans if s.context is not None}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        by_parent.setdefault(parent if parent in ids else None, []).append(span)

    def show(span: ReadableSpan, depth: int) -> None:
        attrs = dict(span.attributes or {})
        notes = [
            f"{k.removeprefix('intemporal.')}={attrs[k]}"
            for k in ("intemporal.seq", "intemporal.attempt")
            if k in attrs
        ]
        if span.name.startswith("workflow"):
            notes = [
                f"run_id={attrs.get('intemporal.run_id')}",
                f"status={attrs.get('intemporal.status')}",
            ]
        line = "  " * depth + span.name + (f"  [{' '.join(notes)}]" if notes else "")
        if span.status.status_code is trace.StatusCode.ERROR:
            line += f"  ERROR {span.status.description}"
        events = [e.name.removeprefix("intemporal.") for e in span.events if e.name != "exception"]
        if events:
            line += f"  events: {', '.join(events)}"
        print(line)
        for child in by_parent.get(span.context.span_id if span.context else None, []):
            show(child, depth + 1)

    for root in by_parent.get(None, []):
        show(root, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the store directory (default: a temp dir)")
    parser.add_argument("--console", action="store_true", help="also print each span as JSON")
    args = parser.parse_args()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if args.console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)  # before the Engine: it then traces

    store = args.store or tempfile.mkdtemp(prefix="intemporal-tracing-")
    request = trace.get_tracer("shop").start_as_current_span("handle request")
    with intemporal.Engine(store) as engine, request:
        result = engine.run(checkout, "order-7", run_id="checkout-order-7")
    print(f"result: {result}")
    print_tree(list(exporter.get_finished_spans()))


if __name__ == "__main__":
    main()
