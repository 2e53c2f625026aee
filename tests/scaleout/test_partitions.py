"""The hash-partitioned layout: ``haive-lg migrate --partitions N``.

Same migrations and checksums as the plain layout; the checkpoint, write,
value and list-item tables hash-partitioned by tenant and thread (or
family); the LangGraph conformance suite and a chat graph on it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from typer.testing import CliRunner

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.checkpointers._sql import PARTITIONED
from haive_langgraph.cli import app
from haive_langgraph.db import PartitionKey
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._migrations import Component, Migration, migrate_op, migration_script
from haive_langgraph.db._partitions import choose_partitions, expand
from haive_langgraph.errors import ConfigurationError, MigrationError
from haive_langgraph.ops import all_components, migrate_all


def layout(dsn: str, schema: str) -> dict[str, tuple[str, int]]:
    """``{table: (kind, partitions)}`` of a schema's top-level tables."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, c.relkind::text,
                   (SELECT count(*) FROM pg_inherits AS i WHERE i.inhparent = c.oid)
            FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            """,
            (schema,),
        ).fetchall()
    return {str(name): (str(kind), int(parts)) for name, kind, parts in rows}


def recorded(dsn: str, schema: str) -> list[tuple[str, int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            psycopg.sql.SQL(
                "SELECT component, version, checksum FROM {}.haive_migrations ORDER BY 1, 2"
            ).format(psycopg.sql.Identifier(schema))
        ).fetchall()
    return [(str(c), int(v), str(s)) for c, v, s in rows]


def partitioned_tables() -> set[str]:
    return {k.table for c in all_components() for k in c.partitioned}


def test_cli_creates_the_partitioned_layout(dsn: str) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", "parted", "--partitions", "4"])
    assert done.exit_code == 0, done.output
    tables = layout(dsn, "parted")
    expected = partitioned_tables()
    assert {"checkpoints", "writes", "blobs", "lineage_items"} <= expected
    for table, (kind, parts) in tables.items():
        assert (kind, parts) == (("p", 4) if table in expected else ("r", 0)), table
    # The same migrations and checksums as a plain deployment.
    migrate_all(dsn, schema="plain")
    assert recorded(dsn, "parted") == recorded(dsn, "plain")
    again = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", "parted"])
    assert again.exit_code == 0 and "up to date" in again.output
    other = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", "parted", "--partitions", "8"])
    assert other.exit_code == 1
    assert "already hash-partitioned into 4 partitions, not 8" in " ".join(other.output.split())


def test_partitions_are_refused_on_an_unpartitioned_schema(dsn: str) -> None:
    migrate_all(dsn, schema="existing")
    before = layout(dsn, "existing")
    done = CliRunner().invoke(
        app, ["migrate", "--dsn", dsn, "--schema", "existing", "--partitions", "4"]
    )
    assert done.exit_code == 1
    said = " ".join(done.output.split())
    named = said.split("already has ", 1)[1].split(" unpartitioned", 1)[0].split(", ")
    assert {"blobs", "checkpoints", "lineage_items", "writes"} <= set(named)
    assert "fresh schema" in said
    assert layout(dsn, "existing") == before
    bad = CliRunner().invoke(
        app, ["migrate", "--dsn", dsn, "--schema", "fresh1", "--partitions", "1"]
    )
    assert bad.exit_code == 1 and "between 2 and 1024" in " ".join(bad.output.split())


def test_sql_script_with_partitions(dsn: str) -> None:
    script = migration_script(all_components(), "scripted_parted", partitions=3)
    assert "PARTITION BY HASH (tenant_id, thread_id)" in script
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script.encode())
    assert layout(dsn, "scripted_parted")["checkpoints"] == ("p", 3)
    source = ConnectionSource(dsn)
    try:
        assert source.run(
            lambda: migrate_op(all_components(), "scripted_parted"), transaction=True
        ) == {c.name: [] for c in all_components()}
    finally:
        source.close()


def test_new_tables_follow_the_schema_layout(dsn: str) -> None:
    first = Migration(
        "a",
        (
            """
            CREATE TABLE IF NOT EXISTS {schema}.a (
                tenant_id text NOT NULL, thread_id text NOT NULL, seq int NOT NULL, body bytea,
                PRIMARY KEY (tenant_id, thread_id, seq)
            ) WITH (toast_tuple_target = 8160)
            """,
            "ALTER TABLE {schema}.a ALTER COLUMN body SET STORAGE EXTERNAL",
            "CREATE INDEX IF NOT EXISTS a_seq_idx ON {schema}.a (tenant_id, seq)",
        ),
    )
    second = Migration(
        "b",
        (
            """
            CREATE TABLE IF NOT EXISTS {schema}.b (
                tenant_id text NOT NULL, thread_id text NOT NULL, k text NOT NULL,
                PRIMARY KEY (tenant_id, thread_id, k)
            )
            """,
        ),
    )
    a = PartitionKey("a", ("tenant_id", "thread_id"))
    b = PartitionKey("b", ("tenant_id", "thread_id"))
    source = ConnectionSource(dsn)
    try:
        source.run(
            lambda: migrate_op(
                [Component("demo", (first,), partitioned=(a,))], "follow", partitions=2
            ),
            transaction=True,
        )
        # A later version adds a partitionable table: it gets the same count, unasked.
        source.run(
            lambda: migrate_op([Component("demo", (first, second), partitioned=(a, b))], "follow"),
            transaction=True,
        )
    finally:
        source.close()
    assert layout(dsn, "follow") == {"a": ("p", 2), "b": ("p", 2), "haive_migrations": ("r", 0)}
    with psycopg.connect(dsn) as conn:
        options = conn.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('a', 'a_p0') ORDER BY 1"
        ).fetchall()
        storage = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'follow.a_p1'::regclass "
            "AND attname = 'body'"
        ).fetchone()
    assert options == [("a", None), ("a_p0", ["toast_tuple_target=8160"])]
    assert storage == ("e",)


def test_partition_keys_are_checked_when_declared() -> None:
    create = """
        CREATE TABLE IF NOT EXISTS {schema}.t (
            tenant_id text NOT NULL, thread_id text NOT NULL, seq int NOT NULL,
            PRIMARY KEY (tenant_id, seq, thread_id)
        )
    """
    with pytest.raises(ConfigurationError, match=r"primary key \(tenant_id, seq, thread_id\)"):
        Component(
            "x",
            (Migration("t", (create,)),),
            partitioned=(PartitionKey("t", ("tenant_id", "thread_id")),),
        )
    ok = create.replace("(tenant_id, seq, thread_id)", "(tenant_id, thread_id, seq)")
    unique = "CREATE UNIQUE INDEX IF NOT EXISTS t_seq ON {schema}.t (tenant_id, seq)"
    with pytest.raises(ConfigurationError, match=r"unique index on \(tenant_id, seq\)"):
        Component(
            "x",
            (Migration("t", (ok, unique)),),
            partitioned=(PartitionKey("t", ("tenant_id", "thread_id")),),
        )
    with pytest.raises(ConfigurationError, match="expected one 'CREATE TABLE"):
        Component("x", (Migration("t", (ok,)),), partitioned=(PartitionKey("u", ("tenant_id",)),))
    with pytest.raises(ConfigurationError, match="not a plain lower-case identifier"):
        PartitionKey("t; drop", ("tenant_id",))
    assert expand(ok, (PartitionKey("t", ("tenant_id", "thread_id")),), None) == [ok]


def test_old_servers_are_refused() -> None:
    with pytest.raises(MigrationError, match="needs PostgreSQL 18 or later"):
        choose_partitions("s", PARTITIONED, [(170004, None, None, None, None)], 4)
    assert choose_partitions("s", PARTITIONED, [(170004, None, None, None, None)], None) is None


def history_of(graph: Any, config: Any) -> list[Any]:
    return list(graph.get_state_history(config))


@pytest.fixture(scope="module")
def parted_schema(dsn: str) -> str:
    schema = f"parted_{uuid.uuid4().hex[:6]}"
    migrate_all(dsn, schema=schema, partitions=4)
    return schema


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_conformance_on_the_partitioned_layout(
    kind: str, dsn: str, parted_schema: str
) -> None:
    async def factory() -> AsyncIterator[object]:
        if kind == "async":
            async with AsyncPostgresCheckpointer.from_conn_string(
                dsn, schema=parted_schema
            ) as saver:
                await saver.setup()
                yield saver
        else:
            with PostgresCheckpointer.from_conn_string(dsn, schema=parted_schema) as saver:
                saver.setup()
                yield saver

    registered = checkpointer_test(name=f"haive-langgraph partitioned ({kind})")(factory)
    report = await validate(registered, progress=ProgressCallbacks.verbose())
    report.print_report()
    assert report.conformance_level() == "FULL", report.to_dict()
    detected = {name for name, r in report.results.items() if r.detected}
    assert detected == {c.value for c in ALL_CAPABILITIES}
    assert all(r.passed for r in report.results.values())


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_chat_graph_on_the_partitioned_layout(
    kind: str, dsn: str, parted_schema: str
) -> None:
    async def run(saver: Any) -> tuple[list[int], list[int], Any]:
        graph = chat_graph().compile(checkpointer=saver)
        sizes, histories = [], []
        for t in range(8):
            config: Any = {"configurable": {"thread_id": f"{kind}-chat-{t}"}}
            for turn in range(3):
                inputs = {"messages": [HumanMessage(content=f"turn {turn}")]}
                if kind == "async":
                    await graph.ainvoke(inputs, config)
                else:
                    await asyncio.to_thread(graph.invoke, inputs, config)
            if kind == "async":
                state = await graph.aget_state(config)
                history = [s async for s in graph.aget_state_history(config)]
            else:
                state = await asyncio.to_thread(graph.get_state, config)
                history = await asyncio.to_thread(history_of, graph, config)
            sizes.append(len(state.values["messages"]))
            histories.append(len(history))
        return sizes, histories, state.values["messages"][-1].content

    if kind == "async":
        async with AsyncPostgresCheckpointer.from_conn_string(dsn, schema=parted_schema) as acp:
            result = await run(acp)
            thread = await acp.aget_thread(f"{kind}-chat-0")
    else:
        cp = PostgresCheckpointer(dsn, schema=parted_schema)
        try:
            result = await run(cp)
            thread = await asyncio.to_thread(cp.get_thread, f"{kind}-chat-0")
        finally:
            cp.close()
    sizes, histories, _ = result
    assert sizes == [6] * 8 and histories == [9] * 8
    assert thread is not None and thread.checkpoint_count == 9
    with psycopg.connect(dsn) as conn:
        spread = conn.execute(
            psycopg.sql.SQL(
                "SELECT count(DISTINCT tableoid) FROM {}.checkpoints WHERE thread_id LIKE %s"
            ).format(psycopg.sql.Identifier(parted_schema)),
            (f"{kind}-chat-%",),
        ).fetchone()
    assert spread is not None and spread[0] > 1  # the threads landed in several partitions
