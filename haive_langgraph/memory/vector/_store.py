"""``PostgresVectorStore``: LangChain's ``VectorStore`` on the store's pgvector layer.

Every document method runs an operation of
:mod:`~haive_langgraph.memory.vector._document_calls` with the drivers of vector memory, on a :class:`~haive_langgraph.stores.PostgresStore`
(sync methods) or an :class:`~haive_langgraph.stores.AsyncPostgresStore`
(async methods). See ``docs/vector-memory.md``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self, TypeVar, Unpack

from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph._lifetime import AsyncClosedOnExit, ClosedOnExit
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._dsn import resolve_dsn
from haive_langgraph.db._methods import async_method, sync_method
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector import _document_calls as calls
from haive_langgraph.memory.vector._documents import FILTER_FIELDS, collection_namespace, relevance
from haive_langgraph.memory.vector._drive import (
    VectorOptions,
    adrive,
    drive,
    store_options,
)
from haive_langgraph.memory.vector._steps import Op
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

__all__ = ["PostgresVectorStore"]

T = TypeVar("T")
Metadatas = list[dict[str, Any]] | None
Conn = str | Connection[Any] | ConnectionPool[Any] | AsyncConnection[Any] | AsyncConnectionPool[Any]


def _dsn(dsn: str | None, options: dict[str, Any]) -> str:
    """``dsn`` checked, or the default server's (may start the embedded one)."""
    return resolve_dsn(dsn, config=options.get("config") or PersistenceConfig())


class PostgresVectorStore(VectorStore, ClosedOnExit, AsyncClosedOnExit):
    """LangChain ``VectorStore`` on PostgreSQL with pgvector (a replacement for ``PGVector``).

    Documents of a collection are items of the store (``docs/store.md``):
    tenants, row-level security, the codec and the store's HNSW index apply.
    Metadata filters take the store's operators (``$eq $ne $gt $gte $lt $lte
    $in $nin $exists``; the keys of a filter are AND-ed). Scores are cosine
    similarities (higher is closer); relevance scores are them clamped to [0, 1].

    Sync methods run on psycopg's ``Connection``, async ones on its
    ``AsyncConnection``: given a DSN, the store opens a pool of each kind on
    first use (the async one on the event loop of the first async call). Given
    a lent ``Connection`` or ``ConnectionPool``, the async methods run the sync
    ones in a worker thread; given an ``AsyncConnection`` or
    ``AsyncConnectionPool`` (build the store inside the running loop), the sync
    methods work from other threads than the loop's.

    Args:
        conn: A DSN, or a psycopg connection or pool (sync or async; lent
            connections in autocommit mode).
        embeddings: LangChain ``Embeddings`` (or a function ``texts -> vectors``).
        collection_name: The collection (any non-empty string; default ``"langchain"``).
        dims: Dimensions of the vectors (default: what the embedder declares).
        tenant_id, schema, config, codec: As for ``PostgresStore``.
        index_options: ``ann_index_config``, ``write_mode``,
            ``exact_search_threshold`` of the store's index.

    Raises:
        ConfigurationError: No ``dims`` (the embedder declares none), an
            unknown index option, or a connection of another kind.

    Example:
        >>> store = PostgresVectorStore(dsn, embeddings=OpenAIEmbeddings(), dims=1536)
        >>> store.setup()
        >>> store.add_documents([Document("likes tea", metadata={"topic": "drinks"})])
        >>> store.similarity_search("tea", k=4, filter={"topic": {"$in": ["drinks"]}})
    """

    def __init__(
        self,
        conn: Conn,
        *,
        embeddings: Embeddings | Callable[..., Any],
        collection_name: str = "langchain",
        dims: int | None = None,
        **options: Unpack[VectorOptions],
    ) -> None:
        owner = type(self).__name__
        self._embed, self._options = store_options(owner, embeddings, dims, FILTER_FIELDS, options)
        self.dims = self._embed.dims
        self.collection_name = collection_name
        self._namespace = collection_namespace(collection_name)
        self._conn = conn
        self._lock = threading.Lock()
        self._sync: PostgresStore | None = None
        self._async: AsyncPostgresStore | None = None
        if isinstance(conn, Connection | ConnectionPool):
            self._sync = PostgresStore(conn, **self._options)
        elif isinstance(conn, AsyncConnection | AsyncConnectionPool):
            self._async = AsyncPostgresStore(conn, **self._options)
        elif not isinstance(conn, str):
            raise ConfigurationError(
                "conn must be a DSN, a psycopg Connection, ConnectionPool, AsyncConnection "
                f"or AsyncConnectionPool, got {type(conn).__name__}"
            )

    # -- connections -------------------------------------------------------------------

    def _sync_store(self) -> PostgresStore | AsyncPostgresStore:
        if self._sync is not None:
            return self._sync
        if not isinstance(self._conn, str):
            assert self._async is not None
            return self._async  # its sync API, from threads other than its loop's
        with self._lock:
            if self._sync is None:
                self._sync = PostgresStore(self._conn, **self._options)
        return self._sync

    def _async_store(self) -> PostgresStore | AsyncPostgresStore:
        if isinstance(self._conn, str):
            with self._lock:
                if self._async is None:
                    self._async = AsyncPostgresStore(self._conn, **self._options)
        if self._async is None:
            assert self._sync is not None
            return self._sync  # a lent sync connection: its async API, in a worker thread
        if self._async.loop is not asyncio.get_running_loop():
            raise ConfigurationError(
                "this PostgresVectorStore's async pool belongs to another event loop; "
                "use one store per event loop"
            )
        return self._async

    def _run(self, op: Op[T]) -> T:
        return drive(op, self._sync_store(), self._embed)

    async def _arun(self, op: Op[T]) -> T:
        return await adrive(op, self._async_store(), self._embed)

    @property
    def embeddings(self) -> Embeddings | None:
        """The embedder given (LangChain ``Embeddings``, or the function wrapped as one)."""
        return self._embed.inner

    def setup(self) -> None:
        """Create the store's tables, pgvector and the index (idempotent).

        Raises:
            ConfigurationError: On a store of an async connection: use :meth:`asetup`.
        """
        store = self._sync_store()
        if not isinstance(store, PostgresStore):
            raise ConfigurationError("a store on an async connection is set up by await asetup()")
        store.setup()

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        store = self._async_store()
        if isinstance(store, PostgresStore):
            await asyncio.to_thread(store.setup)
        else:
            await store.setup()

    def close(self) -> None:
        """Close the sync pool this store opened (lent connections stay open); after
        async calls, use :meth:`aclose`."""
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        """Close the pools this store opened (lent connections stay open)."""
        if self._sync is not None:
            await asyncio.to_thread(self._sync.close)
        if self._async is not None:
            await self._async.aclose()

    # -- documents (see _document_calls) --------------------------------------------------

    add_texts = sync_method(calls.add_texts)
    aadd_texts = async_method(calls.add_texts)
    delete = sync_method(calls.delete)
    adelete = async_method(calls.delete)
    get_by_ids = sync_method(calls.get_by_ids)
    aget_by_ids = async_method(calls.get_by_ids)
    similarity_search_with_score = sync_method(calls.similarity_search_with_score)
    asimilarity_search_with_score = async_method(calls.similarity_search_with_score)
    similarity_search = sync_method(calls.similarity_search)
    asimilarity_search = async_method(calls.similarity_search)
    similarity_search_by_vector = sync_method(calls.similarity_search_by_vector)
    asimilarity_search_by_vector = async_method(calls.similarity_search_by_vector)
    max_marginal_relevance_search = sync_method(calls.max_marginal_relevance_search)
    amax_marginal_relevance_search = async_method(calls.max_marginal_relevance_search)
    max_marginal_relevance_search_by_vector = sync_method(
        calls.max_marginal_relevance_search_by_vector
    )
    amax_marginal_relevance_search_by_vector = async_method(
        calls.max_marginal_relevance_search_by_vector
    )

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return relevance

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: Metadatas = None, **options: Any
    ) -> Self:
        """A store on ``conn`` (None: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``, then the
        embedded server), set up, holding these texts. Close it when done.

        Args:
            texts: The texts.
            embedding: The embedder.
            metadatas: One dict per text.
            options: ``ids`` (one per text), ``conn`` (a DSN, connection or
                pool), and the constructor's options (``collection_name``,
                ``dims`` ...).
        """
        ids, conn = options.pop("ids", None), options.pop("conn", None)
        store = cls(_dsn(None, options) if conn is None else conn, embeddings=embedding, **options)
        store.setup()
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: Metadatas = None, **options: Any
    ) -> Self:
        """Async :meth:`from_texts` (close the store with :meth:`aclose`)."""
        ids, conn = options.pop("ids", None), options.pop("conn", None)
        if conn is None:
            conn = await asyncio.to_thread(_dsn, None, options)
        store = cls(conn, embeddings=embedding, **options)
        await store.asetup()
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    @contextmanager
    def from_conn_string(cls, dsn: str | None = None, **options: Any) -> Iterator[Self]:
        """A store on ``dsn`` for the sync methods, closed afterwards.

        Args:
            dsn: A PostgreSQL DSN. ``None``: ``HAIVE_DATABASE_URL``, then
                ``DATABASE_URL``, then the embedded server.
            **options: Constructor arguments (``embeddings=`` and the others).

        Raises:
            ConfigurationError: ``dsn`` (or the variable used) is not a valid
                DSN; the message names it, never its text.
        """
        store = cls(_dsn(dsn, options), **options)
        try:
            yield store
        finally:
            store.close()

    @classmethod
    @asynccontextmanager
    async def afrom_conn_string(cls, dsn: str | None = None, **options: Any) -> AsyncIterator[Self]:
        """:meth:`from_conn_string` for the async methods (the pool is opened on
        entry, so an unreachable server fails there), closed afterwards (``aclose``)."""
        store = cls(await asyncio.to_thread(_dsn, dsn, options), **options)
        try:
            async_store = store._async_store()
            if isinstance(async_store, AsyncPostgresStore):
                await async_store._aopen()
            yield store
        finally:
            await store.aclose()
