"""The stores configured for Supabase: the PostgreSQL classes with the Supabase mixin
(see :mod:`haive_langgraph.supabase`)."""

from __future__ import annotations

from haive_langgraph.stores import _sql as S
from haive_langgraph.stores.aio import AsyncPostgresStore
from haive_langgraph.stores.postgres import PostgresStore
from haive_langgraph.supabase._classes import SupabaseAsync, SupabaseFeature, SupabaseSync

STORE = SupabaseFeature(S.COMPONENT, default_channels=("items",))


class SupabaseStore(SupabaseSync, PostgresStore):
    """:class:`PostgresStore` configured for Supabase.

    As :class:`~haive_langgraph.checkpointers.SupabaseCheckpointer`: the
    environment when no ``conn`` is given, pooler-safe settings, schema
    ``haive``, and :meth:`setup` applying grants, policies (items, usage
    and vectors of a user's tenant) and realtime (channel ``"items"``).

    Args:
        conn: A DSN, ``Connection`` or ``ConnectionPool``; ``None`` reads the
            environment.
        enable_rls: Let role ``authenticated`` use the rows of its claim's tenant.
        tenant_claim: ``"sub"`` (``auth.uid()``) or a dotted JWT claim path.
        enable_realtime: Publish and ``NOTIFY`` changes of ``realtime_channels``.
        realtime_channels: ``["items"]`` (the default).
        replica_identity: ``"full"`` to send old rows to Realtime.
        config: Settings (default :func:`~haive_langgraph.supabase.supabase_config`).
        **options: Everything :class:`PostgresStore` takes (``index``, ``ttl`` ...).
    """

    feature = STORE


class AsyncSupabaseStore(SupabaseAsync, AsyncPostgresStore):
    """:class:`AsyncPostgresStore` configured for Supabase; see :class:`SupabaseStore`."""

    feature = STORE
