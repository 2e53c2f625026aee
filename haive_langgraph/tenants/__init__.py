"""Tenants as first-class objects: a registry, a context that binds one tenant,
quotas, per-tenant retention and analytics (see ``docs/tenants.md``).

:class:`TenantRegistry` / :class:`AsyncTenantRegistry` keep one row per tenant
(table ``tenants``, migrations component ``"tenants"``): display name, status,
:class:`TenantSettings` and :class:`TenantQuota`. ``registry.context(tenant_id)``
opens checkpointers, stores, histories, conversations, sessions and vector
memory bound to that tenant, on the registry's connections.
:func:`tenant_retention` applies each tenant's ``data_retention_days`` (a
:class:`TenantRetentionSweeper` does it every so often) and
:func:`tenant_analytics` reports usage per tenant (admin only).
"""

from __future__ import annotations

# Errors are exported by haive_langgraph.errors; importable from here too.
from haive_langgraph.errors import TenantExistsError as TenantExistsError
from haive_langgraph.errors import TenantNotFoundError as TenantNotFoundError
from haive_langgraph.errors import TenantSuspendedError as TenantSuspendedError
from haive_langgraph.tenants._analytics import (
    DailyUsage,
    ModelUsage,
    TenantUsage,
    atenant_analytics,
    tenant_analytics,
)
from haive_langgraph.tenants._chart import write_usage_chart
from haive_langgraph.tenants._context import AsyncTenantContext, TenantContext
from haive_langgraph.tenants._registry import AsyncTenantRegistry, TenantRegistry
from haive_langgraph.tenants._retention import (
    ConversationsRemoved,
    TenantRetention,
    TenantRetentionReport,
    atenant_retention,
    tenant_retention,
)
from haive_langgraph.tenants._retention_sweeper import (
    AsyncTenantRetentionSweeper,
    TenantRetentionSweeper,
)
from haive_langgraph.tenants._types import (
    COMPLIANCE_DEFAULTS,
    ComplianceDefaults,
    EffectiveSettings,
    Tenant,
    TenantPage,
    TenantQuota,
    TenantSettings,
    TenantStatus,
)

__all__ = [
    "COMPLIANCE_DEFAULTS",
    "AsyncTenantContext",
    "AsyncTenantRegistry",
    "AsyncTenantRetentionSweeper",
    "ComplianceDefaults",
    "ConversationsRemoved",
    "DailyUsage",
    "EffectiveSettings",
    "ModelUsage",
    "Tenant",
    "TenantContext",
    "TenantPage",
    "TenantQuota",
    "TenantRegistry",
    "TenantRetention",
    "TenantRetentionReport",
    "TenantRetentionSweeper",
    "TenantSettings",
    "TenantStatus",
    "TenantUsage",
    "atenant_analytics",
    "atenant_retention",
    "tenant_analytics",
    "tenant_retention",
    "write_usage_chart",
]
