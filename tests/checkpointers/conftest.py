"""Fixtures: one test body, run on the sync and the async checkpointer.

``cp`` drives a saver through a uniform async interface: the async class is
awaited directly, the sync class runs in a worker thread (as an application
would call it), so every behaviour test exercises both code paths.
``memory`` drives LangGraph's ``InMemorySaver`` the same way, as the
reference the results are compared with.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.codec import codec_from_config

# The state types these tests define (test_graphs.Point, .Color) are the
# application's own: declared, as an application declares its state modules.
STATE_MODULES = ("tests.checkpointers",)


class Driver:
    """Calls a saver, or a graph compiled with it, sync or async."""

    def __init__(self, saver: BaseCheckpointSaver[Any], kind: str) -> None:
        self.saver = saver
        self.kind = kind

    @property
    def is_async(self) -> bool:
        return self.kind in ("async", "memory-async")

    def compile(self, builder: Any, **kwargs: Any) -> Any:
        return builder.compile(checkpointer=self.saver, **kwargs)

    async def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def invoke(self, graph: Any, inputs: Any, config: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await graph.ainvoke(inputs, config, **kwargs)
        return await self._sync(graph.invoke, inputs, config, **kwargs)

    async def stream(self, graph: Any, inputs: Any, config: Any, **kwargs: Any) -> list[Any]:
        if self.is_async:
            return [c async for c in graph.astream(inputs, config, **kwargs)]
        return await self._sync(lambda: list(graph.stream(inputs, config, **kwargs)))

    async def get_state(self, graph: Any, config: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await graph.aget_state(config, **kwargs)
        return await self._sync(graph.get_state, config, **kwargs)

    async def history(self, graph: Any, config: Any, **kwargs: Any) -> list[Any]:
        if self.is_async:
            return [s async for s in graph.aget_state_history(config, **kwargs)]
        return await self._sync(lambda: list(graph.get_state_history(config, **kwargs)))

    async def update_state(self, graph: Any, config: Any, values: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await graph.aupdate_state(config, values, **kwargs)
        return await self._sync(graph.update_state, config, values, **kwargs)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a saver method: ``a<method>`` on async drivers, ``<method>`` in a thread otherwise."""
        if self.is_async:
            result = getattr(self.saver, f"a{method}")(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return [x async for x in result]
            return await result
        fn = getattr(self.saver, method)

        def sync_call() -> Any:
            out = fn(*args, **kwargs)
            return list(out) if method == "list" else out

        return await self._sync(sync_call)


@pytest.fixture(scope="module")
async def sync_saver(dsn: str) -> AsyncIterator[PostgresCheckpointer]:
    saver = await asyncio.to_thread(
        lambda: PostgresCheckpointer(dsn, codec=codec_from_config(allowed_modules=STATE_MODULES))
    )
    await asyncio.to_thread(saver.setup)
    try:
        yield saver
    finally:
        await asyncio.to_thread(saver.close)


@pytest.fixture(scope="module")
async def async_saver(dsn: str) -> AsyncIterator[AsyncPostgresCheckpointer]:
    async with AsyncPostgresCheckpointer.from_conn_string(
        dsn, codec=codec_from_config(allowed_modules=STATE_MODULES)
    ) as saver:
        await saver.setup()
        yield saver


@pytest.fixture(params=["sync", "async"])
def cp(request: pytest.FixtureRequest) -> Driver:
    """Our checkpointer, sync or async."""
    if request.param == "sync":
        return Driver(request.getfixturevalue("sync_saver"), "sync")
    return Driver(request.getfixturevalue("async_saver"), "async")


@pytest.fixture
def memory(cp: Driver) -> Driver:
    """LangGraph's InMemorySaver, driven the same way as ``cp``."""
    return Driver(InMemorySaver(), "memory-async" if cp.is_async else "memory")


@pytest.fixture
def thread() -> Callable[[], dict[str, Any]]:
    """A fresh thread config per call."""

    def make() -> dict[str, Any]:
        return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:12]}"}}

    return make
