"""The official LangGraph checkpointer conformance suite, on both classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_conformance_full(kind: str, dsn: str) -> None:
    async def factory() -> AsyncIterator[object]:
        if kind == "async":
            async with AsyncPostgresCheckpointer.from_conn_string(dsn) as saver:
                await saver.setup()
                yield saver
        else:
            with PostgresCheckpointer.from_conn_string(dsn) as saver:
                saver.setup()
                yield saver

    registered = checkpointer_test(name=f"haive-langgraph ({kind})")(factory)
    report = await validate(registered, progress=ProgressCallbacks.verbose())
    report.print_report()
    assert report.conformance_level() == "FULL", report.to_dict()
    detected = {name for name, r in report.results.items() if r.detected}
    assert detected == {c.value for c in ALL_CAPABILITIES}
    assert all(r.passed for r in report.results.values())
