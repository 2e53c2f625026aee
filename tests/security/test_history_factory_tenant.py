"""What chat memory makes for a tenant acts for that tenant under row-level security.

On a role that does not own the tables (row security applies to it), a
history from ``history_factory(..., tenant_id="a")`` must read and write
tenant ``a``'s rows exactly as ``PostgresChatMessageHistory(..., tenant_id="a")``
does: the tenant bound in each transaction, ``a``'s own rows read back,
tenant ``b``'s rows of the same session id never read nor changed, and the
default tenant refused. So must the other classes that run chat memory on
connections for a tenant: the session manager, the conversation store, and
vector memory reading a conversation from its own database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    AsyncChatHistoryFactory,
    AsyncConversationStore,
    AsyncPostgresChatMessageHistory,
    AsyncSessionManager,
    AsyncVectorMemory,
    ChatHistoryFactory,
    ConversationStore,
    HashingEmbeddings,
    PostgresChatMessageHistory,
    SessionManager,
    VectorMemory,
    async_history_factory,
    history_factory,
)
from haive_langgraph.ops.cache import CacheLayer, InMemoryCache
from tests._roles import application_role

pytestmark = pytest.mark.timeout(120)

A, B = "a", "b"
SHARED = "shared-session"  # the same id in both tenants: b's holds the secret
A_READS = "a-reads"  # a's own session, written by the owner
SECRET = "b-secret-7731"
USER = "u-1"
KINDS = ["sync", "async"]
MADE_BY = ["history_factory", "ChatHistoryFactory", "cached factory", "constructor"]


@pytest.fixture(scope="module")
def app_dsn(dsn: str) -> Iterator[str]:
    """A role that may use every table but owns none, and the rows it must (not) see."""
    with ConversationStore(dsn) as store:
        store.setup()
    with VectorMemory(dsn, embeddings=HashingEmbeddings(16)) as memory:
        memory.setup()
    with PostgresChatMessageHistory(SHARED, dsn, tenant_id=B) as history:
        history.add_messages([HumanMessage(SECRET), AIMessage("noted " + SECRET)])
    with PostgresChatMessageHistory(A_READS, dsn, tenant_id=A) as history:
        history.add_messages([HumanMessage("a wrote this")])
    with application_role(dsn) as app:
        yield app


def message_counts(dsn: str, conversation_id: str) -> list[tuple[str, int]]:
    """``(tenant, messages)`` of a conversation id in every tenant, as the owner sees them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            (tenant, int(count))
            for tenant, count in conn.execute(
                "SELECT tenant_id, sum(n) FROM haive.conversation_messages"
                " WHERE conversation_id = %s GROUP BY tenant_id ORDER BY tenant_id",
                (conversation_id,),
            ).fetchall()
        ]


def b_is_untouched(dsn: str) -> None:
    assert message_counts(dsn, SHARED)[-1:] == [(B, 2)]
    with PostgresChatMessageHistory(SHARED, dsn, tenant_id=B) as history:
        assert [m.content for m in history.messages] == [SECRET, "noted " + SECRET]


class Histories:
    """Histories of one tenant on one DSN, made one way (``made_by``), sync or async."""

    def __init__(self, dsn: str, kind: str, made_by: str, tenant: str) -> None:
        self.dsn, self.kind, self.tenant = dsn, kind, tenant
        self.factory: Any = None
        if made_by == "history_factory":
            make = history_factory if kind == "sync" else async_history_factory
            self.factory = make(dsn, tenant_id=tenant)
        elif made_by == "ChatHistoryFactory":
            cls = ChatHistoryFactory if kind == "sync" else AsyncChatHistoryFactory
            self.factory = cls(dsn, tenant_id=tenant)
        elif made_by == "cached factory":
            make = history_factory if kind == "sync" else async_history_factory
            layer = CacheLayer([InMemoryCache()])
            self.factory = layer.wrap_history_factory(make(dsn, tenant_id=tenant))
        self._made: list[Any] = []

    def history(self, session_id: str) -> Any:
        if self.factory is not None:
            return self.factory(session_id, USER)
        cls = PostgresChatMessageHistory if self.kind == "sync" else AsyncPostgresChatMessageHistory
        history = cls(session_id, self.dsn, tenant_id=self.tenant, user_id=USER)
        self._made.append(history)
        return history

    async def run(self, session_id: str, method: str, *args: Any) -> Any:
        """``method`` of a new history of ``session_id`` (``a``-prefixed when async)."""
        history = self.history(session_id)
        if self.kind == "sync":
            return await asyncio.to_thread(getattr(history, method), *args)
        return await getattr(history, "a" + method)(*args)

    async def close(self) -> None:
        for owner in [self.factory, *self._made]:
            if owner is None:
                pass
            elif self.kind == "sync":
                owner.close()
            else:
                await owner.aclose()


@pytest.mark.parametrize("made_by", MADE_BY)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_history_acts_for_its_tenant_under_row_security(
    dsn: str, app_dsn: str, kind: str, made_by: str
) -> None:
    """Tenant ``a``'s history reads and writes ``a``'s rows, never ``b``'s of the same id."""
    own = f"own-{kind}-{made_by.replace(' ', '-')}"
    said: list[BaseMessage] = [HumanMessage("hello from a"), AIMessage("hi a")]
    histories = Histories(app_dsn, kind, made_by, A)
    try:
        got = await histories.run(A_READS, "get_messages")
        assert [m.content for m in got] == ["a wrote this"]  # not [] as if a had nothing

        await histories.run(own, "add_messages", said)
        got = await histories.run(own, "get_messages")
        assert [m.content for m in got] == ["hello from a", "hi a"]
        assert [m.content for m in await histories.run(own, "last", 1)] == ["hi a"]
        assert message_counts(dsn, own) == [(A, 2)]

        assert await histories.run(SHARED, "get_messages") == []
        await histories.run(SHARED, "add_messages", [HumanMessage("a's own words")])
        assert message_counts(dsn, SHARED) == [(A, 1), (B, 2)]
        await histories.run(SHARED, "clear")
        b_is_untouched(dsn)
    finally:
        await histories.close()


@pytest.mark.parametrize("made_by", MADE_BY)
@pytest.mark.parametrize("kind", KINDS)
async def test_the_default_tenant_is_refused_under_row_security(
    app_dsn: str, kind: str, made_by: str
) -> None:
    """As for a history constructed directly: an error naming the tenant, not an empty read."""
    histories = Histories(app_dsn, kind, made_by, "")
    try:
        with pytest.raises(ConfigurationError, match="tenant"):
            await histories.run(A_READS, "get_messages")
        with pytest.raises(ConfigurationError, match="tenant"):
            await histories.run("default-tenant", "add_messages", [HumanMessage("x")])
    finally:
        await histories.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_sessions_and_conversations_act_for_their_tenant(
    dsn: str, app_dsn: str, kind: str
) -> None:
    """The session manager and the conversation store, on the same ids as ``b``'s history."""
    if kind == "sync":
        sessions: Any = SessionManager(app_dsn, tenant_id=A)
        store: Any = ConversationStore(app_dsn, tenant_id=A)
    else:
        sessions = AsyncSessionManager(app_dsn, tenant_id=A)
        store = AsyncConversationStore(app_dsn, tenant_id=A)

    async def run(on: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if kind == "sync":
            return await asyncio.to_thread(getattr(on, method), *args, **kwargs)
        return await getattr(on, "a" + method)(*args, **kwargs)

    try:
        conversation = await run(store, "get_conversation", A_READS)
        assert [m.message.content for m in conversation.messages] == ["a wrote this"]
        session_id = f"session-{kind}"
        await run(sessions, "create_session", USER, "bot", session_id=session_id)
        await run(sessions, "add_message", session_id, "user", "a's session", user_id=USER)
        page = await run(sessions, "get_messages", session_id, user_id=USER)
        assert [m.message.content for m in page.messages] == ["a's session"]
        assert message_counts(dsn, session_id) == [(A, 1)]

        shared = f"{SHARED}-{kind}"  # b's id is taken by a's history tests: a copy of it
        with PostgresChatMessageHistory(shared, dsn, tenant_id=B) as b_history:
            b_history.add_messages([HumanMessage(SECRET)])
        await run(store, "create_conversation", "bot", USER, conversation_id=shared)
        await run(store, "add_message", shared, "user", "a's conversation")
        got = await run(store, "get_conversation", shared)
        assert [m.message.content for m in got.messages] == ["a's conversation"]
        assert message_counts(dsn, shared) == [(A, 1), (B, 1)]
    finally:
        for closable in (sessions, store):
            if kind == "sync":
                closable.close()
            else:
                await closable.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_vector_memory_reads_its_tenants_conversation(
    dsn: str, app_dsn: str, kind: str
) -> None:
    """``store_conversation(id)`` from the memory's own tables reads the memory's tenant."""
    shared = f"{SHARED}-vector-{kind}"
    with PostgresChatMessageHistory(shared, dsn, tenant_id=B, user_id=USER) as b_history:
        b_history.add_messages([HumanMessage(SECRET)])
    with PostgresChatMessageHistory(shared, dsn, tenant_id=A, user_id=USER) as a_history:
        a_history.add_messages([HumanMessage("a remembers tea")])
    embeddings = HashingEmbeddings(16)
    if kind == "sync":
        with VectorMemory(app_dsn, embeddings=embeddings, tenant_id=A) as memory:
            ids = memory.store_conversation(shared, user_id=USER)
            texts = [memory.get_memory(i, user_id=USER).text for i in ids]
    else:
        amemory = AsyncVectorMemory(app_dsn, embeddings=embeddings, tenant_id=A)
        try:
            ids = await amemory.astore_conversation(shared, user_id=USER)
            texts = [(await amemory.aget_memory(i, user_id=USER)).text for i in ids]
        finally:
            await amemory.aclose()
    assert texts and all("a remembers tea" in t and SECRET not in t for t in texts)
