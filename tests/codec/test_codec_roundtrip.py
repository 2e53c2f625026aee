"""Round trips over payload sizes, compression on/off and encryption on/off."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haive_langgraph.codec import (
    Codec,
    Compression,
    HaiveCodec,
    KeyRing,
    Kind,
    PlainCodec,
    RowContext,
    default_codec,
    frame_key_id,
)
from haive_langgraph.codec._compression import DEFAULT_THRESHOLD

from .codec_helpers import compressible, incompressible

SIZES = [0, 1, DEFAULT_THRESHOLD, DEFAULT_THRESHOLD + 1, 511, 512, 4096, 1 << 20]


@pytest.fixture(params=[False, True], ids=["uncompressed", "compressed"])
def compression(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=[False, True], ids=["plaintext", "encrypted"])
def codec(request: pytest.FixtureRequest, compression: bool, ring: KeyRing) -> HaiveCodec:
    return HaiveCodec(compression=compression, keyring=ring if request.param else None)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("make", [compressible, incompressible])
def test_round_trip(codec: HaiveCodec, ctx: RowContext, size: int, make: object) -> None:
    assert callable(make)
    payload: bytes = make(size)
    frame = codec.encode(payload, ctx)
    assert frame[:3] == b"HV\x01"
    assert codec.decode(frame, ctx) == payload

    flags = frame[3]
    encrypted = codec.keyring is not None
    assert bool(flags & 0x02) == encrypted
    should_compress = (
        codec.compression.enabled and size > DEFAULT_THRESHOLD and make is compressible
    )  # random bytes never shrink, so they stay uncompressed
    assert bool(flags & 0x01) == should_compress
    assert bool(flags & 0x04) == should_compress  # dictionary 1 is on by default
    if should_compress:  # smaller than the same frame uncompressed
        assert len(frame) < len(
            HaiveCodec(compression=False, keyring=codec.keyring).encode(payload, ctx)
        )
    assert frame_key_id(frame) == ("k1" if encrypted else None)


def test_threshold_boundary() -> None:
    codec = HaiveCodec()
    ctx = RowContext("", "s", Kind.BLOB, "k")
    at = DEFAULT_THRESHOLD
    assert codec.encode(b"a" * at, ctx)[3] == 0
    assert codec.encode(b"a" * (at + 1), ctx)[3] == 0x05
    custom = HaiveCodec(compression=Compression(threshold=0, level=19))
    assert custom.encode(b"a" * 64, ctx)[3] == 0x05
    assert custom.decode(custom.encode(b"a" * 64, ctx), ctx) == b"a" * 64


def test_compressed_form_kept_only_when_smaller(ctx: RowContext) -> None:
    codec = HaiveCodec(compression=Compression(threshold=0))
    payload = incompressible(10_000)
    frame = codec.encode(payload, ctx)
    assert frame == b"HV\x01\x00" + payload


def test_plain_frames_match_plain_codec(ctx: RowContext) -> None:
    plain = PlainCodec()
    haive = HaiveCodec(compression=False)
    for payload in (b"", b"x", compressible(5000)):
        assert haive.encode(payload, ctx) == plain.encode(payload, ctx)
        assert haive.decode(plain.encode(payload, ctx), ctx) == payload
        assert plain.decode(haive.encode(payload, ctx), ctx) == payload
    # A compressing codec still writes PlainCodec frames for small payloads.
    assert HaiveCodec().encode(b"small", ctx) == plain.encode(b"small", ctx)


def test_plain_codec_unchanged(ctx: RowContext) -> None:
    assert isinstance(default_codec(), HaiveCodec)
    assert PlainCodec().encode(b"abc", ctx) == b"HV\x01\x00abc"
    assert PlainCodec().content_key(b"abc", "t") == bytes.fromhex(
        "ba7816bf8f01cfea414140de5dae2223"
    )


def test_implements_protocol(encrypting: HaiveCodec) -> None:
    assert isinstance(encrypting, Codec)
    assert isinstance(HaiveCodec(), Codec)


def test_decode_accepts_bytes_from_any_codec_configuration(ring: KeyRing, ctx: RowContext) -> None:
    """Reading never depends on the write settings: all four layouts decode."""
    writers = [HaiveCodec(compression=c, keyring=k) for c in (False, True) for k in (None, ring)]
    reader = HaiveCodec(compression=False, keyring=ring)
    payload = compressible(3000)
    for writer in writers:
        assert reader.decode(writer.encode(payload, ctx), ctx) == payload


def test_fresh_nonce_per_frame(encrypting: HaiveCodec, ctx: RowContext) -> None:
    frames = {encrypting.encode(b"same", ctx) for _ in range(100)}
    assert len(frames) == 100


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=4096), tenant=st.text(max_size=8), key=st.binary(max_size=20))
def test_round_trip_property(payload: bytes, tenant: str, key: bytes) -> None:
    codec = _PROPERTY_CODEC
    ctx = RowContext(tenant, "scope", Kind.WRITE, key)
    assert codec.decode(codec.encode(payload, ctx), ctx) == payload


_PROPERTY_CODEC = HaiveCodec(
    compression=Compression(threshold=16), keyring=KeyRing([("p1", bytes(range(32)))])
)


def test_threads_share_one_codec(encrypting: HaiveCodec) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                ctx = RowContext(f"t{n % 3}", "s", Kind.BLOB, f"{n}-{i}")
                payload = compressible(100 + (i * 37) % 3000, seed=n * 1000 + i)
                assert encrypting.decode(encrypting.encode(payload, ctx), ctx) == payload
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_buffer_types_accepted(encrypting: HaiveCodec, ctx: RowContext) -> None:
    payload = compressible(3000)
    for wrap in (bytearray, memoryview):
        frame = encrypting.encode(wrap(payload), ctx)  # type: ignore[arg-type]
        assert encrypting.decode(wrap(frame), ctx) == payload  # type: ignore[arg-type]
        assert frame_key_id(wrap(frame)) == "k1"  # type: ignore[arg-type]
