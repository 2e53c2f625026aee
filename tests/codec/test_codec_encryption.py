"""AES-256-GCM: row binding, tamper detection, fail-closed reads."""

from __future__ import annotations

import dataclasses
import os

import pytest

from haive_langgraph.codec import HaiveCodec, KeyRing, Kind, PlainCodec, RowContext
from haive_langgraph.errors import ConfigurationError, CorruptDataError, DecryptionError

from .codec_helpers import compressible

OTHER_ROWS = {
    "tenant": {"tenant_id": "globex"},
    "default tenant": {"tenant_id": ""},
    "scope": {"scope": "thread-2"},
    "namespace": {"namespace": "other-ns"},
    "no namespace": {"namespace": ""},
    "kind": {"kind": Kind.WRITE},
    "key": {"key": "channel:v2"},
    "bytes key": {"key": b"\x00channel:v1"},
}


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("change", list(OTHER_ROWS), ids=list(OTHER_ROWS))
def test_frame_moved_to_another_row_fails(
    encrypting: HaiveCodec, ctx: RowContext, change: str, compressed: bool
) -> None:
    payload = compressible(4000) if compressed else b"secret value"
    frame = encrypting.encode(payload, ctx)
    assert bool(frame[3] & 1) == compressed
    other = dataclasses.replace(ctx, **OTHER_ROWS[change])  # type: ignore[arg-type]
    assert other.associated_data() != ctx.associated_data()
    with pytest.raises(DecryptionError) as info:
        encrypting.decode(frame, other)
    message = str(info.value)
    assert other.describe() in message
    assert "'k1'" in message
    assert encrypting.decode(frame, ctx) == payload


def test_bytes_key_equal_to_str_key_is_the_same_row(encrypting: HaiveCodec) -> None:
    # RowContext encodes str keys as UTF-8: the same row whichever type is used.
    a = RowContext("", "s", Kind.BLOB, "k")
    b = RowContext("", "s", Kind.BLOB, b"k")
    assert encrypting.decode(encrypting.encode(b"v", a), b) == b"v"


@pytest.mark.parametrize("size", [0, 100, 4000])
def test_flipped_byte_anywhere_fails(ring: KeyRing, ctx: RowContext, size: int) -> None:
    codec = HaiveCodec(keyring=ring, require_encryption=True)
    payload = compressible(size)
    frame = codec.encode(payload, ctx)
    for position in range(len(frame)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(frame)
            bad[position] ^= mask
            with pytest.raises(DecryptionError) as info:
                codec.decode(bytes(bad), ctx)
            assert ctx.describe() in str(info.value)


def test_flipped_byte_without_require_encryption(encrypting: HaiveCodec, ctx: RowContext) -> None:
    """Every flip fails, except turning off the "encrypted" flag, which (when
    plaintext rows are still accepted) yields a plaintext frame of garbage:
    the reason to turn on require_encryption once all rows are encrypted."""
    payload = b"secret value"
    frame = encrypting.encode(payload, ctx)
    for position in range(len(frame)):
        for mask in (0x01, 0x02, 0x80, 0xFF):
            bad = bytearray(frame)
            bad[position] ^= mask
            if position == 3 and mask == 0x02:
                assert encrypting.decode(bytes(bad), ctx) != payload
                continue
            with pytest.raises(CorruptDataError):
                encrypting.decode(bytes(bad), ctx)
            # From the nonce on, it is always an authentication failure.
            if position >= 4 + 1 + len(b"k1"):
                with pytest.raises(DecryptionError):
                    encrypting.decode(bytes(bad), ctx)


def test_compression_flag_is_authenticated(encrypting: HaiveCodec, ctx: RowContext) -> None:
    frame = bytearray(encrypting.encode(compressible(4000), ctx))
    assert frame[3] == 0x07  # encrypted, compressed with dictionary 1
    for flags in (0x02, 0x03):  # the compression flags are authenticated too
        forged = bytearray(frame)
        forged[3] = flags
        with pytest.raises(DecryptionError, match="failed to decrypt with key 'k1'"):
            encrypting.decode(bytes(forged), ctx)
    frame[3] = 0x02
    with pytest.raises(DecryptionError, match="failed to decrypt with key 'k1'"):
        encrypting.decode(bytes(frame), ctx)


def test_plaintext_refused_when_encryption_required(ring: KeyRing, ctx: RowContext) -> None:
    codec = HaiveCodec(keyring=ring, require_encryption=True)
    for writer in (PlainCodec(), HaiveCodec(), HaiveCodec(compression=False)):
        for payload in (b"x", compressible(3000)):
            with pytest.raises(DecryptionError) as info:
                codec.decode(writer.encode(payload, ctx), ctx)
            assert "plaintext row where encryption is required" in str(info.value)
            assert ctx.describe() in str(info.value)


def test_plaintext_accepted_while_migrating(encrypting: HaiveCodec, ctx: RowContext) -> None:
    assert encrypting.decode(PlainCodec().encode(b"old", ctx), ctx) == b"old"


def test_require_encryption_needs_keys() -> None:
    with pytest.raises(ConfigurationError, match="require_encryption needs encryption keys"):
        HaiveCodec(require_encryption=True)


def test_missing_key(k1: bytes, k2: bytes, ctx: RowContext) -> None:
    writer = HaiveCodec(keyring=KeyRing([("k1", k1)]))
    reader = HaiveCodec(keyring=KeyRing([("k2", k2)]))
    with pytest.raises(DecryptionError) as info:
        reader.decode(writer.encode(b"x", ctx), ctx)
    assert "'k1'" in str(info.value)
    assert "not in the key ring" in str(info.value)
    assert ctx.describe() in str(info.value)


def test_wrong_key_under_the_same_id(k1: bytes, ctx: RowContext) -> None:
    writer = HaiveCodec(keyring=KeyRing([("k1", k1)]))
    reader = HaiveCodec(keyring=KeyRing([("k1", os.urandom(32))]))
    with pytest.raises(DecryptionError) as info:
        reader.decode(writer.encode(b"x", ctx), ctx)
    assert "failed to decrypt with key 'k1'" in str(info.value)
    assert ctx.describe() in str(info.value)


def test_no_keys_configured(encrypting: HaiveCodec, ctx: RowContext) -> None:
    frame = encrypting.encode(b"x", ctx)
    for reader in (HaiveCodec(), PlainCodec()):
        with pytest.raises(CorruptDataError):
            reader.decode(frame, ctx)
    with pytest.raises(DecryptionError, match=r"encrypted with key 'k1'.*no encryption keys"):
        HaiveCodec().decode(frame, ctx)


def test_ciphertext_reveals_no_plaintext(ring: KeyRing, ctx: RowContext) -> None:
    payload = b"the quick brown fox " * 10
    for codec in (HaiveCodec(keyring=ring), HaiveCodec(keyring=ring, compression=False)):
        frame = codec.encode(payload, ctx)
        assert b"quick" not in frame
    # Header: magic, version, flags, key id, nonce; then ciphertext + 16-byte tag.
    assert len(frame) == 4 + 1 + 2 + 12 + len(payload) + 16


def test_repr_shows_no_key_material(k1: bytes, encrypting: HaiveCodec) -> None:
    text = repr(encrypting) + repr(encrypting.keyring)
    assert "k1" in text
    assert k1.hex() not in text
    assert repr(k1) not in text


def test_associated_data_layout() -> None:
    """The bound row context: length-prefixed tenant, scope, namespace, kind, key."""
    ctx = RowContext("acme", "t-1", Kind.STORE_VALUE, b"\x00k", namespace="ns")
    assert ctx.associated_data() == (
        b"\x00\x00\x00\x04acme"
        b"\x00\x00\x00\x03t-1"
        b"\x00\x00\x00\x02ns"
        b"\x00\x00\x00\x05store"
        b"\x00\x00\x00\x02\x00k"
    )
    assert RowContext("", "", Kind.BLOB, "").associated_data() == (
        b"\x00\x00\x00\x00" * 2
        + b"\x00\x00\x00\x00"
        + b"\x00\x00\x00\x04blob"
        + b"\x00\x00\x00\x00"
    )
