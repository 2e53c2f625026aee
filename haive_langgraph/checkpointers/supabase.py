"""The checkpointers configured for Supabase: the PostgreSQL classes with the Supabase mixin
(see :mod:`haive_langgraph.supabase`)."""

from __future__ import annotations

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers.aio import AsyncPostgresCheckpointer
from haive_langgraph.checkpointers.postgres import PostgresCheckpointer
from haive_langgraph.supabase._classes import SupabaseAsync, SupabaseFeature, SupabaseSync

# The thread registry is what a UI watches ("agent state summaries").
CHECKPOINTS = SupabaseFeature(S.COMPONENT, default_channels=("threads",))


class SupabaseCheckpointer(SupabaseSync, PostgresCheckpointer):
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

    feature = CHECKPOINTS


class AsyncSupabaseCheckpointer(SupabaseAsync, AsyncPostgresCheckpointer):
    """:class:`AsyncPostgresCheckpointer` configured for Supabase; see
    :class:`SupabaseCheckpointer` for the options."""

    feature = CHECKPOINTS
