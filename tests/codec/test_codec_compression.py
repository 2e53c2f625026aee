"""zstd compression and bounded decompression (zip bombs)."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from collections.abc import Iterator

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from haive_langgraph.codec import (
    Compression,
    DecompressionLimitError,
    HaiveCodec,
    KeyRing,
    RowContext,
)
from haive_langgraph.codec._dictionary import DICTIONARY_1
from haive_langgraph.errors import ConfigurationError, CorruptDataError, DecryptionError

from .codec_helpers import compressible

BOMB_SIZE = 200 * 1024 * 1024
MiB = 1024 * 1024


def _zeros_compressed(*, declare_size: bool) -> bytes:
    """200 MB of zeros as one zstd frame, built in 1 MiB steps (no 200 MB buffer)."""
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=declare_size)
    cobj = cctx.compressobj(size=BOMB_SIZE if declare_size else -1)
    chunk = bytes(MiB)
    parts = [cobj.compress(chunk) for _ in range(BOMB_SIZE // MiB)]
    parts.append(cobj.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb_declared() -> bytes:
    bomb = _zeros_compressed(declare_size=True)
    assert zstandard.frame_content_size(bomb) == BOMB_SIZE
    return bomb


@pytest.fixture(scope="module")
def bomb_undeclared() -> bytes:
    bomb = _zeros_compressed(declare_size=False)
    assert zstandard.frame_content_size(bomb) == -1
    return bomb


class _Peak:
    seconds: float = 0.0
    bytes: int = 0


@pytest.fixture
def measure() -> Iterator[_Peak]:
    peak = _Peak()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield peak
    finally:
        peak.seconds = time.perf_counter() - start
        peak.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def _plain_bomb_frame(bomb: bytes) -> bytes:
    return b"HV\x01\x01" + bomb


def test_bomb_with_declared_size_refused_without_expanding(
    bomb_declared: bytes, ctx: RowContext
) -> None:
    codec = HaiveCodec()
    frame = _plain_bomb_frame(bomb_declared)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DecompressionLimitError) as info:
            codec.decode(frame, ctx)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert f"{BOMB_SIZE} bytes" in message
    assert "limit of 67108864 bytes" in message
    assert ctx.describe() in message
    assert elapsed < 0.5
    assert peak < 2 * len(frame) + MiB


@pytest.mark.parametrize("limit", [MiB, 64 * MiB])
def test_bomb_without_declared_size_stops_at_the_limit(
    bomb_undeclared: bytes, ctx: RowContext, limit: int
) -> None:
    codec = HaiveCodec(compression=Compression(max_decompressed_size=limit))
    frame = _plain_bomb_frame(bomb_undeclared)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DecompressionLimitError) as info:
            codec.decode(frame, ctx)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"more than the limit of {limit} bytes" in str(info.value)
    assert ctx.describe() in str(info.value)
    # Streaming, one chunk at a time: memory does not grow with the output,
    # and work stops at the limit instead of expanding all 200 MB.
    assert peak < 4 * MiB
    assert elapsed < 2.0


def test_authenticated_bomb_refused_too(
    bomb_undeclared: bytes, bomb_declared: bytes, k1: bytes, ctx: RowContext
) -> None:
    """Even a frame that authenticates (say, from a compromised writer) is bounded."""
    codec = HaiveCodec(keyring=KeyRing([("k1", k1)]))
    for bomb in (bomb_declared, bomb_undeclared):
        nonce = os.urandom(12)
        header = b"HV\x01\x03\x02k1" + nonce
        frame = header + AESGCM(k1).encrypt(nonce, bomb, header + ctx.associated_data())
        with pytest.raises(DecompressionLimitError):
            codec.decode(frame, ctx)


def test_limit_applies_to_honest_frames(ctx: RowContext) -> None:
    writer = HaiveCodec()
    frame = writer.encode(compressible(200_000), ctx)
    assert frame[3] == 0x05
    reader = HaiveCodec(compression=Compression(max_decompressed_size=100_000))
    with pytest.raises(DecompressionLimitError, match="200000 bytes"):
        reader.decode(frame, ctx)
    exact = HaiveCodec(compression=Compression(max_decompressed_size=200_000))
    assert exact.decode(frame, ctx) == compressible(200_000)


def test_frames_without_declared_size_still_decode(ctx: RowContext) -> None:
    codec = HaiveCodec()
    payload = compressible(300_000)
    undeclared = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
    assert codec.decode(b"HV\x01\x01" + undeclared, ctx) == payload
    empty = zstandard.ZstdCompressor(write_content_size=False).compress(b"")
    assert codec.decode(b"HV\x01\x01" + empty, ctx) == b""
    with pytest.raises(CorruptDataError, match=r"unexpected bytes|corrupt compressed"):
        codec.decode(b"HV\x01\x01" + undeclared + b"junk", ctx)
    with pytest.raises(CorruptDataError, match="truncated"):
        codec.decode(b"HV\x01\x01" + undeclared[:-10], ctx)


def test_two_zstd_frames_are_refused(ctx: RowContext) -> None:
    one = zstandard.ZstdCompressor().compress(compressible(1000))
    with pytest.raises(CorruptDataError):
        HaiveCodec().decode(b"HV\x01\x01" + one + one, ctx)


def test_window_larger_than_the_limit_is_refused(ctx: RowContext) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=27, write_content_size=False
    )
    # Streaming (size unknown to zstd), so the declared window is not shrunk.
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = cobj.compress(compressible(10_000)) + cobj.flush()
    assert zstandard.get_frame_parameters(data).window_size == 1 << 27
    codec = HaiveCodec(compression=Compression(max_decompressed_size=MiB))
    with pytest.raises(DecompressionLimitError, match="134217728-byte zstd window"):
        codec.decode(b"HV\x01\x01" + data, ctx)


def test_compression_level_changes_output(ctx: RowContext) -> None:
    payload = compressible(100_000)
    fast = HaiveCodec(compression=Compression(level=1)).encode(payload, ctx)
    small = HaiveCodec(compression=Compression(level=19)).encode(payload, ctx)
    assert len(small) < len(fast) < len(payload)
    assert HaiveCodec().decode(small, ctx) == payload


def test_disabled_compression_still_reads_compressed(ctx: RowContext) -> None:
    frame = HaiveCodec().encode(compressible(5000), ctx)
    off = HaiveCodec(compression=False)
    assert off.encode(compressible(5000), ctx)[3] == 0
    assert off.decode(frame, ctx) == compressible(5000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"level": 23},
        {"level": True},
        {"threshold": -1},
        {"max_decompressed_size": 0},
    ],
)
def test_invalid_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        Compression(**kwargs)  # type: ignore[arg-type]


# -- dictionary 1 -------------------------------------------------------------


def test_dictionary_is_frozen() -> None:
    # Frames flagged 0x04 need exactly these bytes to expand: the digest is
    # repeated here so that editing the dictionary (and its digest) fails.
    assert len(DICTIONARY_1) == 1345
    assert hashlib.sha256(DICTIONARY_1).hexdigest() == (
        "72a19b1be228aab334c515eea986094b4755c2af86abd0f528734bde602cae7d"
    )


def _chat_payloads() -> list[bytes]:
    serde = JsonPlusSerializer()
    text = " ".join(["the", "agent", "answers", "about", "the", "thread"] * 25)
    values = [
        HumanMessage(content=text, id="human-1"),
        AIMessage(content="Reply: " + text, id="ai-1"),
        {
            "v": 4,
            "ts": "2026-11-24T03:32:30.831099+00:00",
            "channel_versions": {"__start__": 2, "messages": 3, "branch:to:model": 3},
            "versions_seen": {
                "__input__": {},
                "__start__": {"__start__": 1},
                "model": {"branch:to:model": 2},
            },
            "updated_channels": ["messages"],
        },
    ]
    return [tag.encode() + b"\x00" + data for tag, data in map(serde.dumps_typed, values)]


def test_dictionary_shrinks_messages_and_checkpoint_bodies(ctx: RowContext) -> None:
    with_dict = HaiveCodec()
    without = HaiveCodec(compression=Compression(dictionary=False))
    for payload in _chat_payloads():
        small, plain = with_dict.encode(payload, ctx), without.encode(payload, ctx)
        assert (small[3], plain[3]) == (0x05, 0x01)
        assert len(small) < len(plain) - 30, (len(small), len(plain), payload[:40])
        # Each reads the other's frames.
        assert without.decode(small, ctx) == with_dict.decode(plain, ctx) == payload


def test_dictionary_flag_is_checked(ring: KeyRing, ctx: RowContext) -> None:
    payload = _chat_payloads()[1]
    # Plaintext frames: a frame that needs the dictionary, read without it, is
    # refused (zstd's checksum). The other way round is harmless: a frame made
    # without the dictionary never refers to it and expands to the same bytes.
    frame = bytearray(HaiveCodec().encode(payload, ctx))
    frame[3] = 0x01
    with pytest.raises(CorruptDataError, match="corrupt compressed payload") as info:
        HaiveCodec().decode(bytes(frame), ctx)
    assert type(info.value) is CorruptDataError
    frame = bytearray(HaiveCodec(compression=Compression(dictionary=False)).encode(payload, ctx))
    frame[3] = 0x05
    assert HaiveCodec().decode(bytes(frame), ctx) == payload
    # Encrypted frames: the flags are authenticated.
    frame = bytearray(HaiveCodec(keyring=ring).encode(payload, ctx))
    assert frame[3] == 0x07
    frame[3] = 0x03
    with pytest.raises(DecryptionError, match="failed to decrypt"):
        HaiveCodec(keyring=ring).decode(bytes(frame), ctx)
