"""Storage: linear growth, sharing between copies, reference-aware deletion, DeltaChannel."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import _messages_delta_reducer
from langgraph.types import Command

from haive_langgraph._demo import DemoChatModel, chat_graph

from .conftest import Driver
from .test_graphs import _values, approval_graph, shape


def stored(dsn: str, family: str) -> dict[str, int]:
    """Rows and payload bytes a thread family holds."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            SELECT
                (SELECT count(*) FROM haive.blobs WHERE family_id = %(f)s),
                (SELECT coalesce(sum(octet_length(data)), 0) FROM haive.blobs WHERE family_id = %(f)s),
                (SELECT count(*) FROM haive.lineage_items WHERE family_id = %(f)s),
                (SELECT count(*) FROM haive.lineages WHERE family_id = %(f)s),
                (SELECT count(*) FROM haive.checkpoints WHERE family_id = %(f)s),
                (SELECT count(*) FROM haive.writes WHERE family_id = %(f)s)
            """,
            {"f": family},
        ).fetchone()
    assert row is not None
    keys = ("blobs", "blob_bytes", "items", "lineages", "checkpoints", "writes")
    return dict(zip(keys, map(int, row), strict=True))


def long_chat() -> Any:
    return chat_graph(DemoChatModel(words=150))


async def run_turns(driver: Driver, graph: Any, config: Any, start: int, stop: int) -> None:
    for i in range(start, stop):
        msg = HumanMessage(content=f"question {i} " + "lorem ipsum " * 60, id=f"h{i}")
        await driver.invoke(graph, {"messages": [msg]}, config)


async def test_storage_grows_linearly_with_the_conversation(
    cp: Driver, dsn: str, thread: Any
) -> None:
    graph = cp.compile(long_chat())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await run_turns(cp, graph, config, 0, 20)
    at_20 = stored(dsn, tid)
    await run_turns(cp, graph, config, 20, 40)
    at_40 = stored(dsn, tid)
    # Each message is stored once: items grow by 2 per turn, not by the list length.
    assert at_20["items"] == 40 and at_40["items"] == 80
    assert at_40["lineages"] == 1
    # Twice the conversation, about twice the bytes (quadratic growth would be 4x).
    assert 1.8 < at_40["blob_bytes"] / at_20["blob_bytes"] < 2.2
    # One more turn writes only what is new: two messages and small bookkeeping values.
    await run_turns(cp, graph, config, 40, 41)
    after = stored(dsn, tid)
    assert after["items"] - at_40["items"] == 2
    new_bytes = after["blob_bytes"] - at_40["blob_bytes"]
    message_bytes = at_40["blob_bytes"] / 80
    assert new_bytes < 4 * message_bytes


async def test_copy_thread_shares_values_and_survives_source_deletion(
    cp: Driver, dsn: str, thread: Any
) -> None:
    graph = cp.compile(long_chat())
    config = thread()
    src = config["configurable"]["thread_id"]
    await run_turns(cp, graph, config, 0, 5)
    before = stored(dsn, src)
    dst = f"copy-{uuid.uuid4().hex[:8]}"
    dst_config = {"configurable": {"thread_id": dst}}
    await cp.call("copy_thread", src, dst)
    after = stored(dsn, src)
    assert after["blobs"] == before["blobs"] and after["items"] == before["items"]
    assert after["checkpoints"] == 2 * before["checkpoints"]
    src_history = shape(await cp.history(graph, config))
    assert shape(await cp.history(graph, dst_config)) == src_history
    await cp.call("delete_thread", src)
    assert await cp.call("get_tuple", config) is None
    # the copy is intact and can continue
    assert shape(await cp.history(graph, dst_config)) == src_history
    await run_turns(cp, graph, dst_config, 5, 6)
    state = await cp.get_state(graph, dst_config)
    assert len(state.values["messages"]) == 12
    await cp.call("delete_thread", dst)
    assert stored(dsn, src) == dict.fromkeys(before, 0)


async def test_copy_into_a_thread_with_checkpoints_is_refused(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    a, b = thread(), thread()
    await cp.invoke(graph, {"messages": [HumanMessage(content="a")]}, a)
    await cp.invoke(graph, {"messages": [HumanMessage(content="b")]}, b)
    with pytest.raises(ValueError, match="already has checkpoints"):
        await cp.call("copy_thread", a["configurable"]["thread_id"], b["configurable"]["thread_id"])


async def test_prune_keep_latest_keeps_state_and_collects_garbage(
    cp: Driver, dsn: str, thread: Any
) -> None:
    graph = cp.compile(long_chat())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await run_turns(cp, graph, config, 0, 6)
    latest = await cp.get_state(graph, config)
    # a fork leaves a second lineage and messages only the fork uses
    history = await cp.history(graph, config)
    branch_point = next(
        s for s in reversed(history) if len(s.values["messages"]) == 4 and not s.next
    )
    await cp.invoke(graph, {"messages": [HumanMessage(content="fork " * 200)]}, branch_point.config)
    latest = await cp.get_state(graph, config)
    before = stored(dsn, tid)
    assert before["lineages"] == 2
    await cp.call("prune", [tid], strategy="keep_latest")
    after = stored(dsn, tid)
    assert after["checkpoints"] == 1 and after["lineages"] == 1
    assert after["items"] == len(latest.values["messages"])
    assert after["blob_bytes"] < before["blob_bytes"]
    pruned = await cp.get_state(graph, config)
    assert _values(pruned.values) == _values(latest.values)
    assert pruned.parent_config is None
    # the thread goes on from its latest state
    await run_turns(cp, graph, config, 6, 7)
    assert (
        len((await cp.get_state(graph, config)).values["messages"])
        == len(latest.values["messages"]) + 2
    )
    info = await (cp.saver.aget_thread(tid) if cp.is_async else cp.call("get_thread", tid))
    assert info.checkpoint_count == 4


async def test_prune_keeps_a_pending_interrupt(cp: Driver, thread: Any) -> None:
    graph = cp.compile(approval_graph())
    config = thread()
    await cp.invoke(graph, {"request": "deploy", "decision": ""}, config)
    await cp.call("prune", [config["configurable"]["thread_id"]], strategy="keep_latest")
    paused = await cp.get_state(graph, config)
    assert paused.next == ("ask",) and paused.interrupts
    final = await cp.invoke(graph, Command(resume="approved"), config)
    assert final["decision"] == "deploy: approved"


async def test_delete_for_runs_keeps_other_runs(cp: Driver, dsn: str, thread: Any) -> None:
    graph = cp.compile(long_chat())
    config = thread()
    tid = config["configurable"]["thread_id"]
    run_ids = []
    for i in range(3):
        run_id = str(uuid.uuid4())
        run_ids.append(run_id)
        # LangGraph records config["metadata"]["run_id"] in checkpoint metadata
        # (LangGraph Platform sets it for every run).
        await cp.invoke(
            graph,
            {"messages": [HumanMessage(content=f"q{i}")]},
            {**config, "metadata": {"run_id": run_id}},
        )
    history = await cp.history(graph, config)
    assert {s.metadata["run_id"] for s in history} == set(run_ids)
    await cp.call("delete_for_runs", [run_ids[2]])
    left = await cp.history(graph, config)
    assert {s.metadata["run_id"] for s in left} == set(run_ids[:2])
    state = await cp.get_state(graph, config)
    assert len(state.values["messages"]) == 4
    assert stored(dsn, tid)["items"] == 4  # the deleted run's two messages are gone


class DeltaState(TypedDict):
    messages: Annotated[
        list[AnyMessage], DeltaChannel(_messages_delta_reducer, snapshot_frequency=3)
    ]


def delta_graph() -> StateGraph[Any]:
    model = DemoChatModel()

    def assistant(state: DeltaState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder: StateGraph[Any] = StateGraph(DeltaState)
    builder.add_node("assistant", assistant)
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    return builder


async def test_delta_channel_threads(cp: Driver, memory: Driver, thread: Any) -> None:
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(delta_graph())
        config = thread()
        for i in range(7):
            await driver.invoke(
                graph, {"messages": [HumanMessage(content=f"q{i}", id=f"q{i}")]}, config
            )
        state = await driver.get_state(graph, config)
        history = await driver.history(graph, config)
        delta = await driver.call(
            "get_delta_channel_history", config=state.config, channels=["messages"]
        )
        entry = delta["messages"]
        outcomes.append(
            (
                _values(state.values),
                shape(history),
                [_values(w[2]) for w in entry["writes"]],
                _values(entry.get("seed")),
            )
        )
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]["messages"]) == 14


async def test_delta_channel_thread_survives_prune_and_copy(cp: Driver, thread: Any) -> None:
    graph = cp.compile(delta_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    for i in range(5):
        await cp.invoke(graph, {"messages": [HumanMessage(content=f"q{i}", id=f"q{i}")]}, config)
    before = _values((await cp.get_state(graph, config)).values)
    copy = {"configurable": {"thread_id": f"{tid}-copy"}}
    await cp.call("copy_thread", tid, copy["configurable"]["thread_id"])
    await cp.call("prune", [tid], strategy="keep_latest")
    assert _values((await cp.get_state(graph, config)).values) == before
    assert _values((await cp.get_state(graph, copy)).values) == before
    # both go on independently
    await cp.invoke(graph, {"messages": [HumanMessage(content="next", id="n")]}, config)
    assert len((await cp.get_state(graph, config)).values["messages"]) == 12
    assert len((await cp.get_state(graph, copy)).values["messages"]) == 10


async def test_thread_registry(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    user = f"user-{uuid.uuid4().hex[:6]}"
    configs = [thread() for _ in range(3)]
    for i, config in enumerate(configs):
        config["metadata"] = {"user_id": user, "rank": i, "tags": f"turn-{i}"}
        for _ in range(i + 1):
            await cp.invoke(graph, {"messages": [HumanMessage(content="hi")]}, config)
    get_thread = cp.saver.aget_thread if cp.is_async else lambda t: cp.call("get_thread", t)
    list_threads = (
        cp.saver.alist_threads if cp.is_async else lambda *a, **k: cp.call("list_threads", *a, **k)
    )
    info = await get_thread(configs[2]["configurable"]["thread_id"])
    assert info.checkpoint_count == 9
    assert info.metadata == {"user_id": user, "rank": 2}  # tags belong to checkpoints
    assert info.created_at <= info.updated_at
    assert await get_thread("no-such-thread") is None
    page1 = await list_threads({"user_id": user}, limit=2)
    assert [t.thread_id for t in page1] == [
        configs[2]["configurable"]["thread_id"],
        configs[1]["configurable"]["thread_id"],
    ]
    assert page1.next_cursor is not None
    page2 = await list_threads({"user_id": user}, limit=2, cursor=page1.next_cursor)
    assert [t.thread_id for t in page2] == [configs[0]["configurable"]["thread_id"]]
    assert page2.next_cursor is None
    assert len(await list_threads({"user_id": "nobody"})) == 0
