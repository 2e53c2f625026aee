"""A count of 0 asks for nothing and gets nothing in memory/ (issue 18, small traps).

Before: ``VectorMemory.search(top_k=0)``, a retriever's ``k=0``,
``PostgresVectorStore.similarity_search(k=0)`` (and its score, vector and MMR
variants, sync and async), ``get_episodic_memories(max_episodes=0)`` and the
paging of chat histories, conversations and sessions (``limit=0``, ``last(0)``)
raised ``ConfigurationError``, although LangChain's ``InMemoryVectorStore``
returns ``[]`` for ``k=0`` and LangGraph's savers and stores return nothing for
``limit=0``. Now 0 gives an empty result (a page with no cursor), as the
references do; a negative number, a bool, a float or a string is still a
:class:`ConfigurationError` naming the argument. Quotas and sizes
(``max_messages_per_session``, ``max_message_bytes``) stay positive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.vectorstores import InMemoryVectorStore

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncSessionStore,
    AsyncVectorMemory,
    ConversationStore,
    HashingEmbeddings,
    PostgresChatMessageHistory,
    PostgresVectorStore,
    SessionStore,
    VectorMemory,
    async_history_factory,
    history_factory,
)
from tests.memory.conftest import Side, new_id

DIMS = 32
BAD = [-1, True, 2.5, "3"]
TEXTS = ["green tea in the morning", "black coffee at noon", "mint tea at night"]


# -- vector memory and its retriever ---------------------------------------------------------


@pytest.fixture(scope="module")
def sync_memory(dsn: str) -> Iterator[VectorMemory]:
    with VectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), user_id="u") as memory:
        memory.setup()
        memory.add_memories(TEXTS)
        yield memory


@pytest.fixture(scope="module")
async def async_memory(dsn: str, sync_memory: VectorMemory) -> AsyncIterator[AsyncVectorMemory]:
    async with AsyncVectorMemory(dsn, embeddings=HashingEmbeddings(DIMS), user_id="u") as memory:
        yield memory


@pytest.fixture(params=["sync", "async"])
def memory(request: pytest.FixtureRequest) -> Side:
    return Side(request.getfixturevalue(f"{request.param}_memory"), request.param == "async")


async def test_memory_search_zero_gives_nothing(memory: Side) -> None:
    assert await memory("search", "tea", top_k=0) == []
    assert await memory("search", "tea", top_k=0, rerank="mmr") == []
    assert await memory("get_episodic_memories", None, "tea", max_episodes=0) == []
    assert await memory("get_episodic_memories", None, "tea", candidates=0) == []
    assert await memory("get_episodic_memories", None, "tea", per_episode=0) == []
    # the positive case still finds
    assert len(await memory("search", "tea", top_k=2)) == 2
    assert await memory("get_episodic_memories", None, "tea", max_episodes=1)


@pytest.mark.parametrize("bad", BAD)
async def test_memory_search_refuses_what_is_no_count(memory: Side, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="top_k"):
        await memory("search", "tea", top_k=bad)
    with pytest.raises(ConfigurationError, match="max_episodes"):
        await memory("get_episodic_memories", None, "tea", max_episodes=bad)


async def test_retriever_k_zero_gives_nothing(memory: Side) -> None:
    retriever = memory.obj.as_retriever(search_kwargs={"k": 0})
    per_call = memory.obj.as_retriever()
    if memory.is_async:
        assert await retriever.ainvoke("tea") == []
        assert await per_call.ainvoke("tea", k=0) == []
        assert len(await per_call.ainvoke("tea", k=1)) == 1
    else:
        assert await asyncio.to_thread(retriever.invoke, "tea") == []
        assert await asyncio.to_thread(per_call.invoke, "tea", k=0) == []
    for bad in BAD:
        with pytest.raises(ConfigurationError, match="k must be a non-negative integer"):
            per_call.invoke("tea", k=bad)


# -- PostgresVectorStore, against LangChain's reference -------------------------------------


@pytest.fixture(scope="module")
def vector_store(dsn: str) -> Iterator[PostgresVectorStore]:
    with PostgresVectorStore(
        dsn, embeddings=HashingEmbeddings(DIMS), collection_name="zero"
    ) as store:
        store.setup()
        store.add_texts(TEXTS)
        yield store


CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("similarity_search", ("tea",), {}),
    ("similarity_search_with_score", ("tea",), {}),
    ("similarity_search_with_relevance_scores", ("tea",), {}),
    ("similarity_search_by_vector", (HashingEmbeddings(DIMS).embed_query("tea"),), {}),
    ("max_marginal_relevance_search", ("tea",), {"fetch_k": 3}),
    (
        "max_marginal_relevance_search_by_vector",
        (HashingEmbeddings(DIMS).embed_query("tea"),),
        {"fetch_k": 3},
    ),
]


@pytest.mark.parametrize(("method", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
async def test_vector_store_k_zero_gives_nothing_as_the_reference(
    vector_store: PostgresVectorStore, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    if "relevance" not in method:  # the reference has no relevance function
        reference = InMemoryVectorStore.from_texts(TEXTS, HashingEmbeddings(DIMS))
        assert getattr(reference, method)(*args, k=0, **kwargs) == []
        assert await getattr(reference, f"a{method}")(*args, k=0, **kwargs) == []
    assert getattr(vector_store, method)(*args, k=0, **kwargs) == []
    assert await getattr(vector_store, f"a{method}")(*args, k=0, **kwargs) == []
    assert len(getattr(vector_store, method)(*args, k=1, **kwargs)) == 1
    for bad in BAD:
        with pytest.raises(ConfigurationError, match="k must"):
            getattr(vector_store, method)(*args, k=bad, **kwargs)
        with pytest.raises(ConfigurationError, match="k must"):
            await getattr(vector_store, f"a{method}")(*args, k=bad, **kwargs)


# -- chat histories, conversations, sessions -------------------------------------------------


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    with ConversationStore(dsn) as store:
        store.setup()
    return dsn


@pytest.fixture(params=["sync", "async"])
async def chat(migrated: str, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Side]]:
    """A history, a conversation and a session, each holding two messages."""
    turns = [HumanMessage("hello"), AIMessage("hi there")]
    sid = new_id("s")
    if request.param == "sync":
        with (
            history_factory(migrated) as histories,
            ConversationStore(migrated) as store,
            SessionStore(migrated) as sessions,
        ):
            histories(sid).add_messages(turns)
            conv = store.create_conversation("bot", "u-1")
            store.add_messages(conv.conversation_id, turns)
            session = sessions.create_session("u-1", "bot")
            sessions.add_messages(session.session_id, turns, user_id="u-1")
            yield {
                "history": Side(histories(sid), False),
                "store": Side(store, False),
                "sessions": Side(sessions, False),
                "ids": Side({"c": conv.conversation_id, "s": session.session_id}, False),
            }
        return
    async with (
        async_history_factory(migrated) as ahistories,
        AsyncConversationStore(migrated) as astore,
        AsyncSessionStore(migrated) as asessions,
    ):
        await ahistories(sid).aadd_messages(turns)
        aconv = await astore.acreate_conversation("bot", "u-1")
        await astore.aadd_messages(aconv.conversation_id, turns)
        asession = await asessions.acreate_session("u-1", "bot")
        await asessions.aadd_messages(asession.session_id, turns, user_id="u-1")
        yield {
            "history": Side(ahistories(sid), True),
            "store": Side(astore, True),
            "sessions": Side(asessions, True),
            "ids": Side({"c": aconv.conversation_id, "s": asession.session_id}, True),
        }


async def test_paging_zero_gives_an_empty_last_page(chat: dict[str, Side]) -> None:
    history, store, sessions = chat["history"], chat["store"], chat["sessions"]
    cid, sid = chat["ids"].obj["c"], chat["ids"].obj["s"]
    for newest_first in (False, True):
        for page in (
            await history("page", 0, newest_first=newest_first),
            await store("get_messages", cid, limit=0, newest_first=newest_first),
            await sessions("get_messages", sid, user_id="u-1", limit=0, newest_first=newest_first),
        ):
            assert page.messages == [] and page.next_cursor is None
    assert await history("last", 0) == []
    listed = await store("query_conversations", user_id="u-1", limit=0)
    assert listed.conversations == [] and listed.next_cursor is None
    mine = await sessions("list_sessions", user_id="u-1", limit=0)
    assert mine.sessions == [] and mine.next_cursor is None
    # the positive case still pages
    assert len((await history("page", 1)).messages) == 1
    assert len(await history("last", 1)) == 1
    assert len((await store("get_messages", cid, limit=1)).messages) == 1
    assert len((await sessions("get_messages", sid, user_id="u-1", limit=1)).messages) == 1
    assert len((await store("query_conversations", user_id="u-1", limit=1)).conversations) == 1
    assert len((await sessions("list_sessions", user_id="u-1", limit=1)).sessions) == 1


@pytest.mark.parametrize("bad", BAD)
async def test_paging_refuses_what_is_no_count(chat: dict[str, Side], bad: Any) -> None:
    history, store, sessions = chat["history"], chat["store"], chat["sessions"]
    cid, sid = chat["ids"].obj["c"], chat["ids"].obj["s"]
    with pytest.raises(ConfigurationError, match="limit"):
        await history("page", bad)
    with pytest.raises(ConfigurationError, match="n must"):
        await history("last", bad)
    with pytest.raises(ConfigurationError, match="limit"):
        await store("get_messages", cid, limit=bad)
    with pytest.raises(ConfigurationError, match="limit"):
        await store("query_conversations", limit=bad)
    with pytest.raises(ConfigurationError, match="limit"):
        await sessions("get_messages", sid, user_id="u-1", limit=bad)
    with pytest.raises(ConfigurationError, match="limit"):
        await sessions("list_sessions", user_id="u-1", limit=bad)


def test_quotas_and_sizes_stay_positive(migrated: str) -> None:
    with pytest.raises(ConfigurationError, match="max_messages_per_session"):
        SessionStore(migrated, max_messages_per_session=0)
    with pytest.raises(ConfigurationError, match="max_message_bytes"):
        PostgresChatMessageHistory(new_id("s"), migrated, max_message_bytes=0)
