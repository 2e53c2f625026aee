"""One conversation turn on the demo chat graph, from async code, with either saver class."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig

from .writer_process import human_text


async def take_turn(
    graph: Any,
    thread_id: str,
    label: str,
    *,
    is_async: bool,
    big_every: int = 0,
    resume: bool = True,
) -> str:
    """Finish the thread's interrupted superstep if it has one, else add the next turn.

    The sync graph runs in a worker thread, as an application would call it.
    With ``resume=False`` (threads other writers share: their runs in progress
    look interrupted) a turn is always added. Returns ``"resumed"`` or ``"turn"``.
    """
    cfg: RunnableConfig = {"configurable": {"thread_id": thread_id}}

    async def call(method: str, *args: Any) -> Any:
        if is_async:
            return await getattr(graph, f"a{method}")(*args)
        return await asyncio.to_thread(getattr(graph, method), *args)

    state = await call("get_state", cfg)
    if resume and (state.next or state.tasks):
        await call("invoke", None, cfg)
        return "resumed"
    turn = sum(1 for m in state.values.get("messages", []) if m.type == "human")
    message = HumanMessage(content=human_text(label, turn, big_every))
    await call("invoke", {"messages": [message]}, cfg)
    return "turn"
