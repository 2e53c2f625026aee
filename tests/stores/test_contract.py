"""The same operations on LangGraph's InMemoryStore and on ours give the same results.

Differences by design, and how the comparison handles them:

* a search without a query returns items most recently updated first (as
  LangGraph's PostgresStore does); InMemoryStore keeps insertion order. Pages
  covering every match are compared as sets; paging is checked to cover the
  same items;
* scores come from float32 vectors in PostgreSQL: compared to 1e-5;
* InMemoryStore keeps listing a namespace after its last item is deleted (or
  after a ``get`` on a namespace that never existed): ours lists namespaces
  that hold items, as LangGraph's PostgresStore does. ``forget_empty`` drops
  the empty ones from the reference before comparing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from langgraph.store.base import GetOp, Item, ListNamespacesOp, PutOp, SearchOp

from tests.stores.conftest import Driver

NS = tuple[str, ...]


def norm(item: Item | None) -> Any:
    return None if item is None else (item.namespace, item.key, item.value)


def as_set(items: list[Any]) -> list[Any]:
    return sorted((norm(i) for i in items), key=repr)


def scored(items: list[Any]) -> list[Any]:
    return [
        (i.namespace, i.key, i.value, None if i.score is None else round(i.score, 5)) for i in items
    ]


def seed(root: NS) -> list[tuple[NS, str, dict[str, Any]]]:
    return [
        (
            (*root, "a"),
            "k1",
            {
                "text": "apples and pears",
                "n": 9,
                "kind": "fruit",
                "meta": {"src": "chat", "lvl": 1},
            },
        ),
        (
            (*root, "a"),
            "k2",
            {"text": "green apples", "n": 10, "kind": "fruit", "tags": ["x", "y"]},
        ),
        (
            (*root, "a", "b"),
            "k3",
            {"text": "red cars", "n": 100, "kind": "car", "meta": {"src": "web"}},
        ),
        (
            (*root, "c"),
            "k4",
            {"text": "blue cars and trucks", "n": -5.5, "kind": "car", "flag": True, "none": None},
        ),
        ((*root, "c", "d", "e"), "k5", {"text": "pears", "n": 0, "kind": "fruit"}),
        ((*root, "x_y"), "k6", {"text": "underscore namespace", "n": 3, "kind": "other"}),
        ((*root, "x%y"), "k7", {"text": "percent namespace", "n": 4, "kind": "other"}),
    ]


FILTERS: list[dict[str, Any] | None] = [
    None,
    {"kind": "fruit"},
    {"kind": "car", "n": 100},
    {"n": {"$gt": 9}},
    {"n": {"$gte": 10, "$lt": 100}},
    {"n": {"$lte": 0}},
    {"n": {"$ne": 10}},
    {"n": {"$eq": 9}},
    {"meta": {"src": "chat"}},
    {"tags": ["x", "y"]},
    {"flag": True},
    {"none": None},
    {"missing": None},
    {"kind": "nothing"},
]


def forget_empty(memory: Driver) -> None:
    data = memory.store._data  # type: ignore[attr-defined]
    for namespace in [n for n, items in data.items() if not items]:
        del data[namespace]


async def same(
    ours: Driver, ref: Driver, method: str, *args: Any, **kwargs: Any
) -> tuple[Any, Any]:
    return await ours.call(method, *args, **kwargs), await ref.call(method, *args, **kwargs)


async def compare_reads(ours: Driver, ref: Driver, root: NS, keys: list[tuple[NS, str]]) -> None:
    for namespace, key in keys:
        a, b = await same(ours, ref, "get", namespace, key)
        assert norm(a) == norm(b), (namespace, key)
    for flt in FILTERS:
        for prefix in (root, (*root, "a"), (*root, "c", "d")):
            a, b = await same(ours, ref, "search", prefix, filter=flt, limit=50)
            assert as_set(a) == as_set(b), (prefix, flt)
    forget_empty(ref)
    for kwargs in (
        {"prefix": root},
        {"prefix": root, "max_depth": 2},
        {"prefix": root, "max_depth": 3},
        {"prefix": (*root, "a")},
        {"prefix": (*root, "*", "b")},
        {"prefix": root, "suffix": ("b",)},
        {"prefix": root, "suffix": ("d", "*")},
        {"prefix": root, "limit": 2, "offset": 1},
        {"prefix": root, "max_depth": 2, "limit": 3, "offset": 2},
        {"prefix": (*root, "x")},
    ):
        a, b = await same(ours, ref, "list_namespaces", **kwargs)
        assert a == b, kwargs
    for query, flt, limit, offset in (
        ("apples", None, 3, 0),
        ("cars", None, 10, 0),
        ("cars", {"kind": "car"}, 10, 0),
        ("pears apples", None, 2, 1),
        ("namespace", {"n": {"$gt": 3}}, 5, 0),
    ):
        a, b = await same(
            ours, ref, "search", root, query=query, filter=flt, limit=limit, offset=offset
        )
        assert scored(a) == scored(b), (query, flt, limit, offset)


async def test_same_results_as_in_memory_store(store: Driver, memory: Driver, ns: NS) -> None:
    items = seed(ns)
    keys = [(n, k) for n, k, _ in items] + [((*ns, "a"), "absent")]
    for namespace, key, value in items:
        await store.put(namespace, key, value)
        await memory.put(namespace, key, value)
    await compare_reads(store, memory, ns, keys)

    # Overwrite, delete, put back elsewhere: still the same.
    for drv in (store, memory):
        await drv.put((*ns, "a"), "k1", {"text": "bananas", "n": 11, "kind": "fruit"})
        await drv.delete((*ns, "c"), "k4")
        await drv.put((*ns, "c", "d"), "k4", {"text": "cars again", "n": 50, "kind": "car"})
        await drv.delete((*ns, "x%y"), "k7")
    await compare_reads(store, memory, ns, keys)


async def test_search_pages_cover_the_same_items(store: Driver, memory: Driver, ns: NS) -> None:
    for i in range(23):
        for drv in (store, memory):
            await drv.put((*ns, f"p{i % 3}"), f"k{i:02}", {"text": f"item {i}", "n": i})
    for flt in (None, {"n": {"$gte": 5}}):
        pages_ours, pages_ref = [], []
        for offset in range(0, 30, 7):
            a, b = await same(store, memory, "search", ns, filter=flt, limit=7, offset=offset)
            assert len(a) == len(b)
            pages_ours += a
            pages_ref += b
        assert as_set(pages_ours) == as_set(pages_ref)
        assert len({(i.namespace, i.key) for i in pages_ours}) == len(pages_ours)


async def test_batch_reads_see_the_state_before_its_writes(
    store: Driver, memory: Driver, ns: NS
) -> None:
    for drv in (store, memory):
        await drv.put((*ns, "a"), "old", {"text": "old item", "v": 1})
    ops = [
        PutOp((*ns, "a"), "new", {"text": "new item", "v": 2}),
        GetOp((*ns, "a"), "new"),
        PutOp((*ns, "a"), "old", {"text": "old item", "v": 3}),
        GetOp((*ns, "a"), "old"),
        SearchOp((*ns,), None, 10, 0),
        ListNamespacesOp(limit=10),
        PutOp((*ns, "a"), "new", {"text": "newest", "v": 4}),  # the last put of a key wins
        GetOp((*ns, "b"), "nothing"),
        SearchOp((*ns,), {"v": {"$gte": 1}}, 10, 0, "old item"),
    ]
    ours, ref = await store.batch(ops), await memory.batch(ops)
    assert len(ours) == len(ref) == len(ops)
    for i in (0, 2, 6):
        assert ours[i] is None and ref[i] is None
    assert norm(ours[1]) == norm(ref[1]) is None
    assert norm(ours[3]) == norm(ref[3])
    assert as_set(ours[4]) == as_set(ref[4])
    assert ours[7] is None and ref[7] is None
    assert scored(ours[8]) == scored(ref[8]) and len(ours[8]) == 1
    assert (*ns, "a") in ours[5] or len(ours[5]) == 10  # other tests' namespaces share the db
    for drv in (store, memory):
        got = await drv.get((*ns, "a"), "new")
        assert got.value == {"text": "newest", "v": 4}
    assert norm(await store.get((*ns, "a"), "old")) == norm(await memory.get((*ns, "a"), "old"))


async def test_timestamps(store: Driver, ns: NS) -> None:
    await store.put(ns, "k", {"v": 1})
    first = await store.get(ns, "k")
    await store.put(ns, "k", {"v": 2})
    second = await store.get(ns, "k")
    assert first.created_at == second.created_at
    assert second.updated_at > first.updated_at
    assert second.created_at.tzinfo is not None
    [hit] = await store.search(ns)
    assert hit.score is None and hit.updated_at == second.updated_at


async def test_values_round_trip(store: Driver, memory: Driver, ns: NS) -> None:
    value = {
        "text": "unicode ✓ 日本語 and \\backslash 'quote' \"dq\"",
        "int": 2**62,
        "float": 0.1,
        "neg": -1e-300,
        "nested": {"list": [1, "two", None, {"deep": [True, False]}], "empty": {}},
        "empty_list": [],
        "key with . dot": "x",
    }
    for drv in (store, memory):
        await drv.put(ns, "v", value)
    assert (await store.get(ns, "v")).value == (await memory.get(ns, "v")).value == value


async def test_keys_are_exact(store: Driver, ns: NS) -> None:
    for key in ("a", "A", "a ", "a%", "a_", "ä", "a.b", "'; DROP TABLE x; --"):
        await store.put(ns, key, {"key": key})
    for key in ("a", "A", "a ", "a%", "a_", "ä", "a.b", "'; DROP TABLE x; --"):
        assert (await store.get(ns, key)).value == {"key": key}
    assert await store.get(ns, "a*") is None
    assert len(await store.search(ns, limit=100)) == 8


async def test_concurrent_batches_over_the_same_keys_do_not_deadlock(
    store: Driver, ns: NS, dsn: str
) -> None:
    keys = [f"k{i:02}" for i in range(30)]

    async def writer(w: int) -> None:
        for r in range(8):
            order = keys if (w + r) % 2 else keys[::-1]
            await store.batch([PutOp(ns, k, {"w": w, "r": r}) for k in order])

    def deadlocks() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
        assert row is not None
        return int(row[0])

    before = await asyncio.to_thread(deadlocks)
    await asyncio.gather(*(writer(w) for w in range(4)))
    assert await asyncio.to_thread(deadlocks) == before
    assert len(await store.search(ns, limit=100)) == 30
