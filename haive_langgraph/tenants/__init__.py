"""Tenants as first-class objects: a registry, a context that binds one tenant,
quotas, per-tenant retention and analytics (see ``docs/tenants.md``).

:class:`TenantRegistry` / :class:`AsyncTenantRegistry` keep one row per tenant
(table ``tenants``, migrations component ``"tenants"``): display name, status,
:class:`TenantSettings` and :class:`TenantQuota`. ``registry.context(tenant_id)``
opens checkpointers, stores, histories, conversations, sessions and vector
memory bound to that tenant, on the registry's connections.
"""

from __future__ import annotations

# Errors are exported by haive_langgraph.errors; importable from here too.
from haive_langgraph.errors import TenantExistsError as TenantExistsError
from haive_langgraph.errors import TenantNotFoundError as TenantNotFoundError
from haive_langgraph.errors import TenantSuspendedError as TenantSuspendedError
from haive_langgraph.tenants._context import AsyncTenantContext, TenantContext
from haive_langgraph.tenants._registry import AsyncTenantRegistry, TenantRegistry
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
    "ComplianceDefaults",
    "EffectiveSettings",
    "Tenant",
    "TenantContext",
    "TenantPage",
    "TenantQuota",
    "TenantRegistry",
    "TenantSettings",
    "TenantStatus",
]
