"""LangGraph's ``BaseStore`` on PostgreSQL: items, filters, pgvector search, TTL, tenants.

:class:`PostgresStore` (sync) and :class:`AsyncPostgresStore` (asyncio) are
drop-in stores for ``graph.compile(store=...)``. See ``docs/store.md``.
"""

from haive_langgraph.stores._config import (
    HybridConfig,
    PostgresIndexConfig,
    ResourceQuota,
    TenantUsage,
)
from haive_langgraph.stores._errors import InvalidFilterError, QuotaExceededError
from haive_langgraph.stores.aio import AsyncPostgresStore
from haive_langgraph.stores.postgres import PostgresStore
from haive_langgraph.stores.supabase import AsyncSupabaseStore, SupabaseStore

__all__ = [
    "AsyncPostgresStore",
    "AsyncSupabaseStore",
    "HybridConfig",
    "InvalidFilterError",
    "PostgresIndexConfig",
    "PostgresStore",
    "QuotaExceededError",
    "ResourceQuota",
    "SupabaseStore",
    "TenantUsage",
]
