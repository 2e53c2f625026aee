"""Read replicas in the db layer: routing, read-your-writes, replicas down or behind.

Every test runs on a real primary and a real streaming replica (see
``conftest.py``); which server served a read is asked of the connection that
served it (``pg_is_in_recovery()``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from haive_langgraph.db import PersistenceConfig, Route
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError
from tests.scaleout.cluster import LocalCluster
from tests.scaleout.conftest import Databases, replica_warnings


class Source:
    """A sync or async ``ConnectionSource``, driven through one async interface."""

    def __init__(self, inner: ConnectionSource | AsyncConnectionSource) -> None:
        self.inner = inner

    async def run(self, op: Any, *, read: bool = False, route: Route = "primary") -> Any:
        if isinstance(self.inner, AsyncConnectionSource):
            return await self.inner.run(op, read=read, route=route)
        sync = self.inner
        return await asyncio.to_thread(lambda: sync.run(op, read=read, route=route))

    @property
    def stats(self) -> dict[str, int]:
        assert self.inner.replicas is not None
        return self.inner.replicas.stats.as_dict()


@asynccontextmanager
async def source(kind: str, dbs: Databases, **settings: Any) -> AsyncIterator[Source]:
    config = PersistenceConfig(**settings)
    if kind == "async":
        inner = AsyncConnectionSource(dbs.primary, config=config, replicas=[dbs.replica])
        await inner.open()
        try:
            yield Source(inner)
        finally:
            await inner.close()
        return
    sync = await asyncio.to_thread(
        lambda: ConnectionSource(dbs.primary, config=config, replicas=[dbs.replica])
    )
    try:
        yield Source(sync)
    finally:
        await asyncio.to_thread(sync.close)


def in_recovery() -> Op[bool]:
    row = yield Step("SELECT pg_is_in_recovery()", fetch="one")
    return bool(row[0])


def make_counter(table: str) -> tuple[Any, Any]:
    """A write adding a row to ``table``, and a read: (served by a replica, rows)."""

    def write() -> Op[None]:
        yield Step(f"INSERT INTO {table} (v) VALUES (1)", fetch="none")  # a test table

    def read() -> Op[tuple[bool, int]]:
        row = yield Step(
            f"SELECT pg_is_in_recovery(), (SELECT count(*) FROM {table})",
            fetch="one",
        )
        return bool(row[0]), int(row[1])

    return write, read


def new_table(cluster: LocalCluster, dbs: Databases) -> str:
    table = f"notes_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbs.primary, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (v int)".encode())
    cluster.wait_replayed()
    return table


# -- configuration ------------------------------------------------------------------------


def test_replica_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HAIVE_REPLICA_URLS",
        "postgresql://r1.example:5432,r1b.example:5432/app, host=r2.example port=5433 dbname=app",
    )
    config = PersistenceConfig()
    assert config.replica_urls == (
        "postgresql://r1.example:5432,r1b.example:5432/app",
        "host=r2.example port=5433 dbname=app",
    )
    monkeypatch.setenv("HAIVE_REPLICA_URLS", '["postgresql://a/x", "postgresql://b/x"]')
    assert PersistenceConfig().replica_urls == ("postgresql://a/x", "postgresql://b/x")
    monkeypatch.setenv("HAIVE_MAX_REPLICA_LAG", "2.5")
    monkeypatch.setenv("HAIVE_REPLICA_WAIT", "0.25")
    config = PersistenceConfig()
    assert (config.max_replica_lag, config.replica_wait) == (2.5, 0.25)


def test_bad_replica_settings_are_refused(dbs: Databases) -> None:
    with pytest.raises(ConfigurationError, match="replica 1 is not a valid PostgreSQL DSN"):
        ConnectionSource(dbs.primary, replicas=["host=replica.example port"])
    with pytest.raises(ConfigurationError, match="not one string"):
        ConnectionSource(dbs.primary, replicas=dbs.replica)
    with pytest.raises(ValueError, match="max_replica_lag"):
        PersistenceConfig(max_replica_lag=0)
    source = ConnectionSource(dbs.primary, replicas=[dbs.replica])
    try:
        with pytest.raises(ConfigurationError, match="needs read=True"):
            source.run(in_recovery, route="replica")
        with pytest.raises(ConfigurationError, match="unknown route 'nearest'"):
            source.run(in_recovery, read=True, route="nearest")  # type: ignore[arg-type]
    finally:
        source.close()


def test_without_replicas_routes_are_the_primary(dbs: Databases) -> None:
    source = ConnectionSource(dbs.primary, config=PersistenceConfig())
    try:
        assert source.replicas is None
        assert source.run(in_recovery, read=True, route="replica") is False
        assert source.run(in_recovery, read=True, route="fresh") is False
    finally:
        source.close()


# -- routing ---------------------------------------------------------------------------------


async def test_reads_are_served_by_the_replica(
    kind: str, dbs: Databases, healthy_replica: LocalCluster
) -> None:
    async with source(kind, dbs) as src:
        assert await src.run(in_recovery, read=True, route="replica") is True
        assert await src.run(in_recovery, read=True, route="fresh") is True
        assert await src.run(in_recovery, read=True) is False  # route="primary"
        assert await src.run(in_recovery) is False  # a write: always the primary
        assert src.stats["replica_reads"] == 2


async def test_fresh_reads_see_own_writes_on_a_delayed_replica(
    kind: str, dbs: Databases, healthy_replica: LocalCluster
) -> None:
    cluster = healthy_replica
    write, read = make_counter(new_table(cluster, dbs))
    cluster.set_apply_delay("1500ms")
    async with source(kind, dbs, replica_wait=0.2) as impatient:
        await impatient.run(write)
        # The replica has not applied the row: a lag-tolerant read misses it ...
        assert await impatient.run(read, read=True, route="replica") == (True, 0)
        # ... a fresh read does not wait past replica_wait, and reads the primary.
        assert await impatient.run(read, read=True, route="fresh") == (False, 1)
        assert impatient.stats["behind"] == 1
        assert impatient.stats["lsn_lookups"] == 1
    async with source(kind, dbs, replica_wait=10.0) as patient:
        await patient.run(write)
        # Waits on the replica until it has applied the write, then reads there.
        assert await patient.run(read, read=True, route="fresh") == (True, 2)
        assert patient.stats["behind"] == 0
        # Nothing written since: the known LSN is reused, the replica is current.
        assert await patient.run(read, read=True, route="fresh") == (True, 2)
        assert patient.stats["lsn_lookups"] == 1


async def test_a_lagging_replica_is_skipped_with_one_warning(
    kind: str, dbs: Databases, healthy_replica: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = healthy_replica
    write, read = make_counter(new_table(cluster, dbs))
    cluster.set_apply_delay("5s")
    async with source(kind, dbs, max_replica_lag=1.0) as src:
        await src.run(write)
        await asyncio.sleep(1.5)  # the delayed commit is now 1.5 s behind
        results = [await src.run(read, read=True, route="replica") for _ in range(5)]
        assert results == [(False, 1)] * 5  # all on the primary, all current
        assert len(replica_warnings(caplog)) == 1
        assert "behind the primary" in replica_warnings(caplog)[0]


async def test_replica_stopped_mid_workload(
    kind: str, dbs: Databases, healthy_replica: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = healthy_replica
    write, read = make_counter(new_table(cluster, dbs))
    stop = threading.Timer(0.4, cluster.replica.stop)
    served: list[bool] = []
    async with source(kind, dbs, replica_retry_after=2.0, replica_wait=1.0) as src:
        stop.start()
        try:
            writes = 0
            start = time.monotonic()
            while time.monotonic() - start < 1.5:  # stops at 0.4 s; under replica_retry_after
                await src.run(write)
                writes += 1
                in_replica, rows = await src.run(read, read=True, route="fresh")
                assert rows == writes  # read-your-writes throughout
                served.append(in_replica)
                in_replica, _ = await src.run(read, read=True, route="replica")
                served.append(in_replica)
        finally:
            stop.join()
        assert True in served and served[-1] is False  # replica first, then the primary
        warnings = replica_warnings(caplog)
        assert len(warnings) == 1 and "unavailable" in warnings[0]
        # Back up: after replica_retry_after it is tried again and used.
        cluster.replica.start()
        cluster.wait_streaming()
        await asyncio.sleep(2.0)
        assert (await src.run(read, read=True, route="replica"))[0] is True
        assert len(replica_warnings(caplog)) == 1
