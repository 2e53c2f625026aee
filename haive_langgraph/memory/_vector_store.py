"""``PostgresVectorStore``: LangChain's ``VectorStore`` on the store's pgvector layer.

Every method runs an operation of :mod:`haive_langgraph.memory._vector_docs`
with the drivers of vector memory, on a :class:`~haive_langgraph.stores.PostgresStore`
(sync methods) or an :class:`~haive_langgraph.stores.AsyncPostgresStore`
(async methods). See ``docs/vector-memory.md``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.codec import Codec
from haive_langgraph.db import PersistenceConfig, resolve_dsn
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import _vector_docs as D
from haive_langgraph.memory import _vector_ops as V
from haive_langgraph.memory._vector_drive import adrive, drive, store_index
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

__all__ = ["PostgresVectorStore"]

Conn = str | Connection[Any] | ConnectionPool[Any] | AsyncConnection[Any] | AsyncConnectionPool[Any]


class PostgresVectorStore(VectorStore):
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
        tenant_id: str | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        codec: Codec | None = None,
        index_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._embed, index = store_index(embeddings, dims, index_options)
        self.dims = self._embed.dims
        self.collection_name = collection_name
        self._namespace = D.collection_namespace(collection_name)
        self._options: dict[str, Any] = {
            "index": index,
            "codec": codec,
            "filter_fields": D.FILTER_FIELDS,
            "tenant_id": tenant_id,
            "schema": schema,
            "config": config,
        }
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

    def _run(self, op: V.Op_) -> Any:
        return drive(op, self._sync_store(), self._embed)

    async def _arun(self, op: V.Op_) -> Any:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- writes ---------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts; an id already stored is replaced.

        Args:
            texts: The texts.
            metadatas: One dict per text (JSON values).
            ids: One id per text (``None`` entries, or no list: UUIDs).

        Returns:
            The ids, in order.

        Raises:
            InvalidMemoryError: A bad text, metadata or id; nothing of that
                batch of 500 is written.
        """
        D.check_options(kwargs, "add_texts")
        return self._run(D.add_op(self._namespace, D.new_rows(texts, metadatas, ids)))  # type: ignore[no-any-return]

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`."""
        D.check_options(kwargs, "aadd_texts")
        return await self._arun(D.add_op(self._namespace, D.new_rows(texts, metadatas, ids)))  # type: ignore[no-any-return]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (missing ids are no error); ``None`` empties the collection."""
        D.check_options(kwargs, "delete")
        keys = None if ids is None else D.check_ids(ids)
        return self._run(D.delete_op(self._namespace, keys))  # type: ignore[no-any-return]

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Async :meth:`delete`."""
        D.check_options(kwargs, "adelete")
        keys = None if ids is None else D.check_ids(ids)
        return await self._arun(D.delete_op(self._namespace, keys))  # type: ignore[no-any-return]

    # -- reads ------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents of these ids (missing ones are left out), in the order asked."""
        return self._run(D.get_op(self._namespace, D.check_ids(ids)))  # type: ignore[no-any-return]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Async :meth:`get_by_ids`."""
        return await self._arun(D.get_op(self._namespace, D.check_ids(ids)))  # type: ignore[no-any-return]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents closest to ``query`` with their cosine similarity, best first.

        Raises:
            InvalidFilterError: An operator the store does not have.
        """
        D.check_options(kwargs, "similarity_search_with_score")
        return self._run(D.search_op(self._namespace, query, None, k, filter))  # type: ignore[no-any-return]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`."""
        D.check_options(kwargs, "asimilarity_search_with_score")
        return await self._arun(D.search_op(self._namespace, query, None, k, filter))  # type: ignore[no-any-return]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents closest to ``query``, best first."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`similarity_search`."""
        found = await self.asimilarity_search_with_score(query, k, filter, **kwargs)
        return [d for d, _ in found]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents closest to a vector, best first."""
        D.check_options(kwargs, "similarity_search_by_vector")
        found = self._run(D.search_op(self._namespace, None, embedding, k, filter))
        return [d for d, _ in found]

    async def asimilarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`similarity_search_by_vector`."""
        D.check_options(kwargs, "asimilarity_search_by_vector")
        found = await self._arun(D.search_op(self._namespace, None, embedding, k, filter))
        return [d for d, _ in found]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` of the ``fetch_k`` documents closest to ``query``, picked by maximal
        marginal relevance (``lambda_mult`` 1: relevance only, 0: diversity only)."""
        D.check_options(kwargs, "max_marginal_relevance_search")
        op = D.search_op(self._namespace, query, None, k, filter, (fetch_k, lambda_mult))
        return [d for d, _ in self._run(op)]

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search`."""
        D.check_options(kwargs, "amax_marginal_relevance_search")
        op = D.search_op(self._namespace, query, None, k, filter, (fetch_k, lambda_mult))
        return [d for d, _ in await self._arun(op)]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` around a vector."""
        D.check_options(kwargs, "max_marginal_relevance_search_by_vector")
        op = D.search_op(self._namespace, None, embedding, k, filter, (fetch_k, lambda_mult))
        return [d for d, _ in self._run(op)]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search_by_vector`."""
        D.check_options(kwargs, "amax_marginal_relevance_search_by_vector")
        op = D.search_op(self._namespace, None, embedding, k, filter, (fetch_k, lambda_mult))
        return [d for d, _ in await self._arun(op)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return D.relevance

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        conn: Conn | None = None,
        **options: Any,
    ) -> Self:
        """A store on ``conn`` (None: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``, then the
        embedded server), set up, holding these texts. Close it when done.

        Args:
            options: Constructor options (``collection_name``, ``dims`` ...).
        """
        if conn is None:
            conn = resolve_dsn(None, config=options.get("config") or PersistenceConfig())
        store = cls(conn, embeddings=embedding, **options)
        store.setup()
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        conn: Conn | None = None,
        **options: Any,
    ) -> Self:
        """Async :meth:`from_texts` (close the store with :meth:`aclose`)."""
        if conn is None:
            config = options.get("config") or PersistenceConfig()
            conn = await asyncio.to_thread(resolve_dsn, None, config=config)
        store = cls(conn, embeddings=embedding, **options)
        await store.asetup()
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store
