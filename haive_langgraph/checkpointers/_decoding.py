"""Checkpoint rows back to values: the reading side of ``_values``.

:func:`decode_row` turns a row of the read statements into a
``CheckpointTuple``; :class:`Decoder` decodes its stored frames (copies of
items decoded before, see ``_objects``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple, PendingWrite
from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.checkpointers._columns import (
    SEALED,
    body_context,
    open_metadata,
    unpack_body,
)
from haive_langgraph.checkpointers._encoder import PayloadMemo, Where, _nth, _text
from haive_langgraph.checkpointers._objects import MISSING, DecodedObjects, Entry
from haive_langgraph.checkpointers._refs import (
    EMPTY_LINEAGE,
    REFS_DIGEST,
    ListState,
    StoredRefs,
    refs_digest,
)
from haive_langgraph.codec import Codec, Kind, RowContext, frame_key_id
from haive_langgraph.codec._guard import ValueGuard, guard_for
from haive_langgraph.errors import CorruptDataError, DecryptionError


def decode_body(decoder: Decoder, row: Row) -> tuple[dict[str, Any], bytes | None]:
    """The body of a row, and the references digest it holds (None if it has none).

    It holds plain data only: an object record in it is refused.
    """
    ctx = body_context(decoder.tenant, row.family_id, row.checkpoint_ns, row.checkpoint_id)
    try:
        payload = decoder.codec.decode(bytes(row.checkpoint), ctx)
    except CorruptDataError as exc:
        raise type(exc)(_where(row, f"the checkpoint body: {exc}")) from exc
    try:
        body = unpack_body(payload)
    except Exception as exc:
        raise CorruptDataError(
            _where(
                row,
                f"the checkpoint body cannot be decoded ({exc}); it holds only plain data, "
                "so the row may have been tampered with",
            )
        ) from exc
    digest = body.pop(REFS_DIGEST, None)
    if digest is not None and not (isinstance(digest, bytes) and len(digest) == 16):
        raise CorruptDataError(_where(row, "the checkpoint body holds a malformed digest"))
    body["id"] = row.checkpoint_id
    return body, digest


# -- decoding ----------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """A checkpoint row as the read statements return it (see ``_sql``)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    family_id: str
    checkpoint: bytes
    inline_values: dict[str, Any]
    metadata: dict[str, Any]
    value_channels: list[str]
    value_keys: list[bytes]
    value_data: list[bytes | None] | None
    list_channels: list[str]
    list_lineages: list[int]
    list_lengths: list[int]
    write_task_ids: list[str] | None
    write_channels: list[str] | None
    write_task_paths: list[str] | None
    write_idxs: list[int] | None
    write_is_lists: list[bool] | None
    write_key_counts: list[int] | None
    write_keys: list[bytes] | None
    write_data: list[bytes | None] | None
    item_lists: list[int] | None
    item_keys: list[bytes] | None
    item_data: list[bytes | None] | None

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> Row:
        return cls(*row)


class Decoder:
    """Decodes stored frames of one read, sharing decoded items by content key.

    Within one ``list`` call the same stored message is decoded once and the
    object shared by every checkpoint that holds it; treat values returned by
    a saver as immutable snapshots.
    """

    __slots__ = (
        "cache",
        "codec",
        "guard",
        "made",
        "memo",
        "objects",
        "sealed",
        "serde",
        "share",
        "strict",
        "tenant",
    )

    def __init__(
        self,
        serde: SerializerProtocol,
        codec: Codec,
        tenant: str,
        *,
        share: bool,
        memo: PayloadMemo | None = None,
        sealed: frozenset[str] = frozenset(),
        objects: DecodedObjects | None = None,
    ) -> None:
        self.serde = serde
        # Per list handed out (by id, with the list, which keeps its id unique):
        # the entries of its items copied by a recipe (see `_objects`).
        self.made: dict[int, tuple[list[Any], list[Entry | None]]] = {}
        # Decoded values kept across reads: each read gets copies of its own.
        self.objects = None if share else objects
        self.codec = codec
        self.tenant = tenant
        self.share = share
        self.memo = memo
        self.cache: dict[tuple[str, bytes], Any] = {}
        # With require_encryption nothing is written in plaintext: no inline
        # values, and the metadata keys to seal are sealed; a row that has
        # them was written by someone else.
        self.strict = bool(getattr(codec, "require_encryption", False))
        self.sealed = sealed
        self.guard: ValueGuard | None = None  # built at the first plaintext value

    def value(
        self,
        family: str,
        key: bytes,
        data: bytes | None,
        where: str | Where,
        *,
        cached: bool = True,
    ) -> Any:
        """Decode one stored value; ``data`` None means "the memo has its payload".

        ``cached=False``: the caller looked the decoded objects up already.
        """
        if self.share and (family, key) in self.cache:
            return self.cache[(family, key)]
        objects = self.objects
        if objects is not None and cached:
            (copied,), _ = objects.copies((key,))
            if copied is not MISSING:
                return copied
        try:
            if data is None:
                payload = self.memo.get(self.tenant, key) if self.memo is not None else None
                if payload is None:
                    raise MissingValueError(key)
            else:
                payload = self.codec.decode(data, RowContext(self.tenant, family, Kind.BLOB, key))
            sep = payload.find(b"\x00")
            if sep <= 0:
                raise ValueError("payload has no type tag")
            if data is not None:
                if frame_key_id(data) is None:  # plaintext can be forged by a database writer
                    if self.guard is None:
                        self.guard = guard_for(self.serde, self.codec)
                    self.guard.check(payload[:sep].decode("ascii"), payload[sep + 1 :])
                if self.memo is not None:
                    self.memo.put(self.tenant, key, payload)
            value = self.serde.loads_typed((payload[:sep].decode("ascii"), payload[sep + 1 :]))
        except MissingValueError:
            raise
        except CorruptDataError as exc:
            raise type(exc)(f"{_text(where)}: {exc}") from exc
        except Exception as exc:
            raise CorruptDataError(
                f"{_text(where)}: the stored value cannot be decoded ({exc})"
            ) from exc
        if self.share:
            self.cache[(family, key)] = value
        elif objects is not None:
            objects.keep(key, value)
        return value

    def items(
        self, family: str, keys: Sequence[bytes], datas: Sequence[bytes | None], where: str | Where
    ) -> list[Any]:
        """Decode the items of a stored list (copies of those decoded before)."""
        if self.objects is None:
            found: list[Any] = [MISSING] * len(keys)
        else:
            found, entries = self.objects.copies(keys)
            if None not in entries:  # every item copied by a recipe: none to decode
                self.made[id(found)] = (found, entries)
                return found
        out = [
            self.value(family, k, d, (_nth, where, j), cached=False) if x is MISSING else x
            for j, (x, k, d) in enumerate(zip(found, keys, datas, strict=True))
        ]
        if self.objects is not None:
            self.made[id(out)] = (out, entries)
        return out


class MissingValueError(LookupError):
    """A value sent without data (known to the reader) is not in its memo any more."""


def _where(row: Row, what: str) -> str:
    ns = f", namespace {row.checkpoint_ns!r}" if row.checkpoint_ns else ""
    return f"thread {row.thread_id!r}{ns}, checkpoint {row.checkpoint_id}, {what}"


def _refuse_plaintext(row: Row, sealed: frozenset[str]) -> None:
    if row.inline_values:
        channels = ", ".join(map(repr, sorted(row.inline_values)))
        raise DecryptionError(
            _where(
                row,
                f"plaintext inline values ({channels}) where encryption is required: this "
                "saver never writes them, so the row was written by someone else",
            )
        )
    plain = sorted(
        k
        for k in sealed & row.metadata.keys()
        if not (isinstance(v := row.metadata[k], dict) and len(v) == 1 and SEALED in v)
    )
    if plain:
        raise DecryptionError(
            _where(
                row,
                f"metadata {', '.join(map(repr, plain))} in plaintext where encryption is "
                "required (these keys are sealed when written)",
            )
        )


def decode_row(
    row: Row,
    decoder: Decoder,
    lists: Mapping[tuple[str, int], tuple[list[bytes], list[Any]]] | None = None,
) -> tuple[CheckpointTuple, StoredRefs]:
    """Build the ``CheckpointTuple`` of a row, and the refs to cache for it.

    Args:
        row: The row.
        decoder: Decodes frames (and shares items, in a history listing).
        lists: Items by (family, lineage) when they were read separately
            (history listing); otherwise they come with the row.
    """
    family = row.family_id
    checkpoint, digest = decode_body(decoder, row)
    if decoder.strict:
        _refuse_plaintext(row, decoder.sealed)
    channel_values: dict[str, Any] = dict(row.inline_values or {})
    refs = StoredRefs(
        family=family,
        versions=dict(checkpoint.get("channel_versions") or {}),
        inline=dict(channel_values),
    )
    # References first (checked against the body's digest), values after.
    data = row.value_data or []
    blobs: list[tuple[str, bytes, bytes]] = []
    for i, (channel, key) in enumerate(zip(row.value_channels, row.value_keys, strict=True)):
        key = bytes(key)
        refs.values[channel] = key
        blob = data[i] if i < len(data) else None
        if blob is None:
            raise CorruptDataError(_where(row, f"channel {channel!r}: its stored value is missing"))
        blobs.append((channel, key, blob))
    list_items: list[tuple[str, Any, list[bytes], list[bytes | None]]] = []
    if row.list_channels:
        per_list: list[tuple[list[bytes], list[bytes | None]]] = [
            ([], []) for _ in row.list_channels
        ]
        if lists is None:
            for ord_, key, blob in zip(
                row.item_lists or [], row.item_keys or [], row.item_data or [], strict=True
            ):
                keys_i, data_i = per_list[ord_ - 1]
                keys_i.append(bytes(key))
                data_i.append(blob)
        for i, (channel, lineage, length) in enumerate(
            zip(row.list_channels, row.list_lineages, row.list_lengths, strict=True)
        ):
            where = (_where, row, f"channel {channel!r}")
            if lists is not None:
                if lineage == EMPTY_LINEAGE:
                    keys, items = [], []
                else:
                    all_keys, all_items = lists.get((family, lineage), ([], []))
                    keys, items = all_keys[:length], all_items[:length]
                channel_values[channel] = list(items)  # decoded (and shared) already
            else:
                keys = per_list[i][0]
                list_items.append((channel, where, keys, per_list[i][1]))
            if len(keys) != length:
                raise CorruptDataError(
                    f"{_text(where)}: the stored list should have {length} items but "
                    f"{len(keys)} were found"
                )
            refs.lists[channel] = ListState(lineage, b"".join(keys), tuple(keys))
    if digest is not None and refs_digest(refs) != digest:
        raise CorruptDataError(
            _where(
                row,
                "its stored references (the value of a channel or the items of a list) do "
                "not match its authenticated body; the rows may have been tampered with",
            )
        )
    for channel, key, blob in blobs:
        channel_values[channel] = decoder.value(
            family, key, blob, (_where, row, f"channel {channel!r}")
        )
    for channel, where, keys, datas in list_items:
        channel_values[channel] = decoder.items(family, keys, datas, where)
    checkpoint["channel_values"] = channel_values

    pending: list[PendingWrite] = []
    if row.write_task_ids:
        wkeys = row.write_keys or []
        wdata = row.write_data or []
        pos = 0
        for task_id, channel, is_list, count in zip(
            row.write_task_ids,
            row.write_channels or [],
            row.write_is_lists or [],
            row.write_key_counts or [],
            strict=True,
        ):
            where = (_where, row, f"pending write of task {task_id} to channel {channel!r}")
            chunk = wdata[pos : pos + count]
            if any(d is None for d in chunk):
                raise CorruptDataError(f"{_text(where)}: its stored value is missing")
            decoded = [
                decoder.value(family, bytes(k), d, where)
                for k, d in zip(wkeys[pos : pos + count], chunk, strict=True)
            ]
            pos += count
            pending.append((task_id, channel, decoded if is_list else decoded[0]))

    conf = {
        "thread_id": row.thread_id,
        "checkpoint_ns": row.checkpoint_ns,
        "checkpoint_id": row.checkpoint_id,
    }
    parent_config: RunnableConfig | None = (
        {
            "configurable": {
                "thread_id": row.thread_id,
                "checkpoint_ns": row.checkpoint_ns,
                "checkpoint_id": row.parent_checkpoint_id,
            }
        }
        if row.parent_checkpoint_id
        else None
    )
    metadata = row.metadata
    if any(isinstance(v, dict) and SEALED in v for v in metadata.values()):
        metadata = open_metadata(
            metadata,
            decoder.codec,
            decoder.tenant,
            row.family_id,
            row.checkpoint_ns,
            row.checkpoint_id,
            _where(row, "").rstrip(", "),
        )
    tup = CheckpointTuple(
        config={"configurable": conf},
        checkpoint=cast(Checkpoint, checkpoint),
        metadata=cast(Any, metadata),
        parent_config=parent_config,
        pending_writes=pending,
    )
    return tup, refs
