"""CacheLayer reads, sync and async, on a real Redis: counting, copies and failures.

Each read is written once (a generator of requests) and run by a sync and an
async driver; every test here runs on both and asserts the same outcome.
Redis failures are injected on the layer's ``RedisCache`` (the server itself
stays up), the source is a plain loader.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from langchain_core.messages import HumanMessage

from haive_langgraph.ops.cache import CacheLayer, InMemoryCache
from tests.ops.test_cache import layer_for, prefix, redis_url

__all__ = ["prefix", "redis_url"]  # fixtures used here

MODES = ["sync", "async"]


class _ListFormat:
    """Lists of strings as JSON; ``copy`` gives a new list (a caller may mutate it)."""

    def dumps(self, value: list[str]) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> list[str]:
        return list(json.loads(data))

    def copy(self, value: list[str]) -> list[str]:
        return list(value)


class _EntryFormat:
    """Versioned ``(token, messages)`` entries (a chat history's shape)."""

    def dumps(self, entry: tuple[str, list[HumanMessage]]) -> bytes:
        return json.dumps([entry[0], [m.content for m in entry[1]]]).encode()

    def loads(self, data: bytes) -> tuple[str, list[HumanMessage]]:
        token, texts = json.loads(data)
        return token, [HumanMessage(t) for t in texts]

    def copy(self, entry: tuple[str, list[HumanMessage]]) -> tuple[str, list[HumanMessage]]:
        return entry[0], list(entry[1])


def msgs(*texts: str) -> list[HumanMessage]:
    return [HumanMessage(t) for t in texts]


def plain(entry: Any) -> Any:
    """A versioned entry with its messages as texts (to compare)."""
    return None if entry is None else (entry[0], [m.content for m in entry[1]])


FMT = _ListFormat()
ENTRY = _EntryFormat()


class Source:
    """A loader that counts its calls and returns (or raises) what it is told."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[Any] = []  # the arguments of each call

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if isinstance(self.result, BaseException):
            raise self.result
        if callable(self.result):
            return self.result(*args)
        return self.result


class Database:
    """What the layer asks PostgreSQL: the current version of a group (``None``: it
    cannot be told), counting the questions."""

    def __init__(self, version: str | None = "00aa") -> None:
        self.current = version
        self.asked: list[str] = []
        self.tenant = ""
        self.checkable = True

    def shredded(self) -> bool:
        return False

    def version(self, group: str) -> str | None:
        self.asked.append(group)
        return self.current

    async def aversion(self, group: str) -> str | None:
        return self.version(group)


DB = Database()


async def read(
    layer: CacheLayer,
    mode: str,
    source: Source,
    *,
    refresh: bool = False,
    db: Database = DB,
) -> Any:
    origin: Any = db
    if mode == "sync":
        return layer.read("g", "s", source, FMT, origin, refresh=refresh)

    async def load() -> Any:
        return source()

    return await layer.aread("g", "s", load, FMT, origin, refresh=refresh)


async def read_versioned(
    layer: CacheLayer, mode: str, source: Source, *, refresh: bool = False
) -> Any:
    origin: Any = DB
    if mode == "sync":
        return layer.read_versioned("h", source, ENTRY, origin, refresh=refresh)

    async def load(known: Any) -> Any:
        return source(known)

    return await layer.aread_versioned("h", load, ENTRY, origin, refresh=refresh)


def counts(layer: CacheLayer) -> dict[str, Any]:
    m = layer.metrics()
    return {
        "hits": m.hits,
        "misses": m.misses,
        "refreshes": m.refreshes,
        "fills": m.fills,
        "stale_fills_refused": m.stale_fills_refused,
        "redis_errors": m.redis_errors,
    }


def fail_redis(
    layer: CacheLayer, monkeypatch: pytest.MonkeyPatch, *names: str
) -> list[tuple[Any, ...]]:
    """Make the named ``RedisCache`` calls (sync and async) raise; returns their calls."""
    assert layer.redis is not None
    calls: list[tuple[Any, ...]] = []

    def failing(*args: Any) -> Any:
        calls.append(args)
        raise redis.ConnectionError("injected")

    async def afailing(*args: Any) -> Any:
        return failing(*args)

    for name in names:
        monkeypatch.setattr(layer.redis, name, failing)
        monkeypatch.setattr(layer.redis, f"a{name}", afailing)
    return calls


@pytest.fixture
async def layers(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., CacheLayer]]:
    """Layers on one Redis prefix (processes sharing a Redis), closed afterwards."""
    made: list[CacheLayer] = []

    def make(**kw: Any) -> CacheLayer:
        layer = layer_for(redis_url, prefix, **kw)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.aclose()  # the async clients and the sync one


# -- read ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_read_counts_every_level_and_copies_every_value(
    mode: str, layers: Callable[..., CacheLayer]
) -> None:
    a = layers()
    source = Source(["v1"])
    got = await read(a, mode, source)
    assert got == ["v1"] and got is not source.result, "a miss must return a copy"
    assert counts(a) == {
        "hits": {"memory": 0, "redis": 0},
        "misses": 1,
        "refreshes": 0,
        "fills": 2,  # memory and Redis
        "stale_fills_refused": 0,
        "redis_errors": 0,
    }
    got.append("mutated")
    hit = await read(a, mode, source)
    assert hit == ["v1"], "a miss must return a copy"
    hit.append("mutated")
    assert await read(a, mode, source) == ["v1"], "a memory hit must return a copy"
    assert len(source.calls) == 1 and a.metrics().hits["memory"] == 2

    b = layers()  # another process: its memory is empty, Redis has the entry
    from_redis = await read(b, mode, source)
    assert from_redis == ["v1"] and len(source.calls) == 1
    assert counts(b)["hits"] == {"memory": 0, "redis": 1} and counts(b)["fills"] == 1
    from_redis.append("mutated")
    assert await read(b, mode, source) == ["v1"]
    assert counts(b)["hits"] == {"memory": 1, "redis": 1}

    source.result = ["v2"]
    assert await read(b, mode, source, refresh=True) == ["v2"]
    assert counts(b)["refreshes"] == 1 and counts(b)["misses"] == 0
    assert len(source.calls) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_read_memory_only(mode: str) -> None:
    layer = CacheLayer([InMemoryCache()])
    source = Source(["v"])
    assert await read(layer, mode, source) == ["v"]
    assert await read(layer, mode, source) == ["v"]
    m = layer.metrics()
    assert (m.misses, m.fills, m.hits["memory"], len(source.calls)) == (1, 1, 1, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_read_a_loader_error_propagates_unchanged_and_caches_nothing(
    mode: str, layers: Callable[..., CacheLayer]
) -> None:
    layer = layers()
    boom = LookupError("the source failed")
    with pytest.raises(LookupError) as info:
        await read(layer, mode, Source(boom))
    assert info.value is boom
    c = counts(layer)
    assert (c["misses"], c["fills"], c["redis_errors"]) == (1, 0, 0)
    source = Source(["v"])
    assert await read(layer, mode, source) == ["v"] and len(source.calls) == 1, (
        "a failed load must leave nothing cached"
    )


@pytest.mark.parametrize("mode", MODES)
async def test_read_a_redis_read_error_still_loads_and_fills_memory_only(
    mode: str, layers: Callable[..., CacheLayer], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = layers()
    reads = fail_redis(layer, monkeypatch, "read")
    writes = fail_redis(layer, monkeypatch, "write")
    source = Source(["v"])
    assert await read(layer, mode, source) == ["v"]
    assert len(reads) == 1
    assert writes == [], "after a failed Redis read nothing may be written under a guessed version"
    c = counts(layer)
    assert (c["misses"], c["fills"], c["redis_errors"]) == (1, 1, 1)
    assert layer.metrics().degraded
    assert await read(layer, mode, source) == ["v"] and len(source.calls) == 1
    assert layer.metrics().hits["memory"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_read_a_redis_write_error_during_the_fill(
    mode: str, layers: Callable[..., CacheLayer], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = layers()
    writes = fail_redis(layer, monkeypatch, "write")
    source = Source(["v"])
    assert await read(layer, mode, source) == ["v"]
    assert len(writes) == 1
    c = counts(layer)
    assert (c["misses"], c["fills"], c["stale_fills_refused"], c["redis_errors"]) == (1, 1, 0, 1)
    monkeypatch.undo()
    other = layers()
    assert await read(other, mode, source) == ["v"] and len(source.calls) == 2, (
        "the failed Redis fill must not have stored anything"
    )


@pytest.mark.parametrize("mode", MODES)
async def test_read_takes_memory_tokens_before_the_redis_read(
    mode: str, layers: Callable[..., CacheLayer], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = layers()
    assert layer.redis is not None
    memory = layer.memory[0]
    real_read, real_aread = layer.redis.read, layer.redis.aread

    def racing_read(group: str, sub: str, tenant: str) -> Any:
        memory.drop_group(group)  # an invalidation lands while Redis is read
        return real_read(group, sub, tenant)

    async def racing_aread(group: str, sub: str, tenant: str) -> Any:
        memory.drop_group(group)
        return await real_aread(group, sub, tenant)

    monkeypatch.setattr(layer.redis, "read", racing_read)
    monkeypatch.setattr(layer.redis, "aread", racing_aread)
    assert await read(layer, mode, Source(["v"])) == ["v"]
    c = counts(layer)
    assert c["stale_fills_refused"] == 1, "a memory fill racing an invalidation must be refused"
    assert c["fills"] == 1  # the Redis fill, under the version it read
    assert ("g", "s") not in memory


@pytest.mark.parametrize("mode", MODES)
async def test_read_serves_redis_only_at_the_version_postgresql_holds(
    mode: str, layers: Callable[..., CacheLayer]
) -> None:
    """An authentic Redis entry is served only while PostgreSQL still holds the version
    it was read at; the version is asked before loading, so what is loaded is at least
    as new as the version it is stored under."""
    db = Database("00aa")
    a, b, c = layers(memory=False), layers(memory=False), layers(memory=False)
    source = Source(["v1"])
    assert await read(a, mode, source, db=db) == ["v1"]
    assert len(db.asked) == 1 and counts(a)["fills"] == 1  # asked before loading
    assert await read(b, mode, source, db=db) == ["v1"] and len(source.calls) == 1
    assert counts(b)["hits"] == {"redis": 1} and len(db.asked) == 2  # checked
    db.current = "00bb"  # a write elsewhere: the entry is outdated (or replayed)
    source.result = ["v2"]
    assert await read(c, mode, source, db=db) == ["v2"] and len(source.calls) == 2
    assert c.metrics().outdated == 1 and counts(c)["hits"] == {"redis": 0}
    assert await read(b, mode, source, db=db) == ["v2"]  # the entry was replaced
    assert counts(b)["hits"] == {"redis": 2}
    db.current = None  # PostgreSQL cannot tell: Redis is neither served nor filled
    assert await read(c, mode, source, db=db) == ["v2"] and len(source.calls) == 3
    assert counts(c)["fills"] == 1


# -- read_versioned -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_versioned_counts_and_copies(mode: str, layers: Callable[..., CacheLayer]) -> None:
    a = layers()
    entries = {"t1": msgs("one"), "t2": msgs("two")}
    current = ["t1"]

    def source_fn(known: Any) -> Any:
        token = current[0]
        return (token, None) if known == token else (token, entries[token])

    source = Source(source_fn)
    got = await read_versioned(a, mode, source)
    assert plain(got) == ("t1", ["one"]) and source.calls == [(None,)]
    assert got[1] is not entries["t1"], "a miss must return a copy"
    c = counts(a)
    assert (c["misses"], c["fills"]) == (1, 2)  # memory and Redis
    got[1].append(HumanMessage("mutated"))
    assert plain(await read_versioned(a, mode, source)) == ("t1", ["one"])
    assert source.calls[-1] == ("t1",) and a.metrics().hits["memory"] == 1

    current[0] = "t2"  # the source moved on: memory's entry is stale
    assert plain(await read_versioned(a, mode, source)) == ("t2", ["two"])
    c = counts(a)
    # a fresh fill of memory, and of Redis under its current version
    assert (c["misses"], c["fills"]) == (2, 4)

    b = layers()
    assert plain(await read_versioned(b, mode, source)) == ("t2", ["two"])
    assert source.calls[-1] == ("t2",), "the Redis entry must be offered to the source"
    assert counts(b)["hits"] == {"memory": 0, "redis": 1} and counts(b)["fills"] == 1

    assert plain(await read_versioned(b, mode, source, refresh=True)) == ("t2", ["two"])
    assert source.calls[-1] == (None,) and counts(b)["refreshes"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_versioned_a_loader_error_propagates_unchanged(
    mode: str, layers: Callable[..., CacheLayer]
) -> None:
    layer = layers()
    boom = LookupError("the source failed")
    with pytest.raises(LookupError) as info:
        await read_versioned(layer, mode, Source(boom))
    assert info.value is boom
    c = counts(layer)
    assert (c["misses"], c["fills"], c["redis_errors"]) == (0, 0, 0)  # counted after a load


@pytest.mark.parametrize("mode", MODES)
async def test_versioned_redis_errors_fall_back_to_memory(
    mode: str, layers: Callable[..., CacheLayer], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = layers()
    writes = fail_redis(layer, monkeypatch, "write")
    source = Source(("t1", msgs("one")))
    assert plain(await read_versioned(layer, mode, source)) == ("t1", ["one"])
    assert len(writes) == 1
    c = counts(layer)
    assert (c["misses"], c["fills"], c["redis_errors"]) == (1, 1, 1)

    reads = fail_redis(layer, monkeypatch, "read")
    layer.memory[0].drop_group("h")
    assert plain(await read_versioned(layer, mode, source)) == ("t1", ["one"])
    assert source.calls[-1] == (None,)
    assert len(reads) == 2  # the entry, then the current version for the fill
    assert len(writes) == 1, "no Redis fill without a version"
    c = counts(layer)
    assert (c["misses"], c["fills"], c["redis_errors"]) == (2, 2, 3)
