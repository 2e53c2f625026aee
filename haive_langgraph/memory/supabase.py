"""Chat message histories configured for Supabase (see :mod:`haive_langgraph.supabase`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from haive_langgraph.db import PersistenceConfig
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.memory._history_sql import TENANT_TABLES
from haive_langgraph.memory.history import (
    AsyncPostgresChatMessageHistory,
    PostgresChatMessageHistory,
)
from haive_langgraph.supabase import SupabaseSettings

__all__ = ["AsyncSupabaseChatMessageHistory", "SupabaseChatMessageHistory"]

DEFAULT_CHANNELS = ("conversations", "messages")


def _settings(
    enable_rls: bool,
    tenant_claim: str,
    enable_realtime: bool,
    realtime_channels: Sequence[str] | None,
    replica_identity: Literal["default", "full"],
) -> SupabaseSettings:
    return SupabaseSettings.build(
        TENANT_TABLES,
        enable_rls=enable_rls,
        tenant_claim=tenant_claim,
        enable_realtime=enable_realtime,
        realtime_channels=realtime_channels,
        default_channels=DEFAULT_CHANNELS,
        replica_identity=replica_identity,
    )


class SupabaseChatMessageHistory(PostgresChatMessageHistory):
    """:class:`PostgresChatMessageHistory` configured for Supabase.

    As :class:`~haive_langgraph.checkpointers.SupabaseCheckpointer`: the
    environment when no ``conn`` is given, pooler-safe settings, schema
    ``haive``, and :meth:`setup` applying grants, policies (a user sees the
    conversations of its claim's tenant) and realtime (channels
    ``"conversations"`` and ``"messages"`` by default; also ``"participants"``).

    Args:
        session_id: The history (a conversation id; created on first write).
        conn: A DSN, ``Connection`` or ``ConnectionPool``; ``None`` reads the
            environment.
        enable_rls: Let role ``authenticated`` use the rows of its claim's tenant.
        tenant_claim: ``"sub"`` (``auth.uid()``) or a dotted JWT claim path.
        enable_realtime: Publish and ``NOTIFY`` changes of ``realtime_channels``.
        realtime_channels: Tables whose changes are published.
        replica_identity: ``"full"`` to send old rows to Realtime.
        config: Settings (default :func:`~haive_langgraph.supabase.supabase_config`).
        **options: Everything :class:`PostgresChatMessageHistory` takes.
    """

    def __init__(
        self,
        session_id: str,
        conn: SyncConn | None = None,
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
        super().__init__(session_id, conn, config=config, **options)

    @classmethod
    def from_env(cls, session_id: str, **options: Any) -> SupabaseChatMessageHistory:
        """A history on the Supabase database named by the environment (close it)."""
        return cls(session_id, None, **options)

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


class AsyncSupabaseChatMessageHistory(AsyncPostgresChatMessageHistory):
    """:class:`AsyncPostgresChatMessageHistory` configured for Supabase; see
    :class:`SupabaseChatMessageHistory`."""

    def __init__(
        self,
        session_id: str,
        conn: AsyncConn | None = None,
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
        super().__init__(session_id, conn, config=config, **options)

    @classmethod
    def from_env(cls, session_id: str, **options: Any) -> AsyncSupabaseChatMessageHistory:
        """A history on the Supabase database named by the environment (``aclose`` it)."""
        return cls(session_id, None, **options)

    async def asetup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime."""
        self.supabase.check_schema(self.schema, force=force)
        await super().asetup()
        await self._source.run(lambda: self.supabase.setup_op(self.schema), transaction=True)
