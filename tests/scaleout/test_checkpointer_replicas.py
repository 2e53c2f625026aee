"""The checkpointer on a primary and a streaming replica, sync and async.

History, search and thread listing read from the replica; ``get_tuple``
(``graph.get_state``, and the read at the start of every invoke) reads from
it only once it has replayed the saver's own writes. That the replica served
a read is shown by pausing its replay: what it serves is then visibly older
than the primary.
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
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig
from tests.scaleout.cluster import LocalCluster, dbname
from tests.scaleout.conftest import Databases, call, replica_warnings


@asynccontextmanager
async def saver(kind: str, dbs: Databases, **settings: Any) -> AsyncIterator[Any]:
    config = PersistenceConfig(**settings)
    if kind == "async":
        async with AsyncPostgresCheckpointer.from_conn_string(
            dbs.primary, config=config, replicas=[dbs.replica]
        ) as async_saver:
            await async_saver.setup()
            yield async_saver
        return
    sync_saver = await asyncio.to_thread(
        lambda: PostgresCheckpointer(dbs.primary, config=config, replicas=[dbs.replica])
    )
    await asyncio.to_thread(sync_saver.setup)
    try:
        yield sync_saver
    finally:
        await asyncio.to_thread(sync_saver.close)


class Chat:
    """A chat graph on a saver, called the way an application of ``kind`` would."""

    def __init__(self, kind: str, cp: Any) -> None:
        self.kind = kind
        self.cp = cp
        self.graph = chat_graph().compile(checkpointer=cp)
        self.config: Any = {"configurable": {"thread_id": f"chat-{uuid.uuid4().hex[:10]}"}}

    @property
    def thread_id(self) -> str:
        return str(self.config["configurable"]["thread_id"])

    async def say(self, text: str) -> None:
        inputs = {"messages": [HumanMessage(content=text)]}
        if self.kind == "async":
            await self.graph.ainvoke(inputs, self.config)
        else:
            await asyncio.to_thread(self.graph.invoke, inputs, self.config)

    async def messages(self) -> int:
        if self.kind == "async":
            state = await self.graph.aget_state(self.config)
        else:
            state = await asyncio.to_thread(self.graph.get_state, self.config)
        return len(state.values["messages"])

    async def history(self) -> int:
        if self.kind == "async":
            return len([s async for s in self.graph.aget_state_history(self.config)])
        return len(await asyncio.to_thread(lambda: list(self.graph.get_state_history(self.config))))

    def method(self, name: str) -> Any:
        return getattr(self.cp, f"a{name}" if self.kind == "async" else name)

    def stats(self) -> dict[str, int]:
        return self.cp._source.replicas.stats.as_dict()  # type: ignore[no-any-return]


def pause_replay(cluster: LocalCluster) -> None:
    cluster.replica.execute("SELECT pg_wal_replay_pause()")
    deadline = time.monotonic() + 10
    while cluster.replica.fetchone("SELECT pg_get_wal_replay_pause_state()")[0] != "paused":
        assert time.monotonic() < deadline, "the replica did not pause its replay"
        time.sleep(0.02)


async def test_history_search_and_threads_come_from_the_replica(
    kind: str, dbs: Databases, healthy_replica: LocalCluster
) -> None:
    cluster = healthy_replica
    async with saver(kind, dbs, replica_wait=0.3) as cp:
        chat = Chat(kind, cp)
        await chat.say("hello")
        await chat.say("how are you")
        cluster.wait_replayed()
        before = await chat.history()
        assert before == 6  # input + loop checkpoints of two turns
        pause_replay(cluster)
        await chat.say("still there?")  # written to the primary while the replica stands still
        # get_state must see the saver's own write: the replica cannot, the primary serves it.
        assert await chat.messages() == 6
        # Lag-tolerant reads come from the paused replica, so they lag.
        assert await chat.history() == before
        page = await call(kind, chat.method("list_threads"), {})
        (info,) = [t for t in page if t.thread_id == chat.thread_id]
        assert info.checkpoint_count == before
        found = await call(kind, chat.method("find_checkpoints"), chat.thread_id)
        assert len(found) == before
        assert (await call(kind, chat.method("get_thread"), chat.thread_id)).checkpoint_count == 9
        stats = chat.stats()
        assert stats["behind"] >= 1 and stats["replica_reads"] >= 4
        cluster.replica.execute("SELECT pg_wal_replay_resume()")
        cluster.wait_replayed()
        assert await chat.history() == 9


async def test_get_state_after_invoke_on_a_delayed_replica(
    kind: str, dbs: Databases, healthy_replica: LocalCluster
) -> None:
    cluster = healthy_replica
    cluster.set_apply_delay("800ms")
    async with saver(kind, dbs, replica_wait=5.0) as patient:
        chat = Chat(kind, patient)
        await chat.say("hello")
        # Served by the replica once it applied the turn: never stale, never the primary.
        replica_reads = chat.stats()["replica_reads"]
        assert await chat.messages() == 2
        assert chat.stats()["replica_reads"] == replica_reads + 1
        assert chat.stats()["behind"] == 0
    async with saver(kind, dbs, replica_wait=0.05) as impatient:
        chat = Chat(kind, impatient)
        await chat.say("hello")
        await chat.say("again")
        assert await chat.messages() == 4  # from the primary: the replica is 800 ms behind
        assert chat.stats()["behind"] >= 1


async def test_the_replica_stops_mid_conversation(
    kind: str,
    dbs: Databases,
    healthy_replica: LocalCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = healthy_replica
    async with saver(kind, dbs, replica_retry_after=30.0, replica_wait=1.0) as cp:
        chat = Chat(kind, cp)
        stop = threading.Timer(0.5, cluster.replica.stop)
        stop.start()
        try:
            turns = 0
            start = time.monotonic()
            while time.monotonic() - start < 2.0:
                await chat.say(f"turn {turns}")
                turns += 1
                assert await chat.messages() == 2 * turns
                assert 0 < await chat.history() <= 3 * turns  # may lag: from the replica
        finally:
            stop.join()
        assert not cluster.replica.is_running()
        assert await chat.history() == 3 * turns  # from the primary, complete
        warnings = replica_warnings(caplog)
        assert len(warnings) == 1 and "unavailable" in warnings[0]


def primary_statements(cluster: LocalCluster, dbs: Databases) -> dict[str, int]:
    """Statements run on the primary in the test database since the last reset, by kind."""
    with psycopg.connect(cluster.primary.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT s.query, s.calls FROM pg_stat_statements AS s
            JOIN pg_database AS d ON d.oid = s.dbid
            WHERE d.datname = %s AND s.query NOT LIKE '%%pg_stat_statements%%'
            """,
            (dbname(dbs.primary),),
        ).fetchall()
    counts: dict[str, int] = {}
    for query, calls in rows:
        text = " ".join(str(query).split())
        if "row_security_active" in text:
            continue  # asked once per connection, whether the tenant must be bound (see db)
        kind = (
            "lsn"
            if "pg_current_wal" in text
            else "put"
            if "INSERT INTO" in text and ".checkpoints" in text
            else "read"
            if text.startswith(("WITH RECURSIVE", "SELECT"))
            else "other"
        )
        counts[kind] = counts.get(kind, 0) + int(calls)
    return counts


def reset_statements(cluster: LocalCluster) -> None:
    with psycopg.connect(cluster.primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


async def test_writes_cost_no_extra_statement(
    kind: str, dbs: Databases, healthy_replica: LocalCluster
) -> None:
    cluster = healthy_replica
    for replicas in ([], [dbs.replica]):
        config = PersistenceConfig()
        if kind == "async":
            cp: Any = AsyncPostgresCheckpointer(dbs.primary, config=config, replicas=replicas)
            await cp._source.open()
        else:
            cp = PostgresCheckpointer(dbs.primary, config=config, replicas=replicas)
        try:
            await call(kind, cp.setup)
            thread: Any = {
                "configurable": {"thread_id": f"puts-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}
            }
            reset_statements(cluster)
            config_ = thread
            for step in range(5):
                checkpoint = empty_checkpoint()
                put = cp.aput if kind == "async" else cp.put
                metadata: Any = {"source": "loop", "step": step, "parents": {}}
                config_ = await call(kind, put, config_, checkpoint, metadata, {})
            # One statement per checkpoint, with or without replicas: writes do not
            # record their commit LSN.
            assert primary_statements(cluster, dbs) == {"put": 5}
            get = cp.aget_tuple if kind == "async" else cp.get_tuple
            assert (await call(kind, get, thread)) is not None
            expected = {"put": 5, "lsn": 1} if replicas else {"put": 5, "read": 1}
            # With a replica, the fresh read costs the primary one LSN lookup, and
            # runs on the replica.
            assert primary_statements(cluster, dbs) == expected
        finally:
            if kind == "async":
                await cp.aclose()
            else:
                cp.close()
