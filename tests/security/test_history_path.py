"""The chat-history hot path: one statement per append, one per read, and what it keeps.

An append is planned in Python (messages checked, serialised together in one
call, framed once) and stored by one prepared statement; a read is one
statement whose plan must not depend on the tables having statistics. These
tests hold what that fast path must not lose: the stored bytes are those of
the messages serialised one by one, the per-message size limit applies to
each message and not to the batch, an append is one round trip, and a read
touches only its session's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from haive_langgraph.codec import Kind, RowContext
from haive_langgraph.memory import (
    AsyncPostgresChatMessageHistory,
    ConversationStore,
    PostgresChatMessageHistory,
)
from haive_langgraph.memory.conversations._codec import MESSAGES_KEY
from haive_langgraph.memory.conversations._messages import bounds

FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])


@pytest.fixture(scope="module")
def db(dsn: str) -> Iterator[str]:
    with ConversationStore(dsn) as store:
        store.setup()
    yield dsn


def history(flavour: str, sid: str, conn: Any, **kwargs: Any) -> Any:
    if flavour == "async":
        return AsyncPostgresChatMessageHistory(sid, conn, **kwargs)
    return PostgresChatMessageHistory(sid, conn, **kwargs)


async def call(h: Any, method: str, *args: Any) -> Any:
    if isinstance(h, AsyncPostgresChatMessageHistory):
        return await getattr(h, "a" + method)(*args)
    return await asyncio.to_thread(getattr(h, method), *args)


async def close(h: Any) -> None:
    if isinstance(h, AsyncPostgresChatMessageHistory):
        await h.aclose()
    else:
        h.close()


def chat(n: int) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for i in range(n):
        if i % 3 == 0:
            out.append(HumanMessage(f"question {i} " * 20, id=f"h-{i}"))
        elif i % 3 == 1:
            out.append(
                AIMessage(
                    f"answer {i} " * 30,
                    id=f"a-{i}",
                    tool_calls=[{"name": "f", "args": {"x": i}, "id": f"c-{i}"}],
                    usage_metadata={"input_tokens": i, "output_tokens": 2, "total_tokens": i + 2},
                    extra_field=i,
                )
            )
        else:
            out.append(ToolMessage(f"result {i}", tool_call_id=f"c-{i - 1}"))  # no id
    return out


@FLAVOURS
async def test_the_stored_batch_is_the_messages_serialised_one_by_one(
    db: str, flavour: str
) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    h = history(flavour, sid, db)
    try:
        messages = chat(12)
        await call(h, "add_messages", messages)
        ops = h._tables
        with psycopg.connect(db, autocommit=True) as conn:
            ids, body = conn.execute(
                "SELECT message_ids, body FROM haive.conversation_messages "
                "WHERE conversation_id = %s",
                (sid,),
            ).fetchone()  # type: ignore[misc]
        ctx = RowContext(ops.tenant_id, sid, Kind.MESSAGE, MESSAGES_KEY)
        payload = ops.codec.decode(bytes(body), ctx)
        one_by_one = ops.messages.payload(
            [ops.messages.item(m, mid, None, "x") for m, mid in zip(messages, ids, strict=True)]
        )
        assert payload == one_by_one
        got = await call(h, "get_messages")
        assert got == messages
    finally:
        await close(h)


@FLAVOURS
async def test_the_size_limit_is_per_message_not_per_batch(db: str, flavour: str) -> None:
    """Three messages of ~900 bytes under a 2,000-byte limit: the batch (~2,700
    bytes together) is stored, and reads back whole."""
    sid = f"s-{uuid.uuid4().hex[:8]}"
    h = history(flavour, sid, db, max_message_bytes=2_000)
    try:
        batch = [HumanMessage(f"{i}" + "x" * 900, id=f"m-{i}") for i in range(3)]
        await call(h, "add_messages", batch)
        assert await call(h, "get_messages") == batch
    finally:
        await close(h)


def _messages_sent(trace: str) -> list[str]:
    """The frontend messages of a libpq trace, in order (``Parse``, ``Bind``, ``Sync``...)."""
    return [line.split("\t")[2] for line in trace.splitlines() if line.startswith("F\t")]


@FLAVOURS
async def test_an_append_is_one_round_trip_of_a_statement_prepared_at_its_first_run(
    db: str, flavour: str, tmp_path: Any
) -> None:
    """On a lent connection: the first append prepares its statement (no waiting for
    psycopg's fifth run), every later one is Bind/Describe/Execute/Sync, once."""
    sid = f"s-{uuid.uuid4().hex[:8]}"
    if flavour == "async":
        conn: Any = await psycopg.AsyncConnection.connect(db, autocommit=True)
    else:
        conn = psycopg.connect(db, autocommit=True)
    h = history(flavour, sid, conn)
    path = tmp_path / "trace"
    try:
        await call(h, "add_messages", chat(2))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            conn.pgconn.trace(fd)
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            await call(h, "add_messages", chat(2))
            await call(h, "add_messages", chat(5))
            conn.pgconn.untrace()
        finally:
            os.close(fd)
        sent = _messages_sent(path.read_text())
        assert sent == ["Bind", "Describe", "Execute", "Sync"] * 2
        assert len(await call(h, "get_messages")) == 9
    finally:
        await close(h)
        if flavour == "async":
            await conn.close()
        else:
            conn.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_a_read_scans_only_its_sessions_rows_before_any_analyze(dsn: str) -> None:
    """A new deployment's tables have no statistics yet: reading one session of 30
    must still be a key range scan of that session's rows, not a join over every
    message of the tenant (the plan a prepared read would keep until ANALYZE)."""
    schema = f"fresh_{uuid.uuid4().hex[:8]}"
    conn = psycopg.connect(dsn, autocommit=True)
    factory = None
    try:
        from haive_langgraph.memory import history_factory

        factory = history_factory(conn, schema=schema)
        factory.setup()
        for table in ("conversations", "conversation_messages"):
            conn.execute(f'ALTER TABLE "{schema}".{table} SET (autovacuum_enabled = false)')
        for k in range(30):
            h = factory(f"s{k}")
            for _ in range(3):
                h.add_messages(chat(4))
        ops = factory("s7")._tables
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + ops.read_bodies,
            bounds(ops, "s7", 0, 2**62, None),
        ).fetchone()
        assert row is not None
        scans = [
            n
            for n in _nodes(row[0][0]["Plan"])
            if n.get("Relation Name") == "conversation_messages"
        ]
        assert scans, row[0]
        read = sum(
            n["Actual Rows"] * n["Actual Loops"] + n.get("Rows Removed by Filter", 0) for n in scans
        )
        assert read == 3  # the session's 3 batch rows, none of the other 87
        assert len(factory("s7").messages) == 12
    finally:
        if factory is not None:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()
