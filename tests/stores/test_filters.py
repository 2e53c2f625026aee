"""Search filters: types compared as themselves, nested paths, operators, parameters only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from haive_langgraph.stores import InvalidFilterError
from tests.stores.conftest import Driver

NS = tuple[str, ...]


async def keys(store: Driver, ns: NS, flt: dict[str, Any], **kwargs: Any) -> list[str]:
    return sorted(i.key for i in await store.search(ns, filter=flt, limit=100, **kwargs))


@pytest.fixture
async def numbers(store: Driver, ns: NS) -> NS:
    values: dict[str, Any] = {
        "n9": 9,
        "n10": 10,
        "n100": 100,
        "f9_5": 9.5,
        "neg": -1,
        "zero": 0,
        "big": 2**60,
    }
    for key, n in values.items():
        await store.put(ns, key, {"n": n})
    await store.put(ns, "s10", {"n": "10"})  # a string, not a number
    await store.put(ns, "s9", {"n": "9"})
    await store.put(ns, "t", {"n": True})
    await store.put(ns, "null", {"n": None})
    await store.put(ns, "missing", {"other": 1})
    await store.put(ns, "list", {"n": [10]})
    return ns


async def test_numbers_compare_as_numbers(store: Driver, numbers: NS) -> None:
    ns = numbers
    assert await keys(store, ns, {"n": {"$gt": 5}}) == ["big", "f9_5", "n10", "n100", "n9"]
    assert await keys(store, ns, {"n": {"$gt": 9}}) == ["big", "f9_5", "n10", "n100"]
    assert await keys(store, ns, {"n": {"$gte": 10}}) == ["big", "n10", "n100"]
    assert await keys(store, ns, {"n": {"$lt": 10}}) == ["f9_5", "n9", "neg", "zero"]
    assert await keys(store, ns, {"n": {"$lte": 9.5, "$gt": 0}}) == ["f9_5", "n9"]
    assert await keys(store, ns, {"n": {"$gt": 99.999}}) == ["big", "n100"]
    assert await keys(store, ns, {"n": {"$gt": 2**59}}) == ["big"]
    assert await keys(store, ns, {"n": {"$lt": -0.5}}) == ["neg"]


async def test_equality(store: Driver, numbers: NS) -> None:
    ns = numbers
    assert await keys(store, ns, {"n": 10}) == ["n10"]
    assert await keys(store, ns, {"n": 10.0}) == ["n10"]  # JSON numbers: 10 == 10.0
    assert await keys(store, ns, {"n": "10"}) == ["s10"]
    assert await keys(store, ns, {"n": True}) == ["t"]
    assert await keys(store, ns, {"n": [10]}) == ["list"]
    assert await keys(store, ns, {"n": None}) == ["missing", "null"]
    assert await keys(store, ns, {"n": {"$eq": 9}}) == ["n9"]
    assert await keys(store, ns, {"n": {"$ne": 10}}) == sorted(
        ["n9", "n100", "f9_5", "neg", "zero", "big", "s10", "s9", "t", "null", "missing", "list"]
    )
    assert "missing" not in await keys(store, ns, {"n": {"$ne": None}})
    assert "null" not in await keys(store, ns, {"n": {"$ne": None}})


async def test_strings_and_dates_compare_as_strings(store: Driver, ns: NS) -> None:
    for i, day in enumerate(["2024-01-09", "2024-01-10", "2024-02-01", "2023-12-31T23:59:59"]):
        await store.put(ns, f"d{i}", {"day": day, "name": ["b", "a", "B", "ä"][i]})
    await store.put(ns, "num", {"day": 20240110})
    assert await keys(store, ns, {"day": {"$gt": "2024-01-09"}}) == ["d1", "d2"]
    assert await keys(store, ns, {"day": {"$gte": dt.date(2024, 1, 10)}}) == ["d1", "d2"]
    assert await keys(store, ns, {"day": {"$lt": dt.datetime(2024, 1, 1)}}) == ["d3"]
    # Code-point order, as Python compares strings: "B" < "a" < "b" < "ä".
    assert await keys(store, ns, {"name": {"$gt": "a"}}) == ["d0", "d3"]
    assert await keys(store, ns, {"name": {"$lt": "a"}}) == ["d2"]


async def test_nested_paths(store: Driver, ns: NS) -> None:
    await store.put(ns, "a", {"meta": {"src": "chat", "score": 10, "deep": {"x": 1}}})
    await store.put(ns, "b", {"meta": {"src": "web", "score": 9}})
    await store.put(ns, "c", {"meta": "not an object"})
    await store.put(ns, "d", {"meta.src": "chat"})  # a key with a dot is not a path
    assert await keys(store, ns, {"meta.src": "chat"}) == ["a"]
    assert await keys(store, ns, {"meta.score": {"$gt": 9}}) == ["a"]
    assert await keys(store, ns, {"meta.deep.x": 1}) == ["a"]
    assert await keys(store, ns, {"meta": {"src": "web"}}) == ["b"]
    assert await keys(store, ns, {"meta": {"score": {"$lt": 10}}}) == ["b"]
    assert await keys(store, ns, {"meta": {}}) == ["a", "b"]
    assert await keys(store, ns, {"meta": {"nothing": None}}) == ["a", "b"]
    assert await keys(store, ns, {"meta.missing": {"$exists": False}}) == ["a", "b", "c", "d"]
    assert await keys(store, ns, {"meta.src": {"$exists": True}}) == ["a", "b"]


async def test_in_nin_exists(store: Driver, ns: NS) -> None:
    await store.put(ns, "a", {"tag": "x", "n": 1})
    await store.put(ns, "b", {"tag": "y", "n": 2})
    await store.put(ns, "c", {"tag": None})
    await store.put(ns, "d", {})
    assert await keys(store, ns, {"tag": {"$in": ["x", "z"]}}) == ["a"]
    assert await keys(store, ns, {"tag": {"$in": ["x", None]}}) == ["a", "c", "d"]
    assert await keys(store, ns, {"tag": {"$in": []}}) == []
    assert await keys(store, ns, {"n": {"$in": [2.0, 3]}}) == ["b"]
    assert await keys(store, ns, {"tag": {"$nin": ["x"]}}) == ["b", "c", "d"]
    assert await keys(store, ns, {"tag": {"$nin": ["x", None]}}) == ["b"]
    assert await keys(store, ns, {"tag": {"$exists": True}}) == ["a", "b", "c"]
    assert await keys(store, ns, {"tag": {"$exists": False}}) == ["d"]
    assert await keys(store, ns, {"tag": {"$exists": True}, "n": {"$gte": 2}}) == ["b"]


async def test_filter_values_are_parameters(store: Driver, ns: NS) -> None:
    nasty = "x' OR '1'='1"
    await store.put(ns, "a", {"k": nasty, nasty: "v"})
    await store.put(ns, "b", {"k": "other"})
    assert await keys(store, ns, {"k": nasty}) == ["a"]
    assert await keys(store, ns, {nasty: "v"}) == ["a"]
    assert await keys(store, ns, {"k": {"$lt": nasty}}) == ["b"]
    assert await keys(store, ns, {"k": "' OR 1=1 --"}) == []
    assert await keys(store, ns, {"k'); DROP TABLE haive.store_items; --": 1}) == []
    assert len(await store.search(ns)) == 2


async def test_filters_apply_to_vector_search(store: Driver, ns: NS) -> None:
    for i in range(12):
        await store.put(ns, f"k{i}", {"text": f"memory about tea number {i}", "n": i})
    hits = await store.search(ns, query="tea", filter={"n": {"$gte": 10}}, limit=5)
    assert sorted(h.key for h in hits) == ["k10", "k11"]
    assert all(h.score is not None for h in hits)


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"n": {"$regex": "x"}}, "unsupported filter operator '$regex' on 'n'"),
        ({"$or": [{"a": 1}]}, "unsupported top-level filter operator '$or'"),
        ({"n": {"$gt": None}}, "$gt on 'n' compares numbers or strings"),
        ({"n": {"$gt": True}}, "$gt on 'n' compares numbers or strings"),
        ({"n": {"$lt": [1]}}, "$lt on 'n' compares numbers or strings"),
        ({"n": {"$gt": float("nan")}}, "needs a finite number"),
        ({"n": {"$in": "abc"}}, "$in on 'n' takes a list"),
        ({"n": {"$exists": 1}}, "$exists on 'n' takes true or false"),
        ({"a..b": 1}, "empty path segment"),
        ({"": 1}, "non-empty strings"),
        ({"n": object()}, "not a JSON value"),
        ({"n": "a\x00"}, "$eq value on 'n' contains a NUL character"),
        ({"n": {"$in": ["a", "b\x00"]}}, "$in value on 'n' contains a NUL character"),
        ({"n": {"$gt": "\x00"}}, "$gt value on 'n' contains a NUL character"),
        ({"m.n\x00": 1}, "contains a NUL character"),
    ],
)
async def test_bad_filters_are_rejected(
    store: Driver, ns: NS, flt: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidFilterError) as err:
        await store.search(ns, filter=flt)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)
