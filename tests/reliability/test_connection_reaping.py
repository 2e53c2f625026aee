"""Scenario 3: pooled connections closed by the server side while idle.

Cloud poolers, load balancers and admins close idle connections
(``pg_terminate_backend`` here, as a server-side reaper does); the saver's
pool still holds them. Every read afterwards must succeed without the caller
noticing, even when every pooled connection is gone, and so must writes: a
connection the server closed while it sat in the pool is replaced before
anything is sent on it.

The pooler restart half of the scenario (PgBouncer restarted under load) is
in ``test_pooler_restart.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig

from ._server import PrivateServer
from .conftest import Budget, Figures

POOL = 4


async def reap_idle(dsn: str, app: str) -> int:
    """Terminate every idle session of ``app``; returns how many."""

    def run() -> int:
        with psycopg.connect(dsn, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND state = 'idle'",
                (app,),
            ).fetchone()
            # Wait until they are gone, so their termination has reached the client.
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone() != (0,):
                time.sleep(0.01)
        assert row is not None
        return int(row[0])

    return await asyncio.to_thread(run)


class Saver:
    """A saver and its graph, called from async code whichever class it is."""

    def __init__(self, kind: str, dsn: str, app: str) -> None:
        self.kind = kind
        config = PersistenceConfig(
            pool_min_size=POOL, pool_max_size=POOL, pool_timeout=10, application_name=app
        )
        cls = AsyncPostgresCheckpointer if kind == "async" else PostgresCheckpointer
        self.saver: Any = cls(dsn, config=config)
        self.graph = chat_graph().compile(checkpointer=self.saver)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``a<method>`` on the async class; ``<method>`` in a worker thread on the sync one."""
        if self.kind == "async":
            result = getattr(self.saver, f"a{method}")(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return [x async for x in result]
            return await result
        fn = getattr(self.saver, method)

        def sync_call() -> Any:
            out = fn(*args, **kwargs)
            return list(out) if method == "list" else out

        return await asyncio.to_thread(sync_call)

    async def graph_call(self, method: str, *args: Any) -> Any:
        if self.kind == "async":
            result = getattr(self.graph, f"a{method}")(*args)
            if hasattr(result, "__aiter__"):
                return [x async for x in result]
            return await result
        fn = getattr(self.graph, method)
        return await asyncio.to_thread(
            lambda: list(fn(*args)) if "history" in method else fn(*args)
        )

    async def setup(self) -> None:
        await self.call("setup") if self.kind == "sync" else await self.saver.setup()

    async def close(self) -> None:
        if self.kind == "async":
            await self.saver.aclose()
        else:
            await asyncio.to_thread(self.saver.close)

    async def warm(self) -> None:
        """Use every pooled connection at once, so that the pool holds ``POOL`` of them."""
        config = {"configurable": {"thread_id": "warm"}}
        await asyncio.gather(*(self.call("get_tuple", config) for _ in range(POOL * 2)))


async def reads(s: Saver, threads: list[str]) -> int:
    """Every read API once per thread, checking what comes back; returns the reads made."""
    n = 0
    for t in threads:
        config = {"configurable": {"thread_id": t}}
        state = await s.graph_call("get_state", config)
        assert [m.content for m in state.values["messages"]][::2] == [f"{t} q{i}" for i in range(3)]
        history = await s.graph_call("get_state_history", config)
        assert len(history) == 9
        listed = await s.call("list", config, limit=3)
        assert len(listed) == 3
        info = await s.call("get_thread", t)
        assert info is not None and info.checkpoint_count == 9
        found = await s.call("find_checkpoints", t, limit=2)
        assert len(found) == 2
        n += 5
    page = await s.call("list_threads", limit=100)
    assert {t for t in threads} <= {i.thread_id for i in page}
    return n + 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_reads_and_writes_survive_idle_connection_reaping(
    dsn: str, budget: Budget, figures: Figures, kind: str
) -> None:
    rounds = budget.pick(3, 30)
    app = f"reap-{kind}-{uuid.uuid4().hex[:6]}"
    s = Saver(kind, dsn, app)
    await s.setup()
    threads = [f"reap-{kind}-{i}" for i in range(2)]
    for t in threads:
        for i in range(3):
            await s.graph_call(
                "invoke",
                {"messages": [HumanMessage(content=f"{t} q{i}")]},
                {"configurable": {"thread_id": t}},
            )
    reaped = made = writes = 0
    try:
        for r in range(rounds):
            await s.warm()
            reaped += await reap_idle(dsn, app)
            made += await reads(s, threads)  # every pooled connection was closed
            await s.warm()
            reaped += await reap_idle(dsn, app)
            extra = f"reap-{kind}-write-{r}"
            await s.graph_call(
                "invoke",
                {"messages": [HumanMessage(content="w")]},
                {"configurable": {"thread_id": extra}},
            )
            writes += 1
    finally:
        await s.close()
    assert reaped >= rounds * 2 * POOL
    figures.record(
        f"3 idle reaping ({kind} saver)",
        f"{rounds} rounds: {reaped} idle pooled connections terminated server-side "
        f"(a pool of {POOL}, all of it each time); {made} reads and {writes} graph writes "
        "right after, 0 failed",
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_idle_saver_works_right_after_a_server_restart(
    private_server: PrivateServer, figures: Figures, kind: str
) -> None:
    dsn = private_server.create_database()
    app = f"idle-restart-{kind}-{uuid.uuid4().hex[:6]}"
    s = Saver(kind, dsn, app)
    await s.setup()
    threads = [f"idle-{kind}-{i}" for i in range(2)]
    for t in threads:
        for i in range(3):
            await s.graph_call(
                "invoke",
                {"messages": [HumanMessage(content=f"{t} q{i}")]},
                {"configurable": {"thread_id": t}},
            )
    try:
        await s.warm()
        await asyncio.to_thread(private_server.restart, "fast")
        made = await reads(s, threads)
        await s.warm()
        await asyncio.to_thread(private_server.restart, "immediate")
        await s.graph_call(
            "invoke",
            {"messages": [HumanMessage(content="after")]},
            {"configurable": {"thread_id": "idle-w"}},
        )
    finally:
        await s.close()
    figures.record(
        f"2/3 restart while idle ({kind} saver)",
        f"pool of {POOL} connections, server restarted (fast, then immediate) while idle: "
        f"{made} reads and 1 graph write right after, 0 failed, same saver",
    )
