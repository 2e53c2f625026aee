"""How the vector classes use their store: the options they give it and the two drivers
that run the operations on it.

The operations (:mod:`~haive_langgraph.memory.vector._memories`,
:mod:`~haive_langgraph.memory.vector._documents` ...) yield steps; these loops
answer them. Store batches, query and document embeddings are answered here;
any other step (a rerank, a conversation to load) goes to ``other``.

A public method is an operation's builder (its signature and docstring, the
argument checks, the operation it returns) run by one driver:
``search = sync_method(calls.search)`` in the sync class and
``asearch = async_method(calls.search)`` in the async one
(:mod:`haive_langgraph.db._methods`, shared with the conversation classes),
so nothing of a method is written twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypedDict, TypeVar

from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore

from haive_langgraph.codec import Codec
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._embeddings import CheckedEmbeddings, embedder_dims, primed
from haive_langgraph.memory.vector._steps import (
    Batch,
    EmbedDocuments,
    EmbedQuery,
    Op,
    Step,
    StoreTask,
)
from haive_langgraph.memory.vector._values import check_positive_int

__all__ = [
    "VectorOptions",
    "adrive",
    "drive",
    "store_options",
]

T = TypeVar("T")
P = ParamSpec("P")

# Store index settings a memory or vector store passes through (see docs/store.md).
# "hybrid" also keeps a full-text index of the texts, for search(mode="hybrid").
INDEX_OPTIONS = frozenset({"ann_index_config", "write_mode", "exact_search_threshold", "hybrid"})


class VectorOptions(TypedDict, total=False):
    """The store options every vector class takes (keyword arguments).

    Attributes:
        tenant_id: The tenant (default: the config's).
        schema: The schema (default: the config's, ``haive``).
        config: Settings (:class:`~haive_langgraph.db.PersistenceConfig`).
        codec: Value codec (compression, encryption), as for ``PostgresStore``.
        index_options: Store index settings: ``ann_index_config``,
            ``write_mode`` (``"deferred"`` for bulk loads, then
            ``store.index_pending()``), ``exact_search_threshold``,
            ``hybrid`` (``True`` or a ``HybridConfig``: a full-text index
            too, for ``search(mode="hybrid")``; see ``docs/store.md``).
    """

    tenant_id: str | None
    schema: str | None
    config: PersistenceConfig | None
    codec: Codec | None
    index_options: Mapping[str, Any] | None


def store_options(
    owner: str,
    embeddings: Embeddings | Callable[..., Any],
    dims: int | None,
    filter_fields: tuple[str, ...],
    options: VectorOptions,
) -> tuple[CheckedEmbeddings, dict[str, Any]]:
    """The checked embedder, and the options of the store (``index=`` the ``"text"``
    field, cosine) a vector class ``owner`` keeps its items in.

    Raises:
        TypeError: An option no vector class takes.
        ConfigurationError: ``dims`` missing (the embedder declares none),
            not matching the embedder, or an unknown index option.
    """
    unknown = sorted(set(options) - VectorOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"{owner}() got an unexpected keyword argument {unknown[0]!r}")
    declared = embedder_dims(embeddings)
    if dims is None:
        if declared is None:
            raise ConfigurationError(
                "pass dims=, the dimensions of the embedder's vectors "
                f"({type(embeddings).__name__} does not declare them)"
            )
        dims = declared
    check_positive_int(dims, "dims")
    if declared is not None and declared != dims:
        raise ConfigurationError(
            f"dims={dims} does not match the embedder {type(embeddings).__name__}, "
            f"which produces {declared}-dimensional vectors"
        )
    checked = CheckedEmbeddings(embeddings, dims)
    index: dict[str, Any] = {"dims": dims, "embed": checked, "fields": ["text"]}
    extra = dict(options.get("index_options") or {})
    unknown = sorted(set(extra) - INDEX_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown index_options {unknown}; known: {', '.join(sorted(INDEX_OPTIONS))} "
            "(texts are always embedded from their text, with cosine distance)"
        )
    index.update(extra)
    store = {k: v for k, v in options.items() if k != "index_options"}
    return checked, {"index": index, "filter_fields": filter_fields, **store}


# -- the drivers --------------------------------------------------------------------------


def _unexpected(step: Any) -> Any:
    raise TypeError(f"no driver for the step {type(step).__name__}")


async def _aunexpected(step: Any) -> Any:
    return _unexpected(step)


def _target(
    step: Step, store: BaseStore, embeddings: Embeddings, other: Callable[[Any], Any], a: str
) -> tuple[Callable[..., Any], Any, dict[str, list[float]] | None]:
    """The method answering a step (``a``: ``"a"`` for the async one), its argument,
    and the vectors primed while it runs."""
    if isinstance(step, Batch):
        return getattr(store, f"{a}batch"), step.ops, step.primed
    if isinstance(step, EmbedQuery):
        return getattr(embeddings, f"{a}embed_query"), step.text, None
    if isinstance(step, EmbedDocuments):
        return getattr(embeddings, f"{a}embed_documents"), step.texts, None
    if isinstance(step, StoreTask):
        return getattr(step, f"{a}run"), store, step.primed()
    return other, step, None


def _advance(gen: Op[Any], result: Any) -> tuple[bool, Any]:
    """Send ``result``: ``(False, the next step)``, or ``(True, the operation's result)``."""
    try:
        return False, gen.send(result)
    except StopIteration as stop:
        return True, stop.value


def drive(
    gen: Op[T], store: BaseStore, embeddings: Embeddings, other: Callable[[Any], Any] = _unexpected
) -> T:
    """Run an operation with the sync API of ``store`` (an async store's works from
    threads other than its event loop's)."""
    done, step = _advance(gen, None)
    while not done:
        method, argument, vectors = _target(step, store, embeddings, other, "")
        with primed(vectors):
            result = method(argument)
        done, step = _advance(gen, result)
    return step  # type: ignore[no-any-return]


async def adrive(
    gen: Op[T],
    store: BaseStore,
    embeddings: Embeddings,
    other: Callable[[Any], Awaitable[Any]] = _aunexpected,
) -> T:
    """Run an operation with the async API of ``store``."""
    done, step = _advance(gen, None)
    while not done:
        method, argument, vectors = _target(step, store, embeddings, other, "a")
        with primed(vectors):
            result = await method(argument)
        done, step = _advance(gen, result)
    return step  # type: ignore[no-any-return]
