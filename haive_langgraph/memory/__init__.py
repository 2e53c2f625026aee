"""Conversation memory: LangChain chat histories, conversations with token usage
and cost, sessions (TTL, limits, branches, merges, participants) and automatic
tracking of model calls; long-term vector memory and a LangChain ``VectorStore``.

Chat memory lives in the ``conversations``, ``conversation_messages`` and
``conversation_participants`` tables (migrations component ``"conversations"``);
a history's ``session_id``, a conversation id and a session id name the same
kind of row. See ``docs/conversations.md`` and ``docs/vector-memory.md``.

Every public name is exported here; the subpackages ``conversations`` (chat
memory) and ``vector`` (vector memory) are how the code is organised, not
separate APIs.
"""

from __future__ import annotations

# Errors are exported by haive_langgraph.errors; still importable from here.
from haive_langgraph.errors import ConversationExistsError as ConversationExistsError
from haive_langgraph.errors import ConversationNotFoundError as ConversationNotFoundError
from haive_langgraph.errors import InvalidMemoryError as InvalidMemoryError
from haive_langgraph.errors import InvalidMessageError as InvalidMessageError
from haive_langgraph.errors import MessageTooLargeError as MessageTooLargeError
from haive_langgraph.errors import PermissionDeniedError as PermissionDeniedError
from haive_langgraph.errors import QuotaExceededError as QuotaExceededError
from haive_langgraph.errors import SessionExpiredError as SessionExpiredError
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
from haive_langgraph.memory.conversations._model_merge import (
    MergeDecision,
    MergedMessage,
    SessionMergeRecord,
)

# SessionStore and AsyncSessionStore; (Async)SessionManager: their deprecated 0.1 names.
from haive_langgraph.memory.conversations._sessions import (
    AsyncSessionManager as AsyncSessionManager,
)
from haive_langgraph.memory.conversations._sessions import AsyncSessionStore, SessionStore
from haive_langgraph.memory.conversations._sessions import SessionManager as SessionManager
from haive_langgraph.memory.conversations._store import AsyncConversationStore, ConversationStore
from haive_langgraph.memory.conversations._topics import RoutedMessage, TopicRouting
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
from haive_langgraph.memory.supabase import (
    AsyncSupabaseChatMessageHistory,
    SupabaseChatMessageHistory,
)
from haive_langgraph.memory.vector._backend import MemoryBackend
from haive_langgraph.memory.vector._embeddings import HashingEmbeddings
from haive_langgraph.memory.vector._hierarchy import HierarchyReport, SummaryGroup
from haive_langgraph.memory.vector._langchain_backend import VectorStoreBackend
from haive_langgraph.memory.vector._memory import AsyncVectorMemory, VectorMemory
from haive_langgraph.memory.vector._retriever import MemoryRetriever
from haive_langgraph.memory.vector._store import PostgresVectorStore
from haive_langgraph.memory.vector._types import (
    ConsolidationReport,
    CrossEncoder,
    Episode,
    Memory,
    MergeGroup,
    MergeRecord,
)

__all__ = [
    "AsyncChatHistoryFactory",
    "AsyncConversationStore",
    "AsyncConversationTracker",
    "AsyncPostgresChatMessageHistory",
    "AsyncSessionStore",
    "AsyncSupabaseChatMessageHistory",
    "AsyncVectorMemory",
    "ChatHistoryFactory",
    "ConsolidationReport",
    "Conversation",
    "ConversationMetadata",
    "ConversationPage",
    "ConversationStore",
    "ConversationTracker",
    "CrossEncoder",
    "Episode",
    "ErasureReport",
    "HashingEmbeddings",
    "HierarchyReport",
    "Memory",
    "MemoryBackend",
    "MemoryRetriever",
    "MergeDecision",
    "MergeGroup",
    "MergeRecord",
    "MergedMessage",
    "MessagePage",
    "ModelPrice",
    "Permission",
    "PostgresChatMessageHistory",
    "PostgresVectorStore",
    "RoutedMessage",
    "Session",
    "SessionMergeRecord",
    "SessionPage",
    "SessionStore",
    "StoredMessage",
    "SummaryGroup",
    "SupabaseChatMessageHistory",
    "TokenUsage",
    "TopicRouting",
    "UsageTotals",
    "VectorMemory",
    "VectorStoreBackend",
    "async_history_factory",
    "history_factory",
]
