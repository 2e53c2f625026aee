"""The latest checkpoint of a thread, as this saver last wrote or read it.

A graph starts every invoke with ``get_tuple`` of the thread's latest
checkpoint, which this saver usually wrote itself a moment before. Instead
of reading the row, its values and list items back (a query whose answer
grows with the conversation, then decoding it), the saver asks whether the
latest checkpoint is still the one it holds (``PROBE_LATEST``: the same row,
column for column, and no pending writes) and, if so, builds the answer from
memory: the body decoded from its frame (so that a crypto-shredded tenant or
a removed key fails as it fails a read), values and list items as fresh
copies of what it decoded before or from their remembered payloads (see
``_objects``). The answer is the one reading the row would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple
from psycopg.types.json import Jsonb

from haive_langgraph.checkpointers._columns import body_context, unpack_body
from haive_langgraph.checkpointers._decoding import Decoder, Row
from haive_langgraph.checkpointers._objects import fresh_copy
from haive_langgraph.checkpointers._refs import EMPTY_LINEAGE, REFS_DIGEST, StoredRefs
from haive_langgraph.codec._base import CONTENT_KEY_BYTES as KEY_BYTES
from haive_langgraph.db._arrays import BigintArray, ByteaArray, IntArray, TextArray


@dataclass(frozen=True, slots=True)
class Head:
    """A checkpoint as this saver wrote or read it (nothing here is handed out).

    Attributes:
        thread_id: Its thread, as stored.
        ns: Its namespace.
        checkpoint_id: Its id.
        parent_id: Its parent's id, if any.
        metadata: Its metadata: the JSON text written, or the dict read.
        refs: Its stored values and lists.
        row: Its columns as stored (parameters of ``PROBE_LATEST``).
    """

    thread_id: str
    ns: str
    checkpoint_id: str
    parent_id: str | None
    metadata: str | dict[str, Any]
    refs: StoredRefs
    row: dict[str, Any]


# The parameters of PROBE_LATEST a put sends too, under the same names.
PROBE_PARAMS = (
    "cid",
    "parent",
    "family",
    "inline",
    "metadata",
    "vch",
    "vkeys",
    "lch",
    "llin",
    "llen",
)


def probe_row(params: dict[str, Any]) -> dict[str, Any]:
    """The probe parameters of a checkpoint from its put parameters."""
    row = {name: params[name] for name in PROBE_PARAMS}
    row["body"] = params["checkpoint"]
    return row


def probe_row_of(row: Row) -> dict[str, Any]:
    """The probe parameters of a checkpoint from the row read."""
    return {
        "cid": row.checkpoint_id,
        "parent": row.parent_checkpoint_id,
        "family": row.family_id,
        "inline": Jsonb(row.inline_values),
        "metadata": Jsonb(row.metadata),
        "vch": TextArray(row.value_channels),
        "vkeys": ByteaArray(bytes(k) for k in row.value_keys),
        "lch": TextArray(row.list_channels),
        "llin": BigintArray(row.list_lineages),
        "llen": IntArray(row.list_lengths),
        "body": bytes(row.checkpoint),
    }


def tuple_of(head: Head, decoder: Decoder) -> CheckpointTuple:
    """The ``CheckpointTuple`` a read of ``head``'s row returns, built from memory.

    Raises:
        MissingValueError: A value's payload is no longer remembered (read the row).
    """
    family = head.refs.family
    # The body is decoded from its frame as a read decodes it: a tenant
    # crypto-shredded (or a key removed) since fails here as it fails there.
    ctx = body_context(decoder.tenant, family, head.ns, head.checkpoint_id)
    checkpoint: dict[str, Any] = unpack_body(decoder.codec.decode(head.row["body"], ctx))
    checkpoint.pop(REFS_DIGEST, None)
    checkpoint["id"] = head.checkpoint_id
    where = f"thread {head.thread_id!r}, checkpoint {head.checkpoint_id}"
    values: dict[str, Any] = dict(head.refs.inline)
    for channel, key in head.refs.values.items():
        values[channel] = decoder.value(family, key, None, f"{where}, channel {channel!r}")
    for channel, state in head.refs.lists.items():
        if state.lineage == EMPTY_LINEAGE:
            values[channel] = []
            continue
        keys = state.split
        if keys is None:
            joined = state.keys
            keys = tuple(joined[i : i + KEY_BYTES] for i in range(0, len(joined), KEY_BYTES))
        values[channel] = decoder.items(
            family, keys, [None] * len(keys), f"{where}, channel {channel!r}"
        )
    checkpoint["channel_values"] = values
    metadata = (
        json.loads(head.metadata) if isinstance(head.metadata, str) else fresh_copy(head.metadata)
    )
    conf = {
        "thread_id": head.thread_id,
        "checkpoint_ns": head.ns,
        "checkpoint_id": head.checkpoint_id,
    }
    parent_config: RunnableConfig | None = (
        {"configurable": {**conf, "checkpoint_id": head.parent_id}} if head.parent_id else None
    )
    return CheckpointTuple(
        config={"configurable": conf},
        checkpoint=cast(Checkpoint, checkpoint),
        metadata=cast(Any, metadata),
        parent_config=parent_config,
        pending_writes=[],
    )
