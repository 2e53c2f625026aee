"""Key rotation helpers and content keys."""

from __future__ import annotations

import hashlib

import pytest

from haive_langgraph.codec import (
    HaiveCodec,
    InMemoryTenantKeyStore,
    KeyDestroyedError,
    KeyRing,
    Kind,
    PlainCodec,
    RowContext,
    TenantKeyRecord,
    frame_key_id,
)
from haive_langgraph.errors import CorruptDataError, DecryptionError

from .codec_helpers import compressible


def test_rotation(k1: bytes, k2: bytes, ctx: RowContext) -> None:
    before = HaiveCodec(keyring=KeyRing([("k1", k1)]))
    old_frames = [before.encode(compressible(n), ctx) for n in (10, 2000)]

    after = HaiveCodec(keyring=KeyRing([("k2", k2), ("k1", k1)]))
    # Old frames still decode; new ones use k2.
    assert [after.decode(f, ctx) for f in old_frames] == [compressible(10), compressible(2000)]
    assert frame_key_id(after.encode(b"new", ctx)) == "k2"
    assert all(after.needs_reencrypt(f, ctx.tenant_id) for f in old_frames)

    moved = [after.reencode(f, ctx) for f in old_frames]
    assert [frame_key_id(f) for f in moved] == ["k2", "k2"]
    assert not any(after.needs_reencrypt(f, ctx.tenant_id) for f in moved)

    # With k1 retired, the re-encoded frames still read; the old ones do not.
    retired = HaiveCodec(keyring=KeyRing([("k2", k2)]))
    assert [retired.decode(f, ctx) for f in moved] == [compressible(10), compressible(2000)]
    with pytest.raises(DecryptionError, match="'k1'"):
        retired.decode(old_frames[0], ctx)


def test_encrypting_existing_plaintext_rows(ring: KeyRing, ctx: RowContext) -> None:
    plain_frame = PlainCodec().encode(b"legacy", ctx)
    migrating = HaiveCodec(keyring=ring)
    assert migrating.needs_reencrypt(plain_frame, ctx.tenant_id)
    encrypted = migrating.reencode(plain_frame, ctx)
    assert frame_key_id(encrypted) == "k1"
    strict = HaiveCodec(keyring=ring, require_encryption=True)
    assert strict.decode(encrypted, ctx) == b"legacy"
    # A strict codec does not launder plaintext rows into encrypted ones.
    with pytest.raises(DecryptionError, match="plaintext row"):
        strict.reencode(plain_frame, ctx)


def test_needs_reencrypt_without_keys(encrypting: HaiveCodec, ctx: RowContext) -> None:
    plain = HaiveCodec()
    assert not plain.needs_reencrypt(plain.encode(b"x", ctx))
    assert plain.needs_reencrypt(encrypting.encode(b"x", ctx))
    with pytest.raises(CorruptDataError):
        plain.needs_reencrypt(b"garbage")


def test_reencode_moves_rows_onto_tenant_key(ring: KeyRing, ctx: RowContext) -> None:
    codec = HaiveCodec(keyring=ring)
    frame = codec.encode(b"x", ctx)
    tenant_key = ring.create_tenant_key(ctx.tenant_id)
    assert codec.needs_reencrypt(frame, ctx.tenant_id)
    moved = codec.reencode(frame, ctx)
    assert frame_key_id(moved) == tenant_key
    ring.forget_tenant(ctx.tenant_id)
    with pytest.raises(KeyDestroyedError):
        codec.decode(moved, ctx)
    with pytest.raises(KeyDestroyedError):
        codec.needs_reencrypt(moved, ctx.tenant_id)


# -- content keys -----------------------------------------------------------------


def test_content_key_plain() -> None:
    payload = b"some value"
    expected = hashlib.sha256(payload).digest()[:16]
    assert HaiveCodec().content_key(payload, "acme") == expected
    assert HaiveCodec().content_key(payload, "globex") == expected
    assert HaiveCodec().content_key(payload, "x") == PlainCodec().content_key(payload, "x")


def test_content_key_encrypted(k1: bytes, k2: bytes) -> None:
    codec = HaiveCodec(keyring=KeyRing([("k1", k1)]))
    payload = b"some value"
    key = codec.content_key(payload, "acme")
    assert len(key) == 16
    # Stable for equal payloads, in this codec and another over the same key.
    assert codec.content_key(payload, "acme") == key
    assert HaiveCodec(keyring=KeyRing([("k1", k1)])).content_key(payload, "acme") == key
    # Differs per payload and per tenant, and reveals no plaintext hash.
    assert codec.content_key(b"other value", "acme") != key
    assert codec.content_key(payload, "globex") != key
    assert codec.content_key(payload, "") != key
    digest = hashlib.sha256(payload).digest()
    assert key not in (digest[:16], hashlib.sha256(b"acme" + payload).digest()[:16])
    # After rotation, the same value gets a new key (stored once more: harmless).
    rotated = HaiveCodec(keyring=KeyRing([("k2", k2), ("k1", k1)]))
    assert rotated.content_key(payload, "acme") != key


def test_content_key_with_tenant_key(ring: KeyRing) -> None:
    codec = HaiveCodec(keyring=ring)
    before = codec.content_key(b"v", "acme")
    ring.create_tenant_key("acme")
    after = codec.content_key(b"v", "acme")
    assert after != before
    assert codec.content_key(b"v", "acme") == after
    assert codec.content_key(b"v", "globex") == HaiveCodec(keyring=ring).content_key(b"v", "globex")


def test_rewrapped_moves_tenant_keys_under_the_new_global_key(k1: bytes, k2: bytes) -> None:
    store = InMemoryTenantKeyStore()
    old = KeyRing([("k1", k1)], tenant_store=store)
    key_id = old.create_tenant_key("acme")
    ctx = RowContext("acme", "thread-1", Kind.BLOB, "k")
    frame = HaiveCodec(keyring=old).encode(b"tenant data", ctx)
    record = store.load("acme")
    assert record is not None and record.keys[0].wrapping_key_id == "k1"

    both = KeyRing([("k2", k2), ("k1", k1)], tenant_store=store)
    fresh, count = both.rewrapped("acme", record)
    assert count == 1 and [k.wrapping_key_id for k in fresh.keys] == ["k2"]
    assert both.rewrapped("acme", fresh) == (fresh, 0)  # nothing left to do
    store.save("acme", fresh)
    # Without k1, the tenant key unwraps with k2 and the tenant's rows read.
    new_only = KeyRing([("k2", k2)], tenant_store=store)
    assert HaiveCodec(keyring=new_only).decode(frame, ctx) == b"tenant data"
    assert frame_key_id(frame) == key_id
    with pytest.raises(KeyDestroyedError):
        both.rewrapped("acme", TenantKeyRecord(destroyed=True))
