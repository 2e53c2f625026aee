"""Bytes in, bytes out: the one codec every persisted value passes through.

The savers serialise values with LangGraph's serde first (its msgpack
allow-list applies; nothing unpickles), then hand the bytes to a
:class:`Codec`, which frames them, compresses them (zstd) and encrypts them
(AES-256-GCM) as configured. A :class:`RowContext` names the row a frame
belongs to; an encrypting codec binds the ciphertext to it as associated
data, so a frame copied into another row fails to decode.

Content addressing also goes through the codec (:meth:`Codec.content_key`):
a plain codec hashes the payload, an encrypting one uses a keyed hash so that
stored keys reveal nothing about the content.

:func:`default_codec` is what every saver, store and history uses when
given no codec: a :class:`HaiveCodec` configured by the ``HAIVE_*``
variables (zstd compression on; encryption when ``HAIVE_ENCRYPTION_KEYS`` is
set). :class:`PlainCodec` frames only. See ``docs/codec.md``.
"""

from __future__ import annotations

from haive_langgraph.codec._base import Codec, Kind, PlainCodec, RowContext
from haive_langgraph.codec._codec import HaiveCodec
from haive_langgraph.codec._compression import Compression
from haive_langgraph.codec._config import codec_from_config, codec_from_env
from haive_langgraph.codec._frame import frame_key_id
from haive_langgraph.codec._keys import (
    InMemoryTenantKeyStore,
    KeyProvider,
    KeyRing,
    TenantKeyRecord,
    TenantKeyStore,
    WrappedKey,
    parse_encryption_keys,
)

# Errors are exported by haive_langgraph.errors; still importable from here.
from haive_langgraph.errors import DecompressionLimitError as DecompressionLimitError
from haive_langgraph.errors import KeyDestroyedError as KeyDestroyedError

__all__ = [
    "Codec",
    "Compression",
    "HaiveCodec",
    "InMemoryTenantKeyStore",
    "KeyProvider",
    "KeyRing",
    "Kind",
    "PlainCodec",
    "RowContext",
    "TenantKeyRecord",
    "TenantKeyStore",
    "WrappedKey",
    "codec_from_config",
    "codec_from_env",
    "default_codec",
    "frame_key_id",
    "parse_encryption_keys",
]


def default_codec() -> Codec:
    """The codec used when none is configured: :func:`codec_from_env`.

    Compression is on unless ``HAIVE_COMPRESSION=off``; values are encrypted
    when ``HAIVE_ENCRYPTION_KEYS`` is set.
    """
    return codec_from_env()
