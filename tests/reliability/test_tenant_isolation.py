"""Scenario 8: tenant isolation under attack, through every public checkpointer API.

Tenant ``globex`` (the victim) holds threads with pending writes, tags, a
branch, run ids and searchable metadata; tenant ``acme`` (the attacker) holds
a thread with the same id as one of the victim's. As ``acme``, with the sync
and the async class, every public method is called with the victim's thread
ids, checkpoint ids, run ids, tags, branch names and metadata: to read, list,
search, diff, update, tag, branch, copy, restore, prune, retain and delete.

An attack succeeds if it returns anything of the victim's (its text, or a
checkpoint id only the victim has) or changes any of the victim's rows
(compared byte for byte after each attack). Expected: 0 successes; each
attack returns nothing, works on the attacker's own rows only, or raises
:class:`~haive_langgraph.errors.NotFoundError` /
:class:`~haive_langgraph.errors.ConfigurationError`.

Raw SQL on a session bound to the attacker is refused by row-level
security: ``tests/checkpointers/test_row_security.py`` for the checkpointer
tables, ``test_tenant_isolation_memory.py`` for conversation memory.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import (
    AsyncPostgresCheckpointer,
    PostgresCheckpointer,
    RetentionPolicy,
)
from haive_langgraph.errors import ConfigurationError, NotFoundError

from ._attacks import tenant_digest
from .conftest import Figures

VICTIM, ATTACKER = "globex", "acme"
SECRET = "globex-confidential-7731"
TABLES = (
    "threads", "checkpoints", "writes", "blobs", "lineages", "lineage_items", "checkpoint_tags",
)  # fmt: skip


@dataclass
class Victim:
    threads: list[str]
    checkpoint_ids: set[str]
    latest: dict[str, RunnableConfig]  # thread -> config of its latest checkpoint
    first: dict[str, RunnableConfig]  # thread -> config of its first checkpoint
    run_ids: list[str]


def digest(dsn: str, tenant: str) -> str:
    """A hash of every row of ``tenant`` in every checkpointer table (one round trip)."""
    return tenant_digest(dsn, tenant, TABLES)


@pytest.fixture(scope="module")
def victim(dsn: str) -> Victim:
    with psycopg.connect(dsn, autocommit=True) as conn:
        saver = PostgresCheckpointer(conn, tenant_id=VICTIM)
        saver.setup()
        graph = chat_graph().compile(checkpointer=saver)
        latest: dict[str, RunnableConfig] = {}
        first: dict[str, RunnableConfig] = {}
        run_ids = []
        for thread in ("shared", "b-only"):
            for i in range(3):
                run_id = str(uuid.uuid4())
                run_ids.append(run_id)
                config: RunnableConfig = {
                    "configurable": {"thread_id": thread},
                    # LangGraph records a run id given in the metadata.
                    "metadata": {"user_id": "u1", "secret": SECRET, "run_id": run_id},
                }
                graph.invoke({"messages": [HumanMessage(content=f"{SECRET} {i}")]}, config)
            history = list(saver.list({"configurable": {"thread_id": thread}}))
            latest[thread] = history[0].config
            first[thread] = history[-1].config
            saver.put_writes(history[0].config, [("messages", [f"{SECRET} pending"])], "task-b")
            saver.tag(history[1].config, "release")
        saver.create_branch(first["b-only"], "b-branch", thread_id="b-branch-thread")
        row = conn.execute(
            "SELECT count(*) FROM haive.checkpoints WHERE tenant_id = %s AND run_id = ANY(%s)",
            (VICTIM, run_ids),
        ).fetchone()
        assert row is not None and row[0] > 0, "the victim's run ids were not recorded"
        ids = {str(r[0]) for r in conn.execute(
            "SELECT checkpoint_id FROM haive.checkpoints WHERE tenant_id = %s", (VICTIM,)
        )}  # fmt: skip
        # The attacker's own thread with the victim's thread id.
        mine = PostgresCheckpointer(conn, tenant_id=ATTACKER)
        own = chat_graph().compile(checkpointer=mine)
        own.invoke(
            {"messages": [HumanMessage(content="acme's own")]},
            {"configurable": {"thread_id": "shared"}},
        )
        own_ids = {str(r[0]) for r in conn.execute(
            "SELECT checkpoint_id FROM haive.checkpoints WHERE tenant_id = %s", (ATTACKER,)
        )}  # fmt: skip
    return Victim(["shared", "b-only", "b-branch-thread"], ids - own_ids, latest, first, run_ids)


class Attacker:
    """Calls one saver, sync or async, from async code."""

    def __init__(self, saver: Any, kind: str) -> None:
        self.saver = saver
        self.kind = kind
        self.graph = chat_graph().compile(checkpointer=saver)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "async":
            result = getattr(self.saver, f"a{method}")(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return [x async for x in result]
            return await result

        def sync_call() -> Any:
            out = getattr(self.saver, method)(*args, **kwargs)
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
            lambda: list(fn(*args)) if method == "get_state_history" else fn(*args)
        )


def attacks(v: Victim) -> list[tuple[str, Callable[[Attacker], Any]]]:
    b_latest, b_first = v.latest["b-only"], v.first["b-only"]
    s_latest = v.latest["shared"]

    def cfg(thread: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}

    reads: list[tuple[str, Callable[[Attacker], Any]]] = [
        ("get_tuple(victim thread)", lambda a: a.call("get_tuple", cfg("b-only"))),
        ("get_tuple(victim checkpoint id)", lambda a: a.call("get_tuple", b_latest)),
        ("get_tuple(victim id, shared thread id)", lambda a: a.call("get_tuple", s_latest)),
        ("get_tuple(victim branch)", lambda a: a.call("get_tuple", cfg("b-branch-thread"))),
        ("list(victim thread)", lambda a: a.call("list", cfg("b-only"))),
        ("list(shared thread id)", lambda a: a.call("list", cfg("shared"))),
        ("list(before victim id)", lambda a: a.call("list", cfg("shared"), before=s_latest)),
        ("list(all)", lambda a: a.call("list", None)),
        ("list(filter victim metadata)", lambda a: a.call("list", None, filter={"user_id": "u1"})),
        ("list(filter victim secret)", lambda a: a.call("list", None, filter={"secret": SECRET})),
        ("get_thread(victim)", lambda a: a.call("get_thread", "b-only")),
        ("get_thread(shared id)", lambda a: a.call("get_thread", "shared")),
        ("list_threads()", lambda a: a.call("list_threads")),
        ("list_threads(filter)", lambda a: a.call("list_threads", {"secret": SECRET})),
        ("find_checkpoints(victim)", lambda a: a.call("find_checkpoints", "b-only")),
        (
            "find_checkpoints(victim tag)",
            lambda a: a.call("find_checkpoints", "shared", tags=["release"]),
        ),
        (
            "find_checkpoints(victim metadata)",
            lambda a: a.call("find_checkpoints", "shared", metadata={"secret": SECRET}),
        ),
        ("list_branches(victim)", lambda a: a.call("list_branches", "b-only")),
        (
            "get_delta_channel_history(victim)",
            lambda a: a.call("get_delta_channel_history", config=b_latest, channels=["messages"]),
        ),
        ("diff(victim checkpoints)", lambda a: a.call("diff", b_first, b_latest)),
        ("graph.get_state(victim)", lambda a: a.graph_call("get_state", cfg("b-only"))),
        ("graph.get_state(victim id)", lambda a: a.graph_call("get_state", b_latest)),
        ("graph.get_state_history", lambda a: a.graph_call("get_state_history", cfg("b-only"))),
    ]
    writes: list[tuple[str, Callable[[Attacker], Any]]] = [
        (
            "put_writes(victim checkpoint)",
            lambda a: a.call("put_writes", b_latest, [("messages", ["evil"])], "task-b"),
        ),
        (
            "graph.update_state(victim checkpoint)",
            lambda a: a.graph_call("update_state", b_latest, {"messages": [HumanMessage("evil")]}),
        ),
        (
            "graph.invoke(victim thread)",
            lambda a: a.graph_call("invoke", {"messages": [HumanMessage("evil")]}, cfg("b-only")),
        ),
        ("tag(victim checkpoint)", lambda a: a.call("tag", b_first, "evil")),
        ("untag(victim tag)", lambda a: a.call("untag", v.latest["shared"], "release")),
        ("create_branch(victim)", lambda a: a.call("create_branch", b_first, "evil")),
        (
            "create_branch(victim branch name)",
            lambda a: a.call("create_branch", b_first, "b-branch", thread_id="b-branch-thread"),
        ),
        (
            "copy_thread(victim -> own)",
            lambda a: a.call("copy_thread", "b-only", f"stolen-{a.kind}"),
        ),
        ("restore(victim checkpoint)", lambda a: a.call("restore", b_first)),
        ("delete_for_runs(victim runs)", lambda a: a.call("delete_for_runs", v.run_ids)),
        ("prune(victim, keep_latest)", lambda a: a.call("prune", ["b-only", "shared"])),
        ("prune(victim, delete)", lambda a: a.call("prune", ["b-only"], strategy="delete")),
        (
            "apply_retention(victim threads)",
            lambda a: a.call(
                "apply_retention",
                RetentionPolicy(max_checkpoints_per_thread=1),
                thread_ids=["b-only", "shared"],
            ),
        ),
        (
            "apply_retention(all)",
            lambda a: a.call("apply_retention", RetentionPolicy(max_checkpoints_per_thread=1)),
        ),
        ("delete_thread(victim)", lambda a: a.call("delete_thread", "b-only")),
        ("delete_thread(victim branch)", lambda a: a.call("delete_thread", "b-branch-thread")),
        ("delete_threads(victim)", lambda a: a.call("delete_threads", v.threads)),
    ]
    return reads + writes


def leaked(result: Any, v: Victim) -> str | None:
    """What of the victim's ``result`` holds, besides ids the attacker passed in itself."""
    text = repr(result)
    if SECRET in text:
        return "the victim's text"
    given = repr([v.latest, v.first])  # an echo of the attack's own arguments is no leak
    ids = [cid for cid in v.checkpoint_ids if cid in text and cid not in given]
    if ids:
        return f"the victim's checkpoint id {ids[0]}"
    return None


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_every_public_api_refuses_the_other_tenant(
    dsn: str, victim: Victim, figures: Figures, kind: str
) -> None:
    before = await asyncio.to_thread(digest, dsn, VICTIM)
    if kind == "async":
        saver: Any = AsyncPostgresCheckpointer(dsn, tenant_id=ATTACKER)
    else:
        saver = await asyncio.to_thread(lambda: PostgresCheckpointer(dsn, tenant_id=ATTACKER))
    attacker = Attacker(saver, kind)
    successes: list[str] = []
    refused = empty = own_only = 0
    try:
        for name, attack in attacks(victim):
            try:
                result = await attack(attacker)
            except (NotFoundError, ConfigurationError):
                refused += 1
                result = None
            else:
                if result in (None, [], {}) or (hasattr(result, "values") and not result.values):
                    empty += 1
                else:
                    own_only += 1
            if (what := leaked(result, victim)) is not None:
                successes.append(f"{name}: returned {what}")
            if await asyncio.to_thread(digest, dsn, VICTIM) != before:
                successes.append(f"{name}: changed the victim's rows")
                before = await asyncio.to_thread(digest, dsn, VICTIM)
    finally:
        if kind == "async":
            await saver.aclose()
        else:
            await asyncio.to_thread(saver.close)
    total = len(attacks(victim))
    figures.record(
        f"8 tenant isolation ({kind} saver)",
        f"{total} attacks through the public API on the victim's threads, checkpoints, runs, "
        f"tags, branches and metadata: {len(successes)} successes ({refused} refused with "
        f"NotFoundError/ConfigurationError, {empty} returned nothing, {own_only} acted on the "
        "attacker's own rows only); victim rows byte-identical",
    )
    assert not successes, successes
    # The victim still reads everything it wrote.
    with psycopg.connect(dsn, autocommit=True) as conn:
        mine = PostgresCheckpointer(conn, tenant_id=VICTIM)
        for thread, config in victim.latest.items():
            tup = mine.get_tuple(config)
            assert tup is not None and SECRET in repr(tup.checkpoint["channel_values"])
            assert len(list(mine.list({"configurable": {"thread_id": thread}}))) >= 9
