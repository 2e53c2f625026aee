"""The migration runner: ordered, checksummed, idempotent, safe under concurrency."""

from __future__ import annotations

import multiprocessing
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from haive_langgraph.checkpointers._sql import COMPONENT as CHECKPOINTS
from haive_langgraph.cli import app
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._migrations import (
    Component,
    Migration,
    migrate_op,
    migration_script,
    status_op,
)
from haive_langgraph.errors import MigrationError
from haive_langgraph.ops import all_components


def _setup_in_process(dsn: str, schema: str, barrier: Any) -> None:
    from haive_langgraph.checkpointers import PostgresCheckpointer

    with psycopg.connect(dsn, autocommit=True) as conn:
        saver = PostgresCheckpointer(conn, schema=schema)
        barrier.wait()
        saver.setup()


def recorded(dsn: str, schema: str) -> list[tuple[str, int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT component, version, checksum FROM {}.haive_migrations ORDER BY 1, 2"
            ).format(sql.Identifier(schema))
        ).fetchall()
    return [(str(c), int(v), str(s)) for c, v, s in rows]


def test_eight_processes_set_up_at_once(dsn: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_setup_in_process, args=(dsn, "race", barrier)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    rows = recorded(dsn, "race")
    expected = [("checkpoints", v, m.checksum) for v, m in enumerate(CHECKPOINTS.migrations, 1)]
    assert rows == expected  # each migration applied exactly once


def run(dsn: str, components: list[Component], schema: str) -> dict[str, list[int]]:
    source = ConnectionSource(dsn)
    try:
        return source.run(lambda: migrate_op(components, schema), transaction=True)
    finally:
        source.close()


def test_applies_in_order_once_and_records_checksums(dsn: str) -> None:
    first = Migration("create t", ("CREATE TABLE {schema}.t (a int)",))
    second = Migration("add b", ("ALTER TABLE {schema}.t ADD COLUMN b text",))
    comp = Component("demo", (first,))
    assert run(dsn, [comp], "mig1") == {"demo": [1]}
    assert run(dsn, [comp], "mig1") == {"demo": []}
    comp2 = Component("demo", (first, second))
    assert run(dsn, [comp2], "mig1") == {"demo": [2]}
    assert recorded(dsn, "mig1") == [("demo", 1, first.checksum), ("demo", 2, second.checksum)]
    source = ConnectionSource(dsn)
    assert source.run(lambda: status_op([comp2], "mig1")) == {"demo": (2, 2)}
    source.close()


def test_a_changed_migration_is_refused(dsn: str) -> None:
    comp = Component("demo", (Migration("create t", ("CREATE TABLE {schema}.t (a int)",)),))
    run(dsn, [comp], "mig2")
    changed = Component("demo", (Migration("create t", ("CREATE TABLE {schema}.t (a bigint)",)),))
    with pytest.raises(MigrationError, match=r"demo migration 1 \('create t'\).*changed after"):
        run(dsn, [changed], "mig2")


def test_a_newer_database_is_refused(dsn: str) -> None:
    m1 = Migration("one", ("CREATE TABLE {schema}.t (a int)",))
    m2 = Migration("two", ("CREATE TABLE {schema}.u (a int)",))
    run(dsn, [Component("demo", (m1, m2))], "mig3")
    with pytest.raises(MigrationError, match="newer than this haive-langgraph knows"):
        run(dsn, [Component("demo", (m1,))], "mig3")


def test_a_failing_migration_leaves_nothing_applied(dsn: str) -> None:
    good = Migration("good", ("CREATE TABLE {schema}.t (a int)",))
    bad = Migration("bad", ("CREATE TABLE {schema}.t (a int)",))  # duplicate table
    with pytest.raises(psycopg.errors.DuplicateTable):
        run(dsn, [Component("demo", (good, bad))], "mig4")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('mig4.t')").fetchone() == (None,)


def test_sql_script_matches_the_runner(dsn: str) -> None:
    script = migration_script(all_components(), "scripted")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script.encode())
        conn.execute(script.encode())  # idempotent: safe to run twice
    assert recorded(dsn, "scripted") == sorted(
        (c.name, v, m.checksum) for c in all_components() for v, m in enumerate(c.migrations, 1)
    )
    # the app then finds nothing to do
    assert run(dsn, all_components(), "scripted") == {c.name: [] for c in all_components()}


def test_cli_prints_and_applies_migrations(dsn: str) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["migrate", "--sql", "--schema", "cli_schema"])
    assert printed.exit_code == 0
    assert 'CREATE TABLE IF NOT EXISTS "cli_schema".checkpoints' in printed.stdout
    applied = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", "cli_schema"])
    assert applied.exit_code == 0, applied.output
    assert "checkpoints: applied 1" in applied.stdout
    again = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", "cli_schema"])
    assert "checkpoints: up to date" in again.stdout
    bad = runner.invoke(app, ["migrate", "--dsn", dsn, "--schema", "Bad-Name"])
    assert bad.exit_code == 1 and "not a plain identifier" in bad.output
