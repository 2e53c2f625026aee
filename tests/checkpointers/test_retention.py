"""Retention: policies, dry runs, what is always kept, busy threads, the sweeper."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.types import Command

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import (
    AsyncRetentionSweeper,
    PostgresCheckpointer,
    RetentionPolicy,
    RetentionSweeper,
)
from haive_langgraph.errors import ConfigurationError

from .conftest import Driver
from .test_graphs import _values, approval_graph, fan_out_graph
from .test_storage import delta_graph, stored


async def converse(cp: Driver, graph: Any, config: Any, turns: int, start: int = 0) -> None:
    for i in range(start, start + turns):
        await cp.invoke(
            graph, {"messages": [HumanMessage(content=f"q{i} " * 80, id=f"q{i}")]}, config
        )


async def snapshot(cp: Driver, graph: Any, config: Any) -> dict[str, Any]:
    """Every checkpoint's values, by id."""
    return {
        s.config["configurable"]["checkpoint_id"]: _values(s.values)
        for s in await cp.history(graph, config)
    }


def test_policies_that_keep_too_little_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="fewer than keep_minimum"):
        RetentionPolicy(max_checkpoints_per_thread=2, keep_minimum=3)
    with pytest.raises(ConfigurationError, match="at least 1"):
        RetentionPolicy(max_checkpoints_per_thread=2, keep_minimum=0)
    with pytest.raises(ConfigurationError, match="needs max_checkpoints_per_thread"):
        RetentionPolicy()
    with pytest.raises(ConfigurationError, match="positive"):
        RetentionPolicy(retention_days=0)


async def test_max_checkpoints_keeps_newest_and_everything_kept_loads(
    cp: Driver, dsn: str, thread: Any
) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 6)
    before = await snapshot(cp, graph, config)
    policy = RetentionPolicy(max_checkpoints_per_thread=5)
    preview = await cp.call("apply_retention", policy, dry_run=True, thread_ids=[tid])
    assert preview.dry_run and preview.checkpoints == len(before) - 5
    assert await snapshot(cp, graph, config) == before  # a dry run changes nothing
    bytes_before = stored(dsn, tid)["blob_bytes"]
    report = await cp.call("apply_retention", policy, thread_ids=[tid])
    assert report.checkpoints == preview.checkpoints and report.threads_trimmed == 1
    assert report.bytes == preview.bytes and report.bytes > 0
    assert stored(dsn, tid)["blob_bytes"] == bytes_before - report.bytes
    after = await snapshot(cp, graph, config)
    newest = sorted(before, reverse=True)[:5]
    assert sorted(after, reverse=True) == newest
    assert all(after[cid] == before[cid] for cid in newest)  # kept checkpoints load unchanged
    await converse(cp, graph, config, 1, start=50)  # and the thread goes on


async def test_tagged_failed_and_delta_needs_are_kept(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 5)
    history = await cp.history(graph, config)
    milestone = history[-4]
    await cp.call("tag", milestone.config, "milestone")
    await cp.call(
        "apply_retention", RetentionPolicy(max_checkpoints_per_thread=2), thread_ids=[tid]
    )
    left = [s.config["configurable"]["checkpoint_id"] for s in await cp.history(graph, config)]
    assert milestone.config["configurable"]["checkpoint_id"] in left and len(left) == 3
    # failed checkpoints (error writes) are kept too
    calls: dict[str, int] = {}
    fail_graph = cp.compile(fan_out_graph(calls, {"b"}))
    fcfg = thread()
    with pytest.raises(RuntimeError):
        await cp.invoke(fail_graph, {"items": ["a", "b"], "results": []}, fcfg)
    failed_at = (await cp.call("get_tuple", fcfg)).config["configurable"]["checkpoint_id"]
    await cp.invoke(fail_graph, None, fcfg)
    await cp.call(
        "apply_retention",
        RetentionPolicy(max_checkpoints_per_thread=1),
        thread_ids=[fcfg["configurable"]["thread_id"]],
    )
    kept = [s.config["configurable"]["checkpoint_id"] for s in await cp.history(fail_graph, fcfg)]
    assert failed_at in kept
    # DeltaChannel: the ancestors the latest state is rebuilt from stay
    dgraph = cp.compile(delta_graph())
    dcfg = thread()
    for i in range(5):
        await cp.invoke(dgraph, {"messages": [HumanMessage(content=f"d{i}", id=f"d{i}")]}, dcfg)
    state = _values((await cp.get_state(dgraph, dcfg)).values)
    await cp.call(
        "apply_retention",
        RetentionPolicy(max_checkpoints_per_thread=1),
        thread_ids=[dcfg["configurable"]["thread_id"]],
    )
    assert _values((await cp.get_state(dgraph, dcfg)).values) == state
    assert len(await cp.history(dgraph, dcfg)) > 1


async def test_pending_interrupt_survives_retention(cp: Driver, thread: Any) -> None:
    graph = cp.compile(approval_graph())
    config = thread()
    await cp.invoke(graph, {"request": "deploy", "decision": ""}, config)
    await cp.call(
        "apply_retention",
        RetentionPolicy(max_checkpoints_per_thread=1, keep_failed=False),
        thread_ids=[config["configurable"]["thread_id"]],
    )
    final = await cp.invoke(graph, Command(resume="ok"), config)
    assert final["decision"] == "deploy: ok"


async def test_thread_ttl_deletes_idle_threads_but_not_their_branches(
    cp: Driver, dsn: str, thread: Any
) -> None:
    graph = cp.compile(chat_graph())
    old, fresh = thread(), thread()
    await converse(cp, graph, old, 2)
    await converse(cp, graph, fresh, 1)
    branch = await cp.call("create_branch", old, "keep-me")
    branch_thread = {"configurable": {"thread_id": branch["configurable"]["thread_id"]}}
    branch_history = [_values(s.values) for s in await cp.history(graph, branch_thread)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.threads SET updated_at = now() - interval '10 days' WHERE thread_id = %s",
            (old["configurable"]["thread_id"],),
        )
    ids = [
        old["configurable"]["thread_id"],
        fresh["configurable"]["thread_id"],
        branch_thread["configurable"]["thread_id"],
    ]
    report = await cp.call(
        "apply_retention", RetentionPolicy(thread_ttl=dt.timedelta(days=7)), thread_ids=ids
    )
    assert report.threads_deleted == 1
    assert await cp.call("get_tuple", old) is None
    assert await cp.call("get_tuple", fresh) is not None
    assert [_values(s.values) for s in await cp.history(graph, branch_thread)] == branch_history


async def test_busy_threads_are_skipped(dsn: str) -> None:
    saver = await asyncio.to_thread(PostgresCheckpointer, dsn)
    try:
        graph = chat_graph().compile(checkpointer=saver)
        tid = f"busy-{uuid.uuid4().hex[:6]}"
        for i in range(3):
            await asyncio.to_thread(
                graph.invoke,
                {"messages": [HumanMessage(content=f"x{i}")]},
                {"configurable": {"thread_id": tid}},
            )
        with psycopg.connect(dsn) as writer:  # a writer holds the family lock
            writer.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))", (0x48560002, f"/{tid}")
            )
            report = await asyncio.to_thread(
                saver.apply_retention,
                RetentionPolicy(max_checkpoints_per_thread=1),
                thread_ids=[tid],
            )
            assert report.skipped == [tid] and report.checkpoints == 0
        report = await asyncio.to_thread(
            saver.apply_retention, RetentionPolicy(max_checkpoints_per_thread=1), thread_ids=[tid]
        )
        assert report.skipped == [] and report.checkpoints == 8
    finally:
        await asyncio.to_thread(saver.close)


async def test_sweepers_apply_the_policy(sync_saver: Any, async_saver: Any) -> None:
    for saver, sweeper_cls in (
        (sync_saver, RetentionSweeper),
        (async_saver, AsyncRetentionSweeper),
    ):
        graph = chat_graph().compile(checkpointer=saver)
        tid = f"sweep-{uuid.uuid4().hex[:6]}"
        for i in range(3):
            config = {"configurable": {"thread_id": tid}}
            if sweeper_cls is RetentionSweeper:
                await asyncio.to_thread(
                    graph.invoke, {"messages": [HumanMessage(content=f"s{i}")]}, config
                )
            else:
                await graph.ainvoke({"messages": [HumanMessage(content=f"s{i}")]}, config)
        sweeper = sweeper_cls(saver, RetentionPolicy(max_checkpoints_per_thread=2), interval=0.05)
        sweeper.start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if sweeper.last_report is not None and sweeper.last_report.checkpoints:
                break
        if sweeper_cls is RetentionSweeper:
            await asyncio.to_thread(sweeper.stop)
        else:
            await sweeper.stop()
        info = await asyncio.to_thread(sync_saver.get_thread, tid)
        assert info.checkpoint_count == 2
