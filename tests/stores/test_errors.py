"""Bad input gets a clear error, and nothing of the operation is written."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import psycopg
import pytest
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, PutOp, SearchOp

from haive_langgraph.errors import ConfigurationError, SerializationError
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.stores.conftest import Driver

NS = tuple[str, ...]


@pytest.mark.parametrize("bad", [("a.b",), ("",), ("ok", ""), (1,), ("a", None), ("a\x00",)])
async def test_invalid_namespaces(store: Driver, bad: Any) -> None:
    with pytest.raises(InvalidNamespaceError):
        await store.put(bad, "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        await store.get(bad, "k")
    with pytest.raises(InvalidNamespaceError):
        await store.search(bad)
    with pytest.raises(InvalidNamespaceError):
        await store.list_namespaces(prefix=bad)
    with pytest.raises(InvalidNamespaceError):
        await store.list_namespaces(suffix=bad)
    # Ops handed to batch directly are checked too.
    for op in (PutOp(bad, "k", {"v": 1}), GetOp(bad, "k"), SearchOp(bad)):
        with pytest.raises(InvalidNamespaceError):
            await store.batch([op])


async def test_empty_namespace_cannot_hold_items(store: Driver) -> None:
    with pytest.raises(InvalidNamespaceError, match="empty"):
        await store.batch([PutOp((), "k", {"v": 1})])


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": {"b": object()}}, "value['a']['b'] is a object"),
        ({"when": [1, {"x": {1, 2}}]}, "value['when'][1]['x'] is a set"),
        ({"n": math.nan}, "value['n'] is nan"),
        ({"n": [math.inf]}, "value['n'][0] is inf"),
        ({"m": {1: "x"}}, "value['m'][1] is a int key"),
        ({"big": 2**70}, "value['big'] is an integer outside the 64-bit range"),
        ({"t": ["ok", "a\x00b"]}, "value['t'][1] contains a NUL character"),
        ({"m": {"k\x00": 1}}, "value['m']['k\\x00'] (the key) contains a NUL character"),
    ],
)
async def test_values_that_are_not_json(
    store: Driver, ns: NS, value: dict[str, Any], where: str
) -> None:
    with pytest.raises(SerializationError) as err:
        await store.batch([PutOp(ns, "good", {"v": 1}), PutOp(ns, "bad-key", value)])
    assert "'bad-key'" in str(err.value) and where in str(err.value)
    assert isinstance(err.value, TypeError)
    assert await store.get(ns, "good") is None  # nothing of the batch was written


async def test_value_must_be_a_mapping(store: Driver, ns: NS) -> None:
    with pytest.raises(SerializationError, match="must be a dict"):
        await store.batch([PutOp(ns, "k", ["not", "a", "dict"])])  # type: ignore[arg-type]


async def test_bad_keys_and_arguments(store: Driver, ns: NS) -> None:
    with pytest.raises(ConfigurationError, match="NUL"):
        await store.put(ns, "a\x00b", {"v": 1})
    with pytest.raises(ConfigurationError, match="limit"):
        await store.search(ns, limit=-1)
    with pytest.raises(ConfigurationError, match="offset"):
        await store.search(ns, offset=1.5)
    with pytest.raises(ConfigurationError, match="max_depth"):
        await store.list_namespaces(max_depth=0)
    with pytest.raises(ConfigurationError, match="unknown store operation"):
        await store.batch([("not", "an", "op")])
    with pytest.raises(ConfigurationError, match="unknown namespace match type"):
        from langgraph.store.base import MatchCondition

        await store.batch([ListNamespacesOp((MatchCondition("middle", ("a",)),))])  # type: ignore[arg-type]


async def test_namespaces_and_keys_too_long_to_index(store: Driver, ns: NS) -> None:
    label = "ä" * 600  # 1,200 bytes of UTF-8
    # Each label counts 8 bytes more than its UTF-8 (its length and alignment in text[]).
    with pytest.raises(InvalidNamespaceError, match=f"takes {1200 + len(ns[0]) + 16} bytes"):
        await store.batch([PutOp(ns, "ok", {"v": 1}), PutOp((*ns, label), "k", {"v": 1})])
    with pytest.raises(ConfigurationError, match="at most 1024"):
        await store.put((*ns, "a" * 500), "k" * 600, {"v": 1})
    assert await store.get(ns, "ok") is None  # nothing of the batch was written
    # The longest allowed address is stored, and reads of longer ones find nothing.
    longest = (*ns, "b" * (1000 - 16 - len(ns[0]))), "k" * 24
    await store.put(*longest, {"v": 2})
    assert (await store.get(*longest)).value == {"v": 2}
    assert await store.get((*ns, label), "k") is None
    await store.delete((*ns, label), "k")


async def test_keys_are_converted_like_base_store(store: Driver, ns: NS) -> None:
    await store.batch([PutOp(ns, 42, {"v": 1})])  # type: ignore[arg-type]
    assert (await store.get(ns, "42")).value == {"v": 1}


def test_nul_characters_are_kept_when_nothing_is_searchable(dsn: str, ns: NS) -> None:
    # Only the jsonb copy that filters read cannot hold NUL; the stored value can.
    value = {"t": "a\x00b", "k\x00": [1]}
    with PostgresStore.from_conn_string(dsn, filter_fields=[]) as store:
        store.setup()
        store.put(ns, "k", value)
        got = store.get(ns, "k")
        assert got is not None and got.value == value


def test_lent_connections(dsn: str, ns: NS) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        store = PostgresStore(conn)
        store.setup()
        store.put(ns, "k", {"v": 1})
        assert store.get(ns, "k").value == {"v": 1}
        store.close()
        assert not conn.closed  # a lent connection stays open
    with psycopg.connect(dsn) as conn, pytest.raises(ConfigurationError, match="autocommit"):
        PostgresStore(conn)


async def test_lent_async_connection(dsn: str, ns: NS) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        store = AsyncPostgresStore(conn)
        await store.setup()
        await store.aput(ns, "k", {"v": 1})
        assert (await store.aget(ns, "k")).value == {"v": 1}
        with pytest.raises(ConfigurationError, match="sync"):
            PostgresStore(conn)  # type: ignore[arg-type]
    finally:
        await conn.close()


async def test_sync_calls_on_the_async_store(async_store: AsyncPostgresStore, ns: NS) -> None:
    with pytest.raises(asyncio.InvalidStateError, match=r"await store\.aput"):
        async_store.put(ns, "k", {"v": 1})
    await asyncio.to_thread(async_store.put, ns, "k", {"v": 1})
    assert (await asyncio.to_thread(async_store.get, ns, "k")).value == {"v": 1}
    assert [i.key for i in await asyncio.to_thread(async_store.search, ns)] == ["k"]


def test_bad_filter_fields(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="filter_fields"):
        PostgresStore(dsn, filter_fields="meta.kind")
    with pytest.raises(ConfigurationError, match="filter_fields"):
        PostgresStore(dsn, filter_fields=["a..b"])
