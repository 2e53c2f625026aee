"""The store's maintenance statements: TTL sweeps, the ANN index (pending
vectors, bulk rebuilds under a lock, validity), tenant erasure and quotas.
Named through :mod:`haive_langgraph.stores._sql` (``S.SWEEP``), which
re-exports them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haive_langgraph.stores._config import VectorIndexSpec

# -- maintenance -------------------------------------------------------------------------

SWEEP = """
WITH doomed AS (
    SELECT s.tenant_id, s.namespace, s.key
    FROM {schema}.store_items AS s
    WHERE s.expires_at <= now() {tenant}
    ORDER BY s.expires_at
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM {schema}.store_items AS s
    USING doomed AS d
    WHERE s.tenant_id = d.tenant_id AND s.namespace = d.namespace AND s.key = d.key
    RETURNING 1
)
SELECT count(*) FROM gone
"""

INDEX_PENDING = """
WITH batch AS (
    SELECT v.tenant_id, v.namespace, v.key, v.field
    FROM {schema}.store_vectors AS v
    WHERE NOT v.indexed{tenant}
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE {schema}.store_vectors AS v SET indexed = true
    FROM batch AS b
    WHERE v.tenant_id = b.tenant_id AND v.namespace = b.namespace AND v.key = b.key
      AND v.field = b.field
    RETURNING 1
)
SELECT count(*) FROM done
"""

COUNT_VECTORS = """
SELECT count(*) FILTER (WHERE NOT indexed), count(*) FROM {schema}.store_vectors
"""

# Session-level lock (two keys: our class, hash of the schema) held by a bulk
# index rebuild or repair, so two processes never build at once.
LOCK_CLASS_REBUILD = 0x48560003
TRY_REBUILD_LOCK = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
RELEASE_REBUILD_LOCK = "SELECT pg_advisory_unlock(%s, hashtext(%s))"

# The build's session settings: its memory, and no statement or lock timeout.
# The connection's timeouts (PersistenceConfig) are meant for application
# statements; one firing part-way through CREATE INDEX CONCURRENTLY (a build
# took 37 s at 100,000 vectors, and it first waits for older transactions)
# leaves an invalid index behind, and the next repair would fail the same way.
SET_BUILD_SETTINGS = """
SELECT set_config('maintenance_work_mem', %s, false),
       set_config('statement_timeout', '0', false),
       set_config('lock_timeout', '0', false)
"""
RESET_BUILD_SETTINGS = (
    "RESET maintenance_work_mem",
    "RESET statement_timeout",
    "RESET lock_timeout",
)

ANN_INDEX = "store_vectors_ann_idx"

# Whether the ANN index is usable: no row when it is missing (a rebuild
# stopped between its DROP and its CREATE), indisvalid false when a CREATE
# INDEX CONCURRENTLY did not finish (cancelled, timed out, its session or the
# server gone). The planner never uses an invalid index, and once it is
# "ready" every write still maintains it. Found by name in the store's schema.
ANN_INDEX_VALID = """
SELECT i.indisvalid
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""
DROP_ANN_INDEX = f"DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.{ANN_INDEX}"
MARK_ALL_INDEXED = "UPDATE {schema}.store_vectors SET indexed = true WHERE NOT indexed"


def ann_index_ddl(spec: VectorIndexSpec, *, concurrently: bool) -> str:
    """The ANN index of ``store_vectors`` (``{schema}`` placeholder)."""
    params = ", ".join(f"{k} = {int(v)}" for k, v in spec.ddl_params().items())
    how = "CONCURRENTLY " if concurrently else ""
    return f"""
            CREATE INDEX {how}IF NOT EXISTS {ANN_INDEX}
                ON {{schema}}.store_vectors USING {spec.kind} (embedding {spec.opclass})
                WITH ({params}) WHERE indexed
            """


TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"

DELETE_TENANT_ROWS = """
WITH gone AS (DELETE FROM {table} WHERE tenant_id = %(t)s RETURNING 1)
SELECT count(*) FROM gone
"""

# -- quotas ------------------------------------------------------------------------------

# Taking SHARE ROW EXCLUSIVE on the items blocks writers (not readers) while
# the tenant's usage is counted, so no write slips between count and row.
LOCK_ITEMS = "LOCK TABLE {schema}.store_items IN SHARE ROW EXCLUSIVE MODE"

SET_QUOTA = """
INSERT INTO {schema}.store_tenants AS t (tenant_id, max_items, max_bytes, max_writes_per_minute, items, bytes)
SELECT %(t)s, %(max_items)s, %(max_bytes)s, %(max_writes)s, count(*), coalesce(sum(octet_length(s.value)), 0)
FROM {schema}.store_items AS s WHERE s.tenant_id = %(t)s
ON CONFLICT (tenant_id) DO UPDATE SET
    max_items = excluded.max_items,
    max_bytes = excluded.max_bytes,
    max_writes_per_minute = excluded.max_writes_per_minute,
    items = excluded.items,
    bytes = excluded.bytes
"""

DROP_QUOTA = "DELETE FROM {schema}.store_tenants WHERE tenant_id = %(t)s"

GET_USAGE = """
SELECT t.max_items, t.max_bytes, t.max_writes_per_minute, t.items, t.bytes,
       CASE WHEN t.window_start > now() - interval '1 minute' THEN t.window_writes ELSE 0 END
FROM {schema}.store_tenants AS t WHERE t.tenant_id = %(t)s
"""

COUNT_USAGE = """
SELECT count(*), coalesce(sum(octet_length(s.value)), 0)
FROM {schema}.store_items AS s WHERE s.tenant_id = %(t)s
"""
