"""The stores configured for Supabase (see :mod:`haive_langgraph.supabase`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.db import PersistenceConfig
from haive_langgraph.stores import _sql as S
from haive_langgraph.stores.aio import AsyncPostgresStore
from haive_langgraph.stores.postgres import PostgresStore
from haive_langgraph.supabase import SupabaseSettings

__all__ = ["AsyncSupabaseStore", "SupabaseStore"]

TABLES = (S.ITEMS, S.TENANTS, S.VECTORS)
DEFAULT_CHANNELS = ("items",)


def _settings(
    enable_rls: bool,
    tenant_claim: str,
    enable_realtime: bool,
    realtime_channels: Sequence[str] | None,
    replica_identity: Literal["default", "full"],
) -> SupabaseSettings:
    return SupabaseSettings.build(
        TABLES,
        enable_rls=enable_rls,
        tenant_claim=tenant_claim,
        enable_realtime=enable_realtime,
        realtime_channels=realtime_channels,
        default_channels=DEFAULT_CHANNELS,
        replica_identity=replica_identity,
    )


class SupabaseStore(PostgresStore):
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

    def __init__(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any] | None = None,
        *,
        enable_rls: bool = False,
        tenant_claim: str = "sub",
        enable_realtime: bool = False,
        realtime_channels: Sequence[str] | None = None,
        replica_identity: Literal["default", "full"] = "default",
        config: PersistenceConfig | None = None,
        **options: Any,
    ) -> None:
        self.supabase = _settings(
            enable_rls, tenant_claim, enable_realtime, realtime_channels, replica_identity
        )
        conn, config = self.supabase.connect_args(conn, config)
        super().__init__(conn, config=config, **options)

    @classmethod
    def from_env(cls, **options: Any) -> SupabaseStore:
        """A store on the Supabase database named by the environment (close it)."""
        return cls(None, **options)

    @classmethod
    @contextmanager
    def from_conn_string(  # type: ignore[override]
        cls, dsn: str | None = None, **options: Any
    ) -> Iterator[SupabaseStore]:
        """Open a store on ``dsn`` (``None``: the environment) and close it afterwards."""
        store = cls(dsn, **options)
        try:
            yield store
        finally:
            store.close()

    def setup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime.

        Args:
            force: Set up in schema ``public`` without ``enable_rls``.

        Raises:
            ConfigurationError: ``public`` without RLS and not forced, or
                ``enable_rls`` on a database without Supabase's auth schema.
        """
        self.supabase.check_schema(self.schema, force=force)
        super().setup()
        self._source.run(lambda: self.supabase.setup_op(self.schema), transaction=True)


class AsyncSupabaseStore(AsyncPostgresStore):
    """:class:`AsyncPostgresStore` configured for Supabase; see :class:`SupabaseStore`."""

    def __init__(
        self,
        conn: str | AsyncConnection[Any] | AsyncConnectionPool[Any] | None = None,
        *,
        enable_rls: bool = False,
        tenant_claim: str = "sub",
        enable_realtime: bool = False,
        realtime_channels: Sequence[str] | None = None,
        replica_identity: Literal["default", "full"] = "default",
        config: PersistenceConfig | None = None,
        **options: Any,
    ) -> None:
        self.supabase = _settings(
            enable_rls, tenant_claim, enable_realtime, realtime_channels, replica_identity
        )
        conn, config = self.supabase.connect_args(conn, config)
        super().__init__(conn, config=config, **options)

    @classmethod
    def from_env(cls, **options: Any) -> AsyncSupabaseStore:
        """A store on the Supabase database named by the environment (``aclose`` it)."""
        return cls(None, **options)

    @classmethod
    @asynccontextmanager
    async def from_conn_string(  # type: ignore[override]
        cls, dsn: str | None = None, **options: Any
    ) -> AsyncIterator[AsyncSupabaseStore]:
        """Open a store on ``dsn`` (``None``: the environment) and close it afterwards."""
        store = cls(dsn, **options)
        try:
            await store._source.open()
            yield store
        finally:
            await store.aclose()

    async def setup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime."""
        self.supabase.check_schema(self.schema, force=force)
        await super().setup()
        await self._source.run(lambda: self.supabase.setup_op(self.schema), transaction=True)
