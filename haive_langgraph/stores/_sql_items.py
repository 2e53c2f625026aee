"""The store's statements on items: reads (gets, namespace listings, TTL
refreshes) and the batched write. Named through :mod:`haive_langgraph.stores._sql`
(``S.GET_ONE``), which re-exports them."""

from __future__ import annotations

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
