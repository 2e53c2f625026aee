"""The audit log's tables and operations (see :mod:`haive_langgraph.ops.audit`)."""

from __future__ import annotations

import datetime as dt
import fnmatch
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from haive_langgraph.db import (
    ConnectionSource,
    Op,
    PersistenceConfig,
    Step,
    migrate_op,
    resolve_dsn,
    validate_identifier,
)
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops._schema import Schema, introspect_op
from haive_langgraph.ops.audit import _sql as S
from haive_langgraph.ops.audit._sql import COMPONENT


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit entry.

    Attributes:
        id: Increasing entry id (per schema).
        tenant_id: Tenant of the row.
        occurred_at: Start of the transaction that made the change.
        user_id: ``haive.user_id`` of that transaction, else the database role.
        operation: ``INSERT``, ``UPDATE``, ``DELETE``, ``TRUNCATE``, ``READ``,
            ``RESTORE`` ...
        table: The table.
        object_key: The row's primary key values, in key order (JSON).
        xid: The transaction id.
    """

    id: int
    tenant_id: str
    occurred_at: dt.datetime
    user_id: str
    operation: str
    table: str
    object_key: Any
    xid: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "occurred_at": self.occurred_at.isoformat(),
            "user_id": self.user_id,
            "operation": self.operation,
            "table": self.table,
            "object_key": self.object_key,
            "xid": self.xid,
        }


@dataclass(slots=True)
class AuditStatus:
    """Whether and where auditing is on.

    Attributes:
        enabled: Auditing is on.
        reads: Libraries record reads.
        retention: How long entries are kept by :func:`prune` (``None``: forever).
        tables: Tables with the audit triggers.
        uncovered: Tables of the schema without them (added after
            :func:`enable`, or left out by its patterns).
        entries: Entries in the log.
        oldest: Time of the oldest entry.
    """

    enabled: bool
    reads: bool
    retention: dt.timedelta | None
    tables: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    entries: int = 0
    oldest: dt.datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reads": self.reads,
            "retention_seconds": self.retention.total_seconds() if self.retention else None,
            "tables": self.tables,
            "uncovered": self.uncovered,
            "entries": self.entries,
            "oldest": self.oldest.isoformat() if self.oldest else None,
        }


# -- sans-I/O operations -----------------------------------------------------------------


def _q(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(schema=sql.Identifier(schema))


def set_user_step(user_id: str) -> Step:
    """The statement naming the acting user for the current transaction."""
    if not isinstance(user_id, str) or not user_id:
        raise ConfigurationError("user_id must be a non-empty string")
    return Step(S.SET_USER, (user_id,), fetch="none")


def record_op(
    schema: str,
    *,
    operation: str,
    table: str,
    object_key: Any = None,
    tenant_id: str = "",
    user_id: str | None = None,
    only_if_enabled: bool = False,
) -> Op[bool]:
    """Record one entry (in the caller's transaction); True if it was written.

    Args:
        schema: Schema of the audit log.
        operation: What happened (``READ``, ``EXPORT``, ``RESTORE`` ...).
        table: The table (or kind of object) concerned.
        object_key: The object's key, any JSON value.
        tenant_id: The tenant concerned.
        user_id: The acting user (default: ``haive.user_id``, else the role).
        only_if_enabled: Write only when auditing is enabled.
    """
    n = yield Step(
        _q(S.RECORD, schema),
        {
            "tenant": tenant_id,
            "user": user_id,
            "operation": operation,
            "table": table,
            "key": Jsonb(object_key),
            "only_if_enabled": only_if_enabled,
        },
        fetch="rowcount",
    )
    return bool(n)


def record_read_op(
    schema: str,
    *,
    table: str,
    object_key: Any,
    tenant_id: str = "",
    user_id: str | None = None,
) -> Op[bool]:
    """Record a read, if reads are audited (one statement; nothing written otherwise).

    This is the hook a feature adds to its read path (run it with the
    feature's own driver, sync or async, in or after its read).
    """
    n = yield Step(
        _q(S.RECORD_READ, schema),
        {"tenant": tenant_id, "user": user_id, "table": table, "key": Jsonb(object_key)},
        fetch="rowcount",
    )
    return bool(n)


def _settings_op(schema: str) -> Op[tuple[bool, bool, dt.timedelta | None]]:
    row = yield Step(_q(S.SETTINGS_ROW, schema), fetch="one")
    if row is None:
        return False, False, None
    return bool(row[0]), bool(row[1]), row[2]


def _triggers_op(schema: str) -> Op[dict[str, set[str]]]:
    rows = yield Step(S.TRIGGERS, (schema,))
    out: dict[str, set[str]] = {}
    for table, trigger in rows:
        out.setdefault(str(table), set()).add(str(trigger))
    return out


def _audited_tables(live: Schema, patterns: Sequence[str] | None) -> list[str]:
    return [
        t.name
        for t in live.tables
        if t.name not in S.NOT_AUDITED
        and (patterns is None or any(fnmatch.fnmatchcase(t.name, p) for p in patterns))
    ]


def _attach_op(schema: str, table: str, pk: Sequence[str], has_tenant: bool) -> Op[None]:
    target = sql.Identifier(schema, table)
    function = sql.SQL("{}.haive_audit({}, {})").format(
        sql.Identifier(schema),
        sql.Literal(",".join(pk)),
        sql.Literal("tenant" if has_tenant else ""),
    )
    for event in S.EVENTS:
        name = sql.Identifier(f"{S.TRIGGER_PREFIX}{event}")
        yield Step(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(name, target), fetch="none")
        if event == "truncate":
            statement = sql.SQL(
                "CREATE TRIGGER {n} AFTER TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {f}"
            ).format(n=name, t=target, f=function)
        else:
            transition = "OLD" if event == "delete" else "NEW"
            statement = sql.SQL(
                "CREATE TRIGGER {n} AFTER {ev} ON {t} REFERENCING {tt} TABLE AS {rows} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {f}"
            ).format(
                n=name,
                ev=sql.SQL(event.upper()),
                t=target,
                tt=sql.SQL(transition),
                rows=sql.Identifier(f"{transition.lower()}_rows"),
                f=function,
            )
        yield Step(statement, fetch="none", prepare=False)


def _detach_op(schema: str, tables: Sequence[str]) -> Op[None]:
    for table in tables:
        for event in S.EVENTS:
            yield Step(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(f"{S.TRIGGER_PREFIX}{event}"), sql.Identifier(schema, table)
                ),
                fetch="none",
            )


def enable_op(
    schema: str,
    *,
    tables: Sequence[str] | None = None,
    reads: bool | None = None,
    retention: dt.timedelta | None = None,
    set_retention: bool = False,
) -> Op[list[str]]:
    """Turn auditing on: settings row and triggers on the matching tables (idempotent)."""
    live = yield from introspect_op(schema)
    if live.table(S.LOG) is None:
        raise ConfigurationError(
            f"schema {schema!r} has no audit_log table: run `haive-lg migrate` first"
        )
    names = _audited_tables(live, tables)
    if tables is not None and not names:
        raise ConfigurationError(f"no table of schema {schema!r} matches {list(tables)!r}")
    yield Step(
        _q(S.UPSERT_SETTINGS, schema),
        {
            "enabled": True,
            "reads": reads,
            "retention": retention,
            "set_retention": set_retention,
        },
        fetch="none",
    )
    for name in names:
        table = live.table(name)
        assert table is not None
        yield from _attach_op(schema, name, table.primary_key, table.has_tenant)
    return names


def disable_op(schema: str) -> Op[list[str]]:
    """Turn auditing off: triggers removed (the log and its settings stay)."""
    attached = yield from _triggers_op(schema)
    yield from _detach_op(schema, sorted(attached))
    yield Step(
        _q(S.UPSERT_SETTINGS, schema),
        {"enabled": False, "reads": False, "retention": None, "set_retention": False},
        fetch="none",
    )
    return sorted(attached)


def status_op(schema: str) -> Op[AuditStatus]:
    live = yield from introspect_op(schema)
    if live.table(S.LOG) is None:
        return AuditStatus(enabled=False, reads=False, retention=None)
    enabled, reads, retention = yield from _settings_op(schema)
    attached = yield from _triggers_op(schema)
    complete = {t for t, trig in attached.items() if len(trig) == len(S.EVENTS)}
    stats = yield Step(_q(S.STATS, schema), fetch="one")
    candidates = _audited_tables(live, None)
    return AuditStatus(
        enabled=enabled,
        reads=reads,
        retention=retention,
        tables=sorted(complete),
        uncovered=[t for t in candidates if t not in complete] if enabled else [],
        entries=int(stats[0]),
        oldest=stats[1],
    )


def query_op(
    schema: str,
    *,
    tenant_id: str | None = None,
    user_id: str | None = None,
    table: str | None = None,
    operation: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
) -> Op[list[AuditEvent]]:
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit}
    for column, value in (
        ("tenant_id", tenant_id),
        ("user_id", user_id),
        ("table_name", table),
        ("operation", operation.upper() if operation else None),
    ):
        if value is not None:
            conds.append(sql.SQL("{} = %({})s").format(sql.Identifier(column), sql.SQL(column)))
            params[column] = value
    if since is not None:
        conds.append(sql.SQL("occurred_at >= %(since)s"))
        params["since"] = since
    if until is not None:
        conds.append(sql.SQL("occurred_at < %(until)s"))
        params["until"] = until
    where = sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")
    rows = yield Step(
        sql.SQL(
            "SELECT id, tenant_id, occurred_at, user_id, operation, table_name, object_key, "
            "xid::text::bigint FROM {} WHERE {} ORDER BY id DESC LIMIT %(limit)s"
        ).format(sql.Identifier(schema, S.LOG), where),
        params,
    )
    return [AuditEvent(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], int(r[7])) for r in rows]


def prune_op(schema: str, older_than: dt.datetime | None) -> Op[int]:
    """Delete entries older than ``older_than`` (default: the configured retention)."""
    cutoff = older_than
    if cutoff is None:
        _, _, retention = yield from _settings_op(schema)
        if retention is None:
            raise ConfigurationError(
                "no retention is configured: give older_than (--older-than) or set one with "
                "enable(retention=...)"
            )
        now = yield Step("SELECT now()", fetch="one")
        cutoff = now[0] - retention
    row = yield Step(_q(S.PRUNE, schema), (cutoff,), fetch="one")
    return int(row[0])


# -- the class and module functions ---------------------------------------------------------


class AuditLog:
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

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                self.schema,
                tenant_id=tenant_id,
                user_id=user_id,
                table=table,
                operation=operation,
                since=since,
                until=until,
                limit=limit,
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
            enabled, reads, _ = self._source.run(lambda: _settings_op(self.schema), read=True)
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
