"""Conversation memory: LangChain chat histories, conversations with token usage
and cost, sessions (TTL, limits, branches, merges, participants) and automatic
tracking of model calls; long-term vector memory and a LangChain ``VectorStore``.

Everything lives in the ``conversations``, ``conversation_messages`` and
``conversation_participants`` tables (migrations component ``"conversations"``);
a history's ``session_id``, a conversation id and a session id name the same
kind of row. See ``docs/conversations.md``.
"""

from __future__ import annotations

from haive_langgraph.errors import (
    ConversationExistsError,
    ConversationNotFoundError,
    InvalidMessageError,
    MessageTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    SessionExpiredError,
)
from haive_langgraph.memory.conversations import (
    AsyncChatHistoryFactory,
    AsyncConversationStore,
    AsyncConversationTracker,
    AsyncPostgresChatMessageHistory,
    AsyncSessionManager,
    ChatHistoryFactory,
    Conversation,
    ConversationMetadata,
    ConversationPage,
    ConversationStore,
    ConversationTracker,
    ErasureReport,
    MessagePage,
    ModelPrice,
    Permission,
    PostgresChatMessageHistory,
    Session,
    SessionManager,
    SessionPage,
    StoredMessage,
    TokenUsage,
    UsageTotals,
    async_history_factory,
    history_factory,
)
from haive_langgraph.memory.supabase import (
    AsyncSupabaseChatMessageHistory,
    SupabaseChatMessageHistory,
)
from haive_langgraph.memory.vector import (
    AsyncVectorMemory,
    ConsolidationReport,
    CrossEncoder,
    Episode,
    HashingEmbeddings,
    InvalidMemoryError,
    Memory,
    MemoryRetriever,
    MergeGroup,
    MergeRecord,
    PostgresVectorStore,
    VectorMemory,
)

__all__ = [
    "AsyncChatHistoryFactory",
    "AsyncConversationStore",
    "AsyncConversationTracker",
    "AsyncPostgresChatMessageHistory",
    "AsyncSessionManager",
    "AsyncSupabaseChatMessageHistory",
    "AsyncVectorMemory",
    "ChatHistoryFactory",
    "ConsolidationReport",
    "Conversation",
    "ConversationExistsError",
    "ConversationMetadata",
    "ConversationNotFoundError",
    "ConversationPage",
    "ConversationStore",
    "ConversationTracker",
    "CrossEncoder",
    "Episode",
    "ErasureReport",
    "HashingEmbeddings",
    "InvalidMemoryError",
    "InvalidMessageError",
    "Memory",
    "MemoryRetriever",
    "MergeGroup",
    "MergeRecord",
    "MessagePage",
    "MessageTooLargeError",
    "ModelPrice",
    "Permission",
    "PermissionDeniedError",
    "PostgresChatMessageHistory",
    "PostgresVectorStore",
    "QuotaExceededError",
    "Session",
    "SessionExpiredError",
    "SessionManager",
    "SessionPage",
    "StoredMessage",
    "SupabaseChatMessageHistory",
    "TokenUsage",
    "UsageTotals",
    "VectorMemory",
    "async_history_factory",
    "history_factory",
]
