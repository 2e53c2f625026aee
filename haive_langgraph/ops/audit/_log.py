"""The audit log's class and module functions, over the operations of ``_ops`` (see :mod:`haive_langgraph.ops.audit`)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from haive_langgraph._lifetime import ClosedOnExit
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._dsn import resolve_dsn
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops.audit._ops import (
    AuditEvent,
    AuditStatus,
    disable_op,
    enable_op,
    prune_op,
    query_op,
    record_op,
    record_read_op,
    settings_op,
    status_op,
)
from haive_langgraph.ops.audit._sql import COMPONENT

# -- the class and module functions ---------------------------------------------------------


class AuditLog(ClosedOnExit):
    """The audit log of a schema.

    Args:
        conn: A DSN (a small pool is opened and owned), a psycopg
            ``Connection`` (autocommit) or a ``ConnectionPool``.
        schema: Schema of the tables (default ``haive``).
        config: Connection settings.
        read_flag_ttl: Seconds the "reads are audited" flag is cached by
            :meth:`record_read`.
    """

    def __init__(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any] | None = None,
        *,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        read_flag_ttl: float = 30.0,
    ) -> None:
        self.config = config or PersistenceConfig()
        self.schema = validate_identifier(schema or self.config.schema_name, what="schema name")
        source = conn if conn is not None else resolve_dsn(None, config=self.config)
        self._source = ConnectionSource(source, config=self.config)
        self._read_flag_ttl = read_flag_ttl
        self._reads: tuple[float, bool] = (-1e18, False)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._source.close()

    def setup(self) -> None:
        """Create the audit tables (idempotent)."""
        self._source.run(lambda: migrate_op([COMPONENT], self.schema), transaction=True)

    def enable(
        self,
        *,
        tables: Sequence[str] | None = None,
        reads: bool | None = None,
        retention: dt.timedelta | None = None,
    ) -> AuditStatus:
        """Start auditing changes to the tables (``fnmatch`` patterns; default every table).

        Args:
            tables: Table patterns to audit (default all; run again after a
                feature adds tables).
            reads: Also record reads reported by :meth:`record_read` (``None``
                keeps the current setting).
            retention: Keep entries this long (applied by :meth:`prune`).
        """
        self.setup()
        self._source.run(
            lambda: enable_op(
                self.schema,
                tables=tables,
                reads=reads,
                retention=retention,
                set_retention=retention is not None,
            ),
            transaction=True,
        )
        self._reads = (-1e18, False)
        return self.status()

    def disable(self) -> AuditStatus:
        """Stop auditing (the recorded entries stay)."""
        self._source.run(lambda: disable_op(self.schema), transaction=True)
        self._reads = (-1e18, False)
        return self.status()

    def status(self) -> AuditStatus:
        return self._source.run(lambda: status_op(self.schema), read=True)

    def query(
        self,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        table: str | None = None,
        operation: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Entries matching every condition given, newest first."""
        if limit < 1:
            raise ConfigurationError(f"limit must be at least 1, got {limit}")
        return self._source.run(
            lambda: query_op(
                self.schema, tenant_id, user_id, table, operation, since, until, limit
            ),
            read=True,
        )

    def prune(self, older_than: dt.datetime | dt.timedelta | None = None) -> int:
        """Delete entries older than a time or age (default: the configured retention)."""
        cutoff = _cutoff(older_than)
        return self._source.run(lambda: prune_op(self.schema, cutoff), transaction=True)

    def record(
        self,
        operation: str,
        table: str,
        object_key: Any = None,
        *,
        tenant_id: str = "",
        user_id: str | None = None,
    ) -> bool:
        """Record an entry now, if auditing is enabled."""
        return self._source.run(
            lambda: record_op(
                self.schema,
                operation=operation,
                table=table,
                object_key=object_key,
                tenant_id=tenant_id,
                user_id=user_id,
                only_if_enabled=True,
            )
        )

    def reads_enabled(self) -> bool:
        """Whether reads are recorded (cached for ``read_flag_ttl`` seconds)."""
        checked, value = self._reads
        now = time.monotonic()
        if now - checked < self._read_flag_ttl:
            return value
        with self._lock:
            enabled, reads, _ = self._source.run(lambda: settings_op(self.schema), read=True)
            value = enabled and reads
            self._reads = (now, value)
        return value

    def record_read(
        self, table: str, object_key: Any, *, tenant_id: str = "", user_id: str | None = None
    ) -> bool:
        """Record a read on behalf of ``user_id``; free when reads are not audited."""
        if not self.reads_enabled():
            return False
        return self._source.run(
            lambda: record_read_op(
                self.schema,
                table=table,
                object_key=object_key,
                tenant_id=tenant_id,
                user_id=user_id,
            )
        )


def _cutoff(older_than: dt.datetime | dt.timedelta | None) -> dt.datetime | None:
    if older_than is None:
        return None
    if isinstance(older_than, dt.timedelta):
        if older_than < dt.timedelta(0):
            raise ConfigurationError("older_than must not be negative")
        return dt.datetime.now(dt.UTC) - older_than
    if older_than.tzinfo is None:
        raise ConfigurationError("older_than must be timezone-aware")
    return older_than


def _with_log(dsn: str | None, schema: str | None, config: PersistenceConfig | None) -> AuditLog:
    config = config or PersistenceConfig()
    return AuditLog(resolve_dsn(dsn, config=config), schema=schema, config=config)


def enable(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    tables: Sequence[str] | None = None,
    reads: bool | None = None,
    retention: dt.timedelta | None = None,
    config: PersistenceConfig | None = None,
) -> AuditStatus:
    """Turn auditing on for ``schema`` (see :meth:`AuditLog.enable`)."""
    with _with_log(dsn, schema, config) as log:
        return log.enable(tables=tables, reads=reads, retention=retention)


def disable(
    dsn: str | None = None, *, schema: str | None = None, config: PersistenceConfig | None = None
) -> AuditStatus:
    """Turn auditing off for ``schema``."""
    with _with_log(dsn, schema, config) as log:
        return log.disable()


def status(
    dsn: str | None = None, *, schema: str | None = None, config: PersistenceConfig | None = None
) -> AuditStatus:
    """Whether auditing is on, on which tables, and how large the log is."""
    with _with_log(dsn, schema, config) as log:
        return log.status()


def query(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
    table: str | None = None,
    operation: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    config: PersistenceConfig | None = None,
) -> list[AuditEvent]:
    """Audit entries matching every condition given, newest first."""
    with _with_log(dsn, schema, config) as log:
        return log.query(
            tenant_id=tenant_id,
            user_id=user_id,
            table=table,
            operation=operation,
            since=since,
            until=until,
            limit=limit,
        )


def prune(
    dsn: str | None = None,
    *,
    older_than: dt.datetime | dt.timedelta | None = None,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> int:
    """Apply the audit log's retention: delete entries older than ``older_than``."""
    with _with_log(dsn, schema, config) as log:
        return log.prune(older_than)
