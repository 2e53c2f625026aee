"""One real round trip through each public class, sync or async, whatever its connection.

``KINDS`` maps a name to the sync class, the async class, the round trip, and
the constructor's arguments besides ``conn`` (positional ones made per call) (``setup`` twice, then a write
and a read of what was written).
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.memory import (
    AsyncChatHistoryFactory,
    AsyncConversationStore,
    AsyncPostgresChatMessageHistory,
    AsyncSessionStore,
    AsyncVectorMemory,
    ChatHistoryFactory,
    ConversationStore,
    PostgresChatMessageHistory,
    SessionStore,
    VectorMemory,
)
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Caller:
    """Calls ``target.<method>`` (sync: in a worker thread) or, async, ``target.a<method>``
    (else ``target.<method>``; ``setup`` is ``await target.setup()`` on every async class);
    iterators are collected."""

    is_async: bool

    async def __call__(self, target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.is_async:
            return await asyncio.to_thread(
                lambda: _collect(getattr(target, method)(*args, **kwargs))
            )
        async_name = method if method == "setup" else f"a{method}"
        fn = getattr(target, async_name, None) or getattr(target, method)
        result = fn(*args, **kwargs)
        if hasattr(result, "__aiter__"):
            return [item async for item in result]
        return await result


def _collect(value: Any) -> Any:
    return builtins.list(value) if hasattr(value, "__next__") else value


Trip = Callable[[Caller, Any], Awaitable[None]]


async def checkpointer_trip(call: Caller, saver: Any) -> None:
    await call(saver, "setup")
    await call(saver, "setup")  # the migration runner reads its own rows back
    config = {"configurable": {"thread_id": new_id("t"), "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": [HumanMessage("hi", id="m1")]}
    checkpoint["channel_versions"] = {"messages": 1}
    saved = await call(saver, "put", config, checkpoint, {"step": 1}, {"messages": 1})
    await call(saver, "put_writes", saved, [("messages", AIMessage("yo", id="m2"))], "task-1")
    got = await call(saver, "get_tuple", config)
    assert got is not None and got.checkpoint["id"] == checkpoint["id"]
    assert got.checkpoint["channel_values"]["messages"][0].content == "hi"
    assert [(w[1], w[2].content) for w in got.pending_writes] == [("messages", "yo")]
    listed = await call(saver, "list", config)
    assert [t.checkpoint["id"] for t in listed] == [checkpoint["id"]]


async def store_trip(call: Caller, store: Any) -> None:
    await call(store, "setup")
    await call(store, "setup")
    ns = ("trip", new_id("ns"))
    await call(store, "put", ns, "k", {"text": "likes tea", "n": 1})
    item = await call(store, "get", ns, "k")
    assert item is not None and item.value == {"text": "likes tea", "n": 1}
    found = await call(store, "search", ns, filter={"n": 1})
    assert [i.key for i in found] == ["k"]


async def history_trip(call: Caller, history: Any) -> None:
    await call(history, "setup")
    await call(history, "setup")
    await call(history, "add_messages", [HumanMessage("hi"), AIMessage("hello")])
    got = await call(history, "get_messages")
    assert [m.content for m in got] == ["hi", "hello"]


async def history_factory_trip(call: Caller, factory: Any) -> None:
    await call(factory, "setup")
    await call(factory, "setup")
    sid = new_id("s")
    await call(factory(sid), "add_messages", [HumanMessage("one")])
    assert [m.content for m in await call(factory(sid), "get_messages")] == ["one"]


async def conversations_trip(call: Caller, store: Any) -> None:
    await call(store, "setup")
    await call(store, "setup")
    conv = await call(store, "create_conversation", "bot", "alice")
    await call(store, "add_message", conv.conversation_id, "user", "why?")
    page = await call(store, "get_messages", conv.conversation_id)
    assert [m.message.content for m in page] == ["why?"]


async def sessions_trip(call: Caller, manager: Any) -> None:
    await call(manager, "setup")
    await call(manager, "setup")
    session = await call(manager, "create_session", "alice", "bot")
    await call(manager, "add_message", session.session_id, "user", "hi", user_id="alice")
    page = await call(manager, "get_messages", session.session_id, user_id="alice")
    assert [m.message.content for m in page] == ["hi"]


async def vector_memory_trip(call: Caller, memory: Any) -> None:
    await call(memory, "setup")
    await call(memory, "setup")
    user = new_id("u")
    await call(memory, "add_memories", ["likes green tea", "lives in Lyon"], user_id=user)
    hits = await call(memory, "search", "green tea", top_k=1, user_id=user)
    assert [m.text for m in hits] == ["likes green tea"]


@dataclass(frozen=True)
class Kind:
    sync_cls: Any
    async_cls: Any
    trip: Trip
    args: Callable[[], tuple[Any, ...]] = tuple
    kwargs: dict[str, Any] = field(default_factory=dict)

    def cls(self, is_async: bool) -> Any:
        return self.async_cls if is_async else self.sync_cls


KINDS: dict[str, Kind] = {
    "checkpointer": Kind(PostgresCheckpointer, AsyncPostgresCheckpointer, checkpointer_trip),
    "store": Kind(PostgresStore, AsyncPostgresStore, store_trip),
    "history": Kind(
        PostgresChatMessageHistory,
        AsyncPostgresChatMessageHistory,
        history_trip,
        lambda: (new_id("s"),),
    ),
    "history_factory": Kind(ChatHistoryFactory, AsyncChatHistoryFactory, history_factory_trip),
    "conversations": Kind(ConversationStore, AsyncConversationStore, conversations_trip),
    "sessions": Kind(SessionStore, AsyncSessionStore, sessions_trip, tuple, {"default_ttl": 60}),
    "vector_memory": Kind(VectorMemory, AsyncVectorMemory, vector_memory_trip),
}
