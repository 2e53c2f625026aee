"""The async methods of a sync chat history: its sync ones, run in a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage


class ThreadedAsyncHistory(BaseChatMessageHistory):
    """``aget_messages``, ``aadd_messages`` and ``aclear`` run ``get_messages``,
    ``add_messages`` and ``clear`` with :func:`asyncio.to_thread` (context
    variables follow the call), so the event loop never waits on the database."""

    def get_messages(self) -> list[BaseMessage]:
        """The stored messages, oldest first (the history's own method)."""
        raise NotImplementedError

    async def aget_messages(self) -> list[BaseMessage]:
        return await asyncio.to_thread(self.get_messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await asyncio.to_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)
