"""Realtime: published tables reach a logical replication slot and ``subscribe`` consumers.

Supabase Realtime reads the ``supabase_realtime`` publication through a
logical replication slot (``pgoutput``); here a slot of our own on that
publication shows which tables' changes it carries. ``subscribe`` (sync)
and ``asubscribe`` receive the ``NOTIFY`` of the triggers: table, op,
tenant and key, never other columns, and a tenant's channel carries only
that tenant's changes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from langchain_core.messages import HumanMessage

from haive_langgraph.memory import SupabaseChatMessageHistory
from haive_langgraph.stores import SupabaseStore
from haive_langgraph.supabase import ChangeEvent, asubscribe, channel_name, subscribe

from .conftest import POOLED


@pytest.fixture(scope="module")
def schema(pooled: str) -> str:
    name = f"rt_{uuid.uuid4().hex[:6]}"
    history = SupabaseChatMessageHistory(
        "boot", pooled, schema=name, tenant_id="acme", config=POOLED, enable_realtime=True
    )
    try:
        history.setup()
    finally:
        history.close()
    with SupabaseStore.from_conn_string(pooled, schema=name, config=POOLED) as store:
        store.setup()  # the store's tables: not published
    return name


@pytest.fixture
def slot(supabase_db: str) -> Iterator[str]:
    name = f"haive_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    try:
        yield name
    finally:
        with psycopg.connect(supabase_db, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def slot_changes(dsn: str, slot: str) -> bytes:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'supabase_realtime')",
            (slot,),
        ).fetchall()
    return b"".join(bytes(r[0]) for r in rows)


def test_published_tables_reach_a_logical_slot(
    pooled: str, supabase_db: str, schema: str, slot: str
) -> None:
    with psycopg.connect(supabase_db) as conn:
        published = conn.execute(
            "SELECT tablename FROM pg_publication_tables "
            "WHERE pubname = 'supabase_realtime' AND schemaname = %s ORDER BY 1",
            (schema,),
        ).fetchall()
    assert [p[0] for p in published] == ["conversation_messages", "conversations"]
    marker = f"conv-{uuid.uuid4().hex[:8]}"
    history = SupabaseChatMessageHistory(
        marker, pooled, schema=schema, tenant_id="acme", config=POOLED, enable_realtime=True
    )
    try:
        history.add_messages([HumanMessage("hello")])
    finally:
        history.close()
    with SupabaseStore.from_conn_string(pooled, schema=schema, config=POOLED) as store:
        store.for_tenant("acme").put(("ns",), f"item-{marker}", {"v": 1})
    changes = slot_changes(supabase_db, slot)
    # pgoutput: a Relation message names each table, the tuples carry the values
    assert b"conversation_messages\x00" in changes and b"conversations\x00" in changes
    assert marker.encode() in changes
    assert b"store_items\x00" not in changes and f"item-{marker}".encode() not in changes


def test_subscribe_receives_a_tenants_changes_and_only_theirs(
    pooled: str, supabase_db: str, schema: str
) -> None:
    with (
        subscribe(supabase_db, schema=schema, tenant_id="acme") as acme,
        subscribe(supabase_db, schema=schema) as everyone,
    ):
        for tenant in ("globex", "acme"):
            history = SupabaseChatMessageHistory(
                "chat-1", pooled, schema=schema, tenant_id=tenant, config=POOLED
            )
            try:
                history.add_messages([HumanMessage(f"{tenant} secret text")])
            finally:
                history.close()
        seen: list[ChangeEvent] = []
        while (event := acme.get(timeout=2.0)) is not None:
            seen.append(event)
            if {e.table for e in seen} >= {"conversations", "conversation_messages"}:
                break
        assert seen and {e.tenant_id for e in seen} == {"acme"}
        by_table = {e.table: e for e in seen}
        assert by_table["conversation_messages"].op == "insert"
        assert by_table["conversation_messages"].key == ("chat-1", 0)
        assert by_table["conversations"].key == ("chat-1",)
        assert acme.get(timeout=0.3) is None  # globex's changes never reach acme's channel
        tenants: set[str | None] = set()
        while (event := everyone.get(timeout=1.0)) is not None and len(tenants) < 2:
            tenants.add(event.tenant_id)
        assert tenants == {"acme", "globex"}


def test_payloads_carry_keys_never_row_contents(pooled: str, supabase_db: str, schema: str) -> None:
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("LISTEN {}").format(
                psycopg.sql.Identifier(channel_name(schema, "acme"))
            )
        )
        history = SupabaseChatMessageHistory(
            "chat-2", pooled, schema=schema, tenant_id="acme", config=POOLED
        )
        try:
            history.add_messages([HumanMessage("very private words")])
        finally:
            history.close()
        payloads = [n.payload for n in conn.notifies(timeout=2.0, stop_after=2)]
    assert payloads and all("private" not in p for p in payloads)
    assert {frozenset(json.loads(p)) for p in payloads} == {
        frozenset({"schema", "table", "op", "tenant", "key"})
    }


async def test_asubscribe_receives_changes(pooled: str, supabase_db: str, schema: str) -> None:
    sub = await asubscribe(supabase_db, schema=schema, tenant_id="acme", tables=["messages"])
    async with sub:
        history = SupabaseChatMessageHistory(
            "chat-3", pooled, schema=schema, tenant_id="acme", config=POOLED
        )
        try:
            await asyncio.to_thread(history.add_messages, [HumanMessage("x")])
            await asyncio.to_thread(history.clear)
        finally:
            history.close()
        first = await sub.get(timeout=2.0)
        second = await sub.get(timeout=2.0)
    assert first is not None and second is not None
    assert (first.table, first.op, first.key) == ("conversation_messages", "insert", ("chat-3", 0))
    assert (second.op, second.key) == ("delete", ("chat-3", 0))


def test_a_subscription_survives_a_terminated_connection(
    pooled: str, supabase_db: str, schema: str
) -> None:
    with subscribe(supabase_db, schema=schema, tenant_id="acme") as sub:
        with psycopg.connect(supabase_db, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
            )
        assert sub.get(timeout=0.5) is None  # notices the drop, listens again
        history = SupabaseChatMessageHistory(
            "chat-4", pooled, schema=schema, tenant_id="acme", config=POOLED
        )
        try:
            history.add_messages([HumanMessage("after")])
        finally:
            history.close()
        event = sub.get(timeout=2.0)
    assert event is not None and event.key is not None and event.key[0] == "chat-4"


async def test_an_async_subscription_survives_a_terminated_connection(
    pooled: str, supabase_db: str, schema: str
) -> None:
    async with await asubscribe(supabase_db, schema=schema, tenant_id="acme") as sub:
        with psycopg.connect(supabase_db, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
            )
        assert await sub.get(timeout=0.5) is None  # notices the drop, listens again
        history = SupabaseChatMessageHistory(
            "chat-5", pooled, schema=schema, tenant_id="acme", config=POOLED
        )
        try:
            await asyncio.to_thread(history.add_messages, [HumanMessage("after")])
        finally:
            history.close()
        event = await sub.get(timeout=2.0)
    assert event is not None and event.key is not None and event.key[0] == "chat-5"
