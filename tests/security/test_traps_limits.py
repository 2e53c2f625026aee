"""Limits and offsets are checked where they are taken (issue 18, small traps).

Before: ``list_threads(limit=0)`` raised ``IndexError``; ``limit=-1`` reached
PostgreSQL (a raw ``InvalidRowCountInLimitClause``) in ``list``,
``list_threads``, ``get_state_history`` and the store's ``list_namespaces``;
``True`` became ``LIMIT true`` (a raw ``DatatypeMismatch``); ``"3"`` and ``2.5``
were silently converted; ``find_checkpoints(limit=0)`` was refused although 0
is meaningful. Now 0 gives an empty result, as LangGraph's ``InMemorySaver``
and ``InMemoryStore`` answer, and anything but a non-negative integer is a
:class:`ConfigurationError` naming the argument, on the sync and async classes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from haive_langgraph._demo import chat_graph
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.checkpointers.conftest import Driver

BAD = [-1, True, 2.5, "3"]


@pytest.fixture
async def thread(cp: Driver) -> dict[str, Any]:
    config = {"configurable": {"thread_id": f"lim-{uuid.uuid4().hex[:10]}"}}
    graph = cp.compile(chat_graph())
    for text in ("one", "two"):
        await cp.invoke(graph, {"messages": [HumanMessage(text)]}, config)
    return config


async def test_zero_gives_nothing_as_the_reference_saver(
    cp: Driver, thread: dict[str, Any]
) -> None:
    memory = Driver(InMemorySaver(), "memory-async" if cp.is_async else "memory")
    reference = memory.compile(chat_graph())
    await memory.invoke(reference, {"messages": [HumanMessage("one")]}, thread)
    assert await memory.call("list", thread, limit=0) == []
    assert await cp.call("list", thread, limit=0) == []
    graph = cp.compile(chat_graph())
    assert await cp.history(graph, thread, limit=0) == []
    tid = thread["configurable"]["thread_id"]
    assert await cp.call("find_checkpoints", tid, limit=0) == []
    page = await cp.call("list_threads", limit=0)
    assert page.threads == [] and page.next_cursor is None
    # and the positive case still pages
    assert len(await cp.call("list", thread, limit=2)) == 2
    assert len(await cp.call("find_checkpoints", tid, limit=2)) == 2
    assert (await cp.call("list_threads", limit=1)).next_cursor is not None
    assert len((await cp.call("list_threads", limit=None)).threads) >= 1


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize(
    "method", ["list", "list_threads", "find_checkpoints", "get_state_history"]
)
async def test_a_bad_checkpointer_limit_is_named(
    cp: Driver, thread: dict[str, Any], method: str, bad: Any
) -> None:
    tid = thread["configurable"]["thread_id"]
    with pytest.raises(ConfigurationError, match="limit must be a non-negative integer"):
        if method == "get_state_history":
            await cp.history(cp.compile(chat_graph()), thread, limit=bad)
        elif method == "list":
            await cp.call("list", thread, limit=bad)
        elif method == "list_threads":
            await cp.call("list_threads", limit=bad)
        else:
            await cp.call("find_checkpoints", tid, limit=bad)


# -- store ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_store(dsn: str) -> Iterator[PostgresStore]:
    with PostgresStore.from_conn_string(dsn) as store:
        store.setup()
        store.put(("lim", "a"), "k", {"v": 1})
        yield store


@pytest.fixture(scope="module")
async def async_store(dsn: str, sync_store: PostgresStore) -> AsyncIterator[AsyncPostgresStore]:
    async with AsyncPostgresStore.from_conn_string(dsn) as store:
        yield store


@pytest.fixture(params=["sync", "async"])
def store_call(request: pytest.FixtureRequest) -> Any:
    """``store.<method>`` in a thread, or ``store.a<method>`` awaited."""
    if request.param == "sync":
        sync = request.getfixturevalue("sync_store")
        return lambda method, *a, **kw: asyncio.to_thread(getattr(sync, method), *a, **kw)
    aio = request.getfixturevalue("async_store")
    return lambda method, *a, **kw: getattr(aio, f"a{method}")(*a, **kw)


async def test_store_zero_gives_nothing_as_the_reference_store(store_call: Any) -> None:
    reference = InMemoryStore()
    reference.put(("lim", "a"), "k", {"v": 1})
    for method in ("search", "list_namespaces"):
        args = (("lim",),) if method == "search" else ()
        assert getattr(reference, method)(*args, limit=0) == []
        assert await store_call(method, *args, limit=0) == []
        assert len(await store_call(method, *args, offset=0)) == 1


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize("argument", ["limit", "offset"])
async def test_a_bad_store_limit_or_offset_is_named(
    store_call: Any, bad: Any, argument: str
) -> None:
    with pytest.raises(
        ConfigurationError, match=f"search {argument} must be a non-negative integer"
    ):
        await store_call("search", ("lim",), **{argument: bad})
    with pytest.raises(
        ConfigurationError, match=f"list_namespaces {argument} must be a non-negative integer"
    ):
        await store_call("list_namespaces", **{argument: bad})
