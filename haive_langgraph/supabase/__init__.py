"""Supabase: pooler-safe connections, row-level security with Supabase auth, realtime.

The Supabase classes (``checkpointers.SupabaseCheckpointer``,
``stores.SupabaseStore``, ``memory.SupabaseChatMessageHistory`` and their
async twins) are the PostgreSQL classes with one mixin in front
(:mod:`~haive_langgraph.supabase._classes`); what they add lives here:

* :func:`supabase_dsn` resolves the server from the environment:
  ``SUPABASE_DB_URL``, or ``SUPABASE_URL`` + ``SUPABASE_DB_PASSWORD`` (a DSN
  for the transaction pooler on port 6543 is built from them);
* :func:`supabase_config` gives settings tuned for Supabase: transaction
  pooler safety on port 6543 (no prepared statements, no session state,
  tenant bound with transaction-local ``set_config``), pooled connections
  recycled well below idle reaping, the ``haive`` schema (never ``public``
  by default);
* :class:`SupabaseSettings` turns ``enable_rls`` / ``tenant_claim`` /
  ``enable_realtime`` / ``realtime_channels`` into one idempotent setup
  operation, run through the migration runner: grants for ``authenticated``
  and ``service_role`` (``anon`` gets nothing), policies keyed by
  ``auth.uid()`` or a JWT claim, tables in the ``supabase_realtime``
  publication, and triggers that ``NOTIFY``;
* :func:`subscribe` / :func:`asubscribe` deliver those notifications to
  Python consumers as :class:`ChangeEvent` values.

It imports only :mod:`haive_langgraph.db`: each feature declares its Supabase
classes with :class:`~haive_langgraph.supabase._classes.SupabaseSync` /
``SupabaseAsync`` and its :class:`~haive_langgraph.supabase._classes.SupabaseFeature`
(a package above the features would make their ``__init__`` import upward: a
cycle). See ``docs/supabase.md``.
"""

from __future__ import annotations

from haive_langgraph.supabase._env import SupabaseWarning, supabase_config, supabase_dsn
from haive_langgraph.supabase._realtime import (
    AsyncSubscription,
    ChangeEvent,
    Subscription,
    asubscribe,
    channel_name,
    subscribe,
)
from haive_langgraph.supabase._schema import SupabaseSettings

__all__ = [
    "AsyncSubscription",
    "ChangeEvent",
    "Subscription",
    "SupabaseSettings",
    "SupabaseWarning",
    "asubscribe",
    "channel_name",
    "subscribe",
    "supabase_config",
    "supabase_dsn",
]
