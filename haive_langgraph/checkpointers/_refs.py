"""How a checkpoint refers to its stored values: list states, refs, payloads, what stays inline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import (
    ChannelVersions,
)

from haive_langgraph.codec._base import CONTENT_KEY_BYTES as KEY_BYTES
from haive_langgraph.db._limits import (
    has_lone_surrogate,
)

# Strings longer than this are stored as blobs (deduplicated) instead of inline.
INLINE_STR_MAX = 256
# Integers beyond this lose precision in JSON readers that use doubles.
INLINE_INT_MAX = 2**53
# Lineage id of the empty list: no lineage row, no items.
EMPTY_LINEAGE = 0
# Metadata keys that describe one checkpoint, not the thread.


@dataclass(slots=True)
class ListState:
    """A stored list: its lineage and its items' content keys, concatenated.

    Keys are kept as one ``bytes`` (16 bytes per item) so that a cached
    200-item list costs 3 KB and "does the new list extend it" is a memcmp.
    """

    lineage: int
    keys: bytes
    # The keys one by one, when the saver had them so (a read from memory
    # then does not cut ``keys`` up again); not part of the state's value.
    split: tuple[bytes, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def length(self) -> int:
        return len(self.keys) // KEY_BYTES


@dataclass(slots=True)
class StoredRefs:
    """What a saver knows about one stored checkpoint's values (no data)."""

    family: str
    versions: ChannelVersions
    values: dict[str, bytes] = field(default_factory=dict)
    lists: dict[str, ListState] = field(default_factory=dict)
    inline: dict[str, Any] = field(default_factory=dict)


def payload_of(type_tag: str, data: bytes) -> bytes:
    """The bytes a value is content-addressed and framed by: type tag, NUL, data."""
    return type_tag.encode() + b"\x00" + data


# The body key of the references digest (see `refs_digest`).
REFS_DIGEST = "$haive_refs"


def refs_digest(refs: StoredRefs) -> bytes:
    """A 16-byte digest of which stored values a checkpoint's channels hold.

    It covers every channel's content key and every list channel's item keys
    in order. With an encrypting codec it is written into the checkpoint body,
    which is sealed and bound to its row, so that a reader notices references
    rewired in the plain columns and lineage rows (to other values of the same
    family) instead of loading them.
    """
    h = hashlib.blake2b(digest_size=16)
    for kind, entries in ((b"v", refs.values), (b"l", refs.lists)):
        for channel in sorted(entries):
            entry = entries[channel]
            keys = entry if isinstance(entry, bytes) else entry.keys
            name = channel.encode()
            h.update(kind + len(name).to_bytes(4, "big") + name + len(keys).to_bytes(4, "big"))
            h.update(keys)
    return h.digest()


def is_inline(value: Any) -> bool:
    """Whether a channel value is kept inline in the checkpoint JSON."""
    if value is None or isinstance(value, bool):
        return True
    if type(value) is int:
        return -INLINE_INT_MAX < value < INLINE_INT_MAX
    if type(value) is str:
        # jsonb holds neither NUL nor a lone surrogate: such a string is a
        # blob (where the serde, as in every LangGraph saver, stores "?" for a
        # lone surrogate).
        return (
            len(value) <= INLINE_STR_MAX and "\x00" not in value and not has_lone_surrogate(value)
        )
    return False
