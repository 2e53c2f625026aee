"""ConversationTracker: model calls recorded with usage, model, latency and run ids."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from haive_langgraph._demo import DemoChatModel, chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncConversationTracker,
    ConversationStore,
    ConversationTracker,
)

from .conftest import new_id
from .models import CountingChatModel, StreamingChatModel


class RunIds(BaseCallbackHandler):
    """Collects the run ids of chat model calls (what LangSmith would trace)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID, **kw: Any
    ) -> None:
        self.ids.append(str(run_id))


def tracker_for(store: Any, **options: Any) -> Any:
    if isinstance(store, AsyncConversationStore):
        return AsyncConversationTracker(store, raise_error=True, **options)
    return ConversationTracker(store, raise_error=True, **options)


async def conversation(store: Any, cid: str) -> Any:
    if isinstance(store, AsyncConversationStore):
        return await store.aget_conversation(cid)
    return await asyncio.to_thread(store.get_conversation, cid)


async def invoke(kind: str, runnable: Any, inputs: Any, config: dict[str, Any]) -> Any:
    if kind == "async":
        return await runnable.ainvoke(inputs, config)
    return await asyncio.to_thread(runnable.invoke, inputs, config)


async def test_tracks_a_chat_model_call(kind: str, raw_store: Any) -> None:
    cid = new_id("track")
    tracker = tracker_for(raw_store, conversation_id=cid, user_id="ann", agent_id="helper")
    runs = RunIds()
    model = CountingChatModel()
    prompt = [SystemMessage("be brief"), HumanMessage("hello")]
    reply = await invoke(kind, model, prompt, {"callbacks": [tracker, runs]})
    conv = await conversation(raw_store, cid)
    assert (conv.user_id, conv.agent_id) == ("ann", "helper")
    assert [m.message.content for m in conv.messages] == ["be brief", "hello", reply.content]
    out = conv.messages[-1]
    assert out.message.id == reply.id
    assert out.run_id == runs.ids[0] and all(m.run_id == runs.ids[0] for m in conv.messages)
    assert out.token_usage is not None
    assert out.token_usage.model == "demo-echo-1"
    assert out.token_usage.input_tokens == reply.usage_metadata["input_tokens"]
    assert (
        out.token_usage.cost
        == Decimal(reply.usage_metadata["input_tokens"]) / 10**6
        + Decimal(reply.usage_metadata["output_tokens"] * 2) / 10**6
    )
    assert out.latency_ms is not None and out.latency_ms >= 0
    assert conv.messages[0].token_usage is None and conv.messages[0].latency_ms is None
    # The same prompt again: inputs are known (by content and position), only the reply is new.
    await invoke(kind, model, prompt, {"callbacks": [tracker]})
    conv = await conversation(raw_store, cid)
    assert [m.message.content for m in conv.messages] == [
        "be brief",
        "hello",
        reply.content,
        reply.content,
    ]
    assert conv.total_tokens == 2 * reply.usage_metadata["total_tokens"]


async def test_tracks_a_chain_one_conversation_per_run(kind: str, raw_store: Any) -> None:
    tracker = tracker_for(raw_store)
    chain = ChatPromptTemplate.from_messages([("system", "You help."), ("human", "{q}")]) | (
        DemoChatModel(words=4)
    )
    first = await invoke(kind, chain, {"q": "one"}, {"callbacks": [tracker]})
    runs = RunIds()
    await invoke(kind, chain, {"q": "two"}, {"callbacks": [tracker, runs]})
    store = raw_store
    page = (
        await store.aquery_conversations(limit=200)
        if kind == "async"
        else await asyncio.to_thread(store.query_conversations, limit=200)
    )
    tracked = [c for c in page if c.conversation_id.startswith("run-")]
    assert len(tracked) >= 2
    latest = await conversation(raw_store, tracked[0].conversation_id)
    assert [m.message.content for m in latest.messages][:2] == ["You help.", "two"]
    assert latest.messages[-1].run_id == runs.ids[0]
    assert first.content != latest.messages[-1].message.content


async def test_tracks_a_langgraph_agent_by_thread(kind: str, raw_store: Any, migrated: str) -> None:
    tracker = tracker_for(raw_store, user_id="graph-user")
    dsn = migrated
    thread = new_id("thread")
    config: dict[str, Any] = {"configurable": {"thread_id": thread}, "callbacks": [tracker]}
    turns = ["hi", "what is memory?", "thanks"]
    if kind == "async":
        async with AsyncPostgresCheckpointer.from_conn_string(dsn) as saver:
            await saver.setup()
            graph = chat_graph(DemoChatModel(words=5)).compile(checkpointer=saver)
            for text in turns:
                await graph.ainvoke({"messages": [HumanMessage(text)]}, config)
            state = await graph.aget_state(config)
    else:

        def run_sync() -> Any:
            with PostgresCheckpointer.from_conn_string(dsn) as saver:
                saver.setup()
                graph = chat_graph(DemoChatModel(words=5)).compile(checkpointer=saver)
                for text in turns:
                    graph.invoke({"messages": [HumanMessage(text)]}, config)
                return graph.get_state(config)

        state = await asyncio.to_thread(run_sync)
    conv = await conversation(raw_store, thread)
    # Each message once, though every call sends the whole thread again.
    assert [m.message.id for m in conv.messages] == [m.id for m in state.values["messages"]]
    assert [m.message.content for m in conv.messages] == [
        m.content for m in state.values["messages"]
    ]
    replies = [m for m in conv.messages if m.role == "ai"]
    assert len(replies) == 3 and all(r.token_usage is not None for r in replies)
    assert len({r.run_id for r in replies}) == 3
    assert conv.user_id == "graph-user"
    assert conv.total_tokens == sum(r.token_usage.total_tokens for r in replies)


async def test_tracks_streamed_calls_once(kind: str, raw_store: Any) -> None:
    cid = new_id("stream")
    tracker = tracker_for(raw_store, conversation_id=cid)
    model = StreamingChatModel()
    config = {"callbacks": [tracker]}
    if kind == "async":
        chunks = [c async for c in model.astream("stream please", config)]
    else:
        chunks = await asyncio.to_thread(lambda: list(model.stream("stream please", config)))
    assert len(chunks) > 3
    conv = await conversation(raw_store, cid)
    assert [m.role for m in conv.messages] == ["human", "ai"]
    out = conv.messages[1]
    assert out.message.content == "".join(str(c.content) for c in chunks)
    assert type(out.message).__name__ == "AIMessage"
    assert out.token_usage is not None and out.token_usage.model == "gpt-x-stream"
    assert out.metadata is not None and out.metadata["time_to_first_token_ms"] >= 0


async def test_sync_tracker_works_under_asyncio(sync_store: ConversationStore) -> None:
    cid = new_id("mixed")
    tracker = ConversationTracker(sync_store, conversation_id=cid, raise_error=True)
    await CountingChatModel().ainvoke("hello", {"callbacks": [tracker]})
    conv = await asyncio.to_thread(sync_store.get_conversation, cid)
    assert [m.role for m in conv.messages] == ["human", "ai"]


def test_trackers_need_the_matching_store(
    sync_store: ConversationStore, async_store: AsyncConversationStore
) -> None:
    with pytest.raises(TypeError, match="AsyncConversationTracker"):
        ConversationTracker(async_store)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ConversationTracker with a ConversationStore"):
        AsyncConversationTracker(sync_store)  # type: ignore[arg-type]
