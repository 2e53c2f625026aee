"""Fixtures: one test body, run on the sync and the async classes.

``Side`` calls an object's method uniformly from async tests: the async class
is awaited directly (``a<method>``), the sync class runs in a worker thread,
as an application would call it. ``kind`` parametrizes a test over both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from haive_langgraph.memory import (
    AsyncChatHistoryFactory,
    AsyncConversationStore,
    AsyncSessionStore,
    ChatHistoryFactory,
    ConversationStore,
    ModelPrice,
    SessionStore,
    async_history_factory,
    history_factory,
)

# Prices per million tokens; "demo-echo" also prices "demo-echo-1" (prefix).
PRICES = {
    "demo-echo": ModelPrice(Decimal("1"), Decimal("2")),
    "gpt-x": ModelPrice(Decimal("10"), Decimal("30")),
}


class Side:
    """Calls ``obj.<method>`` (sync, in a thread) or ``obj.a<method>`` (async)."""

    def __init__(self, obj: Any, is_async: bool) -> None:
        self.obj = obj
        self.is_async = is_async

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await getattr(self.obj, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.obj, method), *args, **kwargs)


def new_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run a query on the module's database (for assertions on what is stored)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    with ConversationStore(dsn) as store:
        store.setup()
    return dsn


@pytest.fixture(scope="module")
def sync_store(migrated: str) -> Iterator[ConversationStore]:
    with ConversationStore(migrated, prices=PRICES) as store:
        yield store


@pytest.fixture(scope="module")
async def async_store(migrated: str) -> AsyncIterator[AsyncConversationStore]:
    async with AsyncConversationStore(migrated, prices=PRICES) as store:
        yield store


@pytest.fixture(scope="module")
def sync_sessions(migrated: str) -> Iterator[SessionStore]:
    with SessionStore(migrated, max_messages_per_session=50) as manager:
        yield manager


@pytest.fixture(scope="module")
async def async_sessions(migrated: str) -> AsyncIterator[AsyncSessionStore]:
    async with AsyncSessionStore(migrated, max_messages_per_session=50) as manager:
        yield manager


@pytest.fixture(scope="module")
def sync_histories(migrated: str) -> Iterator[ChatHistoryFactory]:
    with history_factory(migrated) as factory:
        yield factory


@pytest.fixture(scope="module")
async def async_histories(migrated: str) -> AsyncIterator[AsyncChatHistoryFactory]:
    async with async_history_factory(migrated) as factory:
        yield factory


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, request: pytest.FixtureRequest) -> Side:
    """The conversation store, sync or async."""
    return Side(request.getfixturevalue(f"{kind}_store"), kind == "async")


@pytest.fixture
def sessions(kind: str, request: pytest.FixtureRequest) -> Side:
    """The session manager (max 50 messages per session), sync or async."""
    return Side(request.getfixturevalue(f"{kind}_sessions"), kind == "async")


@pytest.fixture
def histories(kind: str, request: pytest.FixtureRequest) -> Any:
    """A ``session_id -> history`` factory, sync or async."""
    return request.getfixturevalue(f"{kind}_histories")


def history_side(histories: Any, session_id: str, **kwargs: Any) -> Side:
    return Side(histories(session_id, **kwargs), isinstance(histories, AsyncChatHistoryFactory))


@pytest.fixture
def raw_store(kind: str, request: pytest.FixtureRequest) -> Any:
    """The ConversationStore or AsyncConversationStore itself."""
    return request.getfixturevalue(f"{kind}_store")
