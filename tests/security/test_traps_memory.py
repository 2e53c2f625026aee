"""``store_conversation`` reads the stored messages, never the object's snapshot (issue 18).

Before: the ``Conversation`` that ``create_conversation`` returned (``messages=[]``)
was taken at its word, so storing it after messages were added stored 0 chunks;
a ``Conversation`` read earlier missed the messages added since. Now a
``Conversation`` (or its id) is always read from the database at the call:
through ``conversations=`` when given, else from the memory's own database,
schema and tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncVectorMemory,
    ConversationStore,
    HashingEmbeddings,
    VectorMemory,
)

DIMS = 64
TURNS = [
    HumanMessage("I am planning a trip to Japan in April."),
    AIMessage("April is cherry blossom season. Which cities?"),
    HumanMessage("Tokyo and Kyoto, and I am vegetarian."),
    AIMessage("In Kyoto try shojin ryori, the temple cuisine."),
]


@pytest.fixture(scope="module")
def conversations(dsn: str) -> Iterator[ConversationStore]:
    with ConversationStore(dsn) as store:
        store.setup()
        yield store


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("reader", ["conversations=", "own tables"])
async def test_a_conversation_object_is_read_again_from_the_database(
    dsn: str, conversations: ConversationStore, kind: str, reader: str
) -> None:
    user = f"u-{kind}-{reader[:3]}"
    conv = conversations.create_conversation("travel-bot", user)  # messages == []
    conversations.add_messages(conv.conversation_id, TURNS[:2])
    earlier = conversations.get_conversation(conv.conversation_id)  # 2 messages
    conversations.add_messages(conv.conversation_id, TURNS[2:])
    ids: list[list[str]] = []
    chunks: list[Any] = []
    if kind == "sync":
        with VectorMemory(
            dsn,
            embeddings=HashingEmbeddings(DIMS),
            conversations=conversations if reader == "conversations=" else None,
        ) as memory:
            await asyncio.to_thread(memory.setup)
            for snapshot in (conv, earlier):
                ids.append(
                    await asyncio.to_thread(
                        memory.store_conversation, snapshot, chunk_size=80, chunk_overlap=20
                    )
                )
            chunks = [memory.get_memory(i, user_id=user) for i in ids[0]]
    else:
        async with AsyncConversationStore(dsn) as aconv:
            memory = AsyncVectorMemory(
                dsn,
                embeddings=HashingEmbeddings(DIMS),
                conversations=aconv if reader == "conversations=" else None,
            )
            try:
                await memory.setup()
                for snapshot in (conv, earlier):
                    ids.append(
                        await memory.astore_conversation(snapshot, chunk_size=80, chunk_overlap=20)
                    )
                chunks = [await memory.aget_memory(i, user_id=user) for i in ids[0]]
            finally:
                await memory.aclose()
    assert ids[0] and ids[1] == ids[0]  # both snapshots: the same four stored messages
    stored = {m.message_id for m in conversations.get_messages(conv.conversation_id)}
    covered = {mid for chunk in chunks for mid in chunk.message_ids}
    assert covered == stored and len(stored) == 4
    assert any("shojin" in chunk.text for chunk in chunks)  # added after both snapshots
