"""Fixtures: OpenTelemetry's SDK with in-memory exporters, set as the global providers.

A process can set each global provider once; the fixture sets them for the
tests that ask for it and puts the globals back afterwards (as
OpenTelemetry's own test utilities do), so that the rest of the session runs
with no provider, the way an application without telemetry does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("opentelemetry.sdk", reason="pip install opentelemetry-sdk (the test extra)")

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.util._once import Once


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider


def reset_globals() -> None:
    """No global tracer or meter provider (OpenTelemetry's own tests reset them so)."""
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()


@pytest.fixture(scope="module")
def telemetry_providers() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    # Delta temporality: each read holds what happened since the one before.
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta})
    meter_provider = MeterProvider(metric_readers=[reader])
    reset_globals()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Telemetry(spans, reader, tracer_provider, meter_provider)
    finally:
        reset_globals()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def telemetry(telemetry_providers: Telemetry) -> Telemetry:
    """The in-memory exporters, emptied for this test (metrics: read and dropped, as they are deltas)."""
    telemetry_providers.spans.clear()
    telemetry_providers.metrics.get_metrics_data()
    return telemetry_providers
