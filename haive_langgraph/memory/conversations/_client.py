"""What every sync and async conversation-memory class shares.

:class:`SyncClient` and :class:`AsyncClient` hold a connection source and the
:class:`ConversationTables`; they run :class:`~haive_langgraph.db.Call`
values (``source.call(c)``), create the tables and close what they opened.

A public method is written once, as a method that validates its arguments
and builds the call (no I/O), with the public signature and docstring;
:func:`sync_call` and :func:`async_call` make the sync and the async method
that run it. So a sync class and its async twin share every signature,
docstring and check, and differ only in how a call runs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Concatenate, ParamSpec, Self, TypeVar, cast

from haive_langgraph.db import AsyncConnectionSource, Call, ConnectionSource, PersistenceConfig
from haive_langgraph.db._conn_string import AsyncFromConnString, FromConnString
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.memory.conversations._tables import ConversationTables

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")

ConnT = TypeVar("ConnT", SyncConn, AsyncConn)
"""The connection a class takes: ``SyncConn`` for sync classes, ``AsyncConn`` for async."""


def sync_call(build: Callable[Concatenate[S, P], Call[T]]) -> Callable[Concatenate[S, P], T]:
    """The sync method that runs the call ``build`` makes (same signature and docstring)."""

    @functools.wraps(build)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return cast(SyncClient, self)._run(build(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = build.__name__.lstrip("_")
    return method


def async_call(
    build: Callable[Concatenate[S, P], Call[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The async method (``a``-prefixed) that runs the call ``build`` makes."""

    @functools.wraps(build)
    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await cast(AsyncClient, self)._arun(build(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = "a" + build.__name__.lstrip("_")
    return method


class _Client:
    """The tables and the properties every class shows."""

    _tables: ConversationTables

    @property
    def tenant_id(self) -> str:
        """Tenant whose rows this instance reads and writes."""
        return self._tables.tenant_id

    @property
    def schema(self) -> str:
        """Schema of the tables."""
        return self._tables.schema


class SyncClient(_Client, FromConnString):
    """Runs calls on a psycopg ``Connection`` (a DSN's own pool, a lent pool or connection)."""

    _source: ConnectionSource

    def _init_client(
        self,
        conn: SyncConn,
        config: PersistenceConfig,
        tables: ConversationTables,
        *,
        scoped: bool = True,
    ) -> None:
        self._tables = tables
        scope = tables.scope() if scoped else None
        self._source = ConnectionSource(conn, config=config, scope=scope)

    def _run(self, call: Call[T]) -> T:
        return self._source.call(call)

    def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        self._source.call(self._tables.setup_call())

    def close(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Client, AsyncFromConnString):
    """Runs calls on a psycopg ``AsyncConnection`` (own pool, lent pool or connection).

    The sync methods of the async classes work from other threads while the
    event loop that the instance first ran on is running (as LangGraph's
    async savers do); on that loop's thread they raise.
    """

    _source: AsyncConnectionSource
    _loop: asyncio.AbstractEventLoop | None = None
    _loop_at_init: ClassVar[bool] = True

    def _init_client(
        self,
        conn: AsyncConn,
        config: PersistenceConfig,
        tables: ConversationTables,
        *,
        scoped: bool = True,
    ) -> None:
        self._tables = tables
        scope = tables.scope() if scoped else None
        self._source = AsyncConnectionSource(conn, config=config, scope=scope)
        if self._loop_at_init:
            self._note_loop()

    def _note_loop(self) -> None:
        """Remember the running event loop, the one the sync methods hand calls to."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                pass

    async def _arun(self, call: Call[T]) -> T:
        self._note_loop()
        return await self._source.call(call)

    def _sync(self, coro: Coroutine[Any, Any, T], hint: str) -> T:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            coro.close()
            raise asyncio.InvalidStateError(
                f"synchronous calls to {type(self).__name__} only work from another thread "
                "while its event loop runs; use the async interface, for example "
                f"`await obj.{hint}(...)`, or the sync class"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def asetup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        await self._arun(self._tables.setup_call())

    async def aclose(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        await self._source.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
