"""Statements that read checkpoints: the visible chain, one, the latest, a list, lineage items, and a delta channel's history (see ``_sql``)."""

from __future__ import annotations

# -- reading ---------------------------------------------------------------

# Columns every checkpoint read returns, in this order (see _codec.Row).
# The thread asked for, then the threads it branched from, each with the id
# below which its checkpoints belong to the asking thread's history. A
# branch owns a copy of its branch point, so the bounds are exclusive and
# every checkpoint id is visible from exactly one thread of the chain.
CHAIN = """
WITH RECURSIVE chain(thread_id, upto, depth) AS (
    SELECT %(th)s::text COLLATE "C", NULL::text COLLATE "C", 0
    UNION ALL
    SELECT t.parent_thread_id,
           CASE WHEN chain.upto IS NULL OR t.branch_point < chain.upto
                THEN t.branch_point ELSE chain.upto END,
           chain.depth + 1
    FROM chain JOIN {schema}.threads AS t
      ON t.tenant_id = %(t)s AND t.thread_id = chain.thread_id
    WHERE t.parent_thread_id IS NOT NULL AND chain.depth < 64
)"""

VISIBLE = """JOIN chain ON chain.thread_id = c.thread_id
    AND (chain.upto IS NULL OR c.checkpoint_id < chain.upto)"""

# Follows a SELECT of channel names: leaves those the checkpoint ``c`` holds no
# value of (stored, in a list or inline), which its ancestors must supply.
NOT_HELD = """
               EXCEPT SELECT unnest(c.value_channels)
               EXCEPT SELECT unnest(c.list_channels)
               EXCEPT SELECT jsonb_object_keys(c.inline_values)"""

# Rows are reported under the thread asked for (inherited ones included).
_CHECKPOINT_COLUMNS = """
    coalesce(%(th)s::text, c.thread_id), c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.family_id,
    c.checkpoint, c.inline_values, c.metadata,
    c.value_channels, c.value_keys, v.data AS value_data,
    c.list_channels, c.list_lineages, c.list_lengths,
    w.task_ids, w.channels, w.task_paths, w.idxs, w.is_lists, w.key_counts,
    wv.keys AS write_keys, wv.data AS write_data
"""

# Per-checkpoint laterals: values in key order, writes in `writes_sort_key`
# order with their value items flattened in the same order.
_CHECKPOINT_LATERALS = """
LEFT JOIN LATERAL (
    SELECT array_agg(
        (SELECT b.data FROM {schema}.blobs AS b
         WHERE b.tenant_id = c.tenant_id AND b.family_id = c.family_id AND b.key = u.key)
        ORDER BY u.ord
    ) AS data
    FROM unnest(c.value_keys) WITH ORDINALITY AS u(key, ord)
) AS v ON true
LEFT JOIN LATERAL (
    SELECT
        array_agg(x.task_id ORDER BY x.task_path, x.task_id, x.idx) AS task_ids,
        array_agg(x.channel ORDER BY x.task_path, x.task_id, x.idx) AS channels,
        array_agg(x.task_path ORDER BY x.task_path, x.task_id, x.idx) AS task_paths,
        array_agg(x.idx ORDER BY x.task_path, x.task_id, x.idx) AS idxs,
        array_agg(x.is_list ORDER BY x.task_path, x.task_id, x.idx) AS is_lists,
        array_agg(cardinality(x.value_keys) ORDER BY x.task_path, x.task_id, x.idx) AS key_counts
    FROM {schema}.writes AS x
    WHERE x.tenant_id = c.tenant_id AND x.thread_id = c.thread_id
      AND x.checkpoint_ns = c.checkpoint_ns AND x.checkpoint_id = c.checkpoint_id
) AS w ON true
LEFT JOIN LATERAL (
    SELECT
        array_agg(u.key ORDER BY x.task_path, x.task_id, x.idx, u.ord) AS keys,
        array_agg(
            (SELECT b.data FROM {schema}.blobs AS b
             WHERE b.tenant_id = x.tenant_id AND b.family_id = x.family_id AND b.key = u.key)
            ORDER BY x.task_path, x.task_id, x.idx, u.ord
        ) AS data
    FROM {schema}.writes AS x
    CROSS JOIN LATERAL unnest(x.value_keys) WITH ORDINALITY AS u(key, ord)
    WHERE x.tenant_id = c.tenant_id AND x.thread_id = c.thread_id
      AND x.checkpoint_ns = c.checkpoint_ns AND x.checkpoint_id = c.checkpoint_id
) AS wv ON true
"""

# A single checkpoint, with its list items too: one round trip for get_tuple.
# Items of the lineage prefixes the reader says it already holds (known_*:
# lineage ids and lengths of family known_f) come back without their data.
_LIST_ITEMS_LATERAL = """
LEFT JOIN LATERAL (
    SELECT
        array_agg(x.ord ORDER BY x.ord, x.seq) AS item_lists,
        array_agg(x.key ORDER BY x.ord, x.seq) AS item_keys,
        array_agg(x.data ORDER BY x.ord, x.seq) AS item_data
    FROM unnest(c.list_lineages, c.list_lengths) WITH ORDINALITY AS u(lineage_id, length, ord)
    CROSS JOIN LATERAL (
        SELECT coalesce(max(k.n), 0) AS n
        FROM unnest(%(known_l)s::bigint[], %(known_n)s::int[]) AS k(l, n)
        WHERE k.l = u.lineage_id AND c.family_id = %(known_f)s
    ) AS known
    CROSS JOIN LATERAL (
        SELECT u.ord::int AS ord, li.seq, li.key,
               CASE WHEN li.seq >= known.n THEN
                   (SELECT b.data FROM {schema}.blobs AS b
                    WHERE b.tenant_id = c.tenant_id AND b.family_id = c.family_id
                      AND b.key = li.key)
               END AS data
        FROM {schema}.lineage_items AS li
        WHERE li.tenant_id = c.tenant_id AND li.family_id = c.family_id
          AND li.lineage_id = u.lineage_id AND li.seq < u.length
    ) AS x
) AS li ON true
"""

GET_CHECKPOINT = (
    CHAIN
    + "SELECT"
    + _CHECKPOINT_COLUMNS
    + ", li.item_lists, li.item_keys, li.item_data FROM ("
    + """
    SELECT c.* FROM {schema}.checkpoints AS c """
    + VISIBLE
    + """
    WHERE c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s AND c.checkpoint_id = %(cid)s
    ORDER BY chain.depth LIMIT 1
) AS c"""
    + _CHECKPOINT_LATERALS
    + _LIST_ITEMS_LATERAL
)

GET_LATEST_CHECKPOINT = (
    "SELECT"
    + _CHECKPOINT_COLUMNS
    + ", li.item_lists, li.item_keys, li.item_data FROM ("
    + """
    SELECT * FROM {schema}.checkpoints
    WHERE tenant_id = %(t)s AND thread_id = %(th)s AND checkpoint_ns = %(ns)s
    ORDER BY checkpoint_id DESC LIMIT 1
) AS c"""
    + _CHECKPOINT_LATERALS
    + _LIST_ITEMS_LATERAL
)

# Whether the latest checkpoint of a thread is still the one the reader
# holds in memory, column for column (a row changed in place, by a prune
# that detaches it from its parent or a key rotation that re-encrypts its
# body, differs), with no pending writes: then get_tuple builds it from
# memory. NULL when the thread has no checkpoint.
PROBE_LATEST = """
SELECT c.checkpoint_id = %(cid)s
   AND c.checkpoint = %(body)s
   AND c.parent_checkpoint_id IS NOT DISTINCT FROM %(parent)s
   AND c.family_id = %(family)s
   AND c.inline_values = %(inline)s
   AND c.metadata = %(metadata)s
   AND c.value_channels = %(vch)s::text[]
   AND c.value_keys = %(vkeys)s::bytea[]
   AND c.list_channels = %(lch)s::text[]
   AND c.list_lineages = %(llin)s::bigint[]
   AND c.list_lengths = %(llen)s::int[]
   AND NOT EXISTS (
       SELECT 1 FROM {schema}.writes AS w
       WHERE w.tenant_id = c.tenant_id AND w.thread_id = c.thread_id
         AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
   )
FROM (
    SELECT * FROM {schema}.checkpoints
    WHERE tenant_id = %(t)s AND thread_id = %(th)s AND checkpoint_ns = %(ns)s
    ORDER BY checkpoint_id DESC LIMIT 1
) AS c
"""

# History: checkpoint rows first (list values as references), then the items
# of every lineage they use, once each, in a second statement.
LIST_CHECKPOINTS = (
    "{chain} SELECT"
    + _CHECKPOINT_COLUMNS
    + ", NULL::int[], NULL::bytea[], NULL::bytea[] FROM ("
    + """
    SELECT c.* FROM {source}
    ORDER BY c.checkpoint_id DESC {limit}
) AS c"""
    + _CHECKPOINT_LATERALS
    + "ORDER BY c.checkpoint_id DESC"
)

# The checkpoints a thread sees, newest first: one index range per thread of
# its branch chain (a join with the chain would sort the whole thread).
CHAIN_SOURCE = """chain CROSS JOIN LATERAL (
    SELECT c.* FROM {schema}.checkpoints AS c
    WHERE c.thread_id = chain.thread_id
      AND (chain.upto IS NULL OR c.checkpoint_id < chain.upto) AND {where}
    ORDER BY c.checkpoint_id DESC {limit}
) AS c"""

PLAIN_SOURCE = """{schema}.checkpoints AS c WHERE {where}"""

LINEAGE_ITEMS = """
SELECT u.family_id, u.lineage_id, x.seq, x.key, x.data
FROM unnest(%(families)s::text[], %(lineages)s::bigint[], %(lengths)s::int[])
    AS u(family_id, lineage_id, length)
CROSS JOIN LATERAL (
    SELECT li.seq, li.key,
           (SELECT b.data FROM {schema}.blobs AS b
            WHERE b.tenant_id = %(t)s AND b.family_id = u.family_id AND b.key = li.key) AS data
    FROM {schema}.lineage_items AS li
    WHERE li.tenant_id = %(t)s AND li.family_id = u.family_id
      AND li.lineage_id = u.lineage_id AND li.seq < u.length
) AS x
ORDER BY u.family_id, u.lineage_id, x.seq
"""


# -- delta channel history ----------------------------------------------------

# Walks the parent chain from the target's parent, one row per ancestor, for
# as long as some requested channel has no stored value yet; each row carries
# the channels still wanted there (`need`), its writes to those channels and
# the stored values (seeds) of the wanted channels it holds.
DELTA_HISTORY = (
    CHAIN
    + """, target AS (
    SELECT c.parent_checkpoint_id FROM {schema}.checkpoints AS c """
    + VISIBLE
    + """
    WHERE c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s
      AND (%(cid)s::text IS NULL OR c.checkpoint_id = %(cid)s)
    ORDER BY c.checkpoint_id DESC LIMIT 1
), walk AS (
    SELECT c.thread_id, c.checkpoint_id, c.parent_checkpoint_id, 1 AS depth,
           %(channels)s::text[] AS need,
           ARRAY(
               SELECT unnest(%(channels)s::text[])"""
    + NOT_HELD
    + """
           ) AS need_after
    FROM target JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s
     AND c.checkpoint_id = target.parent_checkpoint_id """
    + VISIBLE
    + """
    UNION ALL
    SELECT c.thread_id, c.checkpoint_id, c.parent_checkpoint_id, w.depth + 1, w.need_after,
           ARRAY(
               SELECT unnest(w.need_after)"""
    + NOT_HELD
    + """
           )
    FROM walk AS w JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s
     AND c.checkpoint_id = w.parent_checkpoint_id """
    + VISIBLE
    + """
    WHERE cardinality(w.need_after) > 0
)
SELECT walk.depth, walk.need, c.family_id, c.inline_values,
       seeds.channels, seeds.keys, seeds.data,
       lseeds.channels, lseeds.lineages, lseeds.lengths,
       ws.task_ids, ws.channels, ws.is_lists, ws.key_counts, wv.keys, wv.data
FROM walk
JOIN {schema}.checkpoints AS c
  ON c.tenant_id = %(t)s AND c.thread_id = walk.thread_id AND c.checkpoint_ns = %(ns)s
 AND c.checkpoint_id = walk.checkpoint_id
"""
)

_DELTA_LATERALS = """
LEFT JOIN LATERAL (
    SELECT array_agg(u.channel) AS channels, array_agg(u.key) AS keys, array_agg(b.data) AS data
    FROM unnest(c.value_channels, c.value_keys) AS u(channel, key)
    LEFT JOIN {schema}.blobs AS b
      ON b.tenant_id = c.tenant_id AND b.family_id = c.family_id AND b.key = u.key
    WHERE u.channel = ANY(walk.need)
) AS seeds ON true
LEFT JOIN LATERAL (
    SELECT array_agg(u.channel) AS channels, array_agg(u.lineage_id) AS lineages,
           array_agg(u.length) AS lengths
    FROM unnest(c.list_channels, c.list_lineages, c.list_lengths) AS u(channel, lineage_id, length)
    WHERE u.channel = ANY(walk.need)
) AS lseeds ON true
LEFT JOIN LATERAL (
    SELECT
        array_agg(x.task_id ORDER BY x.task_path, x.task_id, x.idx) AS task_ids,
        array_agg(x.channel ORDER BY x.task_path, x.task_id, x.idx) AS channels,
        array_agg(x.is_list ORDER BY x.task_path, x.task_id, x.idx) AS is_lists,
        array_agg(cardinality(x.value_keys) ORDER BY x.task_path, x.task_id, x.idx) AS key_counts
    FROM {schema}.writes AS x
    WHERE x.tenant_id = c.tenant_id AND x.thread_id = c.thread_id
      AND x.checkpoint_ns = c.checkpoint_ns AND x.checkpoint_id = c.checkpoint_id
      AND x.channel = ANY(walk.need)
) AS ws ON true
LEFT JOIN LATERAL (
    SELECT
        array_agg(u.key ORDER BY x.task_path, x.task_id, x.idx, u.ord) AS keys,
        array_agg(b.data ORDER BY x.task_path, x.task_id, x.idx, u.ord) AS data
    FROM {schema}.writes AS x
    CROSS JOIN LATERAL unnest(x.value_keys) WITH ORDINALITY AS u(key, ord)
    LEFT JOIN {schema}.blobs AS b
      ON b.tenant_id = x.tenant_id AND b.family_id = x.family_id AND b.key = u.key
    WHERE x.tenant_id = c.tenant_id AND x.thread_id = c.thread_id
      AND x.checkpoint_ns = c.checkpoint_ns AND x.checkpoint_id = c.checkpoint_id
      AND x.channel = ANY(walk.need)
) AS wv ON true
ORDER BY walk.depth DESC
"""

DELTA_HISTORY = DELTA_HISTORY + _DELTA_LATERALS
