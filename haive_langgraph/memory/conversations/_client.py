"""What every sync and async conversation-memory class shares.

:class:`SyncClient` and :class:`AsyncClient` hold a connection source and the
:class:`ConversationTables`; they run :class:`~haive_langgraph.db.Call`
values (``source.call(c)``), create the tables and close what they opened.

A public method is written once, as a method that validates its arguments
and builds the call (no I/O), with the public signature and docstring;
:func:`~haive_langgraph.db._methods.sync_method` and
:func:`~haive_langgraph.db._methods.async_method` make the sync and the async
method that run it. So a sync class and its async twin share every signature,
docstring and check, and differ only in how a call runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

from haive_langgraph._lifetime import AsyncClosedOnExit, ClosedOnExit
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._conn_string import AsyncFromConnString, FromConnString
from haive_langgraph.db._connections import AsyncConn, ConnectionSource, SyncConn
from haive_langgraph.db._loop import call_on_loop
from haive_langgraph.db._methods import deprecated_asetup
from haive_langgraph.memory.conversations._tables import ConversationTables

T = TypeVar("T")

ConnT = TypeVar("ConnT", SyncConn, AsyncConn)
"""The connection a class takes: ``SyncConn`` for sync classes, ``AsyncConn`` for async."""


class _Client:
    """The tables, the connection source and the properties every class shows."""

    _tables: ConversationTables
    _source: ConnectionSource | AsyncConnectionSource
    _source_type: ClassVar[type[ConnectionSource] | type[AsyncConnectionSource]]

    def _init_client(
        self, conn: Any, config: PersistenceConfig, tables: ConversationTables
    ) -> None:
        """Open the source on ``conn``, the tenant bound for row-level security."""
        self._tables = tables
        self._source = self._source_type(conn, config=config, scope=tables.scope())

    @property
    def tenant_id(self) -> str:
        """Tenant whose rows this instance reads and writes."""
        return self._tables.tenant_id

    @property
    def schema(self) -> str:
        """Schema of the tables."""
        return self._tables.schema


class SyncClient(_Client, FromConnString, ClosedOnExit):
    """Runs calls on a psycopg ``Connection`` (a DSN's own pool, a lent pool or connection)."""

    _source: ConnectionSource
    _source_type = ConnectionSource

    def _run(self, call: Call[T]) -> T:
        return self._source.call(call)

    def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        self._source.call(self._tables.setup_call())

    def close(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        self._source.close()


class AsyncClient(_Client, AsyncFromConnString, AsyncClosedOnExit):
    """Runs calls on a psycopg ``AsyncConnection`` (own pool, lent pool or connection).

    The sync methods of the async classes work from other threads while the
    event loop that the instance first ran on is running (as LangGraph's
    async savers do); on that loop's thread they raise.
    """

    _source: AsyncConnectionSource
    _source_type = AsyncConnectionSource
    _loop: asyncio.AbstractEventLoop | None = None
    # Factories learn their loop from their first history, not their constructor.
    _loop_at_init: ClassVar[bool] = True

    def _init_client(self, *args: Any, **kwargs: Any) -> None:
        super()._init_client(*args, **kwargs)
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
        return call_on_loop(
            coro,
            self._loop,
            f"synchronous calls to {type(self).__name__} only work from another thread "
            "while its event loop runs; use the async interface, for example "
            f"`await obj.{hint}(...)`, or the sync class",
        )

    async def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        await self._arun(self._tables.setup_call())

    asetup = deprecated_asetup

    async def aclose(self) -> None:
        """Close the pool this instance opened (a lent connection or pool stays open)."""
        await self._source.close()
