"""The one registry of tables: every table of ours has an entry, every entry a table.

Each feature declares its tables once, in its component (``db/_features.py``);
migration, tenant erasure, key rotation, backup and Supabase iterate that list.
A table a feature adds without declaring it would be forgotten by all of them:
these tests fail first.
"""

from __future__ import annotations

import psycopg
import pytest

from haive_langgraph import stores
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._migrations import MIGRATIONS_TABLE, created_tables, migrate_op
from haive_langgraph.ops import all_components
from haive_langgraph.ops._migrate import archived_tables, framed_tables, tenant_tables
from tests.stores.conftest import index_config

SCHEMA = "registry"


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    """Every component migrated, and the store set up with an index (its vector table)."""
    source = ConnectionSource(dsn)
    try:
        source.run(lambda: migrate_op(all_components(), SCHEMA), transaction=True)
    finally:
        source.close()
    with stores.PostgresStore.from_conn_string(dsn, index=index_config(), schema=SCHEMA) as store:
        store.setup()
    return dsn


def columns(dsn: str) -> dict[str, list[str]]:
    """The schema's tables (partitions aside) and their columns, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY c.relname, a.attnum",
            (SCHEMA,),
        ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def test_every_component_declares_every_table_its_migrations_create() -> None:
    for component in all_components():
        created = created_tables(s for m in component.migrations for s in m.statements)
        assert created == {t.name for t in component.tables if t.migrated}, component.name


def test_every_table_in_the_schema_has_an_entry_and_every_entry_a_table(migrated: str) -> None:
    live = set(columns(migrated)) - {MIGRATIONS_TABLE}
    declared = [t.name for c in all_components() for t in c.tables]
    assert len(declared) == len(set(declared)), "a table is declared twice"
    assert sorted(live - set(declared)) == [], "tables without a registry entry"
    assert sorted(set(declared) - live) == [], "registry entries without a table"


def test_tenant_tables_lead_with_tenant_id_under_row_level_security(migrated: str) -> None:
    live = columns(migrated)
    with psycopg.connect(migrated) as conn:
        secured = dict(
            conn.execute(
                "SELECT c.relname, c.relrowsecurity FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                (SCHEMA,),
            ).fetchall()
        )
    for name in tenant_tables():
        assert live[name][0] == "tenant_id", name
        assert secured[name], f"{name} is a tenant table without row-level security"
    # and no table under row-level security is left out of erasure and Supabase's policies
    assert {n for n, on in secured.items() if on} <= set(tenant_tables())


def test_framed_entries_name_existing_columns(migrated: str) -> None:
    live = columns(migrated)
    assert framed_tables(), "no framed column?"
    for entry in framed_tables():
        needed = [c for c, _ in entry.key_columns] + [entry.column, *entry.extra_columns]
        if entry.copy_column is not None:
            needed.append(entry.copy_column)
            for other in entry.copy_tables:
                assert entry.copy_column in live[other], (entry.key, other)
        assert set(needed) <= set(live[entry.name]), (
            entry.key,
            set(needed) - set(live[entry.name]),
        )
    keys = [e.key for e in framed_tables()]
    assert len(keys) == len(set(keys)), "two framed entries share a progress key"


def test_backups_cover_every_table_but_the_cache_state(migrated: str) -> None:
    live = set(columns(migrated)) - {MIGRATIONS_TABLE}
    # The cache's versions and the server's statement statistics are state, not data.
    assert live - archived_tables() == {
        "cache_versions",
        "query_snapshots",
        "query_snapshot_statements",
    }
