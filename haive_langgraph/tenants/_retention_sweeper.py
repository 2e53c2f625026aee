"""Per-tenant retention in the background, on :mod:`haive_langgraph.db._periodic`
(as the checkpointers' retention sweepers and the stores' TTL sweepers)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._periodic import AsyncSweeper, Sweeper
from haive_langgraph.tenants._admin import AdminConn, AsyncAdminConn
from haive_langgraph.tenants._retention import (
    TenantRetentionReport,
    atenant_retention,
    tenant_retention,
)

logger = logging.getLogger("haive_langgraph.tenants.retention")


Src = TypeVar("Src", ConnectionSource, AsyncConnectionSource)


class _TenantSweep(Generic[Src]):
    """What both sweepers share: the connection source, the tenants, the schema, the last
    report, the log."""

    _name = "haive-tenant-retention"
    _logger = logger
    _failed = "tenant retention sweep failed"

    def __init__(
        self,
        source: Src,
        *,
        owned: bool,
        interval: float,
        tenant_ids: Sequence[str] | None,
        schema: str | None,
    ) -> None:
        self.source: Src = source
        self._owned = owned  # a pool the sweeper opened (a DSN's), closed by stop()
        self.interval = interval
        self.tenant_ids = tenant_ids
        self.schema = schema
        self.last_report: TenantRetentionReport | None = None

    def _logged(self, report: TenantRetentionReport) -> None:
        for tenant in report.tenants:
            logger.info("tenant retention: %s", tenant.as_dict())

    def _arguments(self, dry_run: bool) -> dict[str, Any]:
        """The keyword arguments of a round's ``(a)tenant_retention`` call."""
        return {
            "dry_run": dry_run,
            "tenant_ids": self.tenant_ids,
            "schema": self.schema,
            "config": self.source.config,
        }

    def _ran(self, report: TenantRetentionReport, dry_run: bool) -> TenantRetentionReport:
        if not dry_run:
            self.last_report = report
        return report


class TenantRetentionSweeper(_TenantSweep[ConnectionSource], Sweeper[TenantRetentionReport]):
    """Applies every tenant's ``data_retention_days`` every ``interval`` seconds, in a
    daemon thread (see :func:`tenant_retention`).

    Args:
        conn: A DSN, ``None`` (the default server), a ``Connection``, a
            ``ConnectionPool`` or a connection source; a pool the sweeper opens
            (from a DSN) is closed by :meth:`stop`.
        interval: Seconds between the end of a round and the next.
        tenant_ids: Only these tenants (default: every tenant with the setting).
        schema: Schema of the tables (default from the config).
        config: Connection settings.

    Example:
        >>> sweeper = TenantRetentionSweeper(dsn, interval=3600)
        >>> sweeper.start()
        >>> ...
        >>> sweeper.stop()
    """

    def __init__(
        self,
        conn: AdminConn = None,
        *,
        interval: float = 3600.0,
        tenant_ids: Sequence[str] | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
    ) -> None:
        source = (
            conn if isinstance(conn, ConnectionSource) else ConnectionSource(conn, config=config)
        )
        super().__init__(
            source,
            owned=source is not conn,
            interval=interval,
            tenant_ids=tenant_ids,
            schema=schema,
        )

    def run_once(self, *, dry_run: bool = False) -> TenantRetentionReport:
        """Apply the tenants' retention now (``dry_run``: report only)."""
        return self._ran(tenant_retention(self.source, **self._arguments(dry_run)), dry_run)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the current round (waiting at most ``timeout`` seconds for it), and
        close the pool the sweeper opened (a DSN's)."""
        super().stop(timeout)
        if self._owned:
            self.source.close()


class AsyncTenantRetentionSweeper(
    _TenantSweep[AsyncConnectionSource], AsyncSweeper[TenantRetentionReport]
):
    """Async twin of :class:`TenantRetentionSweeper`: an asyncio task (``conn``: a DSN,
    ``None``, an ``AsyncConnection``, an ``AsyncConnectionPool`` or an async source;
    ``await stop()`` closes the pool it opened)."""

    def __init__(
        self,
        conn: AsyncAdminConn = None,
        *,
        interval: float = 3600.0,
        tenant_ids: Sequence[str] | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
    ) -> None:
        source = (
            conn
            if isinstance(conn, AsyncConnectionSource)
            else AsyncConnectionSource(conn, config=config)
        )
        super().__init__(
            source,
            owned=source is not conn,
            interval=interval,
            tenant_ids=tenant_ids,
            schema=schema,
        )

    async def run_once(self, *, dry_run: bool = False) -> TenantRetentionReport:
        """Apply the tenants' retention now (``dry_run``: report only)."""
        return self._ran(await atenant_retention(self.source, **self._arguments(dry_run)), dry_run)

    async def stop(self) -> None:
        """Cancel the task (and wait for it to end), and close the pool it opened."""
        await super().stop()
        if self._owned:
            await self.source.close()
