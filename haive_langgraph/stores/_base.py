"""What the sync and async stores share: configuration, validation and planning (no I/O)."""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Self

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    Op,
    PutOp,
    SearchOp,
    TTLConfig,
    get_text_at_path,
)
from psycopg import sql

from haive_langgraph.codec import Codec, HaiveCodec, PlainCodec, default_codec
from haive_langgraph.db import Op as DbOp
from haive_langgraph.db import PersistenceConfig, Route, TenantScope, validate_identifier
from haive_langgraph.db._limits import check_count
from haive_langgraph.db._tenancy import validate_tenant_id
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import _sql as S
from haive_langgraph.stores._batch import BatchPlan
from haive_langgraph.stores._config import (
    PostgresIndexConfig,
    ResourceQuota,
    VectorIndexSpec,
    check_ttl,
    normalize_index,
    normalize_ttl,
    tokenize_fields,
)
from haive_langgraph.stores._filters import compiled, frozen
from haive_langgraph.stores._hybrid_ops import HybridPlan
from haive_langgraph.stores._ops import (
    Context,
    PutPlan,
    ScopeSizes,
    Statements,
    VectorTypes,
    vector_types_op,
)
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

# Below this many pending vectors, index_pending adds them one batch at a time.
REBUILD_MIN_PENDING = 10_000


def _encrypts(codec: Codec) -> bool:
    if isinstance(codec, PlainCodec):
        return False
    if isinstance(codec, HaiveCodec):
        return codec.keyring is not None
    return True  # an unknown codec may protect content: keep nothing in plaintext


@dataclass(slots=True)
class Shared:
    """State shared by a store and the tenant-bound stores derived from it."""

    vector_types: VectorTypes | None = None
    scopes: ScopeSizes = field(default_factory=ScopeSizes)
    sweeper: Any = None
    stop: Any = None
    # The async store's calls waiting to be merged, and the task running them.
    calls: list[Any] = field(default_factory=list)
    flusher: Any = None


@dataclass(slots=True)
class PutRow:
    """One write of a batch, encoded: a delete when ``frame`` is None."""

    frame: bytes | None
    doc: bytes | None = None
    ttl: str | None = None
    # The text of the indexed fields (hybrid search), and (field, text) per vector.
    text: str | None = None
    vectors: list[tuple[str, str]] = field(default_factory=list)


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


def _search_key(op: SearchOp) -> Hashable | None:
    """What makes two searches identical (``None``: a filter too odd to compare)."""
    spec = frozen(op.filter) if op.filter else ()
    if spec is None:
        return None
    key = (op.namespace_prefix, spec, op.limit, op.offset, op.query, op.refresh_ttl)
    try:
        hash(key)
    except TypeError:  # an odd limit or query: its own validation refuses it
        return None
    return key


@dataclass(slots=True)
class EmbedRequest:
    """What a batch needs embedded, before any connection is taken."""

    texts: list[str] = field(default_factory=list)
    # For each put vector: (namespace, key, field, index into texts, filter document).
    slots: list[tuple[Namespace, str, str, int, bytes | None]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)


class StoreBase(BaseStore):
    """Configuration and pure logic shared by both store classes."""

    supports_ttl: bool = True

    config: PersistenceConfig
    schema: str
    tenant_id: str
    codec: Codec
    index_config: PostgresIndexConfig | None
    embeddings: Embeddings | None
    ttl_config: TTLConfig | None
    _spec: VectorIndexSpec | None
    _encoder: VectorEncoder | None
    _filter_paths: tuple[tuple[str, ...], ...] | None
    _statements: Statements
    _scope_table: str
    _shared: Shared
    # Tenant-bound stores share their parent's connections: closing one of
    # them leaves the parent's pool open.
    _derived: bool = False

    def _init_base(
        self,
        *,
        config: PersistenceConfig | None,
        schema: str | None,
        tenant_id: str | None,
        codec: Codec | None,
        index: PostgresIndexConfig | Mapping[str, Any] | None,
        ttl: TTLConfig | None,
        filter_fields: Sequence[str] | None,
    ) -> None:
        self.config = config or PersistenceConfig()
        self.schema = validate_identifier(
            self.config.schema_name if schema is None else schema, what="schema name"
        )
        self.tenant_id = validate_tenant_id(
            self.config.tenant_id if tenant_id is None else tenant_id, allow_default=True
        )
        self.codec = codec or default_codec()
        self.ttl_config = normalize_ttl(ttl)
        if index is not None:
            self.embeddings, self._spec = normalize_index(index)
            self.index_config = PostgresIndexConfig(**index)  # type: ignore[typeddict-item]
            self._encoder = VectorEncoder(self._spec.dims, self._spec.vector_type)
            text = self._spec.text
            if text is not None and _encrypts(self.codec) and not text.allow_plaintext_terms:
                raise ConfigurationError(
                    'index["hybrid"] keeps the words of the indexed fields in plaintext (a '
                    "tsvector) beside values this codec encrypts; set "
                    'index["hybrid"] = {"allow_plaintext_terms": True} to accept that, or turn '
                    "hybrid search off"
                )
        else:
            self.embeddings, self._spec, self.index_config, self._encoder = None, None, None, None
        if filter_fields is None:
            self._filter_paths = () if _encrypts(self.codec) else None
        else:
            if isinstance(filter_fields, str) or not all(
                isinstance(f, str) and f and all(f.split(".")) for f in filter_fields
            ):
                raise ConfigurationError(
                    f"filter_fields must be a list of dotted paths such as 'meta.kind', got {filter_fields!r}"
                )
            self._filter_paths = tuple(tuple(f.split(".")) for f in filter_fields)
        self._statements = Statements(self.schema)
        self._scope_table = sql.Identifier(self.schema, S.ITEMS).as_string(None)
        self._shared = Shared()

    # -- tenants -------------------------------------------------------------------

    def for_tenant(self, tenant_id: str) -> Self:
        """A store bound to ``tenant_id``, sharing this store's connections and settings.

        Every row it reads or writes belongs to that tenant. Under row-level
        security (an application role that does not own the tables) the
        database enforces the same boundary for any SQL in its transactions.

        A store already bound to a tenant cannot be rebound to another one:
        derive tenant stores from an unbound (admin) store.

        Raises:
            ConfigurationError: ``tenant_id`` is not a plain, non-empty
                string, or this store is bound to another tenant.
        """
        tenant = self._own_tenant(validate_tenant_id(tenant_id))
        bound = copy.copy(self)
        bound.tenant_id = tenant
        bound._derived = True
        return bound

    def _own_tenant(self, tenant_id: str | None) -> str:
        """The tenant a tenant-addressed method acts on; a bound store only reaches its own."""
        if tenant_id is None:
            return self.tenant_id
        tenant = validate_tenant_id(tenant_id)
        if self.tenant_id and tenant != self.tenant_id:
            raise ConfigurationError(
                f"this store is bound to tenant {self.tenant_id!r} and cannot act on tenant "
                f"{tenant!r}; use an unbound (admin) store"
            )
        return tenant

    def _erasable(self, tenant_id: str) -> str:
        """The tenant ``delete_tenant`` may erase: named explicitly, and this store's own if bound."""
        tenant = validate_tenant_id(tenant_id)
        return self._own_tenant(tenant)

    @staticmethod
    def _rebuild_wanted(pending: int, total: int, rebuild: bool | None) -> bool:
        if rebuild is not None:
            return rebuild
        return pending >= REBUILD_MIN_PENDING and pending >= total - pending

    @staticmethod
    def _check_quota(quota: object) -> None:
        if quota is not None and not isinstance(quota, ResourceQuota):
            raise TypeError(f"quota must be a ResourceQuota or None, got {type(quota).__name__}")

    # -- planning --------------------------------------------------------------------

    def _context(self) -> Context:
        return Context(
            statements=self._statements,
            tenant_id=self.tenant_id,
            codec=self.codec,
            spec=self._spec,
            vector_types=self._shared.vector_types,
            filter_paths=self._filter_paths,
            scopes=self._shared.scopes,
        )

    def _plan(
        self,
        ops: Iterable[Op],
        *,
        errors: dict[int, BaseException] | None = None,
        after: Set[int] = frozenset(),
    ) -> tuple[BatchPlan, EmbedRequest]:
        """Validate and sort a batch; nothing is sent and nothing is embedded yet.

        Args:
            ops: The batch.
            errors: Collects the error of each op refused (by index), which
                is then left out, instead of raising the first one.
            after: Indices of reads that run after the batch's write.
        """
        ops = list(ops)
        plan = BatchPlan(size=len(ops))
        request = EmbedRequest()
        puts: dict[tuple[Namespace, str], list[tuple[int, PutOp]]] = {}
        queries: dict[str, int] = {}
        same: tuple[dict[Hashable, SearchPlan], dict[Hashable, SearchPlan]] = ({}, {})
        checked: set[Hashable] = set()
        for i, op in enumerate(ops):
            try:
                self._plan_op(i, op, plan, puts, queries, same, checked, i in after)
            except Exception as exc:
                if errors is None:
                    raise
                errors[i] = exc
        request.queries = list(queries)
        rows = self._encode_puts(puts, errors)
        if rows:
            plan.put = self._plan_puts(rows, request)
        return plan, request

    def _plan_op(
        self,
        i: int,
        op: Op,
        plan: BatchPlan,
        puts: dict[tuple[Namespace, str], list[tuple[int, PutOp]]],
        queries: dict[str, int],
        same: tuple[dict[Hashable, SearchPlan], dict[Hashable, SearchPlan]],
        checked: set[Hashable],
        late: bool,
    ) -> None:
        if not isinstance(op, GetOp | SearchOp | PutOp | ListNamespacesOp):
            raise ConfigurationError(f"unknown store operation {type(op).__name__}")
        _validate(op, checked)
        reads = plan.after if late else plan.reads
        if isinstance(op, GetOp):
            text = check_key(op.key)
            if type(op.namespace) is not tuple or text is not op.key:
                op = op._replace(namespace=tuple(op.namespace), key=text)
            reads.gets.append((i, op))
        elif isinstance(op, SearchOp):
            sop = op
            if type(op.namespace_prefix) is not tuple:
                sop = op._replace(namespace_prefix=tuple(op.namespace_prefix))
            # Identical searches of one stage run once (LangGraph's merged
            # calls dedupe them too); each still gets its own items.
            key = _search_key(sop)
            twin = None if key is None else same[late].get(key)
            if twin is not None:
                twin.copies.append(i)
                return
            self._check_search(op)
            sp = SearchPlan(index=i, op=sop, vector=None)
            reads.searches.append(sp)
            if key is not None:
                same[late][key] = sp
            if op.query and self._spec is not None and op.query not in queries:
                queries[op.query] = len(queries)
        elif isinstance(op, ListNamespacesOp):
            self._check_page(op, "list_namespaces")
            reads.lists.append((i, op))
        else:
            ns = tuple(op.namespace)
            if not ns:
                raise InvalidNamespaceError("Namespace cannot be empty.")
            key_ = check_key(op.key)
            if op.value is not None:
                check_address(ns, key_)
            puts.setdefault((ns, key_), []).append((i, op))

    def _encode_puts(
        self,
        puts: Mapping[tuple[Namespace, str], list[tuple[int, PutOp]]],
        errors: dict[int, BaseException] | None,
    ) -> dict[tuple[Namespace, str], PutRow]:
        """Encode the writes; of several writes of one key, the last wins.

        With ``errors`` (merged calls), every write is encoded, so that each
        refused one gets its error, and the last one accepted wins.
        """
        rows: dict[tuple[Namespace, str], PutRow] = {}
        for (ns, key), entries in sorted(puts.items(), key=lambda entry: entry[0]):
            if errors is None:
                rows[(ns, key)] = self._encode_put(ns, key, entries[-1][1])
                continue
            for i, op in entries:
                try:
                    rows[(ns, key)] = self._encode_put(ns, key, op)
                except Exception as exc:
                    errors[i] = exc
        return rows

    @staticmethod
    def _check_page(op: SearchOp | ListNamespacesOp, what: str) -> None:
        """``limit`` and ``offset`` are integers from 0 (which gives nothing, as LangGraph's
        stores answer) to ``bigint``'s largest (``db._limits.check_count``)."""
        check_count(f"{what} limit", op.limit)
        check_count(f"{what} offset", op.offset)

    def _check_search(self, op: SearchOp) -> None:
        self._check_page(op, "search")
        # Compile once here so a bad filter fails before anything is embedded.
        compiled(op.filter, allowed=self._filter_paths)

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

    @staticmethod
    def _plan_puts(rows: Mapping[tuple[Namespace, str], PutRow], request: EmbedRequest) -> PutPlan:
        plan = PutPlan()
        texts: dict[str, int] = {}
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
            for name, text in row.vectors:
                slot = texts.setdefault(text, len(texts))
                request.slots.append((ns, key, name, slot, row.doc))
        request.texts = list(texts)
        return plan

    def _attach_vectors(
        self,
        plan: BatchPlan,
        request: EmbedRequest,
        doc_vectors: Sequence[Sequence[float]],
        query_vectors: Sequence[Sequence[float]],
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
        if request.queries:
            types = self._shared.vector_types
            assert types is not None
            by_text: dict[str, PgvectorParam] = {}
            for text, vec in zip(request.queries, query_vectors, strict=True):
                encoder.check(vec, f"the query {text[:60]!r}")
                by_text[text] = PgvectorParam(encoder.body(vec), types.oid)
            for sp in plan.searches():
                if sp.op.query:
                    sp.vector = by_text.get(sp.op.query)

    def _vector_types_op(self) -> DbOp[VectorTypes]:
        """Look up pgvector's types (and check the text-search configuration, if any)."""
        spec = self._spec
        assert spec is not None
        return vector_types_op(spec.vector_type, None if spec.text is None else spec.text.config)

    def _hybrid_op(
        self,
        namespace_prefix: tuple[str, ...],
        query: str,
        filter: dict[str, Any] | None,
        limit: int,
        offset: int,
        refresh_ttl: bool | None,
    ) -> SearchOp:
        """Validate a hybrid search before anything is embedded.

        Raises:
            ConfigurationError: the store has no hybrid index, the query is
                not a non-empty string, or a bad filter, limit or offset.
        """
        if self._spec is None or self._spec.text is None:
            raise ConfigurationError(
                'hybrid_search needs a store configured with index={..., "hybrid": True} '
                "(full-text and vector search); this store has "
                + ("no index" if self._spec is None else "a vector index without hybrid")
                + ": use search(query=...) for vector search"
            )
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError(f"hybrid_search needs a non-empty query string, got {query!r}")
        op = SearchOp(
            tuple(namespace_prefix),
            filter,
            limit,
            offset,
            query,
            # BaseStore.search's rule: the call's choice, else the TTL config's (default on).
            refresh_ttl
            if refresh_ttl is not None
            else (self.ttl_config or {}).get("refresh_on_read", True),
        )
        validate_op(op)
        self._check_search(op)
        return op

    def _hybrid_plan(self, op: SearchOp, vector: Sequence[float]) -> HybridPlan:
        encoder, types = self._encoder, self._shared.vector_types
        assert encoder is not None and types is not None
        encoder.check(vector, f"the query {op.query[:60]!r}" if op.query else "the query")
        return HybridPlan(op, PgvectorParam(encoder.body(vector), types.oid))

    def _needs_vector_types(self, request: EmbedRequest) -> bool:
        return (
            self._spec is not None
            and self._shared.vector_types is None
            and bool(request.queries or request.slots)
        )

    def _scope(self, tenant_id: str | None = None) -> TenantScope:
        """The tenant a call acts for (default: this store's), bound for row-level security."""
        return TenantScope(self._scope_table, self.tenant_id if tenant_id is None else tenant_id)

    @staticmethod
    def _route(plan: BatchPlan) -> Route:
        """Where a batch may run when read replicas are configured.

        Writes, and reads that refresh a TTL (an update), go to the primary;
        gets to a replica that has replayed this store's writes ("fresh");
        searches and namespace listings to any replica.
        """
        if plan.put is not None or plan.after:
            return "primary"
        reads = plan.reads
        if any(op.refresh_ttl for _, op in reads.gets) or any(
            sp.op.refresh_ttl for sp in reads.searches
        ):
            return "primary"
        return "fresh" if reads.gets else "replica"


__all__ = ["EmbedRequest", "Shared", "StoreBase"]
