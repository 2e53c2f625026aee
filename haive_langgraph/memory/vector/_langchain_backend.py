"""Vector memory over any LangChain ``VectorStore``: the store operations as vector store calls.

:class:`VectorStoreBackend` answers the LangGraph store operations vector
memory runs (see :mod:`~haive_langgraph.memory.vector._backend`) with the
methods every LangChain vector store has (``get_by_ids``, ``add_documents``
or ``add_embeddings``, ``delete``, ``similarity_search_by_vector`` and their
async twins). One item is one document:

* id: a UUID (version 5) of the tenant, namespace and key (Qdrant, Chroma,
  PGVector and Pinecone all take it);
* ``page_content``: the memory's text;
* metadata: ``haive_value`` (the stored value as JSON, the packed vector
  included), ``haive_tenant``, ``haive_ns`` (the namespace as JSON),
  ``haive_key``, ``haive_valid_to``, ``haive_at``, and the keys the store
  filters on: ``haive_scope`` (tenant and namespace as JSON), ``haive_live``
  (the same while the memory holds, else empty) and ``haive_root`` (tenant
  and first label).

One equality on one of the last three is pushed down to the store (in its own
filter syntax, :data:`Dialect`; one condition, as engines that evaluate
filters point by point, like Qdrant's in-process mode, pay per condition); every filter of the memory is then evaluated
exactly in Python on the decoded values (:func:`~haive_langgraph.memory.vector._backend.matches`)
and scores are cosine similarities of the kept vectors. A search fetches
more candidates until it has enough that pass the filters or the store has
no more; a listing is a search of up to ``list_limit`` documents (see
``docs/vector-memory.md``, "Any vector store", for what that means).

The logic is one generator of :class:`_Call` values (no I/O), run by
:meth:`VectorStoreBackend.batch` with the store's sync methods and by
:meth:`VectorStoreBackend.abatch` with its async ones.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.vector._backend import matches
from haive_langgraph.memory.vector._values import (
    OPEN_END,
    Spaces,
    check_positive_int,
    unpack_vector,
)

__all__ = ["Dialect", "VectorStoreBackend"]

Dialect = Literal["mongo", "qdrant", "callable"] | Callable[[Mapping[str, str]], Any]
"""How equality on metadata keys is written for the store's ``filter=``:
``"mongo"`` (``{"$and": [{"k": {"$eq": v}}, ...]}``: PGVector, Chroma,
Pinecone, MongoDB Atlas ...), ``"qdrant"`` (a ``qdrant_client.models.Filter``
on ``metadata.<k>``), ``"callable"`` (a function ``Document -> bool``:
``InMemoryVectorStore``), or your function ``{key: value} -> filter``."""

_NAMESPACE = uuid.UUID("6f1c1f8e-3f7a-5a36-9a52-3d0c2b7f0e11")
_TS = "%Y-%m-%dT%H:%M:%S.%f+00:00"


@dataclass(slots=True)
class _Call:
    """One call of the vector store (``method`` and its ``a``-prefixed twin), or a
    batch for the records store (``method == "records"``)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Plan = Generator[_Call, Any, list[Result]]


def _dialect_of(store: VectorStore) -> Dialect:
    name = type(store).__name__
    if "Qdrant" in name:
        return "qdrant"
    if name == "InMemoryVectorStore":
        return "callable"
    return "mongo"


def _where(dialect: Dialect, equal: Mapping[str, str], metadata_key: str) -> Any:
    if callable(dialect):
        return dialect(equal)
    if dialect == "callable":
        return lambda doc: all(doc.metadata.get(k) == v for k, v in equal.items())
    if dialect == "qdrant":
        from qdrant_client import models  # only with a Qdrant store

        return models.Filter(
            must=[
                models.FieldCondition(key=f"{metadata_key}.{k}", match=models.MatchValue(value=v))
                for k, v in equal.items()
            ]
        )
    parts = [{k: {"$eq": v}} for k, v in equal.items()]
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))


class VectorStoreBackend:
    """Vector memory's items in a LangChain ``VectorStore`` (``VectorMemory(backend, ...)``).

    The memory's API is the same (dedupe, search with filters, decay, MMR and
    cross-encoders, episodic recall, ``as_of``, consolidation, summaries,
    ``forget``); what a vector store cannot give (row-level security, the
    codec, exhaustive listing beyond ``list_limit``) is listed in
    ``docs/vector-memory.md``.

    Args:
        vectorstore: The store. It must embed with the same model as the
            memory (give both the same embedder): candidates are found by the
            store's vectors, then ranked by the memory's.
        records: Where items without a vector go (access counts, audit
            records): any LangGraph ``BaseStore`` (``InMemoryStore``, our
            ``PostgresStore`` ...). Default: documents of the vector store too
            (a store without ``add_embeddings`` then embeds their key).
        dialect: How the store writes equality filters (default: from its
            class: Qdrant, ``InMemoryVectorStore``, else ``"mongo"``).
        list_limit: Most documents a listing reads (consolidation,
            ``list_memories``, ``forget_user``); more raise an error.
        tenant_id: The tenant (part of the keys filtered on, not row security).

    Raises:
        ConfigurationError: ``vectorstore`` is not a LangChain ``VectorStore``.
    """

    def __init__(
        self,
        vectorstore: VectorStore,
        *,
        records: BaseStore | None = None,
        dialect: Dialect | None = None,
        list_limit: int = 10_000,
        tenant_id: str = "",
    ) -> None:
        if not isinstance(vectorstore, VectorStore):
            raise ConfigurationError(
                f"vectorstore must be a LangChain VectorStore, got {type(vectorstore).__name__}"
            )
        if records is not None and not isinstance(records, BaseStore):
            raise ConfigurationError(
                f"records must be a LangGraph BaseStore, got {type(records).__name__}"
            )
        self.vectorstore = vectorstore
        self.records = records
        self.dialect: Dialect = dialect or _dialect_of(vectorstore)
        self.list_limit = check_positive_int(list_limit, "list_limit")
        self.tenant_id = str(tenant_id)
        self._embeddings: Embeddings | None = None
        self._record_roots: frozenset[str] = frozenset()
        self._dims = 0

    # -- what the memory calls -------------------------------------------------------------

    def bind(
        self, embeddings: Embeddings, dims: int, record_roots: Iterable[str]
    ) -> VectorStoreBackend:
        """A copy for one memory: its embedder and the namespaces of its records."""
        bound = copy.copy(self)
        bound._embeddings = embeddings
        bound._dims = dims
        bound._record_roots = frozenset(record_roots)
        return bound

    def for_tenant(self, tenant_id: str) -> VectorStoreBackend:
        """This backend for another tenant (a filter on its documents, not row security)."""
        bound = copy.copy(self)
        bound.tenant_id = str(tenant_id)
        return bound

    def setup(self) -> None:
        """Nothing to create: the vector store is set up by its owner."""

    def close(self) -> None:
        """Nothing to close: the vector store is lent."""

    async def aclose(self) -> None:
        """Nothing to close: the vector store is lent."""

    async def _aopen(self) -> None:
        return None

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Answer store operations with the vector store's sync methods."""
        plan = self._plan(list(ops))
        result: Any = None
        while True:
            try:
                call = plan.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if call.method == "records":
                assert self.records is not None
                result = self.records.batch(*call.args)
            else:
                result = getattr(self.vectorstore, call.method)(*call.args, **call.kwargs)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Answer store operations with the vector store's async methods."""
        plan = self._plan(list(ops))
        result: Any = None
        while True:
            try:
                call = plan.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if call.method == "records":
                assert self.records is not None
                result = await self.records.abatch(*call.args)
                continue
            method = getattr(self.vectorstore, f"a{call.method}", None)
            if method is not None:
                result = await method(*call.args, **call.kwargs)
            else:
                sync = getattr(self.vectorstore, call.method)
                result = await asyncio.to_thread(sync, *call.args, **call.kwargs)

    # -- documents ---------------------------------------------------------------------------

    def _doc_id(self, namespace: tuple[str, ...], key: str) -> str:
        seed = json.dumps([self.tenant_id, list(namespace), key])
        return str(uuid.uuid5(_NAMESPACE, seed))

    def _scope(self, namespace: tuple[str, ...]) -> str:
        return json.dumps([self.tenant_id, *namespace])

    def _equal(self, namespace: tuple[str, ...], current: bool = False) -> dict[str, str]:
        """The one condition a search pushes down: its namespace (and "current")."""
        return {"haive_live" if current else "haive_scope": self._scope(namespace)}

    def _filter(self, equal: Mapping[str, str]) -> Any:
        key = getattr(self.vectorstore, "metadata_payload_key", "metadata")
        return _where(self.dialect, equal, key)

    def _item(self, doc: Document, score: float | None = None) -> Item | SearchItem | None:
        meta = doc.metadata or {}
        raw = meta.get("haive_value")
        if not isinstance(raw, str) or meta.get("haive_tenant") != self.tenant_id:
            return None  # not one of ours, or another tenant's
        value = json.loads(raw)
        ns = tuple(json.loads(meta["haive_ns"]))
        stamp = datetime.strptime(meta.get("haive_at") or "1970-01-01T00:00:00.000000+00:00", _TS)
        stamp = stamp.replace(tzinfo=UTC)
        if score is None:
            return Item(
                value=value, key=meta["haive_key"], namespace=ns, created_at=stamp, updated_at=stamp
            )
        return SearchItem(
            namespace=ns,
            key=meta["haive_key"],
            value=value,
            created_at=stamp,
            updated_at=stamp,
            score=score,
        )

    def _is_record(self, namespace: tuple[str, ...]) -> bool:
        return self.records is not None and bool(namespace) and namespace[0] in self._record_roots

    # -- the plan --------------------------------------------------------------------------------

    def _plan(self, ops: list[Op]) -> Plan:
        results: list[Result] = [None] * len(ops)
        records = [i for i, op in enumerate(ops) if self._is_record(_namespace_of(op))]
        if records:
            answered = yield _Call("records", ([ops[i] for i in records],))
            for i, r in zip(records, answered, strict=True):
                results[i] = r
        mine = [i for i in range(len(ops)) if i not in set(records)]
        gets = [i for i in mine if isinstance(ops[i], GetOp)]
        if gets:
            ids = [self._doc_id(ops[i].namespace, ops[i].key) for i in gets]  # type: ignore[union-attr]
            docs = yield _Call("get_by_ids", (list(dict.fromkeys(ids)),))
            # By our own keys: not every store sets Document.id (Qdrant puts it in metadata).
            found = [it for d in docs or () if (it := self._item(d)) is not None]
            by_id = {self._doc_id(it.namespace, it.key): it for it in found}
            for i, doc_id in zip(gets, ids, strict=True):
                results[i] = by_id.get(doc_id)
        for i in mine:
            op = ops[i]
            if isinstance(op, SearchOp):
                results[i] = yield from self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self._namespaces(op)
        puts = {
            (op.namespace, op.key): op
            for i in mine
            if isinstance(op := ops[i], PutOp)  # the last put of a key wins
        }
        yield from self._write(list(puts.values()))
        return results

    def _write(self, puts: Sequence[PutOp]) -> Generator[_Call, Any, None]:
        deletes = [self._doc_id(p.namespace, p.key) for p in puts if p.value is None]
        if deletes:
            yield _Call("delete", (deletes,))
        writes = [p for p in puts if p.value is not None]
        if not writes:
            return
        now = datetime.now(UTC).strftime(_TS)
        texts, vectors, metas, ids = [], [], [], []
        for p in writes:
            value = dict(p.value or {})
            text = value.get("text") if isinstance(value.get("text"), str) else None
            packed = value.get("embedding")
            vector = unpack_vector(packed).tolist() if isinstance(packed, str) else None
            if vector is None and text is not None and p.index is not False:
                assert self._embeddings is not None
                vector = self._embeddings.embed_documents([text])[0]  # primed: no call
            ids.append(self._doc_id(p.namespace, p.key))
            texts.append(text if text is not None else p.key)
            vectors.append(vector or self._probe())
            metas.append(
                {
                    "haive_tenant": self.tenant_id,
                    "haive_ns": json.dumps(list(p.namespace)),
                    "haive_key": p.key,
                    "haive_valid_to": str(value.get("valid_to") or ""),
                    "haive_scope": self._scope(p.namespace),
                    "haive_live": self._scope(p.namespace)
                    if value.get("valid_to") == OPEN_END
                    else "",
                    "haive_root": self._scope(p.namespace[:1]),
                    "haive_at": now,
                    "haive_value": json.dumps(value),
                }
            )
        if callable(getattr(self.vectorstore, "add_embeddings", None)):
            yield _Call("add_embeddings", (texts, vectors), {"metadatas": metas, "ids": ids})
        else:  # the store embeds the texts itself
            docs = [
                Document(page_content=t, metadata=m, id=i)
                for t, m, i in zip(texts, metas, ids, strict=True)
            ]
            yield _Call("add_documents", (docs,), {"ids": ids})

    def _probe(self) -> list[float]:
        """A unit vector: what a listing searches with, and the vector of a record."""
        d = self._dims or 1
        return [1.0 / math.sqrt(d)] * d

    def _fetch(
        self, vector: list[float], k: int, equal: Mapping[str, str]
    ) -> Generator[_Call, Any, list[Document]]:
        docs = yield _Call(
            "similarity_search_by_vector", (vector,), {"k": k, "filter": self._filter(equal)}
        )
        return list(docs or ())

    def _search(self, op: SearchOp) -> Generator[_Call, Any, list[SearchItem]]:
        flt = dict(op.filter or {})
        current = flt.get("valid_to") == OPEN_END
        equal = self._equal(op.namespace_prefix, current)
        want = op.offset + op.limit
        if op.query is None:
            docs = yield from self._fetch(self._probe(), self.list_limit, equal)
            if len(docs) >= self.list_limit:
                raise ConfigurationError(
                    f"more than list_limit={self.list_limit} documents to list in "
                    f"{op.namespace_prefix!r}: raise VectorStoreBackend(list_limit=...)"
                )
            found = [it for d in docs if (it := self._item(d, 0.0)) is not None]
            found = [it for it in found if matches(it.value, flt)]
            found.sort(key=lambda it: it.key)
            return [
                SearchItem(it.namespace, it.key, it.value, it.created_at, it.updated_at, None)
                for it in found[op.offset : want]
            ]
        assert self._embeddings is not None
        qvec = np.asarray(self._embeddings.embed_query(op.query), dtype=np.float32)
        k = max(want * 2, 10)
        while True:
            docs = yield from self._fetch(qvec.tolist(), k, equal)
            scored = []
            for d in docs:
                it = self._item(d, 0.0)
                if it is None or not matches(it.value, flt) or "embedding" not in it.value:
                    continue
                sim = _cosine(qvec, unpack_vector(it.value["embedding"]))
                scored.append(
                    SearchItem(it.namespace, it.key, it.value, it.created_at, it.updated_at, sim)
                )
            if len(scored) >= want or len(docs) < k or k >= self.list_limit:
                break
            k = min(k * 4, self.list_limit)  # too many were filtered out: fetch more
        scored.sort(key=lambda it: (-(it.score or 0.0), it.key))
        return scored[op.offset : want]

    def _namespaces(self, op: ListNamespacesOp) -> Generator[_Call, Any, list[tuple[str, ...]]]:
        prefix = next((c.path for c in op.match_conditions or () if c.match_type == "prefix"), None)
        if prefix and prefix[0] != "*":
            equal = {"haive_root": self._scope(tuple(prefix[:1]))}
        else:
            equal = {"haive_tenant": self.tenant_id}
        docs = yield from self._fetch(self._probe(), self.list_limit, equal)
        if len(docs) >= self.list_limit:
            raise ConfigurationError(
                f"more than list_limit={self.list_limit} documents to list: raise "
                "VectorStoreBackend(list_limit=...)"
            )
        spaces: set[tuple[str, ...]] = set()
        for d in docs:
            it = self._item(d)
            if it is None:
                continue
            ns = it.namespace
            if all(_path_matches(c.match_type, c.path, ns) for c in op.match_conditions or ()):
                spaces.add(ns[: op.max_depth] if op.max_depth is not None else ns)
        return sorted(spaces)[op.offset : op.offset + op.limit]


def _namespace_of(op: Op) -> tuple[str, ...]:
    if isinstance(op, SearchOp):
        return op.namespace_prefix
    if isinstance(op, GetOp | PutOp):
        return op.namespace
    return ()


def _path_matches(kind: str, path: Sequence[str], ns: tuple[str, ...]) -> bool:
    if len(path) > len(ns):
        return False
    part = ns[: len(path)] if kind == "prefix" else ns[len(ns) - len(path) :]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


def over_vectorstore(
    owner: str,
    conn: VectorStore | VectorStoreBackend,
    embeddings: Embeddings,
    spaces: Spaces,
    options: Mapping[str, Any],
) -> VectorStoreBackend:
    """The backend of a memory ``owner`` given a vector store (or a backend), bound to
    its embedder and its record namespaces.

    Raises:
        ConfigurationError: An option of our store only (``schema``, ``config``,
            ``codec``, ``index_options``).
    """
    ours = sorted(k for k in options if k != "tenant_id" and options[k] is not None)
    if ours:
        raise ConfigurationError(
            f"{owner} over a LangChain vector store takes no {', '.join(ours)}: "
            "they configure our PostgreSQL store (see docs/vector-memory.md, 'Any vector store')"
        )
    backend = conn if isinstance(conn, VectorStoreBackend) else VectorStoreBackend(conn)
    if options.get("tenant_id") is not None:
        backend = backend.for_tenant(str(options["tenant_id"]))
    dims = int(getattr(embeddings, "dims", 0) or 0)
    roots = (spaces.access("x")[0], spaces.audit("x")[0])
    return backend.bind(embeddings, dims, roots)  # type: ignore[no-any-return]


def no_tables(store: Any, conversations: Any) -> None:
    """Refuse to read a conversation by id with no conversation store over a vector store.

    Raises:
        ConfigurationError: ``store`` is a :class:`VectorStoreBackend` and no
            ``conversations=`` was given.
    """
    if conversations is None and isinstance(store, VectorStoreBackend):
        raise ConfigurationError(
            "a memory over a vector store has no conversation tables: pass "
            "conversations=ConversationStore(...), or a list of messages"
        )
