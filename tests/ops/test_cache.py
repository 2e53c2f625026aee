"""The cache layer on a real Redis and a real PostgreSQL: correctness first.

Redis: the machine's server on 127.0.0.1:6379 (database 13, a key prefix per
test), else a ``redis-server`` started on a free port, else the Redis tests
are skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.store.base import GetOp, ListNamespacesOp, SearchOp

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.ops.cache import CacheLayer, InMemoryCache, RedisCache

REDIS_DB = 13
SECRET = "test-cache-secret-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def start_redis_server() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH to start")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/{REDIS_DB}"
    for _ in range(100):
        if _reachable(url):
            return proc, url
        time.sleep(0.05)
    proc.kill()
    pytest.skip("redis-server did not start")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    if _reachable(url):
        yield url
        return
    proc, url = start_redis_server()
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"haive-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def layer_for(
    url: str, prefix: str, *, memory: bool = True, lease: float = 1.0, **kw: Any
) -> CacheLayer:
    levels: list[Any] = [InMemoryCache(max_bytes=16 << 20, ttl=60)] if memory else []
    kw.setdefault("secret", SECRET)
    levels.append(RedisCache(url, ttl=60, prefix=prefix, lease=lease, **kw))
    layer = CacheLayer(levels)
    assert layer.wait_ready(), "the Redis subscription did not come up"
    return layer


@pytest.fixture(scope="module")
def saver(dsn: str) -> Iterator[PostgresCheckpointer]:
    with PostgresCheckpointer.from_conn_string(dsn) as cp:
        cp.setup()
        yield cp


def converse(saver: Any, thread_id: str, turns: int = 1, start: int = 0) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    for i in range(start, start + turns):
        graph.invoke(
            {"messages": [HumanMessage(content=f"{thread_id} q{i}")]},
            {"configurable": {"thread_id": thread_id}},
        )


def latest(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def same(a: Any, b: Any) -> bool:
    return a == b if a is None or b is None else tuple(a) == tuple(b)


# -- conformance -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync-memory", "async-memory-redis"])
async def test_conformance(kind: str, dsn: str, redis_url: str, prefix: str) -> None:
    layers: list[CacheLayer] = []

    async def factory() -> AsyncIterator[object]:
        if kind.startswith("async"):
            layer = layer_for(redis_url, prefix)
            layers.append(layer)
            async with AsyncPostgresCheckpointer.from_conn_string(dsn) as inner:
                await inner.setup()
                yield layer.wrap(inner)
        else:
            layer = CacheLayer([InMemoryCache()])
            with PostgresCheckpointer.from_conn_string(dsn) as inner:
                inner.setup()
                yield layer.wrap(inner)

    registered = checkpointer_test(name=f"cached ({kind})")(factory)
    report = await validate(registered, progress=ProgressCallbacks.verbose())
    report.print_report()
    for layer in layers:
        await layer.aclose()
    assert report.conformance_level() == "FULL", report.to_dict()
    assert {n for n, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    assert all(r.passed for r in report.results.values()), report.to_dict()


# -- one process --------------------------------------------------------------------------------


def test_hits_equal_the_database_and_writes_refresh_the_cache(saver: PostgresCheckpointer) -> None:
    layer = CacheLayer([InMemoryCache(max_bytes=8 << 20, ttl=60)])
    cached = layer.wrap(saver)
    thread = f"c-{uuid.uuid4().hex[:8]}"
    assert cached.get_tuple(latest(thread)) is None  # "no checkpoint" is cached too
    converse(cached, thread, 2)
    for _ in range(5):
        got = cached.get_tuple(latest(thread))
        assert same(got, saver.get_tuple(latest(thread)))
    m = layer.metrics()
    assert m.hits["memory"] >= 5 and m.hit_rate > 0.5
    # after a write through the wrapper the next read is a hit, and it is the new head
    before = layer.metrics()
    converse(cached, thread, 1, start=2)
    hit = cached.get_tuple(latest(thread))
    after = layer.metrics()
    # the graph's read of the head, and ours: both hits, no read went to PostgreSQL
    assert after.misses == before.misses and after.hits["memory"] == before.hits["memory"] + 2
    assert after.refreshes > before.refreshes
    assert same(hit, saver.get_tuple(latest(thread)))
    assert hit is not None and len(hit.checkpoint["channel_values"]["messages"]) == 6
    # a returned tuple is the caller's: changing it does not change the cache
    hit.checkpoint["channel_values"]["messages"] = []
    hit.metadata["step"] = -42
    again = cached.get_tuple(latest(thread))
    assert again is not None and len(again.checkpoint["channel_values"]["messages"]) == 6
    assert again.metadata["step"] != -42


def test_every_kind_of_write_invalidates(saver: PostgresCheckpointer) -> None:
    cached = CacheLayer([InMemoryCache()]).wrap(saver)
    a, b = f"w-{uuid.uuid4().hex[:8]}", f"w-{uuid.uuid4().hex[:8]}"
    converse(cached, a, 2)
    head = cached.get_tuple(latest(a))
    assert head is not None
    # copy_thread: the target, cached as empty, now has checkpoints
    assert cached.get_tuple(latest(b)) is None
    cached.copy_thread(a, b)
    assert same(cached.get_tuple(latest(b)), saver.get_tuple(latest(b)))
    # restore: a new head
    first = list(cached.list(latest(a)))[-1]
    cached.restore(first.config)
    assert same(cached.get_tuple(latest(a)), saver.get_tuple(latest(a)))
    # prune and delete
    cached.prune([a])
    assert same(cached.get_tuple(latest(a)), saver.get_tuple(latest(a)))
    cached.delete_thread(b)
    assert cached.get_tuple(latest(b)) is None
    # a write straight through .inner is not seen: documented, so refuse unknown writers
    with pytest.raises(AttributeError, match="not seen by the cache"):
        cached.some_future_writer  # noqa: B018
    assert cached.get_thread(a) is not None  # read-only extras pass through


def test_a_fill_that_raced_a_write_is_refused(redis_url: str, prefix: str) -> None:
    memory = InMemoryCache()
    token = memory.token("g")
    memory.drop_group("g")  # a write happened while the read was loading
    assert not memory.put("g", "s", "old", 3, token)
    assert memory.put("g", "s", "new", 3, memory.token("g"))
    layer = layer_for(redis_url, prefix)
    try:
        assert layer.redis is not None
        tag = "0123abcd"  # the version in PostgreSQL the value was read at
        seen, _, _ = layer.redis.read("g", "s", "t")
        assert seen is not None
        layer.invalidate(["g"])  # the write
        assert not layer.redis.write("g", "s", "t", seen, tag, b"old")
        seen2, _, _ = layer.redis.read("g", "s", "t")
        assert seen2 is not None and layer.redis.write("g", "s", "t", seen2, tag, b"new")
        assert layer.redis.read("g", "s", "t")[1:] == (tag, b"new")
        layer.redis.invalidate([], tenants=["t"])  # the tenant's keys destroyed
        assert layer.redis.read("g", "s", "t")[2] is None
        seen3, _, _ = layer.redis.read("g", "s", "t")
        assert seen3 is not None and layer.redis.write("g", "s", "t", seen3, tag, b"new")
        layer.invalidate(None)  # everything
        assert layer.redis.read("g", "s", "t")[2] is None
    finally:
        layer.close()


# -- several processes -------------------------------------------------------------------------


def test_a_write_in_one_process_is_never_served_stale_by_another(
    saver: PostgresCheckpointer, redis_url: str, prefix: str
) -> None:
    # Two layers: two processes as far as the protocol goes (own memory,
    # own Redis connections, own listener, own identity).
    la, lb = layer_for(redis_url, prefix), layer_for(redis_url, prefix)
    a, b = la.wrap(saver), lb.wrap(saver)
    thread = f"x-{uuid.uuid4().hex[:8]}"
    try:
        converse(a, thread, 1)
        for i in range(15):
            assert same(b.get_tuple(latest(thread)), saver.get_tuple(latest(thread)))
            b.get_tuple(latest(thread))  # cached in B's memory now
            converse(a, thread, 1, start=i + 1)  # A writes; returns after B dropped it
            got = b.get_tuple(latest(thread))
            assert same(got, saver.get_tuple(latest(thread))), f"stale read at round {i}"
        assert lb.metrics().invalidations_received >= 15
        assert lb.metrics().hits["memory"] >= 15
    finally:
        la.close()
        lb.close()


def test_a_write_in_a_real_subprocess(
    saver: PostgresCheckpointer, dsn: str, redis_url: str, prefix: str
) -> None:
    layer = layer_for(redis_url, prefix)
    cached = layer.wrap(saver)
    thread = f"p-{uuid.uuid4().hex[:8]}"
    converse(cached, thread, 1)
    before = cached.get_tuple(latest(thread))
    assert before is not None and cached.get_tuple(latest(thread)) is not None
    script = textwrap.dedent(
        f"""
        from langchain_core.messages import HumanMessage
        from haive_langgraph._demo import chat_graph
        from haive_langgraph.checkpointers import PostgresCheckpointer
        from haive_langgraph.ops.cache import CacheLayer, InMemoryCache, RedisCache
        layer = CacheLayer([InMemoryCache(),
                            RedisCache({redis_url!r}, prefix={prefix!r}, secret={SECRET!r})])
        assert layer.wait_ready()
        with PostgresCheckpointer.from_conn_string({dsn!r}) as inner:
            graph = chat_graph().compile(checkpointer=layer.wrap(inner))
            graph.invoke({{"messages": [HumanMessage(content="from the other process")]}},
                         {{"configurable": {{"thread_id": {thread!r}}}}})
        layer.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    after = cached.get_tuple(latest(thread))
    assert after is not None and not same(after, before)
    assert after.checkpoint["channel_values"]["messages"][-2].content == "from the other process"
    assert same(after, saver.get_tuple(latest(thread)))
    layer.close()


def test_redis_shared_level_serves_other_processes(
    saver: PostgresCheckpointer, redis_url: str, prefix: str
) -> None:
    la, lb = layer_for(redis_url, prefix), layer_for(redis_url, prefix, memory=False)
    thread = f"s-{uuid.uuid4().hex[:8]}"
    try:
        converse(la.wrap(saver), thread, 2)  # A's put wrote the head to Redis too
        got = lb.wrap(saver).get_tuple(latest(thread))
        assert lb.metrics().hits["redis"] == 1 and lb.metrics().misses == 0
        assert same(got, saver.get_tuple(latest(thread)))
    finally:
        la.close()
        lb.close()


# -- Redis down --------------------------------------------------------------------------------


def test_redis_unreachable_degrades_with_one_warning(
    saver: PostgresCheckpointer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="haive_langgraph.cache")
    layer = CacheLayer(
        [InMemoryCache(), RedisCache(url, lease=0.2, socket_timeout=0.2, secret=SECRET)]
    )
    cached = layer.wrap(saver)
    thread = f"d-{uuid.uuid4().hex[:8]}"
    converse(cached, thread, 2)
    for _ in range(3):
        assert same(cached.get_tuple(latest(thread)), saver.get_tuple(latest(thread)))
    m = layer.metrics()
    assert m.degraded and m.redis_errors > 0 and m.misses >= 3
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    layer.close()


def test_redis_dying_never_leaves_a_stale_read(saver: PostgresCheckpointer) -> None:
    proc, url = start_redis_server()
    prefix = f"die-{uuid.uuid4().hex[:6]}"
    la = layer_for(url, prefix, lease=0.3, socket_timeout=0.2)
    lb = layer_for(url, prefix, lease=0.3, socket_timeout=0.2)
    a, b = la.wrap(saver), lb.wrap(saver)
    thread = f"k-{uuid.uuid4().hex[:8]}"
    try:
        converse(a, thread, 1)
        b.get_tuple(latest(thread))
        b.get_tuple(latest(thread))
        assert lb.metrics().hits["memory"] >= 1
        proc.kill()
        proc.wait()
        converse(a, thread, 1, start=1)  # A cannot tell B; it waits until B cannot trust its memory
        got = b.get_tuple(latest(thread))
        assert same(got, saver.get_tuple(latest(thread)))
        assert la.metrics().degraded
    finally:
        proc.kill()
        la.close()
        lb.close()


def test_a_process_that_lost_redis_suspends_the_others(
    saver: PostgresCheckpointer, redis_url: str, prefix: str
) -> None:
    la = layer_for(redis_url, prefix, lease=0.2, member_grace=1.0)
    lb = layer_for(redis_url, prefix, lease=0.2, member_grace=1.0)
    thread = f"l-{uuid.uuid4().hex[:8]}"
    b = lb.wrap(saver)
    try:
        converse(la.wrap(saver), thread, 1)
        b.get_tuple(latest(thread))
        # A's listener stops (as if A lost Redis): its heartbeat lapses
        assert la.redis is not None
        la.redis._stop.set()
        deadline = time.monotonic() + 3
        while not lb.metrics().suspended and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lb.metrics().suspended
        before = lb.metrics().misses
        b.get_tuple(latest(thread))
        assert lb.metrics().misses == before + 1  # not served from memory
        # after the grace period A is forgotten and B caches again
        deadline = time.monotonic() + 3
        while lb.metrics().suspended and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not lb.metrics().suspended
    finally:
        la.close()
        lb.close()


# -- async and warm-up ------------------------------------------------------------------------


async def test_async_saver_and_warm_up(dsn: str, redis_url: str, prefix: str) -> None:
    layer = layer_for(redis_url, prefix)
    async with AsyncPostgresCheckpointer.from_conn_string(dsn) as inner:
        await inner.setup()
        cached = layer.wrap(inner)
        threads = [f"aw-{uuid.uuid4().hex[:6]}" for _ in range(3)]
        graph = chat_graph().compile(checkpointer=inner)
        for t in threads:
            await graph.ainvoke(
                {"messages": [HumanMessage(content="hi")]}, {"configurable": {"thread_id": t}}
            )
        assert await cached.awarm(threads) == 3
        before = layer.metrics()
        for t in threads:
            got = await cached.aget_tuple(latest(t))
            assert same(got, await inner.aget_tuple(latest(t)))
        assert layer.metrics().hits["memory"] == before.hits["memory"] + 3
        cgraph = chat_graph().compile(checkpointer=cached)
        await cgraph.ainvoke(
            {"messages": [HumanMessage(content="again")]},
            {"configurable": {"thread_id": threads[0]}},
        )
        got = await cached.aget_tuple(latest(threads[0]))
        assert got is not None and len(got.checkpoint["channel_values"]["messages"]) == 4
    await layer.aclose()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_setup_creates_the_versions_table_beside_the_tables(
    mode: str, pg_server: str, redis_url: str, prefix: str
) -> None:
    """``setup()`` on a wrapper also creates the cache's versions table (the table a
    Redis entry is checked against), in the wrapped object's schema."""
    from tests.conftest import create_database, drop_database

    url = create_database(pg_server)
    layer = layer_for(redis_url, prefix)
    try:
        if mode == "sync":
            with PostgresCheckpointer.from_conn_string(url, schema="elsewhere") as inner:
                assert layer.wrap(inner).setup() is None
        else:
            async with AsyncPostgresCheckpointer.from_conn_string(url, schema="elsewhere") as ai:
                await layer.wrap(ai).setup()
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT to_regclass('elsewhere.checkpoints'), to_regclass('elsewhere.cache_versions')"
            ).fetchone()
            assert row is not None and all(row), row
    finally:
        await layer.aclose()
        drop_database(pg_server, url)


def test_warm_recent_threads(saver: PostgresCheckpointer) -> None:
    layer = CacheLayer([InMemoryCache()])
    cached = layer.wrap(saver)
    for i in range(3):
        converse(saver, f"recent-{uuid.uuid4().hex[:6]}-{i}", 1)
    assert cached.warm(recent=3) == 3
    recent = [t.thread_id for t in saver.list_threads(limit=3)]
    for t in recent:
        cached.get_tuple(latest(t))
    assert layer.metrics().hits["memory"] == 3


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="at least one level"):
        CacheLayer([])
    with pytest.raises(ValueError, match="write-through"):
        CacheLayer([InMemoryCache()], strategy="write-back")
    with pytest.raises(ValueError, match="max_bytes"):
        InMemoryCache(max_bytes=0)


def test_memory_is_bounded_by_bytes_and_time() -> None:
    memory = InMemoryCache(max_bytes=1000, ttl=None)
    for i in range(50):
        assert memory.put("g", str(i), i, 100, memory.token("g"))
    assert memory.bytes == 1000 and len(memory) == 10
    assert ("g", "49") in memory and ("g", "0") not in memory  # least recently used went
    assert not memory.put("g", "huge", 0, 1001, memory.token("g"))
    short = InMemoryCache(ttl=0.05)
    short.put("g", "k", 1, 1, short.token("g"))
    assert ("g", "k") in short
    time.sleep(0.08)
    assert ("g", "k") not in short


def test_warm_up_replaces_what_writes_outside_the_cache_made_stale(
    saver: PostgresCheckpointer,
) -> None:
    layer = CacheLayer([InMemoryCache()])
    cached = layer.wrap(saver)
    thread = f"o-{uuid.uuid4().hex[:8]}"
    converse(cached, thread, 1)
    old = cached.get_tuple(latest(thread))
    converse(saver, thread, 1, start=1)  # written without the cache: documented as unseen
    assert same(cached.get_tuple(latest(thread)), old)
    cached.warm([thread])
    assert same(cached.get_tuple(latest(thread)), saver.get_tuple(latest(thread)))


# -- Redis is not trusted --------------------------------------------------------------------


def _entry_key(client: Any, prefix: str, thread: str) -> bytes:
    keys = [k for k in client.scan_iter(f"{prefix}:val:*") if thread.encode() in k]
    assert len(keys) == 1, keys
    return bytes(keys[0])


def test_a_forged_redis_entry_is_a_miss_and_never_deserialised(
    saver: PostgresCheckpointer,
    redis_url: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from haive_langgraph.ops import cache as cache_module

    caplog.set_level(logging.WARNING, logger="haive_langgraph.cache")
    layer = layer_for(redis_url, prefix, memory=False)  # Redis is the only level
    other = layer_for(redis_url, prefix, memory=False, secret="another-secret-of-the-attacker")
    cached = layer.wrap(saver)
    t1, t2 = f"f1-{uuid.uuid4().hex[:8]}", f"f2-{uuid.uuid4().hex[:8]}"
    converse(saver, t1, 1)
    converse(saver, t2, 2)
    client = redis.Redis.from_url(redis_url)
    try:
        assert cached.get_tuple(latest(t1)) is not None  # fills Redis
        assert cached.get_tuple(latest(t2)) is not None
        k1, k2 = _entry_key(client, prefix, t1), _entry_key(client, prefix, t2)
        genuine = client.get(k1)
        assert cached.get_tuple(latest(t1)) is not None and layer.metrics().hits["redis"] == 1
        loaded: list[bytes] = []
        real_loads = cache_module._TupleFormat.loads

        def spy(self: Any, data: bytes) -> Any:
            loaded.append(data)
            return real_loads(self, data)

        monkeypatch.setattr(cache_module._TupleFormat, "loads", spy)
        # "ver:epoch:tenant-ver:database-version:"
        head = b":".join(genuine.split(b":", 4)[:4]) + b":"
        body = genuine[len(head) :]
        kid = body[:8]
        # a copied entry of another thread (authentic, but for another key),
        # an entry signed with another secret, a guessed MAC, garbage
        genuine_t2 = client.get(k2)
        other.wrap(saver).get_tuple(latest(t2))  # rewrites t2's entry under its secret
        assert client.get(k2) != genuine_t2
        forgeries = [
            genuine_t2,
            client.get(k2),
            head + bytes(8) + bytes(32) + body[40:],
            head + kid + os.urandom(32) + body[40:],
            head + b"\x80\x04garbage",
        ]
        truth = saver.get_tuple(latest(t1))
        for n, forged in enumerate(forgeries, start=1):
            client.set(k1, forged)
            got = cached.get_tuple(latest(t1))
            assert same(got, truth), f"forgery {n} was served"
            assert layer.metrics().rejected == n
            client.set(k1, forged)  # the miss wrote the genuine entry back
        assert loaded == [], "a forged entry reached the deserialiser"
        warnings = [
            r for r in caplog.records if "rejected" in r.getMessage() and t1 in r.getMessage()
        ]
        assert len(warnings) == 1  # rate-limited: one attack, one warning
        # the genuine entry is served again once rewritten by a miss
        client.delete(k1)
        cached.get_tuple(latest(t1))
        before = layer.metrics().hits["redis"]
        assert same(cached.get_tuple(latest(t1)), truth)
        assert layer.metrics().hits["redis"] == before + 1 and loaded
    finally:
        client.close()
        layer.close()
        other.close()


def test_redis_needs_a_secret_or_an_encrypting_codec(
    dsn: str, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haive_langgraph.codec import HaiveCodec, KeyRing

    monkeypatch.delenv("HAIVE_CACHE_SECRET", raising=False)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        RedisCache(redis_url, secret="short")
    layer = CacheLayer([RedisCache(redis_url, prefix=prefix)])
    keyring = KeyRing([("k1", b"k" * 32)])
    try:
        with (
            PostgresCheckpointer.from_conn_string(dsn) as plain,
            pytest.raises(ValueError, match="needs a secret"),
        ):
            layer.wrap(plain)
        with PostgresCheckpointer.from_conn_string(dsn, codec=HaiveCodec(keyring=keyring)) as enc:
            thread = f"kr-{uuid.uuid4().hex[:8]}"
            converse(enc, thread, 1)
            assert layer.wait_ready()
            layer.wrap(enc).get_tuple(latest(thread))
            # another process with the same keyring derives the same secret: a hit
            second = CacheLayer([RedisCache(redis_url, prefix=prefix)])
            assert second.wait_ready()
            got = second.wrap(enc).get_tuple(latest(thread))
            assert second.metrics().hits["redis"] == 1 and second.metrics().rejected == 0
            assert same(got, enc.get_tuple(latest(thread)))
            second.close()
        monkeypatch.setenv("HAIVE_CACHE_SECRET", SECRET)
        assert RedisCache(redis_url, prefix=prefix).has_secret
    finally:
        layer.close()


def test_malformed_messages_do_not_stop_invalidation(
    saver: PostgresCheckpointer, redis_url: str, prefix: str
) -> None:
    la, lb = layer_for(redis_url, prefix), layer_for(redis_url, prefix)
    assert lb.redis is not None
    client = redis.Redis.from_url(redis_url)
    thread = f"m-{uuid.uuid4().hex[:8]}"
    try:
        for junk in (b"not json", b"[1, 2]", b'{"groups": 5}'):
            client.publish(f"{prefix}:inv", junk)
        client.publish(f"{prefix}:ack:{lb.redis.me}", b"not a number")
        a, b = la.wrap(saver), lb.wrap(saver)
        converse(a, thread, 1)
        b.get_tuple(latest(thread))
        converse(a, thread, 1, start=1)
        assert same(b.get_tuple(latest(thread)), saver.get_tuple(latest(thread)))
        assert lb.metrics().invalidations_received >= 2
    finally:
        client.close()
        la.close()
        lb.close()


# -- the store -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(dsn: str) -> Iterator[Any]:
    from haive_langgraph.stores import PostgresStore

    with PostgresStore.from_conn_string(dsn) as st:
        st.setup()
        yield st


def same_item(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return (a.value, a.key, a.namespace, a.created_at, a.updated_at) == (
        b.value,
        b.key,
        b.namespace,
        b.created_at,
        b.updated_at,
    )


def test_store_gets_are_cached_and_writes_invalidate_across_processes(
    store: Any, redis_url: str, prefix: str
) -> None:
    la, lb = layer_for(redis_url, prefix), layer_for(redis_url, prefix)
    a, b = la.wrap_store(store), lb.wrap_store(store)
    ns = ("users", uuid.uuid4().hex[:8], "prefs")
    try:
        assert b.get(ns, "theme") is None  # "nothing there" is cached too
        a.put(ns, "theme", {"color": "blue", "n": 1})
        for i in range(10):
            got = b.get(ns, "theme")
            assert same_item(got, store.get(ns, "theme")), f"stale read at round {i}"
            assert got is not None and got.value["n"] == i + 1
            b.get(ns, "theme")  # in B's memory now
            a.put(ns, "theme", {"color": "blue", "n": i + 2})  # returns after B dropped it
        hits = lb.metrics().hits
        assert hits["memory"] >= 10 and lb.metrics().invalidations_received >= 10
        # A's own read after its write is a hit (write-through), and correct
        before = la.metrics()
        assert same_item(a.get(ns, "theme"), store.get(ns, "theme"))
        assert la.metrics().misses == before.misses
        # a delete is a write too
        a.delete(ns, "theme")
        assert b.get(ns, "theme") is None and store.get(ns, "theme") is None
        # a returned item is the caller's
        a.put(ns, "k", {"x": 1})
        got = b.get(ns, "k")
        assert got is not None
        got.value["x"] = 99
        again = b.get(ns, "k")
        assert again is not None and again.value == {"x": 1}
        # searches and listings go to the store; a mixed batch keeps its order
        assert [i.key for i in b.search(ns)] == ["k"]
        assert ns in b.list_namespaces(prefix=ns[:2])
    finally:
        la.close()
        lb.close()


def test_store_cache_refuses_ttls_and_forged_entries(
    dsn: str, store: Any, redis_url: str, prefix: str
) -> None:
    from haive_langgraph.ops.cache import CachedStore
    from haive_langgraph.stores import PostgresStore

    layer = layer_for(redis_url, prefix, memory=False)
    try:
        cached = layer.wrap_store(store)
        assert isinstance(cached, CachedStore) and not cached.supports_ttl
        with pytest.raises(NotImplementedError):
            cached.put(("t",), "k", {"v": 1}, ttl=5)
        with (
            PostgresStore.from_conn_string(dsn, ttl={"default_ttl": 10}) as ttl_store,
            pytest.raises(ValueError, match="default TTL"),
        ):
            layer.wrap_store(ttl_store)
        ns = ("forge", uuid.uuid4().hex[:8])
        cached.put(ns, "k", {"v": "genuine"})
        client = redis.Redis.from_url(redis_url)
        try:
            (key,) = [k for k in client.scan_iter(f"{prefix}:val:*") if ns[1].encode() in k]
            entry = client.get(key)
            client.set(key, entry[:-1] + bytes([entry[-1] ^ 1]))  # one flipped bit
            got = cached.get(ns, "k")
            assert got is not None and got.value == {"v": "genuine"}
            assert layer.metrics().rejected == 1 and layer.metrics().hits["redis"] == 0
        finally:
            client.close()
    finally:
        layer.close()


async def test_async_store_cache(dsn: str, redis_url: str, prefix: str) -> None:
    from haive_langgraph.stores import AsyncPostgresStore

    layer = layer_for(redis_url, prefix)
    async with AsyncPostgresStore.from_conn_string(dsn) as inner:
        await inner.setup()
        cached = layer.wrap_store(inner)
        ns = ("async", uuid.uuid4().hex[:8])
        await cached.aput(ns, "a", {"n": 1})
        assert await cached.awarm([(ns, "a"), (ns, "missing")]) == 2
        before = layer.metrics()
        got = await cached.aget(ns, "a")
        assert same_item(got, await inner.aget(ns, "a"))
        assert await cached.aget(ns, "missing") is None
        assert layer.metrics().hits["memory"] == before.hits["memory"] + 2
        await cached.aput(ns, "a", {"n": 2})
        got = await cached.aget(ns, "a")
        assert got is not None and got.value == {"n": 2}
        results = await cached.abatch(
            [GetOp(ns, "a"), SearchOp(ns), GetOp(ns, "missing"), ListNamespacesOp()]
        )
        assert same_item(results[0], got) and results[2] is None
        assert [i.key for i in results[1]] == ["a"]  # type: ignore[union-attr]
    await layer.aclose()


# -- command line ------------------------------------------------------------------------------


def test_cli_warm_stats_flush(
    saver: PostgresCheckpointer, dsn: str, redis_url: str, prefix: str
) -> None:
    import json

    from typer.testing import CliRunner

    from haive_langgraph.cli import app

    runner = CliRunner()
    env = {"HAIVE_CACHE_SECRET": SECRET}
    threads = [f"cli-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for t in threads:
        converse(saver, t, 1)
    common = ["--redis", redis_url, "--prefix", prefix, "--json"]
    args = ["cache", "warm", *common, "--dsn", dsn, "--thread", threads[0], "--thread", threads[1]]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"threads": 2, "stored": 2, "redis_errors": 0}
    # a process of the application, with the same secret, is served from Redis
    layer = layer_for(redis_url, prefix, memory=False)
    try:
        got = layer.wrap(saver).get_tuple(latest(threads[0]))
        assert same(got, saver.get_tuple(latest(threads[0])))
        assert layer.metrics().hits["redis"] == 1
        result = runner.invoke(app, ["cache", "stats", *common], env=env)
        assert result.exit_code == 0, result.output
        stats = json.loads(result.stdout)
        assert stats["entries"] == 2 and stats["by_kind"] == {"checkpoints": 2}
        assert stats["processes"] >= 1 and stats["epoch"] == 0
        result = runner.invoke(app, ["cache", "flush", *common], env=env)
        assert result.exit_code == 0, result.output
        layer.wrap(saver).get_tuple(latest(threads[0]))
        assert layer.metrics().misses == 1  # the flush reached this process
        result = runner.invoke(app, ["cache", "stats", *common], env=env)
        assert json.loads(result.stdout)["epoch"] == 1
    finally:
        layer.close()
    # unreachable Redis: exit 1 with the reason; bad usage: exit 2
    down = f"redis://127.0.0.1:{_free_port()}/0"
    result = runner.invoke(app, ["cache", "stats", "--redis", down], env=env)
    assert result.exit_code == 1 and "cannot reach Redis" in result.output
    result = runner.invoke(app, ["cache", "warm", "--recent", "0"], env=env)
    assert result.exit_code == 2


def test_store_items_read_from_redis_equal_the_store(
    store: Any, redis_url: str, prefix: str
) -> None:
    la = layer_for(redis_url, prefix, memory=False)
    lb = layer_for(redis_url, prefix, memory=False)
    ns = ("profile", uuid.uuid4().hex[:8])
    value = {"name": "Zoë", "n": 3, "ratio": 0.1, "tags": ["a", "b"], "nested": {"x": None}}
    try:
        la.wrap_store(store).put(ns, "me", value)  # write-through: into Redis
        got = lb.wrap_store(store).get(ns, "me")
        assert lb.metrics().hits["redis"] == 1 and lb.metrics().misses == 0
        assert same_item(got, store.get(ns, "me")) and got is not None and got.value == value
    finally:
        la.close()
        lb.close()


# -- chat histories ----------------------------------------------------------------------------
#
# Every read of a cached history is checked against the conversation's version
# in PostgreSQL, which a trigger renews in every transaction that changes its
# messages: writes that bypass the wrapper are never served stale.


@pytest.fixture(scope="module")
def histories(dsn: str) -> Iterator[Any]:
    from haive_langgraph.memory import ChatHistoryFactory

    with ChatHistoryFactory(dsn) as factory:
        factory.setup()
        yield factory


def texts(messages: list[Any]) -> list[Any]:
    return [(m.type, m.id, m.content) for m in messages]


def check_fresh(cached: Any, histories: Any, what: str) -> None:
    """A read through the cache equals PostgreSQL's, and the next read is a hit."""
    layer = cached.layer
    want = texts(histories(cached.session_id).messages)
    assert texts(cached.messages) == want, f"stale history after {what}"
    hits = sum(layer.metrics().hits.values())
    assert texts(cached.messages) == want
    assert sum(layer.metrics().hits.values()) == hits + 1, f"no hit after {what}"


def test_history_hits_and_misses_are_counted(histories: Any) -> None:
    layer = CacheLayer([InMemoryCache()])
    sid = f"h-{uuid.uuid4().hex[:8]}"
    cached = layer.wrap_history(histories(sid))
    assert cached.messages == [] and layer.metrics().misses == 1  # no such conversation
    cached.add_messages([HumanMessage("hi"), AIMessage("hello")])
    m = layer.metrics()
    assert (m.refreshes, m.invalidations) == (1, 1)  # write-through: read back
    for _ in range(3):
        assert [x.content for x in cached.messages] == ["hi", "hello"]
    m = layer.metrics()
    assert m.hits["memory"] == 3 and m.misses == 1
    assert texts(cached.messages) == texts(histories(sid).messages)
    cached.clear()
    assert cached.messages == [] and layer.metrics().hits["memory"] == 5
    cached.messages = [HumanMessage("again")]
    assert [x.content for x in cached.messages] == ["again"]
    assert layer.metrics().misses == 1  # every read since the first was a hit


def test_history_never_serves_writes_made_around_it(histories: Any, dsn: str) -> None:
    from langchain_core.language_models import FakeListChatModel

    from haive_langgraph.memory import ConversationStore, ConversationTracker, SessionStore

    layer = CacheLayer([InMemoryCache()])
    sid, other = f"w-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    with ConversationStore(dsn) as store, SessionStore(dsn) as sessions:
        sessions.create_session("alice", None, session_id=sid, participants={"bob": "write"})
        sessions.create_session("alice", None, session_id=other)
        cached = layer.wrap_history(histories(sid))
        cached.add_messages([HumanMessage("one"), AIMessage("two")])
        check_fresh(cached, histories, "a write through the wrapper")

        store.add_messages(sid, [HumanMessage("by the store")])
        check_fresh(cached, histories, "ConversationStore.add_messages")
        sessions.add_messages(sid, [HumanMessage("by bob")], user_id="bob")
        check_fresh(cached, histories, "SessionStore.add_messages")
        model = FakeListChatModel(responses=["tracked answer"])
        model.invoke(
            "tracked", config={"callbacks": [ConversationTracker(store, conversation_id=sid)]}
        )
        check_fresh(cached, histories, "the ConversationTracker")

        # A branch shares its source's first messages: the source's changes reach it.
        branch = sessions.branch_session(sid, 3, user_id="alice")
        cached_branch = layer.wrap_history(histories(branch.session_id))
        check_fresh(cached_branch, histories, "a branch")
        store.delete_user_data("bob")  # erases bob's message in the shared part
        check_fresh(cached_branch, histories, "an erasure in the branch source")
        check_fresh(cached, histories, "an erasure")

        sessions.add_messages(other, [HumanMessage("merge me")], user_id="alice")
        sessions.merge_sessions(sid, other, user_id="alice")
        check_fresh(cached, histories, "a merge")
        histories(sid).messages = [HumanMessage("replaced by another history")]
        check_fresh(cached, histories, "a replace through another history")

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM haive.conversation_messages WHERE conversation_id = %s", (sid,)
            )
            check_fresh(cached, histories, "hand-written SQL")
            histories(sid).add_messages([HumanMessage("back")])
            check_fresh(cached, histories, "an append")
            # Expiry is checked on every read, not cached.
            conn.execute(
                "UPDATE haive.conversations SET expires_at = now() + interval '300 ms' "
                "WHERE conversation_id = %s",
                (sid,),
            )
            check_fresh(cached, histories, "a TTL")
            time.sleep(0.35)
            assert cached.messages == [] == histories(sid).messages
            conn.execute(
                "UPDATE haive.conversations SET expires_at = NULL WHERE conversation_id = %s",
                (sid,),
            )
            check_fresh(cached, histories, "a renewed TTL")

        sessions.delete_session(sid, user_id="alice")
        assert cached.messages == []
        histories(sid).add_messages([HumanMessage("a new conversation, same id")])
        check_fresh(cached, histories, "a delete and re-create")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE haive.conversation_messages")
        check_fresh(cached, histories, "TRUNCATE")


def test_history_written_by_another_process(
    histories: Any, dsn: str, redis_url: str, prefix: str
) -> None:
    la, lb = layer_for(redis_url, prefix), layer_for(redis_url, prefix)
    sid = f"p-{uuid.uuid4().hex[:8]}"
    a, b = la.wrap_history(histories(sid)), lb.wrap_history(histories(sid))
    try:
        for i in range(5):
            a.add_messages([HumanMessage(f"a{i}")])  # B's copy is dropped or fails its check
            check_fresh(b, histories, f"write {i} of another layer")
        assert lb.metrics().hits["memory"] >= 5
        # The shared level: a layer without memory reads what A's write-through stored.
        lc = layer_for(redis_url, prefix, memory=False)
        try:
            c = lc.wrap_history(histories(sid))
            assert texts(c.messages) == texts(histories(sid).messages)
            assert lc.metrics().hits["redis"] == 1 and lc.metrics().misses == 0
        finally:
            lc.close()
        script = textwrap.dedent(
            f"""
            from langchain_core.messages import HumanMessage
            from haive_langgraph.memory import ConversationStore
            with ConversationStore({dsn!r}) as store:
                store.add_messages({sid!r}, [HumanMessage("from the other process")])
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
        assert b.messages[-1].content == "from the other process"
        check_fresh(b, histories, "a write in another process")
    finally:
        la.close()
        lb.close()


# RunnableWithMessageHistory is deprecated upstream (langchain-core 1.3.3); it is
# still the API histories serve.
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated:DeprecationWarning")
async def test_async_history_and_factory(dsn: str, redis_url: str, prefix: str) -> None:
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.runnables.history import RunnableWithMessageHistory

    from haive_langgraph.memory import AsyncChatHistoryFactory, AsyncConversationStore

    layer = layer_for(redis_url, prefix)
    async with AsyncChatHistoryFactory(dsn) as factory, AsyncConversationStore(dsn) as store:
        await factory.setup()
        cached_factory = layer.wrap_history_factory(factory)
        sid = f"a-{uuid.uuid4().hex[:8]}"
        chain = RunnableWithMessageHistory(
            FakeListChatModel(responses=["first", "second"]), cached_factory
        )
        config: RunnableConfig = {"configurable": {"session_id": sid}}
        await chain.ainvoke("q1", config)
        await chain.ainvoke("q2", config)
        cached = cached_factory(sid)
        got = [m.content for m in await cached.aget_messages()]
        assert got == ["q1", "first", "q2", "second"]
        assert layer.metrics().hits["memory"] >= 2  # the runnable's reads after its writes
        await store.aadd_messages(sid, [HumanMessage("by the store")])
        got = [m.content for m in await cached.aget_messages()]
        assert got[-1] == "by the store"
        assert texts(await cached.aget_messages()) == texts(await factory(sid).aget_messages())
        await cached.aclear()
        assert await cached.aget_messages() == []
    await layer.aclose()


def test_history_with_redis_down_degrades_and_stays_fresh(
    histories: Any, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from haive_langgraph.memory import ConversationStore

    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="haive_langgraph.cache")
    layer = CacheLayer(
        [InMemoryCache(), RedisCache(url, lease=0.2, socket_timeout=0.2, secret=SECRET)]
    )
    sid = f"d-{uuid.uuid4().hex[:8]}"
    cached = layer.wrap_history(histories(sid))
    cached.add_messages([HumanMessage("while Redis is down")])
    check_fresh(cached, histories, "a write with Redis down")  # memory still serves
    with ConversationStore(dsn) as store:
        store.add_messages(sid, [HumanMessage("around the cache")])
    check_fresh(cached, histories, "a write around the cache with Redis down")
    m = layer.metrics()
    assert m.degraded and m.redis_errors > 0 and m.hits["memory"] >= 2
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    layer.close()


def test_history_forged_redis_entry_is_a_miss(histories: Any, redis_url: str, prefix: str) -> None:
    la = layer_for(redis_url, prefix)
    sid = f"f-{uuid.uuid4().hex[:8]}"
    la.wrap_history(histories(sid)).add_messages([HumanMessage("genuine")])
    client = redis.Redis.from_url(redis_url)
    (key,) = [k for k in client.scan_iter(f"{prefix}:val:*") if sid.encode() in k]
    raw = bytearray(client.get(key))
    raw[-1] ^= 1
    client.set(key, bytes(raw))
    lb = layer_for(redis_url, prefix, memory=False)
    try:
        got = lb.wrap_history(histories(sid)).messages
        assert [m.content for m in got] == ["genuine"]
        assert lb.metrics().rejected == 1 and lb.metrics().misses == 1
    finally:
        client.close()
        la.close()
        lb.close()
