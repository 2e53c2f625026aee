"""Statements of topic threading and model-assisted merges (tables of the fifth
migration in ``_sql.py``: ``conversation_topics``, ``conversation_merges``)."""

from __future__ import annotations

# The class of the advisory lock that orders routings of one user (two-key form:
# the second key is a hash of tenant and user). "HMTP" in ASCII.
ROUTING_LOCK_CLASS = 0x484D5450

LOCK_USER_ROUTING = """
SELECT pg_advisory_xact_lock(%(class)s::int4, hashtext(%(t)s || '/' || %(u)s))
"""

# The user's sessions that can take one more message: owned, live, below their limit.
OPEN_TOPICS = """
SELECT p.conversation_id, p.centroid, p.n
FROM {schema}.conversation_topics AS p
JOIN {schema}.conversations AS c
  ON c.tenant_id = p.tenant_id AND c.conversation_id = p.conversation_id
WHERE p.tenant_id = %(t)s
  AND p.user_id = %(u)s
  AND p.agent_id IS NOT DISTINCT FROM %(agent)s
  AND c.user_id = %(u)s
  AND (c.expires_at IS NULL OR c.expires_at > now())
  AND (c.max_messages IS NULL OR c.message_count < c.max_messages)
ORDER BY p.conversation_id
"""

UPSERT_TOPIC = """
INSERT INTO {schema}.conversation_topics AS p
    (tenant_id, conversation_id, user_id, agent_id, centroid, n, updated_at)
VALUES (%(t)s, %(c)s, %(u)s, %(agent)s, %(centroid)s::real[], %(n)s, now())
ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET
    centroid = excluded.centroid,
    n = excluded.n,
    updated_at = now()
"""

GET_TOPIC = """
SELECT centroid, n FROM {schema}.conversation_topics
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
"""

INSERT_MERGE = """
INSERT INTO {schema}.conversation_merges
    (tenant_id, conversation_id, merge_id, primary_id, secondary_id, user_id, model,
     conflict, decision)
VALUES (%(t)s, %(c)s, %(m)s, %(primary)s, %(secondary)s, %(u)s, %(model)s,
        %(conflict)s, %(decision)s)
RETURNING created_at
"""

MERGES_OF = """
SELECT conversation_id, merge_id, primary_id, secondary_id, user_id, model, conflict,
       created_at, decision
FROM {schema}.conversation_merges
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
ORDER BY created_at, merge_id
"""

# Whether the audit log is there (the audit component is optional).
AUDIT_LOG_EXISTS = "SELECT to_regclass(%(name)s) IS NOT NULL"

# Erasure of a user: the merge records of merges that read one of their sessions
# (the decision may quote or rewrite their messages). Records of merges the user
# made go with the merged session, which the user owns.
DELETE_MERGES_FROM = """
DELETE FROM {schema}.conversation_merges
WHERE tenant_id = %(t)s AND (primary_id = ANY(%(ids)s) OR secondary_id = ANY(%(ids)s))
"""
