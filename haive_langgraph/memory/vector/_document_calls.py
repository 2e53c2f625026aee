"""The operations of ``PostgresVectorStore`` as its methods show them (no I/O).

Each function is one ``VectorStore`` method: its signature and docstring, the
checks of its arguments, and the operation it returns. The store runs it with
``sync_method`` (``add_texts``) and ``async_method`` (``aadd_texts``); see
:mod:`~haive_langgraph.memory.vector._drive`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from haive_langgraph.memory.vector._documents import (
    add_op,
    check_ids,
    check_options,
    delete_op,
    documents_of,
    get_op,
    new_rows,
    search_op,
)
from haive_langgraph.memory.vector._steps import Op

if TYPE_CHECKING:
    from haive_langgraph.memory.vector._store import PostgresVectorStore

Filter = Mapping[str, Any] | None


def add_texts(
    store: PostgresVectorStore,
    /,
    texts: Iterable[str],
    metadatas: list[dict[str, Any]] | None = None,
    *,
    ids: list[str] | None = None,
    **kwargs: Any,
) -> Op[list[str]]:
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
    check_options(kwargs, "add_texts")
    return add_op(store._namespace, new_rows(texts, metadatas, ids))


def delete(
    store: PostgresVectorStore, /, ids: list[str] | None = None, **kwargs: Any
) -> Op[bool | None]:
    """Delete documents by id (missing ids are no error); ``None`` empties the collection."""
    check_options(kwargs, "delete")
    return delete_op(store._namespace, None if ids is None else check_ids(ids))


def get_by_ids(store: PostgresVectorStore, ids: Sequence[str], /) -> Op[list[Document]]:
    """The stored documents of these ids (missing ones are left out), in the order asked."""
    return get_op(store._namespace, check_ids(ids))


def similarity_search_with_score(
    store: PostgresVectorStore, /, query: str, k: int = 4, filter: Filter = None, **kwargs: Any
) -> Op[list[tuple[Document, float]]]:
    """The ``k`` documents closest to ``query`` with their cosine similarity, best first.

    Raises:
        InvalidFilterError: An operator the store does not have.
    """
    check_options(kwargs, "similarity_search_with_score")
    return search_op(store._namespace, query, None, k, filter)


def similarity_search(
    store: PostgresVectorStore, /, query: str, k: int = 4, filter: Filter = None, **kwargs: Any
) -> Op[list[Document]]:
    """The ``k`` documents closest to ``query``, best first."""
    check_options(kwargs, "similarity_search")
    return documents_of(search_op(store._namespace, query, None, k, filter))


def similarity_search_by_vector(
    store: PostgresVectorStore,
    /,
    embedding: list[float],
    k: int = 4,
    filter: Filter = None,
    **kwargs: Any,
) -> Op[list[Document]]:
    """The ``k`` documents closest to a vector, best first."""
    check_options(kwargs, "similarity_search_by_vector")
    return documents_of(search_op(store._namespace, None, embedding, k, filter))


def max_marginal_relevance_search(
    store: PostgresVectorStore,
    /,
    query: str,
    k: int = 4,
    fetch_k: int = 20,
    lambda_mult: float = 0.5,
    filter: Filter = None,
    **kwargs: Any,
) -> Op[list[Document]]:
    """``k`` of the ``fetch_k`` documents closest to ``query``, picked by maximal
    marginal relevance (``lambda_mult`` 1: relevance only, 0: diversity only)."""
    check_options(kwargs, "max_marginal_relevance_search")
    mmr = (fetch_k, lambda_mult)
    return documents_of(search_op(store._namespace, query, None, k, filter, mmr))


def max_marginal_relevance_search_by_vector(
    store: PostgresVectorStore,
    /,
    embedding: list[float],
    k: int = 4,
    fetch_k: int = 20,
    lambda_mult: float = 0.5,
    filter: Filter = None,
    **kwargs: Any,
) -> Op[list[Document]]:
    """:meth:`max_marginal_relevance_search` around a vector."""
    check_options(kwargs, "max_marginal_relevance_search_by_vector")
    mmr = (fetch_k, lambda_mult)
    return documents_of(search_op(store._namespace, None, embedding, k, filter, mmr))
