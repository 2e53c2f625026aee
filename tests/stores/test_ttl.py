"""TTL: expired items are never returned, reads refresh the timer, the sweeper deletes in batches.

Expiry is decided by the server clock, so most tests move an item's
``expires_at`` into the past with SQL (deterministic, no sleeping); one test
lets a short TTL run out for real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from langgraph.store.base import GetOp, PutOp, SearchOp

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.stores.conftest import Driver

NS = tuple[str, ...]


def expire(dsn: str, ns: NS, key: str | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.store_items SET expires_at = now() - interval '1 second' "
            "WHERE namespace[1] = %s AND (%s::text IS NULL OR key = %s)",
            (ns[0], key, key),
        )


def expires_at(dsn: str, ns: NS, key: str) -> dt.datetime | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT expires_at FROM haive.store_items WHERE namespace[1] = %s AND key = %s",
            (ns[0], key),
        ).fetchone()
    return None if row is None else row[0]


def rows(dsn: str, ns: NS) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM haive.store_items WHERE namespace[1] = %s", (ns[0],)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_expired_items_are_never_returned(store: Driver, ns: NS, dsn: str) -> None:
    await store.put((*ns, "a"), "gone", {"text": "tea"}, ttl=10)
    await store.put((*ns, "a"), "kept", {"text": "tea too"}, ttl=10)
    await store.put((*ns, "b"), "alone", {"text": "tea"}, ttl=10)
    expire(dsn, ns, "gone")
    expire(dsn, ns, "alone")
    assert await store.get((*ns, "a"), "gone") is None
    assert [i.key for i in await store.search(ns)] == ["kept"]
    assert [i.key for i in await store.search(ns, query="tea")] == ["kept"]
    assert [i.key for i in await store.search(ns, filter={"text": "tea"})] == []
    assert await store.list_namespaces(prefix=ns) == [(*ns, "a")]
    got = await store.batch([GetOp((*ns, "a"), "gone"), GetOp((*ns, "a"), "kept")])
    assert got[0] is None and got[1].key == "kept"
    assert rows(dsn, ns) == 3  # not swept yet, just never returned


async def test_reads_refresh_the_ttl(store: Driver, ns: NS, dsn: str) -> None:
    await store.put(ns, "k", {"text": "tea"}, ttl=60)
    await store.put(ns, "forever", {"text": "tea"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.store_items SET expires_at = now() + interval '1 minute' WHERE namespace[1] = %s",
            (ns[0],),
        )
    before = expires_at(dsn, ns, "k")
    assert before is not None
    await store.get(ns, "k", refresh_ttl=False)
    assert expires_at(dsn, ns, "k") == before
    await store.search(ns, refresh_ttl=False)
    assert expires_at(dsn, ns, "k") == before
    await store.get(ns, "k")  # refresh_on_read is the default
    after_get = expires_at(dsn, ns, "k")
    assert after_get is not None and after_get > before + dt.timedelta(minutes=58)
    for kwargs in ({}, {"query": "tea"}):
        expire_soon(dsn, ns, "k")
        await store.search(ns, **kwargs)
        refreshed = expires_at(dsn, ns, "k")
        assert refreshed is not None and refreshed > before + dt.timedelta(minutes=58), kwargs
    assert expires_at(dsn, ns, "forever") == before  # no TTL, nothing to refresh
    await store.batch([GetOp(ns, "k", refresh_ttl=False), SearchOp(ns, refresh_ttl=False)])


def expire_soon(dsn: str, ns: NS, key: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.store_items SET expires_at = now() + interval '1 minute' "
            "WHERE namespace[1] = %s AND key = %s",
            (ns[0], key),
        )


async def test_put_without_ttl_clears_it(store: Driver, ns: NS, dsn: str) -> None:
    await store.put(ns, "k", {"v": 1}, ttl=5)
    assert expires_at(dsn, ns, "k") is not None
    await store.put(ns, "k", {"v": 2}, ttl=None)
    assert expires_at(dsn, ns, "k") is None


async def test_default_ttl_and_real_expiry(dsn: str, ns: NS) -> None:
    # 0.01 minutes: 0.6 s.
    ttl: Any = {"default_ttl": 0.01, "refresh_on_read": False}
    sync = await asyncio.to_thread(lambda: PostgresStore(dsn, ttl=ttl))
    astore = AsyncPostgresStore(dsn, ttl=ttl)
    try:
        await asyncio.to_thread(sync.put, ns, "s", {"v": 1})
        await astore.aput(ns, "a", {"v": 1})
        await asyncio.to_thread(sync.put, ns, "keep", {"v": 1}, ttl=None)
        assert await astore.aget(ns, "s") is not None
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(sync.get, ns, "s") is None
        assert await astore.aget(ns, "a") is None
        assert [i.key for i in await astore.asearch(ns)] == ["keep"]
    finally:
        await asyncio.to_thread(sync.close)
        await astore.aclose()


async def test_sweep_deletes_expired_items_in_batches(store: Driver, ns: NS, dsn: str) -> None:
    await store.batch([PutOp(ns, f"k{i}", {"text": f"tea {i}"}, ttl=5) for i in range(25)])
    await store.put(ns, "live", {"text": "tea"}, ttl=5)
    expire(dsn, ns)
    await store.put(ns, "live", {"text": "tea"}, ttl=5)
    swept = await store.admin("sweep_ttl", batch_size=10)
    assert swept >= 25  # other tests' expired items may be swept too
    assert rows(dsn, ns) == 1
    assert await store.admin("sweep_ttl") == 0


async def test_sweeper_runs_in_the_background(store: Driver, ns: NS, dsn: str) -> None:
    await store.put(ns, "k", {"v": 1}, ttl=5)
    expire(dsn, ns)
    if store.kind == "async":
        task = await store.store.start_ttl_sweeper(sweep_interval_minutes=0.002)  # type: ignore[attr-defined]
        for _ in range(100):
            if rows(dsn, ns) == 0:
                break
            await asyncio.sleep(0.05)
        assert await store.store.stop_ttl_sweeper()  # type: ignore[attr-defined]
        assert task.done()
    else:
        future = store.store.start_ttl_sweeper(sweep_interval_minutes=0.002)  # type: ignore[attr-defined]
        for _ in range(100):
            if rows(dsn, ns) == 0:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(store.store.stop_ttl_sweeper, 5)  # type: ignore[attr-defined]
        assert not future.cancelled()
    assert rows(dsn, ns) == 0


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "5", True])
async def test_bad_ttl_is_rejected(store: Driver, ns: NS, ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl must be a positive number"):
        await store.batch([PutOp(ns, "k", {"v": 1}, ttl=ttl)])
    assert await store.get(ns, "k") is None


def test_bad_ttl_config_is_rejected(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown ttl keys"):
        PostgresStore(dsn, ttl={"default": 5})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigurationError, match="ttl must be a positive number"):
        PostgresStore(dsn, ttl={"default_ttl": -5})
