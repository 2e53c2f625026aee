"""The store's vector index and its concurrent readers: interrupted builds, TTL-refresh deadlocks.

* An ANN index build that does not finish (a cancelled ``CREATE INDEX
  CONCURRENTLY``, a client killed mid-build) leaves an *invalid* index that
  searches never use and (once ready) writes still maintain. ``setup()``,
  ``index_pending()`` and the background indexer find it by name in the
  store's schema and rebuild it under the schema's rebuild lock; searches are
  exact meanwhile. The rebuild runs without the connection's statement and
  lock timeouts, which would otherwise cancel it part-way.
* Reads that refresh TTLs (``refresh_on_read``) take row locks; concurrent
  reads of overlapping items in different orders (two queries ranking the
  same items oppositely, gets in any order, a get and a search in one batch)
  must never deadlock: a refresh skips rows another transaction holds.

Builds are caught mid-way deterministically: a transaction holding ``ROW
EXCLUSIVE`` on ``store_vectors`` keeps ``CREATE INDEX CONCURRENTLY`` in its
"waiting for writers before build" phase (the index is already in the
catalog, invalid), which ``pg_stat_progress_create_index`` shows.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.store.base import GetOp, SearchOp
from psycopg import sql

from tests.stores.conftest import Driver, Factory, store_factory

NS = ("idx",)
DIMS = 4
N_ITEMS = 120
ROOT = Path(__file__).resolve().parents[2]


def angle_vector(theta: float) -> list[float]:
    return [math.cos(theta), math.sin(theta), 0.0, 0.0]


def item_angle(i: int) -> float:
    """Item ``i`` lies on a quarter circle: query "a" (angle 0) ranks items 0, 1, 2 ...
    first, query "b" (angle pi/2) ranks them in the opposite order."""
    return (i + 0.5) / N_ITEMS * (math.pi / 2)


def embed(texts: Sequence[str]) -> list[list[float]]:
    out = []
    for text in texts:
        if text == "a":
            out.append(angle_vector(0.0))
        elif text == "b":
            out.append(angle_vector(math.pi / 2))
        elif text.startswith("angle "):
            out.append(angle_vector(float(text.split()[1])))
        else:
            out.append(angle_vector(item_angle(int(text.split()[1]))))
    return out


def index_config(**extra: Any) -> dict[str, Any]:
    return {"dims": DIMS, "embed": embed, "fields": ["text"], **extra}


@pytest.fixture(params=["sync", "async"])
async def make(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[Factory]:
    async with store_factory(request.param, dsn, "ix") as factory:
        yield factory


def schema_of(store: Driver) -> str:
    return str(store.store.schema)  # type: ignore[attr-defined]


# == TTL refresh under concurrent readers ===============================================


MIXES = {
    # Two queries ranking the same items in opposite orders, and a filter search.
    "searches": (0, 1, 2),
    # Batches of gets, each in its own shuffled order.
    "gets": (3,),
    # A batch of gets and a vector search, refreshed in one transaction.
    "batches": (4,),
}


@pytest.mark.parametrize("mix", list(MIXES))
async def test_concurrent_refreshing_reads_never_deadlock(
    make: Factory, dsn: str, mix: str
) -> None:
    """Concurrent reads refreshing the TTLs of overlapping items: none fails, and
    every item's expiry moved forward. Before the fix each refresh locked its rows
    in the read's order and most of these calls failed with DeadlockDetected."""
    store = await make(index=index_config(), ttl={"default_ttl": 60, "refresh_on_read": True})
    await store.batch([_put(f"k{i:03d}", {"text": f"item {i}", "n": i}) for i in range(N_ITEMS)])
    before = _expiries(dsn, schema_of(store))
    keys = sorted(before)
    rng = random.Random(7)

    async def call(kind: int) -> Any:
        if kind == 0:
            return await store.search(NS, query="a", limit=N_ITEMS)
        if kind == 1:
            return await store.search(NS, query="b", limit=N_ITEMS)
        if kind == 2:
            return await store.search(NS, filter={"n": {"$gte": 0}}, limit=N_ITEMS)
        ops: list[Any] = [GetOp(NS, k) for k in rng.sample(keys, len(keys))]
        if kind == 4:
            ops.append(SearchOp(NS, None, N_ITEMS, 0, rng.choice("ab")))
        return await store.batch(ops)

    kinds = MIXES[mix]
    results = await asyncio.gather(
        *(call(kinds[i % len(kinds)]) for i in range(30)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    deadlocks = [e for e in errors if isinstance(e, psycopg.errors.DeadlockDetected)]
    assert not deadlocks, f"{len(deadlocks)} of {len(results)} reads deadlocked: {deadlocks[0]}"
    assert not errors, errors[0]
    for r in results:
        assert len(r) in (N_ITEMS, N_ITEMS + 1)
        assert all(x is not None for x in r[:N_ITEMS])
    after = _expiries(dsn, schema_of(store))
    assert all(after[k] > before[k] for k in keys)


def _put(key: str, value: dict[str, Any]) -> Any:
    from langgraph.store.base import PutOp

    return PutOp(NS, key, value, ttl=60)


def _expiries(dsn: str, schema: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT key, expires_at FROM {}.store_items").format(sql.Identifier(schema))
        ).fetchall()
    return dict(rows)
