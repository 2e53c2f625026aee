"""Schema, migrations and statements of the checkpointer.

Storage model (see ``docs/architecture.md``):

* ``threads``: one row per thread (registry: timestamps, count, metadata,
  and the *family* whose content the thread shares). Every checkpoint
  updates its thread's row; no index covers ``updated_at`` or the count, so
  that update is a HOT update (no index writes, no index bloat), and
  listing threads by recency sorts one tenant's rows.
* ``checkpoints``: one row per checkpoint: its body (versions, versions
  seen ...) as serde msgpack, small values inline in ``inline_values``
  JSON; every other channel value is a reference: a content
  key into ``blobs`` (``value_channels``/``value_keys``), or, for list
  values such as ``messages``, a lineage and a length
  (``list_channels``/``list_lineages``/``list_lengths``).
* ``blobs``: content-addressed values of a family, each stored once and
  shared by every checkpoint, write, copy and branch that holds it.
* ``lineages`` / ``lineage_items``: append-only lists of content keys. A
  list value is the first ``length`` items of a lineage, so appending a
  message to a 200-message conversation writes one item row, and the
  conversation's storage grows linearly with its length.
* ``writes``: pending writes, whose values are content keys too (a list
  written by a node is stored as its items, shared with the list value the
  next checkpoint holds).
* ``checkpoint_tags``: tags on checkpoints, keyed for lookup by tag.
* Branches: a branch is a thread whose registry row names its parent thread
  and branch point. It owns a copy of the branch-point checkpoint row and
  sees the parent's checkpoints older than that point as its own history
  (``VISIBLE`` below): a branch of a 1,000-checkpoint thread costs two rows.

Every table leads its primary key with ``tenant_id``, then the thread or
family: a tenant's rows are one key range, ready for row-level security and
distribution by tenant.
"""

from __future__ import annotations

from psycopg import sql

from haive_langgraph.db import Component, Migration, PartitionKey
from haive_langgraph.db._tenancy import tenant_policy_statements

# Advisory lock namespace for content of a thread family: writers take it
# shared, garbage collection exclusive.
LOCK_CLASS_FAMILY = 0x48560002

# SQLSTATE our checks raise when rows a writer relied on changed under it.
CONCURRENT_UPDATE_SQLSTATE = "HC409"

# Every table of the checkpointer; each carries tenant_id first in its key.
TENANT_TABLES = (
    "threads",
    "checkpoint_tags",
    "checkpoints",
    "writes",
    "blobs",
    "lineages",
    "lineage_items",
)
# The table whose row security tells whether a connection must bind its tenant.
SCOPE_TABLE = "checkpoints"

MIGRATIONS = (
    Migration(
        "checkpointer tables",
        (
            """
            CREATE OR REPLACE FUNCTION {schema}.haive_check(ok boolean, message text)
            RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                IF ok IS NOT TRUE THEN
                    RAISE EXCEPTION USING ERRCODE = 'HC409', MESSAGE = message;
                END IF;
                RETURN true;
            END
            $$
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.threads (
                tenant_id        text COLLATE "C" NOT NULL DEFAULT '',
                thread_id        text COLLATE "C" NOT NULL,
                family_id        text COLLATE "C" NOT NULL,
                created_at       timestamptz NOT NULL DEFAULT now(),
                updated_at       timestamptz NOT NULL DEFAULT now(),
                checkpoint_count bigint NOT NULL DEFAULT 0,
                metadata         jsonb NOT NULL DEFAULT '{{}}',
                parent_thread_id text COLLATE "C",
                branch_point     text COLLATE "C",
                branch_name      text,
                PRIMARY KEY (tenant_id, thread_id)
            )
            """,
            """
            CREATE UNIQUE INDEX IF NOT EXISTS threads_branch_name_idx
                ON {schema}.threads (tenant_id, parent_thread_id, branch_name)
                WHERE branch_name IS NOT NULL
            """,
            """
            CREATE INDEX IF NOT EXISTS threads_parent_idx
                ON {schema}.threads (tenant_id, parent_thread_id)
                WHERE parent_thread_id IS NOT NULL
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.checkpoint_tags (
                tenant_id     text COLLATE "C" NOT NULL DEFAULT '',
                thread_id     text COLLATE "C" NOT NULL,
                tag           text COLLATE "C" NOT NULL,
                checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
                checkpoint_id text COLLATE "C" NOT NULL,
                created_at    timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, thread_id, tag, checkpoint_ns, checkpoint_id)
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS threads_family_idx
                ON {schema}.threads (tenant_id, family_id)
            """,
            """
            CREATE INDEX IF NOT EXISTS threads_metadata_idx
                ON {schema}.threads USING gin (metadata jsonb_path_ops)
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
                tenant_id            text COLLATE "C" NOT NULL DEFAULT '',
                thread_id            text COLLATE "C" NOT NULL,
                checkpoint_ns        text COLLATE "C" NOT NULL DEFAULT '',
                checkpoint_id        text COLLATE "C" NOT NULL,
                parent_checkpoint_id text COLLATE "C",
                family_id            text COLLATE "C" NOT NULL,
                run_id               text COLLATE "C",
                created_at           timestamptz NOT NULL DEFAULT now(),
                checkpoint           bytea NOT NULL,
                inline_values        jsonb NOT NULL DEFAULT '{{}}',
                metadata             jsonb NOT NULL DEFAULT '{{}}',
                value_channels       text[] NOT NULL DEFAULT '{{}}',
                value_keys           bytea[] NOT NULL DEFAULT '{{}}',
                list_channels        text[] NOT NULL DEFAULT '{{}}',
                list_lineages        bigint[] NOT NULL DEFAULT '{{}}',
                list_lengths         integer[] NOT NULL DEFAULT '{{}}',
                PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id)
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS checkpoints_run_id_idx
                ON {schema}.checkpoints (tenant_id, run_id) WHERE run_id IS NOT NULL
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.writes (
                tenant_id     text COLLATE "C" NOT NULL DEFAULT '',
                thread_id     text COLLATE "C" NOT NULL,
                checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
                checkpoint_id text COLLATE "C" NOT NULL,
                task_id       text COLLATE "C" NOT NULL,
                idx           integer NOT NULL,
                channel       text NOT NULL,
                task_path     text COLLATE "C" NOT NULL DEFAULT '',
                family_id     text COLLATE "C" NOT NULL,
                is_list       boolean NOT NULL,
                value_keys    bytea[] NOT NULL,
                PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.blobs (
                tenant_id text COLLATE "C" NOT NULL DEFAULT '',
                family_id text COLLATE "C" NOT NULL,
                key       bytea NOT NULL,
                data      bytea NOT NULL,
                PRIMARY KEY (tenant_id, family_id, key)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.lineages (
                tenant_id  text COLLATE "C" NOT NULL DEFAULT '',
                family_id  text COLLATE "C" NOT NULL,
                lineage_id bigint NOT NULL,
                length     integer NOT NULL,
                PRIMARY KEY (tenant_id, family_id, lineage_id)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.lineage_items (
                tenant_id  text COLLATE "C" NOT NULL DEFAULT '',
                family_id  text COLLATE "C" NOT NULL,
                lineage_id bigint NOT NULL,
                seq        integer NOT NULL,
                key        bytea NOT NULL,
                PRIMARY KEY (tenant_id, family_id, lineage_id, seq)
            )
            """,
        ),
    ),
    Migration(
        "row-level security: each tenant sees only its own rows",
        tuple(
            statement for table in TENANT_TABLES for statement in tenant_policy_statements(table)
        ),
    ),
)

# The tables with the most rows, which `haive-lg migrate --partitions N`
# creates hash-partitioned: a thread's checkpoints and writes by thread, a
# family's values and list items by family (a thread is its own family
# unless copied or branched, so they usually share a partition number).
PARTITIONED = (
    PartitionKey("checkpoints", ("tenant_id", "thread_id")),
    PartitionKey("writes", ("tenant_id", "thread_id")),
    PartitionKey("blobs", ("tenant_id", "family_id")),
    PartitionKey("lineage_items", ("tenant_id", "family_id")),
)

COMPONENT = Component(name="checkpoints", migrations=MIGRATIONS, partitioned=PARTITIONED)


def q(template: str, schema: str) -> sql.Composed:
    """Fill ``{schema}`` in a statement template."""
    return sql.SQL(template).format(schema=sql.Identifier(schema))


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
_KEEP_CLOSURE = """
WITH RECURSIVE starts AS ({starts}
), walk AS (
    SELECT c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
           ARRAY(
               SELECT jsonb_object_keys(
                   coalesce(c.metadata -> 'counters_since_delta_snapshot', '{{}}'::jsonb)
               )
               EXCEPT SELECT unnest(c.value_channels)
               EXCEPT SELECT unnest(c.list_channels)
               EXCEPT SELECT jsonb_object_keys(c.inline_values)
           ) AS need
    FROM starts h JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.thread_id = %(th)s
     AND c.checkpoint_ns = h.checkpoint_ns AND c.checkpoint_id = h.checkpoint_id
    UNION ALL
    SELECT c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
           ARRAY(
               SELECT unnest(w.need)
               EXCEPT SELECT unnest(c.value_channels)
               EXCEPT SELECT unnest(c.list_channels)
               EXCEPT SELECT jsonb_object_keys(c.inline_values)
           )
    FROM walk AS w JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.thread_id = %(th)s
     AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.parent_checkpoint_id
    WHERE cardinality(w.need) > 0
)
SELECT DISTINCT checkpoint_ns, checkpoint_id FROM walk
"""

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
               SELECT unnest(%(channels)s::text[])
               EXCEPT SELECT unnest(c.value_channels)
               EXCEPT SELECT unnest(c.list_channels)
               EXCEPT SELECT jsonb_object_keys(c.inline_values)
           ) AS need_after
    FROM target JOIN {schema}.checkpoints AS c
      ON c.tenant_id = %(t)s AND c.checkpoint_ns = %(ns)s
     AND c.checkpoint_id = target.parent_checkpoint_id """
    + VISIBLE
    + """
    UNION ALL
    SELECT c.thread_id, c.checkpoint_id, c.parent_checkpoint_id, w.depth + 1, w.need_after,
           ARRAY(
               SELECT unnest(w.need_after)
               EXCEPT SELECT unnest(c.value_channels)
               EXCEPT SELECT unnest(c.list_channels)
               EXCEPT SELECT jsonb_object_keys(c.inline_values)
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
