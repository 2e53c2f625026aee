"""Scenario 3: PgBouncer (transaction mode) restarted under a running read workload.

A saver (sync or async, ``pooler_mode="transaction"``: no prepared
statements, no session state) reaches the private server through a real
PgBouncer (``tests/_pgbouncer.py``). Three readers call every read API in a
loop while PgBouncer is restarted (SIGTERM: every client and server
connection closed at once), several times, then once more while the saver
sits idle. A read that meets a dropped connection is retried once on a fresh
one: every read must succeed, and none may wait past the pool timeout. A
graph write right after must succeed on the same saver.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from psycopg import conninfo

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig
from tests._pgbouncer import PgBouncer

from ._server import PrivateServer
from .conftest import Budget, Figures

POOL = 4
POOL_TIMEOUT = 10.0
READERS = 3


class Client:
    """A saver and its graph, called from async code whichever class it is."""

    def __init__(self, kind: str, dsn: str) -> None:
        self.kind = kind
        config = PersistenceConfig(
            pooler_mode="transaction",
            pool_min_size=POOL,
            pool_max_size=POOL,
            pool_timeout=POOL_TIMEOUT,
            connect_timeout=2,
            application_name=f"pooler-{kind}-{uuid.uuid4().hex[:6]}",
        )
        cls = AsyncPostgresCheckpointer if kind == "async" else PostgresCheckpointer
        self.saver: Any = cls(dsn, config=config)
        self.graph = chat_graph().compile(checkpointer=self.saver)

    async def run(self, fn: Any, *args: Any) -> Any:
        if self.kind == "async":
            return await fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def setup(self) -> None:
        await self.run(self.saver.setup)

    async def write(self, thread: str, text: str) -> None:
        config: Any = {"configurable": {"thread_id": thread}}
        message: Any = {"messages": [HumanMessage(content=text)]}
        if self.kind == "async":
            await self.graph.ainvoke(message, config)
        else:
            await asyncio.to_thread(self.graph.invoke, message, config)

    async def read_all(self, thread: str, turns: int) -> None:
        """Every read API once, checking what comes back."""
        config: Any = {"configurable": {"thread_id": thread}}
        if self.kind == "async":
            state = await self.graph.aget_state(config)
            listed = [t async for t in self.saver.alist(config, limit=3)]
            info = await self.saver.aget_thread(thread)
        else:
            state = await asyncio.to_thread(self.graph.get_state, config)
            listed = await asyncio.to_thread(lambda: list(self.saver.list(config, limit=3)))
            info = await asyncio.to_thread(self.saver.get_thread, thread)
        assert [m.content for m in state.values["messages"]][::2] == [
            f"{thread} q{i}" for i in range(turns)
        ]
        assert len(listed) == 3
        assert info is not None and info.checkpoint_count == 3 * turns

    async def close(self) -> None:
        if self.kind == "async":
            await self.saver.aclose()
        else:
            await asyncio.to_thread(self.saver.close)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_reads_recover_transparently_from_pgbouncer_restarts(
    pgbouncer: PgBouncer,
    private_server: PrivateServer,
    budget: Budget,
    figures: Figures,
    kind: str,
) -> None:
    restarts = budget.pick(3, 25)
    if not private_server.is_running():
        private_server.start()
    dbname = str(conninfo.conninfo_to_dict(private_server.create_database("pooler"))["dbname"])
    client = Client(kind, pgbouncer.dsn(dbname))
    threads = [f"pooler-{kind}-{i}" for i in range(2)]
    turns = 2
    failures: list[BaseException] = []
    latencies: list[float] = []
    stop = asyncio.Event()

    async def reader(n: int) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                await client.read_all(threads[n % len(threads)], turns)
            except Exception as exc:  # every failure is reported below
                failures.append(exc)
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)

    try:
        await client.setup()
        for t in threads:
            for i in range(turns):
                await client.write(t, f"{t} q{i}")
        readers = [asyncio.create_task(reader(n)) for n in range(READERS)]
        try:
            for _ in range(restarts):
                await asyncio.sleep(0.4)
                await asyncio.to_thread(pgbouncer.restart)
            await asyncio.sleep(0.4)
        finally:
            stop.set()
            await asyncio.gather(*readers)
        # Once more while the pool sits idle: the next reads must not notice.
        await asyncio.to_thread(pgbouncer.restart)
        for t in threads:
            await client.read_all(t, turns)
        await client.write("pooler-after", "after the restarts")
    finally:
        await client.close()
    assert not failures, f"{len(failures)} reads failed; first: {failures[0]!r}"
    assert len(latencies) > restarts
    assert max(latencies) < POOL_TIMEOUT + 2.0
    ordered = sorted(latencies)
    figures.record(
        f"3 pooler restart ({kind} saver)",
        f"PgBouncer (transaction mode) restarted {restarts + 1} times, {restarts} of them under "
        f"{READERS} concurrent readers: {len(latencies) * 3} read calls, 0 failed; read round "
        f"median {ordered[len(ordered) // 2] * 1000:.0f} ms, slowest {ordered[-1]:.2f} s "
        "(waiting for the pooler to come back); 1 graph write right after, ok",
    )
