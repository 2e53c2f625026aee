"""Key parsing, key rings, providers, per-tenant keys and crypto-shredding."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest

from haive_langgraph.codec import (
    HaiveCodec,
    InMemoryTenantKeyStore,
    KeyDestroyedError,
    KeyRing,
    Kind,
    RowContext,
    TenantKeyRecord,
    frame_key_id,
    parse_encryption_keys,
)
from haive_langgraph.errors import ConfigurationError, DecryptionError

KEY = bytes(range(32))
STD = base64.b64encode(KEY).decode()
URLSAFE = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()


def _secret_fragments(*texts: str) -> list[str]:
    """Every 8-character window of the given secrets."""
    return [t[i : i + 8] for t in texts for i in range(max(1, len(t) - 7))]


# -- parsing HAIVE_ENCRYPTION_KEYS -------------------------------------------


def test_parse_formats() -> None:
    other = os.urandom(32)
    spec = (
        f" k2:{base64.urlsafe_b64encode(other).decode().rstrip('=')} ,\n"
        f"k1:{STD},old.key_3-x:{URLSAFE}"
    )
    pairs = parse_encryption_keys(spec)
    assert pairs == [("k2", other), ("k1", KEY), ("old.key_3-x", b"\xfb\xff" * 16)]
    ring = KeyRing.from_string(spec)
    assert ring.primary_key_id() == "k2"


SECRET_A = base64.b64encode(os.urandom(32)).decode()
SECRET_SHORT = base64.b64encode(os.urandom(31)).decode()
SECRET_LONG = base64.b64encode(os.urandom(33)).decode()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"{SECRET_A}", "entry 1 has no ':'"),
        (f"k1:{STD},{SECRET_A}", "entry 2 has no ':'"),
        (f"{SECRET_A}:k1", "entry 1 has an invalid key id"),
        (f"k1:{STD},,k2:{SECRET_A}", "entry 2 is empty"),
        (f"k1:{STD},", "entry 2 is empty"),
        (f"bad id:{SECRET_A}", "entry 1 has an invalid key id"),
        (f"{'x' * 33}:{SECRET_A}", "entry 1 has an invalid key id"),
        (f"k1:{SECRET_A},k1:{STD}", "key 'k1' (entry 2) repeats a key id"),
        ("k1:", "key 'k1' (entry 1) has no key"),
        (f"k1:{SECRET_SHORT}", "decodes to 31 bytes"),
        (f"k1:{SECRET_LONG}", "decodes to 33 bytes"),
        (f"k1:{SECRET_A[:-2]}!!", "is not valid base64"),
        (f"k1:+{SECRET_A[1:10]}-_{SECRET_A[12:]}", "is not valid base64"),
        (f"k1:{SECRET_A[:-3]}", "is not valid base64"),
    ],
    ids=lambda value: "" if "k1:" in str(value) or len(str(value)) > 30 else str(value),
)
def test_parse_errors_never_show_key_material(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyRing.from_string(spec)
    text = str(info.value)
    assert message in text
    assert "HAIVE_ENCRYPTION_KEYS" in text
    for fragment in _secret_fragments(SECRET_A, SECRET_SHORT, SECRET_LONG, STD):
        assert fragment not in text
    # Nor in the chained context a traceback would print.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_from_env(k1: bytes) -> None:
    assert KeyRing.from_env({}) is None
    assert KeyRing.from_env({"HAIVE_ENCRYPTION_KEYS": "  "}) is None
    ring = KeyRing.from_env({"HAIVE_ENCRYPTION_KEYS": f"k1:{base64.b64encode(k1).decode()}"})
    assert ring is not None
    assert ring.primary_key_id() == "k1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one key"),
        ({"keys": [("k1", b"short")]}, "key 'k1' is 5 bytes"),
        ({"keys": [("k1", "x" * 32)]}, "key 'k1' is a str"),
        ({"keys": [("k1", KEY), ("k1", KEY)]}, "appears twice"),
        ({"keys": [("no spaces", KEY)]}, "invalid encryption key id"),
        ({"keys": [("k1", KEY)], "primary": "k9"}, "primary key 'k9' is not one of"),
        ({"provider": lambda kid: KEY}, "needs primary="),
        ({"provider": 42, "primary": "k1"}, "provider must be"),
        ({"keys": [("k1", KEY)], "provider": lambda kid: KEY}, "not both"),
        ({"provider": lambda kid: None, "primary": "k1"}, "'k1' is not known"),
        ({"keys": [("k1", KEY)], "cache_ttl": -1}, "cache_ttl"),
    ],
)
def test_key_ring_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyRing(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert KEY.hex() not in str(info.value)


def test_mapping_and_explicit_primary(k1: bytes, k2: bytes) -> None:
    ring = KeyRing({"k1": k1, "k2": k2}, primary="k2")
    assert ring.primary_key_id() == "k2"
    assert "k1" in repr(ring)


# -- providers ----------------------------------------------------------------


class CountingKms:
    """A KMS-style provider that counts fetches."""

    def __init__(self, keys: dict[str, bytes], primary: str) -> None:
        self.keys = keys
        self.primary = primary
        self.fetches: list[str] = []
        self.destroyed: set[str] = set()

    def primary_key_id(self) -> str:
        return self.primary

    def get_key(self, key_id: str) -> bytes | None:
        self.fetches.append(key_id)
        if key_id in self.destroyed:
            raise KeyDestroyedError(f"key {key_id} destroyed")
        return self.keys.get(key_id)


def test_kms_provider_is_lazy_and_cached(k1: bytes, k2: bytes, ctx: RowContext) -> None:
    kms = CountingKms({"k1": k1, "k2": k2}, "k1")
    codec = HaiveCodec(keyring=KeyRing(provider=kms))
    assert kms.fetches == ["k1"]
    frames = [codec.encode(b"v%d" % i, ctx) for i in range(50)]
    assert all(codec.decode(f, ctx) == b"v%d" % i for i, f in enumerate(frames))
    assert kms.fetches == ["k1"]


def test_kms_rotation_reaches_running_codec(k1: bytes, k2: bytes, ctx: RowContext) -> None:
    kms = CountingKms({"k1": k1, "k2": k2}, "k1")
    codec = HaiveCodec(keyring=KeyRing(provider=kms, cache_ttl=0))
    old = codec.encode(b"old", ctx)
    kms.primary = "k2"
    new = codec.encode(b"new", ctx)
    assert (frame_key_id(old), frame_key_id(new)) == ("k1", "k2")
    assert codec.decode(old, ctx) == b"old"
    assert codec.decode(new, ctx) == b"new"


def test_kms_destroyed_key(k1: bytes, k2: bytes, ctx: RowContext) -> None:
    kms = CountingKms({"k1": k1, "k2": k2}, "k2")
    writer = HaiveCodec(keyring=KeyRing({"k1": k1}))
    frame = writer.encode(b"x", ctx)
    kms.destroyed.add("k1")
    reader = HaiveCodec(keyring=KeyRing(provider=kms))
    with pytest.raises(KeyDestroyedError) as info:
        reader.decode(frame, ctx)
    assert "'k1'" in str(info.value)
    assert "destroyed" in str(info.value)
    assert ctx.describe() in str(info.value)


def test_callable_provider(k1: bytes, k2: bytes, ctx: RowContext) -> None:
    fetched: list[str] = []

    def fetch(key_id: str) -> bytes | None:
        fetched.append(key_id)
        return {"k1": k1, "k2": k2}.get(key_id)

    codec = HaiveCodec(keyring=KeyRing(provider=fetch, primary="k2"))
    frame = HaiveCodec(keyring=KeyRing({"k1": k1})).encode(b"x", ctx)
    assert codec.decode(frame, ctx) == b"x"
    assert codec.decode(frame, ctx) == b"x"
    assert fetched == ["k2", "k1"]
    with pytest.raises(DecryptionError, match="'k9', which is not in the key ring"):
        codec.decode(HaiveCodec(keyring=KeyRing({"k9": os.urandom(32)})).encode(b"x", ctx), ctx)


def test_provider_returning_bad_key() -> None:
    with pytest.raises(ConfigurationError, match="key provider: key 'k1' is 3 bytes"):
        KeyRing(provider=lambda kid: b"abc", primary="k1")


# -- per-tenant keys and crypto-shredding ----------------------------------------


def _ctx(tenant: str, key: str = "k") -> RowContext:
    return RowContext(tenant, "thread", Kind.MESSAGE, key)


def test_tenant_key_used_for_its_tenant_only(k1: bytes) -> None:
    ring = KeyRing({"g1": k1})
    codec = HaiveCodec(keyring=ring)
    acme_key = ring.create_tenant_key("acme")
    assert acme_key.startswith("t-")
    assert ring.has_tenant_keys("acme")
    assert not ring.has_tenant_keys("globex")
    assert frame_key_id(codec.encode(b"x", _ctx("acme"))) == acme_key
    assert frame_key_id(codec.encode(b"x", _ctx("globex"))) == "g1"
    assert frame_key_id(codec.encode(b"x", _ctx(""))) == "g1"
    assert ring.primary_key_id("acme") == acme_key
    assert ring.primary_key_id("globex") == "g1"


def test_tenant_key_does_not_open_other_tenants_rows(k1: bytes) -> None:
    ring = KeyRing({"g1": k1})
    codec = HaiveCodec(keyring=ring)
    ring.create_tenant_key("acme", key_id="acme-1")
    frame = codec.encode(b"x", _ctx("acme"))
    with pytest.raises(DecryptionError, match="'acme-1', which is not in the key ring"):
        codec.decode(frame, _ctx("globex"))


def test_forget_tenant(k1: bytes) -> None:
    ring = KeyRing({"g1": k1})
    codec = HaiveCodec(keyring=ring)
    ring.create_tenant_key("acme")
    acme_rows = [codec.encode(b"acme %d" % i, _ctx("acme", str(i))) for i in range(3)]
    globex_row = codec.encode(b"globex", _ctx("globex"))
    default_row = codec.encode(b"default", _ctx(""))

    assert ring.forget_tenant("acme") == 1
    assert ring.is_tenant_destroyed("acme")
    for i, frame in enumerate(acme_rows):
        with pytest.raises(KeyDestroyedError) as info:
            codec.decode(frame, _ctx("acme", str(i)))
        assert isinstance(info.value, DecryptionError)
        assert "destroyed" in str(info.value)
        assert "'acme'" in str(info.value)
        assert _ctx("acme", str(i)).describe() in str(info.value)
    # Other tenants are unaffected.
    assert codec.decode(globex_row, _ctx("globex")) == b"globex"
    assert codec.decode(default_row, _ctx("")) == b"default"
    # Nothing new is written for, nor content-keyed for, a shredded tenant.
    with pytest.raises(KeyDestroyedError):
        codec.encode(b"again", _ctx("acme"))
    with pytest.raises(KeyDestroyedError):
        codec.content_key(b"again", "acme")
    with pytest.raises(ConfigurationError, match="crypto-shredded"):
        ring.create_tenant_key("acme")


def test_forgotten_key_is_gone_from_the_store(k1: bytes) -> None:
    """A fresh process (new ring over the same store) cannot read the rows either."""
    store = InMemoryTenantKeyStore()
    ring = KeyRing({"g1": k1}, tenant_store=store)
    ring.create_tenant_key("acme")
    frame = HaiveCodec(keyring=ring).encode(b"x", _ctx("acme"))
    ring.forget_tenant("acme")
    record = store.load("acme")
    assert record == TenantKeyRecord(keys=(), destroyed=True)
    fresh = HaiveCodec(keyring=KeyRing({"g1": k1}, tenant_store=store))
    with pytest.raises(KeyDestroyedError):
        fresh.decode(frame, _ctx("acme"))


def test_other_process_sees_new_and_forgotten_tenant_keys(k1: bytes) -> None:
    store = InMemoryTenantKeyStore()
    ring_a = KeyRing({"g1": k1}, tenant_store=store)
    ring_b = KeyRing({"g1": k1}, tenant_store=store)
    codec_a, codec_b = HaiveCodec(keyring=ring_a), HaiveCodec(keyring=ring_b)
    assert frame_key_id(codec_b.encode(b"x", _ctx("acme"))) == "g1"  # b caches "no keys"
    ring_a.create_tenant_key("acme", key_id="acme-1")
    frame = codec_a.encode(b"x", _ctx("acme"))
    # b reloads the tenant when it meets an unknown key id.
    assert codec_b.decode(frame, _ctx("acme")) == b"x"
    ring_a.forget_tenant("acme")
    assert codec_b.decode(frame, _ctx("acme")) == b"x"  # cached until the TTL ...
    ring_b.invalidate("acme")  # ... or an explicit invalidation
    with pytest.raises(KeyDestroyedError):
        codec_b.decode(frame, _ctx("acme"))


def test_store_holds_only_wrapped_keys(k1: bytes) -> None:
    store = InMemoryTenantKeyStore()
    ring = KeyRing({"g1": k1}, tenant_store=store)
    material = os.urandom(32)
    ring.create_tenant_key("acme", key=material, key_id="acme-1")
    record = store.load("acme")
    assert record is not None
    (wrapped,) = record.keys
    assert (wrapped.key_id, wrapped.wrapping_key_id) == ("acme-1", "g1")
    assert material not in wrapped.blob
    assert material.hex() not in repr(record)


def test_wrapped_key_moved_to_another_tenant_does_not_unwrap(k1: bytes) -> None:
    store = InMemoryTenantKeyStore()
    ring = KeyRing({"g1": k1}, tenant_store=store)
    ring.create_tenant_key("acme", key_id="acme-1")
    frame = HaiveCodec(keyring=ring).encode(b"x", _ctx("acme"))
    acme = store.load("acme")
    assert acme is not None
    store.save("mallory", acme)
    codec = HaiveCodec(keyring=KeyRing({"g1": k1}, tenant_store=store))
    with pytest.raises(DecryptionError, match="failed to unwrap"):
        codec.decode(frame, _ctx("mallory"))


def test_tenant_key_rotation_and_rewrap(k1: bytes, k2: bytes) -> None:
    store = InMemoryTenantKeyStore()
    ring = KeyRing([("g1", k1)], tenant_store=store)
    codec = HaiveCodec(keyring=ring)
    ring.create_tenant_key("acme", key_id="acme-1")
    old = codec.encode(b"old", _ctx("acme"))
    ring.create_tenant_key("acme", key_id="acme-2")
    new = codec.encode(b"new", _ctx("acme"))
    assert (frame_key_id(old), frame_key_id(new)) == ("acme-1", "acme-2")
    assert codec.decode(old, _ctx("acme")) == b"old"

    # Rotate the global key, re-wrap, then drop the old global key.
    rotated = KeyRing([("g2", k2), ("g1", k1)], tenant_store=store)
    assert rotated.rewrap_tenant_keys("acme") == 2
    assert rotated.rewrap_tenant_keys("acme") == 0
    assert rotated.rewrap_tenant_keys("globex") == 0
    only_new = HaiveCodec(keyring=KeyRing([("g2", k2)], tenant_store=store))
    assert only_new.decode(old, _ctx("acme")) == b"old"
    assert only_new.decode(new, _ctx("acme")) == b"new"


def test_tenant_key_needs_its_wrapping_key(k1: bytes, k2: bytes) -> None:
    store = InMemoryTenantKeyStore()
    ring = KeyRing([("g1", k1)], tenant_store=store)
    ring.create_tenant_key("acme", key_id="acme-1")
    frame = HaiveCodec(keyring=ring).encode(b"x", _ctx("acme"))
    without_g1 = HaiveCodec(keyring=KeyRing([("g2", k2)], tenant_store=store))
    with pytest.raises(DecryptionError) as info:
        without_g1.decode(frame, _ctx("acme"))
    assert "wrapped with global key 'g1'" in str(info.value)
    assert _ctx("acme").describe() in str(info.value)


@pytest.mark.parametrize(
    ("tenant", "kwargs", "message"),
    [
        ("", {}, "default tenant"),
        ("acme", {"key_id": "g1"}, "already in use"),
        ("acme", {"key": b"short"}, "5 bytes"),
        ("acme", {"key_id": "has space"}, "invalid encryption key id"),
    ],
)
def test_create_tenant_key_errors(
    k1: bytes, tenant: str, kwargs: dict[str, object], message: str
) -> None:
    ring = KeyRing({"g1": k1})
    with pytest.raises(ConfigurationError, match=message):
        ring.create_tenant_key(tenant, **kwargs)  # type: ignore[arg-type]


def test_duplicate_tenant_key_id(k1: bytes) -> None:
    ring = KeyRing({"g1": k1})
    ring.create_tenant_key("acme", key_id="a1")
    with pytest.raises(ConfigurationError, match="already in use"):
        ring.create_tenant_key("acme", key_id="a1")


def test_forget_default_tenant_refused(ring: KeyRing) -> None:
    with pytest.raises(ConfigurationError):
        ring.forget_tenant("")


def test_forget_tenant_without_own_keys(ring: KeyRing) -> None:
    codec = HaiveCodec(keyring=ring)
    frame = codec.encode(b"x", _ctx("acme"))
    assert ring.forget_tenant("acme") == 0
    with pytest.raises(KeyDestroyedError):
        codec.decode(frame, _ctx("acme"))


def test_tenant_row_context_binding_with_tenant_key(k1: bytes) -> None:
    ring = KeyRing({"g1": k1})
    codec = HaiveCodec(keyring=ring)
    ring.create_tenant_key("acme")
    ctx = _ctx("acme")
    frame = codec.encode(b"x", ctx)
    with pytest.raises(DecryptionError):
        codec.decode(frame, dataclasses.replace(ctx, scope="other"))
