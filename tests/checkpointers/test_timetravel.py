"""Time travel: tags, find, named branches, diff, restore."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, TypedDict

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from haive_langgraph._demo import chat_graph
from haive_langgraph.errors import ConfigurationError, NotFoundError

from .conftest import Driver
from .test_graphs import _values, nested_graph


async def call(cp: Driver, method: str, *args: Any, **kwargs: Any) -> Any:
    """``method`` on the sync class (in a thread) or ``a<method>`` on the async one."""
    return await cp.call(method, *args, **kwargs)


async def converse(cp: Driver, graph: Any, config: Any, turns: int, start: int = 0) -> None:
    for i in range(start, start + turns):
        await cp.invoke(graph, {"messages": [HumanMessage(content=f"q{i}", id=f"q{i}")]}, config)


def turn_end(history: list[Any], messages: int) -> Any:
    """The checkpoint closing the turn that left ``messages`` messages."""
    return next(
        s for s in reversed(history) if len(s.values.get("messages", [])) == messages and not s.next
    )


async def test_tags_and_find_by_tag(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 3)
    history = await cp.history(graph, config)
    first, second = turn_end(history, 2), turn_end(history, 4)
    await call(cp, "tag", first.config, "milestone", "reviewed")
    await call(cp, "tag", second.config, "milestone")
    found = await call(cp, "find_checkpoints", tid, tags=["milestone"])
    assert [f.checkpoint_id for f in found] == [
        second.config["configurable"]["checkpoint_id"],
        first.config["configurable"]["checkpoint_id"],
    ]
    both = await call(cp, "find_checkpoints", tid, tags=["milestone", "reviewed"])
    assert [f.checkpoint_id for f in both] == [first.config["configurable"]["checkpoint_id"]]
    assert both[0].tags == ["milestone", "reviewed"]
    await call(cp, "untag", first.config, "milestone")
    assert [
        f.checkpoint_id for f in await call(cp, "find_checkpoints", tid, tags=["milestone"])
    ] == [second.config["configurable"]["checkpoint_id"]]
    missing = {
        "configurable": {"thread_id": tid, "checkpoint_id": "1ef00000-0000-6000-8000-000000000000"}
    }
    with pytest.raises(NotFoundError, match="1ef00000-0000-6000-8000-000000000000"):
        await call(cp, "tag", missing, "x")
    with pytest.raises(ConfigurationError, match="tags"):
        await call(cp, "tag", first.config, "")


async def test_tags_given_at_write_time(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 1)
    tagged = {**config, "metadata": {"tags": "release, approved"}}
    await cp.invoke(graph, {"messages": [HumanMessage(content="ship it")]}, tagged)
    found = await call(cp, "find_checkpoints", tid, tags=["release"])
    assert len(found) == 3  # every checkpoint of that run
    assert all(f.tags == ["approved", "release"] for f in found)


class Job(TypedDict, total=False):
    status: str
    attempts: int
    report: dict[str, Any]


def job_graph() -> StateGraph[Any]:
    def work(state: Job) -> dict[str, Any]:
        attempts = state.get("attempts", 0) + 1
        status = "completed" if attempts >= 3 else "running"
        return {
            "attempts": attempts,
            "status": status,
            "report": {"attempts": attempts, "ok": status == "completed"},
        }

    builder: StateGraph[Any] = StateGraph(Job)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    return builder


async def test_find_by_state_metadata_and_time(cp: Driver, thread: Any) -> None:
    graph = cp.compile(job_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    start = dt.datetime.now(dt.UTC)
    for _ in range(4):
        await cp.invoke(graph, {"status": "queued"}, config)
    history = await cp.history(graph, config)
    done = await call(cp, "find_checkpoints", tid, state_matching={"status": "completed"})
    expected = [
        s.config["configurable"]["checkpoint_id"]
        for s in history
        if s.values.get("status") == "completed"
    ]
    assert len(expected) == 3 and [s.checkpoint_id for s in done] == expected
    # a non-inline value is matched by its content key, without decoding anything
    report = await call(
        cp, "find_checkpoints", tid, state_matching={"report": {"attempts": 3, "ok": True}}
    )
    assert report
    for summary in report:
        tup = await call(cp, "get_tuple", summary.config)
        assert tup.checkpoint["channel_values"]["report"] == {"attempts": 3, "ok": True}
    inputs = await call(cp, "find_checkpoints", tid, metadata={"source": "input"})
    assert len(inputs) == 4 and all(s.metadata["source"] == "input" for s in inputs)
    newest_first = [s.checkpoint_id for s in inputs]
    assert newest_first == sorted(newest_first, reverse=True)
    assert len(await call(cp, "find_checkpoints", tid, limit=2)) == 2
    every = await call(cp, "find_checkpoints", tid)
    middle = every[len(every) // 2]
    older = await call(cp, "find_checkpoints", tid, before=middle.config)
    assert [s.checkpoint_id for s in older] == [
        s.checkpoint_id for s in every[len(every) // 2 + 1 :]
    ]
    newer = await call(cp, "find_checkpoints", tid, after=middle.config)
    assert [s.checkpoint_id for s in newer] == [s.checkpoint_id for s in every[: len(every) // 2]]
    assert len(await call(cp, "find_checkpoints", tid, after=start)) == len(every)
    assert await call(cp, "find_checkpoints", tid, before=start) == []
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        await call(cp, "find_checkpoints", tid, before=dt.datetime.now())
    with pytest.raises(ConfigurationError, match="single values"):
        await call(cp, "find_checkpoints", tid, state_matching={"status": ["a"]})


async def test_named_branch_shares_history_and_continues(cp: Driver, dsn: str, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 4)
    history = await cp.history(graph, config)
    point = turn_end(history, 4)
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT count(*) FROM haive.blobs").fetchone()[0]
    branch = await call(cp, "create_branch", point.config, "alternative", metadata={"why": "test"})
    assert "checkpoint_id" not in branch["configurable"]  # the branch's thread: its head
    head = await call(cp, "get_tuple", branch)
    assert (
        head.config["configurable"]["checkpoint_id"]
        == point.config["configurable"]["checkpoint_id"]
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM haive.blobs").fetchone()[0] == before
        rows = conn.execute(
            "SELECT count(*) FROM haive.checkpoints WHERE thread_id = %s",
            (branch["configurable"]["thread_id"],),
        ).fetchone()[0]
    assert rows == 1  # only the branch point is copied; older history is shared
    branch_thread = {"configurable": {"thread_id": branch["configurable"]["thread_id"]}}
    state = await cp.get_state(graph, branch_thread)
    assert _values(state.values) == _values(point.values)
    # the branch's history is the source's up to the branch point
    inherited = await cp.history(graph, branch_thread)
    assert [s.values for s in inherited] == [
        s.values
        for s in history
        if s.config["configurable"]["checkpoint_id"]
        <= point.config["configurable"]["checkpoint_id"]
    ]
    assert all(
        s.config["configurable"]["thread_id"] == branch_thread["configurable"]["thread_id"]
        for s in inherited
    )
    # it continues differently, the source is untouched
    await cp.invoke(
        graph, {"messages": [HumanMessage(content="other way", id="alt")]}, branch_thread
    )
    state = await cp.get_state(graph, branch_thread)
    assert [m.id for m in state.values["messages"]][-2] == "alt"
    assert len(state.values["messages"]) == 6
    assert len((await cp.get_state(graph, config)).values["messages"]) == 8
    # inherited checkpoints can be read and tagged through the branch
    old = inherited[-3]
    assert (await call(cp, "get_tuple", old.config)) is not None
    await call(cp, "tag", old.config, "seen-from-branch")
    assert len(await call(cp, "find_checkpoints", tid, tags=["seen-from-branch"])) == 1
    branches = await call(cp, "list_branches", tid)
    assert [(b.name, b.thread_id, b.metadata.get("why")) for b in branches] == [
        ("alternative", branch_thread["configurable"]["thread_id"], "test")
    ]
    assert (
        branches[0].branch_point["configurable"]["checkpoint_id"]
        == point.config["configurable"]["checkpoint_id"]
    )
    with pytest.raises(ValueError, match="already used"):
        await call(cp, "create_branch", point.config, "alternative")
    missing = {
        "configurable": {"thread_id": tid, "checkpoint_id": "1ef00000-0000-6000-8000-000000000000"}
    }
    with pytest.raises(NotFoundError):
        await call(cp, "create_branch", missing, "nope")


async def test_branch_survives_deleting_and_pruning_its_source(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 3)
    history = await cp.history(graph, config)
    b1 = await call(cp, "create_branch", turn_end(history, 4).config, "b1")
    b1_thread = {"configurable": {"thread_id": b1["configurable"]["thread_id"]}}
    await converse(cp, graph, b1_thread, 1, start=10)
    b2 = await call(cp, "create_branch", b1_thread, "b2")  # a branch of a branch, at its head
    b2_thread = {"configurable": {"thread_id": b2["configurable"]["thread_id"]}}
    b1_history = [_values(s.values) for s in await cp.history(graph, b1_thread)]
    b2_history = [_values(s.values) for s in await cp.history(graph, b2_thread)]
    await call(cp, "prune", [tid], strategy="keep_latest")
    assert [_values(s.values) for s in await cp.history(graph, b1_thread)] == b1_history
    await call(cp, "delete_thread", tid)
    assert await call(cp, "get_tuple", config) is None
    assert [_values(s.values) for s in await cp.history(graph, b1_thread)] == b1_history
    assert [_values(s.values) for s in await cp.history(graph, b2_thread)] == b2_history
    await call(cp, "delete_thread", b1_thread["configurable"]["thread_id"])
    assert [_values(s.values) for s in await cp.history(graph, b2_thread)] == b2_history
    await converse(cp, graph, b2_thread, 1, start=20)
    assert len((await cp.get_state(graph, b2_thread)).values["messages"]) == 8


async def test_branch_at_a_pending_subgraph_interrupt(cp: Driver, thread: Any) -> None:
    graph = cp.compile(nested_graph())
    config = thread()
    await cp.invoke(graph, {"topic": "waves", "answer": ""}, config)
    branch = await call(cp, "create_branch", config, "retry")
    branch_thread = {"configurable": {"thread_id": branch["configurable"]["thread_id"]}}
    result = await cp.invoke(graph, Command(resume="wind"), branch_thread)
    assert result == {"topic": "waves", "answer": "WAVES WITH WIND"}
    original = await cp.invoke(graph, Command(resume="the moon"), config)
    assert original["answer"] == "WAVES WITH THE MOON"


async def test_diff_reports_channels_and_messages_by_id(cp: Driver, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    a_cfg, b_cfg = thread(), thread()
    await converse(cp, graph, a_cfg, 2)
    history = await cp.history(graph, a_cfg)
    first, last = turn_end(history, 2), history[0]
    result = await call(cp, "diff", first.config, last.config)
    assert result.same_thread
    change = {c.channel: c for c in result.changes}["messages"]
    assert change.kind == "changed"
    assert [m.id for m in change.messages.added] == ["q1", last.values["messages"][-1].id]
    assert change.messages.removed == [] and change.messages.edited == []
    text = str(result)
    assert "messages: 2 added, 0 removed, 0 edited" in text
    # an edited message, across threads
    await cp.invoke(graph, {"messages": [HumanMessage(content="q0 (edited)", id="q0")]}, b_cfg)
    other = await call(cp, "diff", first.config, (await cp.history(graph, b_cfg))[0].config)
    assert not other.same_thread and "different threads" in str(other)
    edited = {c.channel: c for c in other.changes}["messages"].messages.edited
    assert [(x.content, y.content) for x, y in edited] == [("q0", "q0 (edited)")]
    assert (await call(cp, "diff", last.config, last.config)).is_empty


async def test_restore_makes_a_past_checkpoint_the_head(cp: Driver, dsn: str, thread: Any) -> None:
    graph = cp.compile(chat_graph())
    config = thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, 3)
    history = await cp.history(graph, config)
    target = turn_end(history, 2)
    with psycopg.connect(dsn) as conn:
        blobs = conn.execute(
            "SELECT count(*) FROM haive.blobs WHERE family_id = %s", (tid,)
        ).fetchone()[0]
    head = await call(cp, "restore", target.config)
    state = await cp.get_state(graph, config)
    assert state.config["configurable"]["checkpoint_id"] == head["configurable"]["checkpoint_id"]
    assert _values(state.values) == _values(target.values)
    assert state.metadata["restored_from"] == target.config["configurable"]["checkpoint_id"]
    after = await cp.history(graph, config)
    assert len(after) == len(history) + 1  # history before it is kept
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM haive.blobs WHERE family_id = %s", (tid,)
            ).fetchone()[0]
            == blobs
        )
    await converse(cp, graph, config, 1, start=7)
    assert [m.id for m in (await cp.get_state(graph, config)).values["messages"]][:3] == [
        "q0",
        target.values["messages"][1].id,
        "q7",
    ]


async def test_restore_a_pending_interrupt_resumes(cp: Driver, thread: Any) -> None:
    from .test_graphs import approval_graph

    graph = cp.compile(approval_graph())
    config = thread()
    await cp.invoke(graph, {"request": "refund", "decision": ""}, config)
    paused = await cp.get_state(graph, config)
    await cp.invoke(graph, Command(resume="no"), config)
    assert (await cp.get_state(graph, config)).values["decision"] == "refund: no"
    await call(cp, "restore", paused.config)
    again = await cp.get_state(graph, config)
    assert again.next == ("ask",) and again.values == {"request": "refund", "decision": ""}
    # the interrupted task runs again and asks again
    asked = await cp.invoke(graph, None, config)
    assert asked["__interrupt__"][0].value == {"question": "approve refund?"}
    final = await cp.invoke(graph, Command(resume="yes"), config)
    assert final["decision"] == "refund: yes"


async def test_time_travel_needs_a_checkpoint_config(cp: Driver) -> None:
    with pytest.raises(ConfigurationError, match="needs a config naming a checkpoint"):
        await call(cp, "restore", {"configurable": {"thread_id": "x"}})
    with pytest.raises(ConfigurationError, match="non-empty name"):
        await call(cp, "create_branch", {"configurable": {"thread_id": "x"}}, "")
    with pytest.raises(NotFoundError, match="no checkpoint to branch from"):
        await call(
            cp, "create_branch", {"configurable": {"thread_id": f"none-{uuid.uuid4()}"}}, "b"
        )
