"""Schema and statements of query analysis: snapshots of ``pg_stat_statements``.

``pg_stat_statements`` is cumulative since its last reset; a time window
needs two readings. A snapshot records, for each of our statements (their
text names a table of the schema), the counters at that moment: calls,
total time, the sum of squared times (``calls * (stddev² + mean²)``, so that
the variance of any window is the difference of two snapshots), min, max and
rows. The statistics view lives in the schema its extension was created in
(``{pgss}``, quoted); a server without it never runs these statements.
"""

from __future__ import annotations

from haive_langgraph.db._features import Table
from haive_langgraph.db._migrations import Component, Migration

SNAPSHOTS = "query_snapshots"
STATEMENTS = "query_snapshot_statements"

MIGRATIONS = (
    Migration(
        "query statistics snapshots, and generic plans of statements",
        (
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{SNAPSHOTS} (
                id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                taken_at    timestamptz NOT NULL DEFAULT now(),
                stats_reset timestamptz
            )
            """,
            f"CREATE INDEX IF NOT EXISTS {SNAPSHOTS}_taken_at ON {{schema}}.{SNAPSHOTS} (taken_at)",
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{STATEMENTS} (
                snapshot_id bigint NOT NULL
                    REFERENCES {{schema}}.{SNAPSHOTS} (id) ON DELETE CASCADE,
                userid      bigint NOT NULL,
                queryid     bigint NOT NULL,
                query       text NOT NULL,
                calls       bigint NOT NULL,
                total_ms    double precision NOT NULL,
                sumsq_ms    double precision NOT NULL,
                min_ms      double precision NOT NULL,
                max_ms      double precision NOT NULL,
                rows        bigint NOT NULL,
                PRIMARY KEY (snapshot_id, userid, queryid)
            )
            """,
            # EXPLAIN of a normalised statement ($1, $2 ... unbound): the
            # generic plan (PostgreSQL 16+), the one a prepared statement runs;
            # an error comes back as {"error": ...} instead of ending the run.
            """
            CREATE OR REPLACE FUNCTION {schema}.haive_generic_plan(statement text)
            RETURNS jsonb LANGUAGE plpgsql AS $$
            DECLARE
                plan jsonb;
            BEGIN
                EXECUTE 'EXPLAIN (GENERIC_PLAN, VERBOSE, FORMAT JSON) ' || statement INTO plan;
                RETURN plan;
            EXCEPTION WHEN OTHERS THEN
                RETURN jsonb_build_object('error', SQLERRM);
            END
            $$
            """,
        ),
    ),
)

# Statistics of the server, not data of tenants: no tenant policy, not archived.
COMPONENT = Component(
    name="query_stats",
    migrations=MIGRATIONS,
    tables=(
        Table(SNAPSHOTS, tenant=False, archived=False),
        Table(STATEMENTS, tenant=False, archived=False),
    ),
)

# What the server offers; readable without pg_stat_statements loaded.
SERVER = """
SELECT current_setting('shared_preload_libraries'),
       current_setting('server_version_num')::int,
       (SELECT extnamespace::regnamespace::text FROM pg_extension
        WHERE extname = 'pg_stat_statements'),
       (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'hypopg'),
       EXISTS (SELECT FROM pg_available_extensions WHERE name = 'hypopg'),
       to_regclass(%(snapshots)s) IS NOT NULL,
       now()
"""

# Our statements (their text names the schema) in this database, summed over
# top-level and nested entries of the same user and query id.
STATS = """
SELECT s.userid::bigint, s.queryid, min(s.query), sum(s.calls)::bigint,
       sum(s.total_exec_time),
       sum(s.calls * (s.stddev_exec_time ^ 2 + s.mean_exec_time ^ 2)),
       min(s.min_exec_time), max(s.max_exec_time), sum(s.rows)::bigint
FROM {pgss}.pg_stat_statements AS s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.queryid IS NOT NULL
  AND (s.query LIKE %(plain)s OR s.query LIKE %(quoted)s)
GROUP BY s.userid, s.queryid
"""

STATS_RESET = "SELECT stats_reset FROM {pgss}.pg_stat_statements_info"

NEW_SNAPSHOT = """
INSERT INTO {schema}.query_snapshots (stats_reset)
SELECT stats_reset FROM {pgss}.pg_stat_statements_info
RETURNING id, taken_at
"""

SNAPSHOT_STATEMENTS = (
    """
INSERT INTO {schema}.query_snapshot_statements
    (snapshot_id, userid, queryid, query, calls, total_ms, sumsq_ms, min_ms, max_ms, rows)
SELECT %(id)s, s.*
FROM ("""
    + STATS
    + ") AS s"
)

PRUNE = "DELETE FROM {schema}.query_snapshots WHERE taken_at < now() - %(keep)s"

# The newest snapshot at or before the window's start, else the oldest in it.
BASELINE = """
(SELECT id, taken_at, stats_reset FROM {schema}.query_snapshots
 WHERE taken_at <= now() - %(since)s ORDER BY taken_at DESC LIMIT 1)
UNION ALL
(SELECT id, taken_at, stats_reset FROM {schema}.query_snapshots
 WHERE taken_at > now() - %(since)s ORDER BY taken_at LIMIT 1)
"""

BASELINE_STATEMENTS = """
SELECT userid, queryid, query, calls, total_ms, sumsq_ms, min_ms, max_ms, rows
FROM {schema}.query_snapshot_statements
WHERE snapshot_id = %(id)s
"""

GENERIC_PLAN = "SELECT {schema}.haive_generic_plan(%(statement)s)"

# Size of the tables the plans scan, and their indexes.
TABLE_SIZES = """
SELECT c.relname::text, greatest(c.reltuples, 0)::bigint
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
"""

INDEX_DEFINITIONS = """
SELECT tablename::text, indexdef FROM pg_indexes WHERE schemaname = %(schema)s
"""

# The most common top-level keys of a JSON column, in a sample of the table:
# representative keys where a statement passes its key as a parameter.
COMMON_KEYS = """
SELECT k FROM (
    SELECT jsonb_object_keys({column}) AS k
    FROM {table} TABLESAMPLE SYSTEM (10)
    WHERE jsonb_typeof({column}) = 'object'
) AS keys
GROUP BY k ORDER BY count(*) DESC, k LIMIT 3
"""

READ_ONLY = "SET TRANSACTION READ ONLY"

HYPOTHETICAL_INDEX = "SELECT indexrelid, indexname FROM {hypopg}.hypopg_create_index(%(ddl)s)"

HYPOTHETICAL_RESET = "SELECT {hypopg}.hypopg_reset()"
