"""What :class:`VectorMemory` and :class:`AsyncVectorMemory` share: their options,
the user and tenant they act for, and the drivers that run their operations."""

from __future__ import annotations

import asyncio
import copy
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Self, TypeVar, Unpack

from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langgraph.store.base import BaseStore

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector import _calls as calls
from haive_langgraph.memory.vector._drive import VectorOptions, adrive, drive, store_options
from haive_langgraph.memory.vector._embeddings import CheckedEmbeddings, HashingEmbeddings
from haive_langgraph.memory.vector._filters import FILTER_FIELDS
from haive_langgraph.memory.vector._hierarchy_model import asummarize, summarize
from haive_langgraph.memory.vector._langchain_backend import (
    VectorStoreBackend,
    no_tables,
    over_vectorstore,
)
from haive_langgraph.memory.vector._memories import Settings
from haive_langgraph.memory.vector._retriever import LEGACY as LEGACY_ARGUMENTS
from haive_langgraph.memory.vector._retriever import (
    MemoryRetriever,
    SearchType,
    normalise,
    retriever_query,
)
from haive_langgraph.memory.vector._steps import Op, Rescore, Summarize
from haive_langgraph.memory.vector._transcripts import aload_conversation, load_conversation
from haive_langgraph.memory.vector._types import CrossEncoder, Memory
from haive_langgraph.memory.vector._values import (
    Spaces,
    check_duration,
    check_root,
    user_label,
    utcnow,
)

DEFAULT_DIMS = 384

T = TypeVar("T")
ConnT = TypeVar("ConnT")
ConversationsT = TypeVar("ConversationsT")


class MemoryBase(Generic[ConnT, ConversationsT]):
    """Configuration, binding and drivers shared by both memory classes.

    ``ConnT``: the connections the class takes; ``ConversationsT``: the
    conversation stores it reads conversations from.
    """

    _store_type: ClassVar[Callable[..., BaseStore]]
    _store: Any
    _settings: Settings
    _embeddings: CheckedEmbeddings
    _conversations: ConversationsT | None
    user_id: str | None
    dims: int

    def __init__(
        self,
        conn: str | ConnT | VectorStore | VectorStoreBackend | None = None,
        *,
        embeddings: Embeddings | Callable[..., Any] | None = None,
        dims: int | None = None,
        user_id: str | None = None,
        namespace: str = "memories",
        cross_encoder: CrossEncoder | None = None,
        decay_half_life: timedelta | None = None,
        track_access: bool = True,
        clock: Callable[[], datetime] | None = None,
        conversations: ConversationsT | None = None,
        **options: Unpack[VectorOptions],
    ) -> None:
        inner = embeddings if embeddings is not None else HashingEmbeddings(dims or DEFAULT_DIMS)
        owner = type(self).__name__
        checked, store = store_options(owner, inner, dims, FILTER_FIELDS, options)
        if user_id is not None:
            user_label(user_id)
        if cross_encoder is not None and not callable(getattr(cross_encoder, "score", None)):
            raise ConfigurationError(
                f"cross_encoder must have a score(query, texts) method, got {cross_encoder!r}"
            )
        self.dims = checked.dims
        self.user_id = user_id
        self._embeddings = checked
        self._conversations = conversations
        self._settings = Settings(
            spaces=Spaces(check_root(namespace)),
            clock=clock or utcnow,
            cross_encoder=cross_encoder,
            decay_half_life=check_duration(decay_half_life, "decay_half_life"),
            track_access=bool(track_access),
        )
        if isinstance(conn, VectorStore | VectorStoreBackend):
            self._store = over_vectorstore(owner, conn, checked, self._settings.spaces, options)
        else:
            self._store = self._store_type(conn, **store)

    @property
    def store(self) -> BaseStore | VectorStoreBackend:
        """The store the memories live in (its tenant is this memory's tenant), or the
        :class:`VectorStoreBackend` of a memory over a LangChain vector store."""
        return self._store  # type: ignore[no-any-return]

    @property
    def tenant_id(self) -> str:
        """The tenant whose memories this memory reads and writes."""
        return str(getattr(self._store, "tenant_id", ""))

    def for_tenant(self, tenant_id: str) -> Self:
        """This memory bound to a tenant (sharing connections); tenants never see each other."""
        bound = copy.copy(self)
        bound._store = self._store.for_tenant(tenant_id)
        return bound

    def for_user(self, user_id: str) -> Self:
        """This memory with ``user_id`` as the default user of every call."""
        user_label(user_id)
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
        user_label(user)
        return user

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
                ``include_superseded``, ``decay_half_life``, ``parents``. Each may also be
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

    def _run(self, op: Op[T]) -> T:
        """Run an operation with the sync API of the store (from any thread but an
        async store's own loop thread)."""
        return drive(op, self._store, self._embeddings, self._other)

    async def _arun(self, op: Op[T]) -> T:
        """Run an operation with the async API of the store."""
        return await adrive(op, self._store, self._embeddings, self._aother)

    def _search_sync(self, query: str, top_k: int, kw: Mapping[str, Any]) -> list[Memory]:
        """A search of the retriever (its arguments under the memory's names)."""
        return self._run(calls.search(self, query, top_k, **kw))

    async def _search_async(self, query: str, top_k: int, kw: Mapping[str, Any]) -> list[Memory]:
        """Async :meth:`_search_sync`."""
        return await self._arun(calls.search(self, query, top_k, **kw))

    def _other(self, step: Any) -> Any:
        if isinstance(step, Rescore):
            return list(step.encoder.score(step.query, step.texts))
        if isinstance(step, Summarize):
            return summarize(step)
        no_tables(self._store, self._conversations)
        return load_conversation(self._store, self._conversations, step.conversation_id)

    async def _aother(self, step: Any) -> Any:
        if isinstance(step, Rescore):
            ascore = getattr(step.encoder, "ascore", None)
            if ascore is not None:
                return list(await ascore(step.query, step.texts))
            return list(await asyncio.to_thread(step.encoder.score, step.query, step.texts))
        if isinstance(step, Summarize):
            return await asummarize(step)
        no_tables(self._store, self._conversations)
        return await aload_conversation(self._store, self._conversations, step.conversation_id)
