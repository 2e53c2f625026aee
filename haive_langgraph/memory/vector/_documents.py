"""LangChain documents as store items: the operations of ``PostgresVectorStore`` (no I/O).

A collection is one store namespace, ``("vectorstore", <collection>)``; a
document is one item: key = its id, value = ``{"text", "metadata",
"embedding"}``. The text is embedded by the store's pgvector index; the
float32 vector is also kept in the value (as vector memory does), so that MMR
needs no second embedding call. Only ``metadata`` is kept in the store's
filter document. The steps are those of vector memory
(:mod:`~haive_langgraph.memory.vector._steps`), run by the same drivers.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langgraph.store.base import GetOp, Item, PutOp, SearchOp
from langgraph.store.base import Op as StoreOp

from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConfigurationError, InvalidMemoryError
from haive_langgraph.memory.vector._filters import OPERATORS, check_operators, filter_value
from haive_langgraph.memory.vector._memories import PAGE
from haive_langgraph.memory.vector._scoring import mmr as mmr_order
from haive_langgraph.memory.vector._steps import Batch, EmbedDocuments, EmbedQuery, Op
from haive_langgraph.memory.vector._values import (
    check_metadata,
    check_text,
    check_unit,
    pack_vector,
    unpack_vector,
    user_label,
)
from haive_langgraph.stores import InvalidFilterError

ROOT = "vectorstore"
# What the store keeps in plaintext for filters (not the text, not the vector).
FILTER_FIELDS = ("metadata",)
# Documents embedded and written per store batch.
BATCH = 500
# The query text of a search by vector: the store is handed the vector for it.
BY_VECTOR = "<search by vector>"


def collection_namespace(collection_name: object) -> tuple[str, str]:
    """The store namespace of a collection (any non-empty name; ``.`` and ``%`` escaped)."""
    return (ROOT, user_label(collection_name, "collection_name"))


def _check_id(value: object, n: int) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidMemoryError(
            f"document id {n} must be a non-empty string without NUL, got {value!r}"
        )
    return value


def check_ids(ids: Iterable[object] | None, what: str = "ids") -> list[str]:
    """Ids of documents to read or delete."""
    if ids is None or isinstance(ids, str | bytes):
        raise InvalidMemoryError(f"{what} must be a list of document ids, got {ids!r}")
    return [_check_id(i, n) for n, i in enumerate(ids)]


def new_rows(
    texts: Iterable[str],
    metadatas: Sequence[Mapping[str, Any] | None] | None,
    ids: Sequence[str | None] | None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, text, metadata)`` of documents to write; a missing id becomes a UUID.

    Raises:
        InvalidMemoryError: A text that is not a string or holds a NUL, metadata
            that is not a dict with string keys, a bad id, or lists of other lengths.
    """
    if isinstance(texts, str | bytes):
        raise InvalidMemoryError("texts must be a list of strings, got one string")
    texts = list(texts)
    n = len(texts)
    for name, values in (("metadatas", metadatas), ("ids", ids)):
        if values is not None and len(values) != n:
            raise InvalidMemoryError(f"{name} has {len(values)} entries for {n} texts")
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or "\x00" in text:
            raise InvalidMemoryError(
                f"text {i} must be a string without NUL, got {type(text).__name__}"
            )
        meta = check_metadata(metadatas[i] if metadatas else None, f"metadatas[{i}]")
        given = ids[i] if ids else None
        key = str(uuid.uuid4()) if given is None else _check_id(given, i)
        rows.append((key, text, meta))
    return rows


def document_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """A metadata filter as a store filter: every key is a metadata key (AND-ed).

    Raises:
        InvalidFilterError: An operator the store does not have (``$and``,
            ``$or`` included: keys are AND-ed), or an invalid key.
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"filter must be a dict, got {type(filter).__name__}")
    out: dict[str, Any] = {}
    for key, value in filter.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidFilterError(
                f"filter keys must be metadata keys, got {key!r} (the keys of a filter are "
                f"AND-ed; operators go inside a key: {{'key': {{'$in': [...]}}}}, "
                f"supported: {', '.join(OPERATORS)})"
            )
        check_operators(value, key)
        out[f"metadata.{key}"] = filter_value(value)
    return out


def to_document(item: Item) -> Document:
    """A stored item as a LangChain ``Document``."""
    value = item.value
    return Document(
        id=item.key, page_content=value["text"], metadata=dict(value.get("metadata") or {})
    )


def relevance(score: float) -> float:
    """A cosine similarity as LangChain's relevance in [0, 1] (opposite vectors: 0)."""
    return min(1.0, max(0.0, score))


# -- operations ----------------------------------------------------------------------------


def add_op(
    namespace: tuple[str, str], rows: Sequence[tuple[str, str, dict[str, Any]]]
) -> Op[list[str]]:
    """Write documents (an existing id is replaced); returns their ids in order."""
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        vectors = yield EmbedDocuments([text for _, text, _ in chunk])
        # The last of a repeated id wins, as it would one call after another.
        puts: dict[str, StoreOp] = {}
        primed: dict[str, list[float]] = {}
        for (key, text, meta), vector in zip(chunk, vectors, strict=True):
            value = {"text": text, "metadata": meta, "embedding": pack_vector(vector)}
            puts.pop(key, None)
            puts[key] = PutOp(namespace, key, value)
            primed[text] = vector
        yield Batch(list(puts.values()), primed)
    return [key for key, _, _ in rows]


def check_vector(vector: object) -> list[float]:
    """A query vector as a list of finite floats."""
    if isinstance(vector, str | bytes) or not isinstance(vector, Sequence | np.ndarray):
        raise InvalidMemoryError(f"embedding must be a list of floats, got {vector!r}")
    out = [float(x) for x in vector]
    if not out or not all(math.isfinite(x) for x in out):
        raise InvalidMemoryError("embedding must be a non-empty list of finite floats")
    return out


def search_op(
    namespace: tuple[str, str],
    query: str | None,
    vector: Sequence[float] | None,
    k: int,
    filter: Mapping[str, Any] | None,
    mmr: tuple[int, float] | None = None,
) -> Op[list[tuple[Document, float]]]:
    """The ``k`` documents nearest to ``query`` (or ``vector``), with their cosine similarity.

    Args:
        mmr: ``(fetch_k, lambda_mult)``: pick ``k`` of ``fetch_k`` candidates by
            maximal marginal relevance.
    """
    k = check_count("k", k)
    limit = k
    lambda_mult = 0.5
    if mmr is not None:
        limit = max(k, check_count("fetch_k", mmr[0]))
        lambda_mult = check_unit(mmr[1], "lambda_mult")
    store_filter = document_filter(filter)
    if vector is None:
        text = check_text(query, "query")
    else:
        text = BY_VECTOR
        qvec = check_vector(vector)
    if k == 0:  # as InMemoryVectorStore answers k=0
        return []
    if vector is None:
        qvec = yield EmbedQuery(text)
    (items,) = yield Batch(
        [SearchOp(namespace, store_filter or None, limit, 0, text, refresh_ttl=False)],
        {text: qvec},
    )
    # Unscored items fill a page when fewer have vectors: they are no neighbours.
    scored = [it for it in items if it.score is not None]
    if mmr is not None and scored:
        order = mmr_order(
            np.asarray(qvec, dtype=np.float32),
            np.stack([unpack_vector(it.value["embedding"]) for it in scored]),
            [float(it.score or 0.0) for it in scored],
            k,
            lambda_mult,
        )
        scored = [scored[i] for i in order]
    return [(to_document(it), float(it.score or 0.0)) for it in scored[:k]]


def get_op(namespace: tuple[str, str], ids: Sequence[str]) -> Op[list[Document]]:
    """The documents of these ids that exist, in the order asked."""
    if not ids:
        return []
    items = yield Batch([GetOp(namespace, i, refresh_ttl=False) for i in ids])
    return [to_document(it) for it in items if it is not None]


def delete_op(namespace: tuple[str, str], ids: Sequence[str] | None) -> Op[bool | None]:
    """Delete documents (missing ids are no error); ``None``: the whole collection."""
    if ids is not None:
        if ids:
            yield Batch([PutOp(namespace, i, None) for i in dict.fromkeys(ids)])
        return True
    while True:
        (page,) = yield Batch([SearchOp(namespace, None, PAGE, 0, None, refresh_ttl=False)])
        if not page:
            return True
        yield Batch([PutOp(namespace, it.key, None) for it in page])


def documents_of(search: Op[list[tuple[Document, float]]]) -> Op[list[Document]]:
    """A search's documents, without their scores."""
    return [d for d, _ in (yield from search)]


def check_options(kwargs: Mapping[str, Any], method: str) -> None:
    """Refuse the keyword arguments no method of the store takes."""
    if kwargs:
        raise ConfigurationError(
            f"{method}() got unknown arguments {sorted(kwargs)}; PostgresVectorStore takes "
            "k, filter (and fetch_k, lambda_mult for MMR)"
        )
