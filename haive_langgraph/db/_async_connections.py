"""Async connection sources: :class:`AsyncConnectionSource`.

The async twin of :class:`~haive_langgraph.db._connections.ConnectionSource`
(see that module for the kinds of connection accepted); every decision is
the shared plan's (:mod:`haive_langgraph.db._call_plan`), this only does its I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, Unpack

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from haive_langgraph.db._call import Call, adrive
from haive_langgraph.db._call_plan import Attempt
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import (
    AsyncConn,
    RunOptions,
    SourceBase,
    connect_error,
    lost_if_dead,
)
from haive_langgraph.db._driver import OpFactory, Step, arun
from haive_langgraph.db._dsn import normalize_dsn, resolve_dsn
from haive_langgraph.db._lent import check_lent_in_use
from haive_langgraph.db._liveness import (
    PING_AFTER_IDLE_SECONDS,
    ausable,
    has_input,
)
from haive_langgraph.db._replicas import AsyncReplicaSet
from haive_langgraph.db._tenancy import TenantScope, row_security_step

T = TypeVar("T")


class AsyncConnectionSource(SourceBase[AsyncConn]):
    """Async twin of :class:`ConnectionSource`.

    A DSN is checked at once; the pool opens on first use (or :meth:`open`),
    and with ``None`` that is when the default server is resolved (the
    embedded server, if that is the one, starts in a worker thread).
    """

    replicas: AsyncReplicaSet | None
    _lock: asyncio.Lock | None
    _conn: AsyncConnection[Any] | None
    _pool: AsyncConnectionPool[Any] | None
    _conn_type = AsyncConnection
    _pool_type = AsyncConnectionPool
    _lock_type = asyncio.Lock
    _is_async = True

    def _replica_set(self, dsns: Sequence[str]) -> AsyncReplicaSet:
        return AsyncReplicaSet(dsns, self.config, _async_replica)

    def _own(self, conn: str | None, argument: str) -> None:
        self._opening = asyncio.Lock()
        if conn is not None and conn.strip():
            self.dsn = normalize_dsn(conn, where=f"the argument {argument}")
        elif self.config.database_url and self.config.database_url.strip():
            # A variable's DSN is checked now (no I/O); the embedded server
            # is left to open(), which starts it in a worker thread.
            self.dsn = resolve_dsn(None, config=self.config)

    async def open(self) -> None:
        """Open the owned pool (DSN sources); a no-op for lent connections and pools."""
        if not self._owned or self._pool is not None:
            return
        async with self._opening:
            if self._pool is None:
                await self._open_pool()

    async def _open_pool(self) -> None:
        if self.dsn is None:
            self.dsn = await asyncio.to_thread(resolve_dsn, None, config=self.config)
        dsn = self.dsn
        options = self._pool_options(dsn)
        try:
            await (await AsyncConnection.connect(dsn, **options["kwargs"])).close()
        except psycopg.Error as exc:
            raise connect_error(dsn, exc) from None
        tracker = self._idle

        async def check(conn: AsyncConnection[Any]) -> None:
            if tracker.idle_for(conn) > PING_AFTER_IDLE_SECONDS and not has_input(conn):
                await conn.execute("")

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, check=check, open=False, **options
        )
        await pool.open()
        self._pool = pool

    @property
    def is_pooled(self) -> bool:
        return self._pool is not None or self._owned

    @property
    def max_connections(self) -> int:
        """How many connections operations may hold at once (1 for a lent connection)."""
        if self._pool is not None:
            return self._pool.max_size
        return self.config.pool_max_size if self._owned else 1

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """Borrow a connection for one operation."""
        if self._conn is not None:
            assert self._lock is not None
            async with self._lock:
                check_lent_in_use(self._conn)
                yield self._conn
            return
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        for spare in range(self._pool.max_size, -1, -1):  # see ConnectionSource.connection
            try:
                cm = self._pool.connection()
                conn = await cm.__aenter__()
            except PoolTimeout as exc:
                raise self._pool_error(exc) from None
            if not spare or await ausable(conn):
                break
            await cm.__aexit__(None, None, None)
        try:
            yield conn
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            self._idle.mark(conn)
            await cm.__aexit__(None, None, None)

    async def call(self, call: Call[T]) -> T:
        """Async twin of :meth:`ConnectionSource.call`."""
        return await adrive(self._plan(call, call.route if call.read else "primary"), self._handle)

    async def run(self, factory: OpFactory[T], **options: Unpack[RunOptions]) -> T:
        """Async twin of :meth:`ConnectionSource.run`."""
        call = Call(factory, **options)
        return await adrive(self._plan(call, call.route), self._handle)

    async def attempt(self, attempt: Attempt) -> Any:
        """Async twin of :meth:`ConnectionSource.attempt`."""
        async with self.connection() as conn:
            try:
                prelude = (
                    await self._prelude(conn, attempt.scope) if attempt.scope is not None else ()
                )
                if not attempt.transaction:
                    return await arun(conn, attempt.op(), prelude=prelude, every=True)
                async with conn.transaction() as tx:
                    result = await arun(conn, attempt.op(), prelude=prelude)
                    if attempt.rollback:
                        raise psycopg.Rollback(tx)
                return result
            except psycopg.OperationalError as exc:
                return lost_if_dead(attempt, conn, exc)

    async def _prelude(self, conn: AsyncConnection[Any], scope: TenantScope) -> tuple[Step, ...]:
        active = self._row_security.known(conn, scope.table)
        if active is None:
            step = row_security_step(scope.table)
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(step.query, step.params)
                row = await cur.fetchone()
            active = self._row_security.learn(conn, scope.table, row)
        return scope.prelude(active)

    async def close(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()
        if self._owned and self._pool is not None:
            await self._pool.close()
            self._pool = None


def _async_replica(dsn: str, config: PersistenceConfig) -> AsyncConnectionSource:
    return AsyncConnectionSource(dsn, config=config, replicas=())
