"""Small traps of the command line (issue 18): commands create nothing they do not find,
and ``doctor`` is healthy on a database set up as the README says.

Before: every command but ``backup`` ran ``saver.setup()``, so ``haive-lg threads
--schema typo`` created the schema and all its tables and exited 0 with an empty
table; ``doctor`` counted every component a database never used (the store, after
``saver.setup()``) as "migrations pending" and exited 3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo
from typer.testing import CliRunner

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.errors import MigrationError
from haive_langgraph.ops import check_schema, migrate_all
from tests.conftest import create_database, drop_database

runner = CliRunner()

# Commands that only read, then commands that write into tables they need: none of
# them may create a schema or a table.
READING = [
    ["threads"],
    ["history", "t1"],
    ["show", "t1"],
    ["diff", "t1", "t1"],
    ["find", "t1"],
    ["branches", "t1"],
    ["keys", "status"],
    ["audit"],
    ["audit", "status"],
]
WRITING = [
    ["tag", "t1", "x"],
    ["untag", "t1", "x"],
    ["branch", "t1", "b"],
    ["restore", "t1@1ef00000-0000-6000-8000-000000000000"],
    ["prune", "--max-checkpoints", "3", "--dry-run"],
    ["audit", "prune"],
    ["audit", "disable"],
]
SECRET = "hunter2-not-shown"


@pytest.fixture
def fresh(pg_server: str) -> Iterator[str]:
    """An empty database, its DSN carrying a password (the test server does not ask)."""
    url = create_database(pg_server, "haive_traps")
    try:
        yield conninfo.make_conninfo(url, password=SECRET)
    finally:
        drop_database(pg_server, url)


def created(dsn: str) -> list[str]:
    """Schemas beside PostgreSQL's own and ``public``, and tables outside the catalogs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', 'public') ORDER BY 1"
        ).fetchall()
        tables = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in schemas + tables]


def run(dsn: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [*args, "--dsn", dsn], env={"COLUMNS": "300", **(env or {})})


def dbname(dsn: str) -> str:
    return str(conninfo.conninfo_to_dict(dsn)["dbname"])


@pytest.mark.parametrize("args", READING + WRITING, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("schema", [None, "mistyped"])
def test_a_command_on_a_missing_schema_exits_1_and_creates_nothing(
    fresh: str, args: list[str], schema: str | None
) -> None:
    result = run(fresh, *args, *(["--schema", schema] if schema else []))
    assert result.exit_code == 1, (result.stdout, result.stderr)
    message = " ".join(result.stderr.split())
    target = schema or "haive"
    assert f"schema {target!r} does not exist in database {dbname(fresh)!r}" in message
    assert f"haive-lg migrate --schema {target}" in message
    assert SECRET not in result.stdout + result.stderr
    assert created(fresh) == []


def test_keys_status_with_keys_creates_no_key_table(fresh: str) -> None:
    # With keys set, the tenant-key table used to be created by `keys status`.
    migrate_all(fresh)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("DROP TABLE haive.tenant_keys, haive.key_rotation")
        conn.execute("DELETE FROM haive.haive_migrations WHERE component = 'keys'")
    before = created(fresh)
    keys = "k1:" + "A" * 43 + "="
    result = run(fresh, "keys", "status", "--json", env={"HAIVE_ENCRYPTION_KEYS": keys})
    # No keys tables: no tenant keys; the status of the other tables is still reported.
    assert result.exit_code == 0, result.stderr
    assert "blobs" in json.loads(result.stdout)["plaintext"]
    assert created(fresh) == before


def test_a_schema_without_our_tables_or_behind_this_code_is_named(fresh: str) -> None:
    result = run(fresh, "threads", "--schema", "public")  # exists, holds nothing of ours
    assert result.exit_code == 1
    assert "schema 'public' in database" in result.stderr
    assert "holds no haive-langgraph tables" in " ".join(result.stderr.split())
    migrate_all(fresh)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM haive.haive_migrations WHERE component = 'checkpoints' AND version = 2"
        )
    result = run(fresh, "history", "t1")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "the checkpoints tables in schema 'haive'" in message
    assert "at version 1, this haive-langgraph needs 2" in message
    with pytest.raises(MigrationError, match="at version 1"):
        check_schema(fresh, needs=["checkpoints"])
    assert check_schema(fresh, needs=["store"]).versions["store"] == (2, 2)


def test_the_commands_run_on_a_migrated_schema(fresh: str) -> None:
    with PostgresCheckpointer.from_conn_string(fresh) as saver:
        saver.setup()  # the README's way: the checkpoint tables only
    before = created(fresh)
    for args in (["threads", "--json"], ["find", "t1", "--json"], ["branches", "t1", "--json"]):
        result = run(fresh, *args)
        assert result.exit_code == 0, (args, result.stderr)
        assert json.loads(result.stdout) == []
    result = run(fresh, "history", "t1")
    assert result.exit_code == 1 and "thread 't1' has no checkpoints" in result.stderr
    result = run(fresh, "audit", "status")  # reads, needs no audit table
    assert result.exit_code == 0 and "auditing is off" in result.stdout
    result = run(fresh, "audit")  # the log itself is not set up: say so
    assert result.exit_code == 1 and "the audit tables are not set up" in result.stderr
    assert created(fresh) == before


# -- doctor -----------------------------------------------------------------------------


@pytest.mark.parametrize("setup", ["saver.setup()", "haive-lg migrate"])
def test_doctor_is_healthy_on_a_database_set_up_as_the_readme_says(fresh: str, setup: str) -> None:
    if setup == "saver.setup()":
        with PostgresCheckpointer.from_conn_string(fresh) as saver:
            saver.setup()
    else:
        result = run(fresh, "migrate")
        assert result.exit_code == 0, result.stderr
    result = run(fresh, "doctor", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["findings"]
    assert report["healthy"] is True
    assert {f["severity"] for f in report["findings"]} <= {"info"}


def test_doctor_still_reports_a_component_left_behind(fresh: str) -> None:
    migrate_all(fresh)
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("DELETE FROM haive.haive_migrations WHERE component = 'store' AND version = 2")
    result = run(fresh, "doctor", "--json")
    assert result.exit_code == 3
    (pending,) = [f for f in json.loads(result.stdout)["findings"] if f["severity"] != "info"]
    assert pending["code"] == "migrations-pending" and pending["object"] == "store"
