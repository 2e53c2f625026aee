"""Channel values ⇄ rows: planning a checkpoint's writes (reading them back: ``_decoding``).

The parts live beside it: ``_refs`` (how a row refers to values), ``_encoder``
(serialising and queueing values), ``_columns`` (body and metadata columns).

Pure functions (no I/O). The checkpointer classes call :func:`plan_put` and
:func:`plan_writes` to turn LangGraph values into statement parameters, and
``_decoding.decode_row`` to turn a row back into a ``CheckpointTuple``.

How a value is stored:

* ``None``, booleans, integers that JSON keeps exactly and short strings
  without NUL are kept inline in the checkpoint's JSON.
* A ``list`` (``messages`` and every other list channel) is stored as its
  items: each item is serialised on its own, content-addressed in ``blobs``,
  and the list is a (lineage, length) pair over an append-only lineage of
  item keys. When the new list extends the parent checkpoint's list, only the
  new items are written; when it does not (an edited or removed message, a
  fork), a new lineage is started that reuses the stored items.
* Anything else is one content-addressed blob.

Values are serialised with the saver's serde (LangGraph's
``JsonPlusSerializer`` and its msgpack allow-list by default), then framed by
the codec. A list item met again is not serialised again when it is the
same object with the same shape (nothing reachable from it replaced, added
or removed: see ``_objects``); a value edited in place is stored as it is at
``put`` time, as with LangGraph's own savers. ``strict_serialisation`` turns
the shortcut off.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg.types.json import Jsonb

# Re-exported names (``X as X``) are the ones other modules import from here.
from haive_langgraph.checkpointers._columns import (
    _EMPTY_JSONB,
    _STRICT_JSON,
    jsonb_text,
)
from haive_langgraph.checkpointers._columns import SEALED as SEALED
from haive_langgraph.checkpointers._columns import body_context as body_context
from haive_langgraph.checkpointers._columns import encode_body as encode_body
from haive_langgraph.checkpointers._columns import encrypts as encrypts
from haive_langgraph.checkpointers._columns import metadata_context as metadata_context
from haive_langgraph.checkpointers._columns import metadata_json as metadata_json
from haive_langgraph.checkpointers._columns import metadata_text as metadata_text
from haive_langgraph.checkpointers._columns import move_inline as move_inline
from haive_langgraph.checkpointers._columns import seal_metadata as seal_metadata
from haive_langgraph.checkpointers._encoder import (
    _CHANNEL,
    _CHECKPOINT_OF_THREAD,
    _ITEM_OF_CHANNEL,
    _ITEM_OF_WRITE,
    _WRITE_TO_CHANNEL,
    _WRITES_OF_TASK,
    _Encoder,
)
from haive_langgraph.checkpointers._encoder import LRU as LRU
from haive_langgraph.checkpointers._encoder import PayloadMemo as PayloadMemo
from haive_langgraph.checkpointers._objects import (
    WrittenObjects,
    plain_fields,
    shape,
)
from haive_langgraph.checkpointers._refs import EMPTY_LINEAGE as EMPTY_LINEAGE
from haive_langgraph.checkpointers._refs import REFS_DIGEST as REFS_DIGEST
from haive_langgraph.checkpointers._refs import ListState
from haive_langgraph.checkpointers._refs import StoredRefs as StoredRefs
from haive_langgraph.checkpointers._refs import is_inline as is_inline
from haive_langgraph.checkpointers._refs import payload_of as payload_of
from haive_langgraph.codec import Codec
from haive_langgraph.db._arrays import BigintArray, BoolArray, ByteaArray, IntArray, TextArray
from haive_langgraph.db._limits import (
    id_problem,
)
from haive_langgraph.errors import (
    SerializationError,
)

# Metadata keys that describe one checkpoint, not the thread.
_VOLATILE_METADATA = frozenset(
    {
        "source",
        "step",
        "parents",
        "writes",
        "run_id",
        "counters_since_delta_snapshot",
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "tags",
    }
)


@dataclass(slots=True)
class PutPlan:
    """Parameters of one ``PUT_CHECKPOINT`` statement and the refs it stores.

    ``metadata`` is the JSON text of the metadata before any sealing: with
    the refs and the body frame, what a later read of this checkpoint returns.
    """

    params: dict[str, Any]
    refs: StoredRefs
    metadata: str = "{}"


def _new_lineage_id() -> int:
    # 63 random bits: collisions within one family are negligible, and a
    # collision only fails the insert (which is then retried).
    return random.getrandbits(63) or 1


def plan_put(
    *,
    serde: SerializerProtocol,
    codec: Codec,
    tenant: str,
    family: str,
    lock_class: int,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: Mapping[str, Any],
    new_versions: ChannelVersions,
    parent: StoredRefs | None,
    memo: PayloadMemo | None = None,
    tips: LRU[tuple[str, int], int] | None = None,
    fresh_lists: bool = False,
    encrypt_metadata: frozenset[str] = frozenset(),
    written: WrittenObjects | None = None,
    frames: LRU[tuple[str, bytes], bytes] | None = None,
) -> PutPlan:
    """Plan one checkpoint write.

    A channel whose version did not move since the parent keeps the parent's
    stored value (as LangGraph's savers read a value by its version); every
    other channel is stored from ``checkpoint["channel_values"]`` (a channel
    with a new version and no value is empty).

    With an encrypting codec nothing is kept inline (short strings would
    otherwise sit in plain text in the checkpoint JSON), and the metadata keys
    in ``encrypt_metadata`` are stored encrypted (and so not filterable).

    A list that extends the parent's list is appended to the parent's
    lineage, unless that lineage is known (``tips``) to have grown past the
    parent's length already (a fork), or ``fresh_lists`` is set (a retry
    after a conflict): then the list starts a new lineage.

    With ``written``, a list item this saver serialised or handed out before
    and unchanged since (same shape, see ``_objects``) is not serialised
    again.

    Raises:
        SerializationError: naming the channel and the type of a value that
            cannot be serialised (raised before anything is sent).
    """
    conf = config["configurable"]
    thread_id = str(conf["thread_id"])
    ns = str(conf.get("checkpoint_ns", ""))
    values: Mapping[str, Any] = checkpoint["channel_values"]
    versions: ChannelVersions = checkpoint["channel_versions"]

    enc = _Encoder(
        serde,
        codec,
        tenant,
        family,
        memo,
        (_CHECKPOINT_OF_THREAD, checkpoint["id"], thread_id),
        written,
        (thread_id, ns),
        frames,
    )
    inline_ok = not encrypts(codec)
    refs = StoredRefs(family=family, versions=dict(versions))
    inline: dict[str, Any] = {}
    check_keys: list[bytes] = []
    upd_l: list[int] = []
    upd_b: list[int] = []
    upd_n: list[int] = []
    new_l: list[int] = []
    new_n: list[int] = []
    item_l: list[int] = []
    item_s: list[int] = []
    item_k: list[bytes] = []

    for channel, version in versions.items():
        carried = (
            channel not in new_versions
            and parent is not None
            and parent.versions.get(channel) == version
        )
        if carried:
            assert parent is not None
            if channel in parent.inline:
                if inline_ok:
                    inline[channel] = parent.inline[channel]
                else:
                    # Kept inline by a saver that did not encrypt: an encrypting
                    # one stores it as an encrypted value, never in plaintext.
                    refs.values[channel] = enc.key_of(parent.inline[channel], (_CHANNEL, channel))
            elif channel in parent.values:
                key = parent.values[channel]
                refs.values[channel] = key
                if key not in enc.seen:
                    check_keys.append(key)
            elif channel in parent.lists:
                state = parent.lists[channel]
                refs.lists[channel] = state
                if state.lineage != EMPTY_LINEAGE:
                    upd_l.append(state.lineage)
                    upd_b.append(state.length)
                    upd_n.append(state.length)
            continue
        if channel not in values:
            continue  # a new version without a value: the channel is empty
        value = values[channel]
        if inline_ok and is_inline(value):
            inline[channel] = value
        elif type(value) is list:
            base = parent.lists.get(channel) if parent is not None else None
            n_base = base.length if base is not None and base.lineage != EMPTY_LINEAGE else 0
            base_keys = base.keys if base is not None else b""
            keys, payloads = enc.item_keys(value, channel, base_keys, n_base)
            joined = b"".join(keys)
            if not keys:
                refs.lists[channel] = ListState(EMPTY_LINEAGE, b"")
                enc.remember_items(channel, keys)
            elif (
                base is not None
                and n_base
                and not fresh_lists
                and (tips is None or (tips.get((family, base.lineage)) or 0) <= n_base)
                and joined.startswith(base.keys)
            ):
                # Extends (or equals) the parent's list: append to its lineage,
                # if nobody appended since (checked in the statement).
                upd_l.append(base.lineage)
                upd_b.append(n_base)
                upd_n.append(len(keys))
                queued, moved = enc.fill_payloads(value, channel, keys, payloads, n_base)
                if moved:
                    joined = b"".join(keys)
                for seq in range(n_base, len(keys)):
                    enc.queue(keys[seq], queued[seq - n_base], (_ITEM_OF_CHANNEL, seq, channel))
                    item_l.append(base.lineage)
                    item_s.append(seq)
                    item_k.append(keys[seq])
                refs.lists[channel] = ListState(base.lineage, joined, tuple(keys))
                enc.remember_items(channel, keys, moved)
            else:
                lineage = _new_lineage_id()
                queued, moved = enc.fill_payloads(value, channel, keys, payloads, 0)
                if moved:
                    joined = b"".join(keys)
                for seq, (key, payload) in enumerate(zip(keys, queued, strict=True)):
                    enc.queue(key, payload, (_ITEM_OF_CHANNEL, seq, channel))
                new_l.append(lineage)
                new_n.append(len(keys))
                item_l.extend([lineage] * len(keys))
                item_s.extend(range(len(keys)))
                item_k.extend(keys)
                refs.lists[channel] = ListState(lineage, joined, tuple(keys))
                enc.remember_items(channel, keys, moved)
        else:
            expect = parent.values.get(channel) if parent is not None else None
            refs.values[channel] = enc.key_of(value, (_CHANNEL, channel), expect)

    refs.inline = inline
    body = encode_body(serde, codec, tenant, family, ns, checkpoint, refs)
    meta, meta_text = metadata_text(metadata)
    plain_meta_text = meta_text
    thread_meta = (
        {k: v for k, v in meta.items() if k not in _VOLATILE_METADATA and k not in encrypt_metadata}
        if ns == ""
        else {}
    )
    if encrypt_metadata:
        meta = seal_metadata(meta, encrypt_metadata, codec, tenant, family, ns, checkpoint["id"])
        meta_text = _STRICT_JSON.encode(meta)
    run_id = meta.get("run_id")
    tags = tags_of(meta.get("tags"))
    check = [k for k in dict.fromkeys(check_keys) if k not in enc.seen]
    blob_keys, blob_data = enc.blobs()
    params: dict[str, Any] = {
        "lock": lock_class,
        "t": tenant,
        "th": thread_id,
        "ns": ns,
        "family": family,
        "cid": checkpoint["id"],
        "parent": conf.get("checkpoint_id"),
        "run_id": str(run_id) if run_id is not None else None,
        "checkpoint": body,
        "inline": Jsonb(inline),
        "metadata": jsonb_text(meta_text),
        "thread_meta": Jsonb(thread_meta) if thread_meta else _EMPTY_JSONB,
        "check_keys": ByteaArray(check),
        "vch": TextArray(refs.values),
        "vkeys": ByteaArray(refs.values.values()),
        "lch": TextArray(refs.lists),
        "llin": BigintArray(s.lineage for s in refs.lists.values()),
        "llen": IntArray(s.length for s in refs.lists.values()),
        "upd_l": BigintArray(upd_l),
        "upd_b": IntArray(upd_b),
        "upd_n": IntArray(upd_n),
        "new_l": BigintArray(new_l),
        "new_n": IntArray(new_n),
        "item_l": BigintArray(item_l),
        "item_s": IntArray(item_s),
        "item_k": ByteaArray(item_k),
        "tags": TextArray(tags),
        "blob_keys": blob_keys,
        "blob_data": blob_data,
    }
    return PutPlan(params=params, refs=refs, metadata=plain_meta_text)


def tags_of(value: Any) -> list[str]:
    """Tags given at write time in metadata ``tags``: a list, or a comma-separated string
    (LangGraph copies only scalar ``config["metadata"]`` values into checkpoint metadata)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(t, str) for t in items):
        raise SerializationError(
            f"checkpoint metadata 'tags' must be a list of strings or a comma-separated "
            f"string, got {type(value).__name__}"
        )
    tags = sorted({t.strip() for t in items if t.strip()})
    for tag in tags:
        if (problem := id_problem(tag)) is not None:
            raise SerializationError(f"checkpoint metadata tag {tag[:60]!r} {problem}")
    return tags


def plan_writes(
    *,
    serde: SerializerProtocol,
    codec: Codec,
    tenant: str,
    family: str,
    lock_class: int,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    memo: PayloadMemo | None = None,
    written: WrittenObjects | None = None,
    frames: LRU[tuple[str, bytes], bytes] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Parameters of one ``PUT_WRITES`` statement, and whether it replaces rows.

    Regular writes keep the first value stored for a (task, index); the
    special channels (error, interrupt ...) replace, as in LangGraph's savers.
    The items of a list written to a channel are remembered (``written``):
    the next checkpoint holds them in that channel's list.
    """
    conf = config["configurable"]
    thread = (str(conf["thread_id"]), str(conf.get("checkpoint_ns", "")))
    enc = _Encoder(
        serde,
        codec,
        tenant,
        family,
        memo,
        (_WRITES_OF_TASK, task_id, conf["thread_id"], conf["checkpoint_id"]),
        frames=frames,
    )
    idx: list[int] = []
    channels: list[str] = []
    is_list: list[bool] = []
    first: list[int] = []
    last: list[int] = []
    keys: list[bytes] = []
    replace = True
    for i, (channel, value) in enumerate(writes):
        special = WRITES_IDX_MAP.get(channel)
        replace = replace and special is not None
        idx.append(i if special is None else special)
        channels.append(channel)
        first.append(len(keys) + 1)  # SQL arrays are 1-based, slices inclusive
        if type(value) is list:
            is_list.append(True)
            # Shapes first: what a shape names is what was serialised, or older
            # (the graph's reducer may set a message's id meanwhile, on its thread).
            shapes = [shape(item) for item in value] if written is not None else []
            item_keys = [
                enc.key_of(item, (_ITEM_OF_WRITE, j, channel)) for j, item in enumerate(value)
            ]
            keys.extend(item_keys)
            if written is not None:
                written.add(
                    (*thread, channel),
                    [
                        (shp, k, plain_fields(shp)) if shp is not None else None
                        for shp, k in zip(shapes, item_keys, strict=True)
                    ],
                )
        else:
            is_list.append(False)
            keys.append(enc.key_of(value, (_WRITE_TO_CHANNEL, channel)))
        last.append(len(keys))
    blob_keys, blob_data = enc.blobs()
    params = {
        "lock": lock_class,
        "t": tenant,
        "th": str(conf["thread_id"]),
        "ns": str(conf.get("checkpoint_ns", "")),
        "cid": conf["checkpoint_id"],
        "family": family,
        "task_id": task_id,
        "task_path": task_path,
        "blob_keys": blob_keys,
        "blob_data": blob_data,
        "keys": ByteaArray(keys),
        "idx": IntArray(idx),
        "channels": TextArray(channels),
        "is_list": BoolArray(is_list),
        "first": IntArray(first),
        "last": IntArray(last),
    }
    return params, replace
