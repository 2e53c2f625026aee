"""The store on a primary and a streaming replica, sync and async.

Searches and namespace listings read from the replica; gets read from it
only once it has replayed the store's own writes; writes and reads that
refresh a TTL go to the primary. That the replica served a read is shown by
pausing its replay: what it serves is then visibly older than the primary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from haive_langgraph.db import PersistenceConfig
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.scaleout.cluster import LocalCluster
from tests.scaleout.conftest import Databases, call
from tests.scaleout.test_checkpointer_replicas import pause_replay
from tests.stores.conftest import index_config


@asynccontextmanager
async def store(kind: str, dbs: Databases, **options: Any) -> AsyncIterator[Any]:
    config = PersistenceConfig(replica_wait=0.3)
    if kind == "async":
        async with AsyncPostgresStore.from_conn_string(
            dbs.primary, config=config, replicas=[dbs.replica], **options
        ) as async_store:
            await async_store.setup()
            yield async_store
        return
    sync_store = await asyncio.to_thread(
        lambda: PostgresStore(dbs.primary, config=config, replicas=[dbs.replica], **options)
    )
    await asyncio.to_thread(sync_store.setup)
    try:
        yield sync_store
    finally:
        await asyncio.to_thread(sync_store.close)


def method(kind: str, s: Any, name: str) -> Any:
    return getattr(s, f"a{name}" if kind == "async" else name)


async def test_searches_come_from_the_replica_gets_see_own_writes(
    kind: str, dbs: Databases, healthy_replica: LocalCluster
) -> None:
    cluster = healthy_replica
    ns = (f"replica-{kind}",)
    async with store(kind, dbs, index=index_config(), ttl={"refresh_on_read": False}) as s:
        tenant = s.for_tenant("acme")
        put, get = method(kind, tenant, "put"), method(kind, tenant, "get")
        search, listing = method(kind, tenant, "search"), method(kind, tenant, "list_namespaces")
        await call(kind, put, (*ns, "a"), "k1", {"text": "green tea", "n": 1})
        cluster.wait_replayed()
        pause_replay(cluster)
        try:
            await call(kind, put, (*ns, "b"), "k2", {"text": "green tea too", "n": 2})
            # The store's own write: the paused replica cannot serve it, the primary does.
            assert (await call(kind, get, (*ns, "b"), "k2")).value["n"] == 2
            # Searches and listings come from the paused replica, so they lag.
            assert [i.key for i in await call(kind, search, ns)] == ["k1"]
            assert [i.key for i in await call(kind, search, ns, query="green tea")] == ["k1"]
            assert [i.key for i in await call(kind, search, ns, filter={"n": 2})] == []
            assert await call(kind, listing, prefix=ns) == [(*ns, "a")]
            # A read that refreshes TTLs writes: the primary serves it.
            hits = await call(kind, search, ns, refresh_ttl=True)
            assert sorted(i.key for i in hits) == ["k1", "k2"]
            stats = s._source.replicas.stats.as_dict()
            assert stats["replica_reads"] >= 4 and stats["behind"] >= 1
        finally:
            cluster.replica.execute("SELECT pg_wal_replay_resume()")
        cluster.wait_replayed()
        assert await call(kind, listing, prefix=ns) == [(*ns, "a"), (*ns, "b")]
