"""Many threads at once on one checkpointer with a pool."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from langchain_core.messages import HumanMessage
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer


async def test_fifty_threads_on_one_async_checkpointer_with_a_pool(dsn: str) -> None:
    async with AsyncConnectionPool(
        dsn, min_size=2, max_size=10, kwargs={"autocommit": True}, open=False
    ) as pool:
        saver = AsyncPostgresCheckpointer(pool)
        await saver.setup()
        graph = chat_graph().compile(checkpointer=saver)
        run = uuid.uuid4().hex[:6]

        async def conversation(i: int) -> list[str]:
            config = {"configurable": {"thread_id": f"c50-{run}-{i}"}}
            for turn in range(3):
                await graph.ainvoke(
                    {"messages": [HumanMessage(content=f"thread {i} turn {turn}")]}, config
                )
            state = await graph.aget_state(config)
            return [str(m.content) for m in state.values["messages"]]

        results = await asyncio.gather(*(conversation(i) for i in range(50)))
        for i, contents in enumerate(results):
            assert len(contents) == 6
            assert contents[::2] == [f"thread {i} turn {t}" for t in range(3)]
        for i in range(50):
            info = await saver.aget_thread(f"c50-{run}-{i}")
            assert info is not None and info.checkpoint_count == 9


def test_threads_of_a_process_share_one_sync_checkpointer(dsn: str) -> None:
    with ConnectionPool(
        dsn, min_size=2, max_size=8, kwargs={"autocommit": True}, open=True
    ) as pool:
        saver = PostgresCheckpointer(pool)
        saver.setup()
        graph = chat_graph().compile(checkpointer=saver)
        run = uuid.uuid4().hex[:6]
        errors: list[BaseException] = []
        results: dict[int, Any] = {}

        def conversation(i: int) -> None:
            try:
                config = {"configurable": {"thread_id": f"s16-{run}-{i}"}}
                for turn in range(3):
                    graph.invoke({"messages": [HumanMessage(content=f"{i}/{turn}")]}, config)
                results[i] = graph.get_state(config).values["messages"]
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        workers = [threading.Thread(target=conversation, args=(i,)) for i in range(16)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert errors == []
        assert sorted(results) == list(range(16))
        assert all(len(msgs) == 6 for msgs in results.values())
