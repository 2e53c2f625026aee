"""Codec throughput: ``python -m tests.codec.bench_codec`` (not collected by pytest)."""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from functools import partial

from haive_langgraph.codec import Codec, HaiveCodec, KeyRing, Kind, PlainCodec, RowContext

from .codec_helpers import compressible


def _per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    ring = KeyRing([("k1", os.urandom(32))])
    codecs: dict[str, Codec] = {
        "PlainCodec": PlainCodec(),
        "plain": HaiveCodec(compression=False),
        "compressed": HaiveCodec(compression=True),
        "encrypted": HaiveCodec(compression=False, keyring=ring),
        "both": HaiveCodec(compression=True, keyring=ring),
    }
    ctx = RowContext("acme", "thread-1", Kind.BLOB, "channel:42")
    print(f"{'codec':<11} {'size':>7} {'frame':>7} {'encode':>20} {'decode':>20}")
    for size in (1024, 100 * 1024):
        payload = compressible(size)
        number = 20000 if size < 10_000 else 1000
        for name, codec in codecs.items():
            frame = codec.encode(payload, ctx)
            assert codec.decode(frame, ctx) == payload
            enc = _per_call_us(partial(codec.encode, payload, ctx), number)
            dec = _per_call_us(partial(codec.decode, frame, ctx), number)
            print(
                f"{name:<11} {size:>7} {len(frame):>7} "
                f"{enc:8.2f} us {size / enc:6.0f} MB/s "
                f"{dec:8.2f} us {size / dec:6.0f} MB/s"
            )
        for name in ("compressed", "both"):
            key = _per_call_us(partial(codecs[name].content_key, payload, "acme"), number)
            print(f"content_key {name:<10} {size:>7} {key:8.2f} us")


if __name__ == "__main__":
    main()
