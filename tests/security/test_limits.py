"""Write-time limits: what a write accepts a read returns, in every component.

The codec refuses to frame a payload larger than ``max_decompressed_size``,
the limit its reader expands a frame to; every component turns that into a
:class:`ValueTooLargeError` naming the value as the caller knows it (thread
and channel, namespace and key, session and messages) and writes nothing of
the call. Ids longer than PostgreSQL's btree entries allow, values and
filters nested deeper than our serialisers handle, and text PostgreSQL cannot
hold are refused with our errors before any statement runs.

Most size tests lower the limit through the codec's configuration (a
256 KiB ``max_decompressed_size``); the checkpointer and chat-history cases
also run once at the real default of 64 MiB.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.store.base import InvalidNamespaceError, PutOp
from psycopg import sql

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.codec import Compression, HaiveCodec, KeyRing, Kind, RowContext
from haive_langgraph.codec._compression import DEFAULT_MAX_DECOMPRESSED_SIZE
from haive_langgraph.db._limits import MAX_DEPTH, MAX_ID_BYTES
from haive_langgraph.errors import ConfigurationError, HaiveError, ValueTooLargeError
from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncPostgresChatMessageHistory,
    AsyncSessionStore,
    AsyncVectorMemory,
    ConversationMetadata,
    ConversationStore,
    HashingEmbeddings,
    PostgresChatMessageHistory,
    SessionStore,
    VectorMemory,
)
from haive_langgraph.ops.cache import CacheLayer, InMemoryCache
from haive_langgraph.stores import AsyncPostgresStore, InvalidFilterError, PostgresStore

SMALL = 256 * 1024
KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()
FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])


def small_codec(**kwargs: Any) -> HaiveCodec:
    return HaiveCodec(compression=Compression(max_decompressed_size=SMALL), **kwargs)


def tenant() -> str:
    return f"lim-{uuid.uuid4().hex[:10]}"


def footprint(dsn: str, tenant_id: str) -> dict[str, int]:
    """Rows of ``tenant_id`` in every table of ours (all carry ``tenant_id``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'haive' AND column_name = 'tenant_id' ORDER BY 1"
            )
        ]
        counts: dict[str, int] = {}
        for table in tables:
            stmt = sql.SQL("SELECT count(*) FROM haive.{} WHERE tenant_id = %s").format(
                sql.Identifier(table)
            )
            row = conn.execute(stmt, (tenant_id,)).fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts


def wide(nbytes: int, seed: int) -> str:
    """``nbytes`` of UTF-8 as random 4-byte characters: nothing for PostgreSQL to compress."""
    rnd = random.Random(seed)
    return "".join(chr(rnd.randrange(0x10000, 0x10FFFF)) for _ in range(nbytes // 4))


def deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


async def run(obj: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``obj.a<method>`` for async classes (``await obj.setup()``), ``obj.<method>`` in a
    thread otherwise."""
    if type(obj).__name__.startswith("Async"):
        out = getattr(obj, method if method == "setup" else f"a{method}")(*args, **kwargs)
        return [x async for x in out] if hasattr(out, "__aiter__") else await out
    fn = getattr(obj, method)

    def call() -> Any:
        out = fn(*args, **kwargs)
        return list(out) if method == "list" else out

    return await asyncio.to_thread(call)


async def close(obj: Any) -> None:
    if hasattr(obj, "aclose"):
        await obj.aclose()
    else:
        await asyncio.to_thread(obj.close)


@pytest.fixture(scope="module")
def db(dsn: str) -> str:
    saver = PostgresCheckpointer(dsn)
    saver.setup()
    saver.close()
    store = PostgresStore(dsn)
    store.setup()
    store.close()
    with ConversationStore(dsn) as conversations:
        conversations.setup()
    return dsn


def saver_for(flavour: str, dsn: str, **kwargs: Any) -> Any:
    cls = AsyncPostgresCheckpointer if flavour == "async" else PostgresCheckpointer
    return cls(dsn, **kwargs)


def checkpoint_with(values: dict[str, Any]) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = dict.fromkeys(values, 1)
    return cp


def config(thread_id: str, ns: str = "", checkpoint_id: str | None = None) -> Any:
    conf = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


META: Any = {"source": "input", "step": -1}


# -- the codec: one limit for writer and reader -----------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("content", ["repetitive", "random"])
def test_the_codec_refuses_to_frame_what_its_reader_would_refuse(
    encrypted: bool, compressed: bool, content: str
) -> None:
    codec = HaiveCodec(
        compression=Compression(enabled=compressed, max_decompressed_size=SMALL),
        keyring=KeyRing.from_string(KEYS) if encrypted else None,
    )
    ctx = RowContext("acme", "thread-1", Kind.BLOB, "k")

    def payload(n: int) -> bytes:
        return b"x" * n if content == "repetitive" else random.Random(n).randbytes(n)

    at_limit = payload(SMALL)
    assert codec.decode(codec.encode(at_limit, ctx), ctx) == at_limit
    with pytest.raises(ValueTooLargeError) as err:
        codec.encode(payload(SMALL + 1), ctx)
    assert (err.value.size, err.value.limit) == (SMALL + 1, SMALL)
    assert "thread-1" in str(err.value) and f"{SMALL:,} bytes" in str(err.value)
    assert isinstance(err.value, HaiveError) and isinstance(err.value, ValueError)


def test_key_rotation_keeps_an_oversized_legacy_row_readable() -> None:
    # Written uncompressed under a larger limit (or before writes were limited):
    # readable, and re-encrypting it must keep it so (uncompressed), not refuse it.
    ctx = RowContext("acme", "thread-1", Kind.BLOB, "k")
    legacy = HaiveCodec(compression=Compression(enabled=False, max_decompressed_size=4 * SMALL))
    value = b"x" * (2 * SMALL)
    frame = legacy.encode(value, ctx)
    rotating = small_codec(keyring=KeyRing.from_string(KEYS))
    assert rotating.decode(frame, ctx) == value
    assert rotating.decode(rotating.reencode(frame, ctx), ctx) == value


# -- checkpointer -------------------------------------------------------------------------------


async def test_checkpointer_put_over_the_default_limit_writes_nothing(db: str) -> None:
    """The real default (64 MiB): a 70 MiB channel value is refused, the thread kept."""
    assert DEFAULT_MAX_DECOMPRESSED_SIZE == 64 * 1024 * 1024
    who = tenant()
    saver = PostgresCheckpointer(db, tenant_id=who)
    try:
        first = await run(saver, "put", config("big"), checkpoint_with({"v": "small"}), META, {})
        before = footprint(db, who)
        huge = "x" * (70 * 1024 * 1024)
        cp = checkpoint_with({"v": huge, "w": "other"})
        with pytest.raises(ValueTooLargeError) as err:
            await run(saver, "put", first, cp, {"source": "loop", "step": 0}, {"v": 2, "w": 2})
        message = str(err.value)
        assert "channel 'v'" in message and "thread 'big'" in message
        assert "67,108,864 bytes" in message and err.value.size > 70 * 1024 * 1024
        assert footprint(db, who) == before
        reader = PostgresCheckpointer(db, tenant_id=who)
        latest = await run(reader, "get_tuple", config("big"))
        await close(reader)
        assert latest.checkpoint["channel_values"] == {"v": "small"}
    finally:
        await close(saver)


@FLAVOURS
async def test_checkpointer_put_and_put_writes_over_the_limit_write_nothing(
    db: str, flavour: str
) -> None:
    who = tenant()
    saver = saver_for(flavour, db, tenant_id=who, codec=small_codec())
    # A second instance reads: the writer remembers what it wrote and would not decode it.
    reader = saver_for(flavour, db, tenant_id=who, codec=small_codec())
    try:
        fits = "y" * (SMALL - 1024)
        saved = await run(saver, "put", config("t"), checkpoint_with({"v": fits}), META, {"v": 1})
        got = await run(reader, "get_tuple", saved)
        assert got.checkpoint["channel_values"]["v"] == fits  # what a put accepts, a get returns
        before = footprint(db, who)
        too_big = "z" * (SMALL + 1)
        # A list channel: the item is named by its position.
        with pytest.raises(ValueTooLargeError, match=r"item 2 of channel 'msgs'.*thread 't'"):
            await run(
                saver, "put", saved,
                checkpoint_with({"msgs": ["a", "b", too_big], "ok": "fine " * 100}),
                {"source": "loop", "step": 0}, {"msgs": 2, "ok": 2},
            )  # fmt: skip
        # Pending writes: one too large, the others in the same call are not written either.
        with pytest.raises(ValueTooLargeError, match=r"the write to channel 'w'.*task-1"):
            await run(saver, "put_writes", saved, [("a", "ok"), ("w", too_big)], "task-1")
        assert footprint(db, who) == before
        got = await run(reader, "get_tuple", config("t"))
        assert got.checkpoint["channel_values"]["v"] == fits and got.pending_writes == []
    finally:
        await close(saver)
        await close(reader)


async def test_a_cached_checkpoint_larger_than_the_limit_is_served_not_cached(db: str) -> None:
    # Each value is within the limit, the whole checkpoint (one cache entry) is not.
    saver = PostgresCheckpointer(db, tenant_id=tenant(), codec=small_codec())
    try:
        cached = CacheLayer([InMemoryCache()]).wrap(saver)
        values = {"a": "a" * (SMALL - 1024), "b": "b" * (SMALL - 1024)}
        saved = await run(cached, "put", config("c"), checkpoint_with(values), META, {})
        for _ in range(2):
            got = await run(cached, "get_tuple", saved)
            assert got.checkpoint["channel_values"] == values
    finally:
        await close(saver)


# -- store --------------------------------------------------------------------------------------


@FLAVOURS
async def test_store_put_and_batch_over_the_limit_write_nothing(db: str, flavour: str) -> None:
    who = tenant()
    cls = AsyncPostgresStore if flavour == "async" else PostgresStore
    store = cls(db, tenant_id=who, codec=small_codec())
    try:
        fits = {"v": "y" * (SMALL - 64)}
        await run(store, "put", ("docs",), "fits", fits)
        assert (await run(store, "get", ("docs",), "fits")).value == fits
        before = footprint(db, who)
        too_big = {"v": "z" * (SMALL + 1)}
        with pytest.raises(ValueTooLargeError, match=r"item 'big' in namespace \('docs',\)"):
            await run(store, "put", ("docs",), "big", too_big)
        ops = [PutOp(("docs",), "a", {"v": 1}), PutOp(("docs",), "big", too_big)]
        with pytest.raises(ValueTooLargeError):
            await run(store, "batch", ops)
        assert footprint(db, who) == before
        assert await run(store, "get", ("docs",), "a") is None
    finally:
        await close(store)


# -- conversation memory ---------------------------------------------------------------------------


def images(n: int, nbytes: int) -> list[BaseMessage]:
    """``n`` messages, each an image of ``nbytes`` random bytes as a base64 data URL."""
    return [
        HumanMessage(
            content=[
                {"type": "text", "text": f"image {i}"},
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/png;base64,"
                        + base64.b64encode(os.urandom(nbytes)).decode()
                    },
                },
            ]
        )
        for i in range(n)
    ]


async def test_chat_history_batch_over_the_default_limit_writes_nothing(db: str) -> None:
    """18 images of ~4 MiB in one add_messages (72 MiB, one stored batch): refused whole."""
    who = tenant()
    history = PostgresChatMessageHistory("photos", db, tenant_id=who)
    try:
        await run(history, "add_messages", [HumanMessage("hello")])
        before = footprint(db, who)
        with pytest.raises(ValueTooLargeError) as err:
            await run(history, "add_messages", images(18, 3 * 1024 * 1024))
        message = str(err.value)
        assert "18 messages" in message and "'photos'" in message and "smaller batches" in message
        assert footprint(db, who) == before
        assert [m.content for m in await run(history, "get_messages")] == ["hello"]
        # The same images in smaller batches are accepted, and read back.
        batch = images(2, 3 * 1024 * 1024)
        await run(history, "add_messages", batch)
        assert [m.content for m in await run(history, "get_messages")][1:] == [
            m.content for m in batch
        ]
    finally:
        await close(history)


@FLAVOURS
async def test_conversations_sessions_and_histories_over_the_limit_write_nothing(
    db: str, flavour: str
) -> None:
    who = tenant()
    a = flavour == "async"
    codec = small_codec()
    history = (AsyncPostgresChatMessageHistory if a else PostgresChatMessageHistory)(
        "h", db, tenant_id=who, codec=codec
    )
    conversations = (AsyncConversationStore if a else ConversationStore)(
        db, tenant_id=who, codec=codec
    )
    sessions = (AsyncSessionStore if a else SessionStore)(db, tenant_id=who, codec=codec)
    try:
        conv = await run(conversations, "create_conversation", conversation_id="c")
        session = await run(sessions, "create_session", user_id="u", session_id="s")
        before = footprint(db, who)
        batch = [HumanMessage("x" * (SMALL // 3)) for _ in range(4)]
        with pytest.raises(
            ValueTooLargeError, match="4 messages added together to conversation 'h'"
        ):
            await run(history, "add_messages", batch)
        with pytest.raises(ValueTooLargeError, match="conversation 'c'"):
            await run(conversations, "add_messages", conv.conversation_id, batch)
        with pytest.raises(ValueTooLargeError, match="conversation 's'"):
            await run(sessions, "add_messages", session.session_id, batch, user_id="u")
        big_context = ConversationMetadata(context={"doc": "d" * (SMALL + 1)})
        with pytest.raises(ValueTooLargeError, match="context of conversation 'c2'"):
            await run(
                conversations, "create_conversation", metadata=big_context, conversation_id="c2"
            )
        with pytest.raises(ValueTooLargeError, match="context of conversation 's2'"):
            await run(
                sessions, "create_session", user_id="u", session_id="s2",
                context={"doc": "d" * (SMALL + 1)},
            )  # fmt: skip
        assert footprint(db, who) == before
        fits = [HumanMessage("x" * (SMALL // 3)) for _ in range(2)]
        await run(history, "add_messages", fits)
        assert [m.content for m in await run(history, "get_messages")] == [m.content for m in fits]
    finally:
        for obj in (history, conversations, sessions):
            await close(obj)


@FLAVOURS
async def test_vector_memory_over_the_limit_writes_nothing(db: str, flavour: str) -> None:
    who = tenant()
    cls = AsyncVectorMemory if flavour == "async" else VectorMemory
    memory = cls(db, embeddings=HashingEmbeddings(16), tenant_id=who, codec=small_codec())
    try:
        await run(memory, "setup")
        before = footprint(db, who)
        with pytest.raises(ValueTooLargeError):
            await run(memory, "add_memories", ["fine", "w " * SMALL], user_id="u")
        with pytest.raises(ValueTooLargeError, match="nested more than 128 levels"):
            await run(memory, "add_memories", "deep", {"m": deep(200)}, user_id="u")
        with pytest.raises(InvalidFilterError, match="nested more than 128 levels"):
            await run(memory, "search", "q", filters={"m": deep(1000)}, user_id="u")
        assert footprint(db, who) == before
    finally:
        await close(memory)


# -- ids: the btree entry limit, NUL, lone surrogates -------------------------------------------------


def add_to_history(
    dsn: str, who: str, session_id: str = "h", user_id: str = "u", message_id: str = "m"
) -> None:
    with PostgresChatMessageHistory(session_id, dsn, tenant_id=who, user_id=user_id) as history:
        history.add_messages([HumanMessage("x", id=message_id)])


LONG = "x" * 3000  # the reported case: a 3,000-character id
SURROGATE = "id-\ud800"


@pytest.mark.parametrize(
    "bad", [LONG, "é" * 300, SURROGATE, "a\x00b"], ids=["3000", "600B", "surrogate", "nul"]
)
async def test_bad_ids_are_refused_before_any_statement(db: str, bad: str) -> None:
    who = tenant()
    before = footprint(db, who)
    saver = PostgresCheckpointer(db, tenant_id=who)
    store = PostgresStore(db, tenant_id=who)
    conversations = ConversationStore(db, tenant_id=who)
    sessions = SessionStore(db, tenant_id=who)
    try:
        calls: list[Callable[[], Any]] = [
            lambda: saver.put(config(bad), checkpoint_with({}), META, {}),
            lambda: saver.put(config("t", ns=bad), checkpoint_with({}), META, {}),
            lambda: saver.put(config("t"), {**checkpoint_with({}), "id": bad}, META, {}),
            lambda: saver.put(config("t"), checkpoint_with({}), {**META, "tags": [bad]}, {}),
            lambda: saver.put_writes(config("t", checkpoint_id=bad), [("c", 1)], "task"),
            lambda: saver.put_writes(config("t", checkpoint_id="1"), [("c", 1)], bad),
            lambda: store.put(("ns",), bad + bad, {"v": 1}),
            lambda: add_to_history(db, who, session_id=bad),
            lambda: add_to_history(db, who, user_id=bad),
            lambda: add_to_history(db, who, message_id=bad),
            lambda: conversations.create_conversation(conversation_id=bad),
            lambda: conversations.create_conversation(user_id=bad),
            lambda: conversations.create_conversation(metadata=ConversationMetadata(tags=[bad])),
            lambda: sessions.create_session(user_id=bad),
            lambda: sessions.create_session(user_id="u", session_id=bad),
            lambda: sessions.create_session(user_id="u", participants={bad: "read"}),
        ]
        if "\x00" not in bad:  # a NUL is a control character: refused as such
            calls.append(lambda: PostgresCheckpointer(db, tenant_id="t" + bad))
        for i, call in enumerate(calls):
            with pytest.raises((HaiveError, InvalidNamespaceError)) as err:
                await asyncio.to_thread(call)
            assert not isinstance(err.value, psycopg.Error), (i, err.value)
        with pytest.raises(InvalidNamespaceError):
            await asyncio.to_thread(store.put, (bad * 2,), "k", {"v": 1})
        assert footprint(db, who) == before
    finally:
        for obj in (saver, store, conversations, sessions):
            await close(obj)


def test_tenant_ids_fit_the_btree_entry_with_the_other_ids() -> None:
    for cls in (PostgresCheckpointer, PostgresStore, ConversationStore):
        with pytest.raises(ConfigurationError, match="at most 512"):
            cls("postgresql:///unused", tenant_id=wide(1020, 1))  # 255 characters, 1,020 bytes


async def test_ids_at_the_limit_all_at_once_round_trip(db: str) -> None:
    """The widest entries (5 ids of 512 incompressible bytes) fit PostgreSQL's btree limit."""
    who = wide(MAX_ID_BYTES, 1)
    thread, ns, cid, task, tag = (wide(MAX_ID_BYTES, i) for i in range(2, 7))
    saver = PostgresCheckpointer(db, tenant_id=who)
    store = PostgresStore(db, tenant_id=who)
    sessions = SessionStore(db, tenant_id=who)
    try:
        cp = {**checkpoint_with({"v": "x" * 300}), "id": cid}
        saved = saver.put(config(thread, ns=ns), cp, META, {"v": 1})
        saver.put_writes(saved, [("v", 1)], task, wide(MAX_ID_BYTES, 7))
        got = saver.get_tuple(saved)
        assert got is not None and got.pending_writes == [(task, "v", 1)]
        root = saver.put(config(thread), {**checkpoint_with({}), "id": cid}, META, {})
        saver.tag(root, tag)
        assert [
            s.config["configurable"]["checkpoint_id"]
            for s in saver.find_checkpoints(thread, tags=[tag])
        ] == [cid]
        branch = saver.create_branch(root, wide(MAX_ID_BYTES, 8), thread_id=wide(MAX_ID_BYTES, 9))
        assert saver.get_tuple(branch) is not None
        # Store: 1,024 bytes of address, as many short labels as fit, and as one long one.
        labels = tuple(f"{i:03}" for i in range(1024 // 11 - 1))
        for namespace, key in (
            (labels, "k" * (1024 - 11 * len(labels))),
            ((wide(1000, 10),), "k" * 16),
        ):
            store.put(namespace, key, {"v": 1})
            assert store.get(namespace, key).value == {"v": 1}
        with pytest.raises(InvalidNamespaceError):  # the bypass: many short labels
            store.put(tuple(f"l{i}" for i in range(200)), "k", {"v": 1})
        sid, uid, mid, part = (wide(MAX_ID_BYTES, i) for i in range(11, 15))
        sessions.create_session(user_id=uid, session_id=sid, participants={part: "read"})
        sessions.add_messages(sid, [AIMessage("hi", id=mid)], user_id=uid)
        assert [m.message_id for m in sessions.get_messages(sid, user_id=part)] == [mid]
    finally:
        for obj in (saver, store, sessions):
            await close(obj)


# -- depth: values, metadata and filters -----------------------------------------------------------


async def test_nesting_depth_is_limited_with_our_errors(db: str) -> None:
    who = tenant()
    saver = PostgresCheckpointer(db, tenant_id=who)
    store = PostgresStore(db, tenant_id=who)
    conversations = ConversationStore(db, tenant_id=who)
    try:
        # At the limit: stored and read back equal.
        at_limit = deep(MAX_DEPTH - 1)  # inside a dict: MAX_DEPTH levels
        store.put(("d",), "ok", {"v": at_limit})
        assert store.get(("d",), "ok").value == {"v": at_limit}
        saved = saver.put(config("d"), checkpoint_with({}), {**META, "m": at_limit}, {})
        assert saver.get_tuple(saved).metadata["m"] == at_limit
        conv = conversations.create_conversation(
            metadata=ConversationMetadata(settings={"m": at_limit})
        )
        assert (
            conversations.get_conversation(conv.conversation_id).metadata.settings["m"] == at_limit
        )
        before = footprint(db, who)
        # One level more, or a thousand: our errors, never RecursionError.
        for levels in (MAX_DEPTH, 1000):
            too_deep = deep(levels)
            with pytest.raises(ValueTooLargeError, match="item 'deep' in namespace"):
                store.put(("d",), "deep", {"v": too_deep})
            with pytest.raises(ValueTooLargeError, match="checkpoint metadata is nested"):
                saver.put(config("d2"), checkpoint_with({}), {**META, "m": too_deep}, {})
            with pytest.raises(ValueTooLargeError, match="settings is nested"):
                conversations.create_conversation(
                    metadata=ConversationMetadata(settings={"m": too_deep})
                )
            with pytest.raises(InvalidFilterError, match="nested more than"):
                store.search(("d",), filter={"v": too_deep})
            with pytest.raises(ConfigurationError, match="nested more than"):
                list(saver.list(None, filter={"m": too_deep}))
            with pytest.raises(ConfigurationError, match="nested more than"):
                saver.list_threads(filter={"m": too_deep})
        assert footprint(db, who) == before
    finally:
        for obj in (saver, store, conversations):
            await close(obj)
