"""Per-tenant retention in the background, on :mod:`haive_langgraph.db._periodic`
(as the checkpointers' retention sweepers and the stores' TTL sweepers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._periodic import PeriodicThread, periodic_task
from haive_langgraph.tenants._admin import AdminConn, AsyncAdminConn
from haive_langgraph.tenants._retention import (
    TenantRetentionReport,
    atenant_retention,
    tenant_retention,
)

logger = logging.getLogger("haive_langgraph.tenants.retention")


def _logged(report: TenantRetentionReport) -> None:
    for tenant in report.tenants:
        logger.info("tenant retention: %s", tenant.as_dict())


class TenantRetentionSweeper:
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
        self._owned = not isinstance(conn, ConnectionSource)
        self.source = (
            conn if isinstance(conn, ConnectionSource) else ConnectionSource(conn, config=config)
        )
        self.interval = interval
        self.tenant_ids = tenant_ids
        self.schema = schema
        self.last_report: TenantRetentionReport | None = None
        self._rounds: PeriodicThread | None = None

    def run_once(self, *, dry_run: bool = False) -> TenantRetentionReport:
        """Apply the tenants' retention now (``dry_run``: report only)."""
        report = tenant_retention(
            self.source,
            dry_run=dry_run,
            tenant_ids=self.tenant_ids,
            schema=self.schema,
            config=self.source.config,
        )
        if not dry_run:
            self.last_report = report
        return report

    def _round(self) -> None:
        try:
            _logged(self.run_once())
        except Exception:  # keep sweeping; the next round may succeed
            logger.exception("tenant retention sweep failed")

    def start(self) -> None:
        """Sweep now and then every ``interval`` seconds (no-op if running)."""
        if self._rounds is not None and self._rounds.is_alive():
            return
        self._rounds = PeriodicThread(
            self._round, self.interval, name="haive-tenant-retention", first_now=True
        )

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the current round (waiting at most ``timeout`` seconds for it), and
        close the pool the sweeper opened (a DSN's)."""
        if self._rounds is not None:
            self._rounds.stop(timeout)
            self._rounds = None
        if self._owned:
            self.source.close()


class AsyncTenantRetentionSweeper:
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
        self._owned = not isinstance(conn, AsyncConnectionSource)
        self.source = (
            conn
            if isinstance(conn, AsyncConnectionSource)
            else AsyncConnectionSource(conn, config=config)
        )
        self.interval = interval
        self.tenant_ids = tenant_ids
        self.schema = schema
        self.last_report: TenantRetentionReport | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, *, dry_run: bool = False) -> TenantRetentionReport:
        """Apply the tenants' retention now (``dry_run``: report only)."""
        report = await atenant_retention(
            self.source,
            dry_run=dry_run,
            tenant_ids=self.tenant_ids,
            schema=self.schema,
            config=self.source.config,
        )
        if not dry_run:
            self.last_report = report
        return report

    async def _round(self) -> None:
        try:
            _logged(await self.run_once())
        except Exception:  # keep sweeping; the next round may succeed
            logger.exception("tenant retention sweep failed")

    def start(self) -> None:
        """Sweep now and then every ``interval`` seconds (no-op if running)."""
        if self._task is None or self._task.done():
            self._task = periodic_task(
                self._round, self.interval, name="haive-tenant-retention", first_now=True
            )

    async def stop(self) -> None:
        """Cancel the task (and wait for it to end), and close the pool it opened."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._owned:
            await self.source.close()
