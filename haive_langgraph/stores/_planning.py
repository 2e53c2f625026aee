"""Planning a batch: ops checked, values encoded, vectors placed (no I/O).

An explicit batch (``batch``/``abatch`` of several ops) is checked as a whole
(the first refused op raises), its writes encoded (of several writes of one
key, only the last, which wins), and what it needs embedded is collected in
an :class:`EmbedRequest` for its caller to embed. A call the async store
merges with others is checked, encoded and embedded alone, by its caller, in
the caller's context (its context variables, its errors: a refused op or a
failing embedder fail that call only), as a :class:`MergedCall`; the merged batch
is then assembled from the calls.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    Op,
    PutOp,
    SearchOp,
    get_text_at_path,
)

from haive_langgraph.codec import Codec
from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores._batch import BatchPlan
from haive_langgraph.stores._config import VectorIndexSpec, check_ttl, tokenize_fields
from haive_langgraph.stores._filters import compiled, frozen
from haive_langgraph.stores._ops import PutPlan
from haive_langgraph.stores._search_ops import SearchPlan
from haive_langgraph.stores._values import (
    Namespace,
    PgvectorParam,
    VectorEncoder,
    check_address,
    check_document,
    check_key,
    dump_json,
    encode_frame,
    encode_value,
    ns_text,
    project,
    validate_op,
)

Vector = Sequence[float]


@dataclass(slots=True)
class PutRow:
    """One write of a batch, encoded: a delete when ``frame`` is None."""

    frame: bytes | None
    doc: bytes | None = None
    ttl: str | None = None
    # The text of the indexed fields (hybrid search), and (field, text) per vector.
    text: str | None = None
    vectors: list[tuple[str, str]] = field(default_factory=list)
    # A merged call's vectors, embedded by its caller (one per `vectors` entry).
    embedded: list[Vector] | None = None


@dataclass(slots=True)
class MergedCall:
    """One call merged with others into a batch: its op checked, encoded (a put)
    and embedded, and what its caller waits on (the store and future are the
    async store's business)."""

    op: Op
    row: PutRow | None = None
    vector: Vector | None = None  # a search's query, embedded
    filter_key: Hashable | None = None  # a search's filter, frozen (see _filters.frozen)
    store: Any = None
    future: Any = None
    # The caller's context, for embedding its texts (None: nothing to embed).
    context: Any = None


@dataclass(slots=True)
class EmbedRequest:
    """What a batch needs embedded, before any connection is taken."""

    texts: list[str] = field(default_factory=list)
    # For each put vector: (namespace, key, field, index into texts, filter document).
    slots: list[tuple[Namespace, str, str, int, bytes | None]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    # Merged calls: the vectors their callers embedded (then nothing is left to embed).
    doc_vectors: list[Vector] | None = None
    search_vectors: dict[int, Vector] = field(default_factory=dict)


def _validate(op: Op, checked: set[Hashable]) -> None:
    """:func:`validate_op`, once per kind of op and namespace in a batch."""
    if isinstance(op, ListNamespacesOp):
        validate_op(op)
        return
    ns = op.namespace_prefix if isinstance(op, SearchOp) else op.namespace  # type: ignore[union-attr]
    seen: Hashable = (type(op), ns)
    try:
        if seen in checked:
            return
    except TypeError:  # a label that is no string: validation names it
        seen = None
    validate_op(op)
    if seen is not None and type(ns) is tuple:
        checked.add(seen)


def _search_key(op: SearchOp, vector: Vector | None, spec: Hashable | None) -> Hashable | None:
    """What makes two searches identical (``None``: a filter too odd to compare);
    ``spec`` is the frozen filter."""
    if spec is None:
        return None
    # One text may stand for different vectors (primed ones): the vector counts.
    vec = None if vector is None else tuple(vector)
    key = (op.namespace_prefix, spec, op.limit, op.offset, op.query, op.refresh_ttl, vec)
    try:
        hash(key)
    except TypeError:  # an odd limit or query: its own validation refuses it
        return None
    return key


class Planning:
    """The planning half of the store classes (mixed into :class:`StoreBase`)."""

    tenant_id: str
    codec: Codec
    _spec: VectorIndexSpec | None
    _encoder: VectorEncoder | None
    _filter_paths: tuple[tuple[str, ...], ...] | None
    # (kind of op, namespace) pairs already validated: validation depends on nothing else.
    _checked: set[Hashable]

    # -- checking one op -----------------------------------------------------------------

    def _check_op(self, op: Op, checked: set[Hashable]) -> tuple[Op, Hashable | None]:
        """``op`` validated, with a tuple namespace and a checked key; and a search's
        frozen filter (``()`` without one, ``None`` for one that cannot be frozen).

        Raises:
            ConfigurationError, InvalidNamespaceError, InvalidFilterError:
                naming what is wrong.
        """
        if not isinstance(op, GetOp | SearchOp | PutOp | ListNamespacesOp):
            raise ConfigurationError(f"unknown store operation {type(op).__name__}")
        _validate(op, checked)
        filter_key: Hashable | None = None
        if isinstance(op, GetOp):
            key = check_key(op.key)
            if type(op.namespace) is not tuple or key is not op.key:
                op = op._replace(namespace=tuple(op.namespace), key=key)
        elif isinstance(op, SearchOp):
            if type(op.namespace_prefix) is not tuple:
                op = op._replace(namespace_prefix=tuple(op.namespace_prefix))
            filter_key = self._check_search(op)
        elif isinstance(op, ListNamespacesOp):
            self._check_page(op, "list_namespaces")
        else:
            ns = tuple(op.namespace)
            if not ns:
                raise InvalidNamespaceError("Namespace cannot be empty.")
            key = check_key(op.key)
            if op.value is not None:
                check_address(ns, key)
            if type(op.namespace) is not tuple or key is not op.key:
                op = op._replace(namespace=ns, key=key)
        return op, filter_key

    @staticmethod
    def _check_page(op: SearchOp | ListNamespacesOp, what: str) -> None:
        """``limit`` and ``offset`` are integers from 0 (which gives nothing, as LangGraph's
        stores answer) to ``bigint``'s largest (``db._limits.check_count``)."""
        check_count(f"{what} limit", op.limit)
        check_count(f"{what} offset", op.offset)

    def _check_search(self, op: SearchOp) -> Hashable | None:
        """Check a search's page and filter; its frozen filter (see :meth:`_check_op`)."""
        self._check_page(op, "search")
        key = frozen(op.filter) if op.filter else ()
        # Compile once here so a bad filter fails before anything is embedded.
        compiled(op.filter, allowed=self._filter_paths, frozen_filter=key)
        return key

    def _encode_put(self, ns: Namespace, key: str, op: PutOp) -> PutRow:
        """One write, checked and encoded (a delete when ``op.value`` is None)."""
        if op.value is None:
            return PutRow(None)
        payload = encode_value(op.value, ns, key)
        ttl = check_ttl(op.ttl)
        frame = encode_frame(self.codec, payload, self.tenant_id, ns, key)
        doc: bytes | None = None
        if self._filter_paths is None:
            doc = payload
            check_document(doc, op.value, ns, key)
        elif self._filter_paths:
            searchable = project(op.value, self._filter_paths)
            doc = dump_json(searchable)
            check_document(doc, searchable, ns, key)
        row = PutRow(frame, doc, None if ttl is None else repr(ttl))
        spec = self._spec
        if spec is None or op.index is False:
            return row
        fields = spec.fields if op.index is None else tokenize_fields(op.index, "put index")
        words: list[str] = []
        for path, tokens in fields:
            found = get_text_at_path(op.value, tokens)
            words += found
            for n, text in enumerate(found):
                row.vectors.append((f"{path}.{n}" if len(found) > 1 else path, text))
        # The full-text index sees what the embedder sees, NULs (which
        # PostgreSQL text cannot hold) aside.
        if spec.text is not None and words:
            row.text = "\n".join(words).replace("\x00", " ")
        return row

    # -- explicit batches ----------------------------------------------------------------

    def _plan(self, ops: Iterable[Op]) -> tuple[BatchPlan, EmbedRequest]:
        """Check and sort a batch; nothing is sent and nothing is embedded yet.

        Of several writes of one key the last wins, and only it is encoded.
        """
        checked: set[Hashable] = set()
        normal, filter_keys = [], []
        for op in ops:
            op, filter_key = self._check_op(op, checked)
            normal.append(op)
            filter_keys.append(filter_key)
        puts = {(op.namespace, op.key): op for op in normal if isinstance(op, PutOp)}
        rows = {
            (ns, key): self._encode_put(ns, key, op)
            for (ns, key), op in sorted(puts.items(), key=lambda entry: entry[0])
        }
        return self._assemble(normal, rows, frozenset(), None, filter_keys)

    # -- merged calls --------------------------------------------------------------------

    def _plan_call(self, op: Op) -> MergedCall:
        """One call to merge: checked and encoded (its caller then embeds it).

        Raises:
            ConfigurationError, InvalidNamespaceError, InvalidFilterError,
                SerializationError, ValueTooLargeError: naming what is wrong.
        """
        checked = self._checked
        if len(checked) > 4096:
            checked.clear()
        op, filter_key = self._check_op(op, checked)
        if not isinstance(op, PutOp):
            return MergedCall(op, filter_key=filter_key)
        row = self._encode_put(op.namespace, op.key, op)
        row.embedded = []
        return MergedCall(op, row)

    def _needs_embedding(self, call: MergedCall) -> bool:
        """Whether a merged call has a query or texts to embed."""
        if self._spec is None:
            return False
        if isinstance(call.op, SearchOp):
            return bool(call.op.query)
        return call.row is not None and bool(call.row.vectors)

    def _check_call_vectors(self, call: MergedCall) -> None:
        """Dimensions of what a caller embedded (its own error if wrong)."""
        encoder = self._encoder
        if encoder is None:
            return
        if call.vector is not None:
            query = call.op.query  # type: ignore[union-attr]
            encoder.check(call.vector, f"the query {str(query)[:60]!r}")
        row = call.row
        if row is not None and row.embedded is not None:
            if len(row.embedded) != len(row.vectors):
                raise ConfigurationError(
                    f"the embedder returned {len(row.embedded)} vectors for "
                    f"{len(row.vectors)} texts"
                )
            for (_, text), vec in zip(row.vectors, row.embedded, strict=True):
                encoder.check(vec, f"the text {text[:60]!r}")

    def _plan_calls(
        self, calls: Sequence[MergedCall], after: Set[int]
    ) -> tuple[BatchPlan, EmbedRequest]:
        """The batch of merged calls (in the order they were issued); the last write
        of a key wins."""
        rows: dict[tuple[Namespace, str], PutRow] = {}
        for call in calls:
            if call.row is not None:
                op: PutOp = call.op  # type: ignore[assignment]
                rows.pop((op.namespace, op.key), None)
                rows[(op.namespace, op.key)] = call.row
        return self._assemble(
            [c.op for c in calls],
            rows,
            after,
            [c.vector for c in calls],
            [c.filter_key for c in calls],
        )

    # -- assembling ------------------------------------------------------------------------

    def _assemble(
        self,
        ops: Sequence[Op],
        rows: Mapping[tuple[Namespace, str], PutRow],
        after: Set[int],
        vectors: Sequence[Vector | None] | None,
        filter_keys: Sequence[Hashable | None],
    ) -> tuple[BatchPlan, EmbedRequest]:
        plan = BatchPlan(size=len(ops))
        request = EmbedRequest()
        queries: dict[str, None] = {}
        same: tuple[dict[Hashable, SearchPlan], dict[Hashable, SearchPlan]] = ({}, {})
        for i, op in enumerate(ops):
            late = i in after
            reads = plan.after if late else plan.reads
            if isinstance(op, GetOp):
                reads.gets.append((i, op))
            elif isinstance(op, SearchOp):
                vector = None if vectors is None else vectors[i]
                # Identical searches of one stage run once (LangGraph's merged
                # calls dedupe them too); each still gets its own items.
                key = _search_key(op, vector, filter_keys[i])
                twin = None if key is None else same[late].get(key)
                if twin is not None:
                    twin.copies.append(i)
                    continue
                sp = SearchPlan(index=i, op=op, vector=None)
                reads.searches.append(sp)
                if key is not None:
                    same[late][key] = sp
                if vector is not None:
                    request.search_vectors[i] = vector
                elif op.query and self._spec is not None:
                    queries[op.query] = None
            elif isinstance(op, ListNamespacesOp):
                reads.lists.append((i, op))
        request.queries = list(queries)
        if rows:
            plan.put = self._plan_puts(rows, request)
        return plan, request

    @staticmethod
    def _plan_puts(rows: Mapping[tuple[Namespace, str], PutRow], request: EmbedRequest) -> PutPlan:
        plan = PutPlan()
        texts: dict[str, int] = {}
        embedded: list[Vector] = []
        # Rows are written (and locked) in the order of these arrays: one order
        # for every batch, so concurrent batches over the same keys wait for
        # each other instead of deadlocking.
        for (ns, key), row in sorted(rows.items(), key=lambda entry: entry[0]):
            if row.frame is None:
                plan.del_ns.append(ns_text(ns))
                plan.del_keys.append(key)
                continue
            plan.ns.append(ns_text(ns))
            plan.keys.append(key)
            plan.values.append(row.frame)
            plan.docs.append(row.doc)
            plan.ttls.append(row.ttl)
            plan.texts.append(row.text)
            for n, (name, text) in enumerate(row.vectors):
                if row.embedded is None:
                    slot = texts.setdefault(text, len(texts))  # one embedding per text
                else:
                    slot = len(request.texts)
                    request.texts.append(text)
                    embedded.append(row.embedded[n])
                request.slots.append((ns, key, name, slot, row.doc))
        if texts:
            request.texts = list(texts)
        elif request.texts:
            request.doc_vectors = embedded
        return plan

    def _attach_vectors(
        self,
        plan: BatchPlan,
        request: EmbedRequest,
        doc_vectors: Sequence[Vector],
        query_vectors: Sequence[Vector],
        vector_oid: int | None,
    ) -> None:
        """Put the embeddings where the statements expect them (dims checked)."""
        encoder = self._encoder
        if encoder is None:
            return
        if len(doc_vectors) != len(request.texts):
            raise ConfigurationError(
                f"the embedder returned {len(doc_vectors)} vectors for {len(request.texts)} texts"
            )
        for n, vec in enumerate(doc_vectors):
            encoder.check(vec, f"the text {request.texts[n][:60]!r}")
        bodies = encoder.bodies(doc_vectors)
        if plan.put is not None:
            put = plan.put
            for ns, key, name, slot, doc in request.slots:
                put.v_ns.append(ns_text(ns))
                put.v_keys.append(key)
                put.v_fields.append(name)
                put.v_docs.append(doc)
                put.v_emb.append(bodies[slot])
        if not (request.queries or request.search_vectors):
            return
        assert vector_oid is not None
        by_text: dict[str, PgvectorParam] = {}
        for text, vec in zip(request.queries, query_vectors, strict=True):
            encoder.check(vec, f"the query {text[:60]!r}")
            by_text[text] = PgvectorParam(encoder.body(vec), vector_oid)
        for sp in plan.searches():
            given = request.search_vectors.get(sp.index)
            if given is not None:
                sp.vector = PgvectorParam(encoder.body(given), vector_oid)
            elif sp.op.query:
                sp.vector = by_text.get(sp.op.query)

    def _needs_vector_types(self, request: EmbedRequest, known: bool) -> bool:
        return (
            self._spec is not None
            and not known
            and bool(request.queries or request.slots or request.search_vectors)
        )

    def _to_embed(self, request: EmbedRequest) -> tuple[list[str], list[str]]:
        """Texts and queries left to embed (none for merged calls: their callers did)."""
        if request.doc_vectors is not None or request.search_vectors:
            return [], []
        return request.texts, request.queries


__all__ = ["EmbedRequest", "MergedCall", "Planning", "PutRow"]
