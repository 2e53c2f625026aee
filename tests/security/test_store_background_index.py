"""The default write mode, ``"background"``: puts skip the ANN index, a background
indexer of the store adds their vectors, and searches are right at every moment.

A vector is *pending* (``indexed = false``, outside the partial HNSW index)
from its put until the indexer marks it (in batches, or by rebuilding the
index in bulk); searches read pending vectors exactly and indexed ones through
the index, in one snapshot. These tests interleave puts, re-puts, deletes and
searches while the indexer works (batches of a few vectors and bulk rebuilds,
made frequent here), and check every search against an exact search over the
items committed at that moment; the index is made exhaustive (``ef_search``
above the item count) so that "through the index" is exact too.

Also: the indexer starts by itself and leaves nothing pending; a store on a
lent connection (which background work must not share) writes in the
``"immediate"`` mode by default and refuses ``"background"``; closing the
store stops the indexer.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from langgraph.store.base import PutOp
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from haive_langgraph.stores import _index_ops as index_ops
from haive_langgraph.stores import _indexer as indexer

DIMS = 4
N_ANGLES = 1000
NS = ("bg",)


def angle_vector(theta: float) -> list[float]:
    return [math.cos(theta), math.sin(theta), 0.0, 0.0]


def text_angle(text: str) -> float:
    """``"item 123"`` and ``"query 123.3"`` sit at distinct angles on a quarter circle."""
    return float(text.split()[1]) / N_ANGLES * (math.pi / 2)


def embed(texts: Sequence[str]) -> list[list[float]]:
    return [angle_vector(text_angle(t)) for t in texts]


INDEX = {
    "dims": DIMS,
    "embed": embed,
    "fields": ["text"],
    # Every scope through the index; an exhaustive HNSW search (ef_search above
    # the item count) so that an indexed vector is found as surely as a pending one.
    "exact_search_threshold": 1,
    "ann_index_config": {"ef_search": 400},
}


@pytest.fixture
def busy_indexer(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """An indexer that starts at once, marks 3 vectors a transaction and rebuilds
    the index in bulk whenever 30 vectors or more (and half) are pending; counts
    its batches and rebuilds."""
    monkeypatch.setattr(indexer, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(indexer, "MAX_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(index_ops, "BACKGROUND_BATCH", 3)
    monkeypatch.setattr(index_ops, "RECOUNT_EVERY", 2)
    monkeypatch.setattr(index_ops, "REBUILD_MIN_PENDING", 30)
    counts = {"batches": 0, "rebuilds": 0}

    def counted(name: str, real: Any) -> Any:
        def op(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return real(*args, **kwargs)

        return op

    monkeypatch.setattr(
        index_ops, "index_pending_op", counted("batches", index_ops.index_pending_op)
    )
    monkeypatch.setattr(
        index_ops, "rebuild_index_op", counted("rebuilds", index_ops.rebuild_index_op)
    )
    return counts


class Flavour:
    """The sync store (run in a worker thread) or the async one, behind one async API."""

    def __init__(self, store: Any, is_async: bool) -> None:
        self.store, self.is_async = store, is_async

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await getattr(self.store, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.store, method), *args, **kwargs)


@asynccontextmanager
async def open_store(dsn: str, flavour: str, **index: Any) -> AsyncIterator[Flavour]:
    schema = f"bg_{uuid.uuid4().hex[:10]}"
    if flavour == "async":
        astore = AsyncPostgresStore(dsn, schema=schema, index={**INDEX, **index})
        await astore.setup()
        try:
            yield Flavour(astore, True)
        finally:
            await astore.aclose()
        return
    store = await asyncio.to_thread(
        lambda: PostgresStore(dsn, schema=schema, index={**INDEX, **index})
    )
    await asyncio.to_thread(store.setup)
    try:
        yield Flavour(store, False)
    finally:
        await asyncio.to_thread(store.close)


def vector_state(dsn: str, schema: str) -> tuple[int, int, bool]:
    """(pending, total, index valid)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE NOT indexed), count(*),"
                " coalesce((SELECT i.indisvalid FROM pg_index i"
                "  JOIN pg_class c ON c.oid = i.indexrelid"
                "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                "  WHERE n.nspname = %s AND c.relname = 'store_vectors_ann_idx'), false)"
                " FROM {}.store_vectors"
            ).format(sql.Identifier(schema)),
            (schema,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), bool(row[2])


def wait_indexed(dsn: str, schema: str) -> tuple[int, int, bool]:
    """The vectors once the indexer has left nothing pending (polled: the indexer
    offers no event, it is the database's state that is awaited)."""
    deadline = time.monotonic() + 60
    while True:
        state = vector_state(dsn, schema)
        if state[0] == 0 and state[2]:
            return state
        assert time.monotonic() < deadline, f"still pending after 60 s: {state}"
        time.sleep(0.05)


def exact(
    model: dict[str, dict[str, Any]], query: str, kind: int | None, limit: int
) -> list[tuple[str, float]]:
    """Exact cosine search over the committed items: (key, score), best first."""
    q = angle_vector(text_angle(query))
    scored = []
    for key, value in model.items():
        if kind is not None and value["kind"] != kind:
            continue
        v = angle_vector(text_angle(value["text"]))
        scored.append((sum(a * b for a, b in zip(q, v, strict=True)), key))  # cosine
    scored.sort(key=lambda sk: (-sk[0], sk[1]))
    return [(key, score) for score, key in scored[:limit]]


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_searches_equal_exact_search_while_the_indexer_works(
    dsn: str, flavour: str, busy_indexer: dict[str, int]
) -> None:
    rng = random.Random(19)
    model: dict[str, dict[str, Any]] = {}
    angles = iter(rng.sample(range(1, N_ANGLES), N_ANGLES - 1))
    mixed = searches = 0
    async with open_store(dsn, flavour) as store:
        schema = store.store.schema
        for round_ in range(40):
            # A few new items, a re-put with a new text (pending again), a delete.
            for _ in range(rng.randint(2, 9)):
                key = f"k{len(model) + round_ * 100}"
                model[key] = {"text": f"item {next(angles)}", "kind": rng.randrange(3)}
                await store.call("put", NS, key, model[key])
            if model and rng.random() < 0.7:
                key = rng.choice(sorted(model))
                model[key] = {"text": f"item {next(angles)}", "kind": model[key]["kind"]}
                await store.call("put", NS, key, model[key])
            if len(model) > 5 and rng.random() < 0.3:
                key = rng.choice(sorted(model))
                del model[key]
                await store.call("delete", NS, key)
            if round_ % 10 == 9:
                # A bulk re-import: every vector pending at once (a rebuild's case).
                for value in model.values():
                    value["text"] = f"item {next(angles)}"
                await store.call("batch", [PutOp(NS, k, v) for k, v in model.items()])
            for _ in range(4):
                pending, total, _ = await asyncio.to_thread(vector_state, dsn, schema)
                mixed += 0 < pending < total
                query = f"query {rng.randrange(N_ANGLES)}.3"  # no two items equally near
                kind = rng.choice([None, 0, 1, 2])
                limit = rng.choice([1, 5, 10])
                hits = await store.call(
                    "search",
                    NS,
                    query=query,
                    filter=None if kind is None else {"kind": kind},
                    limit=limit,
                )
                want = exact(model, query, kind, limit)
                assert [h.key for h in hits] == [k for k, _ in want], (round_, query, kind)
                assert [h.score for h in hits] == pytest.approx([s for _, s in want], abs=1e-5)
                searches += 1
        worked = dict(busy_indexer)
        pending, total, valid = await asyncio.to_thread(wait_indexed, dsn, schema)
        assert (pending, total, valid) == (0, len(model), True)
    # The indexer worked between the searches, in batches and in bulk. How many
    # searches met pending and indexed vectors at once depends on timing (0 on a
    # quiet machine has been seen in CI): reported, not asserted.
    assert searches == 160
    assert worked["batches"] >= 20 and worked["rebuilds"] >= 1, worked
    print(f"searches over pending and indexed vectors at once: {mixed} of {searches}")


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_the_indexer_indexes_by_itself_and_stops_with_the_store(
    dsn: str, flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "QUIET_SECONDS", 0.0)
    async with open_store(dsn, flavour) as store:
        schema = store.store.schema
        await store.call(
            "batch", [PutOp(NS, f"k{i}", {"text": f"item {i}", "kind": 0}) for i in range(1, 50)]
        )
        assert await asyncio.to_thread(wait_indexed, dsn, schema) == (0, 49, True)
        running = store.store._shared.indexer
    # Closed: the indexer has ended, and a write after that would not start it.
    if flavour == "sync":
        assert running._thread is None or not running._thread.is_alive()
    else:
        assert running._task is None or running._task.done()


def test_a_lent_connection_writes_immediately(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        store = PostgresStore(conn, schema=f"bg_{uuid.uuid4().hex[:10]}", index=INDEX)
        assert store._spec is not None and not store._spec.deferred
        assert store._shared.indexer is None
        with pytest.raises(ConfigurationError, match="connection of its own"):
            PostgresStore(conn, index={**INDEX, "write_mode": "background"})
        deferred = PostgresStore(conn, index={**INDEX, "write_mode": "deferred"})
        assert deferred._spec is not None and deferred._spec.deferred


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_pool_closed_under_the_store_stops_its_indexer(
    dsn: str, flavour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a lent pool before the store stops the indexer for good (it does not
    retry on a closed pool every minute, logging errors, for the process's life)."""
    monkeypatch.setattr(indexer, "QUIET_SECONDS", 0.3)
    schema = f"bg_{uuid.uuid4().hex[:10]}"
    put = PutOp(NS, "k", {"text": "item 1", "kind": 0})
    if flavour == "async":
        apool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
        await apool.open(wait=True)
        astore = AsyncPostgresStore(apool, schema=schema, index=INDEX)
        await astore.setup()
        await astore.abatch([put])
        await apool.close()  # before the indexer starts (0.3 s of quiet)
        task = astore._shared.indexer._task
        assert task is not None
        await asyncio.wait_for(task, 30)
        assert astore._shared.indexer._halted
        return
    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True)
    pool.wait()
    store = PostgresStore(pool, schema=schema, index=INDEX)
    await asyncio.to_thread(store.setup)
    await asyncio.to_thread(store.batch, [put])
    thread = store._shared.indexer._thread
    await asyncio.to_thread(pool.close)
    assert thread is not None
    await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive()
