"""Tenants: isolation through the API, through row-level security, and erasure."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp
from psycopg import sql

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.checkpointers._sql import COMPONENT as CHECKPOINTS
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import ChatHistoryFactory, PostgresChatMessageHistory
from haive_langgraph.memory.conversations._sql import COMPONENT as CONVERSATIONS
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore, ResourceQuota
from tests._roles import application_role
from tests.stores.conftest import Driver, index_config

NS = tuple[str, ...]


@pytest.mark.parametrize("bad", [None, 5, b"acme", ("acme",), "", "a\x00b", "a\nb", "x" * 256])
def test_tenant_ids_must_be_plain_strings(sync_store: PostgresStore, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="tenant_id"):
        sync_store.for_tenant(bad)
    with pytest.raises(ConfigurationError, match="tenant_id"):
        sync_store.delete_tenant(bad)


def test_str_subclasses_are_not_plain(sync_store: PostgresStore) -> None:
    class Sneaky(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    with pytest.raises(ConfigurationError, match="plain str"):
        sync_store.for_tenant(Sneaky("a"))


async def test_tenants_cannot_reach_each_other_through_the_api(
    store: Driver, ns: NS, tenant: Callable[[], str]
) -> None:
    a, b = store.for_tenant(tenant()), store.for_tenant(tenant())
    await a.put((*ns, "shared"), "k", {"text": "alpha tea", "owner": "a"})
    await b.put((*ns, "shared"), "k", {"text": "beta tea", "owner": "b"})
    await b.put((*ns, "only-b"), "secret", {"text": "beta secret tea", "owner": "b"})
    await store.put((*ns, "shared"), "k", {"text": "default tea", "owner": "default"})

    assert (await a.get((*ns, "shared"), "k")).value["owner"] == "a"
    assert (await b.get((*ns, "shared"), "k")).value["owner"] == "b"
    assert (await store.get((*ns, "shared"), "k")).value["owner"] == "default"
    assert await a.get((*ns, "only-b"), "secret") is None
    for kwargs in (
        {},
        {"query": "beta secret"},
        {"filter": {"owner": "b"}},
        {"filter": {"tenant_id": {"$exists": True}}},
    ):
        hits = await a.search((), limit=100, **kwargs)
        assert all(h.value.get("owner") == "a" for h in hits), kwargs
    assert (*ns, "only-b") not in await a.list_namespaces(limit=1000)
    assert await a.list_namespaces(prefix=ns) == [(*ns, "shared")]
    assert await a.list_namespaces(suffix=("only-b",)) == []

    # Deleting "the same" item as A leaves B's alone.
    await a.delete((*ns, "shared"), "k")
    await a.delete((*ns, "only-b"), "secret")
    assert await a.get((*ns, "shared"), "k") is None
    assert (await b.get((*ns, "shared"), "k")).value["owner"] == "b"
    assert (await b.get((*ns, "only-b"), "secret")).value["owner"] == "b"

    # A batch is one tenant's too.
    results = await a.batch(
        [
            GetOp((*ns, "only-b"), "secret"),
            SearchOp(ns, {"owner": "b"}),
            ListNamespacesOp(limit=1000),
            PutOp((*ns, "only-b"), "secret", None),
        ]
    )
    assert results[0] is None and results[1] == [] and (*ns, "only-b") not in results[2]
    assert (await b.get((*ns, "only-b"), "secret")) is not None


async def test_crafted_namespaces_do_not_cross_tenants(
    store: Driver, ns: NS, tenant: Callable[[], str]
) -> None:
    victim, attacker = tenant(), tenant()
    v, x = store.for_tenant(victim), store.for_tenant(attacker)
    await v.put((*ns, "users", "u_1"), "k", {"text": "victim"})
    for crafted in (
        (victim,),
        (*ns, "users", "u%"),
        (*ns, "users", "u_"),
        (*ns, "*"),
        (*ns, "users", "*"),
    ):
        assert await x.search(crafted, limit=100) == []
        assert await x.list_namespaces(prefix=crafted) == []
    assert await x.search((*ns, "users"), query="victim") == []


async def test_a_bound_store_stays_bound(store: Driver, tenant: Callable[[], str]) -> None:
    t1, t2 = tenant(), tenant()
    bound = store.store.for_tenant(t1)  # type: ignore[attr-defined]
    assert bound.for_tenant(t1).tenant_id == t1
    with pytest.raises(ConfigurationError, match="bound to tenant"):
        bound.for_tenant(t2)
    with pytest.raises(ConfigurationError, match="bound to tenant"):
        await Driver(bound, store.kind).admin("delete_tenant", t2)


class _State(TypedDict):
    steps: Annotated[list[str], operator.add]


def _graph() -> StateGraph[Any]:
    builder: StateGraph[Any] = StateGraph(_State)
    builder.add_node("step", lambda state: {"steps": ["x" * 600]})
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder


def _setup_conversations(dsn: str) -> None:
    with ChatHistoryFactory(dsn) as factory:
        factory.setup()


def _history(dsn: str, tenant_id: str) -> PostgresChatMessageHistory:
    return PostgresChatMessageHistory("conv-1", dsn, tenant_id=tenant_id)


async def test_delete_tenant_erases_store_checkpoints_and_conversations(
    store: Driver, ns: NS, dsn: str, tenant: Callable[[], str]
) -> None:
    doomed, other = tenant(), tenant()
    await asyncio.to_thread(_setup_conversations, dsn)
    for t in (doomed, other):
        d = store.for_tenant(t)
        await d.put((*ns, "a"), "k1", {"text": "tea"})
        await d.put((*ns, "b"), "k2", {"text": "coffee"})
        await d.admin("set_quota", ResourceQuota(max_items=100))
        with _saver(dsn, t) as saver:
            graph = _graph().compile(checkpointer=saver)
            config: RunnableConfig = {"configurable": {"thread_id": "th-1"}}
            await asyncio.to_thread(graph.invoke, {"steps": []}, config)  # type: ignore[arg-type]
            latest = await asyncio.to_thread(saver.get_tuple, config)
            assert latest is not None
            await asyncio.to_thread(saver.tag, latest.config, "v1")
        with _history(dsn, t) as history:
            await asyncio.to_thread(
                history.add_messages, [HumanMessage("hello"), AIMessage("hi there")]
            )
    counts = await store.admin("delete_tenant", doomed)
    # Every table that holds tenant rows is named, with what was deleted from it.
    assert set(counts) == {
        "store_items",
        "store_vectors",
        "store_tenants",
        *CHECKPOINTS.tenant_tables,
        *CONVERSATIONS.tenant_tables,
    }
    assert (counts["store_items"], counts["store_vectors"], counts["store_tenants"]) == (2, 2, 1)
    assert counts["threads"] == 1 and counts["checkpoints"] >= 2 and counts["blobs"] >= 1
    assert counts["checkpoint_tags"] == 1
    assert counts["conversations"] == 1 and counts["conversation_messages"] >= 1
    # Nothing of the tenant is left in any of them; the other tenant keeps everything.
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in counts:
            query = sql.SQL("SELECT count(*) FROM haive.{} WHERE tenant_id = %s")
            left = {
                t: _count(conn, query.format(sql.Identifier(table)), t) for t in (doomed, other)
            }
            assert left[doomed] == 0, table
            # Tables this test writes nothing to for the other tenant either.
            unfilled = ("writes", "lineages", "lineage_items", "conversation_participants")
            if table not in (*unfilled, "conversation_topics", "conversation_merges"):
                assert left[other] > 0, table
    assert await store.for_tenant(doomed).search(ns) == []
    assert len(await store.for_tenant(other).search(ns)) == 2
    with _saver(dsn, doomed) as saver:
        assert saver.get_tuple({"configurable": {"thread_id": "th-1"}}) is None
    with _saver(dsn, other) as saver:
        assert saver.get_tuple({"configurable": {"thread_id": "th-1"}}) is not None
    with _history(dsn, other) as history:
        assert len(await asyncio.to_thread(lambda: history.messages)) == 2
    assert set((await store.admin("delete_tenant", doomed)).values()) == {0}


class _saver:
    """A set-up checkpointer for one tenant, closed afterwards."""

    def __init__(self, dsn: str, tenant_id: str) -> None:
        self.saver = PostgresCheckpointer(dsn, tenant_id=tenant_id)
        self.saver.setup()

    def __enter__(self) -> PostgresCheckpointer:
        return self.saver

    def __exit__(self, *exc: object) -> None:
        self.saver.close()


# -- row-level security ----------------------------------------------------------------


@pytest.fixture(scope="module")
def app_role(dsn: str, sync_store: PostgresStore) -> Iterator[str]:
    """A DSN for a non-superuser role that does not own the tables: RLS binds it."""
    grants = (
        "GRANT SELECT, INSERT, UPDATE, DELETE ON haive.store_items, haive.store_vectors TO {r}",
        "GRANT SELECT ON haive.store_vector_config, haive.haive_migrations TO {r}",
    )
    with application_role(dsn, grants) as app:
        yield app


def _count(conn: psycopg.Connection[Any], query: str | sql.Composed, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def test_row_level_security_binds_hand_written_sql(
    app_role: str, sync_store: PostgresStore, ns: NS, tenant: Callable[[], str]
) -> None:
    a, b = tenant(), tenant()
    sync_store.for_tenant(a).put(ns, "k", {"text": "alpha"})
    sync_store.for_tenant(b).put(ns, "k", {"text": "beta"})
    sync_store.for_tenant(b).put(ns, "k2", {"text": "beta two"})
    with psycopg.connect(app_role, autocommit=True) as conn:
        # No tenant bound: nothing is visible, nothing can be written.
        assert _count(conn, "SELECT count(*) FROM haive.store_items") == 0
        assert _count(conn, "SELECT count(*) FROM haive.store_vectors") == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO haive.store_items (tenant_id, namespace, key, value) VALUES (%s, %s, 'x', '')",
                (a, list(ns)),
            )
        with conn.transaction():
            conn.execute("SELECT set_config('haive.tenant_id', %s, true)", (a,))
            assert _count(conn, "SELECT count(*) FROM haive.store_items") == 1
            assert (
                _count(conn, "SELECT count(*) FROM haive.store_items WHERE tenant_id = %s", b) == 0
            )
            assert (
                _count(conn, "SELECT count(*) FROM haive.store_vectors WHERE tenant_id <> %s", a)
                == 0
            )
            assert (
                conn.execute(
                    "UPDATE haive.store_items SET doc = '{}' WHERE tenant_id = %s", (b,)
                ).rowcount
                == 0
            )
            assert (
                conn.execute("DELETE FROM haive.store_items WHERE tenant_id = %s", (b,)).rowcount
                == 0
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "UPDATE haive.store_items SET tenant_id = %s WHERE tenant_id = %s", (b, a)
                )
        with conn.transaction():
            conn.execute("SELECT set_config('haive.tenant_id', %s, true)", (b,))
            assert _count(conn, "SELECT count(*) FROM haive.store_items") == 2
        # The setting was transaction-local: gone again.
        assert _count(conn, "SELECT count(*) FROM haive.store_items") == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM haive.store_tenants")
    assert sync_store.for_tenant(b).get(ns, "k").value == {"text": "beta"}


async def test_the_store_works_under_row_level_security(
    app_role: str, ns: NS, tenant: Callable[[], str], sync_store: PostgresStore
) -> None:
    a, b = tenant(), tenant()
    sync_store.for_tenant(b).put(ns, "k", {"text": "beta tea"})
    index = index_config()
    sync = await asyncio.to_thread(lambda: PostgresStore(app_role, index=index))
    astore = AsyncPostgresStore(app_role, index=index)
    try:
        for drv in (Driver(sync.for_tenant(a), "sync"), Driver(astore.for_tenant(a), "async")):
            await drv.put(ns, f"k-{drv.kind}", {"text": "alpha tea"})
            await drv.batch([PutOp(ns, f"b-{drv.kind}", {"text": "alpha batch"}), GetOp(ns, "k")])
            assert (await drv.get(ns, f"k-{drv.kind}")).value == {"text": "alpha tea"}
            assert await drv.get(ns, "k") is None  # B's
            hits = await drv.search(ns, query="tea", limit=10)
            assert {h.value["text"] for h in hits} <= {"alpha tea", "alpha batch"}
            assert await drv.list_namespaces(prefix=ns) == [ns]
            await drv.delete(ns, "k")
        assert (sync_store.for_tenant(b).get(ns, "k")).value == {"text": "beta tea"}
        # The unbound store cannot work under row-level security.
        with pytest.raises(ConfigurationError, match="for_tenant"):
            await asyncio.to_thread(sync.get, ns, "k")
        with pytest.raises(ConfigurationError, match="for_tenant"):
            await astore.aget(ns, "k")
    finally:
        await asyncio.to_thread(sync.close)
        await astore.aclose()
