"""get_tuple of a thread's latest checkpoint, built from memory after a probe.

The saver answers from memory only when the probe finds the row it holds,
column for column, still the latest and without pending writes; whatever
another writer changed (a newer checkpoint, pending writes, a prune, a
delete, a row rewritten in place) is read from the database instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.checkpointers import _ops as ops
from haive_langgraph.codec import KeyRing

from .conftest import Driver


def checkpoint_of(messages: list[Any], version: int, **values: Any) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": messages, **values}
    cp["channel_versions"] = {"messages": version, **dict.fromkeys(values, version)}
    return cp


def new_thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"head-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}


@contextmanager
def row_reads() -> Iterator[list[int]]:
    """Count the full checkpoint reads (``get_op``) made meanwhile."""
    count = [0]
    original = ops.get_op

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return (yield from original(*args, **kwargs))

    ops.get_op = counting  # type: ignore[assignment]
    try:
        yield count
    finally:
        ops.get_op = original  # type: ignore[assignment]


def as_data(tup: Any) -> dict[str, Any]:
    if tup is None:
        return {}
    values = dict(tup.checkpoint["channel_values"])
    values["messages"] = [(type(m).__name__, m.model_dump()) for m in values["messages"]]
    return {
        "config": tup.config,
        "parent": tup.parent_config,
        "checkpoint": {**tup.checkpoint, "channel_values": values},
        "metadata": tup.metadata,
        "writes": tup.pending_writes,
    }


def fresh_tuple(dsn: str, config: Any, **kwargs: Any) -> Any:
    with PostgresCheckpointer.from_conn_string(dsn, **kwargs) as reader:
        return reader.get_tuple(config)


async def write_two(cp: Driver, config: Any) -> Any:
    meta = {"source": "loop", "step": 0, "user": "ann", "score": 1.5, "nested": {"a": [1, None]}}
    first = [HumanMessage(content="hi", id="h1")]
    saved = await cp.call("put", config, checkpoint_of(first, 1), meta, {"messages": 1})
    second = [*first, AIMessage(content="hello", id="a1", response_metadata={"m": 1})]
    cp2 = checkpoint_of(second, 2, count=7, title="short", payload={"k": [1, 2]})
    return await cp.call(
        "put",
        saved,
        cp2,
        {**meta, "step": 1},
        {"messages": 2, "count": 2, "title": 2, "payload": 2},
    )


async def test_the_latest_checkpoint_is_answered_from_memory_as_a_read_would(
    cp: Driver, dsn: str
) -> None:
    config = new_thread()
    await write_two(cp, config)
    with row_reads() as reads:
        ours = await cp.call("get_tuple", config)
        again = await cp.call("get_tuple", config)
    assert reads[0] == 0  # the probe only
    expected = as_data(await asyncio.to_thread(fresh_tuple, dsn, config))
    assert as_data(ours) == as_data(again) == expected
    # Fresh objects each time, as a read gives.
    assert (
        ours.checkpoint["channel_values"]["messages"][1]
        is not (again.checkpoint["channel_values"]["messages"][1])
    )
    assert (
        ours.checkpoint["channel_values"]["payload"]
        is not (again.checkpoint["channel_values"]["payload"])
    )
    ours.metadata["nested"]["a"].append("mutated")
    ours.checkpoint["channel_versions"]["messages"] = 99
    assert as_data(await cp.call("get_tuple", config)) == expected


def other_put(dsn: str, config: Any) -> None:
    with PostgresCheckpointer.from_conn_string(dsn) as other:
        tup = other.get_tuple(config)
        assert tup is not None
        messages = [*tup.checkpoint["channel_values"]["messages"], HumanMessage("x", id="h9")]
        other.put(tup.config, checkpoint_of(messages, 3), {"source": "loop"}, {"messages": 3})


def other_writes(dsn: str, config: Any) -> None:
    with PostgresCheckpointer.from_conn_string(dsn) as other:
        tup = other.get_tuple(config)
        assert tup is not None
        other.put_writes(tup.config, [("messages", [HumanMessage("w", id="w1")])], "task-1")


def other_prune(dsn: str, config: Any) -> None:
    with PostgresCheckpointer.from_conn_string(dsn) as other:
        other.prune([config["configurable"]["thread_id"]])


def other_delete(dsn: str, config: Any) -> None:
    with PostgresCheckpointer.from_conn_string(dsn) as other:
        other.delete_thread(config["configurable"]["thread_id"])


def rewrite_in_place(dsn: str, config: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            'UPDATE haive.checkpoints SET metadata = metadata || \'{"user": "bob"}\','
            " inline_values = inline_values || '{\"count\": 8}'"
            " WHERE thread_id = %s",
            (config["configurable"]["thread_id"],),
        )


@pytest.mark.parametrize(
    "change", [other_put, other_writes, other_prune, other_delete, rewrite_in_place]
)
async def test_what_another_writer_changed_is_read(cp: Driver, dsn: str, change: Any) -> None:
    config = new_thread()
    await write_two(cp, config)
    await cp.call("get_tuple", config)
    await asyncio.to_thread(change, dsn, config)
    ours = await cp.call("get_tuple", config)
    assert as_data(ours) == as_data(await asyncio.to_thread(fresh_tuple, dsn, config))


async def test_an_encrypting_saver_answers_from_memory_too(dsn: str) -> None:
    ring = KeyRing({"g1": os.urandom(32)})

    def run() -> tuple[Any, Any, int]:
        with PostgresCheckpointer.from_conn_string(dsn, keyring=ring) as saver:
            saver.setup()
            config = new_thread()
            saver.put(
                config,
                checkpoint_of([HumanMessage("secret", id="h1")], 1, title="t"),
                {"source": "input"},
                {"messages": 1, "title": 1},
            )
            with row_reads() as reads:
                ours = saver.get_tuple(config)
            return ours, fresh_tuple(dsn, config, keyring=ring), reads[0]

    ours, fresh, reads = await asyncio.to_thread(run)
    assert reads == 0
    assert as_data(ours) == as_data(fresh)


async def test_a_tenant_shredded_elsewhere_is_not_served_from_memory(dsn: str) -> None:
    """Another process shreds the tenant (nothing tells this saver): as soon as its
    keyring knows, the latest checkpoint fails as a read of the row fails."""
    from haive_langgraph.codec import KeyDestroyedError
    from haive_langgraph.ops.keys import PostgresTenantKeyStore, forget_tenant_key

    master = os.urandom(32)
    tenant = f"gone{uuid.uuid4().hex[:6]}"

    def run() -> None:
        admin_store, store = PostgresTenantKeyStore(dsn), PostgresTenantKeyStore(dsn)
        try:
            admin_store.setup()
            admin = KeyRing([("m1", master)], tenant_store=admin_store)
            admin.create_tenant_key(tenant)
            ring = KeyRing([("m1", master)], tenant_store=store, cache_ttl=0)
            with PostgresCheckpointer.from_conn_string(dsn, keyring=ring, tenant_id=tenant) as s:
                s.setup()
                config = new_thread()
                s.put(config, checkpoint_of([HumanMessage("x", id="h1")], 1), {}, {"messages": 1})
                assert s.get_tuple(config) is not None
                forget_tenant_key(admin, tenant)
                with pytest.raises(KeyDestroyedError):
                    s.get_tuple(config)
        finally:
            admin_store.close()
            store.close()

    await asyncio.to_thread(run)
