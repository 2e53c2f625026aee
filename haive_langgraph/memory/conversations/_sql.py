"""Schema and migrations of conversation memory, and the statement renderer.

The statements are in ``_sql_messages.py`` (message rows) and
``_sql_conversations.py`` (conversation rows, participants, erasure).

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

from haive_langgraph.codec import Kind, RowContext
from haive_langgraph.db._features import FramedTable, Table
from haive_langgraph.db._migrations import Component, Migration
from haive_langgraph.db._partitions import PartitionKey
from haive_langgraph.db._render import render
from haive_langgraph.db._tenancy import tenant_policy_statements
from haive_langgraph.memory.conversations._codec import details_context, message_context

# SQLSTATEs our checks raise (class "HM": haive memory).
PERMISSION_SQLSTATE = "HM403"
EXPIRED_SQLSTATE = "HM410"
LIMIT_SQLSTATE = "HM413"

TENANT_TABLES = ("conversations", "conversation_messages", "conversation_participants")
# Tables of the fifth migration (the row-security migration above covers the first three).
TOPIC_TABLES = ("conversation_topics", "conversation_merges")
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
    # (histories, ConversationStore, SessionStore, the tracker, erasure,
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
    # What a row is, for tenant quotas (tenants/_quota_sql.py): 'session' for
    # sessions (SessionStore, and their branches); NULL for chat histories
    # and conversations. Every row counts as a conversation.
    Migration(
        "conversation kinds: sessions are marked",
        ("ALTER TABLE {schema}.conversations ADD COLUMN IF NOT EXISTS kind text",),
    ),
    # Topic threading and model-assisted merges (_topics.py, _model_merge.py).
    # A session's topic is the running mean of the embeddings of the messages
    # routed to it (`n` of them); a merge record keeps a model's decision (a
    # codec frame: its reasons may quote messages). Both go with their
    # conversation (ON DELETE CASCADE: delete, purge, erasure).
    Migration(
        "session topics and merge records",
        (
            """
            CREATE TABLE IF NOT EXISTS {schema}.conversation_topics (
                tenant_id       text COLLATE "C" NOT NULL DEFAULT '',
                conversation_id text COLLATE "C" NOT NULL,
                user_id         text COLLATE "C" NOT NULL,
                agent_id        text COLLATE "C",
                centroid        real[] NOT NULL,
                n               bigint NOT NULL CHECK (n > 0),
                updated_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (tenant_id, conversation_id),
                FOREIGN KEY (tenant_id, conversation_id)
                    REFERENCES {schema}.conversations (tenant_id, conversation_id)
                    ON DELETE CASCADE
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS conversation_topics_user_idx
                ON {schema}.conversation_topics (tenant_id, user_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS {schema}.conversation_merges (
                tenant_id       text COLLATE "C" NOT NULL DEFAULT '',
                conversation_id text COLLATE "C" NOT NULL,
                merge_id        text COLLATE "C" NOT NULL,
                primary_id      text COLLATE "C" NOT NULL,
                secondary_id    text COLLATE "C" NOT NULL,
                user_id         text COLLATE "C" NOT NULL,
                model           text,
                conflict        text NOT NULL,
                created_at      timestamptz NOT NULL DEFAULT now(),
                decision        bytea NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id, merge_id),
                FOREIGN KEY (tenant_id, conversation_id)
                    REFERENCES {schema}.conversations (tenant_id, conversation_id)
                    ON DELETE CASCADE
            )
            """,
            *(s for table in TOPIC_TABLES for s in tenant_policy_statements(table)),
        ),
    ),
)

# `haive-lg migrate --partitions N` hash-partitions the messages by conversation.
PARTITIONED = (PartitionKey("conversation_messages", ("tenant_id", "conversation_id")),)

# The component's entry in the registry of tables (db/_features.py): every
# table holds tenant rows; frames are message batches and details, bound by
# the writer's row contexts (_codec.py).


def _message_context(tenant_id: str, conversation_id: str, seq: int) -> RowContext:
    return message_context(tenant_id, conversation_id)


def merge_context(tenant_id: str, conversation_id: str, merge_id: str) -> RowContext:
    """The row context of a merge record's decision (bound to its row)."""
    return RowContext(tenant_id, conversation_id, Kind.METADATA, f"merge:{merge_id}")


FRAMED = (
    FramedTable(
        "conversation_messages",
        (("tenant_id", "text"), ("conversation_id", "text"), ("seq", "bigint")),
        _message_context,
        frame_column="body",
    ),
    FramedTable(
        "conversations",
        (("tenant_id", "text"), ("conversation_id", "text")),
        details_context,
        frame_column="details",
    ),
    FramedTable(
        "conversation_merges",
        (("tenant_id", "text"), ("conversation_id", "text"), ("merge_id", "text")),
        merge_context,
        frame_column="decision",
    ),
)

COMPONENT = Component(
    "conversations",
    MIGRATIONS,
    partitioned=PARTITIONED,
    tables=tuple(Table(name) for name in (*TENANT_TABLES, *TOPIC_TABLES)),
    framed=FRAMED,
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


def q(template: str, schema: str, **fragments: str) -> str:
    """A statement template as SQL text for ``schema`` (see :func:`render`), with
    ``{columns}`` the conversation columns and any other ``fragments`` filled first."""
    return render(template, schema, **fragments, columns=CONVERSATION_COLUMNS)


CHECK = "{schema}.haive_conversation_check"
