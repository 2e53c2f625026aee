"""The connection source of an admin operation over many tenants (retention,
analytics): given as a DSN, a connection, a pool or a source, opened for the
operation and closed after it when it was opened here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import AsyncConn, ConnectionSource, SyncConn

AdminConn = SyncConn | ConnectionSource
"""What the sync admin functions take: a DSN, ``None`` (the default server), a
``Connection``, a ``ConnectionPool`` or a :class:`ConnectionSource`."""

AsyncAdminConn = AsyncConn | AsyncConnectionSource
"""What the async admin functions take (their async counterparts)."""


@contextmanager
def sync_source(conn: AdminConn, config: PersistenceConfig | None) -> Iterator[ConnectionSource]:
    """``conn`` as a source; one opened here is closed on exit."""
    if isinstance(conn, ConnectionSource):
        yield conn
        return
    source = ConnectionSource(conn, config=config)
    try:
        yield source
    finally:
        source.close()


@asynccontextmanager
async def async_source(
    conn: AsyncAdminConn, config: PersistenceConfig | None
) -> AsyncIterator[AsyncConnectionSource]:
    """Async twin of :func:`sync_source` (the source is opened first)."""
    if isinstance(conn, AsyncConnectionSource):
        await conn.open()
        yield conn
        return
    source = AsyncConnectionSource(conn, config=config)
    try:
        await source.open()
        yield source
    finally:
        await source.close()


def bound_tenant(source: ConnectionSource | AsyncConnectionSource) -> str | None:
    """The tenant ``source`` is bound to (its scope), or ``None`` for an admin source."""
    scope = source.scope
    return scope.tenant_id if scope is not None and scope.tenant_id else None
