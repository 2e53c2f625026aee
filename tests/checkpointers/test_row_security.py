"""Row-level security: a role that does not own the tables sees only its tenant's rows.

The checkpointer's own statements always filter on ``tenant_id``; these tests
show the database enforcing the same boundary, for the library (which binds
its tenant on each statement, in the same round trip) and for raw SQL run on
the same role.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.checkpointers._sql import TENANT_TABLES
from haive_langgraph.errors import ConfigurationError
from tests._roles import application_role

SCHEMA = "haive"


@pytest.fixture(scope="module")
def app_dsn(dsn: str) -> Iterator[str]:
    """A DSN for a login role that may use the tables but does not own them."""
    with PostgresCheckpointer.from_conn_string(dsn) as owner:
        owner.setup()
    with application_role(dsn) as app:
        yield app


def talk(saver: PostgresCheckpointer, thread_id: str, text: str) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    graph.invoke(
        {"messages": [HumanMessage(content=text)]}, {"configurable": {"thread_id": thread_id}}
    )


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        t: int(conn.execute(f"SELECT count(*) FROM haive.{t}").fetchone()[0])  # type: ignore[index]
        for t in TENANT_TABLES
    }


def test_every_checkpointer_table_has_row_security(dsn: str, app_dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (SCHEMA, list(TENANT_TABLES)),
        ).fetchall()
    assert dict(rows) == dict.fromkeys(TENANT_TABLES, True)


def test_tenants_are_separated_by_the_database(app_dsn: str) -> None:
    thread = f"shared-{uuid.uuid4().hex[:6]}"  # both tenants use the same thread id
    with (
        PostgresCheckpointer.from_conn_string(app_dsn, tenant_id="acme") as acme,
        PostgresCheckpointer.from_conn_string(app_dsn, tenant_id="globex") as globex,
    ):
        talk(acme, thread, "acme's secret")
        talk(globex, thread, "globex's plan")
        talk(globex, thread, "globex again")
        config = {"configurable": {"thread_id": thread}}
        acme_texts = [
            m.content for m in acme.get_tuple(config).checkpoint["channel_values"]["messages"]
        ]  # type: ignore[union-attr]
        assert "acme's secret" in acme_texts and "globex's plan" not in acme_texts
        assert len(list(acme.list(config))) == 3
        assert len(list(globex.list(config))) == 6
        assert {t.thread_id for t in acme.list_threads()} == {thread}

    with psycopg.connect(app_dsn, autocommit=True) as conn:
        # raw SQL on the application's role, no tenant bound: nothing at all
        assert set(counts(conn).values()) == {0}
        # bound to acme: only acme's rows, whatever the query asks for
        with conn.transaction():
            conn.execute("SELECT set_config('haive.tenant_id', 'acme', true)")
            seen = conn.execute(
                "SELECT DISTINCT tenant_id FROM haive.checkpoints WHERE thread_id = %s", (thread,)
            ).fetchall()
            assert seen == [("acme",)]
            # updates and deletes of another tenant's rows touch nothing
            hit = conn.execute(
                "UPDATE haive.threads SET metadata = '{}' WHERE tenant_id = 'globex'"
            ).rowcount
            gone = conn.execute("DELETE FROM haive.checkpoints WHERE tenant_id = 'globex'").rowcount
            assert (hit, gone) == (0, 0)
            # and no row can be written into another tenant
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(
                    "INSERT INTO haive.blobs (tenant_id, family_id, key, data) "
                    "VALUES ('globex', 'x', '\\x00', '\\x00')"
                )


def test_the_default_tenant_cannot_be_bound(app_dsn: str) -> None:
    with (
        PostgresCheckpointer.from_conn_string(app_dsn) as saver,
        pytest.raises(ConfigurationError, match="default tenant"),
    ):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


async def test_async_saver_binds_its_tenant_too(app_dsn: str) -> None:
    thread = f"async-{uuid.uuid4().hex[:6]}"
    async with (
        AsyncPostgresCheckpointer.from_conn_string(app_dsn, tenant_id="acme") as acme,
        AsyncPostgresCheckpointer.from_conn_string(app_dsn, tenant_id="initech") as initech,
    ):
        graph = chat_graph().compile(checkpointer=acme)
        config = {"configurable": {"thread_id": thread}}
        await graph.ainvoke({"messages": [HumanMessage(content="hello")]}, config)
        assert len([c async for c in acme.alist(config)]) == 3
        assert await initech.aget_tuple(config) is None
        # a lent connection of the application role works the same way
        async with await psycopg.AsyncConnection.connect(app_dsn, autocommit=True) as conn:
            lent = AsyncPostgresCheckpointer(conn, tenant_id="acme")
            assert (await lent.aget_tuple(config)) is not None
            assert (
                await asyncio.wait_for(
                    AsyncPostgresCheckpointer(conn, tenant_id="x").aget_tuple(config), 10
                )
                is None
            )


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_conformance_under_row_security(kind: str, app_dsn: str) -> None:
    """The whole LangGraph conformance suite, as a tenant of a role RLS applies to."""
    from collections.abc import AsyncIterator

    from langgraph.checkpoint.conformance import checkpointer_test, validate

    async def factory() -> AsyncIterator[object]:
        if kind == "async":
            async with AsyncPostgresCheckpointer.from_conn_string(app_dsn, tenant_id="t1") as s:
                yield s
        else:
            with PostgresCheckpointer.from_conn_string(app_dsn, tenant_id="t1") as saver:
                yield saver

    report = await validate(checkpointer_test(name=f"haive under RLS ({kind})")(factory))
    assert report.conformance_level() == "FULL", report.to_dict()
