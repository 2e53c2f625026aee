"""Chat message histories configured for Supabase: the PostgreSQL classes with the Supabase
mixin (see :mod:`haive_langgraph.supabase`)."""

from __future__ import annotations

from haive_langgraph.memory.conversations._histories import (
    AsyncPostgresChatMessageHistory,
    PostgresChatMessageHistory,
)
from haive_langgraph.memory.conversations._sql import COMPONENT
from haive_langgraph.supabase._classes import SupabaseAsync, SupabaseFeature, SupabaseSync

CONVERSATIONS = SupabaseFeature(
    COMPONENT,
    default_channels=("conversations", "messages"),
    leading_args=1,  # session_id
)


class SupabaseChatMessageHistory(SupabaseSync, PostgresChatMessageHistory):
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

    feature = CONVERSATIONS


class AsyncSupabaseChatMessageHistory(SupabaseAsync, AsyncPostgresChatMessageHistory):
    """:class:`AsyncPostgresChatMessageHistory` configured for Supabase; see
    :class:`SupabaseChatMessageHistory` (``await history.setup()``)."""

    feature = CONVERSATIONS
