"""zstd compression and bounded decompression (zip bombs)."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Iterator

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haive_langgraph.codec import (
    Compression,
    DecompressionLimitError,
    HaiveCodec,
    KeyRing,
    RowContext,
)
from haive_langgraph.errors import ConfigurationError, CorruptDataError

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
    assert frame[3] == 1
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
