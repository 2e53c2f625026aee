"""How the vector classes use their store: the index they give it, and the two drivers
that run the operations on it, sync or async.

The operations (:mod:`haive_langgraph.memory._vector_ops`,
:mod:`haive_langgraph.memory._vector_docs`) yield steps; these loops answer
them. Store batches, query and document embeddings are answered here; any
other step (a rerank, a conversation to load) goes to ``other``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import _vector_ops as V
from haive_langgraph.memory.embeddings import CheckedEmbeddings, embedder_dims, primed

__all__ = ["adrive", "drive", "store_index"]

# Store index settings a memory or vector store passes through (see docs/store.md).
INDEX_OPTIONS = frozenset({"ann_index_config", "write_mode", "exact_search_threshold"})


def store_index(
    embeddings: Embeddings | Callable[..., Any],
    dims: int | None,
    index_options: Mapping[str, Any] | None,
) -> tuple[CheckedEmbeddings, dict[str, Any]]:
    """The checked embedder and the store's ``index=`` (the ``"text"`` field, cosine).

    Raises:
        ConfigurationError: ``dims`` missing (the embedder declares none),
            not matching the embedder, or an unknown index option.
    """
    declared = embedder_dims(embeddings)
    if dims is None:
        if declared is None:
            raise ConfigurationError(
                "pass dims=, the dimensions of the embedder's vectors "
                f"({type(embeddings).__name__} does not declare them)"
            )
        dims = declared
    V.check_positive_int(dims, "dims")
    if declared is not None and declared != dims:
        raise ConfigurationError(
            f"dims={dims} does not match the embedder {type(embeddings).__name__}, "
            f"which produces {declared}-dimensional vectors"
        )
    checked = CheckedEmbeddings(embeddings, dims)
    index: dict[str, Any] = {"dims": dims, "embed": checked, "fields": ["text"]}
    options = dict(index_options or {})
    unknown = sorted(set(options) - INDEX_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown index_options {unknown}; known: {', '.join(sorted(INDEX_OPTIONS))} "
            "(texts are always embedded from their text, with cosine distance)"
        )
    index.update(options)
    return checked, index


def _unexpected(step: Any) -> Any:
    raise TypeError(f"no driver for the step {type(step).__name__}")


def drive(
    gen: V.Op_,
    store: BaseStore,
    embeddings: Embeddings,
    other: Callable[[Any], Any] = _unexpected,
) -> Any:
    """Run an operation with the sync API of ``store`` (an async store's works from
    threads other than its event loop's)."""
    result: Any = None
    while True:
        try:
            step = gen.send(result)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, V.Batch):
            with primed(step.primed):
                result = store.batch(step.ops)
        elif isinstance(step, V.EmbedQuery):
            result = embeddings.embed_query(step.text)
        elif isinstance(step, V.EmbedDocuments):
            result = embeddings.embed_documents(step.texts)
        else:
            result = other(step)


async def _aunexpected(step: Any) -> Any:
    raise TypeError(f"no driver for the step {type(step).__name__}")


async def adrive(
    gen: V.Op_,
    store: BaseStore,
    embeddings: Embeddings,
    other: Callable[[Any], Awaitable[Any]] = _aunexpected,
) -> Any:
    """Run an operation with the async API of ``store``."""
    result: Any = None
    while True:
        try:
            step = gen.send(result)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, V.Batch):
            with primed(step.primed):
                result = await store.abatch(step.ops)
        elif isinstance(step, V.EmbedQuery):
            result = await embeddings.aembed_query(step.text)
        elif isinstance(step, V.EmbedDocuments):
            result = await embeddings.aembed_documents(step.texts)
        else:
            result = await other(step)
