"""LangGraph's ``BaseStore`` on PostgreSQL: items, filters, pgvector search, TTL, tenants.

:class:`PostgresStore` (sync) and :class:`AsyncPostgresStore` (asyncio) are
drop-in stores for ``graph.compile(store=...)``. See ``docs/store.md``.
"""

# Errors are exported by haive_langgraph.errors; still importable from here.
from haive_langgraph.errors import InvalidFilterError as InvalidFilterError
from haive_langgraph.errors import QuotaExceededError as QuotaExceededError
from haive_langgraph.stores._config import (
    HybridConfig,
    PostgresIndexConfig,
    ResourceQuota,
    TenantUsage,
)
from haive_langgraph.stores.aio import AsyncPostgresStore
from haive_langgraph.stores.postgres import PostgresStore
from haive_langgraph.stores.supabase import AsyncSupabaseStore, SupabaseStore

__all__ = [
    "AsyncPostgresStore",
    "AsyncSupabaseStore",
    "HybridConfig",
    "PostgresIndexConfig",
    "PostgresStore",
    "ResourceQuota",
    "SupabaseStore",
    "TenantUsage",
]
