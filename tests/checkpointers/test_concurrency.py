"""Many threads at once on one checkpointer with a pool."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import psycopg
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
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


def test_a_listing_racing_a_delete_never_sees_half_a_thread(dsn: str) -> None:
    """A history read is two statements; a delete between them must not look like corruption.

    The listing's statements run on a real connection; right after its first
    statement (the checkpoint rows), another connection deletes the thread and
    every list item with it. The listing then reads again and returns what is
    there now: nothing of the deleted thread, and no ``CorruptDataError``.
    """
    from haive_langgraph.checkpointers import _ops as ops
    from haive_langgraph.db._driver import run

    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        psycopg.connect(dsn, autocommit=True) as other,
    ):
        saver = PostgresCheckpointer(conn)
        saver.setup()
        thread_id = f"race-{uuid.uuid4().hex[:8]}"
        graph = chat_graph().compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage(content="hello")]}, _config(thread_id))
        assert len(list(saver.list(_config(thread_id)))) > 1

        def racing() -> Any:
            op = ops.list_op(
                saver._statements, "", thread_id=thread_id, checkpoint_ns=None,
                checkpoint_id=None, filter=None, before_id=None, limit=None,
            )  # fmt: skip
            statements = 0

            def interleaved() -> Any:
                nonlocal statements
                result = None
                try:
                    step = op.send(None)
                    while True:
                        result = run(conn, _one(step))
                        statements += 1
                        if statements == 1:
                            PostgresCheckpointer(other).delete_thread(thread_id)
                        step = op.send(result)
                except StopIteration as stop:
                    return stop.value

            return interleaved(), statements

        (rows, lineages), statements = racing()
        assert statements > 2, "the listing did not read again after the delete"
        assert rows == [] and lineages == {}
        assert list(saver.list(_config(thread_id))) == []


def _one(step: Any) -> Any:
    """An operation of one step (to drive another operation's steps one by one)."""
    return (yield step)


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def test_writes_of_the_same_new_values_in_opposite_orders_do_not_deadlock(dsn: str) -> None:
    # Two tasks of one step write the same new values, in opposite orders, at
    # the same moment: each statement inserts every value's row, so without
    # one insertion order they wait for each other (a deadlock).
    with ConnectionPool(
        dsn, min_size=2, max_size=2, kwargs={"autocommit": True}, open=True
    ) as pool:
        saver = PostgresCheckpointer(pool)
        saver.setup()
        thread_id = f"dl-{uuid.uuid4().hex[:6]}"
        config = saver.put(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}},
            empty_checkpoint(),
            {"source": "input", "step": -1, "parents": {}},
            {},
        )
        errors: list[BaseException] = []
        rounds, width = 20, 100
        barrier = threading.Barrier(2)

        def writer(task: int) -> None:
            for r in range(rounds):
                barrier.wait()
                values = [f"round {r} value {i} {thread_id}" for i in range(width)]
                writes = [(f"c{i}", v) for i, v in enumerate(values)]
                try:
                    saver.put_writes(config, writes if task == 0 else writes[::-1], f"t{r}-{task}")
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=writer, args=(task,)) for task in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        tup = saver.get_tuple(config)
        assert tup is not None and len(tup.pending_writes) == 2 * rounds * width
