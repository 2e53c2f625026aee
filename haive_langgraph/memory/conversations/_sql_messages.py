"""Statements on message rows (``conversation_messages``): appending a batch,
reading the visible messages of a conversation, writing copied positions.

Templates: ``{schema}`` and ``{columns}`` are filled by :func:`._sql.q`.
"""

from __future__ import annotations

from haive_langgraph.memory.conversations._sql import CHECK, q

# -- appending -------------------------------------------------------------------
#
# One statement per batch: the conversation row is created or updated (which
# locks it, so concurrent appends to one conversation queue up and take
# consecutive positions) and the batch is inserted as one row.
#
# The checks call a PL/pgSQL function: measured 0.07 ms per append for the
# two calls. Rows without a TTL or a limit (every plain history) skip them
# (CASE evaluates its branches lazily).

APPEND_CHECKS = """CASE WHEN c.expires_at IS NULL AND c.max_messages IS NULL THEN true ELSE
        {check}(c.expires_at IS NULL OR c.expires_at > now(), 'HM410', 'expired')
        AND {check}(
            c.max_messages IS NULL OR c.message_count + %(n)s <= c.max_messages,
            'HM413',
            format('holds %%s messages and its limit is %%s', c.message_count, c.max_messages)
        )
    END"""

APPEND_ACTOR_CHECK = """
    AND {check}(
        c.user_id IS NOT DISTINCT FROM %(actor)s
        OR EXISTS (
            SELECT 1 FROM {schema}.conversation_participants AS p
            WHERE p.tenant_id = c.tenant_id
              AND p.conversation_id = c.conversation_id
              AND p.user_id = %(actor)s
              AND p.permission IN ('write', 'moderate')
        ),
        'HM403',
        'write'
    )"""

APPEND_SET = """
    message_count = c.message_count + %(n)s,
    max_chunk = greatest(c.max_chunk, %(n)s),
    last_message_at = now(),
    updated_at = now(),
    expires_at = now() + c.ttl,
    input_tokens = c.input_tokens + %(in)s,
    output_tokens = c.output_tokens + %(out)s,
    total_tokens = c.total_tokens + %(tot)s,
    cost = c.cost + %(sum_cost)s::numeric"""

APPEND_UPSERT = """
    INSERT INTO {schema}.conversations AS c (
        tenant_id, conversation_id, user_id, agent_id, message_count, max_chunk,
        input_tokens, output_tokens, total_tokens, cost
    )
    VALUES (
        %(t)s, %(c)s, %(user)s, %(agent)s, %(n)s, %(n)s,
        %(in)s, %(out)s, %(tot)s, %(sum_cost)s::numeric
    )
    ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET
    {set},
    user_id = coalesce(c.user_id, excluded.user_id),
    agent_id = coalesce(c.agent_id, excluded.agent_id)
    WHERE {checks}"""

APPEND_UPDATE = """
    UPDATE {schema}.conversations AS c SET
    {set}
    WHERE c.tenant_id = %(t)s
      AND c.conversation_id = %(c)s
      AND {checks}"""

APPEND = """
WITH conv AS ({target}
    RETURNING c.message_count - %(n)s AS base
)
INSERT INTO {schema}.conversation_messages (
    tenant_id, conversation_id, seq, n, user_id, message_ids, roles, models,
    input_tokens, output_tokens, total_tokens, costs, latencies, run_ids, body
)
SELECT %(t)s, %(c)s, conv.base, %(n)s, %(author)s, %(ids)s, %(roles)s, %(models)s,
       %(it)s, %(ot)s, %(tt)s, %(costs)s::numeric[], %(lat)s::double precision[], %(runs)s,
       %(body)s
FROM conv
{returning}"""


def append_statement(schema: str, *, upsert: bool, actor: bool, returning: bool) -> str:
    """The append statement for one combination of options.

    Args:
        upsert: Create the conversation if missing (histories, the tracker);
            otherwise it must exist and nothing is inserted when it does not.
        actor: Check that ``%(actor)s`` owns the conversation or may write to it.
        returning: Return (seq, created_at) of the inserted batch.
    """
    checks = APPEND_CHECKS.format(check=CHECK) + (
        APPEND_ACTOR_CHECK.format(check=CHECK, schema="{schema}") if actor else ""
    )
    target = (APPEND_UPSERT if upsert else APPEND_UPDATE).format(
        schema="{schema}", set=APPEND_SET, checks=checks
    )
    statement = APPEND.format(
        schema="{schema}",
        target=target,
        returning="RETURNING seq, created_at" if returning else "",
    )
    return q(statement, schema)


# Locks a conversation (creating it when ``upsert``) before a deduplicating
# append reads the ids it holds.
LOCK_FOR_APPEND_UPSERT = """
INSERT INTO {schema}.conversations AS c (tenant_id, conversation_id, user_id, agent_id)
VALUES (%(t)s, %(c)s, %(user)s, %(agent)s)
ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET updated_at = c.updated_at
RETURNING c.message_count
"""

LOCK_FOR_APPEND = """
SELECT c.message_count FROM {schema}.conversations AS c
WHERE c.tenant_id = %(t)s AND c.conversation_id = %(c)s
FOR UPDATE
"""


# -- reading ----------------------------------------------------------------------
#
# The visible messages of a conversation: its own positions from branch_seq
# on, and below that its parent's (recursively). ``blo``/``bhi`` bound the
# positions wanted (a page, the last n); the walk stops at the first
# ancestor whose positions are not needed.

READ_CHAIN = """
WITH RECURSIVE chain(cid, parent, lo, hi, blo, bhi, mc) AS (
    SELECT c.conversation_id, c.parent_id, c.branch_seq, c.message_count,
           greatest(
               %(lo)s::bigint,
               least(%(hi)s::bigint, c.message_count) - coalesce(%(last)s::bigint, c.message_count)
           ),
           least(%(hi)s::bigint, c.message_count),
           c.max_chunk
    FROM {schema}.conversations AS c
    WHERE c.tenant_id = %(t)s AND c.conversation_id = %(c)s{live}
  UNION ALL
    SELECT p.conversation_id, p.parent_id, p.branch_seq, least(ch.lo, ch.hi), ch.blo, ch.bhi,
           p.max_chunk
    FROM chain AS ch
    JOIN {schema}.conversations AS p ON p.tenant_id = %(t)s AND p.conversation_id = ch.parent
    WHERE least(ch.lo, ch.hi) > ch.blo
)
SELECT {columns},
       greatest(chain.lo, chain.blo) AS from_pos,
       least(chain.hi, chain.bhi) AS to_pos
FROM chain
CROSS JOIN LATERAL (
    SELECT * FROM {schema}.conversation_messages AS m
    WHERE m.tenant_id = %(t)s
      AND m.conversation_id = chain.cid
      AND m.seq > greatest(chain.lo, chain.blo) - chain.mc
      AND m.seq < least(chain.hi, chain.bhi)
      AND m.seq + m.n > greatest(chain.lo, chain.blo)
    OFFSET 0
) AS m
ORDER BY m.seq
"""
# The messages of each conversation of the chain are one primary-key range
# scan (LATERAL, kept from being flattened into a join by OFFSET 0): as a
# plain join, a table not analysed yet (a new deployment) was planned as a
# hash join over every message of the tenant, 0.57 ms of server time for one
# session of 50 against 0.17 ms (the same 0.11 ms once analysed), and a
# prepared statement keeps such a plan until the next ANALYZE.
# A conversation shows its own rows from ``lo`` (its branch point) to ``hi``,
# and its parent's below ``lo``, but never past what the child itself showed
# (a branch of a branch shares a shorter prefix): hence least(lo, hi).
# Each row is a batch; the reader keeps its positions in [from_pos, to_pos).
# A batch overlapping ``from`` starts at most ``max_chunk`` positions before
# it, which bounds the index range scanned.

# Histories do not show an expired session; internal reads (copies) do.
READ_LIVE = "\n      AND (c.expires_at IS NULL OR c.expires_at > now())"

# What a cached read of a conversation is checked against (ops/cache/):
# the versions of the conversation and of every ancestor it shares messages
# with (all of them: a superset of what READ_CHAIN walks), nearest first,
# and whether the conversation is live. No row: it does not exist.
VERSION_CHAIN = """
WITH RECURSIVE chain(parent, depth, version, live) AS (
    SELECT c.parent_id, 0, c.version, c.expires_at IS NULL OR c.expires_at > now()
    FROM {schema}.conversations AS c
    WHERE c.tenant_id = %(t)s AND c.conversation_id = %(c)s
  UNION ALL
    SELECT p.parent_id, ch.depth + 1, p.version, true
    FROM chain AS ch
    JOIN {schema}.conversations AS p ON p.tenant_id = %(t)s AND p.conversation_id = ch.parent
)
SELECT version, live FROM chain ORDER BY depth
"""

BODY_COLUMNS = "m.conversation_id, m.seq, m.n, m.message_ids, m.body"
ID_COLUMNS = "m.conversation_id, m.seq, m.n, m.message_ids"
RECORD_COLUMNS = (
    "m.conversation_id, m.seq, m.n, m.message_ids, m.body, m.roles, m.created_at, m.user_id, "
    "m.copied, m.models, m.input_tokens, m.output_tokens, m.total_tokens, m.costs, "
    "m.latencies, m.run_ids"
)


INSERT_CHUNK = """
INSERT INTO {schema}.conversation_messages (
    tenant_id, conversation_id, seq, n, created_at, user_id, copied, message_ids, roles,
    models, input_tokens, output_tokens, total_tokens, costs, latencies, run_ids, body
)
VALUES (
    %(t)s, %(c)s, %(seq)s, %(n)s, %(created_at)s, %(author)s, %(copied)s, %(ids)s, %(roles)s,
    %(models)s, %(it)s, %(ot)s, %(tt)s, %(costs)s::numeric[], %(lat)s::double precision[],
    %(runs)s, %(body)s
)
"""

NOTE_CHUNKS = """
UPDATE {schema}.conversations SET max_chunk = greatest(max_chunk, %(n)s)
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
"""

DELETE_OWN_MESSAGES = """
DELETE FROM {schema}.conversation_messages
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
"""
