"""What the write path sends: list items as they are at put time, typed arrays, metadata JSON."""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.checkpointers._values import metadata_text
from haive_langgraph.db._arrays import BigintArray, BoolArray, ByteaArray, IntArray, TextArray
from haive_langgraph.errors import SerializationError

from .conftest import Driver


def messages_checkpoint(messages: list[Any], version: int) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": messages}
    cp["channel_versions"] = {"messages": version}
    return cp


async def test_message_edited_in_place_between_puts_is_stored(cp: Driver, dsn: str) -> None:
    """Unchanged items are recognised by their bytes, or by identity and shape: an edit is stored."""
    config = {"configurable": {"thread_id": f"edit-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}
    first, second = HumanMessage(content="hello", id="h1"), AIMessage(content="hi", id="a1")
    messages = [first, second]
    meta = {"source": "loop", "step": 0}
    saved = await cp.call("put", config, messages_checkpoint(messages, 1), meta, {"messages": 1})
    first.content = "hello, edited"
    messages.append(HumanMessage(content="more", id="h2"))
    saved = await cp.call("put", saved, messages_checkpoint(messages, 2), meta, {"messages": 2})
    second.content = "hi, edited"  # an item the list already held, edited after an append
    saved = await cp.call("put", saved, messages_checkpoint(messages, 3), meta, {"messages": 3})

    def read_fresh() -> list[str]:
        with PostgresCheckpointer.from_conn_string(dsn) as reader:  # nothing cached
            tup = reader.get_tuple(saved)
            assert tup is not None
            return [m.content for m in tup.checkpoint["channel_values"]["messages"]]

    assert await asyncio.to_thread(read_fresh) == ["hello, edited", "hi, edited", "more"]
    tup = await cp.call("get_tuple", saved)
    assert [m.content for m in tup.checkpoint["channel_values"]["messages"]] == [
        "hello, edited",
        "hi, edited",
        "more",
    ]


@pytest.mark.parametrize(
    ("array", "pg_type"),
    [
        (IntArray([]), "integer[]"),
        (IntArray([0, 1, -2, 2**31 - 1, -(2**31)]), "integer[]"),
        (IntArray([None, 5, None]), "integer[]"),
        (BigintArray([]), "bigint[]"),
        (BigintArray([2**62, -(2**63), 7]), "bigint[]"),
        (BigintArray([None]), "bigint[]"),
        (TextArray([]), "text[]"),
        (TextArray(["a", "", "é😀", "x" * 3000]), "text[]"),
        (TextArray([None, "x"]), "text[]"),
        (ByteaArray([]), "bytea[]"),
        (ByteaArray([b"", b"\x00\xff", bytes(range(256)) * 8]), "bytea[]"),
        (ByteaArray([b"x", None]), "bytea[]"),
        (BoolArray([]), "boolean[]"),
        (BoolArray([True, False, True]), "boolean[]"),
        (BoolArray([None, False]), "boolean[]"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{type(v).__name__}{len(v)}",
)
def test_typed_arrays_round_trip_with_their_type(dsn: str, array: Any, pg_type: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(binary=True) as cur:
        cur.execute("SELECT %(a)s, pg_typeof(%(a)s)::text", {"a": array})
        row = cur.fetchone()
    assert row is not None
    assert row[0] == list(array)
    assert row[1] == pg_type


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"source": "loop", "step": 3, "parents": {}},
        {"user": "é😀", "n": 1.5, "nested": {"a": [1, None, True]}, "big": 2**70},
        # A key holding a backslash and "u0000" is text, not a NUL: accepted as before.
        {"path\\u0000": "x", "dir\\ud800": 1},
    ],
)
def test_metadata_text_is_the_json_of_the_metadata(metadata: dict[str, Any]) -> None:
    out, text = metadata_text(metadata)
    assert out == metadata and out is not metadata
    assert json.loads(text) == metadata


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"ok": 1, "when": object()}, "when"),
        ({"ok": 1, "ratio": math.nan}, "ratio"),
        ({"ok": 1, "deep": {"x": [math.inf]}}, "deep"),
        ({"ok": 1, "nul": "a\x00b"}, "nul"),
        ({"ok": 1, "half": "a\ud800b"}, "half"),
        ({"ok": 1, "a\x00b": 1}, "a\x00b"),
        ({"ok": 1, 7: "seven"}, 7),
        ({"first": object(), "second": "\x00"}, "first"),
    ],
)
def test_bad_metadata_names_the_first_bad_key(metadata: dict[Any, Any], key: Any) -> None:
    with pytest.raises(SerializationError, match=f"metadata key {re.escape(repr(key))} "):
        metadata_text(metadata)


async def test_metadata_is_stored_as_given(cp: Driver) -> None:
    config = {"configurable": {"thread_id": f"meta-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}
    meta = {"source": "input", "step": -1, "user": "é😀", "score": 0.5, "tags": ["b", "a"]}
    saved = await cp.call("put", config, messages_checkpoint([], 1), meta, {"messages": 1})
    tup = await cp.call("get_tuple", saved)
    assert {k: tup.metadata[k] for k in meta} == meta


def _prepared_statements(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT statement FROM pg_prepared_statements", prepare=False)
    return [str(r[0]) for r in rows]


async def _hot_calls(saver: Any) -> None:
    """One put, one put_writes and one get_tuple, as the first calls of a connection."""
    config = {"configurable": {"thread_id": f"prep-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}
    checkpoint = messages_checkpoint([HumanMessage(content="hi", id="h1")], 1)
    meta = {"source": "loop", "step": 0}

    async def call(method: str, *args: Any) -> Any:
        if isinstance(saver, AsyncPostgresCheckpointer):
            return await getattr(saver, f"a{method}")(*args)
        return await asyncio.to_thread(getattr(saver, method), *args)

    saved = await call("put", config, checkpoint, meta, {"messages": 1})
    await call("put_writes", saved, [("messages", [AIMessage(content="hello", id="a1")])], "task")
    assert (await call("get_tuple", saved)) is not None


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("threshold", [5, None], ids=["direct", "pooler"])
async def test_every_step_statements_are_prepared_by_their_first_call(
    dsn: str, kind: str, threshold: int | None
) -> None:
    """put, put_writes and get_tuple are prepared at once, not after psycopg's 5 plain runs.

    Each of a pool's connections would otherwise parse and plan them 5 times
    before preparing them. With ``prepare_threshold=None`` (a transaction
    pooler) nothing is prepared.
    """
    if kind == "sync":
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=threshold) as conn:
            saver: Any = PostgresCheckpointer(conn)
            await asyncio.to_thread(saver.setup)
            await _hot_calls(saver)
            prepared = _prepared_statements(conn)
    else:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, prepare_threshold=threshold
        ) as aconn:
            saver = AsyncPostgresCheckpointer(aconn)
            await saver.setup()
            await _hot_calls(saver)
            rows = await aconn.execute(
                "SELECT statement FROM pg_prepared_statements", prepare=False
            )
            prepared = [str(r[0]) for r in await rows.fetchall()]
    if threshold is None:
        assert prepared == []
        return
    assert any(re.search(r"INSERT INTO \S+\.checkpoints", s) for s in prepared), prepared
    assert any(re.search(r"INSERT INTO \S+\.writes", s) for s in prepared), prepared
    assert any(re.search(r"FROM \S+\.lineage_items AS li", s) for s in prepared), prepared
