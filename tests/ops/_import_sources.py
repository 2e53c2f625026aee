"""Source databases for the import tests, written by the real packages.

``langgraph-checkpoint-postgres`` (``PostgresSaver`` running a graph with
interrupts, a subgraph namespace, a failing ``Send`` task and a fork;
LangGraph's ``PostgresStore`` with a vector index and TTLs) and
``langchain-postgres`` (``PostgresChatMessageHistory`` through its sync
API, ``PGVector`` with ``DeterministicFakeEmbedding``).
"""

from __future__ import annotations

import operator
import uuid
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import psycopg
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send, interrupt
from psycopg import conninfo

DIMS = 16
EMBED = DeterministicFakeEmbedding(size=DIMS)
THREADS = ("t0", "t1", "t2")
CHAT_TABLE = "chat_history"
COLLECTION = "docs"


@dataclass
class Note:
    """A state type of "the application": outside the serde guard's default allow-list."""

    text: str


class Inner(TypedDict):
    messages: Annotated[list[Any], operator.add]
    answer: str


class State(TypedDict):
    messages: Annotated[list[Any], operator.add]
    answer: str
    items: list[str]
    done: Annotated[list[str], operator.add]


def graph_builder(fail: set[str]) -> StateGraph[Any]:
    """ask (interrupt) -> sub (a subgraph that interrupts) -> work (Send fan-out, one fails)."""

    def research(state: Inner) -> dict[str, Any]:
        hint = interrupt("need a hint")
        return {"answer": f"hint:{hint}", "messages": [AIMessage(f"researched {hint}")]}

    sub = StateGraph(Inner)
    sub.add_node("research", research)
    sub.add_edge(START, "research")

    def ask(state: State) -> dict[str, Any]:
        ok = interrupt({"question": "approve?"})
        return {"messages": [HumanMessage(f"approved={ok}")]}

    def plan(state: State) -> list[Send]:
        return [Send("work", {"item": i}) for i in state["items"]]

    def work(arg: dict[str, str]) -> dict[str, Any]:
        if arg["item"] in fail:
            fail.discard(arg["item"])
            raise ValueError(f"work on {arg['item']} failed")
        return {"done": [arg["item"]]}

    g = StateGraph(State)
    g.add_node("ask", ask)
    g.add_node("sub", sub.compile())
    g.add_node("work", work)
    g.add_edge(START, "ask")
    g.add_edge("ask", "sub")
    g.add_conditional_edges("sub", plan, ["work"])
    return g


def run_threads(saver: Any, threads: tuple[str, ...] = THREADS) -> None:
    """Each thread: two interrupts resumed, a failed Send task (its error and its
    siblings' writes pending), finished except the second; a fork of the first."""
    for n, thread_id in enumerate(threads):
        graph = graph_builder({"b"}).compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": thread_id}}
        graph.invoke(
            {
                "messages": [HumanMessage("hi", id=f"m{n}")],
                "items": ["a", "b", "c"],
                "done": [],
                "answer": "",
            },
            config,
        )
        graph.invoke(Command(resume=True), config)
        try:
            graph.invoke(Command(resume=f"x{n}"), config)
        except ValueError:
            pass
        if n != 1:
            graph.invoke(None, config)
        history = list(graph.get_state_history(config))
        if n == 0 and len(history) > 3:  # a fork (the shallow saver keeps no history)
            past = history[-3]
            graph.update_state(past.config, {"answer": "forked"})


def sqlalchemy_url(dsn: str) -> str:
    """PGVector takes SQLAlchemy URLs only."""
    from urllib.parse import quote

    params = conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host", "localhost"))
    user = quote(str(params.get("user", "postgres")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    port = params.get("port", 5432)
    if host.startswith("/"):
        return f"postgresql+psycopg://{auth}@/{params['dbname']}?host={host}&port={port}"
    return f"postgresql+psycopg://{auth}@{host}:{port}/{params['dbname']}"


def fill_langgraph(dsn: str) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    with PostgresSaver.from_conn_string(dsn) as saver:
        saver.setup()
        run_threads(saver)
    index = {"dims": DIMS, "embed": EMBED, "fields": ["text", "tags[*]"]}
    with PostgresStore.from_conn_string(dsn, index=index, ttl={"default_ttl": None}) as store:
        store.setup()
        for i in range(25):
            store.put(
                ("users", f"u{i % 3}", "memories"),
                f"k{i}",
                {"text": f"memory number {i}", "tags": [f"tag{i}", f"group{i % 2}"], "n": i},
            )
        store.put(("users", "u0", "plain"), "p", {"text": "not indexed"}, index=False)
        store.put(("docs",), "ttl", {"text": "kept an hour"}, ttl=60)
        store.put(("docs",), "gone", {"text": "expired"}, ttl=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE store SET expires_at = now() - interval '1 hour' WHERE key = 'gone'")


def chat_sessions() -> list[tuple[str, list[Any]]]:
    out = []
    for n in range(3):
        messages = [
            SystemMessage("be brief"),
            HumanMessage(f"hi {n}", id=f"h{n}"),
            AIMessage("calling", tool_calls=[{"name": "f", "args": {"a": n}, "id": f"c{n}"}]),
            ToolMessage("42", tool_call_id=f"c{n}"),
            AIMessage(f"answer {n}", additional_kwargs={"k": n}, id=f"a{n}"),
        ]
        out.append((str(uuid.UUID(int=n + 1)), messages))
    return out


def fill_langchain(dsn: str) -> list[tuple[str, list[Any]]]:
    from langchain_postgres import PGVector, PostgresChatMessageHistory

    sessions = chat_sessions()
    with psycopg.connect(dsn, autocommit=True) as conn:
        PostgresChatMessageHistory.create_tables(conn, CHAT_TABLE)
        for session_id, messages in sessions:
            history = PostgresChatMessageHistory(CHAT_TABLE, session_id, sync_connection=conn)
            # Two calls: rows of sessions interleave, as in a live table.
            history.add_messages(messages[:2])
        for session_id, messages in sessions:
            history = PostgresChatMessageHistory(CHAT_TABLE, session_id, sync_connection=conn)
            history.add_messages(messages[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the source package's own deprecations
        store = PGVector(
            embeddings=EMBED,
            collection_name=COLLECTION,
            connection=sqlalchemy_url(dsn),
            use_jsonb=True,
        )
        store.add_texts(
            [f"document {i}" for i in range(20)] + ["same text", "same text"],
            metadatas=[{"i": i, "kind": "odd" if i % 2 else "even"} for i in range(22)],
            ids=[f"d{i:02}" for i in range(22)],
        )
        if store._engine is not None:
            store._engine.dispose()
    return sessions
