"""Semantic and episodic long-term memory on the store's pgvector layer.

:class:`VectorMemory` (sync) and :class:`AsyncVectorMemory` (asyncio) run the
same operations (:mod:`~haive_langgraph.memory.vector._calls`) on a
:class:`~haive_langgraph.stores.PostgresStore` /
:class:`~haive_langgraph.stores.AsyncPostgresStore` of their own. See
``docs/vector-memory.md``.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph._lifetime import AsyncClosedOnExit, ClosedOnExit
from haive_langgraph.db._conn_string import AsyncFromConnString, FromConnString
from haive_langgraph.db._methods import async_method, deprecated_asetup, sync_method
from haive_langgraph.memory.conversations._store import AsyncConversationStore, ConversationStore
from haive_langgraph.memory.vector import _calls as calls
from haive_langgraph.memory.vector._base import MemoryBase
from haive_langgraph.memory.vector._langchain_backend import VectorStoreBackend
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

__all__ = ["AsyncVectorMemory", "VectorMemory"]


class VectorMemory(
    MemoryBase[Connection[Any] | ConnectionPool[Any], ConversationStore],
    FromConnString,
    ClosedOnExit,
):
    """Long-term memory: semantic search, episodic recall, dedupe and consolidation.

    Memories are items of a :class:`~haive_langgraph.stores.PostgresStore`
    (``(namespace, user_id)``, the text embedded with pgvector); the same text
    is stored once per user; merges supersede memories (``valid_to``,
    ``superseded_by``) instead of deleting them, and leave an audit record.

    Args:
        conn: A DSN, ``None`` (the default server: ``HAIVE_DATABASE_URL``,
            ``DATABASE_URL``, then the embedded one), a psycopg ``Connection``
            (autocommit, any row factory) or a ``ConnectionPool``; or a LangChain
            ``VectorStore`` (or a :class:`VectorStoreBackend` around one): the
            memories are then its documents (see ``docs/vector-memory.md``,
            "Any vector store").
        embeddings: LangChain ``Embeddings`` or a function ``texts -> vectors``.
            Default: :class:`HashingEmbeddings` (offline, lexical).
        dims: Dimensions of the vectors (default: what the embedder declares,
            384 for the default embedder).
        user_id: Default user of every call (else pass ``user_id=``).
        namespace: Root label of the store namespaces (default ``"memories"``).
        cross_encoder: Reranker used by ``search(rerank=True)``.
        decay_half_life: When set, search scores decay with idle time (see
            ``docs/vector-memory.md``).
        track_access: Count accesses (default true): searches and recalls
            update each returned memory's ``access_count`` and ``last_accessed_at``.
        clock: Returns "now" (timezone-aware); for tests and replays.
        conversations: The :class:`ConversationStore` :meth:`store_conversation`
            reads conversations from (default: the conversation tables of the
            memory's own database, schema and tenant, with its codec).
        tenant_id, schema, config, codec: As for ``PostgresStore``.
        index_options: Store index settings: ``ann_index_config``,
            ``write_mode`` (``"deferred"`` for bulk loads, then
            ``memory.store.index_pending()``), ``exact_search_threshold``
            (see ``docs/store.md``).

    Example:
        >>> with VectorMemory.from_conn_string(user_id="u1") as memory:
        ...     memory.setup()
        ...     memory.add_memories(["likes green tea", "lives in Lyon"])
        ...     memory.search("what does the user drink?", top_k=3)
    """

    _store_type = PostgresStore
    _store: PostgresStore | VectorStoreBackend

    def setup(self) -> None:
        """Create the store's tables, pgvector and the index (idempotent)."""
        self._store.setup()

    def close(self) -> None:
        """Close the pool opened for a DSN (a lent connection or pool stays open)."""
        self._store.close()

    add_memories = sync_method(calls.add_memories)
    store_conversation = sync_method(calls.store_conversation)
    search = sync_method(calls.search)
    get_episodic_memories = sync_method(calls.get_episodic_memories)
    consolidate_memories = sync_method(calls.consolidate_memories)
    consolidation_history = sync_method(calls.consolidation_history)
    consolidate_hierarchy = sync_method(calls.consolidate_hierarchy)
    get_memory = sync_method(calls.get_memory)
    list_memories = sync_method(calls.list_memories)
    forget = sync_method(calls.forget)
    forget_user = sync_method(calls.forget_user)


class AsyncVectorMemory(
    MemoryBase[
        AsyncConnection[Any] | AsyncConnectionPool[Any],
        AsyncConversationStore | ConversationStore,
    ],
    AsyncFromConnString,
    AsyncClosedOnExit,
):
    """:class:`VectorMemory` for asyncio, on an ``AsyncPostgresStore``.

    Same arguments, storage and behaviour; methods carry an ``a`` prefix
    (``aadd_memories``, ``asearch`` ...). Construct it inside a running loop.
    ``conversations`` may be an :class:`AsyncConversationStore` or a
    :class:`ConversationStore` (read in a worker thread).
    """

    _store_type = AsyncPostgresStore
    _store: AsyncPostgresStore | VectorStoreBackend

    async def _aopen(self) -> None:
        await self._store._aopen()

    async def setup(self) -> None:
        """Create the store's tables, pgvector and the index (idempotent)."""
        if isinstance(self._store, VectorStoreBackend):
            return self._store.setup()  # nothing to create in a lent vector store
        await self._store.setup()

    asetup = deprecated_asetup

    async def aclose(self) -> None:
        """Close the pool opened for a DSN (a lent connection or pool stays open)."""
        await self._store.aclose()

    aadd_memories = async_method(calls.add_memories)
    astore_conversation = async_method(calls.store_conversation)
    asearch = async_method(calls.search)
    aget_episodic_memories = async_method(calls.get_episodic_memories)
    aconsolidate_memories = async_method(calls.consolidate_memories)
    aconsolidation_history = async_method(calls.consolidation_history)
    aconsolidate_hierarchy = async_method(calls.consolidate_hierarchy)
    aget_memory = async_method(calls.get_memory)
    alist_memories = async_method(calls.list_memories)
    aforget = async_method(calls.forget)
    aforget_user = async_method(calls.forget_user)
