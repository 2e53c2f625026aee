"""Bad input gets a clear error naming what is wrong, and nothing is written."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.errors import (
    ConfigurationError,
    ConnectionFailedError,
    CorruptDataError,
    InvalidIdentifierError,
    SerializationError,
)

from .conftest import Driver
from .test_storage import stored


def checkpoint_with(values: dict[str, Any]) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = dict.fromkeys(values, 1)
    return cp


async def test_unserialisable_value_names_channel_and_type(cp: Driver, dsn: str) -> None:
    tid = f"bad-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
    checkpoint = checkpoint_with({"good": ["fine"], "bad": [threading.Lock()]})
    with pytest.raises(SerializationError) as info:
        await cp.call(
            "put", config, checkpoint, {"source": "input", "step": -1}, {"good": 1, "bad": 1}
        )
    message = str(info.value)
    assert "'bad'" in message and "_thread.lock" in message
    assert f"checkpoint {checkpoint['id']}" in message
    assert isinstance(info.value, TypeError)
    assert await cp.call("get_tuple", config) is None
    assert stored(dsn, tid) == dict.fromkeys(stored(dsn, tid), 0)


async def test_unserialisable_write_names_channel(cp: Driver, dsn: str) -> None:
    tid = f"badw-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
    saved = await cp.call("put", config, checkpoint_with({}), {"source": "input", "step": -1}, {})
    with pytest.raises(SerializationError, match=r"'results'.*_thread\.lock"):
        await cp.call("put_writes", saved, [("ok", 1), ("results", threading.Lock())], "task-1")
    tup = await cp.call("get_tuple", saved)
    assert tup.pending_writes == []


async def test_unserialisable_metadata_names_key(cp: Driver) -> None:
    config = {"configurable": {"thread_id": f"m-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}
    with pytest.raises(SerializationError, match="metadata key 'when'"):
        await cp.call("put", config, checkpoint_with({}), {"when": object()}, {})
    assert await cp.call("get_tuple", config) is None


async def test_corrupt_stored_value_names_thread_checkpoint_and_channel(
    cp: Driver, dsn: str
) -> None:
    graph = cp.compile(chat_graph())
    tid = f"corrupt-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid}}
    await cp.invoke(graph, {"messages": [HumanMessage(content="hello")]}, config)
    latest = await cp.call("get_tuple", config)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE haive.blobs SET data = %s WHERE family_id = %s", (b"garbage", tid))
        # A reader that has not seen the values (another process) decodes every row.
        fresh = PostgresCheckpointer(conn)
        with pytest.raises(CorruptDataError) as info:
            fresh.get_tuple(config)
    message = str(info.value)
    assert repr(tid) in message
    assert latest.config["configurable"]["checkpoint_id"] in message
    assert "'messages'" in message


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x01", b"\xd9\x05ab"])
async def test_a_corrupt_list_item_is_named_by_its_position(
    cp: Driver, dsn: str, body: bytes
) -> None:
    # A bad list item gets an error naming its position in the list, read
    # alone (get_tuple) or in a history listing; nothing of it is returned.
    graph = cp.compile(chat_graph())
    tid = f"item-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid}}
    for text in ("one", "two"):
        await cp.invoke(graph, {"messages": [HumanMessage(content=text)]}, config)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.blobs SET data = %s WHERE family_id = %s AND key = ("
            " SELECT key FROM haive.lineage_items WHERE family_id = %s AND seq = 2)",
            (b"HV\x01\x00msgpack\x00" + body, tid, tid),
        )
        fresh = PostgresCheckpointer(conn)
        with pytest.raises(CorruptDataError) as info:
            fresh.get_tuple(config)
        with pytest.raises(CorruptDataError) as listed:
            list(fresh.list(config, limit=1))
    for error in (info.value, listed.value):
        assert "item 2" in str(error), str(error)
        assert repr(tid) in str(error) or tid in str(error)


async def test_missing_thread_id_is_langgraphs_usual_error(cp: Driver) -> None:
    graph = cp.compile(chat_graph())
    with pytest.raises(ValueError, match="thread_id"):
        await cp.invoke(graph, {"messages": [HumanMessage(content="x")]}, {"configurable": {}})


def test_unreachable_server_names_host_and_port_not_password() -> None:
    dsn = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(ConnectionFailedError) as info:
        PostgresCheckpointer(dsn)
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(info.value.__cause__)
    assert isinstance(info.value, ConnectionError)


async def test_unreachable_server_async() -> None:
    dsn = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(ConnectionFailedError, match=r"127\.0\.0\.1:1") as info:
        async with AsyncPostgresCheckpointer.from_conn_string(dsn):
            pass
    assert "s3cret-pw" not in str(info.value)


def test_missing_database_is_named(pg_server: str) -> None:
    from psycopg import conninfo

    dsn = conninfo.make_conninfo(pg_server, dbname="no_such_database_xyz")
    with pytest.raises(ConnectionFailedError, match="no_such_database_xyz"):
        PostgresCheckpointer(dsn)


def test_lent_connection_without_autocommit_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(ConfigurationError, match="autocommit"):
        PostgresCheckpointer(conn)  # the connection is not in autocommit mode


async def test_async_connection_given_to_sync_class_is_refused(dsn: str) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        with pytest.raises(ConfigurationError, match="Async class"):
            PostgresCheckpointer(conn)  # type: ignore[arg-type]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "schema", ["bad-name", "Public", "x; drop table t", "", "1abc", "pg_catalog", "a" * 64]
)
def test_schema_must_be_a_plain_identifier(dsn: str, schema: str) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(InvalidIdentifierError, match="schema name"),
    ):
        PostgresCheckpointer(conn, schema=schema)


def test_tenant_ids_follow_the_shared_rule(dsn: str) -> None:
    # The same rule as the store's and the chat histories' (db._tenancy).
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(ConfigurationError, match="tenant_id must be a plain str"):
            PostgresCheckpointer(conn, tenant_id=42)  # type: ignore[arg-type]
        for bad in ("a\x00b", "a\tb"):
            with pytest.raises(ConfigurationError, match="control character"):
                PostgresCheckpointer(conn, tenant_id=bad)
        with pytest.raises(ConfigurationError, match="256 characters long"):
            PostgresCheckpointer(conn, tenant_id="t" * 256)
        with pytest.raises(ConfigurationError, match="lone surrogate"):
            PostgresCheckpointer(conn, tenant_id="a\ud800")


async def test_sync_call_on_the_event_loop_thread_is_refused(async_saver: Any) -> None:
    with pytest.raises(asyncio.InvalidStateError, match="aget_tuple"):
        async_saver.get_tuple({"configurable": {"thread_id": "x"}})


async def test_sync_call_from_another_thread_works(async_saver: Any) -> None:
    result = await asyncio.to_thread(async_saver.get_tuple, {"configurable": {"thread_id": "none"}})
    assert result is None


async def test_prune_arguments_are_checked(cp: Driver) -> None:
    with pytest.raises(TypeError, match="not a str"):
        await cp.call("prune", "thread-1")
    with pytest.raises(ValueError, match="unknown prune strategy 'everything'"):
        await cp.call("prune", ["thread-1"], strategy="everything")


async def test_forged_value_that_would_run_a_command_is_refused(
    cp: Driver, dsn: str, tmp_path: Any
) -> None:
    """A database writer who forges a plaintext value naming ``os.system`` gets nothing run."""
    import ormsgpack

    from haive_langgraph.codec import Kind, RowContext
    from haive_langgraph.codec._guard import UnsafeValueError

    tid = f"forged-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
    saved = await cp.call(
        "put",
        config,
        checkpoint_with({"notes": "x" * 400}),
        {"source": "input", "step": -1},
        {"notes": 1},
    )
    marker = tmp_path / "pwned"
    record = ormsgpack.packb(("os", "system", f"touch {marker}"))
    payload = b"msgpack\x00" + ormsgpack.packb(ormsgpack.Ext(0, record))
    with psycopg.connect(dsn, autocommit=True) as conn:
        (key,) = conn.execute("SELECT key FROM haive.blobs WHERE family_id = %s", (tid,)).fetchone()
        frame = cp.saver.codec.encode(payload, RowContext("", tid, Kind.BLOB, key))
        conn.execute("UPDATE haive.blobs SET data = %s WHERE family_id = %s", (frame, tid))
        with pytest.raises(UnsafeValueError, match=r"os\.system") as info:
            PostgresCheckpointer(conn).get_tuple(saved)
    assert isinstance(info.value, CorruptDataError)
    assert "'notes'" in str(info.value)
    assert not marker.exists()


async def test_values_langgraph_registers_as_safe_still_load(cp: Driver, dsn: str) -> None:
    import datetime
    import pathlib

    tid = f"safe-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
    value = {
        "when": datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC),
        "where": pathlib.Path("/tmp/x"),
        "seen": {1, 2, 3},
        "pad": "y" * 400,
    }
    saved = await cp.call(
        "put", config, checkpoint_with({"v": value}), {"source": "input", "step": -1}, {"v": 1}
    )
    with psycopg.connect(dsn, autocommit=True) as conn:  # a fresh reader decodes every row
        loaded = PostgresCheckpointer(conn).get_tuple(saved)
    assert loaded is not None
    assert loaded.checkpoint["channel_values"]["v"] == value
