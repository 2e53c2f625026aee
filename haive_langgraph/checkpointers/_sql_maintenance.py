"""Maintenance statements: delete, copy, runs, retention, prune and garbage collection (see ``_sql``)."""

from __future__ import annotations

from haive_langgraph.checkpointers._sql_read import NOT_HELD

# -- maintenance: delete, copy, prune, garbage collection ---------------------

LOCK_FAMILY_EXCLUSIVE = """
SELECT pg_advisory_xact_lock(%(lock)s, hashtext(%(t)s || '/' || %(family)s))
"""

LOCK_FAMILY_SHARED = """
SELECT pg_advisory_xact_lock_shared(%(lock)s, hashtext(%(t)s || '/' || %(family)s))
"""

FAMILIES_OF_THREADS = """
SELECT u.thread_id, coalesce(t.family_id, u.thread_id) AS family_id
FROM unnest(%(threads)s::text[]) AS u(thread_id)
LEFT JOIN {schema}.threads AS t ON t.tenant_id = %(t)s AND t.thread_id = u.thread_id
ORDER BY 2, 1
"""

DELETE_THREAD_ROWS = """
WITH c AS (
    DELETE FROM {schema}.checkpoints WHERE tenant_id = %(t)s AND thread_id = %(th)s RETURNING 1
), w AS (
    DELETE FROM {schema}.writes WHERE tenant_id = %(t)s AND thread_id = %(th)s RETURNING 1
), g AS (
    DELETE FROM {schema}.checkpoint_tags WHERE tenant_id = %(t)s AND thread_id = %(th)s
), r AS (
    DELETE FROM {schema}.threads WHERE tenant_id = %(t)s AND thread_id = %(th)s RETURNING 1
)
SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM w)
"""

# Whether any thread still belongs to the family (the family's own thread id
# counts even without a registry row, for writes that precede their checkpoint).
FAMILY_IN_USE = """
SELECT EXISTS (
    SELECT 1 FROM {schema}.threads WHERE tenant_id = %(t)s AND family_id = %(family)s
) OR EXISTS (
    SELECT 1 FROM {schema}.writes WHERE tenant_id = %(t)s AND thread_id = %(family)s
)
"""

DROP_FAMILY_CONTENT = """
WITH b AS (
    DELETE FROM {schema}.blobs WHERE tenant_id = %(t)s AND family_id = %(family)s
    RETURNING octet_length(data) AS n
), l AS (
    DELETE FROM {schema}.lineages WHERE tenant_id = %(t)s AND family_id = %(family)s RETURNING 1
), i AS (
    DELETE FROM {schema}.lineage_items WHERE tenant_id = %(t)s AND family_id = %(family)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM b), (SELECT coalesce(sum(n), 0) FROM b), (SELECT count(*) FROM i)
"""

# Mark and sweep of one family's content, under its exclusive lock: items past
# the longest length any checkpoint still uses are deleted and their lineage
# sealed (no writer may append to it again: what it appended would follow
# items that are gone); blobs no checkpoint, write or item refers to go.
GC_LINEAGE_ITEMS = """
WITH members AS (
    SELECT thread_id FROM {schema}.threads WHERE tenant_id = %(t)s AND family_id = %(family)s
    UNION SELECT %(family)s
), live AS (
    SELECT u.lineage_id, max(u.length) AS length
    FROM {schema}.checkpoints AS c
    CROSS JOIN LATERAL unnest(c.list_lineages, c.list_lengths) AS u(lineage_id, length)
    WHERE c.tenant_id = %(t)s AND c.thread_id IN (SELECT thread_id FROM members)
      AND c.family_id = %(family)s
    GROUP BY u.lineage_id
), sealed AS (
    UPDATE {schema}.lineages AS l SET length = -1
    FROM live
    WHERE l.tenant_id = %(t)s AND l.family_id = %(family)s
      AND l.lineage_id = live.lineage_id AND l.length > live.length
    RETURNING 1
), dropped AS (
    DELETE FROM {schema}.lineages AS l
    WHERE l.tenant_id = %(t)s AND l.family_id = %(family)s
      AND NOT EXISTS (SELECT 1 FROM live WHERE live.lineage_id = l.lineage_id)
    RETURNING 1
), items AS (
    DELETE FROM {schema}.lineage_items AS li
    WHERE li.tenant_id = %(t)s AND li.family_id = %(family)s
      AND NOT EXISTS (
          SELECT 1 FROM live WHERE live.lineage_id = li.lineage_id AND li.seq < live.length
      )
    RETURNING 1
)
SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM sealed) + (SELECT count(*) FROM dropped)
"""

GC_BLOBS = """
WITH members AS (
    SELECT thread_id FROM {schema}.threads WHERE tenant_id = %(t)s AND family_id = %(family)s
    UNION SELECT %(family)s
), used AS (
    SELECT key FROM {schema}.lineage_items WHERE tenant_id = %(t)s AND family_id = %(family)s
    UNION
    SELECT unnest(value_keys) FROM {schema}.checkpoints
    WHERE tenant_id = %(t)s AND thread_id IN (SELECT thread_id FROM members)
      AND family_id = %(family)s
    UNION
    SELECT unnest(value_keys) FROM {schema}.writes
    WHERE tenant_id = %(t)s AND thread_id IN (SELECT thread_id FROM members)
      AND family_id = %(family)s
), gone AS (
    DELETE FROM {schema}.blobs AS b
    WHERE b.tenant_id = %(t)s AND b.family_id = %(family)s
      AND NOT EXISTS (SELECT 1 FROM used WHERE used.key = b.key)
    RETURNING octet_length(b.data) AS n
)
SELECT count(*), coalesce(sum(n), 0) FROM gone
"""

COPY_THREAD_CHECK = """
SELECT
    (SELECT family_id FROM {schema}.threads WHERE tenant_id = %(t)s AND thread_id = %(src)s),
    EXISTS (SELECT 1 FROM {schema}.checkpoints WHERE tenant_id = %(t)s AND thread_id = %(dst)s)
"""

COPY_THREAD = """
WITH reg AS (
    INSERT INTO {schema}.threads AS th
        (tenant_id, thread_id, family_id, checkpoint_count, metadata)
    SELECT %(t)s, %(dst)s, s.family_id, s.checkpoint_count, s.metadata
    FROM {schema}.threads AS s WHERE s.tenant_id = %(t)s AND s.thread_id = %(src)s
    ON CONFLICT (tenant_id, thread_id) DO UPDATE SET
        family_id = excluded.family_id,
        checkpoint_count = excluded.checkpoint_count,
        metadata = excluded.metadata,
        updated_at = now()
    RETURNING 1
), cps AS (
    INSERT INTO {schema}.checkpoints (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, created_at, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    )
    SELECT
        tenant_id, %(dst)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, created_at, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    FROM {schema}.checkpoints WHERE tenant_id = %(t)s AND thread_id = %(src)s
    RETURNING 1
), ws AS (
    INSERT INTO {schema}.writes (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
        channel, task_path, family_id, is_list, value_keys
    )
    SELECT
        tenant_id, %(dst)s, checkpoint_ns, checkpoint_id, task_id, idx,
        channel, task_path, family_id, is_list, value_keys
    FROM {schema}.writes WHERE tenant_id = %(t)s AND thread_id = %(src)s
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM reg), (SELECT count(*) FROM cps), (SELECT count(*) FROM ws)
"""

RUN_CHECKPOINTS = """
SELECT DISTINCT c.thread_id, c.family_id
FROM {schema}.checkpoints AS c
WHERE c.tenant_id = %(t)s AND c.run_id = ANY(%(runs)s::text[])
ORDER BY c.family_id, c.thread_id
"""

DELETE_RUNS = """
WITH gone AS (
    DELETE FROM {schema}.checkpoints
    WHERE tenant_id = %(t)s AND thread_id = ANY(%(threads)s::text[])
      AND run_id = ANY(%(runs)s::text[])
    RETURNING thread_id, checkpoint_ns, checkpoint_id
), w AS (
    DELETE FROM {schema}.writes AS w USING gone
    WHERE w.tenant_id = %(t)s AND w.thread_id = gone.thread_id
      AND w.checkpoint_ns = gone.checkpoint_ns AND w.checkpoint_id = gone.checkpoint_id
    RETURNING 1
), g AS (
    DELETE FROM {schema}.checkpoint_tags AS g USING gone
    WHERE g.tenant_id = %(t)s AND g.thread_id = gone.thread_id
      AND g.checkpoint_ns = gone.checkpoint_ns AND g.checkpoint_id = gone.checkpoint_id
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM w)
"""

RECOUNT_THREADS = """
UPDATE {schema}.threads AS th SET
    checkpoint_count = (
        SELECT count(*) FROM {schema}.checkpoints AS c
        WHERE c.tenant_id = th.tenant_id AND c.thread_id = th.thread_id
    ),
    updated_at = now()
WHERE th.tenant_id = %(t)s AND th.thread_id = ANY(%(threads)s::text[])
"""

# The head of each namespace, and for heads with DeltaChannel channels that are
# rebuilt from ancestor writes (LangGraph lists them, with their update
# counters, in the metadata key counters_since_delta_snapshot) the chain of
# ancestors back to where every such channel has a stored value (a snapshot).
# keep_latest keeps all of these.
_KEEP_CLOSURE = (
    """
WITH RECURSIVE starts AS ({starts}
), walk AS (
    SELECT c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
           ARRAY(
               SELECT jsonb_object_keys(
                   coalesce(c.metadata -> 'counters_since_delta_snapshot', '{{}}'::jsonb)
               )"""
    + NOT_HELD
    + """
           ) AS need
    FROM starts h JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.thread_id = %(th)s
     AND c.checkpoint_ns = h.checkpoint_ns AND c.checkpoint_id = h.checkpoint_id
    UNION ALL
    SELECT c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
           ARRAY(
               SELECT unnest(w.need)"""
    + NOT_HELD
    + """
           )
    FROM walk AS w JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.thread_id = %(th)s
     AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.parent_checkpoint_id
    WHERE cardinality(w.need) > 0
)
SELECT DISTINCT checkpoint_ns, checkpoint_id FROM walk
"""
)

PRUNE_KEEP = _KEEP_CLOSURE.replace(
    "{starts}",
    """
    SELECT DISTINCT ON (checkpoint_ns) checkpoint_ns, checkpoint_id
    FROM {schema}.checkpoints
    WHERE tenant_id = %(t)s AND thread_id = %(th)s
    ORDER BY checkpoint_ns, checkpoint_id DESC""",
)

# Retention: the given checkpoints, and the ancestors their DeltaChannel
# channels are rebuilt from.
KEEP_CLOSURE = _KEEP_CLOSURE.replace(
    "{starts}",
    """
    SELECT * FROM unnest(%(keep_ns)s::text[], %(keep_ids)s::text[]) AS k(checkpoint_ns, checkpoint_id)""",
)

# Every checkpoint of a thread, with what retention decides by.
RETENTION_ROWS = """
SELECT c.checkpoint_ns, c.checkpoint_id, c.created_at,
       c.metadata -> 'parents' ->> '' AS root,
       EXISTS (
           SELECT 1 FROM {schema}.checkpoint_tags AS g
           WHERE g.tenant_id = c.tenant_id AND g.thread_id = c.thread_id
             AND g.checkpoint_ns = c.checkpoint_ns AND g.checkpoint_id = c.checkpoint_id
       ) AS tagged,
       EXISTS (
           SELECT 1 FROM {schema}.writes AS w
           WHERE w.tenant_id = c.tenant_id AND w.thread_id = c.thread_id
             AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
             AND w.channel = '__error__'
       ) AS failed
FROM {schema}.checkpoints AS c
WHERE c.tenant_id = %(t)s AND c.thread_id = %(th)s
ORDER BY c.checkpoint_ns, c.checkpoint_id DESC
"""

RETENTION_THREADS = """
SELECT thread_id, family_id, updated_at < %(expired)s AS expired
FROM {schema}.threads
WHERE tenant_id = %(t)s AND (%(threads)s::text[] IS NULL OR thread_id = ANY(%(threads)s::text[]))
ORDER BY thread_id
"""

TRY_LOCK_FAMILY = """
SELECT pg_try_advisory_xact_lock(%(lock)s, hashtext(%(t)s || '/' || %(family)s))
"""

# Heads of subgraph-call namespaces ("name:task_id") with the root checkpoint
# their call started from (metadata parents['']), and whether it is saved.
PRUNE_CALLS = """
SELECT DISTINCT ON (c.checkpoint_ns)
    c.checkpoint_ns,
    c.metadata -> 'parents' ->> '' AS root,
    EXISTS (
        SELECT 1 FROM {schema}.checkpoints AS r
        WHERE r.tenant_id = %(t)s AND r.thread_id = %(th)s AND r.checkpoint_ns = ''
          AND r.checkpoint_id = c.metadata -> 'parents' ->> ''
    ) AS root_saved
FROM {schema}.checkpoints AS c
WHERE c.tenant_id = %(t)s AND c.thread_id = %(th)s AND c.checkpoint_ns LIKE '%%:%%'
ORDER BY c.checkpoint_ns, c.checkpoint_id DESC
"""

PRUNE_DELETE = """
WITH keep AS (
    SELECT * FROM unnest(%(keep_ns)s::text[], %(keep_ids)s::text[]) AS k(checkpoint_ns, checkpoint_id)
), gone AS (
    DELETE FROM {schema}.checkpoints AS c
    WHERE c.tenant_id = %(t)s AND c.thread_id = %(th)s
      AND NOT EXISTS (
          SELECT 1 FROM keep
          WHERE keep.checkpoint_ns = c.checkpoint_ns AND keep.checkpoint_id = c.checkpoint_id
      )
    RETURNING c.checkpoint_ns, c.checkpoint_id
), w AS (
    DELETE FROM {schema}.writes AS w
    WHERE w.tenant_id = %(t)s AND w.thread_id = %(th)s
      AND NOT EXISTS (
          SELECT 1 FROM keep
          WHERE keep.checkpoint_ns = w.checkpoint_ns AND keep.checkpoint_id = w.checkpoint_id
      )
    RETURNING 1
), g AS (
    DELETE FROM {schema}.checkpoint_tags AS g
    WHERE g.tenant_id = %(t)s AND g.thread_id = %(th)s
      AND NOT EXISTS (
          SELECT 1 FROM keep
          WHERE keep.checkpoint_ns = g.checkpoint_ns AND keep.checkpoint_id = g.checkpoint_id
      )
), orphans AS (
    UPDATE {schema}.checkpoints AS c SET parent_checkpoint_id = NULL
    FROM keep
    WHERE c.tenant_id = %(t)s AND c.thread_id = %(th)s
      AND c.checkpoint_ns = keep.checkpoint_ns AND c.checkpoint_id = keep.checkpoint_id
      AND c.parent_checkpoint_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM keep AS p
          WHERE p.checkpoint_ns = c.checkpoint_ns AND p.checkpoint_id = c.parent_checkpoint_id
      )
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM w)
"""
