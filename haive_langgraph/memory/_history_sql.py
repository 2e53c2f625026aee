"""Schema, migrations and statements of conversation memory.

Storage model (see ``docs/conversations.md``):

* ``conversations``: one row per chat history, conversation or session. It
  is the registry (owner, agent, tags, timestamps, totals of tokens and cost)
  and the sequence counter of its messages: every append updates its
  ``message_count`` in the same statement that inserts the messages, so the
  row lock orders concurrent writers and positions stay gap-free. No index
  covers a column an append changes, so the update is a HOT update.
* ``conversation_messages``: one row per appended batch ("chunk"): the
  position of its first message (``seq``), its size ``n``, arrays of message
  ids, roles and token usage (so totals are SQL aggregates), and ONE codec
  frame holding the batch's messages, bound to (tenant, conversation, the
  message ids). A batch of 20 is one row, one index entry and one
  compression/encryption. Measured here, appending 20 pre-encoded messages
  with a durable commit: 0.68 ms as one row against 0.81 ms as 20 rows (the
  commit alone is 0.32 ms); the client frames once instead of 20 times; and
  a 200-message session written in batches reads as 10 rows.
* A branch shares its source's first messages instead of copying them: it
  records ``parent_id`` and ``branch_seq`` (how many of the parent's
  positions it sees), and a read walks that chain. When a conversation's
  shared positions change (clear, delete, erasure, an interleaving merge),
  the positions its branches still need are copied into them first.
* ``conversation_participants``: who may read, write or moderate a
  collaborative session.

Every table leads its primary key with ``tenant_id``.
"""

from __future__ import annotations

from psycopg import sql

from haive_langgraph.db import Component, Migration, PartitionKey
from haive_langgraph.db._tenancy import tenant_policy_statements

# SQLSTATEs our checks raise (class "HM": haive memory).
PERMISSION_SQLSTATE = "HM403"
EXPIRED_SQLSTATE = "HM410"
LIMIT_SQLSTATE = "HM413"

TENANT_TABLES = ("conversations", "conversation_messages", "conversation_participants")
# The table whose row security tells whether a connection must bind its tenant.
SCOPE_TABLE = "conversations"

MIGRATIONS = (
    Migration(
        "conversation tables",
        (
            """
            CREATE OR REPLACE FUNCTION {schema}.haive_conversation_check(
                ok boolean, code text, message text
            )
            RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                IF ok IS NOT TRUE THEN
                    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
                END IF;
                RETURN true;
            END
            $$
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.conversations (
                tenant_id       text COLLATE "C" NOT NULL DEFAULT '',
                conversation_id text COLLATE "C" NOT NULL,
                user_id         text COLLATE "C",
                agent_id        text COLLATE "C",
                parent_id       text COLLATE "C",
                branch_seq      bigint NOT NULL DEFAULT 0,
                created_at      timestamptz NOT NULL DEFAULT now(),
                updated_at      timestamptz NOT NULL DEFAULT now(),
                last_message_at timestamptz NOT NULL DEFAULT now(),
                message_count   bigint NOT NULL DEFAULT 0,
                input_tokens    bigint NOT NULL DEFAULT 0,
                output_tokens   bigint NOT NULL DEFAULT 0,
                total_tokens    bigint NOT NULL DEFAULT 0,
                cost            numeric NOT NULL DEFAULT 0,
                tags            text[] NOT NULL DEFAULT '{{}}',
                settings        jsonb NOT NULL DEFAULT '{{}}',
                details         bytea,
                ttl             interval,
                expires_at      timestamptz,
                max_messages    bigint,
                max_chunk       bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id, conversation_id)
            ) WITH (fillfactor = 80)
            """,
            """
            CREATE INDEX IF NOT EXISTS conversations_user_idx
                ON {schema}.conversations (tenant_id, user_id)
            """,
            """
            CREATE INDEX IF NOT EXISTS conversations_agent_idx
                ON {schema}.conversations (tenant_id, agent_id) WHERE agent_id IS NOT NULL
            """,
            """
            CREATE INDEX IF NOT EXISTS conversations_parent_idx
                ON {schema}.conversations (tenant_id, parent_id) WHERE parent_id IS NOT NULL
            """,
            """
            CREATE INDEX IF NOT EXISTS conversations_expires_idx
                ON {schema}.conversations (tenant_id, expires_at) WHERE expires_at IS NOT NULL
            """,
            """
            CREATE INDEX IF NOT EXISTS conversations_tags_idx
                ON {schema}.conversations USING gin (tags)
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.conversation_messages (
                tenant_id       text COLLATE "C" NOT NULL DEFAULT '',
                conversation_id text COLLATE "C" NOT NULL,
                seq             bigint NOT NULL,
                n               integer NOT NULL CHECK (n > 0),
                created_at      timestamptz NOT NULL DEFAULT now(),
                user_id         text COLLATE "C",
                copied          boolean NOT NULL DEFAULT false,
                message_ids     text[] NOT NULL,
                roles           text[] NOT NULL,
                models          text[],
                input_tokens    integer[],
                output_tokens   integer[],
                total_tokens    integer[],
                costs           numeric[],
                latencies       double precision[],
                run_ids         text[],
                body            bytea NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id, seq)
            ) WITH (toast_tuple_target = 8160)
            """,
            # Bodies are compressed by the codec when that pays; PostgreSQL
            # should not try again. A batch up to ~8 kB stays in its row.
            """
            ALTER TABLE {schema}.conversation_messages ALTER COLUMN body SET STORAGE EXTERNAL
            """,
            """
            CREATE INDEX IF NOT EXISTS conversation_messages_user_idx
                ON {schema}.conversation_messages (tenant_id, user_id) WHERE user_id IS NOT NULL
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.conversation_participants (
                tenant_id       text COLLATE "C" NOT NULL DEFAULT '',
                conversation_id text COLLATE "C" NOT NULL,
                user_id         text COLLATE "C" NOT NULL,
                permission      text NOT NULL
                    CHECK (permission IN ('read', 'write', 'moderate')),
                added_at        timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, conversation_id, user_id)
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS conversation_participants_user_idx
                ON {schema}.conversation_participants (tenant_id, user_id)
            """,
        ),
    ),
    Migration(
        "row-level security: each tenant sees only its own rows",
        tuple(s for table in TENANT_TABLES for s in tenant_policy_statements(table)),
    ),
    # Conversation versions, for caches (ops/cache/): a conversation's
    # `version` takes a new value from one sequence in every transaction
    # that changes the row or the message rows it holds, whoever writes
    # (histories, ConversationStore, SessionManager, the tracker, erasure,
    # hand-written SQL). Values are never reused, also across a delete and
    # re-create of the same id, so an equal version means equal messages.
    # Message rows that are updated or deleted (erasure deletes a user's
    # messages in other conversations without touching them) renew their
    # conversations' versions, skipping rows this transaction already changed
    # (their xmin is ours). Inserts need no trigger: a message row is visible
    # only below its conversation's message_count, and every insert of ours
    # updates that row in the same transaction (the append's counter,
    # NOTE_CHUNKS after copies, RECOUNT after merges). Measured on PostgreSQL
    # 15: the version trigger adds 0.01-0.03 ms to a 0.45 ms append; a
    # statement trigger on inserts would add 0.04 ms more.
    Migration(
        "conversation versions: every change of a conversation's messages gives it a new version",
        (
            "CREATE SEQUENCE IF NOT EXISTS {schema}.conversation_versions",
            """
            ALTER TABLE {schema}.conversations
                ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0
            """,
            """
            CREATE OR REPLACE FUNCTION {schema}.haive_conversation_version() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                NEW.version := nextval('{schema}.conversation_versions');
                RETURN NEW;
            END
            $$
            """,
            "DROP TRIGGER IF EXISTS conversations_version ON {schema}.conversations",
            """
            CREATE TRIGGER conversations_version
                BEFORE INSERT OR UPDATE ON {schema}.conversations
                FOR EACH ROW EXECUTE FUNCTION {schema}.haive_conversation_version()
            """,
            """
            CREATE OR REPLACE FUNCTION {schema}.haive_conversation_messages_changed()
            RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            BEGIN
                IF TG_OP = 'TRUNCATE' THEN
                    UPDATE {schema}.conversations SET version = version;
                ELSE
                    -- `version = version`: the row trigger assigns the new one.
                    UPDATE {schema}.conversations AS c SET version = c.version
                    FROM (
                        SELECT DISTINCT r.tenant_id, r.conversation_id FROM changed_rows AS r
                    ) AS d
                    WHERE c.tenant_id = d.tenant_id
                      AND c.conversation_id = d.conversation_id
                      AND c.xmin <> pg_current_xact_id()::xid;
                END IF;
                RETURN NULL;
            END
            $$
            """,
            "DROP TRIGGER IF EXISTS conversation_messages_update ON {schema}.conversation_messages",
            """
            CREATE TRIGGER conversation_messages_update
                AFTER UPDATE ON {schema}.conversation_messages
                REFERENCING OLD TABLE AS changed_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.haive_conversation_messages_changed()
            """,
            "DROP TRIGGER IF EXISTS conversation_messages_delete ON {schema}.conversation_messages",
            """
            CREATE TRIGGER conversation_messages_delete
                AFTER DELETE ON {schema}.conversation_messages
                REFERENCING OLD TABLE AS changed_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.haive_conversation_messages_changed()
            """,
            "DROP TRIGGER IF EXISTS conversation_messages_truncate ON {schema}.conversation_messages",
            """
            CREATE TRIGGER conversation_messages_truncate
                AFTER TRUNCATE ON {schema}.conversation_messages
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.haive_conversation_messages_changed()
            """,
        ),
    ),
)

# `haive-lg migrate --partitions N` hash-partitions the messages by conversation.
PARTITIONED = (PartitionKey("conversation_messages", ("tenant_id", "conversation_id")),)

COMPONENT = Component("conversations", MIGRATIONS, partitioned=PARTITIONED)


def q(template: str, schema: str) -> str:
    """Fill ``{columns}`` (conversation columns) and ``{schema}`` in a statement
    template and render it to text."""
    template = template.replace("{columns}", CONVERSATION_COLUMNS)
    return sql.SQL(template).format(schema=sql.Identifier(schema)).as_string(None)


CHECK = "{schema}.haive_conversation_check"

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

CONVERSATION_COLUMNS = """
    c.conversation_id, c.user_id, c.agent_id, c.parent_id, c.branch_seq,
    c.created_at, c.updated_at, c.last_message_at, c.message_count,
    c.input_tokens, c.output_tokens, c.total_tokens, c.cost,
    c.tags, c.settings, c.details, c.ttl, c.expires_at, c.max_messages,
    c.expires_at IS NOT NULL AND c.expires_at <= now() AS expired, c.max_chunk,
    ARRAY(
        SELECT p.user_id FROM {schema}.conversation_participants AS p
        WHERE p.tenant_id = c.tenant_id AND p.conversation_id = c.conversation_id
        ORDER BY p.user_id
    ) AS participant_ids,
    ARRAY(
        SELECT p.permission FROM {schema}.conversation_participants AS p
        WHERE p.tenant_id = c.tenant_id AND p.conversation_id = c.conversation_id
        ORDER BY p.user_id
    ) AS permissions"""

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
        tags, settings, details, ttl, expires_at, max_messages
    )
    VALUES (
        %(t)s, %(c)s, %(user)s, %(agent)s, %(parent)s, %(branch)s, %(branch)s,
        %(tags)s, %(settings)s, %(details)s, %(ttl)s::interval, now() + %(ttl)s::interval,
        %(max)s::bigint
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
# its own CTE inserted. ``HistoryOps.create`` fills them in from the parameters.)

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

SET_PARENT = """
UPDATE {schema}.conversations
SET parent_id = %(parent)s, branch_seq = %(branch)s, updated_at = now()
WHERE tenant_id = %(t)s AND conversation_id = %(c)s
"""

DELETE_OWN_MESSAGES = """
DELETE FROM {schema}.conversation_messages
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
