"""Real LangGraph graphs on our checkpointers, compared with InMemorySaver."""

from __future__ import annotations

import datetime as dt
import enum
import operator
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt
from pydantic import BaseModel

from haive_langgraph._demo import chat_graph

from .conftest import Driver


def shape(history: list[Any]) -> list[tuple[Any, ...]]:
    """What two savers' histories must agree on (ids and timestamps differ)."""
    return [
        (
            s.metadata.get("source"),
            s.metadata.get("step"),
            tuple(s.next),
            _values(s.values),
        )
        for s in history
    ]


def _values(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: _values(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_values(v) for v in values]
    if hasattr(values, "content") and hasattr(values, "type"):
        return (values.type, values.content, getattr(values, "id", None))
    return values


async def test_chat_matches_in_memory_saver(cp: Driver, memory: Driver, thread: Any) -> None:
    results = []
    for driver in (cp, memory):
        graph = driver.compile(chat_graph())
        config = thread()
        for i in range(5):
            msg = HumanMessage(content=f"question {i}", id=f"h{i}")
            await driver.invoke(graph, {"messages": [msg]}, config)
        state = await driver.get_state(graph, config)
        history = await driver.history(graph, config)
        results.append((_values(state.values), shape(history)))
    assert results[0] == results[1]
    assert len(results[0][0]["messages"]) == 10
    assert len(results[0][1]) == 15  # input, after __start__, after the model: 3 per turn


class Approval(TypedDict):
    request: str
    decision: str


def approval_graph() -> StateGraph[Any]:
    def ask(state: Approval) -> dict[str, Any]:
        answer = interrupt({"question": f"approve {state['request']}?"})
        return {"decision": f"{state['request']}: {answer}"}

    builder: StateGraph[Any] = StateGraph(Approval)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder


async def test_interrupt_then_resume(cp: Driver, memory: Driver, thread: Any) -> None:
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(approval_graph())
        config = thread()
        first = await driver.invoke(graph, {"request": "refund", "decision": ""}, config)
        assert "__interrupt__" in first
        paused = await driver.get_state(graph, config)
        assert paused.next == ("ask",)
        assert paused.tasks[0].interrupts[0].value == {"question": "approve refund?"}
        final = await driver.invoke(graph, Command(resume="yes"), config)
        outcomes.append((final, shape(await driver.history(graph, config))))
    assert outcomes[0][0]["decision"] == "refund: yes"
    assert outcomes[0] == outcomes[1]


class Outer(TypedDict):
    topic: str
    answer: str


class Inner(TypedDict):
    topic: str
    answer: str


def nested_graph() -> StateGraph[Any]:
    def research(state: Inner) -> dict[str, Any]:
        hint = interrupt("need a hint")
        return {"answer": f"{state['topic']} with {hint}"}

    inner: StateGraph[Any] = StateGraph(Inner)
    inner.add_node("research", research)
    inner.add_edge(START, "research")
    inner.add_edge("research", END)

    outer: StateGraph[Any] = StateGraph(Outer)
    outer.add_node("sub", inner.compile())
    outer.add_node("finish", lambda s: {"answer": s["answer"].upper()})
    outer.add_edge(START, "sub")
    outer.add_edge("sub", "finish")
    outer.add_edge("finish", END)
    return outer


async def test_subgraph_checkpoints_in_their_namespace(
    cp: Driver, memory: Driver, thread: Any
) -> None:
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(nested_graph())
        config = thread()
        await driver.invoke(graph, {"topic": "tides", "answer": ""}, config)
        state = await driver.get_state(graph, config, subgraphs=True)
        sub_state = state.tasks[0].state
        assert sub_state is not None and sub_state.next == ("research",)
        ns = sub_state.config["configurable"]["checkpoint_ns"]
        assert ns.startswith("sub:")
        final = await driver.invoke(graph, Command(resume="the moon"), config)
        outcomes.append(final)
        # the subgraph's checkpoints are stored under its namespace
        stored = await driver.call(
            "list", {"configurable": {**config["configurable"], "checkpoint_ns": ns}}
        )
        assert stored and all(t.config["configurable"]["checkpoint_ns"] == ns for t in stored)
    assert outcomes[0] == outcomes[1] == {"topic": "tides", "answer": "TIDES WITH THE MOON"}


class MapState(TypedDict):
    items: list[str]
    results: Annotated[list[str], operator.add]


def fan_out_graph(calls: dict[str, int], fail_once: set[str]) -> StateGraph[Any]:
    def plan(state: MapState) -> list[Send]:
        return [Send("work", {"item": item}) for item in state["items"]]

    def work(arg: dict[str, str]) -> dict[str, Any]:
        item = arg["item"]
        calls[item] = calls.get(item, 0) + 1
        if item in fail_once:
            fail_once.discard(item)
            # Fail after the other tasks finished: LangGraph drops the writes of
            # a task that finishes after a failure has shut the step down.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(calls) < len(done_before_failing) + 1:
                time.sleep(0.01)
            time.sleep(0.05)
            raise RuntimeError(f"transient failure on {item}")
        return {"results": [item.upper()]}

    done_before_failing = [i for i in ("a", "b", "c") if i not in fail_once]

    builder: StateGraph[Any] = StateGraph(MapState)
    builder.add_node("work", work)
    builder.add_conditional_edges(START, plan, ["work"])
    builder.add_edge("work", END)
    return builder


async def test_failed_send_task_resumes_reusing_successful_writes(
    cp: Driver, memory: Driver, thread: Any
) -> None:
    outcomes = []
    for driver in (cp, memory):
        calls: dict[str, int] = {}
        graph = driver.compile(fan_out_graph(calls, {"b"}))
        config = thread()
        with pytest.raises(RuntimeError, match="transient failure on b"):
            await driver.invoke(graph, {"items": ["a", "b", "c"], "results": []}, config)
        # The successful tasks' writes were saved as pending writes ...
        tup = await driver.call("get_tuple", config)
        saved = {w[1] for w in tup.pending_writes}
        assert "results" in saved and "__error__" in saved
        final = await driver.invoke(graph, None, config)
        # ... so resuming runs only the failed task again.
        assert calls == {"a": 1, "b": 2, "c": 1}
        outcomes.append(sorted(final["results"]))
    assert outcomes[0] == outcomes[1] == ["A", "B", "C"]


async def test_fork_from_a_past_checkpoint(cp: Driver, memory: Driver, thread: Any) -> None:
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(chat_graph())
        config = thread()
        for i in range(3):
            await driver.invoke(
                graph, {"messages": [HumanMessage(content=f"q{i}", id=f"q{i}")]}, config
            )
        history = await driver.history(graph, config)
        after_first = next(
            s for s in reversed(history) if len(s.values["messages"]) == 2 and not s.next
        )
        forked = await driver.invoke(
            graph, {"messages": [HumanMessage(content="other", id="other")]}, after_first.config
        )
        assert [m.content for m in forked["messages"]][:2] == ["q0", forked["messages"][1].content]
        assert forked["messages"][2].content == "other"
        latest = await driver.get_state(graph, config)
        # The fork is now the thread's latest state; the old line stays in history.
        assert [m.id for m in latest.values["messages"]][:3] == [
            "q0",
            forked["messages"][1].id,
            "other",
        ]
        full = await driver.history(graph, config)
        assert len(full) == len(history) + 3
        outcomes.append((_values(latest.values), shape(full)))
    assert outcomes[0] == outcomes[1]


async def test_update_state_as_node(cp: Driver, memory: Driver, thread: Any) -> None:
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(chat_graph())
        config = thread()
        await driver.invoke(graph, {"messages": [HumanMessage(content="hi", id="h")]}, config)
        new_config = await driver.update_state(
            graph,
            config,
            {"messages": [AIMessage(content="edited by a human", id="x")]},
            as_node="assistant",
        )
        assert new_config["configurable"]["checkpoint_id"]
        state = await driver.get_state(graph, config)
        assert state.values["messages"][-1].content == "edited by a human"
        assert state.metadata["source"] == "update"
        # Replacing a message by id edits it in place in the list.
        state_before = await driver.get_state(graph, config)
        await driver.update_state(graph, config, {"messages": [HumanMessage(content="HI", id="h")]})
        after = await driver.get_state(graph, config)
        assert after.values["messages"][0].content == "HI"
        assert len(after.values["messages"]) == len(state_before.values["messages"])
        outcomes.append((_values(after.values), shape(await driver.history(graph, config))))
    assert outcomes[0] == outcomes[1]


async def test_history_filter_before_limit(cp: Driver, memory: Driver, thread: Any) -> None:
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(chat_graph())
        config = thread()
        for i in range(4):
            await driver.invoke(
                graph, {"messages": [HumanMessage(content=f"q{i}", id=f"q{i}")]}, config
            )
        full = await driver.history(graph, config)
        loops = await driver.history(graph, config, filter={"source": "loop"})
        assert loops and all(s.metadata["source"] == "loop" for s in loops)
        before = await driver.history(graph, config, before=full[3].config)
        assert [s.config["configurable"]["checkpoint_id"] for s in before] == [
            s.config["configurable"]["checkpoint_id"] for s in full[4:]
        ]
        limited = await driver.history(graph, config, before=full[3].config, limit=2)
        assert len(limited) == 2
        outcomes.append((shape(loops), shape(before), shape(limited)))
    assert outcomes[0] == outcomes[1]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: float
    label: str | None = None


class Mixed(TypedDict, total=False):
    when: dt.datetime
    day: dt.date
    price: Decimal
    raw: bytes
    tags: set[str]
    point: Point
    color: Color
    ident: uuid.UUID
    nested: dict[str, Any]
    pair: tuple[int, str]
    numbers: list[float]
    messages: list[Any]
    big: int
    text: str
    nothing: None


MIXED: dict[str, Any] = {
    "when": dt.datetime(2026, 11, 23, 12, 30, 5, 123456, tzinfo=dt.UTC),
    "day": dt.date(2026, 1, 2),
    "price": Decimal("12345.6789"),
    "raw": b"\x00\x01binary\xff",
    "tags": {"a", "b", "c"},
    "point": Point(x=3, y=4.5, label="p"),
    "color": Color.BLUE,
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"a": [1, 2, {"b": None}], "c": "text with \u00e9 and \u4e2d"},
    "pair": (7, "seven"),
    "numbers": [1.5, float("inf"), -0.0],
    "messages": [
        HumanMessage(content="hi", id="1", additional_kwargs={"k": "v"}),
        AIMessage(
            content=[{"type": "text", "text": "calling"}],
            id="2",
            tool_calls=[
                {"name": "search", "args": {"q": "x"}, "id": "call-1", "type": "tool_call"}
            ],
        ),
        ToolMessage(content="result", tool_call_id="call-1", id="3"),
    ],
    "big": 2**62,
    "text": "x" * 1000,
    "nothing": None,
}


async def test_values_of_many_types_round_trip(cp: Driver, memory: Driver, thread: Any) -> None:
    builder: StateGraph[Any] = StateGraph(Mixed)
    builder.add_node("set", lambda s: MIXED)
    builder.add_edge(START, "set")
    builder.add_edge("set", END)
    outcomes = []
    for driver in (cp, memory):
        graph = driver.compile(builder)
        config = thread()
        await driver.invoke(graph, {"text": "start"}, config)
        state = await driver.get_state(graph, config)
        outcomes.append(state.values)
    ours, reference = outcomes
    assert ours == reference
    for key, value in MIXED.items():
        if key == "pair":  # LangGraph's msgpack serde turns tuples into lists, in every saver
            assert ours[key] == list(value)
            continue
        assert ours[key] == value, key
        assert type(ours[key]) is type(value), key


async def test_messages_state_subclass_channels(cp: Driver, thread: Any) -> None:
    class State(MessagesState):
        summary: str
        counter: int

    def node(state: State) -> dict[str, Any]:
        return {
            "messages": [AIMessage(content="ok", id=str(uuid.uuid4()))],
            "summary": "s" * 300,  # long strings are stored as deduplicated blobs
            "counter": state.get("counter", 0) + 1,
        }

    builder: StateGraph[Any] = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    graph = cp.compile(builder)
    config = thread()
    for _ in range(3):
        out = await cp.invoke(graph, {"messages": [HumanMessage(content="x")]}, config)
    assert out["counter"] == 3 and out["summary"] == "s" * 300 and len(out["messages"]) == 6
