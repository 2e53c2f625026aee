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

from haive_langgraph.checkpointers._columns import body_context, metadata_context
from haive_langgraph.codec import Kind, RowContext
from haive_langgraph.db._features import FramedTable, Table
from haive_langgraph.db._migrations import Component, Migration
from haive_langgraph.db._partitions import PartitionKey
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

# -- the checkpointer's entry in the registry of tables (db/_features.py) -----
# Every table holds tenant rows. Frames: values and pending writes (`blobs`),
# sealed metadata, inline values written without encryption (moved into
# encrypted values before the bodies are rotated: moving rewrites the body),
# and bodies. Row contexts are the writer's (checkpointers/_columns.py).

_CHECKPOINT_KEY = (
    ("tenant_id", "text"),
    ("thread_id", "text"),
    ("checkpoint_ns", "text"),
    ("checkpoint_id", "text"),
)


def _blob_context(tenant: str, family: str, key: bytes) -> RowContext:
    return RowContext(tenant, family, Kind.BLOB, bytes(key))


def _metadata_context(
    tenant: str, thread: str, ns: str, checkpoint_id: str, family: str, json_key: str
) -> RowContext:
    return metadata_context(tenant, family, ns, checkpoint_id, json_key)


def _body_context(tenant: str, thread: str, ns: str, checkpoint_id: str, family: str) -> RowContext:
    return body_context(tenant, family, ns, checkpoint_id)


FRAMED = (
    FramedTable(
        "blobs",
        (("tenant_id", "text"), ("family_id", "text"), ("key", "bytea")),
        _blob_context,
        frame_column="data",
    ),
    FramedTable(
        "checkpoints",
        _CHECKPOINT_KEY,
        _metadata_context,
        json_column="metadata",
        extra_columns=("family_id",),
    ),
    FramedTable(
        "checkpoints",
        _CHECKPOINT_KEY,
        _body_context,
        inline_column="inline_values",
        extra_columns=("family_id",),
        label="checkpoint_inline_values",
    ),
    FramedTable(
        "checkpoints",
        _CHECKPOINT_KEY,
        _body_context,
        frame_column="checkpoint",
        extra_columns=("family_id",),
        label="checkpoint_bodies",
    ),
)

COMPONENT = Component(
    name="checkpoints",
    migrations=MIGRATIONS,
    partitioned=PARTITIONED,
    tables=tuple(Table(name) for name in TENANT_TABLES),
    framed=FRAMED,
)


# The statements, one module per side; importing them here keeps
# ``from haive_langgraph.checkpointers import _sql as S`` the one way to name them.
from haive_langgraph.checkpointers._sql_maintenance import *  # noqa: E402, F403
from haive_langgraph.checkpointers._sql_read import *  # noqa: E402, F403
from haive_langgraph.checkpointers._sql_threads import *  # noqa: E402, F403
from haive_langgraph.checkpointers._sql_write import *  # noqa: E402, F403
