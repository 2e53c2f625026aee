"""Per-tenant quotas, enforced by the database for every writer."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import psycopg
import pytest
from langgraph.store.base import PutOp

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import QuotaExceededError, ResourceQuota, TenantUsage
from tests.stores.conftest import Driver

NS = tuple[str, ...]


def noise(chars: int) -> str:
    """Text zstd cannot shrink much (random base64), so stored bytes track its length."""
    return base64.b64encode(os.urandom(chars)).decode()[:chars]


async def test_max_items(store: Driver, ns: NS, tenant: Callable[[], str]) -> None:
    t = tenant()
    s = store.for_tenant(t)
    await s.put(ns, "before", {"v": 1})
    await s.admin("set_quota", ResourceQuota(max_items=3))
    usage: TenantUsage = await s.admin("get_usage")
    assert (usage.items, usage.quota) == (1, ResourceQuota(max_items=3))
    await s.batch([PutOp(ns, "a", {"v": 1}), PutOp(ns, "b", {"v": 1})])
    with pytest.raises(QuotaExceededError) as err:
        await s.batch([PutOp(ns, "c", {"v": 1}), PutOp(ns, "d", {"v": 1})])
    assert (err.value.tenant_id, err.value.resource, err.value.limit, err.value.value) == (
        t,
        "items",
        3,
        5,
    )
    assert "quota of 3" in str(err.value)
    assert await s.get(ns, "c") is None  # nothing of the failed batch was written
    await s.put(ns, "a", {"v": 2})  # overwriting adds no item
    await s.delete(ns, "a")
    await s.put(ns, "c", {"v": 1})
    assert (await s.admin("get_usage")).items == 3
    # Other tenants are not affected.
    other = store.for_tenant(tenant())
    await other.batch([PutOp(ns, f"k{i}", {"v": i}) for i in range(5)])


async def test_max_bytes_and_shrinking(store: Driver, ns: NS, tenant: Callable[[], str]) -> None:
    s = store.for_tenant(tenant())
    await s.admin("set_quota", ResourceQuota(max_bytes=300))
    await s.put(ns, "a", {"text": noise(100)})
    with pytest.raises(QuotaExceededError) as err:
        await s.put(ns, "b", {"text": noise(250)})
    assert err.value.resource == "bytes"
    # Lowering the quota below the usage still lets the tenant shrink and delete.
    await s.admin("set_quota", ResourceQuota(max_bytes=10))
    await s.put(ns, "a", {"text": noise(10)})
    with pytest.raises(QuotaExceededError):
        await s.put(ns, "a", {"text": noise(50)})
    await s.delete(ns, "a")
    assert (await s.admin("get_usage")).bytes == 0


async def test_writes_per_minute(store: Driver, ns: NS, tenant: Callable[[], str]) -> None:
    s = store.for_tenant(tenant())
    await s.admin("set_quota", ResourceQuota(max_writes_per_minute=4))
    await s.batch([PutOp(ns, f"k{i}", {"v": i}) for i in range(3)])
    await s.put(ns, "k0", {"v": 9})  # an overwrite is a write
    with pytest.raises(QuotaExceededError) as err:
        await s.put(ns, "k5", {"v": 5})
    assert (err.value.resource, err.value.value) == ("writes_per_minute", 5)
    await s.get(ns, "k0")  # reads are not writes (even when they refresh a TTL)
    await s.delete(ns, "k1")  # deletes are not counted
    assert (await s.admin("get_usage")).writes_this_minute == 4
    await s.admin("set_quota", None)
    await s.put(ns, "k5", {"v": 5})
    usage = await s.admin("get_usage")
    assert usage.quota is None and usage.items == 3


def test_quotas_hold_for_hand_written_sql(
    sync_store: object, dsn: str, ns: NS, tenant: Callable[[], str]
) -> None:
    t = tenant()
    store = sync_store.for_tenant(t)  # type: ignore[attr-defined]
    store.set_quota(ResourceQuota(max_items=1))
    store.put(ns, "a", {"v": 1})
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.Error) as err:
        conn.execute(
            "INSERT INTO haive.store_items (tenant_id, namespace, key, value) VALUES (%s, %s, 'b', '\\x00')",
            (t, list(ns)),
        )
    assert err.value.sqlstate == "HQ429"


def test_bad_quotas(sync_store: object) -> None:
    with pytest.raises(ConfigurationError, match="max_items"):
        ResourceQuota(max_items=-1)
    with pytest.raises(ConfigurationError, match="max_bytes"):
        ResourceQuota(max_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ResourceQuota"):
        sync_store.set_quota({"max_items": 1})  # type: ignore[attr-defined]
