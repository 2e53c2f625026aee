"""The server's context managers in-process: tenant routing and the thread TTL.

No LangGraph server here: the authenticated user travels in the run config
(``langgraph_auth_user``), as the server puts it there for every run.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langgraph.graph import END, START, StateGraph

import haive_langgraph.server as server_module
from haive_langgraph.errors import ConfigurationError, PermissionDeniedError
from haive_langgraph.server import TenantCheckpointer, TenantStore, checkpointer, store
from tests._roles import application_role


class State(TypedDict):
    items: Annotated[list[str], operator.add]


def echo(state: State) -> State:
    return {"items": [f"echo:{state['items'][-1]}"]}


def graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("echo", echo)
    builder.add_edge(START, "echo")
    builder.add_edge("echo", END)
    return builder.compile(checkpointer=saver)


def as_user(thread_id: str, identity: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "langgraph_auth_user": {"identity": identity}}}


def tenants_of(dsn: str, thread_id: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT tenant_id FROM haive.checkpoints WHERE thread_id = %s ORDER BY 1",
            (thread_id,),
        ).fetchall()
    return [t for (t,) in rows]


async def test_each_call_acts_for_its_users_tenant(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAIVE_SERVER_TENANT_FROM", "user")
    async with checkpointer(dsn) as saver:
        assert isinstance(saver, TenantCheckpointer)
        app = graph(saver)
        await app.ainvoke({"items": ["a"]}, as_user("t", "alice"))
        await app.ainvoke({"items": ["b"]}, as_user("t", "bob"))
        alice = await app.aget_state(as_user("t", "alice"))
        bob = await app.aget_state(as_user("t", "bob"))
        assert alice.values["items"] == ["a", "echo:a"]
        assert bob.values["items"] == ["b", "echo:b"]
        assert tenants_of(dsn, "t") == ["alice", "bob"]
        assert sorted(saver.tenants()) == ["alice", "bob"]
        # The sync methods, from a worker thread (a tenant not met yet is made on the loop).
        tup = await asyncio.to_thread(saver.get_tuple, as_user("t", "alice"))
        assert tup is not None and tup.checkpoint["channel_values"]["items"] == ["a", "echo:a"]
        assert await asyncio.to_thread(saver.get_tuple, as_user("t", "zoe")) is None
        assert "zoe" in saver.tenants()
        # A call with no user (and no server auth context) is refused, not defaulted.
        with pytest.raises(PermissionDeniedError):
            await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        with pytest.raises(PermissionDeniedError):
            await saver.adelete_thread("t")
    assert tenants_of(dsn, "t") == ["alice", "bob"]


async def test_the_store_refuses_a_call_without_a_user(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAIVE_SERVER_TENANT_FROM", "org")
    async with store(dsn) as routed:
        assert isinstance(routed, TenantStore)
        with pytest.raises(PermissionDeniedError):
            await routed.aput(("n",), "k", {"v": 1})
        # Bound explicitly (as each call is on a server), it works.
        await routed.for_tenant("acme").aput(("n",), "k", {"v": 1})
        item = await routed.for_tenant("acme").aget(("n",), "k")
        assert item is not None and item.value == {"v": 1}
        assert await routed.for_tenant("beta").aget(("n",), "k") is None


async def test_the_thread_ttl_deletes_idle_threads_of_every_tenant_served(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAIVE_SERVER_TENANT_FROM", "user")
    # Threads idle for 0.6 s go; sweeps every 0.3 s.
    monkeypatch.setenv(
        "LANGGRAPH_THREAD_TTL", '{"default_ttl": 0.01, "sweep_interval_minutes": 0.005}'
    )
    async with checkpointer(dsn) as saver:
        app = graph(saver)
        await app.ainvoke({"items": ["x"]}, as_user("ttl", "carol"))
        await app.ainvoke({"items": ["y"]}, as_user("ttl", "dave"))
        assert tenants_of(dsn, "ttl") == ["carol", "dave"]
        for _ in range(60):
            if not tenants_of(dsn, "ttl"):
                break
            await asyncio.sleep(0.1)
        assert tenants_of(dsn, "ttl") == []


async def test_a_role_under_row_level_security_is_told_not_to_migrate(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with checkpointer(dsn):  # the owner migrates
        pass
    monkeypatch.setenv("HAIVE_SERVER_TENANT_FROM", "user")
    with application_role(dsn) as app_dsn:
        # A fresh process would migrate at start: forget that this one did.
        monkeypatch.setattr(server_module, "_SET_UP", set())
        with pytest.raises(ConfigurationError, match="HAIVE_SERVER_SETUP=off"):
            async with checkpointer(app_dsn):
                pass
        monkeypatch.setenv("HAIVE_SERVER_SETUP", "off")
        async with checkpointer(app_dsn) as saver:
            app = graph(saver)
            await app.ainvoke({"items": ["rls"]}, as_user("rls", "erin"))
            state = await app.aget_state(as_user("rls", "erin"))
            assert state.values["items"] == ["rls", "echo:rls"]
    assert tenants_of(dsn, "rls") == ["erin"]
