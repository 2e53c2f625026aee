"""Statements of tenant analytics (``_analytics.py``) and the indexes they need
(component ``tenant_analytics``).

Every figure comes from columns the features keep for the purpose, never from
message bodies: a conversation's ``created_at``; a message batch's
``created_at``, size ``n`` and usage arrays (models, tokens, costs: the same
rows and rules as the conversation store's usage reports); the stored values'
``octet_length`` (read from the value's header, never decompressed or
decoded); the request counters of ``tenant_requests``.

The time range needs an index on each table it filters: a BRIN index on the
message batches' ``created_at`` (rows are appended in time order; it costs
appends almost nothing, where a B-tree would add one more entry to every
append) and a B-tree on the conversations' ``created_at`` (written once per
conversation; appends update the row but not this column, so they stay HOT).
"""

from __future__ import annotations

from haive_langgraph.db._migrations import Component, Migration

MIGRATIONS = (
    Migration(
        "tenant analytics: time-range indexes on conversations and message batches",
        (
            """
            CREATE INDEX IF NOT EXISTS conversations_created_idx
                ON {schema}.conversations (created_at)
            """,
            """
            CREATE INDEX IF NOT EXISTS conversation_messages_created_brin
                ON {schema}.conversation_messages USING brin (created_at)
                WITH (pages_per_range = 32)
            """,
        ),
    ),
)

COMPONENT = Component(name="tenant_analytics", migrations=MIGRATIONS, requires=("conversations",))

TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"

# Whether row security restricts this role on a table (NULL: no such table).
ROW_SECURITY = """
SELECT CASE WHEN to_regclass(%(table)s) IS NULL THEN NULL
            ELSE row_security_active(to_regclass(%(table)s)) END
"""

DISPLAY_NAMES = "SELECT tenant_id, display_name FROM {schema}.tenants"

# Conversations (chat histories included) and sessions created in the range.
CONVERSATIONS_CREATED = """
SELECT c.tenant_id,
       count(*) FILTER (WHERE c.kind IS DISTINCT FROM 'session'),
       count(*) FILTER (WHERE c.kind = 'session')
FROM {schema}.conversations AS c
WHERE c.created_at >= %(since)s AND c.created_at < %(until)s
GROUP BY c.tenant_id
"""

# One pass over the batches written in the range: per tenant, UTC day and
# model, the messages (each batch's n counted once, with its first usage
# element, or alone when it has no usage) and the usage of the messages that
# reported some. Copies a branch received of its parent's batches
# (``copied``) were counted where they were first written. The arrays are
# unnested in the select list (zipped, padded with NULLs): on 100,000 batches
# 198 ms against 523-667 ms for a LATERAL unnest(...) WITH ORDINALITY, whose
# per-row function scan cost ~3 us and whose group estimate led to a sort
# spilling to disk at the default work_mem.
USAGE_BY_DAY = """
SELECT x.tenant_id, x.day, coalesce(x.model, '') AS model,
       coalesce(sum(x.n) FILTER (WHERE x.ord = 1), 0) AS messages,
       count(*) FILTER (WHERE x.tt IS NOT NULL) AS reported,
       coalesce(sum(x.it) FILTER (WHERE x.tt IS NOT NULL), 0) AS input_tokens,
       coalesce(sum(x.ot) FILTER (WHERE x.tt IS NOT NULL), 0) AS output_tokens,
       coalesce(sum(x.tt), 0) AS total_tokens,
       coalesce(sum(x.cost) FILTER (WHERE x.tt IS NOT NULL), 0) AS cost
FROM (
    SELECT m.tenant_id, (m.created_at AT TIME ZONE 'UTC')::date AS day, m.n,
           unnest(coalesce(m.models, ARRAY[NULL::text])) AS model,
           unnest(m.input_tokens) AS it,
           unnest(m.output_tokens) AS ot,
           unnest(m.total_tokens) AS tt,
           unnest(m.costs) AS cost,
           generate_series(1, coalesce(cardinality(m.models), 1)) AS ord
    FROM {schema}.conversation_messages AS m
    WHERE m.created_at >= %(since)s AND m.created_at < %(until)s AND NOT m.copied
) AS x
GROUP BY 1, 2, 3
"""

# Storage now (not in the range): bytes of the stored values per tenant.
STORAGE = {
    "checkpoints": """
SELECT s.tenant_id, sum(s.b)::bigint FROM (
    SELECT b.tenant_id, sum(octet_length(b.data)) AS b
    FROM {schema}.blobs AS b GROUP BY b.tenant_id
    UNION ALL
    SELECT c.tenant_id, sum(pg_column_size(c.checkpoint) + pg_column_size(c.metadata))
    FROM {schema}.checkpoints AS c GROUP BY c.tenant_id
) AS s
GROUP BY s.tenant_id
""",
    "conversations": """
SELECT m.tenant_id, sum(octet_length(m.body))::bigint
FROM {schema}.conversation_messages AS m
GROUP BY m.tenant_id
""",
    "store": """
SELECT s.tenant_id, sum(octet_length(s.value))::bigint
FROM {schema}.store_items AS s
GROUP BY s.tenant_id
""",
}

# The table each storage figure reads (skipped when the schema lacks it).
STORAGE_TABLES = {
    "checkpoints": "checkpoints",
    "conversations": "conversation_messages",
    "store": "store_items",
}

REQUESTS = """
SELECT r.tenant_id, sum(r.n)::bigint
FROM {schema}.tenant_requests AS r
WHERE r.minute >= %(since)s AND r.minute < %(until)s
GROUP BY r.tenant_id
"""
