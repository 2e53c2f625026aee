"""Codec benchmark: compression and encryption on the chat-graph workload.

Side by side in one run, on one server (a fresh database each): this
checkpointer with the codec off, zstd, AES-256-GCM, and both; and
``langgraph-checkpoint-postgres``'s ``PostgresSaver`` plain and with
LangGraph's ``EncryptedSerializer`` (AES-256-GCM from ``cryptography``, the
same cipher). Prints invokes/s, database bytes and stored value bytes, and
the ratios the codec issue sets targets for:

* compression shrinks stored message bytes >= 2x on chat text;
* encryption + compression costs <= 10% of invokes/s.

    python benchmarks/codec.py [--threads 5] [--turns 40] [--rounds 3] [--text small]

Message text as in ``checkpointer.py``: English-like by default (compresses
like English prose), ``--text small`` for its 37-word vocabulary.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import database_bytes, fresh_database, human_bytes, print_table, server
from checkpointer import Text, run_workload
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from langgraph.checkpoint.serde.base import CipherProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

KEY = os.urandom(32)


class AesGcmCipher(CipherProtocol):
    """AES-256-GCM for LangGraph's EncryptedSerializer (what pycryptodome's would do)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        return "aesgcm", nonce + self._aead.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        return self._aead.decrypt(ciphertext[:12], ciphertext[12:], None)


def haive(**options: Any) -> Any:
    @contextmanager
    def make(dsn: str) -> Iterator[Any]:
        from haive_langgraph.checkpointers import PostgresCheckpointer

        with PostgresCheckpointer.from_conn_string(dsn, **options) as saver:
            saver.setup()
            yield saver

    return make


def langgraph_postgres(encrypted: bool) -> Any:
    @contextmanager
    def make(dsn: str) -> Iterator[Any]:
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(dsn) as saver:
            if encrypted:
                saver.serde = EncryptedSerializer(AesGcmCipher(KEY))
            saver.setup()
            yield saver

    return make


def keyring() -> Any:
    from haive_langgraph.codec import KeyRing

    return KeyRing.from_string(f"k1:{base64.b64encode(KEY).decode()}")


VARIANTS = [
    ("haive plain", haive(compression=False)),
    ("haive zstd", haive(compression=True)),
    ("haive aes-gcm", haive(compression=False, keyring=keyring())),
    ("haive zstd+aes-gcm", haive(compression=True, keyring=keyring())),
    ("PostgresSaver", langgraph_postgres(False)),
    ("PostgresSaver+EncryptedSerializer", langgraph_postgres(True)),
]


def value_bytes(dsn: str) -> int:
    """Bytes of stored values: our blobs, or PostgresSaver's blobs and writes."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('haive.blobs')").fetchone() != (None,):
            row = conn.execute("SELECT coalesce(sum(octet_length(data)), 0) FROM haive.blobs")
        else:
            row = conn.execute(
                "SELECT (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs)"
                " + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes)"
            )
        return int(row.fetchone()[0])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text", choices=["english", "small"], default="english")
    args = parser.parse_args()
    text = Text(args.text)
    best: dict[str, dict[str, float]] = {}
    with server() as srv:
        for _ in range(args.rounds):
            for name, factory in VARIANTS:
                with fresh_database(srv, "codec") as dsn, factory(dsn) as saver:
                    res = run_workload(
                        saver,
                        delta=False,
                        threads=args.threads,
                        turns=args.turns,
                        name=name,
                        text=text,
                    )
                    row = best.setdefault(name, {"ips": 0.0})
                    row["ips"] = max(row["ips"], res.invokes_per_s)
                    row["db"] = database_bytes(dsn)
                    row["values"] = value_bytes(dsn)
    plain = best["haive plain"]
    rows = [
        [
            name,
            f"{r['ips']:.1f}",
            f"{r['ips'] / plain['ips']:.2f}x",
            human_bytes(r["db"]),
            human_bytes(r["values"]),
        ]
        for name, r in best.items()
    ]
    print_table(
        f"Chat graph, {args.threads} threads x {args.turns} turns, {args.text} text "
        f"(best of {args.rounds})",
        ["variant", "invokes/s", "vs haive plain", "db bytes", "stored value bytes"],
        rows,
    )
    zstd, both = best["haive zstd"], best["haive zstd+aes-gcm"]
    pg, pg_enc = best["PostgresSaver"], best["PostgresSaver+EncryptedSerializer"]
    print(
        "\nratios:"
        f"\n  stored value bytes, plain / zstd              {plain['values'] / zstd['values']:.2f}x"
        "   (target >= 2x)"
        f"\n  invokes/s, zstd+aes-gcm / plain               {both['ips'] / plain['ips']:.2f}x"
        "   (target >= 0.90x)"
        f"\n  db bytes, PostgresSaver+Encrypted / ours      {pg_enc['db'] / both['db']:.1f}x"
        f"\n  invokes/s, ours zstd+aes / PostgresSaver+Enc  {both['ips'] / pg_enc['ips']:.2f}x"
        f"\n  invokes/s, PostgresSaver+Enc / PostgresSaver  {pg_enc['ips'] / pg['ips']:.2f}x"
    )


if __name__ == "__main__":
    main()
