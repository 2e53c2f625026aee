"""One mechanism for every Supabase class, and its DDL through the migration runner.

The six ``Supabase*`` classes are their PostgreSQL class with one mixin in
front: the same options, ``from_env`` and ``setup(force=...)`` for each
(a chat history's ``session_id`` comes before ``conn``). What does not depend
on the options (the ``NOTIFY`` trigger functions) is migration 1 of the
component ``supabase``: applied once, recorded with its checksum, printed by
``migration_script``; the rest is reconciled by each ``setup()`` in the same
transaction, under the same lock.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from haive_langgraph.checkpointers import AsyncSupabaseCheckpointer, SupabaseCheckpointer
from haive_langgraph.db._features import Table
from haive_langgraph.db._migrations import Component, Migration, migration_script
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import AsyncSupabaseChatMessageHistory, SupabaseChatMessageHistory
from haive_langgraph.stores import AsyncSupabaseStore, SupabaseStore
from haive_langgraph.supabase import _sql
from haive_langgraph.supabase._classes import SupabaseFeature

from .conftest import POOLED

CLASSES = (
    SupabaseCheckpointer,
    AsyncSupabaseCheckpointer,
    SupabaseStore,
    AsyncSupabaseStore,
    SupabaseChatMessageHistory,
    AsyncSupabaseChatMessageHistory,
)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_class_reads_the_environment_through_from_env(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SUPABASE_DB_URL", "SUPABASE_URL", "SUPABASE_DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    args = ("session",) if "History" in cls.__name__ else ()
    with pytest.raises(ConfigurationError, match="SUPABASE_URL, SUPABASE_DB_PASSWORD"):
        cls.from_env(*args)  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="unknown realtime channel 'nope'"):
        cls(
            *args, "postgresql://x@127.0.0.1:1/db", enable_realtime=True, realtime_channels=["nope"]
        )


def test_a_feature_sets_up_the_tenant_tables_of_its_registry_entry() -> None:
    creates = Migration("t", ("CREATE TABLE IF NOT EXISTS {schema}.t (tenant_id text)",))
    tables = (Table("t"), Table("v", migrated=False), Table("log", tenant=False, migrated=False))
    assert SupabaseFeature(Component("x", (creates,), tables=tables), ()).tables == ("t", "v")
    for cls in CLASSES:
        feature = cls.feature  # type: ignore[attr-defined]
        assert feature.tables and feature.tables == feature.component.tenant_tables


def test_the_trigger_functions_are_a_recorded_migration(pooled: str, supabase_db: str) -> None:
    schema = f"mig_{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # a second setup applies nothing again
        history = SupabaseChatMessageHistory("s", pooled, schema=schema, config=POOLED)
        try:
            history.setup()
        finally:
            history.close()
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT version, checksum FROM "{schema}".haive_migrations WHERE component = %s',
            (_sql.COMPONENT.name,),
        ).fetchall()
        assert rows == [(1, _sql.MIGRATIONS[0].checksum)]
        functions = conn.execute(
            "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE nspname = %s AND proname LIKE 'haive_notify_%%'",
            (schema,),
        ).fetchall()
        assert sorted(f[0] for f in functions) == sorted(
            _sql.notify_function(t) for t in _sql.REALTIME_KEYS
        )
        # realtime is off: no trigger is attached
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = %s AND tgname = %s",
            (schema, _sql.NOTIFY_TRIGGER),
        ).fetchone()
        assert triggers == (0,)
    script = migration_script([_sql.COMPONENT], "haive")
    assert 'CREATE OR REPLACE FUNCTION "haive".haive_notify_threads()' in script


def test_positional_and_named_arguments_reach_the_base_class(pooled: str) -> None:
    schema = f"args_{uuid.uuid4().hex[:6]}"
    with SupabaseChatMessageHistory(
        session_id="s1", conn=pooled, schema=schema, config=POOLED
    ) as a:
        a.setup()
        a.add_user_message("hi")
    with SupabaseChatMessageHistory("s1", pooled, schema=schema, config=POOLED) as b:
        assert [m.content for m in b.messages] == ["hi"]
    with pytest.raises(TypeError, match="positional"):
        SupabaseStore(pooled, "extra")


async def test_the_async_history_sets_up_with_setup_and_the_deprecated_asetup(pooled: str) -> None:
    schema = f"ah_{uuid.uuid4().hex[:6]}"
    history = AsyncSupabaseChatMessageHistory(
        session_id="s", conn=pooled, schema=schema, config=POOLED, enable_realtime=True
    )
    try:
        await history.setup()
        with pytest.warns(DeprecationWarning, match="asetup"):
            await history.asetup()
        assert history.supabase.realtime_channels == ("conversations", "conversation_messages")
    finally:
        await history.aclose()
