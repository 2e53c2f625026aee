"""Key rotation re-encrypts store values (``haive-lg keys rotate`` covers ``store_items``)."""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import pytest

from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import DecryptionError
from haive_langgraph.ops.keys import frames_by_key, rotate_keys
from haive_langgraph.stores import PostgresStore


def ring(*keys: tuple[str, str]) -> KeyRing:
    return KeyRing.from_string(",".join(f"{i}:{k}" for i, k in keys))


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


Item = tuple[str, tuple[str, ...], str, dict[str, Any]]


def items() -> list[Item]:
    # Namespaces of different depths and shared prefixes, two tenants: the
    # rotation's cursor walks (tenant, namespace[], key) across batches.
    # Labels with the characters of PostgreSQL's array syntax are labels too.
    odd = ['we"ird', "back\\slash", "a,b", "{x}", "NULL", " sp "]
    out: list[Item] = []
    for tenant in ("acme", "globex"):
        for i in range(7):
            ns = ("users", odd[i % 6]) if i % 2 else ("users", f"u{i % 3}", "notes")
            out.append((tenant, ns, f"k{i}", {"text": f"{tenant} secret {i}", "n": i}))
    return out


def test_rotation_reencrypts_store_values(dsn: str) -> None:
    k1, k2 = new_key(), new_key()
    schema = f"rot_{uuid.uuid4().hex[:8]}"
    with PostgresStore.from_conn_string(
        dsn, schema=schema, codec=HaiveCodec(keyring=ring(("k1", k1)))
    ) as store:
        store.setup()
        for tenant, ns, key, value in items():
            store.for_tenant(tenant).put(ns, key, value)
    assert frames_by_key(dsn, schema=schema)["store_items"] == {"k1": 14}

    codec = HaiveCodec(keyring=ring(("k2", k2), ("k1", k1)))
    calls = 0

    def stop_after_two(table: str, scanned: int, rewritten: int) -> None:
        nonlocal calls
        calls += int(table == "store_items")
        if calls == 2:
            raise KeyboardInterrupt("interrupted")

    # Interrupted after two batches of 3, then resumed from the stored cursor.
    with pytest.raises(KeyboardInterrupt):
        rotate_keys(dsn, codec, schema=schema, batch_size=3, progress=stop_after_two)
    assert frames_by_key(dsn, schema=schema)["store_items"] == {"k1": 8, "k2": 6}
    report = rotate_keys(dsn, codec, schema=schema, batch_size=3)
    assert report.resumed["store_items"] is True
    assert report.rewritten["store_items"] == 8
    assert frames_by_key(dsn, schema=schema)["store_items"] == {"k2": 14}

    # Only the new key is left: every value reads back unchanged.
    with PostgresStore.from_conn_string(
        dsn, schema=schema, codec=HaiveCodec(keyring=ring(("k2", k2)))
    ) as store:
        for tenant, ns, key, value in items():
            got = store.for_tenant(tenant).get(ns, key)
            assert got is not None and got.value == value
    with (
        PostgresStore.from_conn_string(
            dsn, schema=schema, codec=HaiveCodec(keyring=ring(("k1", k1)))
        ) as store,
        pytest.raises(DecryptionError),
    ):
        store.for_tenant("acme").get(("users", "back\\slash"), "k1")
