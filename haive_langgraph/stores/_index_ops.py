"""Maintenance of the store's ANN index, as sans-I/O operations.

Vectors written with ``write_mode="deferred"`` are *pending* (``indexed =
false``, outside the partial ANN index) until :func:`index_pending_op` marks
them in batches or :func:`rebuild_index_op` rebuilds the index in bulk.

A build that does not finish leaves the index *invalid*: ``CREATE INDEX
CONCURRENTLY`` commits the index's catalog entry first and marks it valid
last, so a cancel, a timeout, the death of its session or of the server
part-way leaves an index the planner never uses, which (once "ready") every
write still maintains; or, between the rebuild's DROP and CREATE, no index
at all. Vectors are then marked indexed but served by no index: searches
are exact (a scan), and stay correct, but slow. :func:`index_valid_op`
finds that state (by name, in the store's schema) and a rebuild with
``repair=True`` mends it. The store runs the check in ``setup()``,
``index_pending()`` and its background sweeper.

Rebuilds run outside a transaction (``CREATE INDEX CONCURRENTLY`` cannot
run in one) on one connection that holds the schema's session-level rebuild
lock (:func:`rebuild_lock_op`), so several processes repairing at once build
once: the others find the lock taken and leave it to its holder.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any, Literal

from psycopg import sql

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.stores import _sql as S

if TYPE_CHECKING:
    from haive_langgraph.stores._config import VectorIndexSpec
    from haive_langgraph.stores._ops import Statements


def index_valid_op(schema: str) -> Op[bool]:
    """Whether the schema's ANN index exists and is valid."""
    row = yield Step(S.ANN_INDEX_VALID, (schema, S.ANN_INDEX), fetch="one")
    return row is not None and bool(row[0])


def count_vectors_op(statements: Statements) -> Op[tuple[int, int]]:
    """``(pending, total)`` vectors of every tenant."""
    row = yield Step(statements.q(S.COUNT_VECTORS), fetch="one")
    return int(row[0]), int(row[1])


def index_pending_op(statements: Statements, batch: int, tenant_id: str | None = None) -> Op[int]:
    """Add up to ``batch`` pending vectors (of ``tenant_id``, or of every tenant)
    to the ANN index (one transaction)."""
    return (yield from maintenance_batch_op(statements, S.INDEX_PENDING, "v", batch, tenant_id))


def maintenance_batch_op(
    statements: Statements, template: str, alias: str, batch: int, tenant_id: str | None
) -> Op[int]:
    """A maintenance statement over up to ``batch`` rows (``%(n)s``) of ``tenant_id``,
    or of every tenant (``{tenant}``: a condition on ``alias``); the rows it handled."""
    params: dict[str, object] = {"n": batch}
    tenant: sql.Composable = sql.SQL("")
    if tenant_id is not None:
        params["t"] = tenant_id
        tenant = sql.SQL(" AND {}.tenant_id = %(t)s").format(sql.Identifier(alias))
    row = yield Step(statements.q(template, tenant=tenant), params, fetch="one")
    return int(row[0])


# -- the background indexer (write_mode="background") --------------------------------------

# Vectors per transaction of the background indexer. Its transaction holds the
# rows it indexes: a put re-writing one of them waits for it. pgvector adds
# about 1-3 ms per vector to an HNSW index of 20,000-100,000 vectors, so a
# batch holds its rows for 0.2-0.6 s, and its commit makes them indexed.
BACKGROUND_BATCH = 200

# Batches between two checks whether a bulk rebuild would now be cheaper.
RECOUNT_EVERY = 10

# A backlog this large, and at least as large as the indexed set, is indexed
# by rebuilding the index in bulk (several times cheaper per vector).
REBUILD_MIN_PENDING = 10_000

Action = tuple[Literal["count", "rebuild", "batch"], str | None]


def rebuild_wanted(pending: int, total: int) -> bool:
    """Whether a backlog of ``pending`` vectors (of ``total``) is cheaper rebuilt in bulk."""
    return pending >= REBUILD_MIN_PENDING and pending >= total - pending


def backlog(tenants: Iterable[str], *, may_rebuild: bool) -> Generator[Action, Any, None]:
    """One round of the background indexer, as the actions its driver runs.

    Yields ``("count", tenant)`` (send back ``(pending, total)``),
    ``("rebuild", None)`` (send back the vectors indexed, or ``None`` when the
    role may not rebuild) and ``("batch", tenant)`` (index up to
    :data:`BACKGROUND_BATCH` of the tenant's pending vectors; send back how
    many). A tenant is done when a batch comes back short.
    """
    for tenant in tenants:
        batches = 0
        while True:
            if may_rebuild and batches % RECOUNT_EVERY == 0:
                pending, total = yield ("count", tenant)
                if not pending:
                    break
                if rebuild_wanted(pending, total):
                    done = yield ("rebuild", None)
                    if done is None:
                        may_rebuild = False  # not the tables' owner: batches only
                    elif done:
                        continue
                    # 0: another process holds the rebuild lock; index batches meanwhile.
            batches += 1
            if (yield ("batch", tenant)) < BACKGROUND_BATCH:
                break


def rebuild_lock_op(statements: Statements) -> Op[bool]:
    """Take the session-level rebuild lock of the schema; ``False`` if another holds it."""
    row = yield Step(S.TRY_REBUILD_LOCK, (S.LOCK_CLASS_REBUILD, statements.schema), fetch="one")
    return bool(row[0])


def rebuild_index_op(
    statements: Statements, spec: VectorIndexSpec, memory: str, *, repair: bool = False
) -> Op[int]:
    """Index every vector by rebuilding the ANN index in bulk.

    Run outside a transaction (autocommit), holding the rebuild lock: the
    index is dropped and built again ``CONCURRENTLY``, so reads and writes go
    on meanwhile (searches are exact, and slower, until the build ends). A
    bulk build is several times cheaper per vector than adding vectors one by
    one (measured at 100,000 384-dim vectors: 37 s for the whole build, 5 ms
    per vector added one by one). The build runs without statement and lock
    timeouts (see ``S.SET_BUILD_SETTINGS``); :func:`rebuild_cleanup_op` puts
    the connection's back.

    With ``repair``, only an invalid or missing index is rebuilt (checked
    again under the lock: another process may have mended it meanwhile).

    Returns:
        The vectors that were pending; with ``repair``, every vector the new
        index holds (0 when the index was valid).
    """
    if repair and (yield from index_valid_op(statements.schema)):
        return 0
    pending, total = yield from count_vectors_op(statements)
    yield Step(S.SET_BUILD_SETTINGS, (memory,), fetch="one")
    yield Step(statements.q(S.DROP_ANN_INDEX), fetch="none", prepare=False)
    yield Step(statements.q(S.MARK_ALL_INDEXED), fetch="none", prepare=False)
    yield Step(statements.q(S.ann_index_ddl(spec, concurrently=True)), fetch="none", prepare=False)
    return total if repair else pending


def rebuild_cleanup_op(statements: Statements) -> Op[None]:
    """The connection's own settings back, and the rebuild lock released."""
    for statement in S.RESET_BUILD_SETTINGS:
        yield Step(statement, fetch="none", prepare=False)
    yield Step(S.RELEASE_REBUILD_LOCK, (S.LOCK_CLASS_REBUILD, statements.schema), fetch="one")


def _reason(exc: BaseException) -> str:
    """The first line of the server's refusal (the exception's type if it says nothing)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def repair_refused(schema: str, exc: BaseException) -> str:
    """What ``setup()`` logs when its role may not rebuild an invalid index."""
    return (
        f"the vector index {schema}.{S.ANN_INDEX} is invalid or missing (a build did not "
        f"finish) and this role may not rebuild it ({_reason(exc)}); searches stay correct but "
        f"scan every vector: run setup() or index_pending() as the owner of {schema}.{S.VECTORS}"
    )


def rebuild_refused(schema: str, exc: BaseException) -> str:
    """What the background indexer logs when its role may not rebuild the index."""
    return (
        f"the background indexer may not rebuild {schema}.{S.ANN_INDEX} in bulk "
        f"({_reason(exc)}); it adds pending vectors in batches instead (slower per vector). "
        f"Run index_pending() as the owner of {schema}.{S.VECTORS} after large imports"
    )
