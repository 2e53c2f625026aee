"""What the sync and async stores share: configuration, validation and planning (no I/O)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypedDict, TypeVar

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from psycopg import sql

from haive_langgraph.codec import Codec, HaiveCodec, PlainCodec, default_codec
from haive_langgraph.db._call import Call
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import Op as DbOp
from haive_langgraph.db._driver import OpFactory
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._replicas import Route
from haive_langgraph.db._tenancy import TenantScope, validate_tenant_id
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import _procedures as procedures
from haive_langgraph.stores import _sql as S
from haive_langgraph.stores._batch import BatchPlan
from haive_langgraph.stores._config import (
    PostgresIndexConfig,
    ResourceQuota,
    VectorIndexSpec,
    normalize_index,
    normalize_ttl,
)
from haive_langgraph.stores._errors import quota_error
from haive_langgraph.stores._hybrid_ops import HybridPlan
from haive_langgraph.stores._index_ops import rebuild_wanted
from haive_langgraph.stores._ops import (
    Context,
    ScopeSizes,
    Statements,
    VectorTypes,
    vector_types_op,
)
from haive_langgraph.stores._planning import Planning
from haive_langgraph.stores._values import (
    PgvectorParam,
    VectorEncoder,
    validate_op,
)

T = TypeVar("T")


class StoreOptions(TypedDict, total=False):
    """The keyword arguments both store classes take besides ``conn`` (see
    :class:`~haive_langgraph.stores.PostgresStore`)."""

    index: PostgresIndexConfig | Mapping[str, Any] | None
    ttl: TTLConfig | None
    codec: Codec | None
    filter_fields: Sequence[str] | None
    tenant_id: str | None
    schema: str | None
    config: PersistenceConfig | None
    replicas: Sequence[str] | None


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
    # The TTL sweeper: a db._periodic.PeriodicThread (sync) or asyncio task (async).
    sweeper: Any = None
    # The async store's calls waiting to be merged, and the task running them;
    # the sync store's merger of concurrent threads' calls.
    calls: list[Any] = field(default_factory=list)
    flusher: Any = None
    merger: Any = None
    # The background indexer (write_mode="background"), and whether this role
    # was refused a bulk rebuild (it then indexes in batches only).
    indexer: Any = None
    rebuild_refused: bool = False


class StoreBase(Planning, BaseStore):
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

    def _init_base(self, options: StoreOptions) -> None:
        """Settle the options (all but the connection and the replicas).

        Raises:
            TypeError: an option neither store class takes.
            ConfigurationError: a bad option, naming it.
        """
        unknown = sorted(set(options) - StoreOptions.__optional_keys__)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}"
            )
        config, schema = options.get("config"), options.get("schema")
        tenant_id, codec = options.get("tenant_id"), options.get("codec")
        index, filter_fields = options.get("index"), options.get("filter_fields")
        self.config = config or PersistenceConfig()
        self.schema = validate_identifier(
            self.config.schema_name if schema is None else schema, what="schema name"
        )
        self.tenant_id = validate_tenant_id(
            self.config.tenant_id if tenant_id is None else tenant_id, allow_default=True
        )
        self.codec = codec or default_codec()
        self.ttl_config = normalize_ttl(options.get("ttl"))
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
        self._checked = set()
        self._statements = Statements(self.schema)
        self._scope_table = sql.Identifier(self.schema, S.ITEMS).as_string(None)
        self._shared = Shared()

    def _settle_write_mode(self, index: Mapping[str, Any] | None, connections: int) -> bool:
        """Fix the write mode for the connections given; whether a background
        indexer is wanted.

        Background indexing needs a connection of its own: with a lent
        connection (which it would share with the caller between calls), or
        a pool of one, the default write mode is ``"immediate"``, and
        ``"background"`` is refused.
        """
        spec = self._spec
        if spec is None or not spec.background:
            return False
        if connections < 2:
            if index is not None and "write_mode" in index:
                raise ConfigurationError(
                    'write_mode="background" indexes vectors on a connection of its own: give '
                    "the store a DSN or a pool of 2 connections or more, or use "
                    'write_mode="immediate" or "deferred" with a lent connection'
                )
            self._spec = dataclasses.replace(spec, deferred=False, background=False)
            return False
        return spec.kind != "flat"

    def _wrote_vectors(self, plan: BatchPlan) -> bool:
        """Whether a batch left vectors for the background indexer."""
        return (
            self._shared.indexer is not None
            and plan.put is not None
            and bool(plan.put.v_keys)
            and plan.stage in ("after", "done")
        )

    # -- running procedures ----------------------------------------------------------

    def _drive(self, procedure: procedures.Procedure[T], name: str) -> T:
        """Run a procedure to its end and return its result (blocking); ``name``
        is the public method, for errors."""
        raise NotImplementedError

    async def _adrive(self, procedure: procedures.Procedure[T]) -> T:
        """Run a procedure to its end and return its result."""
        raise NotImplementedError

    def _call(
        self,
        op: OpFactory[T],
        *,
        read: bool = False,
        transaction: bool = False,
        route: Route = "primary",
        tenant_id: str | None = None,
    ) -> Call[T]:
        """A call of a store operation for this store's tenant (or ``tenant_id``); a
        quota a usage trigger enforced raises ``QuotaExceededError``."""
        scope = self._scope(tenant_id)
        return Call(
            op, transaction=transaction, read=read, route=route, scope=scope, errors=quota_error
        )

    def _sweep_interval(self, minutes: float | None) -> float:
        """Seconds between two TTL sweeps (``minutes``, the TTL config's, else 5 minutes)."""
        return 60 * float(minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5)

    # -- hybrid search ---------------------------------------------------------------

    def hybrid_search(
        self,
        namespace_prefix: tuple[str, ...],
        /,
        query: str,
        *,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        """Full-text and vector search fused by reciprocal rank (needs ``index["hybrid"]``).

        The items best matching ``query`` by ``websearch_to_tsquery`` words
        (``"exact phrase"``, ``or``, ``-word``) and by embedding, each
        ranking restricted to ``namespace_prefix``, ``filter`` and live
        items, merged in one statement. Items in neither ranking (no vector
        and no matching word) are not returned, unlike :meth:`search`.

        Args:
            namespace_prefix: Namespace prefix to search in.
            query: The text searched for and embedded.
            filter: Same filters as :meth:`search`.
            limit: Most items to return.
            offset: Items to skip.
            refresh_ttl: Refresh the TTL of returned items (default: the
                TTL config's ``refresh_on_read``).

        Returns:
            Items, best first; ``score`` is the fused score, the sum of
            ``1 / (rrf_k + rank)`` over the rankings the item is in (at
            most ``2 / (rrf_k + 1)``), not a similarity.

        Raises:
            ConfigurationError: the store has no hybrid index, an empty
                query, a bad filter, or an embedding of the wrong size.
        """
        op = self._hybrid_op(namespace_prefix, query, filter, limit, offset, refresh_ttl)
        return self._drive(procedures.hybrid_search(self, op), "hybrid_search")

    async def ahybrid_search(
        self,
        namespace_prefix: tuple[str, ...],
        /,
        query: str,
        *,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        """Async :meth:`hybrid_search`."""
        op = self._hybrid_op(namespace_prefix, query, filter, limit, offset, refresh_ttl)
        return await self._adrive(procedures.hybrid_search(self, op))

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
        return rebuild_wanted(pending, total)

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


__all__ = ["Shared", "StoreBase", "StoreOptions"]
