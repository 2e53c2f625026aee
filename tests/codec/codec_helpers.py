"""Payload helpers for the codec tests."""

from __future__ import annotations

import random


def compressible(size: int, seed: int = 0) -> bytes:
    """JSON-ish text that zstd shrinks, like serialised messages."""
    rnd = random.Random(seed)
    words = [b"user", b"assistant", b"content", b"tool_call", b"hello", b"world", b"the"]
    out = bytearray()
    while len(out) < size:
        out += b'{"role":"' + rnd.choice(words) + b'","content":"'
        out += b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) + b'"},'
    return bytes(out[:size])


def incompressible(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)
