"""The checkpointers configured for Supabase (see :mod:`haive_langgraph.supabase`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers.postgres import PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.supabase import SupabaseSettings

__all__ = ["AsyncSupabaseCheckpointer", "SupabaseCheckpointer"]

# The thread registry is what a UI watches ("agent state summaries").
DEFAULT_CHANNELS = ("threads",)


def _settings(
    enable_rls: bool,
    tenant_claim: str,
    enable_realtime: bool,
    realtime_channels: Sequence[str] | None,
    replica_identity: Literal["default", "full"],
) -> SupabaseSettings:
    return SupabaseSettings.build(
        S.TENANT_TABLES,
        enable_rls=enable_rls,
        tenant_claim=tenant_claim,
        enable_realtime=enable_realtime,
        realtime_channels=realtime_channels,
        default_channels=DEFAULT_CHANNELS,
        replica_identity=replica_identity,
    )


class SupabaseCheckpointer(PostgresCheckpointer):
    """:class:`PostgresCheckpointer` configured for Supabase.

    Connects to ``SUPABASE_DB_URL`` (or ``SUPABASE_URL`` +
    ``SUPABASE_DB_PASSWORD``) when no ``conn`` is given, safely through the
    transaction pooler on port 6543; tables go to schema ``haive`` (never
    exposed by the REST API); :meth:`setup` also applies the Supabase grants,
    policies and realtime publication. See ``docs/supabase.md``.

    Args:
        conn: A DSN, ``Connection`` or ``ConnectionPool``; ``None`` reads the
            environment (see :func:`haive_langgraph.supabase.supabase_dsn`).
        enable_rls: Let role ``authenticated`` (a user's request) read and
            write the rows whose ``tenant_id`` equals its ``tenant_claim``.
        tenant_claim: ``"sub"`` (``auth.uid()``) or a dotted JWT claim path.
        enable_realtime: Publish ``realtime_channels`` (default
            ``["threads"]``; also ``"checkpoints"``) to Supabase Realtime
            and ``NOTIFY`` their changes (see
            :func:`haive_langgraph.supabase.subscribe`).
        realtime_channels: Tables whose changes are published.
        replica_identity: ``"full"`` to send old rows to Realtime.
        config: Settings (default :func:`~haive_langgraph.supabase.supabase_config`).
        **options: Everything :class:`PostgresCheckpointer` takes.

    Example:
        >>> with SupabaseCheckpointer.from_conn_string(enable_rls=True) as saver:
        ...     saver.setup()
        ...     graph = builder.compile(checkpointer=saver)
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
    def from_env(cls, **options: Any) -> SupabaseCheckpointer:
        """A checkpointer on the Supabase database named by the environment (close it)."""
        return cls(None, **options)

    @classmethod
    @contextmanager
    def from_conn_string(  # type: ignore[override]
        cls, dsn: str | None = None, **options: Any
    ) -> Iterator[SupabaseCheckpointer]:
        """Open a checkpointer on ``dsn`` (``None``: the environment) and close it afterwards."""
        saver = cls(dsn, **options)
        try:
            yield saver
        finally:
            saver.close()

    def setup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime.

        Args:
            force: Set up in schema ``public`` without ``enable_rls``
                (refused otherwise, with a loud warning when forced).

        Raises:
            ConfigurationError: ``public`` without RLS and not forced, or
                ``enable_rls`` on a database without Supabase's auth schema.
        """
        self.supabase.check_schema(self.schema, force=force)
        super().setup()
        self._source.run(lambda: self.supabase.setup_op(self.schema), transaction=True)


class AsyncSupabaseCheckpointer(AsyncPostgresCheckpointer):
    """:class:`AsyncPostgresCheckpointer` configured for Supabase; see
    :class:`SupabaseCheckpointer` for the options."""

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
    def from_env(cls, **options: Any) -> AsyncSupabaseCheckpointer:
        """A checkpointer on the Supabase database named by the environment (``aclose`` it)."""
        return cls(None, **options)

    @classmethod
    @asynccontextmanager
    async def from_conn_string(  # type: ignore[override]
        cls, dsn: str | None = None, **options: Any
    ) -> AsyncIterator[AsyncSupabaseCheckpointer]:
        """Open a checkpointer on ``dsn`` (``None``: the environment) and close it afterwards."""
        saver = cls(dsn, **options)
        try:
            await saver._source.open()
            yield saver
        finally:
            await saver.aclose()

    async def setup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime
        (see :meth:`SupabaseCheckpointer.setup`)."""
        self.supabase.check_schema(self.schema, force=force)
        await super().setup()
        await self._source.run(lambda: self.supabase.setup_op(self.schema), transaction=True)
