"""Fixtures: a primary and a streaming replica for the session, a fresh database per module.

The replica is a real physical standby (``pg_basebackup -R``) of the
primary, both started from the embedded PostgreSQL 18 binaries on loopback
(see ``cluster.py``). Tests that stop the replica, delay or pause its replay
put it back as they found it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.scaleout.cluster import LocalCluster

REPLICA_LOGGER = "haive_langgraph.replicas"


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as running:
        yield running


@dataclass(frozen=True)
class Databases:
    """One database, seen on the primary and on the replica."""

    primary: str
    replica: str


@pytest.fixture(scope="module")
def dbs(cluster: LocalCluster) -> Iterator[Databases]:
    name = f"haive_scaleout_{uuid.uuid4().hex[:12]}"
    primary, replica = cluster.create_database(name)
    try:
        yield Databases(primary, replica)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def healthy_replica(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The cluster, with the replica running, streaming and caught up before and after."""
    _restore(cluster)
    try:
        yield cluster
    finally:
        _restore(cluster)


def _restore(cluster: LocalCluster) -> None:
    if not cluster.replica.is_running():
        cluster.replica.start()
    cluster.replica.execute("SELECT pg_wal_replay_resume()")
    (delay,) = cluster.replica.fetchone("SHOW recovery_min_apply_delay")
    if delay != "0":
        cluster.set_apply_delay("0")
    cluster.wait_streaming()
    cluster.wait_replayed()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def call(kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await ``fn(...)`` on async objects; run it in a worker thread on sync ones."""
    if kind == "async":
        result = fn(*args, **kwargs)
        if hasattr(result, "__aiter__"):
            return [x async for x in result]
        return await result
    return await asyncio.to_thread(lambda: _collect(fn(*args, **kwargs)))


def _collect(result: Any) -> Any:
    return list(result) if hasattr(result, "__next__") else result


def replica_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == REPLICA_LOGGER and r.levelno == logging.WARNING
    ]
