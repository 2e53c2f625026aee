"""Statements on conversation rows: reading, locking, creating, querying,
usage, branches' parents, erasure, details and participants.

Templates: ``{schema}`` and ``{columns}`` are filled by :func:`._sql.q`.
"""

from __future__ import annotations

GET_CONVERSATION = """
SELECT {columns}
FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s AND c.conversation_id = %(c)s
"""

LOCK_CONVERSATIONS = """
SELECT {columns}
FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s AND c.conversation_id = ANY(%(ids)s)
ORDER BY c.conversation_id
FOR UPDATE OF c
"""

# A branch being created pins its source's shared positions: KEY SHARE
# conflicts with the FOR UPDATE that clear/delete/merge take, not with appends.
PIN_CONVERSATION = """
SELECT {columns}
FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s AND c.conversation_id = %(c)s
FOR KEY SHARE OF c
"""

CREATE_CONVERSATION = """
WITH c AS (
    INSERT INTO {schema}.conversations AS c (
        tenant_id, conversation_id, user_id, agent_id, parent_id, branch_seq, message_count,
        tags, settings, details, ttl, expires_at, max_messages, kind
    )
    VALUES (
        %(t)s, %(c)s, %(user)s, %(agent)s, %(parent)s, %(branch)s, %(branch)s,
        %(tags)s, %(settings)s, %(details)s, %(ttl)s::interval, now() + %(ttl)s::interval,
        %(max)s::bigint, %(kind)s
    )
    ON CONFLICT (tenant_id, conversation_id) DO NOTHING
    RETURNING *
),
p AS (
    INSERT INTO {schema}.conversation_participants (tenant_id, conversation_id, user_id, permission)
    SELECT c.tenant_id, c.conversation_id, u.user_id, u.permission
    FROM c, unnest(%(pids)s, %(perms)s) AS u(user_id, permission)
)
SELECT {columns}
FROM c
"""
# (Its participant arrays come back empty: a statement does not see the rows
# its own CTE inserted. ``_rows.create`` fills them in from the parameters.)

QUERY_CONVERSATIONS = """
SELECT {columns}
FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s {where}
ORDER BY {order} DESC, c.conversation_id DESC
LIMIT %(limit)s
"""

QUERY_FILTERS = {
    "user_id": "c.user_id = %(user_id)s",
    "agent_id": "c.agent_id = %(agent_id)s",
    "created_after": "c.created_at > %(created_after)s",
    "created_before": "c.created_at < %(created_before)s",
    "tags": "c.tags @> %(tags)s",
    "min_messages": "c.message_count >= %(min_messages)s",
    "parent_id": "c.parent_id = %(parent_id)s",
    "participant": """(c.user_id = %(participant)s OR EXISTS (
        SELECT 1 FROM {schema}.conversation_participants AS p
        WHERE p.tenant_id = c.tenant_id AND p.conversation_id = c.conversation_id
          AND p.user_id = %(participant)s))""",
    "live": "(c.expires_at IS NULL OR c.expires_at > now())",
}
ORDER_COLUMNS = {
    "last_message_at": "c.last_message_at",
    "created_at": "c.created_at",
    "updated_at": "c.updated_at",
}
QUERY_AFTER = "AND ({order}, c.conversation_id) < (%(after_value)s, %(after_id)s)"

# -- usage ------------------------------------------------------------------------

USAGE_OF_ROWS = """
SELECT coalesce(u.model, ''), count(*), coalesce(sum(u.it), 0), coalesce(sum(u.ot), 0),
       coalesce(sum(u.tt), 0), coalesce(sum(u.cost), 0)
FROM {rows} AS m
CROSS JOIN LATERAL unnest(m.models, m.input_tokens, m.output_tokens, m.total_tokens, m.costs)
    AS u(model, it, ot, tt, cost)
WHERE NOT m.copied AND m.total_tokens IS NOT NULL AND u.tt IS NOT NULL
GROUP BY 1
ORDER BY 1
"""

CONVERSATION_USAGE = USAGE_OF_ROWS.replace(
    "{rows}",
    """(
    SELECT * FROM {schema}.conversation_messages
    WHERE tenant_id = %(t)s AND conversation_id = %(c)s
)""",
)

USER_USAGE = USAGE_OF_ROWS.replace(
    "{rows}",
    """(
    SELECT m.* FROM {schema}.conversations AS c
    JOIN {schema}.conversation_messages AS m
      ON m.tenant_id = c.tenant_id AND m.conversation_id = c.conversation_id
    WHERE c.tenant_id = %(t)s AND c.user_id = %(u)s
      AND (%(since)s::timestamptz IS NULL OR m.created_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR m.created_at < %(until)s::timestamptz)
)""",
)

# -- copying shared positions, deleting -------------------------------------------

CHILDREN = """
SELECT conversation_id, parent_id, branch_seq
FROM {schema}.conversations
WHERE tenant_id = %(t)s AND parent_id = ANY(%(ids)s) AND NOT (conversation_id = ANY(%(ids)s))
ORDER BY conversation_id
FOR UPDATE
"""

SET_PARENT = """
UPDATE {schema}.conversations
SET parent_id = %(parent)s, branch_seq = %(branch)s, updated_at = now()
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
"""

DELETE_MESSAGES_OF = """
WITH d AS (
    DELETE FROM {schema}.conversation_messages
    WHERE tenant_id = %(t)s AND conversation_id = ANY(%(ids)s)
    RETURNING n
)
SELECT coalesce(sum(n), 0) FROM d
"""

DELETE_PARTICIPANTS_OF = """
DELETE FROM {schema}.conversation_participants
WHERE tenant_id = %(t)s AND conversation_id = ANY(%(ids)s)
"""

DELETE_CONVERSATIONS = """
DELETE FROM {schema}.conversations
WHERE tenant_id = %(t)s AND conversation_id = ANY(%(ids)s)
"""

USER_CONVERSATIONS = """
SELECT conversation_id FROM {schema}.conversations
WHERE tenant_id = %(t)s AND user_id = %(u)s
ORDER BY conversation_id
FOR UPDATE
"""

EXPIRED_CONVERSATIONS = """
SELECT conversation_id FROM {schema}.conversations
WHERE tenant_id = %(t)s AND expires_at <= now()
ORDER BY conversation_id
FOR UPDATE SKIP LOCKED
"""

DELETE_USER_MESSAGES = """
WITH d AS (
    DELETE FROM {schema}.conversation_messages
    WHERE tenant_id = %(t)s AND user_id = %(u)s
    RETURNING n
)
SELECT coalesce(sum(n), 0) FROM d
"""

DELETE_USER_PARTICIPATION = """
DELETE FROM {schema}.conversation_participants WHERE tenant_id = %(t)s AND user_id = %(u)s
"""

# Totals cover a conversation's own messages (copies were counted where they
# were written).
RECOUNT = """
UPDATE {schema}.conversations AS c SET
    message_count = %(n)s,
    branch_seq = %(branch)s,
    parent_id = %(parent)s,
    updated_at = now(),
    max_chunk = s.max_chunk,
    input_tokens = s.input_tokens,
    output_tokens = s.output_tokens,
    total_tokens = s.total_tokens,
    cost = s.cost
FROM (
    SELECT coalesce(max(m.n), 0) AS max_chunk,
           coalesce(sum(u.it) FILTER (WHERE NOT m.copied), 0) AS input_tokens,
           coalesce(sum(u.ot) FILTER (WHERE NOT m.copied), 0) AS output_tokens,
           coalesce(sum(u.tt) FILTER (WHERE NOT m.copied), 0) AS total_tokens,
           coalesce(sum(u.cost) FILTER (WHERE NOT m.copied), 0) AS cost
    FROM {schema}.conversation_messages AS m
    LEFT JOIN LATERAL unnest(m.input_tokens, m.output_tokens, m.total_tokens, m.costs)
        AS u(it, ot, tt, cost) ON true
    WHERE m.tenant_id = %(t)s AND m.conversation_id = %(c)s
) AS s
WHERE c.tenant_id = %(t)s AND c.conversation_id = %(c)s
"""

SET_DETAILS = """
UPDATE {schema}.conversations SET details = %(details)s, updated_at = now()
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
"""

UPSERT_PARTICIPANTS = """
INSERT INTO {schema}.conversation_participants AS p (tenant_id, conversation_id, user_id, permission)
SELECT %(t)s, %(c)s, u.user_id, u.permission
FROM unnest(%(pids)s, %(perms)s) AS u(user_id, permission)
ON CONFLICT (tenant_id, conversation_id, user_id) DO {conflict}
"""
PARTICIPANTS_REPLACE = "UPDATE SET permission = excluded.permission"
PARTICIPANTS_KEEP = "NOTHING"

DELETE_PARTICIPANT = """
DELETE FROM {schema}.conversation_participants
WHERE tenant_id = %(t)s AND conversation_id = %(c)s AND user_id = %(u)s
"""
