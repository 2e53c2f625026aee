"""The catalog and statistics queries of :mod:`haive_langgraph.ops.doctor` (read only)."""

SIZES = """
SELECT c.relname::text,
       pg_total_relation_size(c.oid),
       pg_relation_size(c.oid),
       pg_indexes_size(c.oid),
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),
       coalesce(s.n_live_tup, greatest(c.reltuples, 0)::bigint),
       coalesce(s.n_dead_tup, 0),
       coalesce(c.reloptions::text[], '{}') @> ARRAY['autovacuum_enabled=false']
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 2 DESC, 1
"""

# Partitions report under their parent.
PARTITION_SIZES = """
SELECT p.relname::text, sum(pg_total_relation_size(c.oid))::bigint,
       sum(pg_relation_size(c.oid))::bigint, sum(pg_indexes_size(c.oid))::bigint,
       sum(coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0))::bigint,
       sum(coalesce(s.n_live_tup, 0))::bigint, sum(coalesce(s.n_dead_tup, 0))::bigint
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_class AS p ON p.oid = i.inhparent
JOIN pg_namespace AS n ON n.oid = p.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE n.nspname = %s
GROUP BY p.relname
"""

INVALID_INDEXES = """
SELECT ic.relname::text, t.relname::text, pg_get_indexdef(i.indexrelid), i.indisready
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
WHERE n.nspname = %s AND NOT i.indisvalid
ORDER BY 1
"""

UNUSED_INDEXES = """
SELECT s.indexrelname::text, s.relname::text, pg_relation_size(s.indexrelid)
FROM pg_stat_user_indexes AS s
JOIN pg_index AS i ON i.indexrelid = s.indexrelid
WHERE s.schemaname = %s AND s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
  AND pg_relation_size(s.indexrelid) >= %s
ORDER BY 3 DESC
"""

SERVER = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_database(), inet_server_port(),
       current_setting('autovacuum'),
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector'),
       (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'),
       current_setting('shared_preload_libraries'),
       current_setting('hnsw.ef_search', true)
"""

HNSW_INDEXES = """
SELECT ic.relname::text, t.relname::text
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
JOIN pg_am AS am ON am.oid = ic.relam
WHERE n.nspname = %s AND am.amname = 'hnsw'
ORDER BY 1
"""

DOC_INDEXES = """
SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s
"""

# The slowest statements naming a table of the schema (quoted or not).
SLOW_STATEMENTS = """
SELECT query, calls, mean_exec_time, total_exec_time, rows
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (query LIKE '%%' || %s || '.%%' OR query LIKE '%%"' || %s || '".%%')
ORDER BY mean_exec_time DESC LIMIT 10
"""

# The 50 largest tenants of one table (formatted with the table's identifier).
TENANT_SIZES = (
    "SELECT tenant_id, count(*), sum(pg_column_size(t.*))::bigint FROM {} AS t "
    "GROUP BY tenant_id ORDER BY 3 DESC LIMIT 50"
)
