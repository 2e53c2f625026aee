"""Semantic and episodic long-term memory on the store's pgvector layer.

:class:`VectorMemory` (sync) and :class:`AsyncVectorMemory` (asyncio) run the
same operations (:mod:`haive_langgraph.memory._vector_ops`) on a
:class:`~haive_langgraph.stores.PostgresStore` /
:class:`~haive_langgraph.stores.AsyncPostgresStore` of their own. See
``docs/vector-memory.md``.
"""

from __future__ import annotations

import asyncio
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import psycopg
from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore
from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.codec import Codec
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.db._conn_string import AsyncFromConnString, FromConnString
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import _vector_ops as V
from haive_langgraph.memory._history_base import make_ops
from haive_langgraph.memory._history_ops import Call
from haive_langgraph.memory._history_types import Conversation, StoredMessage
from haive_langgraph.memory._vector_drive import adrive, drive, store_index
from haive_langgraph.memory._vector_retriever import LEGACY as LEGACY_ARGUMENTS
from haive_langgraph.memory._vector_retriever import (
    MemoryRetriever,
    SearchType,
    normalise,
    retriever_query,
)
from haive_langgraph.memory._vector_types import (
    ConsolidationReport,
    CrossEncoder,
    Episode,
    Memory,
    MergeRecord,
)
from haive_langgraph.memory.conversations import (
    AsyncConversationStore,
    ConversationStore,
    _StoreCalls,
)
from haive_langgraph.memory.embeddings import (
    CheckedEmbeddings,
    HashingEmbeddings,
)
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore

__all__ = ["AsyncVectorMemory", "MemoryRetriever", "VectorMemory"]

ConversationLike = Conversation | str | Sequence[StoredMessage] | Sequence[Any]
DEFAULT_DIMS = 384


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


def _lines(messages: Sequence[Any]) -> list[V.Line]:
    lines = []
    for n, m in enumerate(messages):
        if isinstance(m, StoredMessage):
            lines.append(V.Line(m.message_id, m.seq, V.message_text(m.message), m.created_at))
        else:
            mid = getattr(m, "id", None) or str(n)
            lines.append(V.Line(str(mid), n, V.message_text(m), None))
    return lines


class _MemoryBase:
    """Configuration and call building shared by both classes (no I/O)."""

    _store: BaseStore
    _settings: V.Settings
    _embeddings: CheckedEmbeddings
    _conversations: Any
    user_id: str | None
    dims: int

    def _configure(
        self,
        *,
        embeddings: Embeddings | Callable[..., Any] | None,
        dims: int | None,
        user_id: str | None,
        namespace: str,
        cross_encoder: CrossEncoder | None,
        decay_half_life: timedelta | None,
        track_access: bool,
        clock: Callable[[], datetime] | None,
        conversations: Any,
        index_options: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Validate the options; returns the store's ``index=``."""
        inner = embeddings if embeddings is not None else HashingEmbeddings(dims or DEFAULT_DIMS)
        checked, index = store_index(inner, dims, index_options)
        if user_id is not None:
            V.user_label(user_id)
        if cross_encoder is not None and not callable(getattr(cross_encoder, "score", None)):
            raise ConfigurationError(
                f"cross_encoder must have a score(query, texts) method, got {cross_encoder!r}"
            )
        self.dims = checked.dims
        self.user_id = user_id
        self._embeddings = checked
        self._conversations = conversations
        self._settings = V.Settings(
            spaces=V.Spaces(V.check_root(namespace)),
            clock=clock or V.utcnow,
            cross_encoder=cross_encoder,
            decay_half_life=V.check_duration(decay_half_life, "decay_half_life"),
            track_access=bool(track_access),
        )
        return index

    @property
    def store(self) -> BaseStore:
        """The store the memories live in (its tenant is this memory's tenant)."""
        return self._store

    @property
    def tenant_id(self) -> str:
        return str(getattr(self._store, "tenant_id", ""))

    def for_tenant(self, tenant_id: str) -> Self:
        """This memory bound to a tenant (sharing connections); tenants never see each other."""
        bound = copy.copy(self)
        bound._store = self._store.for_tenant(tenant_id)  # type: ignore[attr-defined]
        return bound

    def for_user(self, user_id: str) -> Self:
        """This memory with ``user_id`` as the default user of every call."""
        V.user_label(user_id)
        bound = copy.copy(self)
        bound.user_id = user_id
        return bound

    def _user(self, user_id: str | None) -> str:
        user = user_id if user_id is not None else self.user_id
        if user is None:
            raise ConfigurationError(
                "no user: pass user_id=..., or bind one with VectorMemory(..., user_id=...) "
                "or memory.for_user(user_id)"
            )
        V.user_label(user)
        return user

    # -- operations (generators) ---------------------------------------------------

    def _add_call(
        self,
        texts: Sequence[str] | str,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None,
        user_id: str | None,
        importance: float,
        created_at: datetime | None,
        conversation_id: str | None,
        episode_id: str | None,
    ) -> V.Op_:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not texts:
            raise V.InvalidMemoryError("texts must be a non-empty list of strings")
        texts = [V.check_text(t) for t in texts]
        if metadata is None or isinstance(metadata, Mapping):
            metas = [V.check_metadata(metadata)] * len(texts)
        else:
            if len(metadata) != len(texts):
                raise V.InvalidMemoryError(
                    f"metadata has {len(metadata)} entries for {len(texts)} texts"
                )
            metas = [V.check_metadata(m, f"metadata[{n}]") for n, m in enumerate(metadata)]
        imp = V.check_unit(importance, "importance")
        if created_at is not None:
            V.iso(created_at)
        user = self._user(user_id)
        now = self._settings.now()
        news = [
            V.NewMemory(
                text=t,
                metadata=m,
                importance=imp,
                created_at=created_at or now,
                conversation_id=conversation_id,
                episode_id=episode_id or conversation_id,
            )
            for t, m in zip(texts, metas, strict=True)
        ]
        return V.add_op(self._settings, user, news)

    def _conversation_call(
        self,
        conversation: ConversationLike,
        metadata: Mapping[str, Any] | None,
        chunk_size: int,
        chunk_overlap: int,
        importance: float,
        user_id: str | None,
        conversation_id: str | None,
    ) -> V.Op_:
        meta = V.check_metadata(metadata)
        imp = V.check_unit(importance, "importance")
        settings = self._settings

        def op() -> V.Op_:
            conv: Any = conversation
            if isinstance(conv, str):
                conv = yield V.LoadConversation(conv)
            if isinstance(conv, Conversation):
                # Always the stored messages: the object is a snapshot (the one
                # create_conversation returned has none of those added since).
                conv = yield V.LoadConversation(conv.conversation_id)
                user = self._user(user_id if user_id is not None else conv.user_id)
                cid: str | None = conv.conversation_id
                messages: Sequence[Any] = conv.messages or []
            elif isinstance(conv, Sequence) and not isinstance(conv, str | bytes):
                user = self._user(user_id)
                cid = conversation_id
                messages = conv
            else:
                raise ConfigurationError(
                    "conversation must be a Conversation, a conversation id or a list of "
                    f"messages, got {type(conv).__name__}"
                )
            news = V.conversation_news(
                cid, _lines(messages), meta, chunk_size, chunk_overlap, imp, settings.now()
            )
            if not news:
                return []
            return (yield from V.add_op(settings, user, news))

        return op()

    def _search_call(self, query: str, top_k: int, kw: Mapping[str, Any]) -> V.Op_:
        known = {
            "filters",
            "rerank",
            "user_id",
            "as_of",
            "include_superseded",
            "mmr_lambda",
            "fetch_k",
            "decay_half_life",
        }
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown search arguments {unknown}; known: top_k, {', '.join(sorted(known))}"
            )
        as_of = kw.get("as_of")
        if as_of is not None:
            V.iso(as_of)
        return V.search_op(
            self._settings,
            self._user(kw.get("user_id")),
            query,
            top_k,
            kw.get("filters"),
            kw.get("rerank", False),
            as_of,
            bool(kw.get("include_superseded", False)),
            kw.get("mmr_lambda", 0.5),
            kw.get("fetch_k"),
            kw.get("decay_half_life"),
        )

    def _consolidate_call(
        self,
        time_window: timedelta | None,
        similarity_threshold: float,
        strategy: V.Strategy,
        preserve_important: bool | float | None,
        dry_run: bool,
        user_id: str | None,
    ) -> V.Op_:
        users = None
        if user_id is not None or self.user_id is not None:
            users = [self._user(user_id)]
        # Arguments are checked here, before anything is read.
        V.check_unit(similarity_threshold, "similarity_threshold", low_open=True)
        V.strategy_name(strategy)
        V.check_duration(time_window, "time_window")
        return V.consolidate_op(
            self._settings,
            users,
            time_window,
            similarity_threshold,
            strategy,
            preserve_important,
            bool(dry_run),
        )

    def _ids(self, memory_ids: Sequence[str] | str) -> list[str]:
        if isinstance(memory_ids, str):
            memory_ids = [memory_ids]
        if not all(isinstance(i, str) and i for i in memory_ids):
            raise ConfigurationError(f"memory ids must be non-empty strings, got {memory_ids!r}")
        return list(memory_ids)

    def as_retriever(
        self,
        *,
        search_type: SearchType = "similarity",
        search_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> MemoryRetriever:
        """A LangChain retriever over this memory (sync and async), as
        ``VectorStore.as_retriever`` builds one.

        Args:
            search_type: ``"similarity"`` (default), ``"mmr"`` (diversity:
                ``fetch_k`` candidates, ``lambda_mult``) or
                ``"similarity_score_threshold"`` (only memories whose score is at
                least ``search_kwargs["score_threshold"]``).
            search_kwargs: ``k`` (default 5), ``filter`` (as :meth:`search`'s
                ``filters``), ``fetch_k``, ``lambda_mult``, ``score_threshold``,
                and the memory's ``rerank``, ``user_id``, ``as_of``,
                ``include_superseded``, ``decay_half_life``. Each may also be
                given per call: ``retriever.invoke(query, k=1)``.
            **kwargs: ``tags`` and ``metadata`` of the retriever. The search
                arguments given here directly (``top_k=4, filters=...``) are
                deprecated: they work, with a ``DeprecationWarning``.

        Returns:
            A ``BaseRetriever`` whose documents carry the memory's text and,
            in ``metadata``, its id, score, similarity, timestamps, links and
            the memory's own metadata.

        Raises:
            ConfigurationError: An unknown argument or search type, or a
                ``"similarity_score_threshold"`` search without its threshold.
        """
        legacy = {k: kwargs.pop(k) for k in list(kwargs) if k in LEGACY_ARGUMENTS}
        if legacy:
            warnings.warn(
                f"as_retriever({', '.join(f'{k}=...' for k in legacy)}) is deprecated: pass "
                "search_kwargs={...} as LangChain's as_retriever takes them (k for top_k, "
                "filter for filters)",
                DeprecationWarning,
                stacklevel=2,
            )
            if "top_k" in legacy:
                legacy["k"] = legacy.pop("top_k")
        unknown = sorted(set(kwargs) - {"tags", "metadata"})
        if unknown:
            raise ConfigurationError(
                f"unknown as_retriever arguments {unknown}: search arguments go in "
                "search_kwargs={...} (k, filter, fetch_k, lambda_mult, score_threshold, ...)"
            )
        merged = normalise({**legacy, **(search_kwargs or {})})
        retriever_query(search_type, merged)  # errors raised here, not wrapped by pydantic
        return MemoryRetriever(memory=self, search_type=search_type, search_kwargs=merged, **kwargs)

    # -- drivers -----------------------------------------------------------------------

    def _drive(self, gen: V.Op_) -> Any:
        """Run an operation with the sync API of the store (from any thread but an
        async store's own loop thread)."""
        return drive(gen, self._store, self._embeddings, self._other_sync)

    def _other_sync(self, step: Any) -> Any:
        if isinstance(step, V.Rescore):
            return list(step.encoder.score(step.query, step.texts))
        return self._load_sync(step.conversation_id)

    def _load_sync(self, conversation_id: str) -> Conversation:
        conv = self._conversations
        if conv is None:
            call, scope = self._own_conversation_read(conversation_id)
            store: Any = self._store
            with _conversation_tables(store):
                return store._source.run(call.op, read=True, scope=scope)  # type: ignore[no-any-return]
        if isinstance(conv, AsyncConversationStore):
            raise ConfigurationError(
                "an AsyncConversationStore is read by the async memory only; "
                "use astore_conversation, or pass the Conversation itself"
            )
        return conv.get_conversation(conversation_id)  # type: ignore[no-any-return]

    async def _adrive(self, gen: V.Op_) -> Any:
        return await adrive(gen, self._store, self._embeddings, self._other_async)

    async def _other_async(self, step: Any) -> Any:
        if isinstance(step, V.Rescore):
            ascore = getattr(step.encoder, "ascore", None)
            if ascore is not None:
                return list(await ascore(step.query, step.texts))
            return list(await asyncio.to_thread(step.encoder.score, step.query, step.texts))
        conv = self._conversations
        if conv is None:
            call, scope = self._own_conversation_read(step.conversation_id)
            store: Any = self._store
            with _conversation_tables(store):
                return await store._source.run(call.op, read=True, scope=scope)
        if isinstance(conv, AsyncConversationStore):
            return await conv.aget_conversation(step.conversation_id)
        return await asyncio.to_thread(conv.get_conversation, step.conversation_id)

    def _own_conversation_read(self, conversation_id: str) -> tuple[Call[Conversation], Any]:
        """Reading a conversation with its messages from the memory's own database,
        schema and tenant, with its codec (no ``conversations=`` store given)."""
        store: Any = self._store
        _, ops = make_ops(
            config=store.config,
            schema=store.schema,
            tenant_id=store.tenant_id,
            codec=store.codec,
            serde=None,
        )
        return _StoreCalls(ops).get_conversation(conversation_id, True), ops.scope()

    def _search_sync(self, query: str, top_k: int, kw: Mapping[str, Any]) -> list[Memory]:
        return self._drive(self._search_call(query, top_k, kw))  # type: ignore[no-any-return]

    async def _search_async(self, query: str, top_k: int, kw: Mapping[str, Any]) -> list[Memory]:
        return await self._adrive(self._search_call(query, top_k, kw))  # type: ignore[no-any-return]


class VectorMemory(_MemoryBase, FromConnString):
    """Long-term memory: semantic search, episodic recall, dedupe and consolidation.

    Memories are items of a :class:`~haive_langgraph.stores.PostgresStore`
    (``(namespace, user_id)``, the text embedded with pgvector); the same text
    is stored once per user; merges supersede memories (``valid_to``,
    ``superseded_by``) instead of deleting them, and leave an audit record.

    Args:
        conn: A DSN, ``None`` (the default server: ``HAIVE_DATABASE_URL``,
            ``DATABASE_URL``, then the embedded one), a psycopg ``Connection``
            (autocommit, any row factory) or a ``ConnectionPool``.
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

    _store: PostgresStore

    def __init__(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any] | None = None,
        *,
        embeddings: Embeddings | Callable[..., Any] | None = None,
        dims: int | None = None,
        user_id: str | None = None,
        namespace: str = "memories",
        cross_encoder: CrossEncoder | None = None,
        decay_half_life: timedelta | None = None,
        track_access: bool = True,
        clock: Callable[[], datetime] | None = None,
        conversations: ConversationStore | None = None,
        tenant_id: str | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        codec: Codec | None = None,
        index_options: Mapping[str, Any] | None = None,
    ) -> None:
        index = self._configure(
            embeddings=embeddings,
            dims=dims,
            user_id=user_id,
            namespace=namespace,
            cross_encoder=cross_encoder,
            decay_half_life=decay_half_life,
            track_access=track_access,
            clock=clock,
            conversations=conversations,
            index_options=index_options,
        )
        self._store = PostgresStore(
            conn,
            index=index,
            codec=codec,
            filter_fields=V.FILTER_FIELDS,
            tenant_id=tenant_id,
            schema=schema,
            config=config,
        )

    def setup(self) -> None:
        """Create the store's tables, pgvector and the index (idempotent)."""
        self._store.setup()

    def close(self) -> None:
        """Close the pool opened for a DSN (a lent connection or pool stays open)."""
        self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add_memories(
        self,
        texts: Sequence[str] | str,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        *,
        user_id: str | None = None,
        importance: float = 0.5,
        created_at: datetime | None = None,
        conversation_id: str | None = None,
        episode_id: str | None = None,
    ) -> list[str]:
        """Remember texts (a text the user already has is not stored again).

        Args:
            texts: The texts (or one text).
            metadata: One dict for all texts, or one per text.
            user_id: Whose memories (default: the bound user).
            importance: 0..1 (slower decay; kept out of consolidation at 0.8+).
            created_at: When it happened (default: now).
            conversation_id: Link to a conversation.
            episode_id: Episode for recall grouping (default: the conversation).

        Returns:
            The id of each text, in order (the existing id for a duplicate).

        Raises:
            InvalidMemoryError: An empty text or bad metadata; nothing is written.
            ConfigurationError: The embedder's vectors do not have ``dims`` dimensions.
        """
        return self._drive(  # type: ignore[no-any-return]
            self._add_call(
                texts, metadata, user_id, importance, created_at, conversation_id, episode_id
            )
        )

    def store_conversation(
        self,
        conversation: ConversationLike,
        metadata: Mapping[str, Any] | None = None,
        chunk_size: int = 1000,
        chunk_overlap: int = 200,
        importance: float = 0.5,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
    ) -> list[str]:
        """Remember a conversation as overlapping chunks linked to its messages.

        Args:
            conversation: A :class:`Conversation` or a conversation id (its
                messages are read from the database at this call, never taken
                from the object, which may predate messages added since), or a
                list of messages (``StoredMessage`` or LangChain messages).
            metadata: Stored with every chunk.
            chunk_size: Most characters per chunk (``role: text`` lines).
            chunk_overlap: Characters shared by neighbouring chunks.
            importance: Importance of the chunks.
            user_id: Whose memories (default: the conversation's user, then the bound user).
            conversation_id: For a list of messages, the conversation to link.

        Returns:
            The chunks' memory ids, in order. Each chunk keeps the conversation
            id, the ids and positions of its messages; its ``created_at`` is its
            last message's.
        """
        return self._drive(  # type: ignore[no-any-return]
            self._conversation_call(
                conversation,
                metadata,
                chunk_size,
                chunk_overlap,
                importance,
                user_id,
                conversation_id,
            )
        )

    def search(
        self,
        query: str,
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        rerank: V.Rerank = False,
        *,
        user_id: str | None = None,
        as_of: datetime | None = None,
        include_superseded: bool = False,
        mmr_lambda: float = 0.5,
        fetch_k: int | None = None,
        decay_half_life: timedelta | None = None,
    ) -> list[Memory]:
        """Memories closest to ``query``, best first.

        Args:
            query: What to look for.
            top_k: How many memories.
            filters: Store filter operators on metadata keys (``{"topic": "tea"}``)
                and on the memory's fields (``{"importance": {"$gte": 0.5}}``).
            rerank: ``"mmr"`` (diversity), a :class:`CrossEncoder`, or ``True``
                (the memory's cross-encoder, else MMR).
            user_id: Whose memories.
            as_of: Show what was valid at that time (superseded memories included).
            include_superseded: Return superseded memories too.
            mmr_lambda: MMR trade-off: 1 relevance only, 0 diversity only.
            fetch_k: Candidates fetched for reranking or decay (default max(4 top_k, 20)).
            decay_half_life: Decay scores by idle time for this call.

        Raises:
            InvalidMemoryError: An empty query.
            InvalidFilterError: An unknown operator or bad filter.
        """
        return self._drive(  # type: ignore[no-any-return]
            self._search_call(
                query,
                top_k,
                {
                    "filters": filters,
                    "rerank": rerank,
                    "user_id": user_id,
                    "as_of": as_of,
                    "include_superseded": include_superseded,
                    "mmr_lambda": mmr_lambda,
                    "fetch_k": fetch_k,
                    "decay_half_life": decay_half_life,
                },
            )
        )

    def get_episodic_memories(
        self,
        user_id: str | None,
        context_query: str,
        temporal_weight: float = 0.3,
        max_episodes: int = 5,
        *,
        half_life: timedelta = timedelta(days=7),
        per_episode: int = 5,
        candidates: int = 50,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Episode]:
        """Recall episodes: memories scored ``(1 - w) * similarity + w * recency``,
        grouped by episode (conversation), best episode first.

        ``recency = 0.5 ** (age / half_life)`` with ``age`` the time since the
        memory's ``created_at``.

        Args:
            user_id: Whose memories (None: the bound user).
            context_query: The situation to recall memories for.
            temporal_weight: ``w`` in [0, 1].
            max_episodes: Most episodes returned.
            half_life: Age at which recency is 0.5.
            per_episode: Most memories per episode.
            candidates: Memories fetched by similarity before scoring.
            filters: As for :meth:`search`.
        """
        return self._drive(  # type: ignore[no-any-return]
            V.episodic_op(
                self._settings,
                self._user(user_id),
                context_query,
                temporal_weight,
                max_episodes,
                half_life,
                per_episode,
                candidates,
                filters,
            )
        )

    def consolidate_memories(
        self,
        time_window: timedelta | None = None,
        similarity_threshold: float = 0.9,
        strategy: V.Strategy = "merge",
        preserve_important: bool | float = True,
        dry_run: bool = False,
        *,
        user_id: str | None = None,
    ) -> ConsolidationReport:
        """Merge near-duplicate memories of each user into consolidated memories.

        The originals are kept, marked superseded (``valid_to``,
        ``superseded_by``); each merge leaves an audit record
        (:meth:`consolidation_history`). Never across users or tenants.

        Args:
            time_window: Only memories created within this time of now (None: all).
            similarity_threshold: Cosine similarity to a group's leader, in (0, 1].
            strategy: ``"merge"`` (distinct sentences of all), ``"latest"``,
                ``"longest"``, or a function ``memories -> text``.
            preserve_important: Leave memories of importance >= 0.8 (``True``)
                or >= the number given alone; ``False`` merges all.
            dry_run: Plan only; nothing is written.
            user_id: One user (default: the bound user, else every user of the tenant).

        Raises:
            ConfigurationError: A threshold outside (0, 1] or an unknown strategy.
        """
        return self._drive(  # type: ignore[no-any-return]
            self._consolidate_call(
                time_window, similarity_threshold, strategy, preserve_important, dry_run, user_id
            )
        )

    def consolidation_history(
        self, user_id: str | None = None, *, memory_id: str | None = None
    ) -> list[MergeRecord]:
        """Audit records of applied merges, oldest first (those touching ``memory_id``)."""
        return self._drive(V.history_op(self._settings, self._user(user_id), memory_id))  # type: ignore[no-any-return]

    def get_memory(self, memory_id: str, *, user_id: str | None = None) -> Memory | None:
        """One memory by id (current or superseded), or ``None``."""
        return self._drive(V.get_op(self._settings, self._user(user_id), self._ids(memory_id)))[0]  # type: ignore[no-any-return]

    def list_memories(
        self, *, user_id: str | None = None, include_superseded: bool = False
    ) -> list[Memory]:
        """Every memory of a user, oldest first."""
        return self._drive(  # type: ignore[no-any-return]
            V.list_op(self._settings, self._user(user_id), include_superseded)
        )

    def forget(
        self, memory_ids: Sequence[str] | str, *, user_id: str | None = None
    ) -> dict[str, int]:
        """Erase memories; a consolidated memory takes the memories merged into it along.

        Returns:
            ``{"memories": n, "access_records": n}`` actually deleted.
        """
        return self._drive(V.forget_op(self._settings, self._user(user_id), self._ids(memory_ids)))  # type: ignore[no-any-return]

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Erase everything of a user in this tenant: memories, access counts, audit records.

        Returns:
            Items deleted per kind.
        """
        return self._drive(V.forget_user_op(self._settings, self._user(user_id)))  # type: ignore[no-any-return]


class AsyncVectorMemory(_MemoryBase, AsyncFromConnString):
    """:class:`VectorMemory` for asyncio, on an ``AsyncPostgresStore``.

    Same storage and behaviour; methods carry an ``a`` prefix
    (``aadd_memories``, ``asearch`` ...). Construct it inside a running loop.
    """

    _store: AsyncPostgresStore

    def __init__(
        self,
        conn: str | AsyncConnection[Any] | AsyncConnectionPool[Any] | None = None,
        *,
        embeddings: Embeddings | Callable[..., Any] | None = None,
        dims: int | None = None,
        user_id: str | None = None,
        namespace: str = "memories",
        cross_encoder: CrossEncoder | None = None,
        decay_half_life: timedelta | None = None,
        track_access: bool = True,
        clock: Callable[[], datetime] | None = None,
        conversations: AsyncConversationStore | ConversationStore | None = None,
        tenant_id: str | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        codec: Codec | None = None,
        index_options: Mapping[str, Any] | None = None,
    ) -> None:
        index = self._configure(
            embeddings=embeddings,
            dims=dims,
            user_id=user_id,
            namespace=namespace,
            cross_encoder=cross_encoder,
            decay_half_life=decay_half_life,
            track_access=track_access,
            clock=clock,
            conversations=conversations,
            index_options=index_options,
        )
        self._store = AsyncPostgresStore(
            conn,
            index=index,
            codec=codec,
            filter_fields=V.FILTER_FIELDS,
            tenant_id=tenant_id,
            schema=schema,
            config=config,
        )

    async def _aopen(self) -> None:
        await self._store._aopen()

    async def asetup(self) -> None:
        """Create the store's tables, pgvector and the index (idempotent)."""
        await self._store.setup()

    async def aclose(self) -> None:
        """Close the pool opened for a DSN (a lent connection or pool stays open)."""
        await self._store.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aadd_memories(
        self,
        texts: Sequence[str] | str,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        *,
        user_id: str | None = None,
        importance: float = 0.5,
        created_at: datetime | None = None,
        conversation_id: str | None = None,
        episode_id: str | None = None,
    ) -> list[str]:
        """Async :meth:`VectorMemory.add_memories`."""
        return await self._adrive(  # type: ignore[no-any-return]
            self._add_call(
                texts, metadata, user_id, importance, created_at, conversation_id, episode_id
            )
        )

    async def astore_conversation(
        self,
        conversation: ConversationLike,
        metadata: Mapping[str, Any] | None = None,
        chunk_size: int = 1000,
        chunk_overlap: int = 200,
        importance: float = 0.5,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
    ) -> list[str]:
        """Async :meth:`VectorMemory.store_conversation`."""
        return await self._adrive(  # type: ignore[no-any-return]
            self._conversation_call(
                conversation,
                metadata,
                chunk_size,
                chunk_overlap,
                importance,
                user_id,
                conversation_id,
            )
        )

    async def asearch(
        self,
        query: str,
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        rerank: V.Rerank = False,
        *,
        user_id: str | None = None,
        as_of: datetime | None = None,
        include_superseded: bool = False,
        mmr_lambda: float = 0.5,
        fetch_k: int | None = None,
        decay_half_life: timedelta | None = None,
    ) -> list[Memory]:
        """Async :meth:`VectorMemory.search`."""
        return await self._adrive(  # type: ignore[no-any-return]
            self._search_call(
                query,
                top_k,
                {
                    "filters": filters,
                    "rerank": rerank,
                    "user_id": user_id,
                    "as_of": as_of,
                    "include_superseded": include_superseded,
                    "mmr_lambda": mmr_lambda,
                    "fetch_k": fetch_k,
                    "decay_half_life": decay_half_life,
                },
            )
        )

    async def aget_episodic_memories(
        self,
        user_id: str | None,
        context_query: str,
        temporal_weight: float = 0.3,
        max_episodes: int = 5,
        *,
        half_life: timedelta = timedelta(days=7),
        per_episode: int = 5,
        candidates: int = 50,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Episode]:
        """Async :meth:`VectorMemory.get_episodic_memories`."""
        return await self._adrive(  # type: ignore[no-any-return]
            V.episodic_op(
                self._settings,
                self._user(user_id),
                context_query,
                temporal_weight,
                max_episodes,
                half_life,
                per_episode,
                candidates,
                filters,
            )
        )

    async def aconsolidate_memories(
        self,
        time_window: timedelta | None = None,
        similarity_threshold: float = 0.9,
        strategy: V.Strategy = "merge",
        preserve_important: bool | float = True,
        dry_run: bool = False,
        *,
        user_id: str | None = None,
    ) -> ConsolidationReport:
        """Async :meth:`VectorMemory.consolidate_memories`."""
        return await self._adrive(  # type: ignore[no-any-return]
            self._consolidate_call(
                time_window, similarity_threshold, strategy, preserve_important, dry_run, user_id
            )
        )

    async def aconsolidation_history(
        self, user_id: str | None = None, *, memory_id: str | None = None
    ) -> list[MergeRecord]:
        """Async :meth:`VectorMemory.consolidation_history`."""
        return await self._adrive(V.history_op(self._settings, self._user(user_id), memory_id))  # type: ignore[no-any-return]

    async def aget_memory(self, memory_id: str, *, user_id: str | None = None) -> Memory | None:
        """Async :meth:`VectorMemory.get_memory`."""
        found = await self._adrive(
            V.get_op(self._settings, self._user(user_id), self._ids(memory_id))
        )
        return found[0]  # type: ignore[no-any-return]

    async def alist_memories(
        self, *, user_id: str | None = None, include_superseded: bool = False
    ) -> list[Memory]:
        """Async :meth:`VectorMemory.list_memories`."""
        return await self._adrive(  # type: ignore[no-any-return]
            V.list_op(self._settings, self._user(user_id), include_superseded)
        )

    async def aforget(
        self, memory_ids: Sequence[str] | str, *, user_id: str | None = None
    ) -> dict[str, int]:
        """Async :meth:`VectorMemory.forget`."""
        return await self._adrive(  # type: ignore[no-any-return]
            V.forget_op(self._settings, self._user(user_id), self._ids(memory_ids))
        )

    async def aforget_user(self, user_id: str) -> dict[str, int]:
        """Async :meth:`VectorMemory.forget_user`."""
        return await self._adrive(V.forget_user_op(self._settings, self._user(user_id)))  # type: ignore[no-any-return]
