"""``PostgresStore``: LangGraph's ``BaseStore`` on PostgreSQL (synchronous API)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable
from typing import Any, TypeVar, Unpack

from langgraph.store.base import Op, Result
from psycopg import Connection
from psycopg_pool import ConnectionPool

from haive_langgraph.db._call import Call, drive
from haive_langgraph.db._conn_string import FromConnString
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import run
from haive_langgraph.db._periodic import PeriodicThread
from haive_langgraph.db._source_hook import ConnectionSourceHook
from haive_langgraph.stores import _procedures as procedures
from haive_langgraph.stores._base import StoreBase, StoreOptions
from haive_langgraph.stores._config import DEFAULT_BUILD_MEMORY, ResourceQuota, TenantUsage
from haive_langgraph.stores._indexer import ThreadIndexer
from haive_langgraph.stores._merge import ThreadMerger
from haive_langgraph.stores._planning import MergedCall
from haive_langgraph.stores._procedures import Effect, Embed, Procedure, Vectors

T = TypeVar("T")


class PostgresStore(StoreBase, FromConnString, ConnectionSourceHook[ConnectionSource]):
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
        **options: Unpack[StoreOptions],
    ) -> None:
        self._init_base(options)
        self._source = ConnectionSource(conn, config=self.config, replicas=options.get("replicas"))
        self._shared.merger = ThreadMerger(_run_merged, self._source.max_connections)
        if self._settle_write_mode(options.get("index"), self._source.max_connections):
            self._shared.indexer = ThreadIndexer(
                lambda tenants, stopping: self._drive(
                    procedures.drain_backlog(self, tenants, stopping), "index"
                )
            )

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
        self._drive(procedures.setup(self), "setup")

    # -- running procedures -------------------------------------------------------------

    def _drive(self, procedure: Procedure[T], name: str = "") -> T:
        """Run a procedure in this thread, performing its effects here."""
        return drive(procedure, self._perform)

    async def _adrive(self, procedure: Procedure[T]) -> T:
        """Run a procedure in a worker thread."""
        return await asyncio.to_thread(self._drive, procedure)

    def _perform(self, effect: Effect) -> Any:
        """Run one effect of a procedure: the sync store's only I/O."""
        if isinstance(effect, Call):
            return self._source.call(effect)
        if isinstance(effect, Embed):
            return self._embed(effect)
        with self._source.connection() as conn:
            if not run(conn, effect.lock()):
                return 0
            try:
                return run(conn, effect.op())
            finally:
                # A connection that died took its settings and its lock with it.
                if not conn.broken:
                    run(conn, effect.cleanup())

    def _embed(self, request: Embed) -> tuple[Vectors, Vectors]:
        """Documents in one call; several queries in threads (each is one call)."""
        embeddings = self.embeddings
        assert embeddings is not None
        docs = embeddings.embed_documents(list(request.texts)) if request.texts else []
        queries = request.queries
        if len(queries) <= 1:
            return docs, [embeddings.embed_query(q) for q in queries]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(queries))) as pool:
            return docs, list(pool.map(embeddings.embed_query, queries))

    # -- BaseStore ----------------------------------------------------------------------

    def batch(self, ops_: Iterable[Op]) -> list[Result]:
        """Run a batch: reads first (one round trip), then every write in one statement.

        Embeddings are computed before a connection is taken. A batch of one
        op (what ``get``, ``put``, ``search``, ``delete`` and
        ``list_namespaces`` send) made while another runs is merged with the
        other threads' into the next batch; each call is checked and embedded
        in its own thread first, gets its own result or error, and sees the
        writes issued before it (see :mod:`haive_langgraph.stores._merge`).
        """
        ops_ = list(ops_)
        if len(ops_) == 1:
            return [self._shared.merger.submit(self._merged_call(ops_[0]))]
        plan, request = self._plan(ops_)
        return self._drive(procedures.batch(self, plan, request), "batch")

    def _merged_call(self, op: Op) -> MergedCall:
        """One call to merge: checked, encoded and embedded in the caller's thread."""
        call = self._plan_call(op)
        call.store = self
        if self.embeddings is not None and self._needs_embedding(call):
            self._drive(procedures.embed_call(self, call))
        return call

    async def abatch(self, ops_: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`: runs the sync batch in a worker thread."""
        return await asyncio.to_thread(self.batch, list(ops_))

    # -- TTL -----------------------------------------------------------------------------

    def sweep_ttl(self, *, batch_size: int = 1000) -> int:
        """Delete expired items in batches (each its own transaction); returns how many.

        An unbound store sweeps every tenant; a tenant-bound one its own tenant.
        Reads never return expired items, swept or not.
        """
        return self._drive(procedures.sweep_ttl(self, batch_size), "sweep_ttl")

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` in a daemon thread.

        With ``write_mode="deferred"`` it also adds pending vectors to the index.

        Returns:
            A future; cancel it (or call :meth:`stop_ttl_sweeper`) to stop.
        """
        shared = self._shared
        running: PeriodicThread | None = shared.sweeper
        if running is not None and running.is_alive():
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            future.add_done_callback(lambda f: running.request_stop() if f.cancelled() else None)
            return future
        shared.sweeper = rounds = PeriodicThread(
            lambda: self._drive(procedures.sweeper_round(self), "sweeper"),
            self._sweep_interval(sweep_interval_minutes),
            name="haive-store-ttl-sweeper",
            first_now=False,
        )
        return rounds.finished

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; ``True`` when it is not running any more."""
        shared = self._shared
        if shared.sweeper is None:
            return True
        if not shared.sweeper.stop(timeout):
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
        procedure = procedures.index_pending(self, batch_size, rebuild, maintenance_work_mem)
        return self._drive(procedure, "index_pending")

    # -- tenants ---------------------------------------------------------------------------

    def delete_tenant(self, tenant_id: str) -> dict[str, int]:
        """Erase every row of a tenant: store items, vectors, quota, and checkpointer rows.

        One transaction. A tenant-bound store can only erase its own tenant.

        Returns:
            Rows deleted per table (tables that do not exist are left out).
        """
        return self._source.call(procedures.delete_tenant(self, tenant_id))

    def set_quota(self, quota: ResourceQuota | None, *, tenant_id: str | None = None) -> None:
        """Set (or with ``None`` remove) a tenant's quota; its usage is recounted.

        Writers of the store wait while the tenant's items are counted. Needs
        write access to ``store_tenants`` (an admin role).
        """
        self._source.call(procedures.set_quota(self, quota, tenant_id))

    def get_usage(self, *, tenant_id: str | None = None) -> TenantUsage:
        """What a tenant holds, and its quota."""
        return self._source.call(procedures.get_usage(self, tenant_id))


def _run_merged(calls: list[MergedCall]) -> None:
    """Run merged calls of one tenant as a batch (:class:`ThreadMerger`'s ``run``)."""
    store: PostgresStore = calls[0].store
    store._drive(procedures.merged_batch(store, calls), "batch")
