"""Where vector memory keeps its items: the backend protocol, and filters evaluated in Python.

Every operation of vector memory (add with dedupe, search with decay and MMR,
episodic recall, ``as_of``, consolidation, summaries, forget) is written once
against LangGraph's store operations (``GetOp``, ``PutOp``, ``SearchOp``,
``ListNamespacesOp``) answered in batches. A backend is anything that answers
them: :class:`MemoryBackend`. Two implement it:

* our :class:`~haive_langgraph.stores.PostgresStore` /
  :class:`~haive_langgraph.stores.AsyncPostgresStore` (pgvector; filters,
  tenants and row-level security in SQL), the default;
* :class:`~haive_langgraph.memory.vector._langchain_backend.VectorStoreBackend`,
  over any LangChain ``VectorStore`` (``PGVector``, Qdrant, Chroma, Pinecone,
  ``InMemoryVectorStore`` ...), which evaluates the memory's filters with
  :func:`matches` below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from langgraph.store.base import Op, Result

__all__ = ["MemoryBackend", "matches"]


@runtime_checkable
class MemoryBackend(Protocol):
    """What vector memory runs on: LangGraph store operations, answered in batches.

    ``batch`` / ``abatch`` take ``GetOp``, ``PutOp``, ``SearchOp`` (with or
    without a query, with filters of the operators ``$eq $ne $gt $gte $lt
    $lte $in $nin $exists`` on dotted paths of the stored value) and
    ``ListNamespacesOp``, and return one result per operation, as
    ``BaseStore.batch`` does. A search by query returns items scored by
    cosine similarity, best first. While a batch runs, the memory's embedder
    returns the vectors it already has for the texts written or searched
    (so a backend may embed through it at no cost).
    """

    def batch(self, ops: Iterable[Op]) -> list[Result]: ...

    async def abatch(self, ops: Iterable[Op]) -> list[Result]: ...


_MISSING = object()


def _lookup(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _equal(a: Any, b: Any) -> bool:
    if a is _MISSING:
        return b is None
    if _number(a) and _number(b):
        return bool(a == b)
    return (type(a) is type(b) and a == b) or (a is None and b is None)


def _compare(op: str, a: Any, b: Any) -> bool:
    if not ((_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))):
        return False  # another JSON type never matches
    if op == "$gt":
        return bool(a > b)
    if op == "$gte":
        return bool(a >= b)
    if op == "$lt":
        return bool(a < b)
    return bool(a <= b)


def _operator(op: str, found: Any, operand: Any) -> bool:
    if op == "$eq":
        return _equal(found, operand)
    if op == "$ne":
        return not _equal(found, operand)
    if op == "$in":
        return any(_equal(found, x) for x in operand)
    if op == "$nin":
        return not any(_equal(found, x) for x in operand)
    if op == "$exists":
        return (found is not _MISSING) == bool(operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return found is not _MISSING and _compare(op, found, operand)
    raise ValueError(f"unsupported filter operator {op!r}")


def matches(value: Mapping[str, Any], filter: Mapping[str, Any] | None, prefix: str = "") -> bool:
    """Whether a stored value passes a store filter (the semantics of the store's SQL filters).

    ``{"a.b": 1}`` and ``{"a": {"b": 1}}`` are the same; ``None`` matches a
    missing key; ``$ne``/``$nin`` match a missing key; comparisons match
    numbers with numbers and strings with strings only.
    """
    for key, cond in (filter or {}).items():
        path = f"{prefix}{key}"
        if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
            found = _lookup(value, path)
            if not all(_operator(op, found, operand) for op, operand in cond.items()):
                return False
        elif isinstance(cond, Mapping) and cond:
            if not matches(value, cond, f"{path}."):
                return False
        elif not _equal(_lookup(value, path), cond):
            return False
    return True
