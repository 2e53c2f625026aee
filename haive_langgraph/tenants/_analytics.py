"""Admin analytics: per tenant over a time range, conversations, messages, token
usage and cost by model, storage per component and requests.

Across tenants by design, so admin only: a source bound to a tenant, or a role
that row-level security restricts, is refused (:class:`PermissionDeniedError`)
rather than answered with one tenant's rows or none. The figures come from
indexed, bookkeeping columns, never from message bodies (see
``_analytics_sql.py``). The logic is one operation, :func:`analytics_op`;
:func:`tenant_analytics` and :func:`atenant_analytics` run it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from haive_langgraph.db._call import Call
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._render import render
from haive_langgraph.errors import ConfigurationError, PermissionDeniedError
from haive_langgraph.tenants import _analytics_sql as A
from haive_langgraph.tenants._admin import (
    AdminConn,
    AsyncAdminConn,
    async_source,
    bound_tenant,
    sync_source,
)

COMPONENTS = ("checkpoints", "conversations", "store")
"""The components whose storage is measured."""


@dataclass(slots=True)
class ModelUsage:
    """Token usage and cost of one model (``""``: messages that named none).

    Attributes:
        messages: Messages that reported usage.
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
        total_tokens: Total tokens.
        cost: Cost, in the currency of the recorded costs.
    """

    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass(slots=True)
class DailyUsage:
    """One UTC day of a tenant's activity (for charts).

    Attributes:
        day: The day (UTC).
        messages: Messages written.
        total_tokens: Tokens reported.
        cost: Their cost.
    """

    day: dt.date
    messages: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass(slots=True)
class TenantUsage:
    """One tenant's figures over the range.

    Attributes:
        tenant_id: The tenant (``""``: the default tenant).
        display_name: Its registry name (``""`` when not registered).
        conversations: Conversations and chat histories created in the range.
        sessions: Sessions created in the range.
        messages: Messages written in the range.
        input_tokens: Prompt tokens reported in the range.
        output_tokens: Completion tokens.
        total_tokens: Total tokens.
        cost: Cost of the reported usage.
        by_model: The usage per model.
        storage: Bytes of stored values now, per component (``checkpoints``,
            ``conversations``, ``store``).
        requests: Requests counted in the range (``None``: request counting
            is not installed).
        daily: Messages, tokens and cost per UTC day, oldest first.
    """

    tenant_id: str
    display_name: str = ""
    conversations: int = 0
    sessions: int = 0
    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)
    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    storage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0))
    requests: int | None = None
    daily: list[DailyUsage] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: costs as strings (exact), days as ISO dates."""
        data = asdict(self)
        data["cost"] = str(self.cost)
        for usage in data["by_model"].values():
            usage["cost"] = str(usage["cost"])
        for day in data["daily"]:
            day["day"] = day["day"].isoformat()
            day["cost"] = str(day["cost"])
        return data


@dataclass(frozen=True, slots=True)
class _Query:
    schema: str
    since: dt.datetime
    until: dt.datetime


def _q(template: str, schema: str) -> str:
    return render(template, schema)


def _exists(schema: str, table: str) -> Op[bool]:
    (there,) = yield Step(A.TABLE_EXISTS, (_q(f"{{schema}}.{table}", schema),), fetch="one")
    return bool(there)


def analytics_op(query: _Query) -> Op[list[TenantUsage]]:
    """Every tenant's :class:`TenantUsage` (read only; run it in one transaction so
    the figures are of one snapshot)."""
    schema = query.schema
    table = _q("{schema}.conversations", schema)
    (restricted,) = yield Step(A.ROW_SECURITY, {"table": table}, fetch="one")
    if restricted:
        raise PermissionDeniedError(
            "tenant analytics reads every tenant's rows, and row-level security restricts "
            "this connection's role to one tenant's: connect as the tables' owner (or a role "
            "with BYPASSRLS)"
        )
    if restricted is None:
        raise ConfigurationError(
            f"schema {schema!r} has no conversation tables: run `haive-lg migrate`"
        )
    usages: dict[str, TenantUsage] = {}

    def of(tenant_id: str) -> TenantUsage:
        if tenant_id not in usages:
            usages[tenant_id] = TenantUsage(tenant_id)
        return usages[tenant_id]

    rng = {"since": query.since, "until": query.until}
    if (yield from _exists(schema, "tenants")):
        for tenant_id, name in (yield Step(_q(A.DISPLAY_NAMES, schema))):
            of(tenant_id).display_name = name
    for tenant_id, conversations, sessions in (
        yield Step(_q(A.CONVERSATIONS_CREATED, schema), rng)
    ):
        of(tenant_id).conversations = int(conversations)
        of(tenant_id).sessions = int(sessions)
    days: dict[tuple[str, dt.date], DailyUsage] = {}
    for row in (yield Step(_q(A.USAGE_BY_DAY, schema), rng)):
        tenant_id, day, model, messages, reported, it, ot, tt, cost = row
        usage = of(tenant_id)
        daily = days.setdefault((tenant_id, day), DailyUsage(day))
        usage.messages += int(messages)
        daily.messages += int(messages)
        if reported:
            m = usage.by_model.setdefault(model, ModelUsage())
            m.messages += int(reported)
            m.input_tokens += int(it)
            m.output_tokens += int(ot)
            m.total_tokens += int(tt)
            m.cost += Decimal(cost)
            daily.total_tokens += int(tt)
            daily.cost += Decimal(cost)
    for (tenant_id, _), daily in sorted(days.items()):
        usages[tenant_id].daily.append(daily)
    for component, template in A.STORAGE.items():
        if (yield from _exists(schema, A.STORAGE_TABLES[component])):
            for tenant_id, size in (yield Step(_q(template, schema))):
                of(tenant_id).storage[component] = int(size or 0)
    if (yield from _exists(schema, "tenant_requests")):
        counted = dict((yield Step(_q(A.REQUESTS, schema), rng)))
        for tenant_id in counted:
            of(tenant_id)
        for usage in usages.values():
            usage.requests = int(counted.get(usage.tenant_id) or 0)
    for usage in usages.values():
        usage.by_model = dict(sorted(usage.by_model.items()))
        usage.input_tokens = sum(m.input_tokens for m in usage.by_model.values())
        usage.output_tokens = sum(m.output_tokens for m in usage.by_model.values())
        usage.total_tokens = sum(m.total_tokens for m in usage.by_model.values())
        usage.cost = sum((m.cost for m in usage.by_model.values()), Decimal(0))
    return [usages[t] for t in sorted(usages)]


def resolve_range(
    since: dt.datetime | dt.timedelta,
    until: dt.datetime | None,
    now: dt.datetime | None = None,
) -> tuple[dt.datetime, dt.datetime]:
    """``[since, until)`` as aware datetimes: ``since`` may be a duration back from
    ``until`` (default: now); naive datetimes are taken as UTC.

    Raises:
        ConfigurationError: An empty or reversed range.
    """
    end = until or now or dt.datetime.now(dt.UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    if isinstance(since, dt.timedelta):
        start = end - since
    else:
        start = since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)
    if start >= end:
        raise ConfigurationError(
            f"the range is empty: since ({start.isoformat()}) is not before until "
            f"({end.isoformat()})"
        )
    return start, end


def analytics_call(
    since: dt.datetime | dt.timedelta,
    until: dt.datetime | None,
    schema: str | None,
    config: PersistenceConfig | None,
) -> Call[list[TenantUsage]]:
    """The analytics as a :class:`Call`: read only, in one transaction (one snapshot)."""
    target = validate_identifier(
        schema or (config or PersistenceConfig()).schema_name, what="schema name"
    )
    start, end = resolve_range(since, until)
    return Call(partial(analytics_op, _Query(target, start, end)), transaction=True, read=True)


def _refuse_bound(tenant: str | None) -> None:
    if tenant is not None:
        raise PermissionDeniedError(
            f"tenant analytics is an admin operation over every tenant; this connection "
            f"source is bound to tenant {tenant!r}: use an unbound source (a DSN, or a "
            "ConnectionSource without a scope)"
        )


def tenant_analytics(
    conn: AdminConn = None,
    *,
    since: dt.datetime | dt.timedelta,
    until: dt.datetime | None = None,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> list[TenantUsage]:
    """Per tenant over ``[since, until)``: conversations and sessions created, messages, tokens and
    cost by model, storage per component (now), requests.

    Args:
        conn: A DSN, ``None`` (the default server), a connection, a pool or an
            unbound ``ConnectionSource``.
        since: Start of the range, or how far back from ``until`` it starts.
        until: End of the range (excluded; default now).
        schema: Schema of the tables (default from the config: ``haive``).
        config: Connection settings.

    Returns:
        One :class:`TenantUsage` per tenant that is registered or has data,
        by tenant id.

    Raises:
        PermissionDeniedError: The source is bound to a tenant, or row-level
            security restricts the connection's role.
        ConfigurationError: An empty range, or a schema without conversation tables.

    Example:
        >>> for usage in tenant_analytics(dsn, since=timedelta(days=30)):
        ...     print(usage.tenant_id, usage.messages, usage.cost, usage.storage)
    """
    call = analytics_call(since, until, schema, config)
    with sync_source(conn, config) as source:
        _refuse_bound(bound_tenant(source))
        return source.call(call)


async def atenant_analytics(
    conn: AsyncAdminConn = None,
    *,
    since: dt.datetime | dt.timedelta,
    until: dt.datetime | None = None,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> list[TenantUsage]:
    """Async twin of :func:`tenant_analytics`."""
    call = analytics_call(since, until, schema, config)
    async with async_source(conn, config) as source:
        _refuse_bound(bound_tenant(source))
        return await source.call(call)
