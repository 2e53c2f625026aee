"""The registry's operations as sans-I/O generators (statements in ``_sql.py``).

Nothing here touches a connection: each operation yields steps and receives
their rows; :mod:`haive_langgraph.tenants._registry` wraps them in
:class:`~haive_langgraph.db._call.Call` values that the sync and the async
registry run.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._render import render
from haive_langgraph.errors import (
    ConfigurationError,
    TenantExistsError,
    TenantNotFoundError,
    TenantSuspendedError,
)
from haive_langgraph.tenants import _sql as S
from haive_langgraph.tenants._types import (
    Tenant,
    TenantPage,
    TenantQuota,
    TenantSettings,
    TenantStatus,
)


def tenant_from_row(row: Any) -> Tenant:
    """A :class:`Tenant` from a row of ``_sql._COLUMNS``."""
    tenant_id, name, status, settings, quota, created, updated = row
    return Tenant(
        tenant_id=tenant_id,
        display_name=name,
        status=status,
        settings=TenantSettings.from_dict(settings or {}),
        quota=TenantQuota.from_dict(quota or {}),
        created_at=created,
        updated_at=updated,
    )


def not_found(tenant_id: str) -> TenantNotFoundError:
    return TenantNotFoundError(
        f"no tenant {tenant_id!r} is registered: create it first (TenantRegistry.create, "
        "`haive-lg tenants create`)",
        tenant_id=tenant_id,
    )


def suspended(tenant_id: str) -> TenantSuspendedError:
    return TenantSuspendedError(
        f"tenant {tenant_id!r} is suspended: resume it (TenantRegistry.resume, "
        "`haive-lg tenants resume`) before using it",
        tenant_id=tenant_id,
    )


def _found(row: Any, tenant_id: str) -> Tenant:
    if row is None:
        raise not_found(tenant_id)
    return tenant_from_row(row)


def create_op(
    schema: str, tenant_id: str, name: str, settings: TenantSettings, quota: TenantQuota
) -> Op[Tenant]:
    row = yield Step(
        render(S.INSERT, schema),
        {
            "t": tenant_id,
            "name": name,
            "settings": Jsonb(settings.as_dict()),
            "quota": Jsonb(quota.as_dict()),
        },
        fetch="one",
    )
    if row is None:
        raise TenantExistsError(
            f"tenant {tenant_id!r} is already registered: update it instead",
            tenant_id=tenant_id,
        )
    return tenant_from_row(row)


def get_op(schema: str, tenant_id: str) -> Op[Tenant]:
    row = yield Step(render(S.GET, schema), {"t": tenant_id}, fetch="one")
    return _found(row, tenant_id)


def list_op(
    schema: str, status: TenantStatus | None, limit: int, after: str | None
) -> Op[TenantPage]:
    rows = yield Step(
        render(S.LIST, schema), {"status": status, "after": after, "limit": limit + 1}
    )
    tenants = [tenant_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return TenantPage(tenants, tenants[-1].tenant_id if more and tenants else None)


def update_op(
    schema: str,
    tenant_id: str,
    name: str | None,
    settings: TenantSettings | None,
    quota: TenantQuota | None,
) -> Op[Tenant]:
    row = yield Step(
        render(S.UPDATE, schema),
        {
            "t": tenant_id,
            "name": name,
            "settings": None if settings is None else Jsonb(settings.as_dict()),
            "quota": None if quota is None else Jsonb(quota.as_dict()),
        },
        fetch="one",
    )
    return _found(row, tenant_id)


def set_status_op(schema: str, tenant_id: str, status: TenantStatus) -> Op[Tenant]:
    row = yield Step(render(S.SET_STATUS, schema), {"t": tenant_id, "status": status}, fetch="one")
    return _found(row, tenant_id)


def delete_op(schema: str, tenant_id: str) -> Op[dict[str, int]]:
    """Erase every row of the tenant in every component, then its registry row.

    Run in one transaction: the registry row is locked first (so no context
    of the tenant opens meanwhile), the tenant's rows go through the store's
    erasure (every table of ``ops._migrate.tenant_tables()`` that exists),
    then the row. Returns the rows deleted per table (``tenants``: 1).
    """
    # Imported here: the store's erasure asks the registry of features, which lists this one.
    from haive_langgraph.stores._ops import Statements, delete_tenant_op

    row = yield Step(render(S.LOCK, schema), {"t": tenant_id}, fetch="one")
    _found(row, tenant_id)
    erased = yield from delete_tenant_op(Statements(schema), tenant_id)
    gone = yield Step(render(S.DELETE, schema), {"t": tenant_id}, fetch="rowcount")
    return {**erased, S.TENANTS: int(gone)}


def enter_op(schema: str, tenant_id: str) -> Op[Tenant]:
    """The tenant a context opens for: it must exist and be active, and the audit log
    must record what its compliance mode asks for."""
    row = yield Step(render(S.GET, schema), {"t": tenant_id}, fetch="one")
    tenant = _found(row, tenant_id)
    if not tenant.active:
        raise suspended(tenant_id)
    effective = tenant.effective
    if effective.audit_writes or effective.audit_reads:
        table = sql.Identifier(schema, "audit_settings").as_string(None)
        exists = yield Step(S.AUDIT_SETTINGS, {"table": table}, fetch="one")
        writes, reads = (False, False)
        if exists[0]:
            writes, reads = yield Step(render(S.AUDIT_FLAGS, schema), fetch="one")
        missing = (
            "changes"
            if effective.audit_writes and not writes
            else "reads"
            if effective.audit_reads and not reads
            else None
        )
        if missing is not None:
            flag = " --reads" if effective.audit_reads else ""
            raise ConfigurationError(
                f"tenant {tenant_id!r} is in compliance mode {effective.compliance_mode}, "
                f"which needs the audit log to record {missing}, but the audit log of schema "
                f"{schema!r} does not: run `haive-lg audit enable{flag} --schema {schema}` "
                "(or haive_langgraph.ops.audit.enable) first"
            )
    return tenant
