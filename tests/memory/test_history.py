"""Chat message histories: LangChain drop-ins, on a real PostgreSQL, sync and async."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables.history import RunnableWithMessageHistory
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph._demo import DemoChatModel
from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import (
    ConfigurationError,
    CorruptDataError,
    DecryptionError,
    SerializationError,
)
from haive_langgraph.memory import (
    AsyncChatHistoryFactory,
    AsyncPostgresChatMessageHistory,
    ConversationStore,
    InvalidMessageError,
    MessageTooLargeError,
    PostgresChatMessageHistory,
    history_factory,
)

from .conftest import Side, history_side, new_id, rows
from .models import CountingChatModel, StreamingChatModel

# RunnableWithMessageHistory is deprecated upstream (langchain-core 1.3.3) in
# favour of LangGraph persistence; it is still the API these histories serve.
RWMH_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:RunnableWithMessageHistory is deprecated:DeprecationWarning"
)


def every_kind() -> list[BaseMessage]:
    """Messages of every type, with tool calls, content blocks and extra kwargs."""
    return [
        SystemMessage("You are terse.", id="sys-1"),
        HumanMessage(
            content=[
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image", "url": "https://example.com/cat.png"},
            ],
            name="alice",
        ),
        AIMessage(
            content="",
            tool_calls=[{"name": "lookup", "args": {"q": "cat", "n": 2}, "id": "call-1"}],
            additional_kwargs={"refusal": None, "reasoning": {"steps": [1, 2, 3]}},
            response_metadata={"model_name": "gpt-x-2025", "finish_reason": "tool_calls"},
            usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
        ),
        ToolMessage("a cat", tool_call_id="call-1", artifact={"score": 0.9}, status="success"),
        FunctionMessage("42", name="answer"),
        AIMessage(content="It is a cat. ñ ü 猫", id="ai-final", example=True),
        AIMessageChunk(content="partial", id="chunk-1"),
    ]


async def test_messages_round_trip_in_order_equal_to_what_was_saved(histories: Any) -> None:
    h = history_side(histories, new_id("s"))
    sent = every_kind()
    await h("add_messages", sent[:3])
    await h("add_messages", sent[3:])
    got = await h("get_messages")
    assert [type(m) for m in got] == [type(m) for m in sent]
    # Equal, ids included: a message saved without an id reads back without one.
    assert got == sent
    for original, stored in zip(sent, got, strict=True):
        assert stored.id == original.id
        assert stored.model_dump() == original.model_dump()
    assert got[2].tool_calls == sent[2].tool_calls
    assert got[1].content_blocks == sent[1].content_blocks
    # The caller's messages were not modified.
    assert sent[1].id is None


async def test_unknown_session_is_empty_and_clear_removes_only_its_messages(
    histories: Any,
) -> None:
    a, b = history_side(histories, new_id("s")), history_side(histories, new_id("s"))
    assert await a("get_messages") == []
    await a("add_messages", [HumanMessage("a1"), AIMessage("a2")])
    await b("add_messages", [HumanMessage("b1")])
    await a("clear")
    assert await a("get_messages") == []
    assert [m.content for m in await b("get_messages")] == ["b1"]
    await a("add_messages", [HumanMessage("again")])
    assert [m.content for m in await a("get_messages")] == ["again"]


async def test_last_n_and_cursor_paging(histories: Any) -> None:
    h = history_side(histories, new_id("s"))
    sizes = [3, 1, 1, 7, 2, 6, 5]  # 25 messages in rows of different sizes
    n = 0
    for size in sizes:
        await h("add_messages", [HumanMessage(f"m{n + i}") for i in range(size)])
        n += size
    texts = [f"m{i}" for i in range(n)]
    assert [m.content for m in await h("last", 4)] == texts[-4:]
    assert [m.content for m in await h("last", 100)] == texts

    seen: list[str] = []
    cursor = None
    while True:
        page = await h("page", 6, cursor)
        seen += [m.message.content for m in page]
        assert all(m.seq == int(m.message.content[1:]) for m in page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == texts

    newest: list[str] = []
    cursor = None
    while True:
        page = await h("page", 4, cursor, newest_first=True)
        newest += [m.message.content for m in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert newest == texts[::-1]
    stamps = [m.created_at for m in (await h("page", 100)).messages]
    assert stamps == sorted(stamps)
    with pytest.raises(ConfigurationError, match="cursor"):
        await h("page", 5, "not-a-cursor")
    with pytest.raises(ConfigurationError, match="limit"):
        await h("page", -1)
    assert (await h("page", 0)).messages == []  # 0 asks for nothing


async def test_concurrent_writers_keep_each_batch_together_in_order(histories: Any) -> None:
    session = new_id("s")
    writers, batches, size = 6, 8, 4

    def batch(w: int, b: int) -> list[BaseMessage]:
        return [HumanMessage(f"{w}:{b}:{i}", id=f"{session}-{w}-{b}-{i}") for i in range(size)]

    if isinstance(histories, AsyncChatHistoryFactory):

        async def writer(w: int) -> None:
            h = histories(session)
            for b in range(batches):
                await h.aadd_messages(batch(w, b))

        await asyncio.gather(*(writer(w) for w in range(writers)))
    else:

        def sync_writer(w: int) -> None:
            h = histories(session)
            for b in range(batches):
                h.add_messages(batch(w, b))

        await asyncio.gather(*(asyncio.to_thread(sync_writer, w) for w in range(writers)))
    got = [str(m.content) for m in await history_side(histories, session)("get_messages")]
    assert len(got) == writers * batches * size
    # Each batch is contiguous, in its own order; each writer's batches in order.
    for start in range(0, len(got), size):
        w, b, _ = got[start].split(":")
        assert got[start : start + size] == [f"{w}:{b}:{i}" for i in range(size)]
    for w in range(writers):
        mine = [g for g in got if g.startswith(f"{w}:")]
        assert mine == [f"{w}:{b}:{i}" for b in range(batches) for i in range(size)]


def test_sync_history_api_and_setter(migrated: str) -> None:
    sid = new_id("s")
    with PostgresChatMessageHistory(sid, migrated, user_id="u-1", agent_id="bot") as h:
        assert isinstance(h, BaseChatMessageHistory)
        h.add_user_message("hello")
        h.add_ai_message("hi there")
        h.add_message(HumanMessage("how are you?"))
        assert [m.content for m in h.messages] == ["hello", "hi there", "how are you?"]
        assert "Human: hello" in str(h)
        h.messages = [SystemMessage("reset")]
        assert [m.content for m in h.get_messages()] == ["reset"]
        assert asyncio.run(h.aget_messages()) == h.messages
    owner = rows(
        migrated,
        "SELECT user_id, agent_id FROM haive.conversations WHERE conversation_id = %s",
        sid,
    )
    assert owner == [("u-1", "bot")]


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        (7, "tenant_id must be a plain str, got int"),
        ("a\x00b", "contains a control character"),
        ("a\nb", "contains a control character"),
        ("t" * 256, "256 characters long"),
    ],
)
def test_bad_tenant_ids_are_refused_as_by_every_component(
    migrated: str, tenant: object, message: str
) -> None:
    # The same rule as the store's and the checkpointer's (db._tenancy).
    with psycopg.connect(migrated, autocommit=True) as conn:
        with pytest.raises(ConfigurationError, match=message):
            PostgresChatMessageHistory(new_id("s"), conn, tenant_id=tenant)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=message):
            ConversationStore(conn, tenant_id=tenant)  # type: ignore[arg-type]


def test_lent_connection_must_be_autocommit_and_is_never_committed(migrated: str) -> None:
    with psycopg.connect(migrated) as plain, pytest.raises(ConfigurationError, match="autocommit"):
        PostgresChatMessageHistory(new_id("s"), plain)
    sid = new_id("s")
    with psycopg.connect(migrated, autocommit=True) as conn:
        h = PostgresChatMessageHistory(sid, conn)
        h.add_messages([HumanMessage("kept")])
        # Inside the caller's transaction our statements join it; rolling it
        # back discards them: we never commit a transaction we did not open.
        with pytest.raises(RuntimeError), conn.transaction():
            h.add_messages([HumanMessage("rolled back")])
            assert [m.content for m in h.messages] == ["kept", "rolled back"]
            raise RuntimeError("abort")
        assert [m.content for m in h.messages] == ["kept"]
        h.close()
        assert not conn.closed  # a lent connection stays open


async def test_async_lent_connection_is_never_committed(migrated: str) -> None:
    sid = new_id("s")
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        h = AsyncPostgresChatMessageHistory(sid, conn)
        await h.aadd_messages([HumanMessage("kept")])
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await h.aadd_messages([HumanMessage("rolled back")])
                raise RuntimeError("abort")
        assert [m.content for m in await h.aget_messages()] == ["kept"]
        await h.aclose()
        assert not conn.closed


async def test_sync_and_async_classes_refuse_the_other_kind_of_connection(migrated: str) -> None:
    async with AsyncConnectionPool(migrated, open=False) as apool:
        with pytest.raises(ConfigurationError, match="Async class"):
            PostgresChatMessageHistory(new_id("s"), apool)  # type: ignore[arg-type]
    with (
        ConnectionPool(migrated, open=False) as pool,
        pytest.raises(ConfigurationError, match="sync class"),
    ):
        AsyncPostgresChatMessageHistory(new_id("s"), pool)  # type: ignore[arg-type]


async def test_async_history_sync_methods_work_from_other_threads_only(
    async_histories: Any,
) -> None:
    h = async_histories(new_id("s"))
    await h.aadd_messages([HumanMessage("one")])
    with pytest.raises(asyncio.InvalidStateError, match="another thread"):
        h.add_messages([HumanMessage("blocked")])
    await asyncio.to_thread(h.add_messages, [HumanMessage("two")])
    assert [m.content for m in await asyncio.to_thread(lambda: h.messages)] == ["one", "two"]


async def test_bad_messages_are_rejected_and_nothing_is_written(migrated: str, kind: str) -> None:
    sid = new_id("s")
    if kind == "async":
        h = Side(AsyncPostgresChatMessageHistory(sid, migrated, max_message_bytes=2_000), True)
    else:
        h = Side(PostgresChatMessageHistory(sid, migrated, max_message_bytes=2_000), False)
    good = HumanMessage("fine")
    with pytest.raises(MessageTooLargeError, match=r"message 1 .*2,000 bytes"):
        await h("add_messages", [good, HumanMessage("x" * 5_000)])
    with pytest.raises(SerializationError, match="message 1"):
        await h(
            "add_messages", [good, AIMessage("a", additional_kwargs={"lock": threading.Lock()})]
        )
    with pytest.raises(InvalidMessageError, match="not a LangChain message"):
        await h("add_messages", [good, {"role": "user", "content": "dict"}])
    with pytest.raises(InvalidMessageError, match="repeats the id"):
        await h("add_messages", [HumanMessage("a", id="x"), HumanMessage("b", id="x")])
    assert await h("get_messages") == []
    assert rows(migrated, "SELECT 1 FROM haive.conversations WHERE conversation_id = %s", sid) == []
    if kind == "async":
        await h.obj.aclose()
    else:
        await asyncio.to_thread(h.obj.close)


async def test_encrypted_bodies_are_bound_to_their_conversation(migrated: str, kind: str) -> None:
    codec = HaiveCodec(keyring=KeyRing([("k1", os.urandom(32))]))
    a, b = new_id("s"), new_id("s")
    cls = AsyncPostgresChatMessageHistory if kind == "async" else PostgresChatMessageHistory
    ha = Side(cls(a, migrated, codec=codec), kind == "async")  # type: ignore[arg-type]
    hb = Side(cls(b, migrated, codec=codec), kind == "async")  # type: ignore[arg-type]
    secret = "the launch code is 0000 " * 20
    await ha("add_messages", [HumanMessage(secret, id="same-id")])
    await hb("add_messages", [HumanMessage("harmless", id="same-id")])
    assert [m.content for m in await ha("get_messages")] == [secret]
    stored = rows(
        migrated, "SELECT body FROM haive.conversation_messages WHERE conversation_id = %s", a
    )
    assert b"launch code" not in bytes(stored[0][0])
    # The same message id in another conversation: the frame does not decrypt there.
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.conversation_messages SET body = %s WHERE conversation_id = %s",
            (stored[0][0], b),
        )
    with pytest.raises(DecryptionError, match=b):
        await hb("get_messages")
    # Another row of the same conversation: the ids inside the body do not match.
    await ha("add_messages", [HumanMessage("second", id="other-id")])
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.conversation_messages SET body = %s "
            "WHERE conversation_id = %s AND seq = 1",
            (stored[0][0], a),
        )
    with pytest.raises(CorruptDataError, match="belongs to other messages"):
        await ha("get_messages")
    for side in (ha, hb):
        if kind == "async":
            await side.obj.aclose()
        else:
            await asyncio.to_thread(side.obj.close)


async def test_tenants_do_not_see_each_other(migrated: str) -> None:
    sid = new_id("s")
    with (
        history_factory(migrated, tenant_id="acme") as acme,
        history_factory(migrated, tenant_id="globex") as globex,
    ):
        acme(sid).add_messages([HumanMessage("acme's")])
        globex(sid).add_messages([HumanMessage("globex's")])
        assert [m.content for m in acme(sid).messages] == ["acme's"]
        assert [m.content for m in globex(sid).messages] == ["globex's"]
        globex(sid).clear()
        assert [m.content for m in acme(sid).messages] == ["acme's"]
    tenants = rows(
        migrated,
        "SELECT tenant_id FROM haive.conversations WHERE conversation_id = %s ORDER BY 1",
        sid,
    )
    assert tenants == [("acme",), ("globex",)]


# -- RunnableWithMessageHistory -------------------------------------------------------------


@pytest.fixture
def counting() -> Iterator[CountingChatModel]:
    yield CountingChatModel()


@RWMH_DEPRECATED
def test_runnable_with_message_history_sync(
    sync_histories: Any, counting: CountingChatModel
) -> None:
    chain = RunnableWithMessageHistory(counting, sync_histories)
    config = {"configurable": {"session_id": new_id("s")}}
    first = chain.invoke("hello", config)
    second = chain.invoke("and again", config)
    # The model saw the stored history: 1 message, then 3.
    assert first.content == "seen 1: hello"
    assert second.content == "seen 3: and again"
    history = sync_histories(config["configurable"]["session_id"]).messages
    assert [m.content for m in history] == ["hello", first.content, "and again", second.content]
    assert history[1].id == first.id


@RWMH_DEPRECATED
async def test_runnable_with_message_history_async(
    async_histories: Any, counting: CountingChatModel
) -> None:
    chain = RunnableWithMessageHistory(counting, async_histories)
    config = {"configurable": {"session_id": new_id("s")}}
    first = await chain.ainvoke([HumanMessage("hello")], config)
    second = await chain.ainvoke([HumanMessage("more")], config)
    assert (first.content, second.content) == ("seen 1: hello", "seen 3: more")
    history = await async_histories(config["configurable"]["session_id"]).aget_messages()
    assert [m.content for m in history] == ["hello", first.content, "more", second.content]


@RWMH_DEPRECATED
async def test_runnable_with_message_history_streaming(histories: Any) -> None:
    model = StreamingChatModel()
    chain = RunnableWithMessageHistory(model, histories)
    session = new_id("s")
    config = {"configurable": {"session_id": session}}
    for text in ("hi", "tell me more"):
        if isinstance(histories, AsyncChatHistoryFactory):
            chunks = [c async for c in chain.astream(text, config)]
        else:
            chunks = await asyncio.to_thread(lambda t=text: list(chain.stream(t, config)))
        assert len(chunks) > 1
    h = history_side(histories, session)
    got = await h("get_messages")
    # LangChain hands the history the aggregated chunk; it is stored as given.
    assert [type(m).__name__ for m in got] == ["HumanMessage", "AIMessageChunk"] * 2
    assert got[1].usage_metadata is not None
    assert got[1].content == "streamed reply to 'hi' after 1 messages"
    assert got[3].content == "streamed reply to 'tell me more' after 3 messages"


@RWMH_DEPRECATED
def test_history_factory_takes_user_id_from_the_config(sync_histories: Any, migrated: str) -> None:
    from langchain_core.runnables import ConfigurableFieldSpec

    chain = RunnableWithMessageHistory(
        DemoChatModel(words=3),
        sync_histories,
        history_factory_config=[
            ConfigurableFieldSpec(id="session_id", annotation=str),
            ConfigurableFieldSpec(id="user_id", annotation=str),
        ],
    )
    session = new_id("s")
    chain.invoke("hi", {"configurable": {"session_id": session, "user_id": "carol"}})
    owner = rows(
        migrated, "SELECT user_id FROM haive.conversations WHERE conversation_id = %s", session
    )
    assert owner == [("carol",)]


def test_setup_is_idempotent_and_part_of_migrate_all(migrated: str) -> None:
    from haive_langgraph.ops import all_components

    assert "conversations" in [c.name for c in all_components()]
    with history_factory(migrated) as factory:
        factory.setup()  # again: nothing to apply
    applied = rows(
        migrated,
        "SELECT version FROM haive.haive_migrations WHERE component = 'conversations' "
        "ORDER BY version",
    )
    # Every migration of the component, once (its count grows with the component).
    from haive_langgraph.memory.conversations._sql import COMPONENT

    assert applied == [(v,) for v in range(1, COMPONENT.latest_version + 1)]
