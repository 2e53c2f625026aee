"""Through a real PgBouncer in transaction mode, as through Supabase's pooler on port 6543.

The official LangGraph conformance suite runs on both Supabase checkpointers,
the store and the chat history round-trip, and connections dropped while
idle (PgBouncer restarted, server connections terminated) cost the next read
no error. A control shows what the pooler does to prepared statements, which
is why the Supabase classes never prepare.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.store.base import BaseStore

from haive_langgraph.checkpointers import AsyncSupabaseCheckpointer, SupabaseCheckpointer
from haive_langgraph.memory import AsyncSupabaseChatMessageHistory, SupabaseChatMessageHistory
from haive_langgraph.stores import AsyncSupabaseStore, SupabaseStore
from tests._pgbouncer import PgBouncer

from .conftest import POOLED


def test_the_pooler_breaks_prepared_statements(pooled: str) -> None:
    """Control: what LangGraph's own savers (``prepare_threshold=0``) meet behind the pooler."""
    failures = 0
    with (
        psycopg.connect(pooled, autocommit=True, prepare_threshold=0) as a,
        psycopg.connect(pooled, autocommit=True, prepare_threshold=0) as b,
    ):
        for i in range(20):
            for conn in (a, b):
                try:
                    conn.execute("SELECT %s::int", (i,)).fetchone()
                except psycopg.Error:
                    failures += 1
    assert failures > 0


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_conformance_through_pgbouncer(kind: str, pooled: str) -> None:
    schema = f"conf_{kind}_{uuid.uuid4().hex[:6]}"

    async def factory() -> AsyncIterator[object]:
        if kind == "async":
            async with AsyncSupabaseCheckpointer.from_conn_string(
                pooled, schema=schema, config=POOLED, enable_rls=True
            ) as saver:
                await saver.setup()
                yield saver
        else:
            with SupabaseCheckpointer.from_conn_string(
                pooled, schema=schema, config=POOLED, enable_rls=True
            ) as saver:
                saver.setup()
                yield saver

    registered = checkpointer_test(name=f"haive-langgraph supabase ({kind})")(factory)
    report = await validate(registered, progress=ProgressCallbacks.quiet())
    report.print_report()
    assert report.conformance_level() == "FULL", report.to_dict()
    assert all(r.passed for r in report.results.values())


async def _store_round_trip(store: BaseStore, is_async: bool) -> None:
    ns = ("users", "u1", "memories")

    async def call(method: str, *args: object, **kwargs: object) -> object:
        if is_async:
            return await getattr(store, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(store, method), *args, **kwargs)

    for i in range(12):  # more than psycopg's prepare threshold, on a few server connections
        await call("put", ns, f"k{i}", {"text": f"memory {i}", "n": i})
    item = await call("get", ns, "k3")
    assert item.value == {"text": "memory 3", "n": 3}  # type: ignore[attr-defined]
    found = await call("search", ("users", "u1"), filter={"n": {"$gte": 10}}, limit=5)
    assert sorted(i.key for i in found) == ["k10", "k11"]  # type: ignore[attr-defined]
    assert await call("list_namespaces", prefix=("users",)) == [ns]
    await call("delete", ns, "k3")
    assert await call("get", ns, "k3") is None


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_store_round_trip_through_pgbouncer(kind: str, pooled: str) -> None:
    schema = f"store_{kind}_{uuid.uuid4().hex[:6]}"
    if kind == "async":
        async with AsyncSupabaseStore.from_conn_string(pooled, schema=schema, config=POOLED) as a:
            await a.setup()
            await _store_round_trip(a.for_tenant("acme"), True)
    else:
        with SupabaseStore.from_conn_string(pooled, schema=schema, config=POOLED) as s:
            s.setup()
            await _store_round_trip(s.for_tenant("acme"), False)


def test_history_round_trip_through_pgbouncer(pooled: str) -> None:
    schema = f"hist_{uuid.uuid4().hex[:6]}"
    history = SupabaseChatMessageHistory(
        "session-1", pooled, schema=schema, tenant_id="acme", config=POOLED, enable_realtime=True
    )
    try:
        history.setup()
        for i in range(8):
            history.add_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
        assert [m.content for m in history.messages][-2:] == ["q7", "a7"]
        assert [m.content for m in history.last(3)] == ["a6", "q7", "a7"]
        history.clear()
        assert history.messages == []
    finally:
        history.close()


async def test_async_history_round_trip_through_pgbouncer(pooled: str) -> None:
    schema = f"ahist_{uuid.uuid4().hex[:6]}"
    history = AsyncSupabaseChatMessageHistory(
        "session-1", pooled, schema=schema, tenant_id="acme", config=POOLED
    )
    try:
        await history.setup()
        for i in range(8):
            await history.aadd_messages([HumanMessage(f"q{i}")])
        assert [m.content for m in await history.aget_messages()] == [f"q{i}" for i in range(8)]
    finally:
        await history.aclose()


def test_reads_recover_after_pgbouncer_restart_and_backend_termination(
    pooled: str, pooler: PgBouncer, supabase_db: str
) -> None:
    schema = f"drop_{uuid.uuid4().hex[:6]}"
    app = f"drop-{uuid.uuid4().hex[:6]}"
    config = POOLED.model_copy(update={"application_name": app})
    with SupabaseCheckpointer.from_conn_string(
        pooled, schema=schema, config=config, tenant_id="acme"
    ) as saver:
        saver.setup()
        cfg: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        from langgraph.checkpoint.base import empty_checkpoint

        saver.put(cfg, empty_checkpoint(), {"source": "input", "step": -1}, {})
        assert saver.get_tuple(cfg) is not None
        # 1. PgBouncer restarted while the pool sat idle: every client connection is gone.
        pooler.restart()
        assert saver.get_tuple(cfg) is not None
        assert len(list(saver.list(cfg))) == 1
        # 2. The server connections behind PgBouncer terminated (idle reaping).
        with psycopg.connect(supabase_db, autocommit=True) as admin:
            n = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ).fetchone()
            assert n is not None and n[0] >= 1
        time.sleep(0.1)
        assert saver.get_tuple(cfg) is not None
        assert saver.get_thread("t1") is not None
