"""Conversation memory: LangChain chat histories, conversations with token usage
and cost, sessions (TTL, limits, branches, merges, participants) and automatic
tracking of model calls.

Everything lives in the ``conversations``, ``conversation_messages`` and
``conversation_participants`` tables (migrations component ``"conversations"``,
see ``_sql.py``); a history's ``session_id``, a conversation id and a session id
name the same kind of row. The operations are written once as sans-I/O
generators, grouped by what they act on (``_rows``, ``_messages``,
``_erasure``, ``_participants``, ``_branches``); the public classes only build
and run :class:`~haive_langgraph.db.Call` values. See ``docs/conversations.md``.
"""

from __future__ import annotations

from haive_langgraph.memory.conversations._factories import (
    AsyncChatHistoryFactory,
    ChatHistoryFactory,
    async_history_factory,
    history_factory,
)
from haive_langgraph.memory.conversations._histories import (
    AsyncPostgresChatMessageHistory,
    PostgresChatMessageHistory,
)
from haive_langgraph.memory.conversations._sessions import AsyncSessionManager, SessionManager
from haive_langgraph.memory.conversations._store import AsyncConversationStore, ConversationStore
from haive_langgraph.memory.conversations._tracking import (
    AsyncConversationTracker,
    ConversationTracker,
)
from haive_langgraph.memory.conversations._types import (
    Conversation,
    ConversationMetadata,
    ConversationPage,
    ErasureReport,
    MessagePage,
    ModelPrice,
    Permission,
    Session,
    SessionPage,
    StoredMessage,
    TokenUsage,
    UsageTotals,
)

__all__ = [
    "AsyncChatHistoryFactory",
    "AsyncConversationStore",
    "AsyncConversationTracker",
    "AsyncPostgresChatMessageHistory",
    "AsyncSessionManager",
    "ChatHistoryFactory",
    "Conversation",
    "ConversationMetadata",
    "ConversationPage",
    "ConversationStore",
    "ConversationTracker",
    "ErasureReport",
    "MessagePage",
    "ModelPrice",
    "Permission",
    "PostgresChatMessageHistory",
    "Session",
    "SessionManager",
    "SessionPage",
    "StoredMessage",
    "TokenUsage",
    "UsageTotals",
    "async_history_factory",
    "history_factory",
]
