"""LangChain documents as store items: the operations of ``PostgresVectorStore`` (no I/O).

A collection is one store namespace, ``("vectorstore", <collection>)``; a
document is one item: key = its id, value = ``{"text", "metadata",
"embedding"}``. The text is embedded by the store's pgvector index; the
float32 vector is also kept in the value (as vector memory does), so that MMR
needs no second embedding call. Only ``metadata`` is kept in the store's
filter document. The steps are those of :mod:`haive_langgraph.memory._vector_ops`,
run by the same drivers.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langgraph.store.base import GetOp, Item, Op, PutOp, SearchOp

from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import _vector_ops as V
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
    return (ROOT, V.user_label(collection_name, "collection_name"))


def _check_id(value: object, n: int) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise V.InvalidMemoryError(
            f"document id {n} must be a non-empty string without NUL, got {value!r}"
        )
    return value


def check_ids(ids: Iterable[object] | None, what: str = "ids") -> list[str]:
    """Ids of documents to read or delete."""
    if ids is None or isinstance(ids, str | bytes):
        raise V.InvalidMemoryError(f"{what} must be a list of document ids, got {ids!r}")
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
        raise V.InvalidMemoryError("texts must be a list of strings, got one string")
    texts = list(texts)
    n = len(texts)
    for name, values in (("metadatas", metadatas), ("ids", ids)):
        if values is not None and len(values) != n:
            raise V.InvalidMemoryError(f"{name} has {len(values)} entries for {n} texts")
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or "\x00" in text:
            raise V.InvalidMemoryError(
                f"text {i} must be a string without NUL, got {type(text).__name__}"
            )
        meta = V.check_metadata(metadatas[i] if metadatas else None, f"metadatas[{i}]")
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
                f"supported: {', '.join(V.OPERATORS)})"
            )
        V.check_operators(value, key)
        out[f"metadata.{key}"] = V.filter_value(value)
    return out


def to_document(item: Item) -> Document:
    value = item.value
    return Document(
        id=item.key, page_content=value["text"], metadata=dict(value.get("metadata") or {})
    )


def relevance(score: float) -> float:
    """A cosine similarity as LangChain's relevance in [0, 1] (opposite vectors: 0)."""
    return min(1.0, max(0.0, score))


# -- operations ----------------------------------------------------------------------------


def add_op(namespace: tuple[str, str], rows: Sequence[tuple[str, str, dict[str, Any]]]) -> V.Op_:
    """Write documents (an existing id is replaced); returns their ids in order."""
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        vectors = yield V.EmbedDocuments([text for _, text, _ in chunk])
        # The last of a repeated id wins, as it would one call after another.
        puts: dict[str, Op] = {}
        primed: dict[str, list[float]] = {}
        for (key, text, meta), vector in zip(chunk, vectors, strict=True):
            value = {"text": text, "metadata": meta, "embedding": V.pack_vector(vector)}
            puts.pop(key, None)
            puts[key] = PutOp(namespace, key, value)
            primed[text] = vector
        yield V.Batch(list(puts.values()), primed)
    return [key for key, _, _ in rows]


def check_vector(vector: object) -> list[float]:
    if isinstance(vector, str | bytes) or not isinstance(vector, Sequence | np.ndarray):
        raise V.InvalidMemoryError(f"embedding must be a list of floats, got {vector!r}")
    out = [float(x) for x in vector]
    if not out or not all(math.isfinite(x) for x in out):
        raise V.InvalidMemoryError("embedding must be a non-empty list of finite floats")
    return out


def search_op(
    namespace: tuple[str, str],
    query: str | None,
    vector: Sequence[float] | None,
    k: int,
    filter: Mapping[str, Any] | None,
    mmr: tuple[int, float] | None = None,
) -> V.Op_:
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
        lambda_mult = V.check_unit(mmr[1], "lambda_mult")
    store_filter = document_filter(filter)
    if vector is None:
        text = V.check_text(query, "query")
    else:
        text = BY_VECTOR
        qvec = check_vector(vector)
    if k == 0:  # as InMemoryVectorStore answers k=0
        return []
    if vector is None:
        qvec = yield V.EmbedQuery(text)
    (items,) = yield V.Batch(
        [SearchOp(namespace, store_filter or None, limit, 0, text, refresh_ttl=False)],
        {text: qvec},
    )
    # Unscored items fill a page when fewer have vectors: they are no neighbours.
    scored = [it for it in items if it.score is not None]
    if mmr is not None and scored:
        order = V.mmr(
            np.asarray(qvec, dtype=np.float32),
            np.stack([V.unpack_vector(it.value["embedding"]) for it in scored]),
            [float(it.score or 0.0) for it in scored],
            k,
            lambda_mult,
        )
        scored = [scored[i] for i in order]
    return [(to_document(it), float(it.score or 0.0)) for it in scored[:k]]


def get_op(namespace: tuple[str, str], ids: Sequence[str]) -> V.Op_:
    """The documents of these ids that exist, in the order asked."""
    if not ids:
        return []
    items = yield V.Batch([GetOp(namespace, i, refresh_ttl=False) for i in ids])
    return [to_document(it) for it in items if it is not None]


def delete_op(namespace: tuple[str, str], ids: Sequence[str] | None) -> V.Op_:
    """Delete documents (missing ids are no error); ``None``: the whole collection."""
    if ids is not None:
        if ids:
            yield V.Batch([PutOp(namespace, i, None) for i in dict.fromkeys(ids)])
        return True
    while True:
        (page,) = yield V.Batch([SearchOp(namespace, None, V.PAGE, 0, None, refresh_ttl=False)])
        if not page:
            return True
        yield V.Batch([PutOp(namespace, it.key, None) for it in page])


def check_options(kwargs: Mapping[str, Any], method: str) -> None:
    if kwargs:
        raise ConfigurationError(
            f"{method}() got unknown arguments {sorted(kwargs)}; PostgresVectorStore takes "
            "k, filter (and fetch_k, lambda_mult for MMR)"
        )
