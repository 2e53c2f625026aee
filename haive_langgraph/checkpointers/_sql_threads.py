"""Statements of the thread registry, tags, branches and restore (see ``_sql``)."""

from __future__ import annotations

from haive_langgraph.checkpointers._sql_read import CHAIN, VISIBLE

# -- thread registry ----------------------------------------------------------

THREAD_COLUMNS = """
    thread_id, family_id, created_at, updated_at, checkpoint_count, metadata
"""

GET_THREAD = (
    "SELECT"
    + THREAD_COLUMNS
    + "FROM {schema}.threads WHERE tenant_id = %(t)s AND thread_id = %(th)s"
)

LIST_THREADS = (
    "SELECT"
    + THREAD_COLUMNS
    + """FROM {schema}.threads
WHERE tenant_id = %(t)s
  AND (%(filter)s::jsonb IS NULL OR metadata @> %(filter)s::jsonb)
  AND (%(after_ts)s::timestamptz IS NULL OR (updated_at, thread_id) < (%(after_ts)s, %(after_id)s))
ORDER BY updated_at DESC, thread_id DESC
LIMIT %(limit)s
"""
)

# -- time travel: tags, find, branches, restore --------------------------------

# Tags go to the thread that owns the checkpoint (the parent thread, for a
# checkpoint a branch inherits): a tag is on the checkpoint, seen from every
# thread that shares it.
_OWNER = (
    CHAIN
    + """, owner AS (
    SELECT c.thread_id FROM {schema}.checkpoints AS c """
    + VISIBLE
    + """
    WHERE c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s AND c.checkpoint_id = %(cid)s
    ORDER BY chain.depth LIMIT 1
)"""
)

TAG = (
    _OWNER
    + """, ins AS (
    INSERT INTO {schema}.checkpoint_tags (tenant_id, thread_id, tag, checkpoint_ns, checkpoint_id)
    SELECT %(t)s, owner.thread_id, u.tag, %(ns)s, %(cid)s
    FROM owner, unnest(%(tags)s::text[]) AS u(tag)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM ins)
"""
)

UNTAG = (
    _OWNER
    + """, del AS (
    DELETE FROM {schema}.checkpoint_tags AS g USING owner
    WHERE g.tenant_id = %(t)s AND g.thread_id = owner.thread_id AND g.tag = ANY(%(tags)s::text[])
      AND g.checkpoint_ns = %(ns)s AND g.checkpoint_id = %(cid)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM del)
"""
)

# find_checkpoints: assembled from fragments (see _ops.find_op).
FIND_SELECT = """
SELECT x.* FROM chain CROSS JOIN LATERAL (
    SELECT c.checkpoint_id, c.checkpoint_ns, c.parent_checkpoint_id, c.created_at, c.metadata,
           ARRAY(
               SELECT g.tag FROM {schema}.checkpoint_tags AS g
               WHERE g.tenant_id = c.tenant_id AND g.thread_id = c.thread_id
                 AND g.checkpoint_ns = c.checkpoint_ns AND g.checkpoint_id = c.checkpoint_id
               ORDER BY g.tag
           ) AS tags
    FROM {schema}.checkpoints AS c {tagged}
    WHERE c.tenant_id = %(t)s AND c.thread_id = chain.thread_id AND c.checkpoint_ns = %(ns)s
      AND (chain.upto IS NULL OR c.checkpoint_id < chain.upto) AND {where}
    ORDER BY c.checkpoint_id DESC {limit}
) AS x
ORDER BY x.checkpoint_id DESC {limit}
"""

# Driven from the tag index when tags are asked for: the checkpoints of the
# chain's threads that carry every tag.
FIND_TAGGED = """
    JOIN (
        SELECT g.checkpoint_id FROM {schema}.checkpoint_tags AS g
        WHERE g.tenant_id = %(t)s AND g.thread_id = chain.thread_id
          AND g.tag = ANY(%(tags)s::text[]) AND g.checkpoint_ns = %(ns)s
        GROUP BY g.checkpoint_id
        HAVING count(*) = cardinality(%(tags)s::text[])
    ) AS tagged ON tagged.checkpoint_id = c.checkpoint_id
"""

BRANCH_CHECK = (
    _OWNER
    + """
SELECT
    (SELECT thread_id FROM owner),
    (SELECT family_id FROM {schema}.threads WHERE tenant_id = %(t)s AND thread_id = %(th)s),
    EXISTS (SELECT 1 FROM {schema}.threads WHERE tenant_id = %(t)s AND thread_id = %(dst)s),
    EXISTS (SELECT 1 FROM {schema}.threads
            WHERE tenant_id = %(t)s AND parent_thread_id = %(th)s AND branch_name = %(name)s)
"""
)

# A branch: its registry row, a copy of the branch-point checkpoint with its
# pending writes, and the heads of subgraph calls started from that point.
CREATE_BRANCH = """
WITH reg AS (
    INSERT INTO {schema}.threads (
        tenant_id, thread_id, family_id, checkpoint_count, metadata,
        parent_thread_id, branch_point, branch_name
    )
    SELECT %(t)s, %(dst)s, s.family_id, 1, s.metadata || %(meta)s, %(th)s, %(cid)s, %(name)s
    FROM {schema}.threads AS s WHERE s.tenant_id = %(t)s AND s.thread_id = %(th)s
    RETURNING 1
), calls AS (
    SELECT DISTINCT ON (c.checkpoint_ns) c.checkpoint_ns, c.checkpoint_id
    FROM {schema}.checkpoints AS c
    WHERE c.tenant_id = %(t)s AND c.thread_id = %(owner)s AND c.checkpoint_ns <> ''
      AND c.metadata -> 'parents' ->> '' = %(cid)s
    ORDER BY c.checkpoint_ns, c.checkpoint_id DESC
), rows AS (
    SELECT c.* FROM {schema}.checkpoints AS c
    WHERE c.tenant_id = %(t)s AND c.thread_id = %(owner)s
      AND ((c.checkpoint_ns = '' AND c.checkpoint_id = %(cid)s)
           OR (c.checkpoint_ns, c.checkpoint_id) IN (SELECT checkpoint_ns, checkpoint_id FROM calls))
), cps AS (
    INSERT INTO {schema}.checkpoints (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, created_at, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    )
    SELECT tenant_id, %(dst)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, created_at, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    FROM rows
    RETURNING 1
), ws AS (
    INSERT INTO {schema}.writes (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
        channel, task_path, family_id, is_list, value_keys
    )
    SELECT w.tenant_id, %(dst)s, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx,
        w.channel, w.task_path, w.family_id, w.is_list, w.value_keys
    FROM {schema}.writes AS w JOIN rows AS r
      ON w.tenant_id = r.tenant_id AND w.thread_id = r.thread_id
     AND w.checkpoint_ns = r.checkpoint_ns AND w.checkpoint_id = r.checkpoint_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM reg), (SELECT count(*) FROM cps), (SELECT count(*) FROM ws)
"""

LIST_BRANCHES = """
SELECT thread_id, branch_name, branch_point, created_at, updated_at, checkpoint_count, metadata
FROM {schema}.threads
WHERE tenant_id = %(t)s AND parent_thread_id = %(th)s
ORDER BY created_at, thread_id
"""

# restore: a new head with the values and references of an earlier checkpoint
# (no value is copied); history before it is kept. Its pending writes are not
# carried over: they include what happened after it (task results, answers
# to its interrupts), so the tasks that follow it run again.
RESTORE = (
    CHAIN
    + """, src AS (
    SELECT c.* FROM {schema}.checkpoints AS c """
    + VISIBLE
    + """
    WHERE c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s AND c.checkpoint_id = %(cid)s
    ORDER BY chain.depth LIMIT 1
), head AS (
    SELECT checkpoint_id FROM {schema}.checkpoints
    WHERE tenant_id = %(t)s AND thread_id = %(th)s AND checkpoint_ns = %(ns)s
    ORDER BY checkpoint_id DESC LIMIT 1
), lk AS (
    SELECT src.family_id FROM src, (
        SELECT pg_advisory_xact_lock_shared(%(lock)s, hashtext(%(t)s || '/' || src.family_id))
        FROM src
    ) AS l
), cp AS (
    INSERT INTO {schema}.checkpoints (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    )
    SELECT src.tenant_id, %(th)s, src.checkpoint_ns, %(new_id)s, (SELECT checkpoint_id FROM head),
        src.family_id, NULL, %(body)s, src.inline_values, %(meta)s,
        src.value_channels, src.value_keys, src.list_channels, src.list_lineages, src.list_lengths
    FROM src, lk
    RETURNING 1
), reg AS (
    UPDATE {schema}.threads SET
        checkpoint_count = checkpoint_count + (SELECT count(*) FROM cp), updated_at = now()
    WHERE tenant_id = %(t)s AND thread_id = %(th)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM cp), (SELECT count(*) FROM reg)
"""
)

# Before a thread's checkpoints are deleted or pruned, its branches take a
# copy of the checkpoints they inherit from it (rows, writes, tags; values are
# shared) and inherit from its own parent instead: a branch's history never
# depends on what happens to the thread it came from.
DETACH_BRANCHES = """
WITH p AS (
    SELECT parent_thread_id, branch_point FROM {schema}.threads
    WHERE tenant_id = %(t)s AND thread_id = %(th)s
), br AS (
    SELECT thread_id, branch_point FROM {schema}.threads
    WHERE tenant_id = %(t)s AND parent_thread_id = %(th)s
    FOR UPDATE
), cps AS (
    INSERT INTO {schema}.checkpoints (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, created_at, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    )
    SELECT c.tenant_id, br.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
        c.family_id, c.run_id, c.created_at, c.checkpoint, c.inline_values, c.metadata,
        c.value_channels, c.value_keys, c.list_channels, c.list_lineages, c.list_lengths
    FROM {schema}.checkpoints AS c JOIN br ON c.checkpoint_id < br.branch_point
    WHERE c.tenant_id = %(t)s AND c.thread_id = %(th)s
    ON CONFLICT DO NOTHING
    RETURNING thread_id
), ws AS (
    INSERT INTO {schema}.writes (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
        channel, task_path, family_id, is_list, value_keys
    )
    SELECT w.tenant_id, br.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx,
        w.channel, w.task_path, w.family_id, w.is_list, w.value_keys
    FROM {schema}.writes AS w JOIN br ON w.checkpoint_id < br.branch_point
    WHERE w.tenant_id = %(t)s AND w.thread_id = %(th)s
    ON CONFLICT DO NOTHING
), tg AS (
    INSERT INTO {schema}.checkpoint_tags (tenant_id, thread_id, tag, checkpoint_ns, checkpoint_id)
    SELECT g.tenant_id, br.thread_id, g.tag, g.checkpoint_ns, g.checkpoint_id
    FROM {schema}.checkpoint_tags AS g JOIN br ON g.checkpoint_id < br.branch_point
    WHERE g.tenant_id = %(t)s AND g.thread_id = %(th)s
    ON CONFLICT DO NOTHING
), counts AS (
    SELECT thread_id, count(*) AS n FROM cps GROUP BY thread_id
)
UPDATE {schema}.threads AS t SET
    parent_thread_id = p.parent_thread_id,
    branch_point = CASE WHEN p.parent_thread_id IS NULL THEN NULL
                        ELSE least(t.branch_point, p.branch_point) END,
    branch_name = CASE WHEN p.parent_thread_id IS NULL THEN t.branch_name END,
    checkpoint_count = t.checkpoint_count + coalesce(
        (SELECT n FROM counts WHERE counts.thread_id = t.thread_id), 0)
FROM p
WHERE t.tenant_id = %(t)s AND t.thread_id IN (SELECT thread_id FROM br)
"""
