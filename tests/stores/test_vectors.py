"""Vector search: configurations, per-field vectors, filtered pages, scores, bad input."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store.memory import InMemoryStore
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores import AsyncPostgresStore, PostgresStore
from tests.stores.conftest import (
    DIMS,
    Driver,
    Factory,
    embed,
    embed_text,
    index_config,
    store_factory,
)

NS = tuple[str, ...]


@pytest.fixture(params=["sync", "async"])
async def make(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[Factory]:
    """Opens stores of the parametrized kind, each in a fresh schema unless one is given."""
    async with store_factory(request.param, dsn, "s") as factory:
        yield factory


def vector_rows(dsn: str, schema: str, key: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            psycopg.sql.SQL(
                "SELECT field FROM {}.store_vectors WHERE key = %s ORDER BY field"
            ).format(psycopg.sql.Identifier(schema)),
            (key,),
        ).fetchall()
    return [r[0] for r in rows]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_dims_mismatch_names_both(make: Factory, ns: NS) -> None:
    store = await make(index={"dims": 8, "embed": embed, "fields": ["text"]})
    with pytest.raises(ConfigurationError) as err:
        await store.put(ns, "k", {"text": "hello"})
    assert "dims=8" in str(err.value) and "16-dimensional" in str(err.value)
    assert await store.get(ns, "k") is None  # nothing written
    with pytest.raises(ConfigurationError, match="dims=8"):
        await store.search(ns, query="hello")


async def test_setup_refuses_another_index_in_the_same_schema(make: Factory) -> None:
    schema = f"s_{uuid.uuid4().hex[:10]}"
    await make(schema=schema, index=index_config())
    with pytest.raises(ConfigurationError) as err:
        await make(schema=schema, index={**index_config(), "dims": 32})
    assert '"dims": 16' in str(err.value) and '"dims": 32' in str(err.value)
    with pytest.raises(ConfigurationError, match="l2"):
        await make(schema=schema, index={**index_config(), "distance_type": "l2"})
    await make(schema=schema, index=index_config())  # the same configuration is fine


async def test_per_field_vectors_and_stale_ones_removed(make: Factory, ns: NS, dsn: str) -> None:
    store = await make(index=index_config(fields=["title", "body", "tags[*]"]))
    schema = store.store.schema  # type: ignore[attr-defined]
    await store.put(ns, "k", {"title": "tea", "body": "green tea leaves", "tags": ["a", "b"]})
    assert vector_rows(dsn, schema, "k") == ["body", "tags[*].0", "tags[*].1", "title"]
    await store.put(ns, "k", {"title": "coffee", "tags": ["a"]})
    assert vector_rows(dsn, schema, "k") == ["tags[*]", "title"]
    await store.put(ns, "k", {"title": "coffee", "body": "beans"}, index=["body"])
    assert vector_rows(dsn, schema, "k") == ["body"]
    await store.put(ns, "k", {"title": "coffee"}, index=False)
    assert vector_rows(dsn, schema, "k") == []
    await store.put(ns, "k", {"title": "coffee"})
    await store.delete(ns, "k")
    assert vector_rows(dsn, schema, "k") == []


async def test_scores_pool_the_best_field_like_in_memory_store(make: Factory, ns: NS) -> None:
    cfg = index_config(fields=["title", "notes[*]"])
    store = await make(index=cfg)
    memory = InMemoryStore(index=cfg)  # type: ignore[arg-type]
    items = {
        "a": {"title": "green tea", "notes": ["brewed hot", "from japan"]},
        "b": {"title": "black coffee", "notes": ["strong tea substitute"]},
        "c": {"title": "orange juice", "notes": []},
        "d": {"title": "tea time stories", "notes": ["green leaves"]},
    }
    for key, value in items.items():
        await store.put(ns, key, value)
        memory.put(ns, key, value)
    for query in ("green tea", "coffee", "japan", "juice stories"):
        ours = await store.search(ns, query=query, limit=4)
        ref = memory.search(ns, query=query, limit=4)
        # Equal scores may come in either order: compare keys with their scores.
        assert sorted((round(h.score, 4) + 0.0, h.key) for h in ours) == sorted(
            (round(h.score, 4) + 0.0, h.key) for h in ref
        ), query
        assert [h.score for h in ours] == sorted((h.score for h in ours), reverse=True)


async def test_filtered_search_fills_pages_on_the_index(make: Factory, ns: NS) -> None:
    # A tiny exact-search threshold sends these 400 items through the HNSW
    # index with an iterative scan.
    store = await make(index=index_config(exact_search_threshold=20))
    words = ["tea", "coffee", "juice", "water", "milk", "soda", "wine", "beer"]
    values = {
        f"k{i:03}": {
            "text": f"{words[i % 8]} {words[(i * 7) % 8]} {i}",
            "cat": i % 10,
            "rare": i == 123,
        }
        for i in range(400)
    }
    await store.batch([_put(ns, k, v) for k, v in values.items()])
    query = "tea coffee"
    qv = embed_text(query)
    for flt in ({"cat": 3}, {"cat": {"$in": [1, 2]}}, {"rare": True}, None):
        hits = await store.search(ns, query=query, filter=flt, limit=10)
        matching = [k for k, v in values.items() if flt is None or _matches(v, flt)]
        exact = sorted((cosine(embed_text(values[k]["text"]), qv) for k in matching), reverse=True)
        assert len(hits) == min(10, len(matching)), flt  # full pages
        # Recall by score (the data has ties): hits at least as close as the 10th exact one.
        tenth = exact[min(10, len(exact)) - 1]
        assert sum(h.score >= tenth - 1e-5 for h in hits) >= min(9, len(exact)), flt
        assert all(_matches(h.value, flt) for h in hits if flt)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
    page2 = await store.search(ns, query=query, filter={"cat": 3}, limit=10, offset=10)
    page1 = await store.search(ns, query=query, filter={"cat": 3}, limit=10)
    assert len(page2) == 10 and not {h.key for h in page1} & {h.key for h in page2}


def _put(ns: NS, key: str, value: dict[str, Any]) -> Any:
    from langgraph.store.base import PutOp

    return PutOp(ns, key, value)


def _matches(value: dict[str, Any], flt: dict[str, Any]) -> bool:
    for k, want in flt.items():
        if isinstance(want, dict) and "$in" in want:
            if value.get(k) not in want["$in"]:
                return False
        elif value.get(k) != want:
            return False
    return True


@pytest.mark.parametrize(
    ("distance", "score"),
    [
        ("l2", lambda q, v: -math.dist(q, v)),
        ("inner_product", lambda q, v: sum(a * b for a, b in zip(q, v, strict=True))),
        ("cosine", cosine),
    ],
)
async def test_distance_types(
    make: Factory, ns: NS, distance: str, score: Callable[..., float]
) -> None:
    store = await make(index=index_config(distance_type=distance))
    texts = ["red apples", "green apples", "yellow bananas", "red cars"]
    for i, text in enumerate(texts):
        await store.put(ns, f"k{i}", {"text": text})
    qv = embed_text("red apples please")
    hits = await store.search(ns, query="red apples please", limit=4)
    expected = sorted(range(4), key=lambda i: -score(qv, embed_text(texts[i])))
    assert [h.key for h in hits] == [f"k{i}" for i in expected]
    for h in hits:
        i = int(h.key[1:])
        assert h.score == pytest.approx(score(qv, embed_text(texts[i])), abs=1e-5)


@pytest.mark.parametrize(
    "ann",
    [
        {"kind": "hnsw", "vector_type": "halfvec", "m": 8, "ef_construction": 32, "ef_search": 20},
        {"kind": "ivfflat", "lists": 4, "probes": 4},
        {"kind": "flat"},
        {"kind": "flat", "vector_type": "halfvec"},
    ],
)
async def test_index_kinds(make: Factory, ns: NS, ann: dict[str, Any]) -> None:
    store = await make(index=index_config(ann_index_config=ann, exact_search_threshold=5))
    texts = [
        f"{w} drink {i}" for i, w in enumerate(["tea", "coffee", "water", "juice", "milk"] * 4)
    ]
    for i, text in enumerate(texts):
        await store.put(ns, f"k{i}", {"text": text, "i": i})
    hits = await store.search(ns, query="tea drink 0", limit=3)
    assert hits[0].key == "k0"
    assert hits[0].score == pytest.approx(
        cosine(embed_text("tea drink 0"), embed_text(texts[0])), abs=2e-3
    )
    hits = await store.search(ns, query="coffee", filter={"i": {"$gt": 10}}, limit=3)
    assert len(hits) == 3 and all(h.value["i"] > 10 for h in hits)


async def test_large_dimensions_need_halfvec(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="halfvec"):
        PostgresStore(
            dsn, index={"dims": 3072, "embed": embed, "ann_index_config": {"vector_type": "vector"}}
        )
    for ann in ({}, {"kind": "flat", "vector_type": "vector"}):
        store = PostgresStore(dsn, index={"dims": 3072, "embed": embed, "ann_index_config": ann})
        assert store._spec is not None
        assert store._spec.vector_type == ann.get("vector_type", "halfvec")
        store.close()
    with pytest.raises(ConfigurationError, match="at most 4000"):
        PostgresStore(
            dsn,
            index={"dims": 4096, "embed": embed, "ann_index_config": {"vector_type": "halfvec"}},
        )


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"embed": embed}, 'needs "dims"'),
        ({"dims": 0, "embed": embed}, "positive integer"),
        ({"dims": 16}, 'needs "embed"'),
        ({"dims": 16, "embed": embed, "distance_type": "dot"}, "distance_type"),
        ({"dims": 16, "embed": embed, "ann_index_config": {"kind": "annoy"}}, "kind"),
        (
            {"dims": 16, "embed": embed, "ann_index_config": {"efsearch": 3}},
            "unknown ann_index_config keys",
        ),
        ({"dims": 16, "embed": embed, "fields": [""]}, "non-empty JSON paths"),
    ],
)
def test_bad_index_config(dsn: str, index: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PostgresStore(dsn, index=index)


async def test_query_without_an_index_filters_only(make: Factory, ns: NS) -> None:
    store = await make()
    memory = InMemoryStore()
    for key, text in (("a", "tea"), ("b", "coffee")):
        await store.put(ns, key, {"text": text}, index=["text"])
        memory.put(ns, key, {"text": text}, index=["text"])
    hits = await store.search(ns, query="tea")
    ref = memory.search(ns, query="tea")
    assert sorted(h.key for h in hits) == sorted(h.key for h in ref) == ["a", "b"]
    assert all(h.score is None for h in hits + ref)


async def test_items_without_vectors_fill_short_pages(
    store: Driver, memory: Driver, ns: NS
) -> None:
    for drv in (store, memory):
        await drv.put(ns, "v1", {"text": "tea with milk"})
        await drv.put(ns, "v2", {"text": "coffee"})
        await drv.put(ns, "plain", {"text": "tea unindexed"}, index=False)
        await drv.put(ns, "notext", {"other": 1})
    ours = await store.search(ns, query="tea", limit=10)
    ref = await memory.search(ns, query="tea", limit=10)
    assert [h.key for h in ours[:2]] == [h.key for h in ref[:2]] == ["v1", "v2"]
    assert {h.key for h in ours[2:]} == {h.key for h in ref[2:]} == {"plain", "notext"}
    assert [h.score is None for h in ours] == [False, False, True, True]
    assert [h.key for h in await store.search(ns, query="tea", limit=1)] == ["v1"]


async def test_langchain_embeddings_and_async_functions(make: Factory, ns: NS) -> None:
    fake = DeterministicFakeEmbedding(size=DIMS)
    store = await make(index={"dims": DIMS, "embed": fake, "fields": ["text"]})
    await store.put(ns, "k", {"text": "hello"})
    [hit] = await store.search(ns, query="hello")
    assert hit.score == pytest.approx(1.0, abs=1e-5)

    async def aembed(texts: Sequence[str]) -> list[list[float]]:
        await asyncio.sleep(0)
        return embed(texts)

    if store.is_async:
        other = await make(index={"dims": DIMS, "embed": aembed, "fields": ["text"]})
        await other.put(ns, "k", {"text": "hello"})
        [hit] = await other.search(ns, query="hello")
        assert hit.score == pytest.approx(1.0, abs=1e-5)


async def test_embeddings_are_computed_before_a_connection_is_taken(dsn: str, ns: NS) -> None:
    schema = f"s_{uuid.uuid4().hex[:10]}"
    seen: list[int] = []
    pool = ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True)
    pool.wait()

    def watching(texts: Sequence[str]) -> list[list[float]]:
        seen.append(pool.get_stats().get("pool_available", 0))
        return embed(texts)

    try:
        store = PostgresStore(
            pool, schema=schema, index={"dims": DIMS, "embed": watching, "fields": ["text"]}
        )
        await asyncio.to_thread(store.setup)
        await asyncio.to_thread(store.put, ns, "k", {"text": "hello"})
        await asyncio.to_thread(store.search, ns, query="hello")
        assert seen == [1, 1]  # the pool's only connection was free each time
    finally:
        await asyncio.to_thread(pool.close)

    aseen: list[int] = []
    apool = AsyncConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
    )
    await apool.open(wait=True)

    async def awatching(texts: Sequence[str]) -> list[list[float]]:
        aseen.append(apool.get_stats().get("pool_available", 0))
        return embed(texts)

    try:
        astore = AsyncPostgresStore(
            apool, schema=schema, index={"dims": DIMS, "embed": awatching, "fields": ["text"]}
        )
        await astore.aput(ns, "k2", {"text": "hello"})
        assert len(await astore.asearch(ns, query="hello")) == 2
        assert aseen == [1, 1]
    finally:
        await apool.close()


async def test_large_batches_with_vectors(make: Factory, ns: NS) -> None:
    store = await make(index=index_config())
    ops = [
        _put((*ns, f"p{i % 7}"), f"k{i}", {"text": f"note {i} about tea", "i": i})
        for i in range(3000)
    ]
    await store.batch(ops)
    assert len(await store.search(ns, filter={"i": {"$gte": 2990}}, limit=100)) == 10
    hits = await store.search(ns, query="note 1500 about tea", limit=5)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert "k1500" in [h.key for h in hits if h.score == pytest.approx(1.0, abs=1e-5)]
    # Re-putting the same values rewrites no vector.
    await store.batch(ops[:1000])
    assert (await store.get((*ns, "p0"), "k0")).value["i"] == 0


def pending_vectors(dsn: str, schema: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            psycopg.sql.SQL(
                "SELECT count(*) FILTER (WHERE NOT indexed), count(*) FROM {}.store_vectors"
            ).format(psycopg.sql.Identifier(schema))
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def ann_index_valid(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'store_vectors_ann_idx'",
            (schema,),
        ).fetchone()
    return bool(row and row[0])


async def test_deferred_writes_are_searchable_and_indexed_later(
    make: Factory, ns: NS, dsn: str
) -> None:
    store = await make(index=index_config(write_mode="deferred", exact_search_threshold=20))
    schema = store.store.schema  # type: ignore[attr-defined]
    words = ["tea", "coffee", "juice", "water"]
    await store.batch(
        [_put(ns, f"k{i}", {"text": f"{words[i % 4]} {i}", "n": i}) for i in range(200)]
    )
    assert pending_vectors(dsn, schema) == (200, 200)

    async def check() -> None:
        hits = await store.search(ns, query="tea 8", limit=5)
        assert hits[0].key == "k8" and len(hits) == 5
        hits = await store.search(ns, query="coffee", filter={"n": {"$lt": 50}}, limit=10)
        assert len(hits) == 10 and all(h.value["n"] < 50 for h in hits)

    await check()  # pending vectors are searched exactly
    assert await store.admin("index_pending", batch_size=64, rebuild=False) == 200
    assert pending_vectors(dsn, schema) == (0, 200)
    await check()
    await store.batch(
        [_put(ns, f"k{i}", {"text": f"{words[i % 4]} {i}", "n": i}) for i in range(200, 300)]
    )
    await store.put(
        ns, "k8", {"text": "tea 8", "n": 8, "changed": True}
    )  # a re-put is pending again
    assert pending_vectors(dsn, schema) == (101, 300)
    await check()
    assert await store.admin("index_pending", rebuild=True) == 101
    assert pending_vectors(dsn, schema) == (0, 300)
    assert ann_index_valid(dsn, schema)
    await check()
    assert await store.admin("index_pending") == 0


def test_bad_write_mode(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="write_mode"):
        PostgresStore(dsn, index=index_config(write_mode="later"))
