"""The items of a msgpack array as byte slices, without decoding them.

``PostgresSaver`` stores every version of a list channel (a conversation's
``messages``) as the whole list: version n+1 repeats the n items of version n
and adds one. Split into item bytes, two versions share a prefix that is
decoded once: only the new items are given to the serde (the rest are the
objects decoded for the previous version, which the checkpointer then
recognises as items it already stored).
"""

from __future__ import annotations

import struct

# Bytes after the first one, by first byte, for the fixed-size formats.
_FIXED = {
    0xC0: 0, 0xC2: 0, 0xC3: 0,  # nil, false, true
    0xCA: 4, 0xCB: 8,  # float 32, 64
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # uint 8..64
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # int 8..64
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext 1..16 (type byte + data)
}  # fmt: skip
# Formats with a length: (width of the length, extra bytes after it).
_SIZED = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext (a type byte after the length)
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip
_WIDTH = {1: ">B", 2: ">H", 4: ">I"}


def _length(data: bytes, pos: int, width: int) -> int:
    return int(struct.unpack_from(_WIDTH[width], data, pos)[0])


def _header(data: bytes, pos: int) -> tuple[int, int]:
    """``(end of this value's own bytes, values nested in it)`` of the value at ``pos``."""
    b = data[pos]
    if b <= 0x7F or b >= 0xE0:
        return pos + 1, 0
    if 0x80 <= b <= 0x8F:
        return pos + 1, 2 * (b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return pos + 1, b & 0x0F
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F), 0
    if b in _FIXED:
        return pos + 1 + _FIXED[b], 0
    if b in _SIZED:
        width, extra = _SIZED[b]
        return pos + 1 + width + extra + _length(data, pos + 1, width), 0
    if b in (0xDC, 0xDD, 0xDE, 0xDF):
        width = 2 if b in (0xDC, 0xDE) else 4
        n = _length(data, pos + 1, width)
        return pos + 1 + width, n if b in (0xDC, 0xDD) else 2 * n
    raise ValueError(f"byte 0x{b:02x} starts no msgpack value")


def _skip(data: bytes, pos: int) -> int:
    """The end of the value at ``pos`` (nested values included)."""
    pending = 1
    while pending:
        pos, nested = _header(data, pos)
        pending += nested - 1
    if pos > len(data):
        raise ValueError("truncated msgpack")
    return pos


def split_array(data: bytes) -> list[bytes] | None:
    """The item bytes of ``data`` when it is exactly one msgpack array, else ``None``."""
    try:
        if not data:
            return None
        b = data[0]
        if 0x90 <= b <= 0x9F:
            n, pos = b & 0x0F, 1
        elif b in (0xDC, 0xDD):
            width = 2 if b == 0xDC else 4
            n, pos = _length(data, 1, width), 1 + width
        else:
            return None
        items = []
        for _ in range(n):
            end = _skip(data, pos)
            items.append(data[pos:end])
            pos = end
        return items if pos == len(data) else None
    except (ValueError, IndexError, struct.error):
        return None


def array_of(items: list[bytes]) -> bytes:
    """A msgpack array of already-encoded items."""
    n = len(items)
    if n <= 15:
        head = bytes([0x90 | n])
    elif n <= 0xFFFF:
        head = b"\xdc" + struct.pack(">H", n)
    else:
        head = b"\xdd" + struct.pack(">I", n)
    return head + b"".join(items)
