"""``PostgresStore``: LangGraph's ``BaseStore`` on PostgreSQL (synchronous API)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from langgraph.store.base import Op, Result, SearchItem, TTLConfig
from psycopg import Connection
from psycopg_pool import ConnectionPool

from haive_langgraph.codec import Codec
from haive_langgraph.db import ConnectionSource, PersistenceConfig, Route, run
from haive_langgraph.db._conn_string import FromConnString
from haive_langgraph.db._driver import OpFactory
from haive_langgraph.stores import _index_ops as index_ops
from haive_langgraph.stores import _ops as ops
from haive_langgraph.stores._base import StoreBase
from haive_langgraph.stores._batch import batch_op
from haive_langgraph.stores._config import (
    DEFAULT_BUILD_MEMORY,
    PostgresIndexConfig,
    ResourceQuota,
    TenantUsage,
)
from haive_langgraph.stores._errors import quota_error
from haive_langgraph.stores._hybrid_ops import hybrid_search_op
from haive_langgraph.stores._indexer import ThreadIndexer

T = TypeVar("T")

logger = logging.getLogger(__name__)


class PostgresStore(StoreBase, FromConnString):
    """LangGraph store on PostgreSQL: key-value items, filters, pgvector search, TTL, tenants.

    Use it wherever LangGraph takes a store: ``graph.compile(store=store)``,
    ``create_react_agent(..., store=store)``. Async methods (``aget``,
    ``asearch`` ...) run the sync ones in a worker thread; use
    :class:`AsyncPostgresStore` in asyncio applications.

    Args:
        conn: A DSN (a pool is opened and owned; SQLAlchemy URLs too),
            ``None`` (``HAIVE_DATABASE_URL``, ``DATABASE_URL``, then the
            embedded server), a psycopg ``Connection`` (autocommit, any row
            factory; used one operation at a time) or a ``ConnectionPool``
            (borrowed per operation; no instance-wide lock).
        index: Vector search: ``{"dims": 384, "embed": embeddings,
            "fields": ["text"]}`` plus pgvector options (see
            :class:`PostgresIndexConfig`). Without it, ``query=`` is ignored.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` minutes,
            ``refresh_on_read``, ``sweep_interval_minutes``). Expired items
            are never returned, swept or not.
        codec: Frames (and optionally compresses and encrypts) stored values.
        filter_fields: Dotted paths of values kept in plaintext for filters.
            Default: the whole value when the codec does not encrypt, nothing
            when it does.
        tenant_id: Tenant of this store (default from the config: ``""``).
        schema: Schema of the tables (default ``haive``).
        config: Connection and server settings.
        replicas: DSNs of streaming read replicas (default:
            ``HAIVE_REPLICA_URLS``). Searches and namespace listings read
            from them, gets from one that has replayed this store's writes;
            reads that refresh a TTL and writes go to the primary.

    Example:
        >>> with PostgresStore.from_conn_string(index={"dims": 384, "embed": embed}) as store:
        ...     store.setup()
        ...     store.put(("users", "u1", "memories"), "m1", {"text": "likes tea"})
        ...     store.search(("users", "u1"), query="drinks", limit=5)
    """

    def __init__(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any] | None = None,
        *,
        index: PostgresIndexConfig | Mapping[str, Any] | None = None,
        ttl: TTLConfig | None = None,
        codec: Codec | None = None,
        filter_fields: Sequence[str] | None = None,
        tenant_id: str | None = None,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
        replicas: Sequence[str] | None = None,
    ) -> None:
        self._init_base(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            index=index,
            ttl=ttl,
            filter_fields=filter_fields,
        )
        self._source = ConnectionSource(conn, config=self.config, replicas=replicas)
        if self._settle_write_mode(index, self._source.max_connections):
            self._shared.indexer = ThreadIndexer(self._drain_backlog)

    def close(self) -> None:
        """Stop the sweeper and the background indexer, and close the pool this store
        opened (a lent one stays open).

        A store from :meth:`for_tenant` shares its parent's connections:
        closing it does nothing; close the parent.
        """
        if self._derived:
            return
        self.stop_ttl_sweeper()
        if self._shared.indexer is not None:
            self._shared.indexer.stop(self.config.pool_timeout)
        self._source.close()

    def setup(self) -> None:
        """Create or upgrade the tables, and the vector table and index when configured.

        Idempotent and safe from many processes at once. With an index, the
        first run needs the privilege to ``CREATE EXTENSION vector`` unless
        pgvector is already installed in the database.

        An ANN index left invalid (or missing) by a build that did not
        finish (cancelled, timed out, its process or server killed) is
        rebuilt here, unless another process is already rebuilding it; this
        takes as long as a build, and searches are exact (and slower) until
        it is done. A role that may not rebuild it (not the tables' owner)
        gets a logged warning, and setup goes on.

        Raises:
            ConfigurationError: the schema was set up with another vector index.
        """
        broken = self._source.run(lambda: ops.setup_op(self.schema, self._spec), transaction=True)
        if broken:
            try:
                self._repair_index(DEFAULT_BUILD_MEMORY, checked=True)
            except psycopg.errors.InsufficientPrivilege as exc:
                logger.warning(index_ops.repair_refused(self.schema, exc))

    def _run(
        self,
        factory: OpFactory[T],
        *,
        read: bool = False,
        transaction: bool = False,
        route: Route = "primary",
        tenant_id: str | None = None,
    ) -> T:
        """Run a store operation for this store's tenant (or ``tenant_id``).

        Raises:
            QuotaExceededError: a usage trigger refused the write.
        """
        try:
            return self._source.run(
                factory,
                read=read,
                transaction=transaction,
                route=route,
                scope=self._scope(tenant_id),
            )
        except psycopg.Error as exc:
            quota = quota_error(exc)
            if quota is None:
                raise
            raise quota from None

    # -- BaseStore ----------------------------------------------------------------------

    def batch(self, ops_: Iterable[Op]) -> list[Result]:
        """Run a batch: reads first (one round trip), then every write in one statement.

        Embeddings are computed before a connection is taken.
        """
        plan, request = self._plan(ops_)
        doc_vectors: list[list[float]] = []
        query_vectors: list[list[float]] = []
        if self.embeddings is not None:
            if request.texts:
                doc_vectors = self.embeddings.embed_documents(request.texts)
            if request.queries:
                query_vectors = self._embed_queries(request.queries)
        shared = self._shared
        if self._needs_vector_types(request, shared.vector_types is not None):
            shared.vector_types = self._run(self._vector_types_op, read=True)
        oid = None if shared.vector_types is None else shared.vector_types.oid
        self._attach_vectors(plan, request, doc_vectors, query_vectors, oid)
        ctx = self._context()
        try:
            return self._run(
                lambda: batch_op(ctx, plan), read=plan.put is None, route=self._route(plan)
            )
        finally:
            if self._wrote_vectors(plan):
                self._shared.indexer.wake(self.tenant_id)

    def _embed_queries(self, queries: list[str]) -> list[list[float]]:
        assert self.embeddings is not None
        if len(queries) == 1:
            return [self.embeddings.embed_query(queries[0])]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(queries))) as pool:
            return list(pool.map(self.embeddings.embed_query, queries))

    async def abatch(self, ops_: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`: runs the sync batch in a worker thread."""
        return await asyncio.to_thread(self.batch, list(ops_))

    # -- hybrid search -------------------------------------------------------------------

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
        assert self.embeddings is not None
        vector = self.embeddings.embed_query(query)
        if self._shared.vector_types is None:
            self._shared.vector_types = self._run(self._vector_types_op, read=True)
        plan = self._hybrid_plan(op, vector)
        ctx = self._context()
        return self._run(
            lambda: hybrid_search_op(ctx, plan),
            read=True,
            route="primary" if op.refresh_ttl else "replica",
        )

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
        """Async :meth:`hybrid_search`: runs it in a worker thread."""
        return await asyncio.to_thread(
            lambda: self.hybrid_search(
                namespace_prefix,
                query,
                filter=filter,
                limit=limit,
                offset=offset,
                refresh_ttl=refresh_ttl,
            )
        )

    # -- TTL -----------------------------------------------------------------------------

    def sweep_ttl(self, *, batch_size: int = 1000) -> int:
        """Delete expired items in batches (each its own transaction); returns how many.

        An unbound store sweeps every tenant; a tenant-bound one its own tenant.
        Reads never return expired items, swept or not.
        """
        tenant = self.tenant_id or None
        total = 0
        while True:
            n = self._run(lambda: ops.sweep_op(self._statements, tenant, batch_size))
            total += n
            if n < batch_size:
                return total

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` in a daemon thread.

        With ``write_mode="deferred"`` it also adds pending vectors to the index.

        Returns:
            A future; cancel it (or call :meth:`stop_ttl_sweeper`) to stop.
        """
        shared = self._shared
        if shared.sweeper is not None and shared.sweeper.is_alive():
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            future.add_done_callback(lambda f: shared.stop.set() if f.cancelled() else None)
            return future
        interval = float(
            sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        )
        stop = threading.Event()
        future = concurrent.futures.Future()

        def loop() -> None:
            while not stop.wait(interval * 60):
                try:
                    swept = self.sweep_ttl()
                    if swept:
                        logger.info("store TTL sweep deleted %d expired items", swept)
                    if self._spec is not None and self._spec.deferred:
                        self.index_pending(rebuild=False)
                    else:
                        self._repair_index(DEFAULT_BUILD_MEMORY)
                except Exception:
                    logger.exception("store TTL sweep failed")
            if not future.done():
                future.set_result(None)

        thread = threading.Thread(target=loop, name="haive-store-ttl-sweeper", daemon=True)
        shared.sweeper, shared.stop = thread, stop
        future.add_done_callback(lambda f: stop.set() if f.cancelled() else None)
        thread.start()
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; ``True`` when it is not running any more."""
        shared = self._shared
        if shared.sweeper is None:
            return True
        shared.stop.set()
        shared.sweeper.join(timeout)
        if shared.sweeper.is_alive():
            return False
        shared.sweeper = None
        return True

    # -- vectors written without index maintenance ---------------------------------------------

    def index_pending(
        self,
        *,
        batch_size: int = 1000,
        rebuild: bool | None = None,
        maintenance_work_mem: str = DEFAULT_BUILD_MEMORY,
    ) -> int:
        """Add vectors written with ``write_mode="deferred"`` to the ANN index.

        Until then they are found by exact search. Small backlogs are indexed
        in batches (each its own transaction); a backlog at least as large as
        the indexed vectors (and 10,000 or more) is indexed by rebuilding the
        index in bulk, which is several times cheaper per vector and needs the
        tables' owner (``CREATE INDEX CONCURRENTLY``; searches stay correct
        meanwhile, exact and slower). An invalid or missing index (a build
        that did not finish) is always rebuilt, with every vector in it.

        Args:
            batch_size: Vectors per transaction when indexing in batches.
            rebuild: Force (``True``) or forbid (``False``) the bulk rebuild
                of a valid index.
            maintenance_work_mem: Memory for the bulk build (the graph should
                fit: about 1.5 x the vectors' size).

        Returns:
            How many vectors were indexed (after a repair: every vector);
            0 when another process holds the rebuild lock.
        """
        spec = self._spec
        if spec is None or spec.kind == "flat":
            return 0
        repaired = self._repair_index(maintenance_work_mem)
        if repaired is not None:
            return repaired
        st = self._statements
        pending, total = self._run(lambda: index_ops.count_vectors_op(st), read=True)
        if not pending:
            return 0
        if self._rebuild_wanted(pending, total, rebuild):
            return self._rebuild(lambda: index_ops.rebuild_index_op(st, spec, maintenance_work_mem))
        done = 0
        while True:
            n = self._run(lambda: index_ops.index_pending_op(st, batch_size))
            done += n
            if n < batch_size:
                return done

    def _drain_backlog(self, tenants: set[str], stopping: Callable[[], bool]) -> None:
        """One round of the background indexer (see :func:`index_ops.backlog`)."""
        shared, st, spec = self._shared, self._statements, self._spec
        assert spec is not None
        plan = index_ops.backlog(sorted(tenants), may_rebuild=not shared.rebuild_refused)
        reply: Any = None
        while not stopping():
            try:
                action, tenant = plan.send(reply)
            except StopIteration:
                return
            if action == "count":
                reply = self._run(
                    lambda: index_ops.count_vectors_op(st), read=True, tenant_id=tenant
                )
            elif action == "batch":
                reply = self._run(
                    functools.partial(
                        index_ops.index_pending_op, st, index_ops.BACKGROUND_BATCH, tenant
                    ),
                    tenant_id=tenant,
                )
            else:
                try:
                    reply = self._rebuild(
                        lambda: index_ops.rebuild_index_op(st, spec, DEFAULT_BUILD_MEMORY)
                    )
                except psycopg.errors.InsufficientPrivilege as exc:
                    shared.rebuild_refused = True
                    logger.warning(index_ops.rebuild_refused(self.schema, exc))
                    reply = None

    def _repair_index(self, memory: str, *, checked: bool = False) -> int | None:
        """Rebuild the ANN index if it is invalid or missing (``checked``: known to be).

        Returns:
            ``None`` when the index is valid (or there is none to keep),
            else the vectors the rebuilt index holds (0 when another process
            holds the rebuild lock, or mended the index first).
        """
        spec = self._spec
        if spec is None or spec.kind == "flat":
            return None
        st = self._statements
        if not checked and self._run(lambda: index_ops.index_valid_op(st.schema), read=True):
            return None
        return self._rebuild(lambda: index_ops.rebuild_index_op(st, spec, memory, repair=True))

    def _rebuild(self, factory: OpFactory[int]) -> int:
        """Run a rebuild on one connection holding the schema's rebuild lock
        (outside a transaction: ``CREATE INDEX CONCURRENTLY``); 0 when another
        process holds the lock."""
        st = self._statements
        with self._source.connection() as conn:
            if not run(conn, index_ops.rebuild_lock_op(st)):
                return 0
            try:
                return run(conn, factory())
            finally:
                # A connection that died took its settings and its lock with it.
                if not conn.broken:
                    run(conn, index_ops.rebuild_cleanup_op(st))

    # -- tenants ---------------------------------------------------------------------------

    def delete_tenant(self, tenant_id: str) -> dict[str, int]:
        """Erase every row of a tenant: store items, vectors, quota, and checkpointer rows.

        One transaction. A tenant-bound store can only erase its own tenant.

        Returns:
            Rows deleted per table (tables that do not exist are left out).
        """
        tenant = self._erasable(tenant_id)
        return self._run(
            lambda: ops.delete_tenant_op(self._statements, tenant),
            transaction=True,
            tenant_id=tenant,
        )

    def set_quota(self, quota: ResourceQuota | None, *, tenant_id: str | None = None) -> None:
        """Set (or with ``None`` remove) a tenant's quota; its usage is recounted.

        Writers of the store wait while the tenant's items are counted. Needs
        write access to ``store_tenants`` (an admin role).
        """
        tenant = self._own_tenant(tenant_id)
        self._check_quota(quota)
        self._run(
            lambda: ops.set_quota_op(self._statements, tenant, quota),
            transaction=True,
            tenant_id=tenant,
        )

    def get_usage(self, *, tenant_id: str | None = None) -> TenantUsage:
        """What a tenant holds, and its quota."""
        tenant = self._own_tenant(tenant_id)
        return self._run(
            lambda: ops.usage_op(self._statements, tenant), read=True, tenant_id=tenant
        )


__all__ = ["PostgresStore"]
