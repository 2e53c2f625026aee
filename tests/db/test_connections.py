"""DSN resolution, configuration, pooler safety, retries on dropped connections."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from psycopg_pool import ConnectionPool

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig, describe_dsn, resolve_dsn
from haive_langgraph.db._connections import connection_kwargs
from haive_langgraph.errors import ConfigurationError


def test_dsn_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db-url/x")
    assert resolve_dsn() == "postgresql://db-url/x"
    monkeypatch.setenv("HAIVE_DATABASE_URL", "postgresql://haive-url/x")
    assert resolve_dsn() == "postgresql://haive-url/x"
    assert resolve_dsn("postgresql://explicit/x") == "postgresql://explicit/x"
    config = PersistenceConfig(database_url="postgresql://from-config/x")
    assert resolve_dsn(config=config) == "postgresql://from-config/x"


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAIVE_SCHEMA", "agents")
    monkeypatch.setenv("HAIVE_POOL_MAX_SIZE", "25")
    monkeypatch.setenv("HAIVE_STATEMENT_TIMEOUT", "5000")
    monkeypatch.setenv("HAIVE_POOLER_MODE", "transaction")
    config = PersistenceConfig()
    assert config.schema_name == "agents"
    assert config.pool_max_size == 25
    assert config.statement_timeout == 5000
    assert config.pooler_mode == "transaction"


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="not a plain identifier"):
        PersistenceConfig(schema_name="drop table")
    with pytest.raises(ValueError, match="pool_min_size"):
        PersistenceConfig(pool_min_size=5, pool_max_size=2)
    with pytest.raises(ValueError):
        PersistenceConfig(pooler_mode="sometimes")  # type: ignore[arg-type]


def test_transaction_pooler_gets_no_prepared_statements_or_session_state() -> None:
    config = PersistenceConfig(statement_timeout=1000)
    supabase = "postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres"
    kwargs = connection_kwargs(supabase, config)
    assert kwargs["prepare_threshold"] is None and "options" not in kwargs
    direct = connection_kwargs("postgresql://u:p@db.example:5432/postgres", config)
    assert "prepare_threshold" not in direct
    assert "-c statement_timeout=1000" in direct["options"]
    forced = connection_kwargs(
        "postgresql://u:p@db.example:5432/postgres",
        PersistenceConfig(pooler_mode="transaction"),
    )
    assert forced["prepare_threshold"] is None
    off = connection_kwargs(supabase, PersistenceConfig(pooler_mode="session"))
    assert "prepare_threshold" not in off


def test_describe_dsn_never_shows_the_password() -> None:
    assert describe_dsn("postgresql://bob:hunter2@db.example:6543/app") == "db.example:6543/app"
    assert "hunter2" not in describe_dsn("host=db password=hunter2 dbname=x")
    with pytest.raises(ConfigurationError, match="argument dsn is not a valid") as info:
        resolve_dsn("not a dsn hunter2=")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError, match="malformed") as info:
        connection_kwargs("bogus = = hunter2", PersistenceConfig())
    assert "hunter2" not in str(info.value)


def test_server_settings_are_applied(dsn: str) -> None:
    config = PersistenceConfig(statement_timeout=1234, lock_timeout=567)
    saver = PostgresCheckpointer(dsn, config=config)
    try:
        with saver._source.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1234ms",)
            assert conn.execute("SHOW lock_timeout").fetchone() == ("567ms",)
            assert conn.execute("SHOW application_name").fetchone() == ("haive-langgraph",)
            conn.execute("SET statement_timeout = 50")
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(1)")
    finally:
        saver.close()


def test_read_retried_once_after_the_connection_is_killed(dsn: str) -> None:
    app = f"haive-test-{uuid.uuid4().hex[:6]}"
    pool = ConnectionPool(
        dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True, "application_name": app}
    )
    try:
        saver = PostgresCheckpointer(pool)
        saver.setup()
        graph = chat_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": f"kill-{uuid.uuid4().hex[:6]}"}}
        graph.invoke({"messages": [HumanMessage(content="hi")]}, config)
        with psycopg.connect(dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (app,),
            ).fetchone()
        assert killed == (1,)
        # The pooled connection is dead; the read notices and retries on a new one.
        state = graph.get_state(config)
        assert len(state.values["messages"]) == 2
    finally:
        pool.close()
