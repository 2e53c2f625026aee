"""The frame layout: building and parsing headers, nothing else.

Layout (all frames)::

    magic    2 bytes   b"HV"
    version  1 byte    0x01
    flags    1 byte    bit 0 compressed, bit 1 encrypted, bit 2 compressed with
                       zstd dictionary 1 (only with bit 0), other bits must be 0
    -- only when encrypted --
    kid_len  1 byte    1..32
    key id   kid_len   ASCII, [A-Za-z0-9][A-Za-z0-9._-]*
    nonce    12 bytes  random, AES-GCM nonce
    -- always --
    body     rest      payload, zstd frame, or AES-GCM ciphertext + 16-byte tag

A frame with flags 0 is exactly what :class:`PlainCodec` writes.
"""

from __future__ import annotations

import re

from haive_langgraph.codec._base import FORMAT_VERSION, MAGIC, RowContext
from haive_langgraph.errors import ConfigurationError, CorruptDataError

FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
FLAG_DICTIONARY = 0x04
KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_DICTIONARY
NONCE_BYTES = 12
TAG_BYTES = 16
# 32 characters at most: a 32-byte key is 43-44 base64 characters, so a key
# pasted where an id belongs is never a valid id and never echoed in errors.
KEY_ID_MAX_CHARS = 32
BASE_HEADER_BYTES = 4

_KEY_ID_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{KEY_ID_MAX_CHARS - 1}}}"
_KEY_ID = re.compile(_KEY_ID_PATTERN)
_KEY_ID_BYTES = re.compile(_KEY_ID_PATTERN.encode("ascii"))
KEY_ID_RULE = (
    f"1-{KEY_ID_MAX_CHARS} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
)


# (flags, key id or None, nonce or b"", offset of the body). A plain tuple:
# building a NamedTuple costs 0.5 us, a third of the parse.
FrameHeader = tuple[int, str | None, bytes, int]

# Key ids already validated, so the regex runs once per id, not once per frame.
_known_key_ids: dict[bytes, str] = {}
_MAX_KNOWN_KEY_IDS = 1024


def is_valid_key_id(key_id: object) -> bool:
    """Whether ``key_id`` is a string that can be stored in a frame."""
    return isinstance(key_id, str) and _KEY_ID.fullmatch(key_id) is not None


def validate_key_id(key_id: str) -> str:
    """Return ``key_id`` or raise :class:`ConfigurationError` (never echoing it)."""
    if not is_valid_key_id(key_id):
        # The offending value is not shown: it might be key material.
        raise ConfigurationError(f"invalid encryption key id: a key id is {KEY_ID_RULE}")
    return key_id


def encrypted_header_prefix(flags: int, key_id: str) -> bytes:
    """Header bytes of an encrypted frame up to (excluding) the nonce."""
    kid = key_id.encode("ascii")
    return MAGIC + bytes((FORMAT_VERSION, flags | FLAG_ENCRYPTED, len(kid))) + kid


def plain_header(flags: int) -> bytes:
    """Header of a frame that is not encrypted."""
    return MAGIC + bytes((FORMAT_VERSION, flags))


def _where(ctx: RowContext | None) -> str:
    return ctx.describe() if ctx is not None else "frame"


def parse_header(frame: bytes, ctx: RowContext | None = None) -> FrameHeader:
    """Parse and validate the header of ``frame``.

    Args:
        frame: A stored frame.
        ctx: The row it was read from, named in error messages.

    Returns:
        The header fields and where the body starts.

    Raises:
        CorruptDataError: The frame is not a well-formed haive frame of a
            version and flags this reader knows.
    """
    if len(frame) < BASE_HEADER_BYTES:
        if not frame:
            raise CorruptDataError(f"{_where(ctx)} is empty, not a haive frame")
        if frame[:2] != MAGIC[: len(frame)]:
            raise CorruptDataError(f"{_where(ctx)} is not a haive frame (bad magic bytes)")
        raise CorruptDataError(
            f"{_where(ctx)} is truncated: {len(frame)} bytes, shorter than a frame header"
        )
    if frame[:2] != MAGIC:
        raise CorruptDataError(f"{_where(ctx)} is not a haive frame (bad magic bytes)")
    version = frame[2]
    if version != FORMAT_VERSION:
        raise CorruptDataError(
            f"{_where(ctx)} has frame format version {version}, but this reader only "
            f"knows version {FORMAT_VERSION}; upgrade haive-langgraph to read it"
        )
    flags = frame[3]
    if flags & ~KNOWN_FLAGS:
        raise CorruptDataError(
            f"{_where(ctx)} has unknown frame flags {flags:#04x} "
            f"(known: {KNOWN_FLAGS:#04x}); it was written by a newer version or is corrupt"
        )
    if flags & FLAG_DICTIONARY and not flags & FLAG_COMPRESSED:
        raise CorruptDataError(
            f"{_where(ctx)} has frame flags {flags:#04x}: the dictionary flag without the "
            "compressed flag; it is corrupt"
        )
    if not flags & FLAG_ENCRYPTED:
        return flags, None, b"", BASE_HEADER_BYTES
    if len(frame) < BASE_HEADER_BYTES + 1:
        raise CorruptDataError(f"{_where(ctx)} is truncated: the key id is missing")
    kid_len = frame[4]
    kid_end = BASE_HEADER_BYTES + 1 + kid_len
    body_offset = kid_end + NONCE_BYTES
    if len(frame) < body_offset + TAG_BYTES:
        raise CorruptDataError(
            f"{_where(ctx)} is truncated: {len(frame)} bytes, too short for an encrypted frame"
        )
    kid = frame[BASE_HEADER_BYTES + 1 : kid_end]
    key_id = _known_key_ids.get(kid)
    if key_id is None:
        if not kid_len or _KEY_ID_BYTES.fullmatch(kid) is None:
            raise CorruptDataError(f"{_where(ctx)} has a malformed encryption key id")
        key_id = kid.decode("ascii")
        if len(_known_key_ids) < _MAX_KNOWN_KEY_IDS:
            _known_key_ids[kid] = key_id
    return flags, key_id, frame[kid_end:body_offset], body_offset


def frame_key_id(frame: bytes) -> str | None:
    """The id of the key ``frame`` is encrypted with, or ``None`` if it is not encrypted.

    Args:
        frame: A stored frame.

    Returns:
        The key id recorded in the frame header.

    Raises:
        CorruptDataError: ``frame`` is not a well-formed haive frame.

    Example:
        >>> frame_key_id(PlainCodec().encode(b"x", ctx)) is None
        True
    """
    return parse_header(bytes(frame) if type(frame) is not bytes else frame)[1]
