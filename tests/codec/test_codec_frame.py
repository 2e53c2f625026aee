"""Malformed frames are refused with clear errors naming the row; nothing guesses."""

from __future__ import annotations

import pytest

from haive_langgraph.codec import HaiveCodec, KeyRing, PlainCodec, RowContext, frame_key_id
from haive_langgraph.errors import CorruptDataError, DecryptionError

from .codec_helpers import compressible


@pytest.fixture(params=["plain", "compressing", "encrypting", "required"])
def reader(request: pytest.FixtureRequest, ring: KeyRing) -> HaiveCodec:
    return {
        "plain": lambda: HaiveCodec(compression=False),
        "compressing": lambda: HaiveCodec(),
        "encrypting": lambda: HaiveCodec(keyring=ring),
        "required": lambda: HaiveCodec(keyring=ring, require_encryption=True),
    }[request.param]()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "empty"),
        (b"X", "bad magic"),
        (b"HX\x01\x00abc", "bad magic"),
        (b"\x28\xb5\x2f\xfd\x00\x00", "bad magic"),  # a bare zstd frame
        (b"HV", "truncated"),
        (b"HV\x01", "truncated"),
        (b"HV\x02\x00abc", "version 2"),
        (b"HV\x00\x00abc", "version 0"),
        (b"HV\x01\x08abc", "unknown frame flags 0x08"),
        (b"HV\x01\x04abc", "dictionary flag without the compressed flag"),
        (b"HV\x01\x05not zstd", "not a zstd frame"),
        (b"HV\x01\x80abc", "unknown frame flags 0x80"),
        (b"HV\x01\x02", "key id is missing"),
        (b"HV\x01\x02\x02k1" + bytes(12), "truncated"),
        (b"HV\x01\x02\x00" + bytes(40), "malformed encryption key id"),
        (b"HV\x01\x02\x02k\xff" + bytes(40), "malformed encryption key id"),
        (b"HV\x01\x02\x02-a" + bytes(40), "malformed encryption key id"),
        (b"HV\x01\x01not zstd", "not a zstd frame"),
    ],
)
def test_malformed_frames(reader: HaiveCodec, ctx: RowContext, frame: bytes, message: str) -> None:
    expected = DecryptionError if reader.require_encryption else CorruptDataError
    with pytest.raises(expected) as info:
        reader.decode(frame, ctx)
    if reader.require_encryption and frame in (b"HV\x01\x01not zstd", b"HV\x01\x05not zstd"):
        # Well-formed header of a frame that is not encrypted: refused before
        # its body is even looked at.
        message = "plaintext row where encryption is required"
    assert message in str(info.value)
    assert ctx.describe() in str(info.value)


def test_unknown_version_and_flags_are_corrupt_not_decryption(ctx: RowContext) -> None:
    codec = HaiveCodec()
    for frame in (b"HV\x02\x00abc", b"HV\x01\x08abc", b"HV\x01\x04abc", b"XX\x01\x00"):
        with pytest.raises(CorruptDataError) as info:
            codec.decode(frame, ctx)
        assert type(info.value) is CorruptDataError


@pytest.mark.parametrize("mode", ["compressed", "encrypted", "both"])
def test_every_truncation_fails(ring: KeyRing, ctx: RowContext, mode: str) -> None:
    codec = HaiveCodec(
        compression=mode != "encrypted", keyring=ring if mode != "compressed" else None
    )
    frame = codec.encode(compressible(2000), ctx)
    # Compressed frames use dictionary 1 (flag 0x04) by default.
    assert frame[3] == {"compressed": 0x05, "encrypted": 0x02, "both": 0x07}[mode]
    for cut in range(len(frame)):
        with pytest.raises(CorruptDataError) as info:
            codec.decode(frame[:cut], ctx)
        assert ctx.describe() in str(info.value)
        if mode != "compressed" and cut > 4 + 1 + 2 + 12 + 16:
            assert isinstance(info.value, DecryptionError)


def test_plain_frames_have_no_length_so_only_header_truncation_is_detected(
    ctx: RowContext,
) -> None:
    codec = HaiveCodec(compression=False)
    frame = codec.encode(b"payload", ctx)
    for cut in range(4):
        with pytest.raises(CorruptDataError):
            codec.decode(frame[:cut], ctx)


def test_trailing_bytes_after_compressed_payload(ctx: RowContext) -> None:
    codec = HaiveCodec()
    frame = codec.encode(compressible(3000), ctx)
    assert frame[3] == 0x05
    with pytest.raises(CorruptDataError, match="unused data"):
        codec.decode(frame + b"\x00", ctx)


def test_corrupt_compressed_payload_detected_by_checksum(ctx: RowContext) -> None:
    codec = HaiveCodec()
    frame = bytearray(codec.encode(compressible(3000), ctx))
    frame[len(frame) // 2] ^= 0x01
    with pytest.raises(CorruptDataError):
        codec.decode(bytes(frame), ctx)


def test_frame_key_id(encrypting: HaiveCodec, ctx: RowContext) -> None:
    assert frame_key_id(encrypting.encode(b"x", ctx)) == "k1"
    assert frame_key_id(PlainCodec().encode(b"x", ctx)) is None
    assert frame_key_id(HaiveCodec().encode(compressible(2000), ctx)) is None
    with pytest.raises(CorruptDataError, match="bad magic"):
        frame_key_id(b"nope")


def test_plain_codec_refuses_flagged_frames(encrypting: HaiveCodec, ctx: RowContext) -> None:
    with pytest.raises(CorruptDataError, match="no compression or keys"):
        PlainCodec().decode(encrypting.encode(b"x", ctx), ctx)
