"""OpenTelemetry's side of :mod:`haive_langgraph.db._observe`: the tracer and the
metric instruments of the providers the application set.

Nothing here imports OpenTelemetry before the application has: :func:`current`
looks the API up in ``sys.modules`` and reads the providers set there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

INSTRUMENTATION_NAME: Final = "haive_langgraph"


def error_type(exc: BaseException) -> str:
    """``error.type``: the exception's qualified class name."""
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


class Instruments:
    """The metric instruments of one meter provider."""

    def __init__(self, meter: Any) -> None:
        self.duration = meter.create_histogram(
            "haive.call.duration",
            unit="s",
            description="Duration of haive_langgraph database calls",
        )
        self.calls = meter.create_counter(
            "haive.calls", unit="{call}", description="haive_langgraph database calls"
        )
        self.rows = meter.create_counter(
            "haive.call.rows", unit="{row}", description="Rows returned or affected by calls"
        )
        self.bytes = meter.create_counter(
            "haive.call.bytes", unit="By", description="Binary bytes sent and received by calls"
        )

    def record(self, labels: dict[str, str], seconds: float, rows: int, size: int) -> None:
        self.duration.record(seconds, labels)
        self.calls.add(1, labels)
        if rows:
            self.rows.add(rows, labels)
        if size:
            self.bytes.add(size, labels)


class Telemetry:
    """The tracer and instruments of the providers set now (both may be None)."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from haive_langgraph import __version__

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = (
            None
            if tracer_provider is None
            else tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        )
        self.instruments = (
            None
            if meter_provider is None
            else Instruments(meter_provider.get_meter(INSTRUMENTATION_NAME, __version__))
        )
        self.client = SpanKind.CLIENT
        self.attach: Callable[[Any], Any] = context.attach
        self.detach: Callable[[Any], None] = context.detach
        self.in_context: Callable[[Any], Any] = trace.set_span_in_context
        self._status = Status
        self._error = StatusCode.ERROR

    def error_status(self, error: BaseException) -> Any:
        return self._status(self._error, error_type(error))


_current: Telemetry | None = None


def current() -> Telemetry | None:
    """The telemetry of the providers set now, or None when neither is set."""
    global _current
    modules = sys.modules
    trace_api = modules.get("opentelemetry.trace")
    metrics_api = modules.get("opentelemetry.metrics._internal")
    tracer_provider = None if trace_api is None else trace_api._TRACER_PROVIDER
    meter_provider = None if metrics_api is None else metrics_api._METER_PROVIDER
    if tracer_provider is None and meter_provider is None:
        return None
    now = _current
    if (
        now is None
        or now.tracer_provider is not tracer_provider
        or now.meter_provider is not meter_provider
    ):
        now = _current = Telemetry(tracer_provider, meter_provider)
    return now
