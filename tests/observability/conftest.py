"""Fixtures: OpenTelemetry's SDK with in-memory exporters, set as the global providers.

A process can set each global provider once; the fixture sets them for the
tests that ask for it and puts the globals back afterwards (as
OpenTelemetry's own test utilities do), so that the rest of the session runs
with no provider, the way an application without telemetry does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ._savers import close_saver, open_saver


@dataclass
class Telemetry:
    """The SDK's in-memory span exporter and metric reader, and their providers."""

    spans: Any
    metrics: Any
    tracer_provider: Any
    meter_provider: Any


def reset_globals() -> None:
    """No global tracer or meter provider (OpenTelemetry's own tests reset them so)."""
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()


@pytest.fixture(scope="module")
def telemetry_providers() -> Iterator[Telemetry]:
    pytest.importorskip("opentelemetry.sdk", reason="pip install opentelemetry-sdk (test extra)")
    from opentelemetry import metrics, trace
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


@pytest.fixture(params=["sync", "async"])
async def saver_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def saver(saver_kind: str, dsn: str) -> AsyncIterator[Any]:
    s = await open_saver(saver_kind, dsn)
    try:
        yield s
    finally:
        await close_saver(s)
