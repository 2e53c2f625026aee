"""The cache's ``cache_versions`` table is a registered component (issue 18).

Before: the table was created only by a cache wrapper's ``setup()`` or first
use, never by ``haive-lg migrate`` (a deployment whose application role may not
``CREATE`` lost the Redis level), ``check_schema`` did not know the component,
and a restore did not create it. Now ``all_components()`` lists ``cache`` with
the very migration the wrapper runs (``CREATE UNLOGGED TABLE IF NOT EXISTS``),
so databases where the cache already made it converge; backups leave its rows
out (random versions, state of the cache: restored into a new database, the
table starts empty, never with an archive's versions); tenant erasure must delete a
tenant's rows (they carry its id and the hashes of its threads and items).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.db._driver import run
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.ops import check_schema, migrate_all
from haive_langgraph.ops._schema import our_tables
from haive_langgraph.ops.backup import backup, restore
from haive_langgraph.ops.cache import _sql as CACHE
from haive_langgraph.stores import PostgresStore
from tests.conftest import create_database, drop_database
from tests.ops.test_cache import converse, layer_for, prefix, redis_url

__all__ = ["prefix", "redis_url"]  # fixtures used here

runner = CliRunner()


@pytest.fixture
def fresh(pg_server: str) -> Iterator[str]:
    url = create_database(pg_server, "haive_cachecomp")
    try:
        yield url
    finally:
        drop_database(pg_server, url)


def one(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def persistence(dsn: str) -> str | None:
    """``relpersistence`` of haive.cache_versions (``'u'``: unlogged), None if absent."""
    return one(
        dsn,
        "SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'haive' AND c.relname = 'cache_versions'",
    )


def versions_of(dsn: str, tenant: str) -> int:
    return int(one(dsn, "SELECT count(*) FROM haive.cache_versions WHERE tenant_id = %s", tenant))


def cache_writes(dsn: str, url: str, prefix: str, tenant: str) -> None:
    """Conversations through a Redis cache layer: the cache records their versions."""
    layer = layer_for(url, prefix)
    try:
        with PostgresCheckpointer.from_conn_string(dsn, tenant_id=tenant) as saver:
            cached = layer.wrap(saver)
            cached.setup()
            converse(cached, f"{tenant}-t1", 2)
    finally:
        layer.close()


def test_migrate_creates_the_table_and_check_schema_knows_it(fresh: str) -> None:
    result = runner.invoke(app, ["migrate", "--dsn", fresh])
    assert result.exit_code == 0, result.stderr
    assert persistence(fresh) == "u"  # the definition the cache creates: UNLOGGED
    assert check_schema(fresh, needs=["cache"]).versions["cache"] == (1, 1)
    script = runner.invoke(app, ["migrate", "--sql", "--dsn", fresh])
    assert "cache_versions" in script.stdout
    assert one(
        fresh, "SELECT relrowsecurity FROM pg_class WHERE oid = 'haive.cache_versions'::regclass"
    )


@pytest.mark.parametrize("recorded", [True, False], ids=["made-by-the-cache", "unrecorded"])
def test_a_database_where_the_cache_made_the_table_converges(fresh: str, recorded: bool) -> None:
    with psycopg.connect(fresh, autocommit=True) as conn, conn.transaction():
        run(conn, migrate_op([CACHE.COMPONENT], "haive"))  # what the wrapper's setup() runs
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("INSERT INTO haive.cache_versions VALUES ('acme', '\\x01', gen_random_uuid())")
        if not recorded:  # a table from elsewhere, with no migration record
            conn.execute("DELETE FROM haive.haive_migrations WHERE component = 'cache'")
    applied = migrate_all(fresh)
    assert applied["cache"] == ([] if recorded else [1])
    assert versions_of(fresh, "acme") == 1  # its rows are kept
    assert check_schema(fresh, needs=["cache"]).versions["cache"] == (1, 1)
    assert migrate_all(fresh)["cache"] == []


def test_backups_leave_the_versions_out_and_a_restore_starts_empty(
    fresh: str, pg_server: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    migrate_all(fresh)
    cache_writes(fresh, redis_url, prefix, "acme")
    assert versions_of(fresh, "acme") > 0
    assert CACHE.VERSIONS_TABLE not in our_tables()
    report = backup(tmp_path / "full.tar", fresh)
    assert CACHE.VERSIONS_TABLE not in report.tables and "checkpoints" in report.tables
    other = create_database(pg_server, "haive_cachecomp")
    try:
        restore(tmp_path / "full.tar", other)
        assert persistence(other) == "u"  # created by the migrations, empty
        assert versions_of(other, "acme") == 0
    finally:
        drop_database(pg_server, other)


def test_tenant_erasure_deletes_the_tenants_versions(
    fresh: str, redis_url: str, prefix: str
) -> None:
    migrate_all(fresh)
    cache_writes(fresh, redis_url, prefix, "acme")
    cache_writes(fresh, redis_url, prefix, "other")
    assert versions_of(fresh, "acme") > 0
    with PostgresStore.from_conn_string(fresh) as store:
        erased = store.delete_tenant("acme")
    assert versions_of(fresh, "other") > 0
    assert versions_of(fresh, "acme") == 0, erased
