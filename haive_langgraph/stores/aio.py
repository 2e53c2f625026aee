"""``AsyncPostgresStore``: LangGraph's ``BaseStore`` on PostgreSQL for asyncio."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar, Unpack

from langgraph.store.base import Op, Result
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call, adrive
from haive_langgraph.db._conn_string import AsyncFromConnString
from haive_langgraph.db._driver import arun
from haive_langgraph.db._loop import call_on_loop
from haive_langgraph.db._periodic import periodic_task
from haive_langgraph.db._source_hook import ConnectionSourceHook
from haive_langgraph.stores import _merge as merge
from haive_langgraph.stores import _procedures as procedures
from haive_langgraph.stores._base import Shared, StoreBase, StoreOptions
from haive_langgraph.stores._config import DEFAULT_BUILD_MEMORY, ResourceQuota, TenantUsage
from haive_langgraph.stores._indexer import TaskIndexer
from haive_langgraph.stores._planning import MergedCall
from haive_langgraph.stores._procedures import Effect, Embed, Procedure, Vectors

T = TypeVar("T")


class AsyncPostgresStore(
    StoreBase, AsyncFromConnString, ConnectionSourceHook[AsyncConnectionSource]
):
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
        **options: Unpack[StoreOptions],
    ) -> None:
        self._init_base(options)
        replicas = options.get("replicas")
        self._source = AsyncConnectionSource(conn, config=self.config, replicas=replicas)
        self.loop = asyncio.get_running_loop()
        if self._settle_write_mode(options.get("index"), self._source.max_connections):
            self._shared.indexer = TaskIndexer(
                lambda tenants, stopping: self._adrive(
                    procedures.drain_backlog(self, tenants, stopping)
                )
            )

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
        await self._adrive(procedures.setup(self))

    # -- running procedures -------------------------------------------------------------

    async def _adrive(self, procedure: Procedure[T]) -> T:
        """Run a procedure on this event loop, performing its effects here."""
        return await adrive(procedure, self._perform)

    def _drive(self, procedure: Procedure[T], name: str = "") -> T:
        """Run a procedure on this store's event loop, from another thread."""
        return self._on_loop(self._adrive(procedure), name)

    async def _perform(self, effect: Effect) -> Any:
        """Run one effect of a procedure: the async store's only I/O."""
        if isinstance(effect, Call):
            return await self._source.call(effect)
        if isinstance(effect, Embed):
            return await self._embed(effect)
        async with self._source.connection() as conn:
            if not await arun(conn, effect.lock()):
                return 0
            try:
                return await arun(conn, effect.op())
            finally:
                if not conn.broken:
                    await arun(conn, effect.cleanup())

    async def _embed(self, request: Embed) -> tuple[Vectors, Vectors]:
        """Documents in one call; queries concurrently (each is one call)."""
        embeddings = self.embeddings
        assert embeddings is not None
        docs = await embeddings.aembed_documents(list(request.texts)) if request.texts else []
        queries = await asyncio.gather(*(embeddings.aembed_query(q) for q in request.queries))
        return docs, list(queries)

    def _on_loop(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        return call_on_loop(
            coro,
            self.loop,
            f"a synchronous call to AsyncPostgresStore ({name}, under get/put/search/delete/"
            "list_namespaces) on its own event loop would block it: use the async methods "
            "(`await store.aput(...)`, `aget`, `asearch`, `adelete`, `alist_namespaces`, `abatch`)",
        )

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
        return await self._adrive(procedures.batch(self, plan, request))

    def batch(self, ops_: Iterable[Op]) -> list[Result]:
        """Sync :meth:`abatch`, for use from other threads."""
        return self._on_loop(self.abatch(list(ops_)), "batch")

    async def _run_calls(self, waiting: list[MergedCall]) -> None:
        """Run merged calls of this store's tenant as one batch; each gets its outcome.

        Each call's texts are embedded first, in its caller's context; a call
        whose embedding fails gets that error, the others go on.
        """
        loop = asyncio.get_running_loop()
        embedding = [c for c in waiting if c.context is not None]
        done = await asyncio.gather(
            *(
                loop.create_task(self._adrive(procedures.embed_call(self, c)), context=c.context)
                for c in embedding
            ),
            return_exceptions=True,
        )
        for c, exc in zip(embedding, done, strict=True):
            if isinstance(exc, BaseException) and not c.future.done():
                c.future.set_exception(exc)
        await self._adrive(procedures.merged_batch(self, waiting))

    # -- TTL -----------------------------------------------------------------------------

    async def sweep_ttl(self, *, batch_size: int = 1000) -> int:
        """Delete expired items in batches; returns how many (see :meth:`PostgresStore.sweep_ttl`)."""
        return await self._adrive(procedures.sweep_ttl(self, batch_size))

    async def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        """Sweep expired items every ``sweep_interval_minutes`` in a background task."""
        shared = self._shared
        if shared.sweeper is not None and not shared.sweeper.done():
            return shared.sweeper  # type: ignore[no-any-return]
        shared.sweeper = periodic_task(
            lambda: self._adrive(procedures.sweeper_round(self)),
            self._sweep_interval(sweep_interval_minutes),
            name="haive-store-ttl-sweeper",
            first_now=False,
        )
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
        procedure = procedures.index_pending(self, batch_size, rebuild, maintenance_work_mem)
        return await self._adrive(procedure)

    # -- tenants ---------------------------------------------------------------------------

    async def delete_tenant(self, tenant_id: str) -> dict[str, int]:
        """Erase every row of a tenant (see :meth:`PostgresStore.delete_tenant`)."""
        return await self._source.call(procedures.delete_tenant(self, tenant_id))

    async def set_quota(self, quota: ResourceQuota | None, *, tenant_id: str | None = None) -> None:
        """Set (or with ``None`` remove) a tenant's quota (see :meth:`PostgresStore.set_quota`)."""
        await self._source.call(procedures.set_quota(self, quota, tenant_id))

    async def get_usage(self, *, tenant_id: str | None = None) -> TenantUsage:
        """What a tenant holds, and its quota."""
        return await self._source.call(procedures.get_usage(self, tenant_id))


async def _flush(shared: Shared) -> None:
    """Run the waiting calls, a batch per tenant, until none are left.

    Started by the first call of a tick, it runs after the tick's other calls
    have queued theirs; calls made while a batch runs make the next batch.
    """
    calls: list[MergedCall] = []
    try:
        while shared.calls:
            calls, shared.calls = shared.calls, []
            groups = merge.by_tenant(calls)
            done = await asyncio.gather(
                *(group[0].store._run_calls(group) for group in groups),
                return_exceptions=True,
            )
            for group, exc in zip(groups, done, strict=True):
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
