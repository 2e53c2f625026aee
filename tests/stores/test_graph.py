"""The store inside LangGraph: ``graph.compile(store=...)`` with nodes that read and write memories."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from tests.stores.conftest import Driver

NS = tuple[str, ...]


class State(TypedDict):
    user: str
    text: str
    recalled: list[str]


def build(root: NS, *, is_async: bool) -> StateGraph[Any]:
    def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
        ns = (*root, "users", state["user"], "memories")
        store.put(ns, f"m{len(store.search(ns, limit=100))}", {"text": state["text"]})
        return {}

    def recall(state: State, *, store: BaseStore) -> dict[str, Any]:
        hits = store.search((*root, "users", state["user"]), query=state["text"], limit=2)
        return {"recalled": [h.value["text"] for h in hits]}

    async def aremember(state: State, *, store: BaseStore) -> dict[str, Any]:
        ns = (*root, "users", state["user"], "memories")
        await store.aput(ns, f"m{len(await store.asearch(ns, limit=100))}", {"text": state["text"]})
        return {}

    async def arecall(state: State, *, store: BaseStore) -> dict[str, Any]:
        hits = await store.asearch((*root, "users", state["user"]), query=state["text"], limit=2)
        return {"recalled": [h.value["text"] for h in hits]}

    builder: StateGraph[Any] = StateGraph(State)
    builder.add_node("remember", aremember if is_async else remember)
    builder.add_node("recall", arecall if is_async else recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    return builder


async def test_graph_reads_and_writes_memories(store: Driver, ns: NS) -> None:
    graph = build(ns, is_async=store.is_async).compile(store=store.store)
    texts = ["likes green tea", "plays chess on sundays", "drinks tea every morning"]
    out: dict[str, Any] = {}
    for text in texts:
        inputs = {"user": "u1", "text": text, "recalled": []}
        if store.is_async:
            out = await graph.ainvoke(inputs)
        else:
            out = await asyncio.to_thread(graph.invoke, inputs)
    assert out["recalled"][0] == "drinks tea every morning"
    assert "likes green tea" in out["recalled"]
    assert await store.list_namespaces(prefix=ns) == [(*ns, "users", "u1", "memories")]
    other = await store.search((*ns, "users", "u2"), query="tea")
    assert other == []
