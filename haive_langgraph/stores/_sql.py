"""Schema, migrations and statements of the store.

Storage model (see ``docs/store.md``):

* ``store_items``: one row per item. The namespace is a ``text[]`` (segments
  compared exactly, bytewise); the value is a codec frame (``value``), and
  ``doc`` is the JSON document filters run on (the value itself, or the
  fields kept searchable when values are encrypted). ``expires_at`` is
  checked by every read, so an expired item is never returned, swept or not.
* ``store_vectors`` (created by ``setup()`` when an index is configured,
  since its type depends on the dimensions): one row per embedded field of an
  item, referencing the item (deleting an item deletes its vectors).
* ``store_tenants``: quotas and usage counters of tenants that have a quota,
  maintained by statement-level triggers, so limits hold for every writer.
* ``store_vector_config``: the vector index the schema was set up with.

Every table leads its primary key with ``tenant_id`` and is under the
row-level security policy of :mod:`haive_langgraph.db._tenancy`.
"""

from __future__ import annotations

from psycopg import sql

from haive_langgraph.db._features import FramedTable, Table
from haive_langgraph.db._migrations import Component, Migration
from haive_langgraph.db._tenancy import tenant_policy_statements
from haive_langgraph.stores._config import VectorIndexSpec
from haive_langgraph.stores._values import row_context

ITEMS = "store_items"
VECTORS = "store_vectors"
TENANTS = "store_tenants"
VECTOR_CONFIG = "store_vector_config"

# The usage trigger: per statement, per tenant with a quota row, the change in
# items, bytes and puts; then the limits, checked only for what grew.
USAGE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.haive_store_usage() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenants  text[];
    d_items  bigint[];
    d_bytes  bigint[];
    d_writes bigint[];
    r        record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.store_tenants) THEN
        RETURN NULL;
    END IF;
    -- Each branch reads only the transition tables its event has.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(x.tenant_id), array_agg(x.n), array_agg(x.b), array_agg(x.n)
        INTO tenants, d_items, d_bytes, d_writes
        FROM (
            SELECT n.tenant_id, count(*) AS n, sum(octet_length(n.value)) AS b
            FROM new_rows AS n
            WHERE n.tenant_id IN (SELECT tenant_id FROM {schema}.store_tenants)
            GROUP BY n.tenant_id
        ) AS x;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(x.tenant_id), array_agg(-x.n), array_agg(-x.b), array_agg(0::bigint)
        INTO tenants, d_items, d_bytes, d_writes
        FROM (
            SELECT o.tenant_id, count(*) AS n, sum(octet_length(o.value)) AS b
            FROM old_rows AS o
            WHERE o.tenant_id IN (SELECT tenant_id FROM {schema}.store_tenants)
            GROUP BY o.tenant_id
        ) AS x;
    ELSE
        -- A put sets updated_at; a TTL refresh on read does not, and is no write.
        SELECT array_agg(x.tenant_id), array_agg(0::bigint), array_agg(x.b), array_agg(x.w)
        INTO tenants, d_items, d_bytes, d_writes
        FROM (
            SELECT n.tenant_id,
                   sum(octet_length(n.value) - octet_length(o.value)) AS b,
                   count(*) FILTER (WHERE n.updated_at IS DISTINCT FROM o.updated_at) AS w
            FROM new_rows AS n
            JOIN old_rows AS o
              ON o.tenant_id = n.tenant_id AND o.namespace = n.namespace AND o.key = n.key
            WHERE n.tenant_id IN (SELECT tenant_id FROM {schema}.store_tenants)
            GROUP BY n.tenant_id
        ) AS x;
    END IF;
    IF tenants IS NULL THEN
        RETURN NULL;
    END IF;
    FOR r IN
        WITH delta AS (
            SELECT * FROM unnest(tenants, d_items, d_bytes, d_writes) AS d(tenant_id, items, bytes, writes)
        )
        UPDATE {schema}.store_tenants AS t SET
            items = t.items + delta.items,
            bytes = t.bytes + delta.bytes,
            window_start = CASE
                WHEN delta.writes > 0 AND t.window_start <= now() - interval '1 minute' THEN now()
                ELSE t.window_start END,
            window_writes = CASE
                WHEN delta.writes > 0 AND t.window_start <= now() - interval '1 minute' THEN delta.writes
                ELSE t.window_writes + delta.writes END
        FROM delta
        WHERE t.tenant_id = delta.tenant_id
        RETURNING t.*, delta.items AS d_items, delta.bytes AS d_bytes, delta.writes AS d_writes
    LOOP
        IF r.d_items > 0 AND r.max_items IS NOT NULL AND r.items > r.max_items THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ429',
                MESSAGE = format('tenant %s would hold %s items, over its quota of %s',
                                 quote_literal(r.tenant_id), r.items, r.max_items),
                DETAIL = json_build_object('tenant_id', r.tenant_id, 'resource', 'items',
                                           'limit', r.max_items, 'value', r.items)::text;
        END IF;
        IF r.d_bytes > 0 AND r.max_bytes IS NOT NULL AND r.bytes > r.max_bytes THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ429',
                MESSAGE = format('tenant %s would hold %s bytes, over its quota of %s',
                                 quote_literal(r.tenant_id), r.bytes, r.max_bytes),
                DETAIL = json_build_object('tenant_id', r.tenant_id, 'resource', 'bytes',
                                           'limit', r.max_bytes, 'value', r.bytes)::text;
        END IF;
        IF r.d_writes > 0 AND r.max_writes_per_minute IS NOT NULL
                AND r.window_writes > r.max_writes_per_minute THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ429',
                MESSAGE = format('tenant %s would make %s writes this minute, over its quota of %s',
                                 quote_literal(r.tenant_id), r.window_writes, r.max_writes_per_minute),
                DETAIL = json_build_object('tenant_id', r.tenant_id, 'resource', 'writes_per_minute',
                                           'limit', r.max_writes_per_minute,
                                           'value', r.window_writes)::text;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$
"""

MIGRATIONS = (
    Migration(
        "store tables",
        (
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{ITEMS} (
                tenant_id   text COLLATE "C" NOT NULL DEFAULT '',
                namespace   text[] COLLATE "C" NOT NULL,
                key         text COLLATE "C" NOT NULL,
                value       bytea NOT NULL,
                doc         jsonb,
                created_at  timestamptz NOT NULL DEFAULT now(),
                updated_at  timestamptz NOT NULL DEFAULT now(),
                ttl_minutes double precision,
                expires_at  timestamptz,
                PRIMARY KEY (tenant_id, namespace, key),
                CHECK (cardinality(namespace) > 0)
            )
            """,
            f"""
            CREATE INDEX IF NOT EXISTS store_items_expires_idx
                ON {{schema}}.{ITEMS} (expires_at) WHERE expires_at IS NOT NULL
            """,
            f"""
            CREATE INDEX IF NOT EXISTS store_items_doc_idx
                ON {{schema}}.{ITEMS} USING gin (doc jsonb_path_ops)
            """,
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{TENANTS} (
                tenant_id             text COLLATE "C" NOT NULL,
                max_items             bigint,
                max_bytes             bigint,
                max_writes_per_minute bigint,
                items                 bigint NOT NULL DEFAULT 0,
                bytes                 bigint NOT NULL DEFAULT 0,
                window_start          timestamptz NOT NULL DEFAULT '-infinity',
                window_writes         bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id)
            )
            """,
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{VECTOR_CONFIG} (
                name       text COLLATE "C" NOT NULL,
                config     jsonb NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (name)
            )
            """,
            USAGE_FUNCTION,
            f"""
            CREATE OR REPLACE TRIGGER store_items_usage_insert AFTER INSERT ON {{schema}}.{ITEMS}
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.haive_store_usage()
            """,
            f"""
            CREATE OR REPLACE TRIGGER store_items_usage_update AFTER UPDATE ON {{schema}}.{ITEMS}
                REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.haive_store_usage()
            """,
            f"""
            CREATE OR REPLACE TRIGGER store_items_usage_delete AFTER DELETE ON {{schema}}.{ITEMS}
                REFERENCING OLD TABLE AS old_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.haive_store_usage()
            """,
            *tenant_policy_statements(ITEMS),
            *tenant_policy_statements(TENANTS),
        ),
    ),
    # Hybrid search: the words of an item's indexed fields, written by the
    # upsert of stores configured with index["hybrid"] (NULL otherwise, so
    # the partial index costs other stores nothing).
    Migration(
        "store text search",
        (
            f"ALTER TABLE {{schema}}.{ITEMS} ADD COLUMN IF NOT EXISTS tsv tsvector",
            f"""
            CREATE INDEX IF NOT EXISTS store_items_tsv_idx
                ON {{schema}}.{ITEMS} USING gin (tsv) WHERE tsv IS NOT NULL
            """,
        ),
    ),
)

# The store's entry in the registry of tables (db/_features.py), in the order
# tenant erasure empties them: vectors reference their items.
TABLES = (
    Table(VECTORS, migrated=False),  # created by setup() for a configured index
    Table(ITEMS),
    Table(TENANTS),
    Table(VECTOR_CONFIG, tenant=False),
)
# `doc` holds the whole value when written without encryption and without
# filter_fields (a projection is the user's declared plaintext and is kept);
# vector rows carry the same doc. Vector memory keeps its memories here too.
FRAMED = (
    FramedTable(
        ITEMS,
        (("tenant_id", "text"), ("namespace", "text[]"), ("key", "text")),
        row_context,
        frame_column="value",
        copy_column="doc",
        copy_tables=(VECTORS,),
    ),
)

COMPONENT = Component(name="store", migrations=MIGRATIONS, tables=TABLES, framed=FRAMED)


def q(template: str, schema: str) -> sql.Composed:
    """Fill ``{schema}`` in a statement template."""
    return sql.SQL(template).format(schema=sql.Identifier(schema))


# -- the vector table (its column type depends on the configuration) ----------------


def vector_ddl(spec: VectorIndexSpec) -> list[str]:
    """Statements creating ``store_vectors`` and its index for ``spec`` (``{schema}`` placeholders).

    Only integers and names of ours (validated against fixed lists) are
    interpolated; nothing here comes from free-form user input.
    """
    column = f"{spec.vector_type}({int(spec.dims)})"
    statements = [
        f"""
        CREATE TABLE IF NOT EXISTS {{schema}}.{VECTORS} (
            tenant_id text COLLATE "C" NOT NULL DEFAULT '',
            namespace text[] COLLATE "C" NOT NULL,
            key       text COLLATE "C" NOT NULL,
            field     text COLLATE "C" NOT NULL,
            indexed   boolean NOT NULL DEFAULT true,
            doc       jsonb,
            embedding {column} NOT NULL,
            PRIMARY KEY (tenant_id, namespace, key, field),
            FOREIGN KEY (tenant_id, namespace, key)
                REFERENCES {{schema}}.{ITEMS} (tenant_id, namespace, key) ON DELETE CASCADE
        )
        """,
        f"""
        CREATE INDEX IF NOT EXISTS store_vectors_pending_idx
            ON {{schema}}.{VECTORS} (tenant_id, namespace) WHERE NOT indexed
        """,
    ]
    if spec.kind != "flat":
        statements.append(ann_index_ddl(spec, concurrently=False))
    statements += list(tenant_policy_statements(VECTORS))
    return statements


CREATE_VECTOR_EXTENSION = "CREATE EXTENSION IF NOT EXISTS vector"

VECTOR_TYPE_OIDS = """
SELECT t.oid::int, t.typarray::int FROM pg_type t WHERE t.oid = to_regtype(%s)
"""

# Whether a text-search configuration (as regconfig would resolve it: a
# schema-qualified name, or one visible on the search path) exists.
TEXT_CONFIG_EXISTS = """
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_ts_config AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.cfgnamespace
    WHERE c.cfgname = %(name)s
      AND CASE WHEN %(schema)s::text IS NULL THEN pg_catalog.pg_ts_config_is_visible(c.oid)
               ELSE n.nspname = %(schema)s END
)
"""

GET_VECTOR_CONFIG = "SELECT config FROM {schema}.store_vector_config WHERE name = %s"

PUT_VECTOR_CONFIG = """
INSERT INTO {schema}.store_vector_config (name, config) VALUES (%s, %s::jsonb)
"""

# -- reads ---------------------------------------------------------------------------

GET_ONE = """
SELECT s.value, s.created_at, s.updated_at
FROM {schema}.store_items AS s
WHERE s.tenant_id = %(t)s AND s.namespace = %(ns)s AND s.key = %(key)s
  AND (s.expires_at IS NULL OR s.expires_at > now())
"""

# A TTL refresh on read locks the rows it refreshes, and reads in one
# transaction (a batch's gets and searches) may refresh overlapping rows in
# different orders (two queries rank the same items differently): locked in
# ranking order, concurrent readers deadlocked. So a refresh only takes rows
# no other transaction holds (FOR NO KEY UPDATE SKIP LOCKED): it never waits.
# A row it skips is being refreshed (its expiry moves anyway), written (the
# put sets its TTL) or deleted by its holder at that moment. {want} yields the
# (namespace, key) pairs to refresh; each is locked by a primary-key probe of
# its own (LATERAL): as a join, the planner walked the tenant's items in key
# order to lock ten (vector search p50 at 10,000 items with TTLs: 39 ms, against
# 3.7 ms this way, the same as the refresh that could deadlock).
REFRESH_TTL = """
    UPDATE {{schema}}.store_items AS s
    SET expires_at = now() + s.ttl_minutes * interval '1 minute'
    FROM (
        SELECT x.namespace, x.key
        FROM {want} AS w
        CROSS JOIN LATERAL (
            SELECT l.namespace, l.key
            FROM {{schema}}.store_items AS l
            WHERE l.tenant_id = %(t)s AND l.namespace = w.namespace AND l.key = w.key
              AND l.ttl_minutes IS NOT NULL AND l.expires_at > now()
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS x
    ) AS r
    WHERE s.tenant_id = %(t)s AND s.namespace = r.namespace AND s.key = r.key"""

# The same, refreshing the item's TTL (the read sees the row as it was).
GET_ONE_REFRESH = (
    "\nWITH refreshed AS ("
    + REFRESH_TTL.format(want="(SELECT %(ns)s::text[] AS namespace, %(key)s::text AS key)")
    + "\n)"
    + GET_ONE
)

GET_MANY = (
    """
WITH want AS (
    SELECT string_to_array(w.ns, '.')::text[] COLLATE "C" AS namespace, w.key COLLATE "C" AS key,
           w.ord, w.refresh
    FROM unnest(%(ns)s::text[], %(keys)s::text[], %(ord)s::int[], %(refresh)s::boolean[])
        AS w(ns, key, ord, refresh)
), refreshed AS ("""
    + REFRESH_TTL.format(want="(SELECT * FROM want WHERE refresh)")
    + """
)
SELECT w.ord, s.value, s.created_at, s.updated_at
FROM want AS w
JOIN {schema}.store_items AS s
  ON s.tenant_id = %(t)s AND s.namespace = w.namespace AND s.key = w.key
WHERE (s.expires_at IS NULL OR s.expires_at > now())
"""
)

# Items without vectors, for the page a vector search left short.
NO_VECTORS = """
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.store_vectors AS v
          WHERE v.tenant_id = s.tenant_id AND v.namespace = s.namespace AND v.key = s.key
      )"""

# Refreshes the TTL of what a search returned; appended as CTEs.
REFRESH_RESULTS = ", refreshed AS (" + REFRESH_TTL.format(want="page") + "\n)"

# The same for grouped searches: the rows of those that refresh.
REFRESH_GROUPED = (
    ", refreshed AS ("
    + REFRESH_TTL.format(want="(SELECT namespace, key FROM page WHERE refresh)")
    + "\n)"
)

# -- writes ----------------------------------------------------------------------------

PUT_DELETE = """del AS (
    DELETE FROM {schema}.store_items AS s
    USING unnest(%(del_ns)s::text[], %(del_keys)s::text[]) AS d(ns, key)
    WHERE s.tenant_id = %(t)s AND s.namespace = string_to_array(d.ns, '.')::text[] COLLATE "C"
      AND s.key = d.key
    RETURNING 1
)"""

PUT_UPSERT = """up AS (
    INSERT INTO {schema}.store_items AS s (tenant_id, namespace, key, value, doc, ttl_minutes, expires_at{tsv_column})
    SELECT %(t)s, string_to_array(u.ns, '.'), u.key, u.value, u.doc::jsonb, u.ttl,
           now() + u.ttl * interval '1 minute'{tsv_value}
    FROM unnest(%(ns)s::text[], %(keys)s::text[], %(values)s::bytea[], %(docs)s::text[],
                %(ttls)s::float8[]{tsv_array}) AS u(ns, key, value, doc, ttl{tsv_alias})
    ON CONFLICT (tenant_id, namespace, key) DO UPDATE SET
        value = excluded.value,
        doc = excluded.doc,
        updated_at = now(),
        ttl_minutes = excluded.ttl_minutes,
        expires_at = excluded.expires_at{tsv_set}
    RETURNING s.namespace, s.key, (s.xmax = 0) AS inserted
)"""

# The parts PUT_UPSERT takes with hybrid search: the tsvector is computed in
# the upsert from the indexed fields' text (NULL text: NULL tsvector). The
# configuration is a parameter cast to regconfig, never SQL text.
PUT_UPSERT_TEXT = {
    "tsv_column": ", tsv",
    "tsv_value": ",\n           to_tsvector(%(tscfg)s::regconfig, u.text)",
    "tsv_array": ", %(texts)s::text[]",
    "tsv_alias": ", text",
    "tsv_set": ",\n        tsv = excluded.tsv",
}
PUT_UPSERT_PLAIN = dict.fromkeys(PUT_UPSERT_TEXT, "")

# Vectors of overwritten items whose field is gone (or that are no longer
# indexed). Only items that existed can have any: new ones are skipped, so a
# bulk load of new items does no work here. The OFFSET 0 fence keeps the
# lookup a primary-key probe per overwritten item: as a join, the planner
# chose a scan of every vector (128 ms per 1,000 puts at 15,000 vectors).
PUT_STALE = """stale AS (
    DELETE FROM {schema}.store_vectors AS v
    WHERE v.ctid = ANY (ARRAY(
        SELECT x.ctid
        FROM up AS u
        CROSS JOIN LATERAL (
            SELECT v2.ctid, v2.namespace, v2.key, v2.field
            FROM {schema}.store_vectors AS v2
            WHERE NOT u.inserted
              AND v2.tenant_id = %(t)s AND v2.namespace = u.namespace AND v2.key = u.key
            OFFSET 0
        ) AS x
        WHERE (x.namespace, x.key, x.field) NOT IN (
              SELECT string_to_array(w.ns, '.')::text[] COLLATE "C", w.key, w.field
              FROM unnest(%(v_ns)s::text[], %(v_keys)s::text[], %(v_fields)s::text[]) AS w(ns, key, field)
          )
    ))
)"""

# Each vector row carries its item's filter document, so filtered searches
# test candidates inside the index scan. An unchanged vector row is not
# rewritten: no new row version, no index insert.
PUT_VECTORS = """vec AS (
    INSERT INTO {schema}.store_vectors AS v (tenant_id, namespace, key, field, indexed, doc, embedding)
    SELECT %(t)s, string_to_array(w.ns, '.'), w.key, w.field, %(indexed)s, w.doc::jsonb, w.embedding
    FROM unnest(%(v_ns)s::text[], %(v_keys)s::text[], %(v_fields)s::text[], %(v_docs)s::text[],
                %(v_emb)s) AS w(ns, key, field, doc, embedding)
    ON CONFLICT (tenant_id, namespace, key, field) DO UPDATE SET
        embedding = excluded.embedding,
        doc = excluded.doc,
        indexed = excluded.indexed
    WHERE v.embedding IS DISTINCT FROM excluded.embedding OR v.doc IS DISTINCT FROM excluded.doc
)"""

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
                ON {{schema}}.{VECTORS} USING {spec.kind} (embedding {spec.opclass})
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
