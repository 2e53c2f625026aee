"""Schema and statements of the cache: the versions that make Redis entries checkable.

A Redis entry is served only while PostgreSQL still holds the version its
thread (or store item) had when the entry was read. Every write through a
cache wrapper gives the thread or item a new version, a random UUID, so a
version never comes back: not after a delete and re-create, not after a
crash of this ``UNLOGGED`` table (it comes back empty and versions are
created afresh), not in another database. Rows name their thread or item by
a hash, never in clear.
"""

from __future__ import annotations

from psycopg import sql

from haive_langgraph.db._features import Table
from haive_langgraph.db._migrations import Component, Migration
from haive_langgraph.db._render import render_sql
from haive_langgraph.db._tenancy import tenant_policy_statements

VERSIONS_TABLE = "cache_versions"

MIGRATIONS = (
    Migration(
        "cache versions: what a Redis entry is checked against",
        (
            f"""
            CREATE UNLOGGED TABLE IF NOT EXISTS {{schema}}.{VERSIONS_TABLE} (
                tenant_id text COLLATE "C" NOT NULL DEFAULT '',
                entry     bytea NOT NULL,
                version   uuid NOT NULL,
                PRIMARY KEY (tenant_id, entry)
            )
            """,
            *tenant_policy_statements(VERSIONS_TABLE),
        ),
    ),
)

# Registered in ``ops.all_components()``: ``haive-lg migrate`` creates the table
# as a wrapper's setup() does (the same migration, so either order converges).
# Rows keyed by tenant (its id and the hashes of its threads and items): tenant
# erasure deletes them, which also makes the erased tenant's Redis entries
# misses. State of the cache, not data: backups leave it out, so no Redis entry
# is ever checked against versions taken from an archive.
COMPONENT = Component(
    name="cache", migrations=MIGRATIONS, tables=(Table(VERSIONS_TABLE, archived=False),)
)

# The database a connection reaches: its cluster (initdb's random system
# identifier), then the database's oid and name (a database dropped and
# created again under the same name is another one).
IDENTITY = """
SELECT (SELECT system_identifier FROM pg_control_system())::text, d.oid::text, d.datname
FROM pg_database AS d
WHERE d.datname = current_database()
"""

# Where pg_control_system() is not granted: the server's address as it sees it.
IDENTITY_FALLBACK = """
SELECT coalesce(host(inet_server_addr()), 'socket') || ':' || coalesce(inet_server_port(), 0),
       d.oid::text, d.datname
FROM pg_database AS d
WHERE d.datname = current_database()
"""

VERSION = """
SELECT version FROM {schema}.cache_versions
WHERE tenant_id = %(t)s AND entry = %(e)s
"""

CREATE_VERSION = """
INSERT INTO {schema}.cache_versions (tenant_id, entry, version)
VALUES (%(t)s, %(e)s, gen_random_uuid())
ON CONFLICT (tenant_id, entry) DO NOTHING
RETURNING version
"""

BUMP = """
INSERT INTO {schema}.cache_versions AS v (tenant_id, entry, version)
SELECT %(t)s, e, gen_random_uuid()
FROM unnest(%(es)s::bytea[]) AS e
ON CONFLICT (tenant_id, entry) DO UPDATE SET version = excluded.version
RETURNING v.entry, v.version
"""

BUMP_TENANT = """
UPDATE {schema}.cache_versions SET version = gen_random_uuid()
WHERE tenant_id = %(t)s
"""


def q(template: str, schema: str) -> sql.SQL:
    """Fill ``{schema}`` in a statement template (the db renderer, cached)."""
    return render_sql(template, schema)
