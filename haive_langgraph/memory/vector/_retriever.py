"""The LangChain retriever of vector memory, with LangChain's argument conventions.

``memory.as_retriever(search_type=..., search_kwargs={...})`` as
``VectorStore.as_retriever``: ``k``, ``filter``, ``fetch_k``, ``lambda_mult``,
``score_threshold``, and the memory's own search arguments; any of them may
also be given per call (``retriever.invoke(query, k=1)``), over the
retriever's.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, model_validator

from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._types import Memory

__all__ = ["MemoryRetriever", "SearchType", "memory_document"]

SearchType = Literal["similarity", "mmr", "similarity_score_threshold"]
SEARCH_TYPES = ("similarity", "mmr", "similarity_score_threshold")
DEFAULT_K = 5
# The memory's own search arguments, passed through as they are.
MEMORY_ARGUMENTS = frozenset(
    {
        "rerank",
        "user_id",
        "as_of",
        "include_superseded",
        "fetch_k",
        "decay_half_life",
        "mode",
        "parents",
    }
)
# LangChain's names, and the memory's name each also answers to.
ALIASES = {"filters": "filter", "mmr_lambda": "lambda_mult"}
KNOWN = frozenset({"k", "filter", "lambda_mult", "score_threshold", *MEMORY_ARGUMENTS})
# What as_retriever(**kwargs) used to take (before search_kwargs=).
LEGACY = frozenset({"top_k", *ALIASES, *MEMORY_ARGUMENTS})


def normalise(kwargs: Mapping[str, Any], *, stacklevel: int = 3) -> dict[str, Any]:
    """Search arguments under LangChain's names (``filters`` -> ``filter`` ...).

    Raises:
        ConfigurationError: An unknown argument, or one given under both names.
    """
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        name = key
        if key == "top_k":
            warnings.warn(
                "top_k is deprecated in retriever arguments: use k, as LangChain does "
                "(search_kwargs={'k': n}, or retriever.invoke(query, k=n))",
                DeprecationWarning,
                stacklevel=stacklevel,
            )
            name = "k"
        name = ALIASES.get(name, name)
        if name not in KNOWN:
            raise ConfigurationError(
                f"unknown search argument {key!r}; known: {', '.join(sorted(KNOWN))} "
                f"(and {', '.join(sorted(ALIASES))})"
            )
        if name in out:
            raise ConfigurationError(f"search argument {name!r} is given twice (as {key!r})")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class RetrieverQuery:
    """One retriever call as a memory search."""

    top_k: int
    search: dict[str, Any]
    score_threshold: float | None


def retriever_query(search_type: object, kwargs: Mapping[str, Any]) -> RetrieverQuery:
    """The memory search a retriever call runs (``kwargs`` normalised).

    Raises:
        ConfigurationError: An unknown search type, a missing or bad
            ``score_threshold``, ``rerank`` contradicting ``search_type="mmr"``.
    """
    if search_type not in SEARCH_TYPES:
        raise ConfigurationError(
            f"search_type must be one of {', '.join(SEARCH_TYPES)}, got {search_type!r}"
        )
    search = {k: v for k, v in kwargs.items() if k in MEMORY_ARGUMENTS}
    if "filter" in kwargs:
        search["filters"] = kwargs["filter"]
    if "lambda_mult" in kwargs:
        search["mmr_lambda"] = kwargs["lambda_mult"]
    if search_type == "mmr":
        if search.get("rerank", "mmr") != "mmr":
            raise ConfigurationError(
                f'search_type="mmr" reranks by MMR; it cannot take rerank={search["rerank"]!r}'
            )
        search["rerank"] = "mmr"
    threshold = kwargs.get("score_threshold")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
    ):
        raise ConfigurationError(f"score_threshold must be a number, got {threshold!r}")
    if search_type == "similarity_score_threshold" and threshold is None:
        raise ConfigurationError(
            'search_type="similarity_score_threshold" needs search_kwargs={"score_threshold": x}'
        )
    return RetrieverQuery(
        check_count("k", kwargs.get("k", DEFAULT_K)),
        search,
        None if threshold is None else float(threshold),
    )


def memory_document(memory: Memory) -> Document:
    """A memory as a LangChain ``Document`` (its text; id, score and links in metadata)."""
    meta: dict[str, Any] = dict(memory.metadata)
    meta.update(
        {
            "id": memory.id,
            "memory_id": memory.id,
            "user_id": memory.user_id,
            "score": memory.score,
            "similarity": memory.similarity,
            "kind": memory.kind,
            "importance": memory.importance,
            "created_at": memory.created_at.isoformat(),
            "valid_from": memory.valid_from.isoformat(),
            "valid_to": memory.valid_to.isoformat() if memory.valid_to else None,
            "superseded_by": memory.superseded_by,
            "conversation_id": memory.conversation_id,
            "episode_id": memory.episode_id,
            "message_ids": list(memory.message_ids),
            "access_count": memory.access_count,
        }
    )
    return Document(page_content=memory.text, metadata=meta, id=memory.id)


def _documents(found: list[Memory], query: RetrieverQuery) -> list[Document]:
    t = query.score_threshold
    return [memory_document(m) for m in found if t is None or (m.score or 0.0) >= t]


class MemoryRetriever(BaseRetriever):
    """LangChain retriever over a :class:`VectorMemory` or :class:`AsyncVectorMemory`.

    Build it with ``memory.as_retriever(search_type=..., search_kwargs={...})``.
    ``retriever.invoke(query, k=1, filter={...})`` overrides the retriever's
    arguments for one call. The sync path of an async memory works from
    threads other than its event loop's.

    Attributes:
        memory: The memory searched.
        search_type: ``"similarity"``, ``"mmr"`` or ``"similarity_score_threshold"``.
        search_kwargs: ``k`` (default 5), ``filter``, ``fetch_k``,
            ``lambda_mult``, ``score_threshold``, and the memory's ``rerank``,
            ``user_id``, ``as_of``, ``include_superseded``, ``decay_half_life``,
            ``mode`` (``"hybrid"``: full-text and vector search fused),
            ``parents`` (summaries in place of their children).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    memory: Any
    search_type: SearchType = "similarity"
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        self.search_kwargs = normalise(self.search_kwargs, stacklevel=6)
        retriever_query(self.search_type, self.search_kwargs)
        return self

    def _query(self, kwargs: Mapping[str, Any]) -> RetrieverQuery:
        return retriever_query(
            self.search_type, {**self.search_kwargs, **normalise(kwargs, stacklevel=5)}
        )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        q = self._query(kwargs)
        return _documents(self.memory._search_sync(query, q.top_k, q.search), q)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        q = self._query(kwargs)
        if hasattr(self.memory, "asearch"):  # an AsyncVectorMemory
            found = await self.memory._search_async(query, q.top_k, q.search)
        else:
            found = await asyncio.to_thread(self.memory._search_sync, query, q.top_k, q.search)
        return _documents(found, q)
