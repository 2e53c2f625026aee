"""Statements of per-tenant retention (``_retention.py``): which tenants have a
retention setting, and what of theirs is older than it.

Checkpoints and conversations are deleted by their features' own operations
(the checkpointer's retention, the conversations' erasure); only the store's
items are deleted here, by one statement.
"""

from __future__ import annotations

TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"

# The tenants whose settings hold a data_retention_days or a compliance mode
# (whose default retention applies when they name none).
RETAINED_TENANTS = """
SELECT t.tenant_id,
       CASE WHEN jsonb_typeof(t.settings -> 'data_retention_days') = 'number'
            THEN (t.settings ->> 'data_retention_days')::double precision END,
       CASE WHEN jsonb_typeof(t.settings -> 'compliance_mode') = 'string'
            THEN t.settings ->> 'compliance_mode' END
FROM {schema}.tenants AS t
WHERE (jsonb_typeof(t.settings -> 'data_retention_days') = 'number'
       OR jsonb_typeof(t.settings -> 'compliance_mode') = 'string')
  AND (%(tenants)s::text[] IS NULL OR t.tenant_id = ANY(%(tenants)s::text[]))
ORDER BY t.tenant_id
"""

# Threads of the tenant not written since the cutoff (the checkpointer's
# retention checks again, under the thread family's lock).
STALE_THREADS = """
SELECT th.thread_id
FROM {schema}.threads AS th
WHERE th.tenant_id = %(t)s AND th.updated_at < %(cutoff)s
ORDER BY th.thread_id
"""

# Conversations (chat histories and sessions are conversation rows) with no
# change and no message since the cutoff.
STALE_CONVERSATIONS = """
SELECT c.conversation_id
FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s AND greatest(c.updated_at, c.last_message_at) < %(cutoff)s
ORDER BY c.conversation_id
"""

# The same test on rows locked by the erasure (a writer may have come between),
# with what each row is ('session' for sessions).
STILL_STALE = """
SELECT c.conversation_id, c.kind
FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s AND c.conversation_id = ANY(%(ids)s)
  AND greatest(c.updated_at, c.last_message_at) < %(cutoff)s
ORDER BY c.conversation_id
FOR UPDATE
"""

# Bytes of the message batches a conversation wrote itself (copies held by
# branches are counted once, where they were written).
CONVERSATION_BYTES = """
SELECT coalesce(sum(octet_length(m.body)), 0)
FROM {schema}.conversation_messages AS m
WHERE m.tenant_id = %(t)s AND m.conversation_id = ANY(%(ids)s)
"""

# Store items (vector memory's too) not written since the cutoff; their
# vectors go with them (foreign key), the quota counters follow (trigger).
DELETE_STALE_ITEMS = """
WITH gone AS (
    DELETE FROM {schema}.store_items AS s
    WHERE s.tenant_id = %(t)s AND s.updated_at < %(cutoff)s
    RETURNING octet_length(s.value) AS b
)
SELECT count(*), coalesce(sum(b), 0) FROM gone
"""
