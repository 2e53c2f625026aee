"""Counts at the edge of their SQL type, and checkpointer inputs that reached psycopg.

Before (the hostile re-test, ``test_retest.py``): ``list(limit=10**20)``, a
store's ``search``/``list_namespaces`` limit, offset and ``max_depth`` past
their SQL type and ``put(ttl=1e300)`` were psycopg errors (only ``>= 0`` was
checked); a checkpoint id of another type reached SQL (``text = smallint``),
an int write channel was sent as binary ``int2`` and read as text with a NUL;
checkpoint metadata text with a NUL was stored without it (LangGraph's
``get_checkpoint_metadata`` strips it); ``get_tuple({})`` and
``put(metadata=None)`` were a bare ``KeyError`` / ``AttributeError``.

Now one rule, ``db._limits.check_count``: a count is an ``int`` (not a
``bool``) from 0 to the largest value of the SQL type the statement gives it
(``bigint``, or ``integer`` for a namespace depth), else a
:class:`ConfigurationError` naming the argument. The largest count works
(what is derived from it, such as a vector search's candidates or a history
page's end, is capped at the type's largest). A TTL is at most
``MAX_TTL_MINUTES``. Checkpoint ids are checked as ids, a write channel must be
a string, metadata text with NUL is refused as other metadata PostgreSQL
cannot store is, and configs lacking a thread are named.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from haive_langgraph.db._limits import MAX_COUNT, MAX_INT4, check_count
from haive_langgraph.errors import ConfigurationError, SerializationError
from haive_langgraph.memory import (
    AsyncVectorMemory,
    ConversationStore,
    HashingEmbeddings,
    VectorMemory,
    history_factory,
)
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore, ResourceQuota
from haive_langgraph.stores._config import MAX_TTL_MINUTES
from tests.checkpointers.conftest import Driver as SaverDriver
from tests.memory.conftest import Side, new_id
from tests.stores.conftest import Driver as StoreDriver
from tests.stores.conftest import index_config, open_async, open_sync

BIGINT = "9,223,372,036,854,775,807"


# -- the rule ------------------------------------------------------------------------------


def test_a_count_is_an_int_up_to_its_sql_type() -> None:
    assert check_count("limit", 0) == 0
    assert check_count("limit", MAX_COUNT) == MAX_COUNT
    assert check_count("max_depth", MAX_INT4, minimum=1, maximum=MAX_INT4) == MAX_INT4
    for bad in (-1, MAX_COUNT + 1, True, 2.5, "3", None):
        with pytest.raises(
            ConfigurationError, match=f"^limit must be a non-negative integer of at most {BIGINT}"
        ):
            check_count("limit", bad)
    with pytest.raises(ConfigurationError, match="positive integer of at most 2,147,483,647"):
        check_count("max_depth", 0, minimum=1, maximum=MAX_INT4)
    # repr() refuses an int of 4,300+ digits: the message describes it instead
    with pytest.raises(ConfigurationError, match="got an integer of 16610 bits"):
        check_count("offset", 10**5000)


# -- checkpointer --------------------------------------------------------------------------


def _checkpoint(value: Any) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"x": value}
    cp["channel_versions"] = {"x": 1}
    return cp


@pytest.fixture
async def thread(cp: SaverDriver) -> dict[str, Any]:
    """A thread with two checkpoints; the config of the second."""
    config: dict[str, Any] = {"configurable": {"thread_id": f"n-{uuid.uuid4().hex[:10]}"}}
    config["configurable"]["checkpoint_ns"] = ""
    for step in (1, 2):
        config = await cp.call("put", config, _checkpoint(step), {"step": step}, {"x": step})
    return config


async def test_checkpointer_limits_up_to_bigint(cp: SaverDriver, thread: dict[str, Any]) -> None:
    tid = thread["configurable"]["thread_id"]
    assert len(await cp.call("list", {"configurable": {"thread_id": tid}}, limit=MAX_COUNT)) == 2
    assert (await cp.call("list_threads", limit=MAX_COUNT)).next_cursor is None
    assert len(await cp.call("find_checkpoints", tid, limit=MAX_COUNT)) == 2
    for method, args in (("list", (thread,)), ("list_threads", ()), ("find_checkpoints", (tid,))):
        with pytest.raises(ConfigurationError, match=f"limit must be .* at most {BIGINT}"):
            await cp.call(method, *args, limit=MAX_COUNT + 1)


async def test_a_checkpoint_id_is_checked_as_an_id(cp: SaverDriver, thread: dict[str, Any]) -> None:
    conf = thread["configurable"]
    # another type is read as its text, as thread ids are: no such checkpoint
    assert await cp.call("get_tuple", {"configurable": {**conf, "checkpoint_id": 5}}) is None
    assert await cp.call("list", {"configurable": {**conf, "checkpoint_id": 5}}) == []
    whole = {"configurable": {"thread_id": conf["thread_id"]}}
    # every checkpoint id sorts after "0"
    assert await cp.call("list", whole, before={"configurable": {"checkpoint_id": 0}}) == []
    with pytest.raises(ConfigurationError, match=r"checkpoint_id .* NUL"):
        await cp.call("get_tuple", {"configurable": {**conf, "checkpoint_id": "a\x00b"}})
    with pytest.raises(ConfigurationError, match=r"checkpoint_id .* NUL"):
        await cp.call("list", thread, before={"configurable": {"checkpoint_id": "a\x00b"}})


async def test_a_write_channel_must_be_a_string(cp: SaverDriver, thread: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="write channel must be a string, got int"):
        await cp.call("put_writes", thread, [(5, "value")], "task")
    tup = await cp.call("get_tuple", thread)
    assert tup.pending_writes == []  # nothing written


async def test_metadata_text_with_nul_is_refused_not_stripped(
    cp: SaverDriver, thread: dict[str, Any]
) -> None:
    for metadata in ({"note": "a\x00b"}, {"note": {"inner": "a\x00b"}}):
        with pytest.raises(SerializationError, match="metadata key 'note' contains a NUL"):
            await cp.call("put", thread, _checkpoint(3), metadata, {"x": 3})
    whole = {"configurable": {"thread_id": thread["configurable"]["thread_id"]}}
    assert len(await cp.call("list", whole)) == 2  # nothing written


async def test_a_config_without_a_thread_is_named(cp: SaverDriver, thread: dict[str, Any]) -> None:
    # LangGraph's InMemorySaver answers these with a bare KeyError or AttributeError
    reference = InMemorySaver()
    with pytest.raises(KeyError):
        reference.get_tuple({})
    with pytest.raises(AttributeError):
        reference.put(thread, _checkpoint(1), None, {})  # type: ignore[arg-type]
    for config, missing in (({}, '"configurable"'), ({"configurable": {}}, '"thread_id"')):
        with pytest.raises(ConfigurationError, match=f"must name a thread.*no.*{missing}"):
            await cp.call("get_tuple", config)
        with pytest.raises(ConfigurationError, match=f"must name a thread.*no.*{missing}"):
            await cp.call("put", config, _checkpoint(1), {}, {"x": 1})
        with pytest.raises(ConfigurationError, match=f"must name a thread.*no.*{missing}"):
            await cp.call("put_writes", config, [("x", 1)], "task")
    with pytest.raises(SerializationError, match=r"metadata must be a dict.*got NoneType"):
        await cp.call("put", thread, _checkpoint(1), None, {"x": 1})
    no_checkpoint = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    with pytest.raises(ConfigurationError, match=r'put_writes .* no configurable "checkpoint_id"'):
        await cp.call("put_writes", no_checkpoint, [("x", 1)], "task")
    with pytest.raises(ConfigurationError, match="before must be a checkpoint's config"):
        await cp.call("list", thread, before={"checkpoint_id": "x"})


# -- store ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sync_store(dsn: str) -> AsyncIterator[PostgresStore]:
    store = await open_sync(dsn, schema="counts_sync", index=index_config())
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)


@pytest.fixture(scope="module")
async def async_store(dsn: str) -> AsyncIterator[AsyncPostgresStore]:
    store = await open_async(dsn, schema="counts_async", index=index_config())
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(params=["sync", "async"])
def store(request: pytest.FixtureRequest) -> StoreDriver:
    return StoreDriver(request.getfixturevalue(f"{request.param}_store"), request.param)


@pytest.fixture
async def ns(store: StoreDriver) -> tuple[str, ...]:
    """A namespace root with three items (with vectors), two of them one level deeper."""
    root = (f"n{uuid.uuid4().hex[:10]}",)
    await store.put(root, "a", {"text": "green tea"})
    await store.put((*root, "x"), "b", {"text": "black tea"})
    await store.put((*root, "y"), "c", {"text": "mint tea"})
    return root


async def test_store_counts_up_to_their_sql_type(store: StoreDriver, ns: tuple[str, ...]) -> None:
    assert len(await store.search(ns, limit=MAX_COUNT)) == 3
    assert await store.search(ns, offset=MAX_COUNT) == []
    # a vector search derives its candidates from offset + limit: capped at bigint
    assert len(await store.search(ns, query="tea", limit=MAX_COUNT)) == 3
    assert await store.search(ns, query="tea", limit=MAX_COUNT, offset=MAX_COUNT) == []
    assert len(await store.list_namespaces(prefix=ns, limit=MAX_COUNT)) == 3
    assert await store.list_namespaces(prefix=ns, offset=MAX_COUNT) == []
    assert len(await store.list_namespaces(prefix=ns, max_depth=MAX_INT4)) == 3
    assert await store.list_namespaces(prefix=ns, max_depth=1) == [ns]


@pytest.mark.parametrize("argument", ["limit", "offset"])
async def test_store_counts_past_their_sql_type_are_named(
    store: StoreDriver, ns: tuple[str, ...], argument: str
) -> None:
    for query in (None, "tea"):
        with pytest.raises(ConfigurationError, match=f"search {argument} must .* at most {BIGINT}"):
            await store.search(ns, query=query, **{argument: MAX_COUNT + 1})
    with pytest.raises(
        ConfigurationError, match=f"list_namespaces {argument} must .* at most {BIGINT}"
    ):
        await store.list_namespaces(prefix=ns, **{argument: MAX_COUNT + 1})


async def test_a_namespace_depth_is_an_int4(store: StoreDriver, ns: tuple[str, ...]) -> None:
    for bad in (MAX_INT4 + 1, 10**20, 0, True):
        with pytest.raises(ConfigurationError, match="max_depth must be a positive integer"):
            await store.list_namespaces(prefix=ns, max_depth=bad)


TTLS = [1e300, MAX_TTL_MINUTES * 1.01, 10**5000, float("nan"), float("inf"), -1, 0]


@pytest.mark.parametrize(
    "ttl", TTLS, ids=["1e300", "bound+1%", "10**5000", "nan", "inf", "-1", "0"]
)
async def test_a_ttl_past_the_interval_range_is_refused(
    store: StoreDriver, ns: tuple[str, ...], ttl: Any
) -> None:
    with pytest.raises(ConfigurationError, match="ttl must be a positive number of minutes"):
        await store.put(ns, "ttl", {"text": "x"}, ttl=ttl)
    assert await store.get(ns, "ttl") is None  # nothing written
    await store.put(ns, "ttl", {"text": "x"}, ttl=MAX_TTL_MINUTES)
    assert await store.get(ns, "ttl") is not None


def test_a_quota_is_a_bigint() -> None:
    assert ResourceQuota(max_items=MAX_COUNT).max_items == MAX_COUNT
    with pytest.raises(ConfigurationError, match=f"ResourceQuota.max_bytes .* at most {BIGINT}"):
        ResourceQuota(max_bytes=MAX_COUNT + 1)


# -- memory --------------------------------------------------------------------------------


def test_a_history_page_of_the_largest_count(dsn: str) -> None:
    with ConversationStore(dsn) as store:
        store.setup()
    with history_factory(dsn) as histories:
        history = histories(new_id("s"))
        history.add_messages([HumanMessage("one"), AIMessage("two"), HumanMessage("three")])
        assert len(history.last(MAX_COUNT)) == 3
        first = history.page(1)
        rest = history.page(MAX_COUNT, first.next_cursor)  # its end is capped, not past bigint
        assert [m.message.content for m in rest.messages] == ["two", "three"]
        assert rest.next_cursor is None
        assert len(history.page(MAX_COUNT, newest_first=True).messages) == 3
        for cursor in ("9" * 19, "9" * 5000, "\u00b2"):  # past the positions; not ASCII digits
            with pytest.raises(ConfigurationError, match="invalid message cursor"):
                history.page(1, cursor)
        with pytest.raises(ConfigurationError, match=f"limit must .* at most {BIGINT}"):
            history.page(MAX_COUNT + 1)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_vector_memory_counts_of_the_largest_size(dsn: str, kind: str) -> None:
    texts = ["green tea in the morning", "black coffee at noon", "mint tea at night"]
    if kind == "sync":
        with VectorMemory(dsn, embeddings=HashingEmbeddings(32), user_id="counts") as memory:
            memory.setup()
            await asyncio.to_thread(memory.add_memories, texts)
            await _vector_counts(Side(memory, False))
        return
    async with AsyncVectorMemory(dsn, embeddings=HashingEmbeddings(32), user_id="ac") as amemory:
        await amemory.setup()
        await amemory.aadd_memories(texts)
        await _vector_counts(Side(amemory, True))


async def _vector_counts(memory: Side) -> None:
    # MMR widens the candidates to 4 x top_k: capped at bigint, as the store's limit
    assert len(await memory("search", "tea", top_k=MAX_COUNT, rerank="mmr")) == 3
    assert len(await memory("search", "tea", top_k=MAX_COUNT)) == 3
    assert await memory("get_episodic_memories", None, "tea", candidates=MAX_COUNT)
    with pytest.raises(ConfigurationError, match=f"top_k must .* at most {BIGINT}"):
        await memory("search", "tea", top_k=MAX_COUNT + 1)
