"""The store's methods as sans-I/O procedures, written once for both store classes.

A procedure is a generator that yields *effects* and receives their results:
a :class:`~haive_langgraph.db.Call` (an operation and how to run it), an
:class:`Embed` (texts for the store's embedder) or a :class:`Rebuild` (the
ANN index rebuilt on one connection holding the schema's rebuild lock). An
effect that fails is thrown into the procedure at its ``yield``, so a
procedure handles errors (a refused rebuild) and cleans up (``finally``) as
plain code does.

The sync store performs effects with psycopg's ``Connection`` and the
embedder's sync methods, the async store with ``AsyncConnection`` and its
async methods; that is all they do (``db._call.drive`` / ``adrive`` step a
procedure, the store's ``_perform`` does each effect). Everything else
(what to run, in which order, with which options, retries of a backlog,
logging) is here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from langgraph.store.base import Result, SearchItem, SearchOp

from haive_langgraph.db._call import Call
from haive_langgraph.db._driver import Op, OpFactory
from haive_langgraph.stores import _index_ops as index_ops
from haive_langgraph.stores import _merge as merge
from haive_langgraph.stores import _ops as ops
from haive_langgraph.stores._batch import BatchPlan, batch_op
from haive_langgraph.stores._config import DEFAULT_BUILD_MEMORY, ResourceQuota, TenantUsage
from haive_langgraph.stores._hybrid_ops import hybrid_search_op

if TYPE_CHECKING:
    from haive_langgraph.stores._base import StoreBase
    from haive_langgraph.stores._planning import EmbedRequest, MergedCall

T = TypeVar("T")

logger = logging.getLogger(__name__)

Vectors = list[list[float]]


@dataclass(frozen=True, slots=True)
class Embed:
    """Texts to embed as documents, and queries (each embedded alone).

    Sent back: ``(document vectors, query vectors)``, in the order given.
    """

    texts: Sequence[str] = ()
    queries: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Rebuild the ANN index on one connection, outside a transaction, holding
    the schema's rebuild lock (:func:`index_ops.rebuild_lock_op`); the
    connection's settings and the lock are put back after it.

    Sent back: what ``op`` returns, or 0 when another process holds the lock.
    """

    statements: ops.Statements
    op: OpFactory[int]

    def lock(self) -> Op[bool]:
        return index_ops.rebuild_lock_op(self.statements)

    def cleanup(self) -> Op[None]:
        return index_ops.rebuild_cleanup_op(self.statements)


Effect = Call[Any] | Embed | Rebuild
Procedure = Generator[Effect, Any, T]


# -- setup and batches ---------------------------------------------------------------------


def setup(store: StoreBase) -> Procedure[None]:
    """Migrations and the vector table in one transaction, then an invalid or
    missing ANN index rebuilt (a role that may not rebuild it gets a warning)."""
    broken = yield Call(lambda: ops.setup_op(store.schema, store._spec), transaction=True)
    if broken:
        try:
            yield from repair_index(store, DEFAULT_BUILD_MEMORY, checked=True)
        except psycopg.errors.InsufficientPrivilege as exc:
            logger.warning(index_ops.repair_refused(store.schema, exc))


def batch(store: StoreBase, plan: BatchPlan, request: EmbedRequest) -> Procedure[list[Result]]:
    """A planned batch: what it still needs embedded (before a connection is
    taken), pgvector's types (once per store), then the batch itself."""
    texts, queries = store._to_embed(request)
    doc_vectors: Sequence[Sequence[float]] = request.doc_vectors or []
    query_vectors: Vectors = []
    if store.embeddings is not None and (texts or queries):
        embedded, query_vectors = yield Embed(texts, queries)
        if texts:
            doc_vectors = embedded
    shared = store._shared
    if store._needs_vector_types(request, shared.vector_types is not None):
        shared.vector_types = yield store._call(store._vector_types_op, read=True)
    oid = None if shared.vector_types is None else shared.vector_types.oid
    store._attach_vectors(plan, request, doc_vectors, query_vectors, oid)
    ctx = store._context()
    try:
        results: list[Result] = yield store._call(
            lambda: batch_op(ctx, plan),
            read=plan.put is None and not plan.after,
            route=store._route(plan),
        )
        return results
    finally:
        if store._wrote_vectors(plan):
            shared.indexer.wake(store.tenant_id)


def embed_call(store: StoreBase, call: MergedCall) -> Procedure[None]:
    """Embed what one merged call needs, and check it (run in its caller's context,
    so that a failing embedder fails that call only)."""
    op, row = call.op, call.row
    if isinstance(op, SearchOp) and op.query:
        _, (call.vector,) = yield Embed(queries=(op.query,))
    elif row is not None and row.vectors:
        row.embedded, _ = yield Embed(texts=[text for _, text in row.vectors])
    store._check_call_vectors(call)


def merged_batch(store: StoreBase, waiting: Sequence[MergedCall]) -> Procedure[None]:
    """Run merged calls of one tenant, embedded already, as one batch; each call's
    future gets its own result or error (see :mod:`haive_langgraph.stores._merge`)."""
    calls = [c for c in waiting if not c.future.done()]
    if not calls:
        return
    ops_ = [c.op for c in calls]
    plan: BatchPlan | None = None
    failure: BaseException | None = None
    try:
        plan, request = store._plan_calls(calls, merge.after_writes(ops_))
        yield from batch(store, plan, request)
    except Exception as exc:
        failure = exc
    outcomes, redo = merge.resolve(ops_, plan, {}, failure)
    for i in redo:
        # Alone, in the order they were issued.
        try:
            plan, request = store._plan_calls([calls[i]], frozenset())
            outcomes[i] = (yield from batch(store, plan, request))[0]
        except Exception as exc:
            outcomes[i] = merge.Failed(exc)
    for call, outcome in zip(calls, outcomes, strict=True):
        if call.future.done():
            continue  # the caller was cancelled
        if isinstance(outcome, merge.Failed):
            call.future.set_exception(outcome.error)
        else:
            call.future.set_result(outcome)


def hybrid_search(store: StoreBase, op: SearchOp) -> Procedure[list[SearchItem]]:
    """A checked hybrid search (see ``StoreBase._hybrid_op``): its query embedded, then run."""
    _, (vector,) = yield Embed(queries=(op.query or "",))
    shared = store._shared
    if shared.vector_types is None:
        shared.vector_types = yield store._call(store._vector_types_op, read=True)
    plan = store._hybrid_plan(op, vector)
    ctx = store._context()
    items: list[SearchItem] = yield store._call(
        lambda: hybrid_search_op(ctx, plan),
        read=True,
        route="primary" if op.refresh_ttl else "replica",
    )
    return items


# -- TTL -------------------------------------------------------------------------------------


def sweep_ttl(store: StoreBase, batch_size: int) -> Procedure[int]:
    """Delete expired items in batches, each its own transaction; how many.

    An unbound store sweeps every tenant, a tenant-bound one its own tenant.
    """
    tenant = store.tenant_id or None
    st = store._statements
    total = 0
    while True:
        n: int = yield store._call(lambda: ops.sweep_op(st, tenant, batch_size))
        total += n
        if n < batch_size:
            return total


def sweeper_round(store: StoreBase) -> Procedure[None]:
    """What the TTL sweeper does at each interval: sweep, then index deferred
    vectors (or rebuild an invalid index). Errors are logged, not raised."""
    try:
        swept = yield from sweep_ttl(store, 1000)
        if swept:
            logger.info("store TTL sweep deleted %d expired items", swept)
        if store._spec is not None and store._spec.deferred:
            yield from index_pending(store, 1000, False, DEFAULT_BUILD_MEMORY)
        else:
            yield from repair_index(store, DEFAULT_BUILD_MEMORY)
    except Exception:
        logger.exception("store TTL sweep failed")


# -- the ANN index ---------------------------------------------------------------------------


def index_pending(
    store: StoreBase, batch_size: int, rebuild: bool | None, memory: str
) -> Procedure[int]:
    """Index deferred vectors: a repair first if the index is invalid or missing,
    then in batches, or by a bulk rebuild when the backlog is large (see
    ``PostgresStore.index_pending``)."""
    spec = store._spec
    if spec is None or spec.kind == "flat":
        return 0
    repaired = yield from repair_index(store, memory)
    if repaired is not None:
        return repaired
    st = store._statements
    pending, total = yield store._call(lambda: index_ops.count_vectors_op(st), read=True)
    if not pending:
        return 0
    if store._rebuild_wanted(pending, total, rebuild):
        rebuilt: int = yield Rebuild(st, lambda: index_ops.rebuild_index_op(st, spec, memory))
        return rebuilt
    done = 0
    while True:
        n: int = yield store._call(lambda: index_ops.index_pending_op(st, batch_size))
        done += n
        if n < batch_size:
            return done


def repair_index(store: StoreBase, memory: str, *, checked: bool = False) -> Procedure[int | None]:
    """Rebuild the ANN index if it is invalid or missing (``checked``: known to be).

    Returns ``None`` when the index is valid (or there is none to keep), else
    the vectors the rebuilt index holds (0 when another process holds the
    rebuild lock, or mended the index first).
    """
    spec = store._spec
    if spec is None or spec.kind == "flat":
        return None
    st = store._statements
    if not checked and (yield store._call(lambda: index_ops.index_valid_op(st.schema), read=True)):
        return None
    rebuilt: int = yield Rebuild(
        st, lambda: index_ops.rebuild_index_op(st, spec, memory, repair=True)
    )
    return rebuilt


def drain_backlog(
    store: StoreBase, tenants: Iterable[str], stopping: Callable[[], bool]
) -> Procedure[None]:
    """One round of the background indexer (see :func:`index_ops.backlog`), until
    done or ``stopping()``."""
    shared, st, spec = store._shared, store._statements, store._spec
    assert spec is not None
    plan = index_ops.backlog(sorted(tenants), may_rebuild=not shared.rebuild_refused)
    reply: Any = None
    while not stopping():
        try:
            action, tenant = plan.send(reply)
        except StopIteration:
            return
        if action == "count":
            count = functools.partial(index_ops.count_vectors_op, st)
            reply = yield store._call(count, read=True, tenant_id=tenant)
        elif action == "batch":
            batch_op_ = functools.partial(
                index_ops.index_pending_op, st, index_ops.BACKGROUND_BATCH, tenant
            )
            reply = yield store._call(batch_op_, tenant_id=tenant)
        else:
            try:
                reply = yield Rebuild(
                    st, lambda: index_ops.rebuild_index_op(st, spec, DEFAULT_BUILD_MEMORY)
                )
            except psycopg.errors.InsufficientPrivilege as exc:
                shared.rebuild_refused = True
                logger.warning(index_ops.rebuild_refused(store.schema, exc))
                reply = None


# -- tenants ---------------------------------------------------------------------------------


def delete_tenant(store: StoreBase, tenant_id: str) -> Call[dict[str, int]]:
    """Erase every row of a tenant in one transaction (a bound store: its own only)."""
    tenant = store._erasable(tenant_id)
    st = store._statements
    return store._call(lambda: ops.delete_tenant_op(st, tenant), transaction=True, tenant_id=tenant)


def set_quota(store: StoreBase, quota: ResourceQuota | None, tenant_id: str | None) -> Call[None]:
    """Set (or with ``None`` remove) a tenant's quota, recounting its usage."""
    tenant = store._own_tenant(tenant_id)
    store._check_quota(quota)
    st = store._statements
    return store._call(
        lambda: ops.set_quota_op(st, tenant, quota), transaction=True, tenant_id=tenant
    )


def get_usage(store: StoreBase, tenant_id: str | None) -> Call[TenantUsage]:
    """What a tenant holds, and its quota."""
    tenant = store._own_tenant(tenant_id)
    st = store._statements
    return store._call(lambda: ops.usage_op(st, tenant), read=True, tenant_id=tenant)


__all__ = [
    "Effect",
    "Embed",
    "Procedure",
    "Rebuild",
]
