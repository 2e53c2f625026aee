"""What every sync and async conversation-memory class shares: setup and running calls.

:class:`SyncClient` and :class:`AsyncClient` hold a connection source and a
:class:`~haive_langgraph.memory._history_ops.HistoryOps`; they run
:class:`~haive_langgraph.memory._history_ops.Call` values (on a psycopg
``Connection`` or an ``AsyncConnection``) and turn failed checks into our
errors. The public classes only build calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.codec import Codec, default_codec
from haive_langgraph.db import (
    AsyncConnectionSource,
    ConnectionSource,
    PersistenceConfig,
    migrate_op,
    validate_identifier,
)
from haive_langgraph.db._conn_string import AsyncFromConnString, FromConnString
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.db._tenancy import validate_tenant_id
from haive_langgraph.memory._history_codec import DEFAULT_MAX_MESSAGE_BYTES
from haive_langgraph.memory._history_ops import Call, HistoryOps, translate
from haive_langgraph.memory._history_sql import COMPONENT
from haive_langgraph.memory._history_types import ModelPrice

T = TypeVar("T")


def make_ops(
    *,
    config: PersistenceConfig | None,
    schema: str | None,
    tenant_id: str | None,
    codec: Codec | None,
    serde: SerializerProtocol | None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    prices: Mapping[str, ModelPrice] | None = None,
) -> tuple[PersistenceConfig, HistoryOps]:
    """Resolve the options every class takes into a config and its operations."""
    config = config or PersistenceConfig()
    schema_name = validate_identifier(
        config.schema_name if schema is None else schema, what="schema name"
    )
    tenant = validate_tenant_id(
        config.tenant_id if tenant_id is None else tenant_id, allow_default=True
    )
    ops = HistoryOps(
        schema=schema_name,
        tenant_id=tenant,
        codec=codec or default_codec(),
        serde=serde,
        max_message_bytes=max_message_bytes,
        prices=prices,
    )
    return config, ops


class SyncClient(FromConnString):
    """Runs calls on a psycopg ``Connection`` (a DSN's own pool, a lent pool or connection)."""

    _source: ConnectionSource
    _ops: HistoryOps

    def _init_client(self, conn: SyncConn, config: PersistenceConfig, ops: HistoryOps) -> None:
        self._ops = ops
        self._source = ConnectionSource(conn, config=config, scope=ops.scope())

    @property
    def tenant_id(self) -> str:
        """Tenant whose rows this instance reads and writes."""
        return self._ops.tenant_id

    @property
    def schema(self) -> str:
        """Schema of the tables."""
        return self._ops.schema

    def _run(self, call: Call[T]) -> T:
        try:
            return self._source.run(
                call.op,
                transaction=call.transaction,
                read=call.read,
                route=call.route if call.read else "primary",
            )
        except psycopg.Error as exc:
            mapped = translate(exc, call)
            if mapped is None:
                raise
            raise mapped from exc

    def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        schema = self._ops.schema
        self._source.run(lambda: migrate_op([COMPONENT], schema), transaction=True)

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


class AsyncClient(AsyncFromConnString):
    """Runs calls on a psycopg ``AsyncConnection`` (own pool, lent pool or connection).

    The sync methods of the async classes work from other threads while the
    event loop that the instance first ran on is running (as LangGraph's
    async savers do); on that loop's thread they raise.
    """

    _source: AsyncConnectionSource
    _ops: HistoryOps
    _loop: asyncio.AbstractEventLoop | None

    def _init_client(self, conn: AsyncConn, config: PersistenceConfig, ops: HistoryOps) -> None:
        self._ops = ops
        self._source = AsyncConnectionSource(conn, config=config, scope=ops.scope())
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @property
    def tenant_id(self) -> str:
        """Tenant whose rows this instance reads and writes."""
        return self._ops.tenant_id

    @property
    def schema(self) -> str:
        """Schema of the tables."""
        return self._ops.schema

    async def _arun(self, call: Call[T]) -> T:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            return await self._source.run(
                call.op,
                transaction=call.transaction,
                read=call.read,
                route=call.route if call.read else "primary",
            )
        except psycopg.Error as exc:
            mapped = translate(exc, call)
            if mapped is None:
                raise
            raise mapped from exc

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
        schema = self._ops.schema
        await self._arun(Call(lambda: migrate_op([COMPONENT], schema), transaction=True))

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
