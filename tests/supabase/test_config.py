"""from_env resolution, pooler safety, the public-schema guard and bad options."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import conninfo

from haive_langgraph.checkpointers import SupabaseCheckpointer
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.db._connections import connection_kwargs
from haive_langgraph.errors import ConfigurationError, ConnectionFailedError
from haive_langgraph.memory import SupabaseChatMessageHistory
from haive_langgraph.stores import SupabaseStore
from haive_langgraph.supabase import (
    SupabaseWarning,
    channel_name,
    subscribe,
    supabase_config,
    supabase_dsn,
)
from haive_langgraph.supabase._env import check_pooler
from haive_langgraph.supabase._realtime import listen_dsn

from .conftest import POOLED

SUPABASE_VARS = (
    "SUPABASE_DB_URL",
    "SUPABASE_URL",
    "SUPABASE_DB_PASSWORD",
    "SUPABASE_POOLER_HOST",
    "SUPABASE_REGION",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SUPABASE_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_missing_variables_are_each_named(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as info:
        supabase_dsn()
    assert "SUPABASE_URL, SUPABASE_DB_PASSWORD are not set" in str(info.value)
    assert "SUPABASE_DB_URL" in str(info.value)
    clean_env.setenv("SUPABASE_URL", "https://abcdefghijklmnop.supabase.co")
    with pytest.raises(ConfigurationError, match="SUPABASE_DB_PASSWORD is not set") as info:
        SupabaseCheckpointer.from_env()
    assert "SUPABASE_URL," not in str(info.value)


def test_db_url_wins_and_url_plus_password_build_the_pooler_dsn(
    clean_env: pytest.MonkeyPatch,
) -> None:
    env = {
        "SUPABASE_URL": "https://abcdefghijklmnop.supabase.co",
        "SUPABASE_DB_PASSWORD": "p@ss/w:rd",
    }
    dedicated = supabase_dsn(env)
    assert dedicated == (
        "postgresql://postgres:p%40ss%2Fw%3Ard@db.abcdefghijklmnop.supabase.co:6543/postgres"
        "?sslmode=require"
    )
    shared = supabase_dsn({**env, "SUPABASE_REGION": "eu-central-1"})
    assert shared.startswith(
        "postgresql://postgres.abcdefghijklmnop:p%40ss%2Fw%3Ard@"
        "aws-0-eu-central-1.pooler.supabase.com:6543/"
    )
    host = supabase_dsn({**env, "SUPABASE_POOLER_HOST": "aws-1-us-east-1.pooler.supabase.com"})
    assert "@aws-1-us-east-1.pooler.supabase.com:6543/" in host
    assert supabase_dsn({**env, "SUPABASE_DB_URL": "postgresql://x@h/db"}) == "postgresql://x@h/db"
    # The built DSN is a transaction-pooler DSN: no prepared statements, no options.
    kwargs = connection_kwargs(shared, supabase_config())
    assert kwargs["prepare_threshold"] is None and "options" not in kwargs
    with pytest.raises(ConfigurationError, match="project-ref"):
        supabase_dsn({**env, "SUPABASE_URL": "http://127.0.0.1:54321"})
    with pytest.raises(ConfigurationError, match="SUPABASE_REGION"):
        supabase_dsn({**env, "SUPABASE_REGION": "eu; drop"})


def test_port_6543_with_pooler_safety_off_warns_about_prepared_statements() -> None:
    dsn = "postgresql://postgres@127.0.0.1:6543/postgres?connect_timeout=1"
    config = PersistenceConfig(pooler_mode="none", connect_timeout=1)
    with (
        pytest.warns(SupabaseWarning, match="prepared statement") as caught,
        pytest.raises(ConnectionFailedError),  # nothing listens there
    ):
        SupabaseStore(dsn, config=config)
    assert "pooler_mode='none'" in str(caught[0].message)


def test_lent_connection_that_prepares_on_6543_warns(supabase_db: str) -> None:
    # A connection really on 6543 is not available here; the check reads its port.
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        assert conn.prepare_threshold is not None
        check_pooler(conn, PersistenceConfig())  # not 6543: silent


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown realtime channel 'blobs'.*threads"):
        SupabaseCheckpointer(
            "postgresql://x@127.0.0.1:1/db", enable_realtime=True, realtime_channels=["blobs"]
        )
    with pytest.raises(ConfigurationError, match="enable_realtime"):
        SupabaseStore("postgresql://x@127.0.0.1:1/db", realtime_channels=["items"])
    with pytest.raises(ConfigurationError, match="tenant_claim"):
        SupabaseChatMessageHistory("s", "postgresql://x@127.0.0.1:1/db", tenant_claim="org'; drop")


def test_public_schema_without_rls_is_refused_unless_forced(supabase_db: str) -> None:
    with SupabaseStore.from_conn_string(supabase_db, schema="public", config=POOLED) as store:
        with pytest.raises(ConfigurationError, match=r"refusing to set up.*public"):
            store.setup()
        with pytest.raises(psycopg.errors.UndefinedTable), psycopg.connect(supabase_db) as conn:
            conn.execute("SELECT 1 FROM public.store_items")
        with pytest.warns(SupabaseWarning, match="schema 'public'"):
            store.setup(force=True)
    with psycopg.connect(supabase_db) as conn:
        # Supabase's default privileges gave anon the new tables; setup took them back.
        rows = conn.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema = 'public' AND table_name = 'store_items' AND grantee = 'anon'"
        ).fetchall()
        assert rows == []
    # With RLS, public is allowed, silently.
    with SupabaseStore.from_conn_string(
        supabase_db, schema="public", enable_rls=True, config=POOLED
    ) as store:
        store.setup()


def test_enable_rls_needs_supabase_auth(dsn: str) -> None:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    with (
        SupabaseCheckpointer.from_conn_string(dsn, schema=schema, enable_rls=True) as saver,
        pytest.raises(ConfigurationError, match=r"authenticated, function auth\.uid\(\)"),
    ):
        saver.setup()
    # Without RLS, a plain PostgreSQL is fine (no roles to grant to, no publication).
    with SupabaseCheckpointer.from_conn_string(dsn, schema=schema, enable_realtime=True) as saver:
        saver.setup()


def test_listening_needs_a_session() -> None:
    config = supabase_config()
    session = listen_dsn("postgresql://u:p@pooler.example:6543/postgres", config)
    assert conninfo.conninfo_to_dict(session)["port"] == "5432"
    with pytest.raises(ConfigurationError, match="LISTEN"):
        subscribe(
            "postgresql://u@127.0.0.1:7000/db", config=PersistenceConfig(pooler_mode="transaction")
        )
    assert channel_name("haive", "a") != channel_name("haive", "b") != channel_name("haive")
    assert len(channel_name("x" * 63, "t" * 255)) < 64
