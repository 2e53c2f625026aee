"""ConversationStore: metadata, token usage and cost, queries, deletion and erasure."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    ConversationExistsError,
    ConversationMetadata,
    ConversationNotFoundError,
    ConversationStore,
    InvalidMessageError,
    MessageTooLargeError,
    TokenUsage,
)

from .conftest import Side, history_side, new_id, rows


async def test_create_and_get_with_metadata(store: Side) -> None:
    meta = ConversationMetadata(
        title="Billing question",
        tags=["billing", "urgent"],
        context={"plan": "pro", "seats": 3},
        participants=["bob"],
        settings={"temperature": 0.2},
    )
    conv = await store("create_conversation", "support-bot", "alice", meta)
    assert conv.metadata == meta
    assert (conv.user_id, conv.agent_id, conv.message_count) == ("alice", "support-bot", 0)
    got = await store("get_conversation", conv.conversation_id)
    assert got.metadata == meta and got.messages == []
    fixed = new_id("fixed")
    await store("create_conversation", conversation_id=fixed)
    with pytest.raises(ConversationExistsError, match=fixed):
        await store("create_conversation", conversation_id=fixed)


def test_title_context_and_messages_go_through_the_codec(migrated: str) -> None:
    codec = HaiveCodec(keyring=KeyRing([("k1", os.urandom(32))]))
    with ConversationStore(migrated, codec=codec) as encrypted:
        conv = encrypted.create_conversation(
            "bot", "u", ConversationMetadata(title="secret title", context={"ssn": "123-45"})
        )
        encrypted.add_message(conv.conversation_id, "user", "my ssn is 123-45")
        got = encrypted.get_conversation(conv.conversation_id)
    assert got.metadata.title == "secret title" and got.metadata.context == {"ssn": "123-45"}
    assert got.messages is not None and got.messages[0].message.content == "my ssn is 123-45"
    stored = rows(
        migrated,
        "SELECT c.details, m.body FROM haive.conversations c "
        "JOIN haive.conversation_messages m USING (tenant_id, conversation_id) "
        "WHERE c.conversation_id = %s",
        conv.conversation_id,
    )
    for frame in stored[0]:
        assert bytes(frame)[:2] == b"HV" and b"123-45" not in bytes(frame)


async def test_messages_with_token_usage_and_cost(store: Side) -> None:
    conv = await store("create_conversation", "bot", new_id("user"))
    cid = conv.conversation_id
    q = await store("add_message", cid, "user", "How much is it?")
    a = await store(
        "add_message",
        cid,
        "assistant",
        "Ten euros.",
        TokenUsage(input_tokens=1000, output_tokens=500, model="gpt-x-2025"),
        {"latency_note": "fast"},
    )
    assert (q.seq, a.seq) == (0, 1)
    assert q.role == "human" and a.role == "ai"
    # Priced by the longest matching prefix: gpt-x at 10 / 30 per million.
    assert a.token_usage == TokenUsage(1000, 500, 1500, "gpt-x-2025", Decimal("0.025"))
    # Usage read from AIMessage.usage_metadata; an explicit cost wins over the table.
    reply = AIMessage(
        "Anything else?",
        response_metadata={"model_name": "demo-echo-1"},
        usage_metadata={"input_tokens": 200, "output_tokens": 100, "total_tokens": 300},
    )
    stored = await store(
        "add_messages",
        cid,
        [HumanMessage("No."), reply, AIMessage("Bye.")],
        token_usage=[None, None, TokenUsage(10, 5, model="other", cost=Decimal("0.5"))],
    )
    assert stored[1].token_usage == TokenUsage(200, 100, 300, "demo-echo-1", Decimal("0.0004"))
    assert [m.seq for m in stored] == [2, 3, 4]
    got = await store("get_conversation", cid)
    assert [m.message.content for m in got.messages] == [
        "How much is it?",
        "Ten euros.",
        "No.",
        "Anything else?",
        "Bye.",
    ]
    assert got.messages[1].metadata == {"latency_note": "fast"}
    assert got.messages[1].token_usage == a.token_usage
    assert (got.input_tokens, got.output_tokens, got.total_tokens) == (1210, 605, 1815)
    assert got.cost == Decimal("0.025") + Decimal("0.0004") + Decimal("0.5")
    usage = await store("conversation_usage", cid)
    assert usage.messages == 3 and usage.total_tokens == 1815 and usage.cost == got.cost
    assert set(usage.by_model) == {"gpt-x-2025", "demo-echo-1", "other"}
    assert usage.by_model["demo-echo-1"].input_tokens == 200


async def test_user_totals_across_conversations_and_time(store: Side) -> None:
    user = new_id("user")
    for _ in range(2):
        conv = await store("create_conversation", "bot", user)
        await store(
            "add_message", conv.conversation_id, "ai", "x", TokenUsage(100, 10, model="gpt-x")
        )
    other = await store("create_conversation", "bot", new_id("user"))
    await store("add_message", other.conversation_id, "ai", "y", TokenUsage(7, 7, model="gpt-x"))
    totals = await store("user_usage", user)
    assert (totals.messages, totals.input_tokens, totals.output_tokens) == (2, 200, 20)
    assert totals.cost == Decimal("0.0026")
    future = datetime.now().astimezone() + timedelta(hours=1)
    assert (await store("user_usage", user, since=future)).messages == 0
    assert (await store("user_usage", user, until=future)).messages == 2


async def test_query_filters_order_and_paging(store: Side) -> None:
    user = new_id("user")
    ids = []
    for i in range(5):
        conv = await store(
            "create_conversation",
            "agent-a" if i % 2 == 0 else "agent-b",
            user,
            ConversationMetadata(tags=["x", f"n{i}"] + (["even"] if i % 2 == 0 else [])),
        )
        ids.append(conv.conversation_id)
        for j in range(i):
            await store("add_message", conv.conversation_id, "user", f"m{j}")
    # Recency: the last conversation written to comes first.
    await store("add_message", ids[1], "user", "latest")
    page = await store("query_conversations", user_id=user)
    assert [c.conversation_id for c in page] == [ids[1], ids[4], ids[3], ids[2], ids[0]]
    by_created = await store("query_conversations", user_id=user, order_by="created_at")
    assert [c.conversation_id for c in by_created] == ids[::-1]
    even = await store("query_conversations", user_id=user, tags=["x", "even"])
    assert {c.conversation_id for c in even} == {ids[0], ids[2], ids[4]}
    agent_b = await store("query_conversations", user_id=user, agent_id="agent-b")
    assert {c.conversation_id for c in agent_b} == {ids[1], ids[3]}
    busy = await store("query_conversations", user_id=user, min_messages=3)
    assert {c.conversation_id for c in busy} == {ids[3], ids[4]}
    first = await store("get_conversation", ids[2], include_messages=False)
    later = await store("query_conversations", user_id=user, created_after=first.created_at)
    assert {c.conversation_id for c in later} == {ids[3], ids[4]}
    # Paging with a cursor, messages included.
    seen = []
    cursor = None
    while True:
        page = await store(
            "query_conversations", user_id=user, limit=2, cursor=cursor, include_messages=True
        )
        seen += [c.conversation_id for c in page]
        assert all(c.messages is not None for c in page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [ids[1], ids[4], ids[3], ids[2], ids[0]]
    with pytest.raises(ConfigurationError, match="order_by"):
        await store("query_conversations", order_by="title")


async def test_message_paging_through_the_store(store: Side) -> None:
    conv = await store("create_conversation")
    cid = conv.conversation_id
    await store("add_messages", cid, [HumanMessage(f"m{i}") for i in range(7)])
    page = await store("get_messages", cid, limit=3)
    assert [m.message.content for m in page] == ["m0", "m1", "m2"]
    page = await store("get_messages", cid, limit=3, cursor=page.next_cursor)
    assert [m.message.content for m in page] == ["m3", "m4", "m5"]
    newest = await store("get_messages", cid, limit=2, newest_first=True)
    assert [m.message.content for m in newest] == ["m6", "m5"]


async def test_skip_existing_appends_only_new_messages(store: Side) -> None:
    conv = await store("create_conversation")
    cid = conv.conversation_id
    first = [HumanMessage("a", id="a"), AIMessage("b", id="b")]
    await store("add_messages", cid, first)
    stored = await store(
        "add_messages", cid, [*first, HumanMessage("c", id="c")], skip_existing=True
    )
    assert [(m.seq, m.message_id) for m in stored] == [(2, "c")]
    assert await store("add_messages", cid, first, skip_existing=True) == []
    got = await store("get_conversation", cid)
    assert [m.message_id for m in got.messages] == ["a", "b", "c"]


async def test_bad_input_is_rejected_and_nothing_is_written(store: Side) -> None:
    conv = await store("create_conversation")
    cid = conv.conversation_id
    missing = new_id("missing")
    with pytest.raises(ConversationNotFoundError, match=missing):
        await store("add_message", missing, "user", "hello")
    with pytest.raises(ConversationNotFoundError, match=missing):
        await store("get_conversation", missing)
    with pytest.raises(ConversationNotFoundError, match=missing):
        await store("delete_conversation", missing)
    with pytest.raises(InvalidMessageError, match="role 'robot' is not a message role"):
        await store("add_message", cid, "robot", "beep")
    with pytest.raises(InvalidMessageError, match="input_tokens must not be negative"):
        await store("add_message", cid, "ai", "x", TokenUsage(input_tokens=-1))
    with pytest.raises(InvalidMessageError, match="tool_call_id"):
        await store("add_message", cid, "tool", "result")
    with pytest.raises(InvalidMessageError, match="content"):
        await store("add_message", cid, "user", 42)
    with pytest.raises(MessageTooLargeError, match="max_message_bytes"):
        await store("add_messages", cid, [HumanMessage("ok"), HumanMessage("x" * 9_000_000)])
    got = await store("get_conversation", cid)
    assert got.message_count == 0 and got.messages == []


async def test_delete_conversation(store: Side, migrated: str) -> None:
    conv = await store("create_conversation", "bot", "u", ConversationMetadata(participants=["p"]))
    cid = conv.conversation_id
    await store("add_messages", cid, [HumanMessage("a"), AIMessage("b")])
    report = await store("delete_conversation", cid)
    assert (report.conversations, report.messages, report.participants) == (1, 2, 1)
    for table in ("conversations", "conversation_messages", "conversation_participants"):
        assert rows(migrated, f"SELECT 1 FROM haive.{table} WHERE conversation_id = %s", cid) == []
    with pytest.raises(ConversationNotFoundError):
        await store("get_conversation", cid)


async def test_erasure_leaves_no_rows_of_that_user(
    store: Side, sessions: Side, histories: Any, migrated: str
) -> None:
    user, friend = new_id("erase"), new_id("friend")
    own = await store("create_conversation", "bot", user, ConversationMetadata(title="mine"))
    await store("add_messages", own.conversation_id, [HumanMessage("my data"), AIMessage("ok")])
    # A history and a session of the user; the friend takes part in it and
    # branches it; the user writes in the friend's session too.
    history = history_side(histories, new_id("h"), user_id=user)
    await history("add_messages", [HumanMessage("from a history")])
    mine = await sessions("create_session", user, participants={friend: "write"})
    await sessions("add_message", mine.session_id, "user", "shared secret", user_id=user)
    await sessions("add_message", mine.session_id, "user", "friend's reply", user_id=friend)
    branch = await sessions("branch_session", mine.session_id, 1, user_id=friend)
    await sessions("add_message", branch.session_id, "user", "friend goes on", user_id=friend)
    theirs = await sessions("create_session", friend, participants={user: "write"})
    await sessions("add_message", theirs.session_id, "user", "hello", user_id=friend)
    await sessions("add_message", theirs.session_id, "user", "user was here", user_id=user)

    report = await store("delete_user_data", user)
    assert report.conversations == 3  # own conversation, history, session
    assert report.participants == 2  # friend in the user's session, user in the friend's
    # own 2, history 1, session 2, in the friend's session 1, and the branch's
    # copy of the user's message (made when the session it shared was deleted).
    assert report.messages == 2 + 1 + 2 + 1 + 1
    for table in ("conversations", "conversation_messages", "conversation_participants"):
        assert rows(migrated, f"SELECT 1 FROM haive.{table} WHERE user_id = %s", user) == []
    # The friend's data survives: their session without the user's message,
    # and their branch with the messages it shared (now its own copy).
    theirs_now = await sessions("get_messages", theirs.session_id, user_id=friend)
    assert [m.message.content for m in theirs_now] == ["hello"]
    branch_now = await sessions("get_messages", branch.session_id, user_id=friend)
    assert [m.message.content for m in branch_now] == ["friend's reply", "friend goes on"]
    assert (await store("delete_user_data", user)).conversations == 0
