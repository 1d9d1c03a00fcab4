"""What tracing costs per activity: `python bench/tracing_cost.py [--k 2000] [--reps 7]`.

Runs one workflow of K activities on a memory store (no disk: only the engine's own work
is measured), REPS times per setting, and prints the median per activity for:
  off           Engine(tracing=False)
  unconfigured  Engine() in a program with OpenTelemetry imported but no provider set
                (the no-op proxy: no tracing observer is installed)
  sdk           Engine(tracing=TracerProvider()) with the SDK, spans made and dropped
                (no span processor: the SDK's cost without an exporter's)
  sdk+export    the same with a SimpleSpanProcessor and an exporter that drops each span
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import intemporal


@intemporal.activity
def step(i: int) -> int:
    return i


@intemporal.workflow
def many(k: int) -> int:
    total = 0
    for i in range(k):
        total += step(i)
    return total


class Drop(SpanExporter):
    """An exporter that drops what it is given (the cost of the export path, no I/O)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_activity(tracing: Any, k: int, reps: int) -> float:
    """Median seconds per activity over `reps` runs of `many(k)`."""
    times = []
    with intemporal.Engine("memory:", tracing=tracing, durability="flush") as engine:
        engine.run(many, 10)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            engine.run(many, k)
            times.append((time.perf_counter() - t0) / k)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2000, help="activities per run")
    parser.add_argument("--reps", type=int, default=7, help="runs per setting")
    args = parser.parse_args()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    exporting = TracerProvider()
    exporting.add_span_processor(SimpleSpanProcessor(Drop()))
    settings = {
        "off": False,
        "unconfigured": True,
        "sdk": TracerProvider(),
        "sdk+export": exporting,
    }
    base = None
    for name, setting in settings.items():
        t = per_activity(setting, args.k, args.reps)
        base = base if base is not None else t
        print(f"{name:13} {t * 1e6:7.2f} µs per activity  ({t / base:.2f}x off)")


if __name__ == "__main__":
    main()
