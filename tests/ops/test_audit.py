"""The audit log on a real database: triggers on every table, same transaction, append-only."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.ops import migrate_all
from haive_langgraph.ops.audit import AuditLog, disable, enable, query, status
from haive_langgraph.ops.backup import backup, restore

runner = CliRunner()


def chat(saver: PostgresCheckpointer, thread_id: str, turns: int = 1) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    for i in range(turns):
        graph.invoke(
            {"messages": [HumanMessage(content=f"turn {i}")]},
            {"configurable": {"thread_id": thread_id}},
        )


def our_tables(dsn: str, schema: str = "haive") -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            """,
            (schema,),
        ).fetchall()
    return {r[0] for r in rows} - {"haive_migrations", "audit_log", "audit_settings"}


@pytest.fixture(scope="module")
def audited(dsn: str) -> str:
    migrate_all(dsn)
    enable(dsn, retention=dt.timedelta(days=30))
    return dsn


@pytest.fixture(scope="module")
def saver(audited: str) -> Iterator[PostgresCheckpointer]:
    with PostgresCheckpointer.from_conn_string(audited, tenant_id="acme") as cp:
        cp.setup()
        yield cp


def test_every_table_of_every_component_is_covered(audited: str) -> None:
    result = status(audited)
    assert result.enabled and result.retention == dt.timedelta(days=30)
    assert set(result.tables) == our_tables(audited)
    assert {"threads", "checkpoints", "blobs"} <= set(result.tables)
    assert result.uncovered == []


def test_changes_are_recorded_with_tenant_user_operation_and_key(
    saver: PostgresCheckpointer, audited: str
) -> None:
    thread = f"a-{uuid.uuid4().hex[:8]}"
    chat(saver, thread, 2)
    events = query(audited, table="threads", tenant_id="acme", limit=1000)
    mine = [e for e in events if e.object_key == ["acme", thread]]
    assert {e.operation for e in mine} == {"INSERT", "UPDATE"}
    assert all(e.user_id == "postgres" and e.tenant_id == "acme" for e in mine)
    checkpoints = [
        e
        for e in query(audited, table="checkpoints", operation="insert", limit=1000)
        if e.object_key[1] == thread
    ]
    assert len(checkpoints) == len(list(saver.list({"configurable": {"thread_id": thread}})))
    saver.delete_thread(thread)
    deleted = query(audited, table="checkpoints", operation="DELETE", limit=1000)
    assert {tuple(e.object_key[:2]) for e in deleted} >= {("acme", thread)}


def test_the_acting_user_is_the_transaction_setting(audited: str) -> None:
    # a connection lent to the saver carries the user for its session
    with psycopg.connect(audited, autocommit=True) as conn:
        conn.execute("SELECT set_config('haive.user_id', 'alice@example.com', false)")
        saver = PostgresCheckpointer(conn, tenant_id="acme")
        thread = f"u-{uuid.uuid4().hex[:8]}"
        chat(saver, thread)
    users = {
        e.user_id for e in query(audited, table="threads", limit=1000) if e.object_key[1] == thread
    }
    assert users == {"alice@example.com"}
    assert query(audited, user_id="alice@example.com", table="threads", limit=5)


def test_an_entry_exists_exactly_when_the_change_committed(audited: str) -> None:
    thread = f"rb-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(audited) as conn:
        conn.execute(
            "INSERT INTO haive.threads (tenant_id, thread_id, family_id) VALUES ('acme', %s, %s)",
            (thread, thread),
        )
        inside = conn.execute(
            "SELECT count(*) FROM haive.audit_log WHERE object_key = %s::jsonb",
            (json.dumps(["acme", thread]),),
        ).fetchone()
        conn.rollback()
    assert inside == (1,)
    assert not [e for e in query(audited, table="threads", limit=1000) if e.object_key[1] == thread]


def test_the_log_is_append_only_except_for_retention(audited: str) -> None:
    with psycopg.connect(audited, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO haive.audit_log (tenant_id, user_id, operation, table_name, occurred_at) "
            "VALUES ('acme', 'x', 'READ', 'old', now() - interval '400 days')"
        )
        for statement in (
            "UPDATE haive.audit_log SET user_id = 'mallory'",
            "DELETE FROM haive.audit_log",
            "TRUNCATE haive.audit_log",
        ):
            with pytest.raises(psycopg.Error, match="append-only") as info:
                conn.execute(statement)
            assert info.value.sqlstate == "HA403"
        # setting the prune marker by hand for another transaction does not help
        conn.execute("SELECT set_config('haive.audit_prune', '1', false)")
        with pytest.raises(psycopg.Error, match="append-only"):
            conn.execute("DELETE FROM haive.audit_log")
    before = status(audited).entries
    with AuditLog(audited) as log:
        assert log.prune() == 1  # the configured 30 days
        assert status(audited).entries == before - 1
        assert log.prune(dt.timedelta(days=365)) == 0


def test_reads_are_recorded_only_when_enabled(audited: str) -> None:
    with AuditLog(audited, read_flag_ttl=0) as log:
        assert not log.reads_enabled()
        assert not log.record_read("checkpoints", ["acme", "t1"], tenant_id="acme", user_id="bob")
        enable(audited, reads=True)
        assert log.record_read("checkpoints", ["acme", "t1"], tenant_id="acme", user_id="bob")
        reads = query(audited, operation="READ", user_id="bob")
        assert [(e.table, e.object_key) for e in reads] == [("checkpoints", ["acme", "t1"])]
        enable(audited, reads=False)
        assert not log.record_read("checkpoints", ["acme", "t1"], user_id="bob")
    with AuditLog(audited, read_flag_ttl=3600) as cached:
        assert not cached.reads_enabled()
        enable(audited, reads=True)
        # cached: no query until the flag's time runs out
        assert not cached.reads_enabled()
    enable(audited, reads=False)


def test_store_writes_are_audited_too(audited: str) -> None:
    from haive_langgraph import stores

    with stores.PostgresStore.from_conn_string(audited, tenant_id="acme") as store:
        store.setup()
        store.put(("notes",), "n1", {"text": "hello"})
        store.delete(("notes",), "n1")
    ops = [e.operation for e in query(audited, table="store_items", limit=10)]
    assert ops[:2] == ["DELETE", "INSERT"]


def test_a_restore_is_one_entry_per_table(
    audited: str, saver: PostgresCheckpointer, tmp_path: Path
) -> None:
    thread = f"r-{uuid.uuid4().hex[:8]}"
    chat(saver, thread)
    backup(tmp_path / "a.tar", audited, threads=[thread], tenants=["acme"])
    before = status(audited).entries
    report = restore(tmp_path / "a.tar", audited, on_existing="replace")
    restored = query(audited, operation="RESTORE", limit=100)
    assert {e.table for e in restored} >= set(report.tables)
    # rows restored are not each audited (triggers are off during the restore)
    assert status(audited).entries - before <= len(report.tables)


def test_disable_removes_the_triggers(dsn: str) -> None:
    schema = "audit_off"
    migrate_all(dsn, schema=schema)
    enable(dsn, schema=schema, tables=["thread*"])
    assert status(dsn, schema=schema).tables == ["threads"]
    disable(dsn, schema=schema)
    off = status(dsn, schema=schema)
    assert not off.enabled and off.tables == []
    with PostgresCheckpointer.from_conn_string(dsn, schema=schema) as saver:
        chat(saver, "quiet")
    assert query(dsn, schema=schema) == []


def test_cli(audited: str) -> None:
    shown = runner.invoke(
        app, ["audit", "--dsn", audited, "--table", "threads", "--limit", "3", "--json"]
    )
    assert shown.exit_code == 0, shown.output
    events = json.loads(shown.stdout)
    assert len(events) == 3 and all(e["table"] == "threads" for e in events)
    st = runner.invoke(app, ["audit", "status", "--dsn", audited, "--json"])
    assert st.exit_code == 0 and json.loads(st.stdout)["enabled"] is True
    bad = runner.invoke(app, ["audit", "prune", "--dsn", audited, "--older-than", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.stderr
    pruned = runner.invoke(
        app, ["audit", "prune", "--dsn", audited, "--older-than", "3650d", "--json"]
    )
    assert pruned.exit_code == 0 and json.loads(pruned.stdout) == {"deleted": 0}
    since = runner.invoke(app, ["audit", "--dsn", audited, "--since", "1h", "--json"])
    assert since.exit_code == 0 and json.loads(since.stdout)
