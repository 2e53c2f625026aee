"""Statements of the importers: what they read from a source, what they ask the target.

Templates name their schema and tables with ``{schema}`` / ``{table}``
placeholders; :func:`q` fills them with ``psycopg.sql.Identifier``. Every
value is a parameter.
"""

from __future__ import annotations

from psycopg import sql

TASKS = "__pregel_tasks"


def q(template: str, **names: str | sql.Composable) -> sql.Composed:
    """A template with its ``{placeholders}`` filled: a ``str`` is an identifier
    (quoted), a ``sql.SQL`` one of the column fragments of this module."""
    return sql.SQL(template).format(
        **{k: sql.Identifier(v) if isinstance(v, str) else v for k, v in names.items()}
    )


def fragment(text: str) -> sql.SQL:
    """One of the constant fragments below, for :func:`q`."""
    return sql.SQL(text)


# -- looking at a source ------------------------------------------------------------------

SOURCE_COLUMNS = """
SELECT column_name
FROM information_schema.columns
WHERE table_schema = %s AND table_name = %s
"""

SOURCE_VECTOR_TYPE = """
SELECT t.typname, a.atttypmod
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_type AS t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s AND a.attname = 'embedding' AND NOT a.attisdropped
"""

# -- langgraph-checkpoint-postgres ----------------------------------------------------------

LG_MIGRATION_VERSION = "SELECT max(v) FROM {schema}.checkpoint_migrations"

LG_THREADS = """
SELECT thread_id, count(*)
FROM {schema}.checkpoints
GROUP BY thread_id
ORDER BY thread_id
"""

LG_WRITE_COUNTS = """
SELECT
    count(*),
    count(*) FILTER (WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.checkpoints AS c
        WHERE c.thread_id = w.thread_id
          AND c.checkpoint_ns = w.checkpoint_ns
          AND {checkpoint_id} = w.checkpoint_id
    ))
FROM {schema}.checkpoint_writes AS w
"""

LG_CHECKPOINTS = """
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata
FROM {schema}.checkpoints
WHERE thread_id = %s
ORDER BY checkpoint_ns, checkpoint_id
"""

# ShallowPostgresSaver's layout: one checkpoint per namespace, its id in the body.
LG_CHECKPOINTS_SHALLOW = """
SELECT checkpoint_ns, checkpoint ->> 'id', NULL::text, checkpoint, metadata
FROM {schema}.checkpoints
WHERE thread_id = %s
ORDER BY checkpoint_ns
"""

LG_BLOBS = """
SELECT b.channel, b.version, b.type, b.blob
FROM unnest(%s::text[], %s::text[]) AS u(channel, version)
JOIN {schema}.checkpoint_blobs AS b
  ON b.thread_id = %s AND b.checkpoint_ns = %s
 AND b.channel = u.channel AND b.version = u.version
"""

LG_BLOBS_SHALLOW = """
SELECT channel, '' AS version, type, blob
FROM {schema}.checkpoint_blobs
WHERE thread_id = %s AND checkpoint_ns = %s AND channel = ANY(%s::text[])
"""

LG_WRITES = """
SELECT checkpoint_id, task_id, {task_path}, idx, channel, type, blob
FROM {schema}.checkpoint_writes
WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s::text[])
"""

# The pending sends a checkpoint of format v1-v3 reads from its parent's writes,
# as PostgresSaver reads them (SELECT_PENDING_SENDS_SQL: any namespace).
LG_SENDS = """
SELECT checkpoint_id, type, blob
FROM {schema}.checkpoint_writes
WHERE thread_id = %s AND checkpoint_id = ANY(%s::text[]) AND channel = %s
ORDER BY checkpoint_id, {task_path}, task_id, idx
"""

TASK_PATH = "task_path"
NO_TASK_PATH = "''::text"

# -- LangGraph's PostgresStore ------------------------------------------------------------

LG_STORE_COUNTS = """
SELECT count(*), count(*) FILTER (WHERE {expiry})
FROM {schema}.store
"""

LG_STORE_FIRST_PAGE = """
SELECT prefix, key, value, {expiry} AS expired, {ttl}
FROM {schema}.store
ORDER BY prefix, key
LIMIT %s
"""

LG_STORE_NEXT_PAGE = """
SELECT prefix, key, value, {expiry} AS expired, {ttl}
FROM {schema}.store
WHERE (prefix, key) > (%s, %s)
ORDER BY prefix, key
LIMIT %s
"""

EXPIRED = "(expires_at IS NOT NULL AND expires_at <= now())"
NEVER_EXPIRED = "false"
TTL = "ttl_minutes"
NO_TTL = "NULL::double precision"

LG_STORE_VECTORS = """
SELECT v.prefix, v.key, v.field_name, v.embedding::text
FROM unnest(%s::text[], %s::text[]) AS u(prefix, key)
JOIN {schema}.store_vectors AS v ON v.prefix = u.prefix AND v.key = u.key
"""

LG_STORE_VECTOR_COUNT = """
SELECT count(*)
FROM {schema}.store_vectors AS v
JOIN {schema}.store AS s ON s.prefix = v.prefix AND s.key = v.key
WHERE NOT {expiry}
"""

LG_STORE_FIELDS = "SELECT DISTINCT field_name FROM {schema}.store_vectors ORDER BY 1"

# -- langchain-postgres: PostgresChatMessageHistory ----------------------------------------

CHAT_SESSIONS = """
SELECT session_id, count(*)
FROM {schema}.{table}
GROUP BY session_id
ORDER BY session_id
"""

CHAT_MESSAGES = """
SELECT id, message, created_at
FROM {schema}.{table}
WHERE session_id = %s AND id > %s
ORDER BY id
LIMIT %s
"""

# -- langchain-postgres: PGVector ---------------------------------------------------------

PG_COLLECTION = "SELECT uuid FROM {schema}.langchain_pg_collection WHERE name = %s"

PG_DOC_COUNT = "SELECT count(*) FROM {schema}.langchain_pg_embedding WHERE collection_id = %s"

PG_DOCS_FIRST_PAGE = """
SELECT {order}, {id}, document, cmetadata, embedding::text
FROM {schema}.langchain_pg_embedding
WHERE collection_id = %s
ORDER BY {order}
LIMIT %s
"""

PG_DOCS_NEXT_PAGE = """
SELECT {order}, {id}, document, cmetadata, embedding::text
FROM {schema}.langchain_pg_embedding
WHERE collection_id = %s AND {order} > %s
ORDER BY {order}
LIMIT %s
"""

# -- the target (our tables) --------------------------------------------------------------

TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"

OUR_CHECKPOINT_IDS = """
SELECT checkpoint_ns, checkpoint_id
FROM {schema}.checkpoints
WHERE tenant_id = %s AND thread_id = %s
"""

OUR_WRITE_KEYS = """
SELECT checkpoint_ns, checkpoint_id, task_id, idx
FROM {schema}.writes
WHERE tenant_id = %s AND thread_id = %s
"""

# The time a source checkpoint was taken (its ``ts``) becomes its created_at,
# so that history, time bounds and retention see the imported past as past.
OUR_SET_CREATED_AT = """
UPDATE {schema}.checkpoints AS c
SET created_at = u.ts
FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS u(ns, cid, ts)
WHERE c.tenant_id = %s AND c.thread_id = %s
  AND c.checkpoint_ns = u.ns AND c.checkpoint_id = u.cid
  AND c.created_at IS DISTINCT FROM u.ts
"""

OUR_THREAD_TIMES = """
UPDATE {schema}.threads AS t
SET created_at = least(t.created_at, x.first), updated_at = x.last
FROM (
    SELECT min(created_at) AS first, max(created_at) AS last
    FROM {schema}.checkpoints
    WHERE tenant_id = %s AND thread_id = %s
) AS x
WHERE t.tenant_id = %s AND t.thread_id = %s AND x.first IS NOT NULL
"""

OUR_STORE_VECTORS = """
SELECT key, field, embedding::text
FROM {schema}.store_vectors
WHERE tenant_id = %s AND namespace = %s::text[] AND key = ANY(%s::text[])
"""
