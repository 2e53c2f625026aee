"""Per-tenant retention: each registered tenant's ``data_retention_days`` applied to
its checkpoints, conversations (sessions and chat histories are conversation
rows) and store items.

What is older than a tenant's window goes whole: a thread not written since
the cutoff (the checkpointer's own retention, :func:`retention_calls`, with a
``thread_ttl`` of the window and the tenant bound), a conversation with no
change and no message since then (the conversations' erasure, which first
copies what live branches share), a store item not written since then. A dry
run does the same work in transactions it rolls back, so its report is what a
run would remove at that moment.

The logic is written once, as :func:`retention_plan` (a ``Calls`` value);
:func:`tenant_retention` and :func:`atenant_retention` run it, and the sweepers
run those on :mod:`haive_langgraph.db._periodic`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from haive_langgraph.checkpointers import _sql as checkpoint_sql
from haive_langgraph.checkpointers._ops import Statements
from haive_langgraph.checkpointers._retention import RetentionPolicy, retention_calls
from haive_langgraph.codec import PlainCodec
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._call import Call, Calls, arun_calls, run_calls
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._render import render
from haive_langgraph.db._tenancy import TenantScope, validate_tenant_id
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.conversations._erasure import delete_set
from haive_langgraph.memory.conversations._tables import SESSION, ConversationTables, make_tables
from haive_langgraph.tenants import _retention_sql as R
from haive_langgraph.tenants._admin import (
    AdminConn,
    AsyncAdminConn,
    async_source,
    bound_tenant,
    sync_source,
)
from haive_langgraph.tenants._types import COMPLIANCE_DEFAULTS

# Conversations deleted per transaction.
CONVERSATION_BATCH = 200


@dataclass(slots=True)
class ConversationsRemoved:
    """Conversation rows of one kind removed, with what they held.

    Attributes:
        rows: Conversation rows (chat histories and conversations; or sessions).
        messages: Their messages.
        participants: Their participants.
        bytes: Bytes of their message batches.
    """

    rows: int = 0
    messages: int = 0
    participants: int = 0
    bytes: int = 0

    def add(self, other: ConversationsRemoved) -> None:
        """Add ``other``'s figures to these."""
        self.rows += other.rows
        self.messages += other.messages
        self.participants += other.participants
        self.bytes += other.bytes


@dataclass(slots=True)
class TenantRetention:
    """What retention removed (or, dry, would remove) of one tenant.

    Attributes:
        tenant_id: The tenant.
        retention_days: Its ``data_retention_days`` (else its compliance mode's).
        cutoff: Data not written since this moment went.
        threads: Checkpoint threads deleted whole.
        checkpoints: Their checkpoints.
        writes: Their pending writes.
        checkpoint_bytes: Bytes of stored values no longer used by anything.
        skipped_threads: Threads skipped because a writer held them (next run).
        conversations: Chat histories and conversations deleted.
        sessions: Sessions deleted (conversation rows a ``SessionStore`` made).
        store_items: Store items deleted (vector memories included).
        store_bytes: Bytes of their values.
    """

    tenant_id: str
    retention_days: float
    cutoff: dt.datetime
    threads: int = 0
    checkpoints: int = 0
    writes: int = 0
    checkpoint_bytes: int = 0
    skipped_threads: list[str] = field(default_factory=list)
    conversations: ConversationsRemoved = field(default_factory=ConversationsRemoved)
    sessions: ConversationsRemoved = field(default_factory=ConversationsRemoved)
    store_items: int = 0
    store_bytes: int = 0

    def components(self) -> dict[str, dict[str, int]]:
        """Rows and bytes removed, per component (``checkpoints``, ``conversations``,
        ``sessions``, ``store``)."""

        def rows(name: str, removed: ConversationsRemoved) -> dict[str, int]:
            return {
                name: removed.rows,
                "messages": removed.messages,
                "participants": removed.participants,
                "bytes": removed.bytes,
            }

        return {
            "checkpoints": {
                "threads": self.threads,
                "checkpoints": self.checkpoints,
                "writes": self.writes,
                "bytes": self.checkpoint_bytes,
            },
            "conversations": rows("conversations", self.conversations),
            "sessions": rows("sessions", self.sessions),
            "store": {"items": self.store_items, "bytes": self.store_bytes},
        }

    def as_dict(self) -> dict[str, Any]:
        """The tenant's report as plain data, per component (for logs and JSON)."""
        return {
            "tenant_id": self.tenant_id,
            "retention_days": self.retention_days,
            "cutoff": self.cutoff.isoformat(),
            **self.components(),
            "skipped_threads": list(self.skipped_threads),
        }


@dataclass(slots=True)
class TenantRetentionReport:
    """One retention run over the tenants that have a ``data_retention_days``.

    Attributes:
        dry_run: Nothing was changed; the figures are what a run would remove.
        tenants: Per tenant (tenants without the setting are not listed).
        missing: Components whose tables this schema does not have (skipped).
    """

    dry_run: bool
    tenants: list[TenantRetention] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (for logs and JSON)."""
        return {
            "dry_run": self.dry_run,
            "tenants": [t.as_dict() for t in self.tenants],
            "missing": list(self.missing),
        }


@dataclass(frozen=True, slots=True)
class _Plan:
    schema: str
    dry_run: bool
    tenant_ids: tuple[str, ...] | None


# The table that tells whether each component is there.
_COMPONENT_TABLES = {
    "checkpoints": "threads",
    "conversations": "conversations",
    "store": "store_items",
}


def _q(template: str, schema: str) -> str:
    return render(template, schema)


def _tenants_op(
    plan: _Plan,
) -> Op[tuple[list[tuple[str, float]], list[str]]]:
    """The tenants with a retention setting, and the components that are missing."""
    schema = plan.schema
    (registry,) = yield Step(R.TABLE_EXISTS, (_q("{schema}.tenants", schema),), fetch="one")
    if not registry:
        raise ConfigurationError(
            f"schema {schema!r} has no tenant registry (table tenants): run `haive-lg migrate`"
        )
    missing = []
    for component, table in _COMPONENT_TABLES.items():
        (there,) = yield Step(R.TABLE_EXISTS, (_q(f"{{schema}}.{table}", schema),), fetch="one")
        if not there:
            missing.append(component)
    wanted = TextArray(plan.tenant_ids) if plan.tenant_ids is not None else None
    rows = yield Step(_q(R.RETAINED_TENANTS, schema), {"tenants": wanted})
    retained = []
    for tenant_id, own, mode in rows:
        days = effective_retention(own, mode)
        if days is not None:
            retained.append((str(tenant_id), days))
    return retained, missing


def effective_retention(own: float | None, compliance_mode: str | None) -> float | None:
    """A tenant's retention in days: its own ``data_retention_days``, else its
    compliance mode's default (:data:`COMPLIANCE_DEFAULTS`), else ``None``."""
    if own is not None and own > 0:
        return float(own)
    defaults = COMPLIANCE_DEFAULTS.get((compliance_mode or "").upper())
    if defaults is None or defaults.data_retention_days is None:
        return None
    return float(defaults.data_retention_days)


def _column_op(query: str, params: dict[str, Any]) -> Op[list[Any]]:
    rows = yield Step(query, params)
    return [r[0] for r in rows]


def _conversation_batch_op(
    t: ConversationTables, ids: Sequence[str], cutoff: dt.datetime
) -> Op[tuple[ConversationsRemoved, ConversationsRemoved]]:
    """Delete the conversations of ``ids`` still untouched since ``cutoff`` (locked
    first): what went of conversations, and of sessions."""
    params: dict[str, Any] = {"t": t.tenant_id, "ids": TextArray(ids), "cutoff": cutoff}
    rows = yield Step(_q(R.STILL_STALE, t.schema), params)
    removed = []
    for session in (False, True):
        stale = [str(c) for c, kind in rows if (kind == SESSION) is session]
        if not stale:
            removed.append(ConversationsRemoved())
            continue
        params["ids"] = TextArray(stale)
        (size,) = yield Step(_q(R.CONVERSATION_BYTES, t.schema), params, fetch="one")
        report = yield from delete_set(t, stale)
        removed.append(
            ConversationsRemoved(
                report.conversations, report.messages, report.participants, int(size)
            )
        )
    return removed[0], removed[1]


def _store_op(schema: str, tenant_id: str, cutoff: dt.datetime) -> Op[tuple[int, int]]:
    params = {"t": tenant_id, "cutoff": cutoff}
    count, size = yield Step(_q(R.DELETE_STALE_ITEMS, schema), params, fetch="one")
    return int(count), int(size)


def _scope(schema: str, table: str, tenant_id: str) -> TenantScope:
    return TenantScope(_q(f"{{schema}}.{table}", schema), tenant_id)


def _checkpoint_calls(plan: _Plan, entry: TenantRetention) -> Calls[None]:
    schema, tenant = plan.schema, entry.tenant_id
    scope = _scope(schema, checkpoint_sql.SCOPE_TABLE, tenant)
    params = {"t": tenant, "cutoff": entry.cutoff}
    query = _q(R.STALE_THREADS, schema)
    threads: list[str] = yield Call(lambda: _column_op(query, params), read=True, scope=scope)
    if not threads:
        return
    policy = RetentionPolicy(thread_ttl=dt.timedelta(days=entry.retention_days))
    result, _ = yield from retention_calls(
        Statements(schema), tenant, policy, plan.dry_run, threads, scope=scope
    )
    entry.threads += result.threads_deleted
    entry.checkpoints += result.checkpoints
    entry.writes += result.writes
    entry.checkpoint_bytes += result.bytes
    entry.skipped_threads.extend(result.skipped)


def _conversation_calls(plan: _Plan, entry: TenantRetention) -> Calls[None]:
    _, t = make_tables(schema=plan.schema, tenant_id=entry.tenant_id, codec=PlainCodec())
    scope = t.scope()
    params = {"t": entry.tenant_id, "cutoff": entry.cutoff}
    query = _q(R.STALE_CONVERSATIONS, plan.schema)
    ids: list[str] = yield Call(lambda: _column_op(query, params), read=True, scope=scope)
    for start in range(0, len(ids), CONVERSATION_BATCH):
        batch = ids[start : start + CONVERSATION_BATCH]
        conversations, sessions = yield Call(
            partial(_conversation_batch_op, t, batch, entry.cutoff),
            transaction=True,
            rollback=plan.dry_run,
            scope=scope,
        )
        entry.conversations.add(conversations)
        entry.sessions.add(sessions)


def retention_plan(
    schema: str, *, dry_run: bool, tenant_ids: Sequence[str] | None = None
) -> Calls[TenantRetentionReport]:
    """The calls of one retention run (no I/O): read the tenants with a retention
    setting, then per tenant its checkpoints (a transaction per thread), its
    conversations (a transaction per batch) and its store items (one statement).

    Args:
        schema: Schema of the tables.
        dry_run: Roll every transaction back; report what would go.
        tenant_ids: Only these tenants (default: every tenant with the setting).
    """
    plan = _Plan(
        validate_identifier(schema, what="schema name"),
        dry_run,
        tuple(validate_tenant_id(t) for t in tenant_ids) if tenant_ids is not None else None,
    )
    now = dt.datetime.now(dt.UTC)
    tenants, missing = yield Call(lambda: _tenants_op(plan), read=True)
    report = TenantRetentionReport(dry_run=dry_run, missing=missing)
    for tenant_id, days in tenants:
        entry = TenantRetention(tenant_id, days, now - dt.timedelta(days=days))
        if "checkpoints" not in missing:
            yield from _checkpoint_calls(plan, entry)
        if "conversations" not in missing:
            yield from _conversation_calls(plan, entry)
        if "store" not in missing:
            scope = _scope(schema, "store_items", tenant_id)
            entry.store_items, entry.store_bytes = yield Call(
                partial(_store_op, plan.schema, tenant_id, entry.cutoff),
                transaction=True,
                rollback=dry_run,
                scope=scope,
            )
        report.tenants.append(entry)
    return report


def _tenants_for(bound: str | None, tenant_ids: Sequence[str] | None) -> Sequence[str] | None:
    """A source bound to a tenant applies that tenant's retention only."""
    if bound is None:
        return tenant_ids
    if tenant_ids is not None and set(tenant_ids) - {bound}:
        others = sorted(set(tenant_ids) - {bound})
        raise ConfigurationError(
            f"this connection source is bound to tenant {bound!r}: it may apply that tenant's "
            f"retention only, not {others[0]!r}'s; use an unbound (admin) source"
        )
    return [bound]


def tenant_retention(
    conn: AdminConn = None,
    *,
    dry_run: bool = False,
    tenant_ids: Sequence[str] | None = None,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> TenantRetentionReport:
    """Apply each tenant's ``data_retention_days`` (see the module) now.

    Args:
        conn: A DSN, ``None`` (the default server), a connection, a pool or a
            ``ConnectionSource``. A source bound to a tenant applies only
            that tenant's retention.
        dry_run: Change nothing; report what would be removed.
        tenant_ids: Only these tenants (default: every tenant with the setting).
        schema: Schema of the tables (default from the config: ``haive``).
        config: Connection settings.

    Returns:
        Per tenant and per component, what was (or would be) removed.

    Raises:
        ConfigurationError: The schema has no tenant registry, or ``tenant_ids``
            names a tenant other than the source's.

    Example:
        >>> report = tenant_retention(dsn, dry_run=True)
        >>> [(t.tenant_id, t.components()) for t in report.tenants]
    """
    target = schema or (config or PersistenceConfig()).schema_name
    with sync_source(conn, config) as source:
        wanted = _tenants_for(bound_tenant(source), tenant_ids)
        return run_calls(source, retention_plan(target, dry_run=dry_run, tenant_ids=wanted))


async def atenant_retention(
    conn: AsyncAdminConn = None,
    *,
    dry_run: bool = False,
    tenant_ids: Sequence[str] | None = None,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> TenantRetentionReport:
    """Async twin of :func:`tenant_retention` (an ``AsyncConnection``, an
    ``AsyncConnectionPool`` or an ``AsyncConnectionSource``)."""
    target = schema or (config or PersistenceConfig()).schema_name
    async with async_source(conn, config) as source:
        wanted = _tenants_for(bound_tenant(source), tenant_ids)
        plan = retention_plan(target, dry_run=dry_run, tenant_ids=wanted)
        return await arun_calls(source, plan)
