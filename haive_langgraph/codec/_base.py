"""Codec protocol, row context and the plain (framing-only) codec."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from haive_langgraph.errors import CorruptDataError

# Frame layout shared by every codec (the codec issue extends the flags):
#   magic   2 bytes  b"HV"
#   version 1 byte   0x01
#   flags   1 byte   bit 0 compressed, bit 1 encrypted, bit 2 zstd dictionary 1
#   payload ...      (for flags == 0: the serialised bytes themselves)
MAGIC = b"HV"
FORMAT_VERSION = 1
HEADER = MAGIC + bytes((FORMAT_VERSION, 0))
CONTENT_KEY_BYTES = 16
_pack_length = struct.Struct(">I").pack


class Kind(StrEnum):
    """What a framed value is; part of the row context an encrypting codec binds."""

    BLOB = "blob"
    WRITE = "write"
    METADATA = "metadata"
    CHECKPOINT = "checkpoint"
    STORE_VALUE = "store"
    MESSAGE = "message"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class RowContext:
    """The row a frame belongs to.

    Attributes:
        tenant_id: Owning tenant (``""`` for the default tenant).
        scope: The thread (or thread family), store namespace or conversation
            the row lives in.
        kind: What the value is.
        key: The row's own key within its scope (a content key, a checkpoint
            and channel, a store key ...).
        namespace: Checkpoint namespace, where one applies.
    """

    tenant_id: str
    scope: str
    kind: Kind
    key: str | bytes
    namespace: str = ""

    def associated_data(self) -> bytes:
        """A canonical, unambiguous byte string of the context.

        Each of tenant, scope, namespace, kind and key, in that order, as a
        4-byte big-endian length and its UTF-8 bytes (a ``bytes`` key as is).
        """
        # Measured on varied row contexts: 1.2 us per call against 2.3 us for
        # a join over a generator (a struct format per call thrashes struct's
        # format cache). It runs on every encrypted encode and decode.
        key = self.key if isinstance(self.key, bytes) else self.key.encode()
        tenant = self.tenant_id.encode()
        scope = self.scope.encode()
        namespace = self.namespace.encode()
        kind = self.kind.value.encode()
        return b"".join(
            (
                _pack_length(len(tenant)),
                tenant,
                _pack_length(len(scope)),
                scope,
                _pack_length(len(namespace)),
                namespace,
                _pack_length(len(kind)),
                kind,
                _pack_length(len(key)),
                key,
            )
        )

    def describe(self) -> str:
        """Human-readable row description for error messages."""
        key = self.key.hex() if isinstance(self.key, bytes) else self.key
        where = f"tenant {self.tenant_id!r}, " if self.tenant_id else ""
        ns = f", namespace {self.namespace!r}" if self.namespace else ""
        return f"{self.kind.value} row {key!r} ({where}scope {self.scope!r}{ns})"


@runtime_checkable
class Codec(Protocol):
    """Turns serialised values into stored frames and back."""

    def encode(self, payload: bytes, ctx: RowContext) -> bytes:
        """Frame (and possibly compress and encrypt) ``payload`` for the row ``ctx``."""
        ...

    def decode(self, frame: bytes, ctx: RowContext) -> bytes:
        """Return the payload of ``frame``; raise :class:`CorruptDataError` if invalid."""
        ...

    def content_key(self, payload: bytes, tenant_id: str) -> bytes:
        """A 16-byte key that is equal for equal payloads of one tenant."""
        ...


class PlainCodec:
    """Framing only: no compression, no encryption."""

    def encode(self, payload: bytes, ctx: RowContext) -> bytes:
        return HEADER + payload

    def decode(self, frame: bytes, ctx: RowContext) -> bytes:
        if frame[:2] != MAGIC:
            raise CorruptDataError(f"{ctx.describe()} is not a haive frame (bad magic bytes)")
        if len(frame) < 4 or frame[2] != FORMAT_VERSION:
            raise CorruptDataError(f"{ctx.describe()} has an unknown frame format version")
        if frame[3] != 0:
            raise CorruptDataError(
                f"{ctx.describe()} is compressed or encrypted (flags {frame[3]:#04x}), "
                "but this codec has no compression or keys configured"
            )
        return bytes(frame[4:])

    def content_key(self, payload: bytes, tenant_id: str) -> bytes:
        return hashlib.sha256(payload).digest()[:CONTENT_KEY_BYTES]
