"""Statements that write a checkpoint and its pending writes (see ``_sql``)."""

from __future__ import annotations

# -- writing ---------------------------------------------------------------

# One statement, so a checkpoint costs one round trip and one commit. The
# family's advisory lock is taken shared before anything is written, and
# everything a writer assumes exists (content keys it sends without bytes,
# the length of a lineage it appends to) is re-checked against the latest
# committed rows (FOR KEY SHARE, UPDATE), not the statement's snapshot: a
# garbage collection that committed meanwhile is seen, and the check fails
# with HC409 instead of leaving a dangling reference.
#
# The statement is assembled from the parts a checkpoint needs (most carry
# no lineage to create and no key to re-check); each assembly is a separate
# prepared statement, and a smaller statement plans faster where statements
# cannot be prepared (transaction-mode poolers).
PUT_LOCK = """
WITH lk AS (
    SELECT %(family)s::text AS family_id
    FROM (SELECT pg_advisory_xact_lock_shared(%(lock)s, hashtext(%(t)s || '/' || %(family)s))) AS l
), fam_ok AS (
    SELECT coalesce(
        (SELECT family_id FROM {schema}.threads WHERE tenant_id = %(t)s AND thread_id = %(th)s),
        %(th)s
    ) = %(family)s AS ok
)"""

PUT_PARTS = {
    "blobs": """, ins_blobs AS (
    INSERT INTO {schema}.blobs (tenant_id, family_id, key, data)
    SELECT %(t)s, lk.family_id, b.key, b.data
    FROM lk, unnest(%(blob_keys)s::bytea[], %(blob_data)s::bytea[]) AS b(key, data)
    ON CONFLICT DO NOTHING
)""",
    "check": """, checked AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM {schema}.blobs AS b, lk
        WHERE b.tenant_id = %(t)s AND b.family_id = lk.family_id
          AND b.key = ANY(%(check_keys)s::bytea[])
        FOR KEY SHARE OF b
    ) AS x
)""",
    "upd": """, lin_upd AS (
    UPDATE {schema}.lineages AS l SET length = greatest(l.length, u.n)
    FROM lk, unnest(%(upd_l)s::bigint[], %(upd_b)s::int[], %(upd_n)s::int[]) AS u(l, b, n)
    WHERE l.tenant_id = %(t)s AND l.family_id = lk.family_id AND l.lineage_id = u.l
      AND (l.length = u.b OR (u.n = u.b AND l.length >= u.b))
    RETURNING 1
)""",
    "new": """, lin_new AS (
    INSERT INTO {schema}.lineages (tenant_id, family_id, lineage_id, length)
    SELECT %(t)s, lk.family_id, u.l, u.n
    FROM lk, unnest(%(new_l)s::bigint[], %(new_n)s::int[]) AS u(l, n)
)""",
    "items": """, items AS (
    INSERT INTO {schema}.lineage_items (tenant_id, family_id, lineage_id, seq, key)
    SELECT %(t)s, lk.family_id, u.l, u.s, u.k
    FROM lk, unnest(%(item_l)s::bigint[], %(item_s)s::int[], %(item_k)s::bytea[]) AS u(l, s, k)
)""",
    "tags": """, tags AS (
    INSERT INTO {schema}.checkpoint_tags (tenant_id, thread_id, tag, checkpoint_ns, checkpoint_id)
    SELECT %(t)s, %(th)s, u.tag, %(ns)s, %(cid)s
    FROM lk, unnest(%(tags)s::text[]) AS u(tag)
    ON CONFLICT DO NOTHING
)""",
}

# What the checkpoint insert checks, per part present.
PUT_CHECKS = {
    "check": "AND (SELECT n FROM checked) = cardinality(%(check_keys)s::bytea[])",
    "upd": "AND (SELECT count(*) FROM lin_upd) = cardinality(%(upd_l)s::bigint[])",
}

PUT_TAIL = """, cp AS (
    INSERT INTO {schema}.checkpoints AS c (
        tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        family_id, run_id, checkpoint, inline_values, metadata,
        value_channels, value_keys, list_channels, list_lineages, list_lengths
    )
    SELECT
        %(t)s, %(th)s, %(ns)s, %(cid)s, %(parent)s,
        lk.family_id, %(run_id)s, %(checkpoint)s, %(inline)s, %(metadata)s,
        %(vch)s::text[], %(vkeys)s::bytea[], %(lch)s::text[], %(llin)s::bigint[], %(llen)s::int[]
    FROM lk
    WHERE {schema}.haive_check(
        (SELECT ok FROM fam_ok) {checks},
        'stored values of thread ' || %(th)s || ' changed while writing checkpoint ' || %(cid)s
    )
    ON CONFLICT (tenant_id, thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
        parent_checkpoint_id = excluded.parent_checkpoint_id,
        run_id = excluded.run_id,
        checkpoint = excluded.checkpoint,
        inline_values = excluded.inline_values,
        metadata = excluded.metadata,
        value_channels = excluded.value_channels,
        value_keys = excluded.value_keys,
        list_channels = excluded.list_channels,
        list_lineages = excluded.list_lineages,
        list_lengths = excluded.list_lengths
    RETURNING (xmax = 0) AS inserted
)
INSERT INTO {schema}.threads AS th (tenant_id, thread_id, family_id, checkpoint_count, metadata)
SELECT %(t)s, %(th)s, lk.family_id, (SELECT count(*) FROM cp WHERE inserted), %(thread_meta)s
FROM lk
ON CONFLICT (tenant_id, thread_id) DO UPDATE SET
    updated_at = now(),
    checkpoint_count = th.checkpoint_count + excluded.checkpoint_count,
    metadata = CASE
        WHEN th.metadata @> excluded.metadata THEN th.metadata
        ELSE th.metadata || excluded.metadata
    END
"""


# A partitioned checkpoints table has no system columns to return; there
# the insert is told from the update by the old row (PostgreSQL 18+).
INSERTED_XMAX = "RETURNING (xmax = 0) AS inserted"
INSERTED_OLD = "RETURNING (old.checkpoint_id IS NULL) AS inserted"


def put_checkpoint_template(parts: frozenset[str], *, partitioned: bool = False) -> str:
    """The checkpoint write statement with only the given parts."""
    sql_ = PUT_LOCK + "".join(PUT_PARTS[p] for p in PUT_PARTS if p in parts)
    checks = " ".join(PUT_CHECKS[p] for p in PUT_CHECKS if p in parts)
    tail = PUT_TAIL.replace("{checks}", checks)
    return sql_ + (tail.replace(INSERTED_XMAX, INSERTED_OLD) if partitioned else tail)


# Pending writes. Regular writes are first-write-wins (a task retried after a
# crash must not change what it wrote); the special ones (error, interrupt,
# resume, scheduled) replace, as in LangGraph's savers.
PUT_WRITES = """
WITH lk AS (
    SELECT %(family)s::text AS family_id
    FROM (SELECT pg_advisory_xact_lock_shared(%(lock)s, hashtext(%(t)s || '/' || %(family)s))) AS l
), ins_blobs AS (
    INSERT INTO {schema}.blobs (tenant_id, family_id, key, data)
    SELECT %(t)s, lk.family_id, b.key, b.data
    FROM lk, unnest(%(blob_keys)s::bytea[], %(blob_data)s::bytea[]) AS b(key, data)
    ON CONFLICT DO NOTHING
)
INSERT INTO {schema}.writes AS w (
    tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
    channel, task_path, family_id, is_list, value_keys
)
SELECT
    %(t)s, %(th)s, %(ns)s, %(cid)s, %(task_id)s, u.idx,
    u.channel, %(task_path)s, lk.family_id, u.is_list,
    (%(keys)s::bytea[])[u.first:u.last]
FROM lk, unnest(
    %(idx)s::int[], %(channels)s::text[], %(is_list)s::bool[], %(first)s::int[], %(last)s::int[]
) AS u(idx, channel, is_list, first, last)
ON CONFLICT (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO {conflict}
"""

WRITES_UPSERT = """UPDATE SET
    channel = excluded.channel,
    task_path = excluded.task_path,
    is_list = excluded.is_list,
    value_keys = excluded.value_keys"""

WRITES_KEEP = "NOTHING"

THREAD_FAMILY = """
SELECT family_id FROM {schema}.threads WHERE tenant_id = %s AND thread_id = %s
"""
