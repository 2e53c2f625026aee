"""``AsyncPostgresStore``: LangGraph's ``BaseStore`` on PostgreSQL for asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from langgraph.store.base import Op, Result, SearchItem, SearchOp, TTLConfig
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from haive_langgraph.codec import Codec
from haive_langgraph.db import AsyncConnectionSource, PersistenceConfig, Route, arun
from haive_langgraph.db._conn_string import AsyncFromConnString
from haive_langgraph.db._driver import OpFactory
from haive_langgraph.stores import _index_ops as index_ops
from haive_langgraph.stores import _merge as merge
from haive_langgraph.stores import _ops as ops
from haive_langgraph.stores._base import Shared, StoreBase
from haive_langgraph.stores._batch import BatchPlan, batch_op
from haive_langgraph.stores._config import (
    DEFAULT_BUILD_MEMORY,
    PostgresIndexConfig,
    ResourceQuota,
    TenantUsage,
)
from haive_langgraph.stores._errors import quota_error
from haive_langgraph.stores._hybrid_ops import hybrid_search_op
from haive_langgraph.stores._indexer import TaskIndexer
from haive_langgraph.stores._planning import Call, EmbedRequest

T = TypeVar("T")
logger = logging.getLogger(__name__)


class AsyncPostgresStore(StoreBase, AsyncFromConnString):
    """LangGraph store on PostgreSQL for asyncio (``graph.ainvoke`` ...).

    Same storage and behaviour as :class:`PostgresStore`; statements run on
    psycopg's ``AsyncConnection``. The sync methods work from other threads
    (they run on this store's event loop) and raise
    ``asyncio.InvalidStateError`` on the loop's own thread, as LangGraph's
    async stores do.

    Args:
        conn: A DSN (an async pool is opened on first use and owned), an
            ``AsyncConnection`` (autocommit; one operation at a time) or an
            ``AsyncConnectionPool`` (no instance-wide lock).
        index: Vector search configuration (see :class:`PostgresStore`).
        ttl: LangGraph's ``TTLConfig``.
        codec: Frames (and optionally compresses and encrypts) stored values.
        filter_fields: Dotted paths of values kept in plaintext for filters.
        tenant_id: Tenant of this store (default ``""``).
        schema: Schema of the tables (default ``haive``).
        config: Connection and server settings.
        replicas: DSNs of streaming read replicas (see :class:`PostgresStore`).

    Example:
        >>> async with AsyncPostgresStore.from_conn_string(index=index) as store:
        ...     await store.setup()
        ...     await store.aput(("users", "u1"), "m1", {"text": "likes tea"})
    """

    def __init__(
        self,
        conn: str | AsyncConnection[Any] | AsyncConnectionPool[Any] | None = None,
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
        self._source = AsyncConnectionSource(conn, config=self.config, replicas=replicas)
        self.loop = asyncio.get_running_loop()
        if self._settle_write_mode(index, self._source.max_connections):
            self._shared.indexer = TaskIndexer(self._drain_backlog)

    async def aclose(self) -> None:
        """Stop the sweeper and close the pool this store opened (a lent one stays open).

        A store from :meth:`for_tenant` shares its parent's connections:
        closing it does nothing; close the parent.
        """
        if self._derived:
            return
        await self.stop_ttl_sweeper()
        if self._shared.indexer is not None:
            await self._shared.indexer.stop(self.config.pool_timeout)
        await self._source.close()

    async def setup(self) -> None:
        """Create or upgrade the tables, and the vector table and index when configured.

        Idempotent and safe from many processes at once; rebuilds an invalid
        or missing ANN index (see :meth:`PostgresStore.setup`).
        """
        broken = await self._source.run(
            lambda: ops.setup_op(self.schema, self._spec), transaction=True
        )
        if broken:
            try:
                await self._repair_index(DEFAULT_BUILD_MEMORY, checked=True)
            except psycopg.errors.InsufficientPrivilege as exc:
                logger.warning(index_ops.repair_refused(self.schema, exc))

    async def _run(
        self,
        factory: OpFactory[T],
        *,
        read: bool = False,
        transaction: bool = False,
        route: Route = "primary",
        tenant_id: str | None = None,
    ) -> T:
        """Async twin of :meth:`PostgresStore._run`."""
        try:
            return await self._source.run(
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

    async def abatch(self, ops_: Iterable[Op]) -> list[Result]:
        """Run a batch: reads first (one round trip), then every write in one statement.

        Embeddings are computed before a connection is taken. A batch of one
        op (what ``aget``, ``aput``, ``asearch``, ``adelete`` and
        ``alist_namespaces`` send) is merged with the other calls of the same
        event-loop tick into one batch; each call is checked and embedded in
        its caller's context first, gets its own result or error, and sees
        the writes issued before it (see :mod:`haive_langgraph.stores._merge`).
        """
        ops_ = list(ops_)
        if len(ops_) == 1 and asyncio.get_running_loop() is self.loop:
            # Checked here (a refused op raises to its caller); embedded in the
            # batch, in the caller's context (context variables hold there).
            call = self._plan_call(ops_[0])
            call.store, call.future = self, self.loop.create_future()
            if self.embeddings is not None and self._needs_embedding(call):
                call.context = contextvars.copy_context()
            shared = self._shared
            shared.calls.append(call)
            if shared.flusher is None:
                shared.flusher = self.loop.create_task(_flush(shared), name="haive-store-batch")
            return [await call.future]
        plan, request = self._plan(ops_)
        return await self._execute(plan, request)

    async def _embed_call(self, call: Call) -> None:
        """Embed what one merged call needs (run in its caller's context)."""
        embeddings, op, row = self.embeddings, call.op, call.row
        assert embeddings is not None
        if isinstance(op, SearchOp) and op.query:
            call.vector = await embeddings.aembed_query(op.query)
        elif row is not None and row.vectors:
            row.embedded = list(await embeddings.aembed_documents([t for _, t in row.vectors]))
        self._check_call_vectors(call)

    async def _execute(self, plan: BatchPlan, request: EmbedRequest) -> list[Result]:
        """Embed what the batch still needs, then run it."""
        texts, queries = self._to_embed(request)
        doc_vectors: Sequence[Sequence[float]] = request.doc_vectors or []
        query_vectors: list[list[float]] = []
        if self.embeddings is not None:
            if texts:
                doc_vectors = await self.embeddings.aembed_documents(texts)
            if queries:
                query_vectors = list(
                    await asyncio.gather(*(self.embeddings.aembed_query(q) for q in queries))
                )
        shared = self._shared
        if self._needs_vector_types(request, shared.vector_types is not None):
            shared.vector_types = await self._run(self._vector_types_op, read=True)
        oid = None if shared.vector_types is None else shared.vector_types.oid
        self._attach_vectors(plan, request, doc_vectors, query_vectors, oid)
        ctx = self._context()
        try:
            return await self._run(
                lambda: batch_op(ctx, plan),
                read=plan.put is None and not plan.after,
                route=self._route(plan),
            )
        finally:
            if self._wrote_vectors(plan):
                self._shared.indexer.wake(self.tenant_id)

    async def _run_calls(self, waiting: list[Call]) -> None:
        """Run merged calls of this store's tenant as one batch; each gets its outcome.

        Each call's texts are embedded first, in its caller's context; a call
        whose embedding fails gets that error, the others go on.
        """
        loop = asyncio.get_running_loop()
        embedding = [p for p in waiting if p.context is not None]
        done = await asyncio.gather(
            *(loop.create_task(self._embed_call(p), context=p.context) for p in embedding),
            return_exceptions=True,
        )
        for p, exc in zip(embedding, done, strict=True):
            if isinstance(exc, BaseException) and not p.future.done():
                p.future.set_exception(exc)
        calls = [p for p in waiting if not p.future.done()]
        if not calls:
            return
        ops_ = [c.op for c in calls]
        plan: BatchPlan | None = None
        failure: BaseException | None = None
        try:
            plan, request = self._plan_calls(calls, merge.after_writes(ops_))
            await self._execute(plan, request)
        except Exception as exc:
            failure = exc
        outcomes, redo = merge.resolve(ops_, plan, {}, failure)
        for i in redo:
            # Alone, in the order they were issued.
            try:
                plan, request = self._plan_calls([calls[i]], frozenset())
                outcomes[i] = (await self._execute(plan, request))[0]
            except Exception as exc:
                outcomes[i] = merge.Failed(exc)
        for call, outcome in zip(calls, outcomes, strict=True):
            if call.future.done():
                continue  # the caller was cancelled
            if isinstance(outcome, merge.Failed):
                call.future.set_exception(outcome.error)
            else:
                call.future.set_result(outcome)

    def _on_loop(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise asyncio.InvalidStateError(
                f"a synchronous call to AsyncPostgresStore ({name}, under get/put/search/delete/"
                "list_namespaces) on its own event loop would block it: use the async methods "
                "(`await store.aput(...)`, `aget`, `asearch`, `adelete`, `alist_namespaces`, `abatch`)"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def batch(self, ops_: Iterable[Op]) -> list[Result]:
        """Sync :meth:`abatch`, for use from other threads."""
        return self._on_loop(self.abatch(list(ops_)), "batch")

    # -- hybrid search -------------------------------------------------------------------

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
        """Full-text and vector search fused by reciprocal rank (see
        :meth:`PostgresStore.hybrid_search`)."""
        op = self._hybrid_op(namespace_prefix, query, filter, limit, offset, refresh_ttl)
        assert self.embeddings is not None
        vector = await self.embeddings.aembed_query(query)
        if self._shared.vector_types is None:
            self._shared.vector_types = await self._run(self._vector_types_op, read=True)
        plan = self._hybrid_plan(op, vector)
        ctx = self._context()
        return await self._run(
            lambda: hybrid_search_op(ctx, plan),
            read=True,
            route="primary" if op.refresh_ttl else "replica",
        )

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
        """Sync :meth:`ahybrid_search`, for use from other threads."""
        return self._on_loop(
            self.ahybrid_search(
                namespace_prefix,
                query,
                filter=filter,
                limit=limit,
                offset=offset,
                refresh_ttl=refresh_ttl,
            ),
            "hybrid_search",
        )

    # -- TTL -----------------------------------------------------------------------------

    async def sweep_ttl(self, *, batch_size: int = 1000) -> int:
        """Delete expired items in batches; returns how many (see :meth:`PostgresStore.sweep_ttl`)."""
        tenant = self.tenant_id or None
        total = 0
        while True:
            n = await self._run(lambda: ops.sweep_op(self._statements, tenant, batch_size))
            total += n
            if n < batch_size:
                return total

    async def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        """Sweep expired items every ``sweep_interval_minutes`` in a background task."""
        shared = self._shared
        if shared.sweeper is not None and not shared.sweeper.done():
            return shared.sweeper  # type: ignore[no-any-return]
        interval = float(
            sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        )

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval * 60)
                try:
                    swept = await self.sweep_ttl()
                    if swept:
                        logger.info("store TTL sweep deleted %d expired items", swept)
                    if self._spec is not None and self._spec.deferred:
                        await self.index_pending(rebuild=False)
                    else:
                        await self._repair_index(DEFAULT_BUILD_MEMORY)
                except Exception:
                    logger.exception("store TTL sweep failed")

        shared.sweeper = asyncio.create_task(loop(), name="haive-store-ttl-sweeper")
        return shared.sweeper  # type: ignore[no-any-return]

    async def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Stop the sweeper task; ``True`` when it is not running any more.

        (``timeout`` keeps the signature of LangGraph's async store.)
        """
        shared = self._shared
        task = shared.sweeper
        if task is None:
            return True
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.CancelledError, TimeoutError):
            pass
        if not task.done():
            return False
        shared.sweeper = None
        return True

    async def index_pending(
        self,
        *,
        batch_size: int = 1000,
        rebuild: bool | None = None,
        maintenance_work_mem: str = DEFAULT_BUILD_MEMORY,
    ) -> int:
        """Add deferred vectors to the ANN index, and rebuild an invalid or missing
        one (see :meth:`PostgresStore.index_pending`)."""
        spec = self._spec
        if spec is None or spec.kind == "flat":
            return 0
        repaired = await self._repair_index(maintenance_work_mem)
        if repaired is not None:
            return repaired
        st = self._statements
        pending, total = await self._run(lambda: index_ops.count_vectors_op(st), read=True)
        if not pending:
            return 0
        if self._rebuild_wanted(pending, total, rebuild):
            return await self._rebuild(
                lambda: index_ops.rebuild_index_op(st, spec, maintenance_work_mem)
            )
        done = 0
        while True:
            n = await self._run(lambda: index_ops.index_pending_op(st, batch_size))
            done += n
            if n < batch_size:
                return done

    async def _drain_backlog(self, tenants: set[str], stopping: Callable[[], bool]) -> None:
        """Async twin of :meth:`PostgresStore._drain_backlog`."""
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
                reply = await self._run(
                    lambda: index_ops.count_vectors_op(st), read=True, tenant_id=tenant
                )
            elif action == "batch":
                reply = await self._run(
                    functools.partial(
                        index_ops.index_pending_op, st, index_ops.BACKGROUND_BATCH, tenant
                    ),
                    tenant_id=tenant,
                )
            else:
                try:
                    reply = await self._rebuild(
                        lambda: index_ops.rebuild_index_op(st, spec, DEFAULT_BUILD_MEMORY)
                    )
                except psycopg.errors.InsufficientPrivilege as exc:
                    shared.rebuild_refused = True
                    logger.warning(index_ops.rebuild_refused(self.schema, exc))
                    reply = None

    async def _repair_index(self, memory: str, *, checked: bool = False) -> int | None:
        """Async twin of :meth:`PostgresStore._repair_index`."""
        spec = self._spec
        if spec is None or spec.kind == "flat":
            return None
        st = self._statements
        if not checked and await self._run(lambda: index_ops.index_valid_op(st.schema), read=True):
            return None
        return await self._rebuild(
            lambda: index_ops.rebuild_index_op(st, spec, memory, repair=True)
        )

    async def _rebuild(self, factory: OpFactory[int]) -> int:
        """Async twin of :meth:`PostgresStore._rebuild`."""
        st = self._statements
        async with self._source.connection() as conn:
            if not await arun(conn, index_ops.rebuild_lock_op(st)):
                return 0
            try:
                return await arun(conn, factory())
            finally:
                if not conn.broken:
                    await arun(conn, index_ops.rebuild_cleanup_op(st))

    # -- tenants ---------------------------------------------------------------------------

    async def delete_tenant(self, tenant_id: str) -> dict[str, int]:
        """Erase every row of a tenant (see :meth:`PostgresStore.delete_tenant`)."""
        tenant = self._erasable(tenant_id)
        return await self._run(
            lambda: ops.delete_tenant_op(self._statements, tenant),
            transaction=True,
            tenant_id=tenant,
        )

    async def set_quota(self, quota: ResourceQuota | None, *, tenant_id: str | None = None) -> None:
        """Set (or with ``None`` remove) a tenant's quota (see :meth:`PostgresStore.set_quota`)."""
        tenant = self._own_tenant(tenant_id)
        self._check_quota(quota)
        await self._run(
            lambda: ops.set_quota_op(self._statements, tenant, quota),
            transaction=True,
            tenant_id=tenant,
        )

    async def get_usage(self, *, tenant_id: str | None = None) -> TenantUsage:
        """What a tenant holds, and its quota."""
        tenant = self._own_tenant(tenant_id)
        return await self._run(
            lambda: ops.usage_op(self._statements, tenant), read=True, tenant_id=tenant
        )


async def _flush(shared: Shared) -> None:
    """Run the waiting calls, a batch per tenant, until none are left.

    Started by the first call of a tick, it runs after the tick's other calls
    have queued theirs; calls made while a batch runs make the next batch.
    """
    calls: list[Call] = []
    try:
        while shared.calls:
            calls, shared.calls = shared.calls, []
            groups: dict[str, list[Call]] = {}
            for call in calls:
                if not call.future.done():
                    groups.setdefault(call.store.tenant_id, []).append(call)
            done = await asyncio.gather(
                *(group[0].store._run_calls(group) for group in groups.values()),
                return_exceptions=True,
            )
            for group, exc in zip(groups.values(), done, strict=True):
                if isinstance(exc, BaseException):
                    for call in group:
                        if not call.future.done():
                            call.future.set_exception(exc)
    except BaseException:
        # Cancelled (the loop shutting down): so are the calls still waiting.
        for call in (*calls, *shared.calls):
            call.future.cancel()
        shared.calls = []
        raise
    finally:
        shared.flusher = None
