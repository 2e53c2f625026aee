"""LangChain's conventions and its standard test suites (langchain-tests) on a real PostgreSQL.

* ``PostgresVectorStore`` passes ``VectorStoreIntegrationTests`` on a DSN (real
  sync and async), on an ``AsyncConnectionPool`` (async) and on a
  ``ConnectionPool`` (sync; async in a worker thread).
* Its retriever and ``VectorMemory``'s retriever pass ``RetrieversIntegrationTests``
  (per-call ``k`` included), and take ``search_type`` / ``search_kwargs``. The
  suite's sync tests call ``invoke`` on the test thread, where an
  ``AsyncVectorMemory`` cannot run (its loop is not running then): the async
  memory's retriever is held to the same behaviour by the tests below, which
  call ``ainvoke`` and ``invoke`` from a worker thread.
* Chat histories return messages equal to what was saved: no id is added.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.integration_tests.vectorstores import EMBEDDING_SIZE
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolClosed

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    AsyncPostgresChatMessageHistory,
    AsyncVectorMemory,
    HashingEmbeddings,
    InvalidMemoryError,
    MemoryRetriever,
    PostgresChatMessageHistory,
    PostgresVectorStore,
    SessionStore,
    VectorMemory,
)
from haive_langgraph.stores import InvalidFilterError
from tests.ops import test_cache as _cache

# Fixtures of the cache tests: a Redis server, and a key prefix per test.
redis_url = _cache.redis_url
prefix = _cache.prefix

pytestmark = pytest.mark.timeout(180)

MEMORY_SCHEMA = "memtest"  # vector memory's index (64 dims) beside the suites' (6 dims)


def collection() -> str:
    return f"c.{uuid.uuid4().hex[:10]}"  # a "." too: collection names are escaped


def fake() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=EMBEDDING_SIZE)


@pytest.fixture(scope="module")
def set_up(dsn: str) -> str:
    with PostgresVectorStore(dsn, embeddings=fake(), dims=EMBEDDING_SIZE) as store:
        store.setup()
    return dsn


@pytest.fixture(scope="module")
def sync_pool(set_up: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(set_up, kwargs={"autocommit": True}, min_size=1, max_size=4) as pool:
        yield pool


@pytest.fixture(scope="module")
async def async_pool(set_up: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(
        set_up, kwargs={"autocommit": True}, min_size=1, max_size=4
    ) as pool:
        yield pool


# -- the standard vector store suite -------------------------------------------------------


class TestVectorStoreOnDsn(VectorStoreIntegrationTests):
    """A DSN: the sync methods on a sync pool, the async ones on an async pool."""

    @pytest.fixture
    async def vectorstore(self, set_up: str) -> AsyncIterator[VectorStore]:  # type: ignore[override]
        store = PostgresVectorStore(
            set_up,
            embeddings=self.get_embeddings(),
            dims=EMBEDDING_SIZE,
            collection_name=collection(),
        )
        try:
            yield store
        finally:
            await store.aclose()


class TestVectorStoreOnAsyncPool(VectorStoreIntegrationTests):
    @pytest.fixture
    async def vectorstore(  # type: ignore[override]
        self, async_pool: AsyncConnectionPool[Any]
    ) -> AsyncIterator[VectorStore]:
        async with PostgresVectorStore(
            async_pool,
            embeddings=self.get_embeddings(),
            dims=EMBEDDING_SIZE,
            collection_name=collection(),
        ) as store:
            yield store

    @property
    def has_sync(self) -> bool:
        return False  # sync methods of an async store run from other threads only


class TestVectorStoreOnSyncPool(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, sync_pool: ConnectionPool[Any]) -> Iterator[VectorStore]:  # type: ignore[override]
        with PostgresVectorStore(
            sync_pool,
            embeddings=self.get_embeddings(),
            dims=EMBEDDING_SIZE,
            collection_name=collection(),
        ) as store:
            yield store


# -- the standard retriever suite ----------------------------------------------------------

QUESTION = "which city is the user from"
FACTS = [
    "The user lives in Lyon, France.",
    "The user grew up in the city of Nantes.",
    "The user's dog is called Rex.",
    "The user likes green tea with jasmine.",
    "The user works as a nurse at night.",
    "The user's sister lives in Lille.",
    "The user is allergic to peanuts.",
]


@pytest.fixture(scope="module")
def filled_store(set_up: str) -> Iterator[PostgresVectorStore]:
    store = PostgresVectorStore.from_texts(
        FACTS,
        fake(),
        [{"n": n} for n in range(len(FACTS))],
        conn=set_up,
        dims=EMBEDDING_SIZE,
        collection_name=collection(),
    )
    with store:
        yield store


@pytest.fixture(scope="module")
def sync_memory(set_up: str) -> Iterator[VectorMemory]:
    with VectorMemory(
        set_up, embeddings=HashingEmbeddings(64), user_id="u", schema=MEMORY_SCHEMA
    ) as memory:
        memory.setup()
        memory.add_memories(FACTS, [{"n": n} for n in range(len(FACTS))])
        yield memory


@pytest.fixture(scope="module")
async def async_memory(set_up: str, sync_memory: VectorMemory) -> AsyncIterator[AsyncVectorMemory]:
    async with AsyncVectorMemory(
        set_up, embeddings=HashingEmbeddings(64), user_id="u", schema=MEMORY_SCHEMA
    ) as memory:
        yield memory


class TestVectorStoreRetriever(RetrieversIntegrationTests):
    """``store.as_retriever(search_kwargs={"k": n})``: LangChain's own retriever class."""

    @pytest.fixture(autouse=True)
    def _bind(self, filled_store: PostgresVectorStore) -> None:
        self.store = filled_store

    @property
    def retriever_constructor(self) -> Callable[..., BaseRetriever]:  # type: ignore[override]
        return lambda k=4: self.store.as_retriever(search_kwargs={"k": k})

    @property
    def retriever_query_example(self) -> str:
        return QUESTION


class TestMemoryRetriever(RetrieversIntegrationTests):
    """``memory.as_retriever(search_kwargs={"k": n})`` on a sync memory."""

    @pytest.fixture(autouse=True)
    def _bind(self, sync_memory: VectorMemory) -> None:
        self.memory = sync_memory

    @property
    def retriever_constructor(self) -> Callable[..., BaseRetriever]:  # type: ignore[override]
        return lambda k=5: self.memory.as_retriever(search_kwargs={"k": k})

    @property
    def retriever_query_example(self) -> str:
        return QUESTION


# -- retriever arguments, as LangChain names them ------------------------------------------


@pytest.fixture(params=["sync", "async"])
def memory(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_memory")


async def retrieve(retriever: BaseRetriever, query: str, **kwargs: Any) -> list[Document]:
    """``ainvoke``, and ``invoke`` from a worker thread: both must agree."""
    got = await retriever.ainvoke(query, **kwargs)
    again = await asyncio.to_thread(retriever.invoke, query, None, **kwargs)
    assert [d.id for d in again] == [d.id for d in got]
    return got


async def test_memory_retriever_honours_per_call_k_and_search_kwargs(memory: Any) -> None:
    retriever = memory.as_retriever()
    assert len(await retrieve(retriever, QUESTION)) == 5  # the memory's default
    assert len(await retrieve(retriever, QUESTION, k=1)) == 1
    three = memory.as_retriever(search_kwargs={"k": 3})
    assert len(await retrieve(three, QUESTION)) == 3
    assert len(await retrieve(three, QUESTION, k=2)) == 2
    only = await retrieve(three, QUESTION, filter={"n": {"$in": [2, 4]}})
    assert sorted(d.metadata["n"] for d in only) == [2, 4]
    # The memory's own names work too, per call and in search_kwargs.
    assert [d.metadata["n"] for d in await retrieve(three, QUESTION, filters={"n": 6})] == [6]


async def test_memory_retriever_search_types(memory: Any) -> None:
    plain = await retrieve(memory.as_retriever(search_kwargs={"k": 7}), QUESTION)
    scores = [d.metadata["score"] for d in plain]
    assert scores == sorted(scores, reverse=True)
    cut = (scores[1] + scores[2]) / 2
    above = memory.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 7, "score_threshold": cut}
    )
    assert [d.id for d in await retrieve(above, QUESTION)] == [d.id for d in plain[:2]]
    mmr = memory.as_retriever(search_type="mmr", search_kwargs={"k": 3, "lambda_mult": 0.0})
    diverse = await retrieve(mmr, QUESTION)
    assert len(diverse) == 3 and diverse[0].id == plain[0].id
    assert [d.id for d in diverse] != [d.id for d in plain[:3]]
    with pytest.raises(ConfigurationError, match="needs search_kwargs"):
        memory.as_retriever(search_type="similarity_score_threshold")
    with pytest.raises(ConfigurationError, match="search_type must be one of"):
        memory.as_retriever(search_type="nearest")
    with pytest.raises(ConfigurationError, match="cannot take rerank"):
        memory.as_retriever(search_type="mmr", search_kwargs={"rerank": True})
    with pytest.raises(ConfigurationError, match="given twice"):
        memory.as_retriever(search_kwargs={"filter": {}, "filters": {}})
    with pytest.raises(ConfigurationError, match="k must be a non-negative integer"):
        await memory.as_retriever().ainvoke(QUESTION, k=-1)


async def test_memory_retriever_old_keywords_still_work_with_a_deprecation_warning(
    memory: Any,
) -> None:
    with pytest.warns(DeprecationWarning, match=r"as_retriever\(top_k=\.\.\., filters"):
        retriever = memory.as_retriever(top_k=2, filters={"n": {"$lte": 3}})
    assert retriever.search_kwargs == {"k": 2, "filter": {"n": {"$lte": 3}}}
    got = await retriever.ainvoke(QUESTION)
    assert len(got) == 2 and all(d.metadata["n"] <= 3 for d in got)
    with pytest.warns(DeprecationWarning, match="top_k is deprecated"):
        assert len(await retriever.ainvoke(QUESTION, top_k=1)) == 1
    with pytest.raises(ValueError, match="unknown search argument 'colour'"):
        MemoryRetriever(memory=memory, search_kwargs={"colour": "red"})


# -- the vector store beyond the suite -------------------------------------------------------


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Calls:
    """``store.<method>`` in a worker thread, or ``store.a<method>`` awaited."""

    def __init__(self, store: PostgresVectorStore, is_async: bool) -> None:
        self.store = store
        self.is_async = is_async

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await getattr(self.store, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.store, method), *args, **kwargs)


@pytest.fixture
async def vs(set_up: str, kind: str) -> AsyncIterator[Calls]:
    store = PostgresVectorStore(
        set_up, embeddings=fake(), dims=EMBEDDING_SIZE, collection_name=collection()
    )
    try:
        yield Calls(store, kind == "async")
    finally:
        await store.aclose()


DOCS = [
    Document("alpha", metadata={"n": 1, "tag": "a", "flag": True}),
    Document("beta", metadata={"n": 2, "tag": "b"}),
    Document("gamma", metadata={"n": 3, "tag": "a", "flag": False}),
    Document("delta", metadata={"n": 10, "tag": "c", "nested": {"x": 1}}),
]


async def test_metadata_filters_take_the_store_operators(vs: Calls) -> None:
    await vs("add_documents", DOCS, ids=["1", "2", "3", "4"])

    async def ns(filter: dict[str, Any]) -> list[int]:
        found = await vs("similarity_search", "alpha", k=10, filter=filter)
        return sorted(d.metadata["n"] for d in found)

    assert await ns({"tag": "a"}) == [1, 3]
    assert await ns({"tag": {"$ne": "a"}}) == [2, 10]
    assert await ns({"n": {"$gt": 2}}) == [3, 10]  # numbers compare as numbers (10 > 9)
    assert await ns({"n": {"$gte": 2, "$lt": 10}}) == [2, 3]
    assert await ns({"tag": {"$in": ["b", "c"]}}) == [2, 10]
    assert await ns({"tag": {"$nin": ["b", "c"]}}) == [1, 3]
    assert await ns({"flag": {"$exists": True}}) == [1, 3]
    assert await ns({"tag": "a", "flag": False}) == [3]  # keys are AND-ed
    assert await ns({"nested.x": 1}) == [10]
    with pytest.raises(InvalidFilterError, match=r"unsupported filter operator '\$like'"):
        await ns({"tag": {"$like": "a%"}})
    with pytest.raises(InvalidFilterError, match="keys of a filter are AND-ed"):
        await ns({"$or": [{"tag": "a"}, {"tag": "b"}]})


async def test_scores_mmr_and_search_by_vector(vs: Calls) -> None:
    twins = [Document("alpha"), Document("alpha"), Document("beta"), Document("gamma")]
    await vs("add_documents", twins, ids=["a1", "a2", "b", "g"])
    scored = await vs("similarity_search_with_score", "alpha", k=4)
    assert {d.id for d, _ in scored[:2]} == {"a1", "a2"}
    assert math.isclose(scored[0][1], 1.0, abs_tol=1e-5)  # cosine similarity, best first
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    relevance = await vs("similarity_search_with_relevance_scores", "alpha", k=4)
    assert all(0.0 <= r <= 1.0 for _, r in relevance)  # no "must be between 0 and 1" warning
    # MMR with full diversity does not take the identical twin second.
    picked = await vs("max_marginal_relevance_search", "alpha", k=2, fetch_k=4, lambda_mult=0.0)
    assert picked[0].id in {"a1", "a2"} and picked[1].id not in {"a1", "a2"}
    vector = fake().embed_query("gamma")
    assert [d.id for d in await vs("similarity_search_by_vector", vector, k=1)] == ["g"]
    by_vector = await vs("max_marginal_relevance_search_by_vector", vector, k=1)
    assert [d.id for d in by_vector] == ["g"]
    threshold = vs.store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99, "k": 4}
    )
    assert isinstance(threshold, VectorStoreRetriever)
    got = await threshold.ainvoke("alpha") if vs.is_async else threshold.invoke("alpha")
    assert {d.id for d in got} == {"a1", "a2"}


async def test_delete_all_and_collections_are_apart(vs: Calls, set_up: str) -> None:
    other = PostgresVectorStore(
        set_up, embeddings=fake(), dims=EMBEDDING_SIZE, collection_name=collection()
    )
    try:
        await vs("add_texts", ["one", "two"], ids=["1", "2"])
        await Calls(other, vs.is_async)("add_texts", ["one"], ids=["1"])
        assert await vs("delete", None) is True
        assert await vs("similarity_search", "one", k=5) == []
        kept = await Calls(other, vs.is_async)("get_by_ids", ["1", "2"])
        assert [d.page_content for d in kept] == ["one"]
    finally:
        await other.aclose()


async def test_bad_input_is_refused_before_anything_is_written(vs: Calls) -> None:
    with pytest.raises(InvalidMemoryError, match="metadatas has 1 entries for 2 texts"):
        await vs("add_texts", ["a", "b"], [{"n": 1}])
    with pytest.raises(InvalidMemoryError, match="document id 1 must be a non-empty string"):
        await vs("add_texts", ["a", "b"], ids=["x", ""])
    with pytest.raises(InvalidMemoryError, match="text 0 must be a string without NUL"):
        await vs("add_texts", ["a\x00b"])
    assert await vs("get_by_ids", ["x"]) == []
    with pytest.raises(ConfigurationError, match=r"unknown arguments \['fetch'\]"):
        await vs("similarity_search", "a", fetch=3)
    with pytest.raises(ConfigurationError, match="k must be a non-negative integer"):
        await vs("similarity_search", "a", k=-1)


async def test_from_texts_and_dims_checks(set_up: str) -> None:
    store = await PostgresVectorStore.afrom_texts(
        ["x", "y"], fake(), ids=["1", "2"], conn=set_up, dims=EMBEDDING_SIZE
    )
    try:
        assert store.collection_name == "langchain"
        assert [d.id for d in await store.asimilarity_search("y", k=1)] == ["2"]
        await store.adelete(["1", "2"])
    finally:
        await store.aclose()
    with pytest.raises(ConfigurationError, match="pass dims="):
        PostgresVectorStore(set_up, embeddings=fake())
    with pytest.raises(ConfigurationError, match="does not match the embedder"):
        PostgresVectorStore(set_up, embeddings=HashingEmbeddings(64), dims=6)
    with pytest.raises(ConfigurationError, match="conn must be a DSN"):
        PostgresVectorStore(42, embeddings=fake(), dims=6)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown index_options"):
        PostgresVectorStore(set_up, embeddings=fake(), dims=6, index_options={"m": 4})


async def test_from_conn_string_opens_on_a_dsn_and_closes_afterwards(set_up: str) -> None:
    options: dict[str, Any] = {
        "embeddings": fake(),
        "dims": EMBEDDING_SIZE,
        "collection_name": collection(),
    }
    with PostgresVectorStore.from_conn_string(set_up, **options) as store:
        store.add_texts(["green tea", "black coffee"], ids=["t", "c"])
        assert [d.id for d in store.similarity_search("green tea", k=1)] == ["t"]
    with pytest.raises(PoolClosed):
        store.similarity_search("green tea", k=1)
    async with PostgresVectorStore.afrom_conn_string(set_up, **options) as astore:
        assert [d.id for d in await astore.asimilarity_search("green tea", k=1)] == ["t"]
        assert await astore.adelete() is True
    bad = "mysql://bob:secret@db.example/app"
    with (
        pytest.raises(ConfigurationError, match="the argument dsn") as refused,
        PostgresVectorStore.from_conn_string(bad, **options),
    ):
        pass  # pragma: no cover - refused before
    assert "secret" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="the argument dsn"):
        async with PostgresVectorStore.afrom_conn_string(bad, **options):
            pass  # pragma: no cover - refused before


async def test_an_async_store_on_another_loop_is_refused(set_up: str) -> None:
    store = PostgresVectorStore(set_up, embeddings=fake(), dims=EMBEDDING_SIZE)
    try:
        await store.asimilarity_search("x", k=1)

        def elsewhere() -> None:
            with pytest.raises(ConfigurationError, match="belongs to another event loop"):
                asyncio.run(store.asimilarity_search("x", k=1))

        await asyncio.to_thread(elsewhere)
    finally:
        await store.aclose()


# -- chat histories: messages read back equal to what was saved ------------------------------


def barks() -> list[BaseMessage]:
    return [SystemMessage(content="Meow"), AIMessage(content="woof"), HumanMessage(content="bark")]


def test_sync_history_returns_what_was_saved(set_up: str) -> None:
    # langchain-postgres's own chat history test, on our class.
    with PostgresChatMessageHistory(str(uuid.uuid4()), set_up) as history:
        history.setup()
        assert history.messages == []
        history.add_messages(barks())
        assert history.messages == barks()
        history.add_messages(barks())
        assert history.messages == barks() + barks()
        history.clear()
        assert history.messages == []
        with_ids = [HumanMessage("hi", id="h-1"), AIMessage("hello"), HumanMessage("x", id="")]
        history.add_messages(with_ids)
        assert [m.id for m in history.messages] == ["h-1", None, None]


async def test_async_history_returns_what_was_saved(set_up: str) -> None:
    async with AsyncPostgresChatMessageHistory(str(uuid.uuid4()), set_up) as history:
        await history.setup()
        assert await history.aget_messages() == []
        await history.aadd_messages(barks())
        assert await history.aget_messages() == barks()
        await history.aadd_messages(barks())
        assert await history.aget_messages() == barks() + barks()
        await history.aclear()
        assert await history.aget_messages() == []


def test_branches_and_merges_of_id_less_messages_read_back_without_ids(set_up: str) -> None:
    owner, sid = "owner", str(uuid.uuid4())
    with (
        PostgresChatMessageHistory(sid, set_up, user_id=owner) as main,
        SessionStore(set_up) as sessions,
    ):
        main.setup()
        main.add_messages(barks())
        branch = sessions.branch_session(sid, 1, user_id=owner)
        with PostgresChatMessageHistory(branch.session_id, set_up) as side:
            assert side.messages == barks()[:2]
            side.add_messages([HumanMessage("growl")])
        sessions.merge_sessions(sid, branch.session_id, user_id=owner)
        # The shared messages are matched by their internal ids: nothing is repeated.
        assert main.messages == [*barks(), HumanMessage("growl")]
        stored = sessions.get_messages(sid, user_id=owner).messages
        assert all(s.message_id for s in stored)  # ids stay, inside
        assert [s.message for s in stored] == main.messages


def test_cached_history_returns_what_was_saved(set_up: str, redis_url: str, prefix: str) -> None:
    layer = _cache.layer_for(redis_url, prefix, memory=False)  # entries go through Redis
    try:
        with PostgresChatMessageHistory(str(uuid.uuid4()), set_up) as history:
            history.setup()
            cached = layer.wrap_history(history)
            cached.add_messages([*barks(), HumanMessage("kept", id="k-1")])
            assert cached.messages == [*barks(), HumanMessage("kept", id="k-1")]
            assert layer.metrics().hits["redis"] == 1
    finally:
        layer.close()
