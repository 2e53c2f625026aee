"""Where vector memory reads the conversations it remembers (``store_conversation``).

From the conversation store given as ``conversations=``, or else from the
conversation tables of the memory's own database, schema and tenant, with its
codec: the conversation store's own read, run on the memory's store connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from haive_langgraph.db._call import Call
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.conversations._store import AsyncConversationStore, _StoreCalls
from haive_langgraph.memory.conversations._tables import make_tables
from haive_langgraph.memory.conversations._types import Conversation


class _OwnTables(_StoreCalls[Any]):
    """The conversation store's calls on a memory store's schema, tenant and codec
    (no connection of its own: the memory's store runs them)."""

    def __init__(self, store: Any) -> None:
        _, self._tables = make_tables(
            config=store.config,
            schema=store.schema,
            tenant_id=store.tenant_id,
            codec=store.codec,
            serde=None,
        )

    def read(self, conversation_id: str) -> Call[Conversation]:
        """Read a conversation with its messages, in this tenant."""
        call = self._get_conversation(conversation_id)
        return dataclasses.replace(call, scope=self._tables.scope())


@contextmanager
def _conversation_tables(store: Any) -> Iterator[None]:
    """Name the fix when the memory's schema has no conversation tables."""
    try:
        yield
    except psycopg.errors.UndefinedTable:
        raise ConfigurationError(
            f"schema {store.schema!r} has no conversation tables to read the conversation "
            "from: give the memory the store that holds it, conversations=ConversationStore(...)"
        ) from None


def load_conversation(store: Any, conversations: Any, conversation_id: str) -> Conversation:
    """A conversation for the sync memory (``store``: its ``PostgresStore``)."""
    if conversations is None:
        with _conversation_tables(store):
            return store._source.call(_OwnTables(store).read(conversation_id))  # type: ignore[no-any-return]
    if isinstance(conversations, AsyncConversationStore):
        raise ConfigurationError(
            "an AsyncConversationStore is read by the async memory only; "
            "use astore_conversation, or pass the Conversation itself"
        )
    return conversations.get_conversation(conversation_id)  # type: ignore[no-any-return]


async def aload_conversation(store: Any, conversations: Any, conversation_id: str) -> Conversation:
    """A conversation for the async memory (``store``: its ``AsyncPostgresStore``)."""
    if conversations is None:
        with _conversation_tables(store):
            return await store._source.call(_OwnTables(store).read(conversation_id))  # type: ignore[no-any-return]
    if isinstance(conversations, AsyncConversationStore):
        return await conversations.aget_conversation(conversation_id)
    return await asyncio.to_thread(conversations.get_conversation, conversation_id)
