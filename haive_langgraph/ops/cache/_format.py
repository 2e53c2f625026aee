"""How cached values are stored in Redis: the format protocol and the codec envelope."""

from __future__ import annotations

import struct
from typing import Protocol, TypeVar

from haive_langgraph.codec import Codec, RowContext

V = TypeVar("V")

_NONE = b"\x00"  # a cached "nothing there" (a thread without checkpoints)

_ENVELOPE = struct.Struct(">H")


class _Format(Protocol[V]):
    """How one kind of value is stored in Redis and copied for callers."""

    def dumps(self, value: V) -> bytes: ...

    def loads(self, data: bytes) -> V: ...

    def copy(self, value: V) -> V: ...


def _seal(codec: Codec, kind: str, payload: bytes, ctx: RowContext) -> bytes:
    """A serde ``(kind, payload)`` pair in one codec frame (kind length, kind, payload)."""
    head = kind.encode()
    return codec.encode(_ENVELOPE.pack(len(head)) + head + payload, ctx)


def _unseal(codec: Codec, data: bytes, ctx: RowContext) -> tuple[str, bytes]:
    """The serde ``(kind, payload)`` pair of a frame made by :func:`_seal`."""
    body = codec.decode(data, ctx)
    (n,) = _ENVELOPE.unpack_from(body)
    return body[2 : 2 + n].decode(), body[2 + n :]
