r"""The audit log's entries and its sans-I/O operations (see :mod:`haive_langgraph.ops.audit`).

Each operation is a generator of db ``Step``\ s, run by :class:`~haive_langgraph.ops.audit.AuditLog`
and the module functions, or inside another feature's transaction (restore records its
``RESTORE`` entries with :func:`record_op`)."""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._render import render_sql
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops._fields import field_dict
from haive_langgraph.ops._schema import Schema, introspect_op
from haive_langgraph.ops.audit import _sql as S


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
        return field_dict(self, occurred_at=self.occurred_at.isoformat())


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
        render_sql(S.RECORD, schema),
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
        render_sql(S.RECORD_READ, schema),
        {"tenant": tenant_id, "user": user_id, "table": table, "key": Jsonb(object_key)},
        fetch="rowcount",
    )
    return bool(n)


def settings_op(schema: str) -> Op[tuple[bool, bool, dt.timedelta | None]]:
    """Whether auditing is on, whether reads are recorded, and the retention."""
    row = yield Step(render_sql(S.SETTINGS_ROW, schema), fetch="one")
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
        render_sql(S.UPSERT_SETTINGS, schema),
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
        render_sql(S.UPSERT_SETTINGS, schema),
        {"enabled": False, "reads": False, "retention": None, "set_retention": False},
        fetch="none",
    )
    return sorted(attached)


def status_op(schema: str) -> Op[AuditStatus]:
    live = yield from introspect_op(schema)
    if live.table(S.LOG) is None:
        return AuditStatus(enabled=False, reads=False, retention=None)
    enabled, reads, retention = yield from settings_op(schema)
    attached = yield from _triggers_op(schema)
    complete = {t for t, trig in attached.items() if len(trig) == len(S.EVENTS)}
    stats = yield Step(render_sql(S.STATS, schema), fetch="one")
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
    tenant_id: str | None,
    user_id: str | None,
    table: str | None,
    operation: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> Op[list[AuditEvent]]:
    """Entries matching every condition that is not ``None``, newest first (the
    conditions as :meth:`AuditLog.query` takes them, defaults there)."""
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
        _, _, retention = yield from settings_op(schema)
        if retention is None:
            raise ConfigurationError(
                "no retention is configured: give older_than (--older-than) or set one with "
                "enable(retention=...)"
            )
        now = yield Step("SELECT now()", fetch="one")
        cutoff = now[0] - retention
    row = yield Step(render_sql(S.PRUNE, schema), (cutoff,), fetch="one")
    return int(row[0])
