"""``doctor`` and ``backup create`` on a schema that is not there (issue 18, small traps).

Before: ``haive-lg doctor`` on a missing schema (a mistyped ``--schema`` or
``--dsn``) printed a "no-tables" warning and exited 3, as if it had examined a
database; ``haive-lg backup create`` exited 1 with a message naming the schema
but not the database, so a wrong ``--dsn`` could not be told from a wrong
``--schema``. Now both exit 1 with the message every command that creates
nothing gives (``check_schema``): schema and database named, never the
password, and ``haive-lg migrate`` suggested; nothing is created.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import conninfo

from haive_langgraph.errors import MigrationError
from haive_langgraph.ops.doctor import diagnose
from tests.conftest import create_database, drop_database
from tests.security.test_traps_cli import SECRET, created, dbname, run


@pytest.fixture
def fresh(pg_server: str) -> Iterator[str]:
    """An empty database, its DSN carrying a password (the test server does not ask)."""
    url = create_database(pg_server, "haive_traps")
    try:
        yield conninfo.make_conninfo(url, password=SECRET)
    finally:
        drop_database(pg_server, url)


def _says_missing(result: Any, dsn: str, schema: str) -> None:
    out = result.stdout + result.stderr
    assert result.exit_code == 1, out
    message = " ".join(result.stderr.split())
    assert f"schema {schema!r} does not exist in database {dbname(dsn)!r}" in message
    assert f"haive-lg migrate --schema {schema}" in message
    assert SECRET not in out


@pytest.mark.parametrize("schema", [None, "mistyped"])
def test_doctor_on_a_missing_schema_exits_1_naming_it(fresh: str, schema: str | None) -> None:
    for extra in ([], ["--json"]):
        result = run(fresh, "doctor", *extra, *(["--schema", schema] if schema else []))
        _says_missing(result, fresh, schema or "haive")
    assert created(fresh) == []


def test_doctor_on_a_schema_without_our_tables_exits_1(fresh: str) -> None:
    result = run(fresh, "doctor", "--schema", "public")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert f"schema 'public' in database {dbname(fresh)!r}" in message
    assert "holds no haive-langgraph tables" in message
    assert created(fresh) == []


def test_diagnose_raises_the_same_error(fresh: str) -> None:
    with pytest.raises(MigrationError, match="schema 'mistyped' does not exist in database"):
        diagnose(fresh, schema="mistyped")
    assert created(fresh) == []


@pytest.mark.parametrize("schema", [None, "mistyped"])
def test_backup_create_on_a_missing_schema_names_schema_and_database(
    fresh: str, schema: str | None, tmp_path: Path
) -> None:
    archive = tmp_path / "b.haive"
    result = run(fresh, "backup", "create", str(archive), *(["--schema", schema] if schema else []))
    _says_missing(result, fresh, schema or "haive")
    assert not archive.exists()
    assert created(fresh) == []
