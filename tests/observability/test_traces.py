"""Spans and metrics of real calls, collected with OpenTelemetry's in-memory exporters.

``test_graph_invoke_trace`` runs one turn of a LangGraph chat graph on
``PostgresCheckpointer`` (sync and async) inside a span of the test's own
and checks the spans our calls made: their names, their parent, their
attributes (the tenant only as its hash). The trace it captures is the one
``docs/observability.md`` shows; the test checks that the doc's listing
still matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage

pytest.importorskip("opentelemetry.sdk", reason="pip install opentelemetry-sdk (test extra)")

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.db import stats
from haive_langgraph.db._driver import Op, Step

from .conftest import Telemetry

TENANT = "acme-tenant-4711"
DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def tenant_hash(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


def render(spans: Any) -> list[str]:
    """The trace as the doc shows it: one line per span, children indented, in start order."""
    by_parent: dict[Any, list[Any]] = {}
    ids = {s.context.span_id for s in spans}
    for s in sorted(spans, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: Any, depth: int) -> None:
        for s in by_parent.get(parent, []):
            a = s.attributes or {}
            ms = (s.end_time - s.start_time) / 1e6
            detail = f"  {ms:.1f} ms"
            if "haive.operation" in a:
                detail += (
                    f"  statements={a['haive.statements']} rows={a['haive.rows']} "
                    f"bytes={a['haive.bytes']} tenant_hash={a.get('haive.tenant_hash', '-')}"
                )
            lines.append(f"{'  ' * depth}{s.name}{detail}")
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def shape(lines: list[str]) -> list[str]:
    """What must not drift between the doc and a run: names and nesting, statements,
    rows (in any order of siblings: LangGraph writes in the background)."""
    return sorted(re.sub(r" bytes=\d+|  [\d.]+ ms", "", line) for line in lines)


@pytest.fixture(params=["sync", "async"])
async def saver(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[Any]:
    if request.param == "sync":
        cp: Any = await asyncio.to_thread(PostgresCheckpointer, dsn, tenant_id=TENANT)
        await asyncio.to_thread(cp.setup)
        try:
            yield cp
        finally:
            await asyncio.to_thread(cp.close)
    else:
        async with AsyncPostgresCheckpointer.from_conn_string(dsn, tenant_id=TENANT) as acp:
            await acp.setup()
            yield acp


async def invoke(saver: Any, graph: Any, inputs: Any, config: Any) -> Any:
    if isinstance(saver, AsyncPostgresCheckpointer):
        return await graph.ainvoke(inputs, config)
    return await asyncio.to_thread(graph.invoke, inputs, config)


async def test_graph_invoke_trace(saver: Any, telemetry: Telemetry) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"trace-{type(saver).__name__}"}}
    tracer = trace.get_tracer("tests")
    await invoke(saver, graph, {"messages": [HumanMessage("hello", id="h0")]}, config)
    telemetry.spans.clear()
    with tracer.start_as_current_span("graph.invoke") as root:
        await invoke(saver, graph, {"messages": [HumanMessage("and again", id="h1")]}, config)
    spans = telemetry.spans.get_finished_spans()
    ours = [s for s in spans if s.name != "graph.invoke"]
    names = sorted(s.name for s in ours)
    # One turn: read the thread; store the input's checkpoint; each step's writes
    # and checkpoint (LangGraph writes them in the background: their order varies).
    assert names == [
        "checkpointers.get_tuple",
        "checkpointers.put",
        "checkpointers.put",
        "checkpointers.put",
        "checkpointers.put_writes",
        "checkpointers.put_writes",
    ], "\n".join(render(spans))
    for s in ours:
        assert s.parent is not None and s.parent.span_id == root.get_span_context().span_id
        a = dict(s.attributes or {})
        assert a["db.system.name"] == "postgresql"
        assert a["haive.component"] == "checkpointers"
        assert s.name == f"checkpointers.{a['haive.operation']}"
        assert a["haive.tenant_hash"] == tenant_hash(TENANT)
        assert a["haive.statements"] >= 1
        assert a["haive.duration_ms"] > 0
        assert s.status.status_code is StatusCode.UNSET
        assert s.kind is trace.SpanKind.CLIENT
        for value in a.values():
            assert TENANT not in str(value)
    get_tuple = next(s for s in ours if s.name == "checkpointers.get_tuple")
    assert get_tuple.attributes["haive.rows"] >= 1
    assert get_tuple.attributes["haive.bytes"] > 0  # the stored channel values came back
    puts = [s for s in ours if s.name == "checkpointers.put"]
    assert sum(s.attributes["haive.bytes"] for s in puts) > 0  # the new messages went out

    lines = render(spans)
    assert shape(lines) == shape(doc_trace()), "\n".join(lines)


def doc_trace() -> list[str]:
    """The trace listing in docs/observability.md (the block after <!-- trace -->)."""
    text = DOC.read_text()
    block = text.split("<!-- trace -->", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return block.rstrip("\n").splitlines()


def test_metrics(dsn: str, telemetry: Telemetry) -> None:
    saver = PostgresCheckpointer(dsn, tenant_id=TENANT)
    try:
        saver.setup()
        telemetry.metrics.get_metrics_data()
        config = {"configurable": {"thread_id": "metrics"}}
        graph = chat_graph().compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage("hi", id="m0")]}, config)
        with pytest.raises(psycopg.errors.DivisionByZero):
            saver._source.run(failing_op)
    finally:
        saver.close()
    points = metric_points(telemetry)
    calls = points["haive.calls"]
    ok = {(a["haive.operation"], v) for a, v in calls if a["haive.outcome"] == "ok"}
    assert ("get_tuple", 1) in ok and ("put", 3) in ok and ("put_writes", 2) in ok
    failed = [(a, v) for a, v in calls if a["haive.outcome"] == "error"]
    assert failed == [
        (
            {
                "haive.component": "db",
                "haive.operation": "failing",
                "haive.outcome": "error",
                "error.type": "psycopg.errors.DivisionByZero",
            },
            1,
        )
    ]
    durations = points["haive.call.duration"]
    assert sum(count for _, count in durations) == sum(v for _, v in calls)
    assert any(a["haive.operation"] == "put" for a, _ in points["haive.call.bytes"])
    for name, data in points.items():
        for attributes, _ in data:
            assert set(attributes) <= {
                "haive.component",
                "haive.operation",
                "haive.outcome",
                "error.type",
            }, name
            assert TENANT not in str(attributes)


def failing_op() -> Op[Any]:
    yield Step("SELECT 1 / 0")


def metric_points(telemetry: Telemetry) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Each metric's data points: (attributes, value), the count for a histogram."""
    data = telemetry.metrics.get_metrics_data()
    out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "haive_langgraph":
                continue
            for metric in scope.metrics:
                out[metric.name] = [
                    (dict(p.attributes or {}), getattr(p, "count", None) or p.value)
                    for p in metric.data.data_points
                ]
    return out


async def test_error_span_and_stats(saver: Any, telemetry: Telemetry) -> None:
    before = stats(saver)
    if isinstance(saver, AsyncPostgresCheckpointer):
        with pytest.raises(psycopg.errors.DivisionByZero):
            await saver._source.run(failing_op)
    else:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await asyncio.to_thread(saver._source.run, failing_op)
    (span,) = telemetry.spans.get_finished_spans()
    assert span.name == "db.failing"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "psycopg.errors.DivisionByZero"
    assert [e.name for e in span.events] == ["exception"]
    after = stats(saver)
    assert (after.calls, after.errors) == (before.calls + 1, before.errors + 1)
