"""The store's vector index and its concurrent readers: interrupted builds, TTL-refresh deadlocks.

* An ANN index build that does not finish (a cancelled ``CREATE INDEX
  CONCURRENTLY``, a client killed mid-build) leaves an *invalid* index that
  searches never use and (once ready) writes still maintain. ``setup()``,
  ``index_pending()`` and the background indexer find it by name in the
  store's schema and rebuild it under the schema's rebuild lock; searches are
  exact meanwhile. The rebuild runs without the connection's statement and
  lock timeouts, which would otherwise cancel it part-way.
* Reads that refresh TTLs (``refresh_on_read``) take row locks; concurrent
  reads of overlapping items in different orders (two queries ranking the
  same items oppositely, gets in any order, a get and a search in one batch)
  must never deadlock: a refresh skips rows another transaction holds.

Builds are caught mid-way deterministically: an open repeatable-read
transaction keeps ``CREATE INDEX CONCURRENTLY`` in its last phase, "waiting
for old snapshots" (the index built, maintained by writes, and invalid),
which ``pg_stat_progress_create_index`` shows.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.store.base import GetOp, PutOp, SearchOp
from psycopg import conninfo, sql

from haive_langgraph.db import PersistenceConfig
from haive_langgraph.stores import ResourceQuota
from haive_langgraph.stores import _sql as S
from tests.stores.conftest import Driver, Factory, store_factory

NS = ("idx",)
DIMS = 4
N_ITEMS = 120
ROOT = Path(__file__).resolve().parents[2]


def angle_vector(theta: float) -> list[float]:
    return [math.cos(theta), math.sin(theta), 0.0, 0.0]


def item_angle(i: int) -> float:
    """Item ``i`` lies on a quarter circle: query "a" (angle 0) ranks items 0, 1, 2 ...
    first, query "b" (angle pi/2) ranks them in the opposite order."""
    return (i + 0.5) / N_ITEMS * (math.pi / 2)


def embed(texts: Sequence[str]) -> list[list[float]]:
    out = []
    for text in texts:
        if text == "a":
            out.append(angle_vector(0.0))
        elif text == "b":
            out.append(angle_vector(math.pi / 2))
        elif text.startswith("angle "):
            out.append(angle_vector(float(text.split()[1])))
        else:
            out.append(angle_vector(item_angle(int(text.split()[1]))))
    return out


def index_config(**extra: Any) -> dict[str, Any]:
    return {"dims": DIMS, "embed": embed, "fields": ["text"], **extra}


@pytest.fixture(params=["sync", "async"])
async def make(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[Factory]:
    async with store_factory(request.param, dsn, "ix") as factory:
        yield factory


def schema_of(store: Driver) -> str:
    return str(store.store.schema)  # type: ignore[attr-defined]


# == TTL refresh under concurrent readers ===============================================


MIXES = {
    # Two queries ranking the same items in opposite orders, and a filter search.
    "searches": (0, 1, 2),
    # Batches of gets, each in its own shuffled order.
    "gets": (3,),
    # A batch of gets and a vector search, refreshed in one transaction.
    "batches": (4,),
    # The same with a quota: each refresh also updates the tenant's usage row.
    "batches with a quota": (4,),
}


@pytest.mark.parametrize("mix", list(MIXES))
async def test_concurrent_refreshing_reads_never_deadlock(
    make: Factory, dsn: str, mix: str
) -> None:
    """Concurrent reads refreshing the TTLs of overlapping items: none fails, and
    every item's expiry moved forward. Before the fix each refresh locked its rows
    in the read's order and most of these calls failed with DeadlockDetected."""
    store = await make(index=index_config(), ttl={"default_ttl": 60, "refresh_on_read": True})
    await store.batch([_put(f"k{i:03d}", {"text": f"item {i}", "n": i}) for i in range(N_ITEMS)])
    if "quota" in mix:
        await store.admin("set_quota", ResourceQuota(max_items=10 * N_ITEMS))
    before = _expiries(dsn, schema_of(store))
    keys = sorted(before)
    rng = random.Random(7)

    async def call(kind: int) -> Any:
        if kind == 0:
            return await store.search(NS, query="a", limit=N_ITEMS)
        if kind == 1:
            return await store.search(NS, query="b", limit=N_ITEMS)
        if kind == 2:
            return await store.search(NS, filter={"n": {"$gte": 0}}, limit=N_ITEMS)
        ops: list[Any] = [GetOp(NS, k) for k in rng.sample(keys, len(keys))]
        if kind == 4:
            ops.append(SearchOp(NS, None, N_ITEMS, 0, rng.choice("ab")))
        return await store.batch(ops)

    kinds = MIXES[mix]
    results = await asyncio.gather(
        *(call(kinds[i % len(kinds)]) for i in range(30)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    deadlocks = [e for e in errors if isinstance(e, psycopg.errors.DeadlockDetected)]
    assert not deadlocks, f"{len(deadlocks)} of {len(results)} reads deadlocked: {deadlocks[0]}"
    assert not errors, errors[0]
    for r in results:
        assert len(r) in (N_ITEMS, N_ITEMS + 1)
        assert all(x is not None for x in r[:N_ITEMS])
    after = _expiries(dsn, schema_of(store))
    assert all(after[k] > before[k] for k in keys)


def _put(key: str, value: dict[str, Any], ttl: float | None = 60) -> PutOp:
    return PutOp(NS, key, value, ttl=ttl)


def _expiries(dsn: str, schema: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT key, expires_at FROM {}.store_items").format(sql.Identifier(schema))
        ).fetchall()
    return dict(rows)


# == interrupted index builds ============================================================

# Deferred writes, so that index_pending(rebuild=True) has a backlog to build;
# scopes of 20 vectors or more use the index; ef_search above the item count
# makes the HNSW search exhaustive, so a search through the index is exact too.
REPAIR_INDEX = index_config(
    write_mode="deferred", exact_search_threshold=20, ann_index_config={"ef_search": 400}
)


async def _load(store: Driver) -> None:
    await store.batch([_put(f"k{i:03d}", {"text": f"item {i}"}, ttl=None) for i in range(N_ITEMS)])


ANN_INDEX = "store_vectors_ann_idx"


def _index_state(dsn: str, schema: str) -> bool | None:
    """The ANN index: None when missing, else whether it is valid."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, ANN_INDEX),
        ).fetchone()
    return None if row is None else bool(row[0])


def _vector_counts(dsn: str, schema: str) -> tuple[int, int]:
    """(pending, total) vectors."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE NOT indexed), count(*) FROM {}.store_vectors"
            ).format(sql.Identifier(schema))
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _vectors_table(schema: str) -> str:
    return sql.Identifier(schema, "store_vectors").as_string(None)


@contextmanager
def _old_snapshot(dsn: str) -> Iterator[None]:
    """An open repeatable-read transaction holding a snapshot: CREATE INDEX
    CONCURRENTLY builds the index, then waits for it before marking the index
    valid (the index is built, ready, maintained by writes, and invalid)."""
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("SELECT 1")
        try:
            yield
        finally:
            conn.rollback()


def _build_waiting(dsn: str, schema: str) -> int:
    """The pid of the backend whose CREATE INDEX CONCURRENTLY on the vectors waits
    for old snapshots, as pg_stat_progress_create_index shows it (polled: there
    is no event to wait on)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT pid FROM pg_stat_progress_create_index"
                " WHERE relid = %s::regclass AND command = 'CREATE INDEX CONCURRENTLY'"
                " AND phase = 'waiting for old snapshots'",
                (_vectors_table(schema),),
            ).fetchone()
            if row is not None:
                return int(row[0])
            assert time.monotonic() < deadline, "no index build showed up"
            time.sleep(0.02)


def _cancel(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_cancel_backend(%s)", (pid,))


async def _break_index(store: Driver, dsn: str) -> None:
    """A real cancelled rebuild: index_pending(rebuild=True) cancelled while its
    CREATE INDEX CONCURRENTLY waits; it leaves an invalid index and every vector
    marked indexed."""
    schema = schema_of(store)
    with _old_snapshot(dsn):
        task = asyncio.ensure_future(store.admin("index_pending", rebuild=True))
        pid = await asyncio.to_thread(_build_waiting, dsn, schema)
        _cancel(dsn, pid)
        with pytest.raises(psycopg.errors.QueryCanceled):
            await task
    assert _index_state(dsn, schema) is False
    assert _vector_counts(dsn, schema) == (0, N_ITEMS)


QUERY_ANGLES = [(j + 0.25) / N_ITEMS * (math.pi / 2) for j in (3, 58, 111)]


async def _assert_exact(store: Driver) -> None:
    """Searches return the true nearest items (by angle), in order."""
    for theta in QUERY_ANGLES:
        hits = await store.search(NS, query=f"angle {theta!r}", limit=10)
        nearest = sorted(range(N_ITEMS), key=lambda i: abs(item_angle(i) - theta))[:10]
        assert [h.key for h in hits] == [f"k{i:03d}" for i in nearest]


@pytest.mark.parametrize("repair", ["setup", "index_pending"])
async def test_cancelled_build_is_repaired(make: Factory, dsn: str, repair: str) -> None:
    """A cancelled CREATE INDEX CONCURRENTLY: searches stay exact, and setup() or
    index_pending() rebuild the index (before the fix: index_pending() returned 0,
    setup() did nothing, and the invalid index stayed for good)."""
    store = await make(index=REPAIR_INDEX)
    schema = schema_of(store)
    await _load(store)
    await _break_index(store, dsn)
    await _assert_exact(store)  # no valid index: the search scans, exactly
    if repair == "setup":
        await store.admin("setup")
    else:
        assert await store.admin("index_pending") == N_ITEMS
    assert _index_state(dsn, schema) is True
    await _assert_exact(store)
    assert await store.admin("index_pending") == 0  # nothing left to do


async def test_concurrent_repairs_build_once(make: Factory, dsn: str) -> None:
    """Several processes setting up over an invalid index at once: every setup
    succeeds and one valid index results."""
    store = await make(index=REPAIR_INDEX)
    schema = schema_of(store)
    await _load(store)
    await _break_index(store, dsn)
    await asyncio.gather(*(make(schema=schema, index=REPAIR_INDEX) for _ in range(4)))
    assert _index_state(dsn, schema) is True
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND c.relname LIKE 'store_vectors_ann%%'",
            (_vectors_table(schema),),
        ).fetchall()
    assert names == [(ANN_INDEX,)]
    await _assert_exact(store)


async def test_rebuild_outlives_the_connection_timeouts(make: Factory, dsn: str) -> None:
    """The connection's statement_timeout and lock_timeout (300 ms here) do not
    apply to a rebuild: its CREATE INDEX CONCURRENTLY waits for an older snapshot
    past both, then finishes (before the fix the timeout cancelled it part-way,
    leaving an invalid index)."""
    config = PersistenceConfig(statement_timeout=300, lock_timeout=300)
    store = await make(index=REPAIR_INDEX, config=config)
    schema = schema_of(store)
    await _load(store)
    with _old_snapshot(dsn):
        task = asyncio.ensure_future(store.admin("index_pending", rebuild=True))
        pid = await asyncio.to_thread(_build_waiting, dsn, schema)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Until the build has waited five times the timeouts, or has failed.
            while not task.done():
                row = conn.execute(
                    "SELECT now() - query_start > interval '1.5 seconds'"
                    " FROM pg_stat_activity WHERE pid = %s",
                    (pid,),
                ).fetchone()
                if row is not None and row[0]:
                    break
                await asyncio.sleep(0.05)
    assert await task == N_ITEMS
    assert _index_state(dsn, schema) is True
    assert _vector_counts(dsn, schema) == (0, N_ITEMS)


# A process that rebuilds the index of a schema set up with REPAIR_INDEX.
REBUILDER = """
import sys
from haive_langgraph.stores import PostgresStore
dsn, schema = sys.argv[1], sys.argv[2]
index = {"dims": 4, "embed": lambda texts: [[1.0, 0.0, 0.0, 0.0] for _ in texts],
         "fields": ["text"], "write_mode": "deferred"}
PostgresStore(dsn, schema=schema, index=index).index_pending(rebuild=True)
"""


async def test_killed_build_is_repaired_by_setup(make: Factory, dsn: str) -> None:
    """A process SIGKILLed while its rebuild runs (caught in the build through
    pg_stat_progress_create_index): its server session gives up the build
    (client_connection_check_interval notices the dead client), leaving an
    invalid index; searches stay exact, and the next setup() rebuilds it."""
    store = await make(index=REPAIR_INDEX)
    schema = schema_of(store)
    await _load(store)
    child_dsn = conninfo.make_conninfo(dsn, options="-c client_connection_check_interval=100")
    with _old_snapshot(dsn):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", REBUILDER, child_dsn, schema, cwd=ROOT
        )
        try:
            await asyncio.to_thread(_build_waiting, dsn, schema)
        finally:
            child.kill()
            await child.wait()
        # The dead client's session held the rebuild lock until it ended.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))", (S.LOCK_CLASS_REBUILD, schema)
            )
            conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(%s))", (S.LOCK_CLASS_REBUILD, schema)
            )
    assert child.returncode == -9
    assert _index_state(dsn, schema) is False
    assert _vector_counts(dsn, schema) == (0, N_ITEMS)
    await _assert_exact(store)
    await store.admin("setup")
    assert _index_state(dsn, schema) is True
    await _assert_exact(store)


@pytest.mark.parametrize("write_mode", ["deferred", "immediate"])
async def test_background_indexer_repairs_a_missing_index(
    make: Factory, dsn: str, write_mode: str
) -> None:
    """A rebuild stopped between its DROP and its CREATE leaves no index at all;
    the TTL sweeper's next pass rebuilds it, whatever the write mode."""
    index = {**REPAIR_INDEX, "write_mode": write_mode}
    store = await make(index=index, ttl={"sweep_interval_minutes": 0.001})
    schema = schema_of(store)
    await _load(store)
    if write_mode == "deferred":
        assert await store.admin("index_pending", rebuild=True) == N_ITEMS
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, ANN_INDEX)))
    assert _index_state(dsn, schema) is None
    await _assert_exact(store)
    await store.admin("start_ttl_sweeper")
    try:
        deadline = time.monotonic() + 30
        while _index_state(dsn, schema) is not True:
            assert time.monotonic() < deadline, "the sweeper did not rebuild the index"
            await asyncio.sleep(0.05)
    finally:
        await store.admin("stop_ttl_sweeper")
    await _assert_exact(store)


@contextmanager
def _role_not_owning(dsn: str, schema: str) -> Iterator[str]:
    """A DSN for a role that may run setup() in ``schema`` but owns none of its tables."""
    role = f"ix_app_{uuid.uuid4().hex[:8]}"
    r, s = sql.Identifier(role), sql.Identifier(schema)
    database = sql.Identifier(str(conninfo.conninfo_to_dict(dsn)["dbname"]))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(r))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, r))
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(s, r))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
    try:
        yield conninfo.make_conninfo(dsn, user=role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(r))
            conn.execute(sql.SQL("DROP ROLE {}").format(r))


async def test_setup_by_a_role_that_may_not_rebuild_warns(
    make: Factory, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """setup() as a role that does not own the vectors cannot rebuild an invalid
    index: it logs a warning naming the fix and succeeds (the application still
    starts; searches stay exact)."""
    store = await make(index=REPAIR_INDEX)
    schema = schema_of(store)
    await _load(store)
    await _break_index(store, dsn)
    with _role_not_owning(dsn, schema) as app_dsn:
        async with store_factory(store.kind, app_dsn, "unused") as other:
            with caplog.at_level("WARNING", logger="haive_langgraph.stores"):
                await other(schema=schema, index=REPAIR_INDEX)  # runs setup()
    assert _index_state(dsn, schema) is False
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("may not rebuild" in m and schema in m for m in warned), warned
    await _assert_exact(store)
