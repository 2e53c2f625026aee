"""Time-travel traps (issue 18): branches that continue, diffs of "the latest", no noise.

Before: ``create_branch`` returned ``{"thread_id": branch, "checkpoint_id":
<branch point>}``, and LangGraph forks from a config's checkpoint at every
invoke, so each turn on the branch started again from the branch point;
``diff`` refused a thread config (its latest checkpoint), which the CLI and
``create_branch`` accept; and it listed LangGraph's bookkeeping channels
(``__start__``, ``branch:to:<node>``) as changes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import (
    PostgresCheckpointer,
    is_internal_channel,
)
from haive_langgraph.cli import app
from haive_langgraph.errors import NotFoundError
from tests.checkpointers.conftest import Driver


def new_thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"tt-{uuid.uuid4().hex[:10]}"}}


async def converse(cp: Driver, graph: Any, config: Any, *texts: str) -> None:
    for text in texts:
        await cp.invoke(graph, {"messages": [HumanMessage(text, id=text)]}, config)


def turn_end(history: list[Any], messages: int) -> Any:
    """The snapshot closing the turn that left ``messages`` messages."""
    return next(
        s for s in reversed(history) if len(s.values.get("messages", [])) == messages and not s.next
    )


def cid(config: Any) -> str:
    return str(config["configurable"]["checkpoint_id"])


async def test_a_branch_config_continues_the_branch(cp: Driver) -> None:
    graph = cp.compile(chat_graph())
    main = new_thread()
    await converse(cp, graph, main, "q1", "q2", "q3")
    point = turn_end(await cp.history(graph, main), 4)
    branch = await cp.call("create_branch", point.config, "alt")
    assert "checkpoint_id" not in branch["configurable"]
    await converse(cp, graph, branch, "b1")
    await converse(cp, graph, branch, "b2")  # the same config again: continues from b1
    state = await cp.get_state(graph, branch)
    ids = [m.id for m in state.values["messages"]]
    assert ids[:4] == [m.id for m in point.values["messages"]]
    assert ids[4] == "b1" and ids[6] == "b2" and len(ids) == 8
    # the config LangGraph hands back continues too
    await converse(cp, graph, state.config, "b3")
    head = await cp.get_state(graph, branch)
    assert [m.id for m in head.values["messages"]][-2] == "b3"
    assert len(head.values["messages"]) == 10
    # the branch's history is one line: each checkpoint's parent is the next older one
    history = await cp.history(graph, branch)
    parents = [s.parent_config and cid(s.parent_config) for s in history]
    assert parents[:-1] == [cid(s.config) for s in history[1:]] and parents[-1] is None
    # the source thread is untouched
    assert len((await cp.get_state(graph, main)).values["messages"]) == 6
    # "latest" names the source's head, as a config without checkpoint_id
    latest = {"configurable": {**main["configurable"], "checkpoint_id": "latest"}}
    other = await cp.call("create_branch", latest, "from-head")
    at = (await cp.call("list_branches", main["configurable"]["thread_id"]))[-1]
    assert at.thread_id == other["configurable"]["thread_id"]
    assert cid(at.branch_point) == cid((await cp.get_state(graph, main)).config)


async def test_diff_takes_a_thread_or_latest_and_hides_bookkeeping(cp: Driver) -> None:
    graph = cp.compile(chat_graph())
    config = new_thread()
    tid = config["configurable"]["thread_id"]
    await converse(cp, graph, config, "q1", "q2")
    history = await cp.history(graph, config)
    first, head = turn_end(history, 2), history[0]
    by_id = await cp.call("diff", first.config, head.config)
    by_thread = await cp.call("diff", first.config, config)
    by_latest = await cp.call(
        "diff", first.config, {"configurable": {"thread_id": tid, "checkpoint_id": "latest"}}
    )
    for d in (by_thread, by_latest):
        assert cid(d.b) == cid(head.config) and d.changes == by_id.changes
    assert [c.channel for c in by_id.changes] == ["messages"]
    # an input checkpoint against the one after it: only bookkeeping differs
    source = next(s for s in history if s.metadata["source"] == "input")
    after = next(
        s for s in history if s.parent_config and cid(s.parent_config) == cid(source.config)
    )
    quiet = await cp.call("diff", source.config, after.config)
    loud = await cp.call("diff", source.config, after.config, include_internal=True)
    assert not any(is_internal_channel(c.channel) for c in quiet.changes)
    internal = {c.channel for c in loud.changes if is_internal_channel(c.channel)}
    assert "__start__" in internal and any(ch.startswith("branch:to:") for ch in internal)
    assert "__start__" not in str(quiet) and "__start__" in str(loud)
    with pytest.raises(NotFoundError, match="has no checkpoints"):
        await cp.call("diff", first.config, new_thread())


def test_cli_diff_hides_bookkeeping_unless_internal(
    dsn: str, sync_saver: PostgresCheckpointer
) -> None:
    graph = chat_graph().compile(checkpointer=sync_saver)
    config = new_thread()
    tid = config["configurable"]["thread_id"]
    graph.invoke({"messages": [HumanMessage("q1", id="q1")]}, config)
    history = list(graph.get_state_history(config))
    source = next(s for s in history if s.metadata["source"] == "input")
    runner = CliRunner()

    def diff(*extra: str) -> list[str]:
        result = runner.invoke(
            app,
            [
                "diff",
                f"{tid}@{cid(source.config)}",
                f"{tid}@latest",
                "--dsn",
                dsn,
                "--json",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.stderr
        return [c["channel"] for c in json.loads(result.stdout)["changes"]]

    assert diff() == ["messages"]
    assert "__start__" in diff("--internal")
