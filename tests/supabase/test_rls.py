"""Row-level security with Supabase auth: a user's request sees only its own tenant's rows.

Rows are written by the library (through PgBouncer, one tenant per user:
``tenant_id`` = the user's ``auth.uid()``). A "user's connection" is what
PostgREST opens for a request: ``SET LOCAL ROLE authenticated`` and the JWT
claims in ``request.jwt.claims`` for the transaction. On it, raw SQL cannot
read, list, change or delete another user's rows, nor write rows into
another tenant, even after pointing ``haive.tenant_id`` at it;
``service_role`` (``BYPASSRLS``, as on Supabase) sees everything and
``anon`` nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from psycopg import sql

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import SupabaseCheckpointer
from haive_langgraph.checkpointers._sql import COMPONENT as CHECKPOINTS
from haive_langgraph.memory import SupabaseChatMessageHistory
from haive_langgraph.memory.conversations._sql import COMPONENT as CONVERSATIONS
from haive_langgraph.stores import SupabaseStore
from haive_langgraph.stores._sql import COMPONENT as STORE

from .conftest import POOLED, act_as_user, new_uid

SCHEMA = "haive"
# Every tenant table of the registry (the store's vectors exist only with an index).
ALL_TABLES = tuple(
    t.name for c in (CHECKPOINTS, CONVERSATIONS, STORE) for t in c.tables if t.tenant and t.migrated
)


@pytest.fixture(scope="module")
def users(pooled: str) -> Iterator[tuple[str, str]]:
    """Two users (alice, bob), each with a thread, a conversation and store items."""
    alice, bob = new_uid(), new_uid()
    with SupabaseCheckpointer.from_conn_string(pooled, config=POOLED, enable_rls=True) as admin:
        admin.setup()
    with SupabaseStore.from_conn_string(pooled, config=POOLED, enable_rls=True) as store:
        store.setup()
        for uid in (alice, bob):
            store.for_tenant(uid).put(("notes",), "n1", {"text": f"{uid}'s note"})
    for uid in (alice, bob):
        with SupabaseCheckpointer.from_conn_string(pooled, config=POOLED, tenant_id=uid) as saver:
            graph = chat_graph().compile(checkpointer=saver)
            graph.invoke(
                {"messages": [HumanMessage(content=f"{uid} secret")]},
                {"configurable": {"thread_id": "same-thread"}},
            )
        history = SupabaseChatMessageHistory(
            "same-chat", pooled, tenant_id=uid, config=POOLED, enable_rls=True
        )
        try:
            history.setup()
            history.add_messages([HumanMessage(f"{uid} says hi")])
        finally:
            history.close()
    yield alice, bob


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0])


def tenants(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT tenant_id FROM {}.{}").format(
            sql.Identifier(SCHEMA), sql.Identifier(table)
        )
    ).fetchall()
    return {r[0] for r in rows}


def test_a_user_sees_only_their_own_rows_even_by_raw_sql(
    pooled: str, users: tuple[str, str]
) -> None:
    alice, bob = users
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as conn:
        with conn.transaction():
            act_as_user(conn, {"sub": alice, "role": "authenticated"})
            for table in ALL_TABLES:
                assert tenants(conn, table) <= {alice}, table
            for table in ("threads", "checkpoints", "conversations", "store_items"):
                assert tenants(conn, table) == {alice}, table
            texts = conn.execute(
                "SELECT conversation_id FROM haive.conversations WHERE tenant_id = %s", (bob,)
            ).fetchall()
            assert texts == []
            # another user's rows cannot be changed or deleted ...
            assert (
                conn.execute("DELETE FROM haive.checkpoints WHERE tenant_id = %s", (bob,)).rowcount
                == 0
            )
            assert (
                conn.execute(
                    "DELETE FROM haive.store_items WHERE tenant_id <> %s", (alice,)
                ).rowcount
                == 0
            )
            assert (
                conn.execute(
                    "UPDATE haive.threads SET metadata = '{}' WHERE tenant_id = %s", (bob,)
                ).rowcount
                == 0
            )
            # ... and pointing our own tenant setting at them widens nothing
            conn.execute("SELECT set_config('haive.tenant_id', %s, true)", (bob,))
            assert tenants(conn, "checkpoints") == {alice}
            assert conn.execute("DELETE FROM haive.conversation_messages").rowcount == 1  # alice's
            # rows cannot be written into another tenant
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(
                    "INSERT INTO haive.blobs (tenant_id, family_id, key, data) "
                    "VALUES (%s, 'x', '\\x00', '\\x00')",
                    (bob,),
                )
        # the transaction above rolled back; no claims: nothing at all
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            assert {count(conn, t) for t in ALL_TABLES} == {0}


def test_service_role_sees_all_and_anon_nothing(pooled: str, users: tuple[str, str]) -> None:
    alice, bob = users
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE service_role")
            for table in ("threads", "checkpoints", "conversations", "store_items"):
                assert tenants(conn, table) >= {alice, bob}, table
        with conn.transaction():
            conn.execute("SET LOCAL ROLE anon")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                count(conn, "threads")


def test_the_library_reads_for_each_user(pooled: str, users: tuple[str, str]) -> None:
    alice, bob = users
    with SupabaseCheckpointer.from_conn_string(pooled, config=POOLED, tenant_id=alice) as saver:
        state = saver.get_tuple({"configurable": {"thread_id": "same-thread"}})
        assert state is not None
        texts = [m.content for m in state.checkpoint["channel_values"]["messages"]]
        assert f"{alice} secret" in texts and f"{bob} secret" not in texts


def test_an_org_claim_keys_the_rows(pooled: str) -> None:
    schema = f"org_{uuid.uuid4().hex[:6]}"
    with SupabaseStore.from_conn_string(
        pooled, schema=schema, config=POOLED, enable_rls=True, tenant_claim="app_metadata.org_id"
    ) as store:
        store.setup()
        store.for_tenant("org-1").put(("docs",), "d", {"v": 1})
        store.for_tenant("org-2").put(("docs",), "d", {"v": 2})
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as conn:
        with conn.transaction():
            # two users of org-1 see org-1's items; the user id does not matter
            act_as_user(conn, {"sub": new_uid(), "app_metadata": {"org_id": "org-1"}})
            rows = conn.execute(
                sql.SQL("SELECT tenant_id FROM {}.store_items").format(sql.Identifier(schema))
            ).fetchall()
            assert rows == [("org-1",)]
        with conn.transaction():
            act_as_user(conn, {"sub": new_uid()})  # no org claim: nothing
            rows = conn.execute(
                sql.SQL("SELECT tenant_id FROM {}.store_items").format(sql.Identifier(schema))
            ).fetchall()
            assert rows == []


def test_disabling_rls_revokes_the_user_role(pooled: str, supabase_db: str) -> None:
    schema = f"off_{uuid.uuid4().hex[:6]}"
    with SupabaseStore.from_conn_string(pooled, schema=schema, config=POOLED, enable_rls=True) as s:
        s.setup()
    with SupabaseStore.from_conn_string(pooled, schema=schema, config=POOLED) as s:
        s.setup()
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        policies = conn.execute(
            "SELECT policyname FROM pg_policies WHERE schemaname = %s AND tablename = 'store_items'",
            (schema,),
        ).fetchall()
        assert sorted(p[0] for p in policies) == [
            "haive_supabase_no_anon",
            "haive_tenant_isolation",
        ]
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            act_as_user(conn, {"sub": new_uid()})
            conn.execute(sql.SQL("SELECT 1 FROM {}.store_items").format(sql.Identifier(schema)))
