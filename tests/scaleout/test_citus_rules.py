"""The live schema stays ready for distribution by tenant (Citus).

After every component's migrations (``all_components()``: checkpoints, store,
keys, conversations ... whatever is registered when this runs), the catalog
is checked against the rules ``docs/scaling.md`` relies on:

* every table has a primary key;
* tenant tables: the primary key, every unique constraint and unique index
  (partial ones included) and every exclusion constraint start with
  ``tenant_id``, the distribution column;
* a foreign key between tenant tables pairs ``tenant_id`` with
  ``tenant_id``; a reference table never points at a tenant table;
* reference tables (small, global, no ``tenant_id``) are the ones listed in
  :data:`REFERENCE_TABLES`, each named in ``docs/scaling.md``;
* ``docs/scaling.md`` distributes every tenant table.

A later migration that breaks a rule fails here, with the violations listed
by table.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from haive_langgraph.ops import migrate_all

DISTRIBUTION_COLUMN = "tenant_id"

# Global tables, replicated to every node rather than distributed, and why.
REFERENCE_TABLES = {
    "haive_migrations": "the migration ledger; stays on the coordinator",
    "query_snapshots": "snapshots of the coordinator's pg_stat_statements; stay on it",
    "query_snapshot_statements": "their statements' counters; stay on the coordinator",
    "key_rotation": "progress of a key rotation, per table",
    "store_vector_config": "the store's vector index settings",
    "audit_settings": "whether auditing is on, for the deployment (one row)",
}

# Of those, the ones that stay local tables on the coordinator (not replicated).
COORDINATOR_TABLES = {"haive_migrations", "query_snapshots", "query_snapshot_statements"}

SCALING_DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"

TABLES = """
SELECT c.oid, c.relname::text,
       EXISTS (SELECT 1 FROM pg_attribute AS a
               WHERE a.attrelid = c.oid AND a.attname = %(column)s AND NOT a.attisdropped)
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 2
"""

# Unique and exclusion indexes (the primary key's too), with their columns in
# order; an expression column is reported as '<expr>'.
INDEXES = """
SELECT t.relname::text, i.relname::text, x.indisprimary, x.indisexclusion,
       array(SELECT coalesce(a.attname::text, '<expr>')
             FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_index AS x
JOIN pg_class AS t ON t.oid = x.indrelid
JOIN pg_class AS i ON i.oid = x.indexrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE n.nspname = %(schema)s AND NOT t.relispartition
  AND (x.indisunique OR x.indisexclusion)
ORDER BY 1, 2
"""

FOREIGN_KEYS = """
SELECT c.relname::text, con.conname::text, r.relname::text,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord),
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute AS a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_constraint AS con
JOIN pg_class AS c ON c.oid = con.conrelid
JOIN pg_class AS r ON r.oid = con.confrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND con.contype = 'f' AND NOT c.relispartition
ORDER BY 1, 2
"""


def violations(dsn: str, schema: str) -> dict[str, list[str]]:
    """Rule violations of the live schema, by table."""
    found: dict[str, list[str]] = defaultdict(list)
    params = {"schema": schema, "column": DISTRIBUTION_COLUMN}
    with psycopg.connect(dsn) as conn:
        tables = {name: has_tenant for _, name, has_tenant in conn.execute(TABLES, params)}
        indexes = conn.execute(INDEXES, params).fetchall()
        foreign_keys = conn.execute(FOREIGN_KEYS, params).fetchall()
    primary = {table for table, _, is_primary, _, _ in indexes if is_primary}
    for table, has_tenant in tables.items():
        if table not in primary:
            found[table].append("has no primary key")
        if table in REFERENCE_TABLES:
            if has_tenant:
                found[table].append(
                    f"is listed as a reference table but has {DISTRIBUTION_COLUMN}: distribute it"
                )
        elif not has_tenant:
            found[table].append(
                f"has no {DISTRIBUTION_COLUMN} column and is not a listed reference table"
            )
    for table, index, is_primary, is_exclusion, columns in indexes:
        if table in REFERENCE_TABLES:
            continue
        if not columns or columns[0] != DISTRIBUTION_COLUMN:
            what = (
                "primary key"
                if is_primary
                else ("exclusion constraint" if is_exclusion else "unique index")
            )
            found[table].append(
                f"{what} {index} ({', '.join(columns)}) does not start with {DISTRIBUTION_COLUMN}"
            )
    for table, name, target, columns, target_columns in foreign_keys:
        pairs = dict(zip(columns, target_columns, strict=True))
        if table in REFERENCE_TABLES:
            if target not in REFERENCE_TABLES:
                found[table].append(
                    f"reference table's foreign key {name} points at tenant table {target}"
                )
        elif target not in REFERENCE_TABLES and pairs.get(DISTRIBUTION_COLUMN) != (
            DISTRIBUTION_COLUMN
        ):
            found[table].append(
                f"foreign key {name} ({', '.join(columns)}) -> {target} "
                f"({', '.join(target_columns)}) does not pair {DISTRIBUTION_COLUMN} with "
                f"{DISTRIBUTION_COLUMN}"
            )
    return dict(found)


def report(found: dict[str, list[str]]) -> str:
    return "\n".join(
        f"{table}: {problem}" for table, problems in found.items() for problem in problems
    )


def tenant_tables(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(TABLES, {"schema": schema, "column": DISTRIBUTION_COLUMN}).fetchall()
    return [name for _, name, _ in rows if name not in REFERENCE_TABLES]


@pytest.mark.parametrize("partitions", [None, 4], ids=["plain", "partitioned"])
def test_the_live_schema_follows_the_distribution_rules(dsn: str, partitions: int | None) -> None:
    schema = f"citus_{uuid.uuid4().hex[:6]}"
    migrate_all(dsn, schema=schema, partitions=partitions)
    found = violations(dsn, schema)
    assert not found, "distribution rules broken:\n" + report(found)


def test_the_scaling_doc_distributes_every_tenant_table(dsn: str) -> None:
    schema = f"citus_{uuid.uuid4().hex[:6]}"
    migrate_all(dsn, schema=schema)
    doc = SCALING_DOC.read_text()
    distributed = set(re.findall(r"create_distributed_table\('haive\.(\w+)'", doc))
    reference = set(re.findall(r"create_reference_table\('haive\.(\w+)'", doc))
    missing = sorted(set(tenant_tables(dsn, schema)) - distributed)
    assert not missing, f"add create_distributed_table lines to docs/scaling.md for: {missing}"
    assert set(REFERENCE_TABLES) - COORDINATOR_TABLES <= reference
    for table in COORDINATOR_TABLES:
        assert f"haive.{table}" in doc, f"say in docs/scaling.md that {table} stays local"


def test_the_rules_catch_a_bad_table(dsn: str) -> None:
    schema = f"citus_bad_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL(
                """
                CREATE SCHEMA {s};
                CREATE TABLE {s}.parent (tenant_id text, id text, PRIMARY KEY (tenant_id, id));
                CREATE TABLE {s}.by_id (id text PRIMARY KEY, tenant_id text);
                CREATE TABLE {s}.child (
                    tenant_id text, id text, pid text, PRIMARY KEY (tenant_id, id),
                    UNIQUE (id),
                    FOREIGN KEY (pid, tenant_id) REFERENCES {s}.parent (id, tenant_id)
                );
                CREATE TABLE {s}.crossed (
                    tenant_id text, id text, PRIMARY KEY (tenant_id, id),
                    FOREIGN KEY (tenant_id, id) REFERENCES {s}.parent (id, tenant_id)
                );
                CREATE TABLE {s}.settings (name text);
                """
            ).format(s=psycopg.sql.Identifier(schema))
        )
    found = violations(dsn, schema)
    assert set(found) == {"by_id", "child", "crossed", "settings"}
    assert "primary key by_id_pkey (id) does not start with tenant_id" in found["by_id"]
    assert "unique index child_id_key (id) does not start with tenant_id" in found["child"]
    assert any("crossed_tenant_id_id_fkey" in p for p in found["crossed"])
    assert "has no primary key" in found["settings"]
