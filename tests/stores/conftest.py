"""Fixtures: one test body, run on the sync and the async store (and on InMemoryStore).

``store`` drives a store through a uniform async interface: the async class
is awaited directly, the sync class runs in a worker thread (as an
application would call it). ``memory`` drives LangGraph's ``InMemoryStore``
the same way, with the same embedder, as the reference results are compared
with. Every test works under its own namespace root (``ns``), so tests share
the module's database without seeing each other's items.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

DIMS = 16


def embed_text(text: str, dims: int = DIMS) -> list[float]:
    """Deterministic bag-of-words embedding: texts sharing words are close."""
    vec = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        h = hashlib.sha256(word.encode()).digest()
        vec[h[0] % dims] += 1.0 if h[1] % 2 else -1.0
        vec[h[2] % dims] += 0.5
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


def embed(texts: Sequence[str]) -> list[list[float]]:
    return [embed_text(t) for t in texts]


def index_config(**extra: Any) -> dict[str, Any]:
    return {"dims": DIMS, "embed": embed, "fields": ["text"], **extra}


class Driver:
    """Calls a store, sync or async, through one async interface."""

    def __init__(self, store: BaseStore, kind: str) -> None:
        self.store = store
        self.kind = kind

    @property
    def is_async(self) -> bool:
        return self.kind in ("async", "memory-async")

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``a<method>`` on async drivers, ``<method>`` in a worker thread otherwise."""
        if self.is_async:
            return await getattr(self.store, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.store, method), *args, **kwargs)

    async def admin(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A store-specific method (``setup``, ``sweep_ttl`` ...): awaited or run in a thread."""
        fn = getattr(self.store, method)
        if self.kind == "async":
            return await fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def put(self, *args: Any, **kwargs: Any) -> None:
        await self.call("put", *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("get", *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        await self.call("delete", *args, **kwargs)

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("search", *args, **kwargs)

    async def list_namespaces(self, **kwargs: Any) -> Any:
        return await self.call("list_namespaces", **kwargs)

    async def batch(self, ops: Any) -> Any:
        return await self.call("batch", ops)

    def for_tenant(self, tenant_id: str) -> Driver:
        return Driver(self.store.for_tenant(tenant_id), self.kind)  # type: ignore[attr-defined]


async def open_sync(dsn: str, **kwargs: Any) -> PostgresStore:
    store = await asyncio.to_thread(lambda: PostgresStore(dsn, **kwargs))
    await asyncio.to_thread(store.setup)
    return store


async def open_async(dsn: str, **kwargs: Any) -> AsyncPostgresStore:
    store = AsyncPostgresStore(dsn, **kwargs)
    await store.setup()
    return store


Factory = Callable[..., Awaitable[Driver]]


@asynccontextmanager
async def store_factory(
    kind: str, dsn: str, prefix: str, **defaults: Any
) -> AsyncIterator[Factory]:
    """Opens stores of ``kind`` ("sync" or "async") with ``defaults``, each in a
    fresh schema ``<prefix>_...`` unless one is given; closes them all at the end."""
    opened: list[Any] = []

    async def factory(**kwargs: Any) -> Driver:
        kwargs.setdefault("schema", f"{prefix}_{uuid.uuid4().hex[:10]}")
        for name, value in defaults.items():
            kwargs.setdefault(name, value)
        if kind == "sync":
            store: Any = await asyncio.to_thread(lambda: PostgresStore(dsn, **kwargs))
            opened.append(store)
            await asyncio.to_thread(store.setup)
        else:
            store = AsyncPostgresStore(dsn, **kwargs)
            opened.append(store)
            await store.setup()
        return Driver(store, kind)

    try:
        yield factory
    finally:
        for store in opened:
            if isinstance(store, PostgresStore):
                await asyncio.to_thread(store.close)
            else:
                await store.aclose()


@pytest.fixture(scope="module")
async def sync_store(dsn: str) -> AsyncIterator[PostgresStore]:
    store = await open_sync(dsn, index=index_config(), ttl={"refresh_on_read": True})
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)


@pytest.fixture(scope="module")
async def async_store(dsn: str) -> AsyncIterator[AsyncPostgresStore]:
    store = await open_async(dsn, index=index_config(), ttl={"refresh_on_read": True})
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(params=["sync", "async"])
def store(request: pytest.FixtureRequest) -> Driver:
    """Our store (with a vector index), sync or async."""
    if request.param == "sync":
        return Driver(request.getfixturevalue("sync_store"), "sync")
    return Driver(request.getfixturevalue("async_store"), "async")


@pytest.fixture
def memory(store: Driver) -> Driver:
    """LangGraph's InMemoryStore with the same embedder, driven like ``store``."""
    return Driver(
        InMemoryStore(index=index_config()), "memory-async" if store.is_async else "memory"
    )  # type: ignore[arg-type]


@pytest.fixture
def ns() -> tuple[str, ...]:
    """A namespace root of this test's own."""
    return (f"t{uuid.uuid4().hex[:10]}",)


@pytest.fixture
def tenant() -> Callable[[], str]:
    def make() -> str:
        return f"tenant-{uuid.uuid4().hex[:8]}"

    return make
