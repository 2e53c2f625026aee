"""The encrypted columns of every component: what key rotation and ``keys status`` cover.

One list, :data:`FRAMED_TABLES`; rotation, status and the tests iterate it.
A feature that adds a column holding codec frames (or values that an
encrypting codec must not leave in plaintext) adds an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from haive_langgraph.checkpointers._values import body_context, metadata_context
from haive_langgraph.codec import Kind, RowContext
from haive_langgraph.stores._values import row_context as store_row_context

__all__ = ["FRAMED_TABLES", "TENANT_KEYS", "FramedTable"]

# The table of wrapped tenant keys (ops/keys.py creates it); rotation re-wraps
# them under the global primary key, status counts them by wrapping key.
TENANT_KEYS = "tenant_keys"


@dataclass(frozen=True, slots=True)
class FramedTable:
    """A table whose rows hold codec frames (or plaintext values to encrypt).

    Exactly one of ``frame_column``, ``json_column`` and ``inline_column``
    is set.

    Attributes:
        name: Table name (in the schema).
        key_columns: Primary key columns and their types (``text``,
            ``bytea``, ``bigint`` or ``text[]``), in order; the scan's cursor.
        context: Builds a frame's row context from the key values (and, for
            a JSON column, the JSON key the sealed value sits under).
        frame_column: The bytea column holding one frame per row.
        json_column: Or: a JSONB column whose values may be sealed frames.
        inline_column: Or: a JSONB column of plaintext values that an
            encrypting codec moves into encrypted frames (checkpoints'
            ``inline_values``, written by savers that did not encrypt).
        extra_columns: Columns read along and passed to ``context`` after
            the key values (what a frame is bound to besides its key).
        copy_column: A JSONB column that may hold a plaintext copy of the
            whole value (a store that does not encrypt keeps one to filter
            on; an encrypting one keeps none). When a plaintext value is
            encrypted, a copy equal to it is cleared, here and in the same
            column of ``copy_tables`` (same key columns).
        copy_tables: Other tables holding that copy.
        label: Name of this entry in reports and the progress table
            (default: the table's name; two entries may share a table).
    """

    name: str
    key_columns: tuple[tuple[str, str], ...]
    context: Callable[..., RowContext]
    frame_column: str | None = None
    json_column: str | None = None
    inline_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    copy_column: str | None = None
    copy_tables: tuple[str, ...] = ()
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def column(self) -> str:
        """The column this entry rewrites."""
        column = self.frame_column or self.json_column or self.inline_column
        assert column is not None
        return column


def _blob_context(tenant: str, family: str, key: bytes) -> RowContext:
    return RowContext(tenant, family, Kind.BLOB, bytes(key))


def _metadata_context(
    tenant: str, thread: str, ns: str, checkpoint_id: str, family: str, json_key: str
) -> RowContext:
    return metadata_context(tenant, family, ns, checkpoint_id, json_key)


def _body_context(tenant: str, thread: str, ns: str, checkpoint_id: str, family: str) -> RowContext:
    return body_context(tenant, family, ns, checkpoint_id)


def _message_context(tenant: str, conversation: str, seq: int) -> RowContext:
    return RowContext(tenant, conversation, Kind.MESSAGE, "messages")


def _details_context(tenant: str, conversation: str) -> RowContext:
    return RowContext(tenant, conversation, Kind.METADATA, "details")


def _store_context(tenant: str, namespace: list[str], key: str) -> RowContext:
    return store_row_context(tenant, tuple(namespace), key)


_CHECKPOINT_KEY = (
    ("tenant_id", "text"),
    ("thread_id", "text"),
    ("checkpoint_ns", "text"),
    ("checkpoint_id", "text"),
)

# Pending writes hold content keys only: their values are rows of `blobs`.
# Vector memory keeps its memories in `store_items`; `store_vectors` holds
# embeddings (not framed). Chat histories and conversations share
# `conversations` and `conversation_messages`.
FRAMED_TABLES: list[FramedTable] = [
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
    # Before the bodies: moving inline values rewrites the body (its digest
    # of references) under the primary key, so the body pass skips it.
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
    FramedTable(
        "conversation_messages",
        (("tenant_id", "text"), ("conversation_id", "text"), ("seq", "bigint")),
        _message_context,
        frame_column="body",
    ),
    FramedTable(
        "conversations",
        (("tenant_id", "text"), ("conversation_id", "text")),
        _details_context,
        frame_column="details",
    ),
    FramedTable(
        "store_items",
        (("tenant_id", "text"), ("namespace", "text[]"), ("key", "text")),
        _store_context,
        frame_column="value",
        # `doc` holds the whole value when written without encryption and
        # without filter_fields; a projection (filter_fields) is the user's
        # declared plaintext and is kept. Vector rows carry the same doc.
        copy_column="doc",
        copy_tables=("store_vectors",),
    ),
]
