"""Bytes in, bytes out: the one codec every persisted value passes through.

The savers serialise values with LangGraph's serde first (its msgpack
allow-list applies; nothing unpickles), then hand the bytes to a
:class:`Codec`, which frames them, and (in later layers) compresses and
encrypts them. A :class:`RowContext` names the row a frame belongs to; an
encrypting codec binds the ciphertext to it as associated data, so a frame
copied into another row fails to decode.

Content addressing also goes through the codec (:meth:`Codec.content_key`):
a plain codec hashes the payload, an encrypting one uses a keyed hash so that
stored keys reveal nothing about the content.
"""

from __future__ import annotations

from haive_langgraph.codec._base import Codec, Kind, PlainCodec, RowContext

__all__ = ["Codec", "Kind", "PlainCodec", "RowContext", "default_codec"]


def default_codec() -> Codec:
    """The codec used when none is configured: framing only."""
    return PlainCodec()
