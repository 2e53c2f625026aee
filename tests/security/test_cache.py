"""Attacks on the cache boundary: Redis and the in-process level.

Redis is shared and less protected than the database. Whoever can write to
it may deny the cache (every read then goes to PostgreSQL); it must never
make a read return data that is stale, of another key, tenant or database,
nor make a read raise anything the uncached read would not. The in-process
level must forget a crypto-shredded tenant at once, in every process.

Redis: as in ``tests/ops/test_cache.py`` (the machine's server on
127.0.0.1:6379, else a ``redis-server`` started on a free port, else skipped).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.ops.cache import CacheLayer, InMemoryCache, RedisCache
from tests.conftest import create_database, drop_database
from tests.ops.test_cache import (
    SECRET,
    converse,
    latest,
    prefix,
    redis_url,
    start_redis_server,
)

__all__ = ["prefix", "redis_url"]  # fixtures used here

LEVELS = ["memory", "redis", "memory+redis"]


def layer_of(levels: str, url: str, prefix: str, **kw: Any) -> CacheLayer:
    chosen: list[Any] = []
    if "memory" in levels:
        chosen.append(InMemoryCache(max_bytes=16 << 20, ttl=300))
    if "redis" in levels:
        kw.setdefault("secret", SECRET)
        chosen.append(RedisCache(url, ttl=300, prefix=prefix, **kw))
    layer = CacheLayer(chosen)
    assert layer.wait_ready(), "the Redis subscription did not come up"
    return layer


def messages_of(tup: Any) -> list[str]:
    assert tup is not None
    return [str(m.content) for m in tup.checkpoint["channel_values"]["messages"]]


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every string key of the deployment's cache (entries and counters)."""
    out: dict[bytes, bytes] = {}
    for key in client.scan_iter(f"{prefix}:*"):
        if client.type(key) == b"string":
            value = client.get(key)
            if value is not None:
                out[bytes(key)] = bytes(value)
    return out


@pytest.fixture(scope="module")
def saver(dsn: str) -> Iterator[PostgresCheckpointer]:
    with PostgresCheckpointer.from_conn_string(dsn) as cp:
        cp.setup()
        yield cp


@pytest.fixture(scope="module")
def second_dsn(pg_server: str) -> Iterator[str]:
    """Another database on the same server: same schema, same ids, other rows."""
    url = create_database(pg_server)
    try:
        yield url
    finally:
        drop_database(pg_server, url)


# -- defect 7: a replayed Redis entry ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_replayed_redis_entry_is_not_served(
    mode: str, saver: PostgresCheckpointer, dsn: str, redis_url: str, prefix: str
) -> None:
    """Putting back an old, authentic entry with its old counters (a full
    rollback of the deployment's Redis keys) does not make a fresh reader
    see the old checkpoint: freshness is checked against PostgreSQL."""
    from haive_langgraph.checkpointers import AsyncPostgresCheckpointer

    writer = layer_of("redis", redis_url, prefix)
    reader = layer_of("memory+redis", redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    thread = f"replay-{uuid.uuid4().hex[:8]}"
    try:
        cached = writer.wrap(saver)
        converse(cached, thread, 1)  # write-through: the 2-message head is in Redis
        old = snapshot(client, prefix)
        assert any(thread.encode() in k for k in old), "nothing cached in Redis"
        converse(cached, thread, 1, start=1)  # 4 messages now
        for key, value in old.items():  # the replay
            client.set(key, value)
        if mode == "sync":
            got = reader.wrap(saver).get_tuple(latest(thread))
        else:
            async with AsyncPostgresCheckpointer.from_conn_string(dsn) as inner:
                got = await reader.wrap(inner).aget_tuple(latest(thread))
        assert len(messages_of(got)) == 4, "a replayed Redis entry was served"
        assert messages_of(got) == messages_of(saver.get_tuple(latest(thread)))
    finally:
        client.close()
        await writer.aclose()
        await reader.aclose()


def test_a_replayed_store_item_is_not_served(dsn: str, redis_url: str, prefix: str) -> None:
    from haive_langgraph.stores import PostgresStore

    writer = layer_of("redis", redis_url, prefix)
    reader = layer_of("memory+redis", redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    ns = ("replay", uuid.uuid4().hex[:8])
    try:
        with PostgresStore.from_conn_string(dsn) as store:
            store.setup()
            cached = writer.wrap_store(store)
            cached.put(ns, "k", {"n": 1})
            old = snapshot(client, prefix)
            cached.put(ns, "k", {"n": 2})
            for key, value in old.items():
                client.set(key, value)
            got = reader.wrap_store(store).get(ns, "k")
            assert got is not None and got.value == {"n": 2}, "a replayed store item was served"
    finally:
        client.close()
        writer.close()
        reader.close()


def test_a_replayed_history_is_not_served(dsn: str, redis_url: str, prefix: str) -> None:
    from haive_langgraph.memory import ChatHistoryFactory

    writer = layer_of("redis", redis_url, prefix)
    reader = layer_of("memory+redis", redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    sid = f"replay-{uuid.uuid4().hex[:8]}"
    try:
        with ChatHistoryFactory(dsn) as histories:
            histories.setup()
            cached = writer.wrap_history(histories(sid))
            cached.add_messages([HumanMessage("q1"), AIMessage("a1")])
            old = snapshot(client, prefix)
            cached.add_messages([HumanMessage("q2"), AIMessage("a2")])
            for key, value in old.items():
                client.set(key, value)
            got = reader.wrap_history(histories(sid)).messages
            assert [m.content for m in got] == ["q1", "a1", "q2", "a2"]
    finally:
        client.close()
        writer.close()
        reader.close()


# -- defect 6: one cache layer over two databases --------------------------------------------


@pytest.mark.parametrize("levels", LEVELS)
def test_one_layer_over_two_databases_checkpoints(
    levels: str, dsn: str, second_dsn: str, redis_url: str, prefix: str
) -> None:
    layer = layer_of(levels, redis_url, prefix)
    thread = f"twodb-{uuid.uuid4().hex[:8]}"
    try:
        with (
            PostgresCheckpointer.from_conn_string(dsn) as one,
            PostgresCheckpointer.from_conn_string(second_dsn) as two,
        ):
            one.setup()
            two.setup()
            converse(one, thread, 1)  # same schema, same thread id, other rows
            converse(two, thread, 2)
            c1, c2 = layer.wrap(one), layer.wrap(two)
            for _ in range(2):  # the first read fills, the second is a hit
                assert messages_of(c1.get_tuple(latest(thread))) == messages_of(
                    one.get_tuple(latest(thread))
                )
                assert messages_of(c2.get_tuple(latest(thread))) == messages_of(
                    two.get_tuple(latest(thread))
                )
            # writes through one do not serve or drop the other's rows
            converse(c2, thread, 1, start=2)
            assert len(messages_of(c1.get_tuple(latest(thread)))) == 2
            assert len(messages_of(c2.get_tuple(latest(thread)))) == 6
    finally:
        layer.close()


@pytest.mark.parametrize("levels", LEVELS)
def test_one_layer_over_two_databases_store_items(
    levels: str, dsn: str, second_dsn: str, redis_url: str, prefix: str
) -> None:
    from haive_langgraph.stores import PostgresStore

    layer = layer_of(levels, redis_url, prefix)
    ns = ("twodb", uuid.uuid4().hex[:8])
    try:
        with (
            PostgresStore.from_conn_string(dsn) as one,
            PostgresStore.from_conn_string(second_dsn) as two,
        ):
            one.setup()
            two.setup()
            one.put(ns, "k", {"db": 1})
            two.put(ns, "k", {"db": 2})
            c1, c2 = layer.wrap_store(one), layer.wrap_store(two)
            for _ in range(2):
                got1, got2 = c1.get(ns, "k"), c2.get(ns, "k")
                assert got1 is not None and got1.value == {"db": 1}
                assert got2 is not None and got2.value == {"db": 2}
    finally:
        layer.close()


@pytest.mark.parametrize("levels", LEVELS)
def test_one_layer_over_two_databases_histories(
    levels: str, dsn: str, second_dsn: str, redis_url: str, prefix: str
) -> None:
    from haive_langgraph.memory import ChatHistoryFactory

    layer = layer_of(levels, redis_url, prefix)
    sid = f"twodb-{uuid.uuid4().hex[:8]}"
    try:
        with ChatHistoryFactory(dsn) as one, ChatHistoryFactory(second_dsn) as two:
            one.setup()
            two.setup()
            # Same ids, and the same version numbers in both databases.
            for url in (dsn, second_dsn):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("SELECT setval('haive.conversation_versions', 1000000)")
            one(sid).add_messages([HumanMessage("from one")])
            two(sid).add_messages([HumanMessage("from two")])
            c1, c2 = layer.wrap_history(one(sid)), layer.wrap_history(two(sid))
            for _ in range(2):
                assert [m.content for m in c1.messages] == ["from one"]
                assert [m.content for m in c2.messages] == ["from two"]
    finally:
        layer.close()


# -- defect 9: a crypto-shredded tenant ------------------------------------------------------


@pytest.fixture
def rings(dsn: str) -> Iterator[Callable[..., Any]]:
    """Keyrings over one tenant key store in the database (processes of one deployment)."""
    from haive_langgraph.codec import KeyRing
    from haive_langgraph.ops.keys import PostgresTenantKeyStore

    stores: list[PostgresTenantKeyStore] = []

    def make(master: bytes, **kw: Any) -> KeyRing:
        store = PostgresTenantKeyStore(dsn)
        store.setup()
        stores.append(store)
        return KeyRing([("m1", master)], tenant_store=store, **kw)

    yield make
    for store in stores:
        store.close()


@pytest.mark.parametrize("levels", ["memory", "memory+redis"])
def test_a_shredded_tenant_is_forgotten_by_every_level_at_once(
    levels: str, dsn: str, redis_url: str, prefix: str, rings: Callable[..., Any]
) -> None:
    """Shredding through a keyring a cache layer serves drops the tenant from
    every level of every process sharing the Redis server, before it returns:
    the next read fails as the uncached read does."""
    from haive_langgraph.codec import KeyDestroyedError
    from haive_langgraph.ops.keys import forget_tenant_key

    master = os.urandom(32)
    tenant = f"shred{uuid.uuid4().hex[:6]}"
    ring_a = rings(master)
    ring_a.create_tenant_key(tenant)
    ring_b = rings(master)  # another process: its own keyring, same key store
    ring_c = rings(master)  # another object of the first process, with its own keyring
    la = layer_of(levels, redis_url, prefix)
    lb = layer_of(levels, redis_url, prefix)
    thread = f"shred-{uuid.uuid4().hex[:8]}"
    try:
        with (
            PostgresCheckpointer.from_conn_string(dsn, keyring=ring_a, tenant_id=tenant) as sa,
            PostgresCheckpointer.from_conn_string(dsn, keyring=ring_b, tenant_id=tenant) as sb,
            PostgresCheckpointer.from_conn_string(dsn, keyring=ring_c, tenant_id=tenant) as sc,
        ):
            sa.setup()
            a, b, c = la.wrap(sa), lb.wrap(sb), la.wrap(sc)
            converse(a, thread, 1)
            assert len(messages_of(sc.get_tuple(latest(thread)))) == 2  # ring_c has the key
            assert len(messages_of(a.get_tuple(latest(thread)))) == 2
            assert len(messages_of(b.get_tuple(latest(thread)))) == 2
            assert la.metrics().hits["memory"] >= 1 and lb.metrics().hits["memory"] == 0
            assert len(messages_of(b.get_tuple(latest(thread)))) == 2  # now in B's memory
            assert forget_tenant_key(ring_a, tenant) == 1
            with pytest.raises(KeyDestroyedError):
                sa.get_tuple(latest(thread))  # the uncached read
            with pytest.raises(KeyDestroyedError):
                a.get_tuple(latest(thread))
            with pytest.raises(KeyDestroyedError):  # nor through another keyring of A's
                c.get_tuple(latest(thread))
            if "redis" in levels:
                # B was told through the invalidation channel before forget returned
                with pytest.raises(KeyDestroyedError):
                    b.get_tuple(latest(thread))
                with pytest.raises(KeyDestroyedError):
                    sb.get_tuple(latest(thread))
    finally:
        la.close()
        lb.close()


def test_a_process_not_told_stops_serving_a_shredded_tenant_as_its_keyring_learns(
    dsn: str, rings: Callable[..., Any]
) -> None:
    """A process whose layer was not told (the tenant was shredded by the CLI, or
    it has no Redis level) stops serving the tenant from memory as soon as its
    keyring knows (``cache_ttl``), as the uncached read does, not after the
    memory level's ttl."""
    from haive_langgraph.codec import KeyDestroyedError
    from haive_langgraph.ops.keys import forget_tenant_key

    master = os.urandom(32)
    tenant = f"shred{uuid.uuid4().hex[:6]}"
    admin = rings(master)
    admin.create_tenant_key(tenant)
    ring = rings(master, cache_ttl=0)  # learns at once: no waiting in the test
    layer = CacheLayer([InMemoryCache(ttl=300)])
    thread = f"shred-{uuid.uuid4().hex[:8]}"
    with PostgresCheckpointer.from_conn_string(dsn, keyring=ring, tenant_id=tenant) as saver:
        saver.setup()
        cached = layer.wrap(saver)
        converse(cached, thread, 1)
        assert len(messages_of(cached.get_tuple(latest(thread)))) == 2
        assert layer.metrics().hits["memory"] >= 1
        forget_tenant_key(admin, tenant)  # another keyring: nothing tells the layer
        with pytest.raises(KeyDestroyedError):
            saver.get_tuple(latest(thread))
        with pytest.raises(KeyDestroyedError):
            cached.get_tuple(latest(thread))


# -- hostile Redis entries ---------------------------------------------------------------------


def entry_key(client: redis.Redis, prefix: str, thread: str) -> bytes:
    keys = [bytes(k) for k in client.scan_iter(f"{prefix}:val:*") if thread.encode() in k]
    assert len(keys) == 1, keys
    return keys[0]


@pytest.fixture(scope="module")
def hostile(saver: PostgresCheckpointer, redis_url: str) -> Iterator[dict[str, Any]]:
    """A thread cached in Redis (Redis is the only level: every read consults it), its
    genuine entry and what PostgreSQL holds; a spy on what reaches the deserialiser."""
    from haive_langgraph.ops.cache import _TupleFormat

    prefix = f"haive-hostile-{uuid.uuid4().hex[:8]}"
    layer = layer_of("redis", redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    cached = layer.wrap(saver)
    thread = f"hostile-{uuid.uuid4().hex[:8]}"
    converse(cached, thread, 2)  # write-through: the head is in Redis
    key = entry_key(client, prefix, thread)
    loaded: list[bytes] = []
    real = _TupleFormat.loads

    def spy(self: Any, data: bytes) -> Any:
        loaded.append(data)
        return real(self, data)

    _TupleFormat.loads = spy  # type: ignore[method-assign]
    try:
        yield {
            "layer": layer,
            "client": client,
            "cached": cached,
            "thread": thread,
            "key": key,
            "genuine": client.get(key),
            "truth": messages_of(saver.get_tuple(latest(thread))),
            "loaded": loaded,
        }
    finally:
        _TupleFormat.loads = real  # type: ignore[method-assign]
        for k in client.scan_iter(f"{prefix}:*"):
            client.delete(k)
        client.close()
        layer.close()


def _payload(entry: bytes) -> bytes:
    """The serialised value inside an entry (after counters, version, key id and MAC)."""
    head = b":".join(entry.split(b":", 4)[:4]) + b":"
    return entry[len(head) + 8 + 32 :]


def _served(h: dict[str, Any], planted: bytes) -> None:
    """Plant ``planted`` as the entry; the read must equal PostgreSQL and must not
    deserialise anything but the genuine payload."""
    h["client"].set(h["key"], planted)
    before = len(h["loaded"])
    got = h["cached"].get_tuple(latest(h["thread"]))
    assert messages_of(got) == h["truth"], f"served a planted entry {planted[:60]!r}"
    assert all(d == _payload(h["genuine"]) for d in h["loaded"][before:]), (
        "a planted entry reached the deserialiser"
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(max_size=200))
def test_garbage_entries_are_misses(hostile: dict[str, Any], garbage: bytes) -> None:
    _served(hostile, garbage)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_altered_genuine_entries_are_misses(hostile: dict[str, Any], data: st.DataObject) -> None:
    """Truncated, extended, with a byte changed, with other counters or another database
    version: never served unless byte-for-byte the genuine entry."""
    genuine: bytes = hostile["genuine"]
    kind = data.draw(st.sampled_from(["truncate", "extend", "flip", "head"]))
    if kind == "truncate":
        altered = genuine[: data.draw(st.integers(0, len(genuine) - 1))]
    elif kind == "extend":
        altered = genuine + data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "flip":
        at = data.draw(st.integers(0, len(genuine) - 1))
        bit = data.draw(st.integers(0, 7))
        altered = genuine[:at] + bytes([genuine[at] ^ (1 << bit)]) + genuine[at + 1 :]
    else:
        parts = genuine.split(b":", 4)
        at = data.draw(st.integers(0, 3))
        parts[at] = data.draw(st.from_regex(rb"\A[0-9a-f]{0,40}\Z"))
        altered = b":".join(parts)
    if altered == genuine:
        return
    _served(hostile, altered)


def test_entries_of_another_key_tenant_or_database_are_rejected(
    dsn: str, second_dsn: str, redis_url: str, prefix: str
) -> None:
    """An authentic entry copied under another key is not authentic there: the key (which
    names database, schema, tenant and thread) is under the MAC. The same thread id in
    another tenant and in another database has its own key and its own rows."""
    layer = layer_of("redis", redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    thread, other = f"copy-{uuid.uuid4().hex[:8]}", f"copy-{uuid.uuid4().hex[:8]}"
    try:
        with (
            PostgresCheckpointer.from_conn_string(dsn) as one,
            PostgresCheckpointer.from_conn_string(dsn, tenant_id="globex") as tenant,
            PostgresCheckpointer.from_conn_string(second_dsn) as two,
        ):
            tenant.setup()
            two.setup()
            for saver, turns in ((one, 1), (tenant, 2), (two, 3)):
                converse(layer.wrap(saver), thread, turns)
            converse(layer.wrap(one), other, 4)
            keys = [bytes(k) for k in client.scan_iter(f"{prefix}:val:*") if thread.encode() in k]
            assert len(keys) == 3, keys  # one per tenant and database
            cached = layer.wrap(one)
            mine = f"{prefix}:val:{cached._group(thread)}:\x00".encode()
            assert mine in keys
            foreign = [client.get(k) for k in keys if k != mine]
            foreign.append(client.get(entry_key(client, prefix, other)))
            group = cached._group(thread)
            for n, planted in enumerate(foreign, start=1):
                # The attacker sets the counters too, so that the entry is not just
                # outdated in Redis's eyes: it is the MAC that refuses it.
                ver, epoch, tver = planted.split(b":")[:3]
                client.set(f"{prefix}:ver:{group}", ver)
                client.set(f"{prefix}:epoch", epoch)
                client.set(f"{prefix}:tver:" + json.dumps(""), tver)
                client.set(mine, planted)
                got = cached.get_tuple(latest(thread))
                assert len(messages_of(got)) == 2, f"foreign entry {n} was served"
                assert layer.metrics().rejected == n
    finally:
        client.close()
        layer.close()


def test_damaged_counters_and_foreign_types_deny_the_cache(
    hostile: dict[str, Any],
) -> None:
    client, key = hostile["client"], hostile["key"]
    prefix = key.split(b":val:")[0].decode()
    group = key[len(prefix) + 5 :].rsplit(b":", 1)[0].decode()
    ver_key = f"{prefix}:ver:{group}"
    saved = client.get(ver_key)
    try:
        for damaged in (b"\xff\xfe", b"1:2", b"-1", b"9" * 30):
            client.set(ver_key, damaged)
            _served(hostile, hostile["genuine"])
        client.delete(ver_key)
        client.rpush(ver_key, b"not a string")  # MGET answers nil for other types
        _served(hostile, hostile["genuine"])
    finally:
        client.delete(ver_key)
        if saved is not None:
            client.set(ver_key, saved)


class GarbageServer:
    """A TCP server that answers every connection with the given bytes, then closes it."""

    def __init__(self) -> None:
        self.reply = b""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(0.05)
                    conn.recv(65536)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[GarbageServer]:
    server = GarbageServer()
    yield server
    server.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"+OK\r\n", b"$-1\r\n", b"*3\r\n$1\r\n0\r\n", b"-ERR no\r\n", b":1\r\n"]),
    )
)
def test_a_redis_speaking_garbage_denies_the_cache(
    garbage_server: GarbageServer, saver: PostgresCheckpointer, reply: bytes
) -> None:
    """Whatever a "Redis" answers, reads return what PostgreSQL holds and writes go
    through: the cache denies itself, it never raises."""
    garbage_server.reply = reply
    layer = CacheLayer(
        [
            InMemoryCache(),
            RedisCache(garbage_server.url, secret=SECRET, socket_timeout=0.05, lease=0.2),
        ]
    )
    thread = f"garbage-{uuid.uuid4().hex[:8]}"
    try:
        cached = layer.wrap(saver)
        converse(cached, thread, 1)  # get_tuple, put_writes, put: through the cache
        for _ in range(2):
            assert messages_of(cached.get_tuple(latest(thread))) == messages_of(
                saver.get_tuple(latest(thread))
            )
        assert layer.metrics().hits["redis"] == 0
    finally:
        layer.close()


def test_redis_going_down_denies_the_cache(saver: PostgresCheckpointer) -> None:
    proc, url = start_redis_server()
    layer = CacheLayer([InMemoryCache(), RedisCache(url, secret=SECRET, lease=0.2)])
    thread = f"down-{uuid.uuid4().hex[:8]}"
    try:
        assert layer.wait_ready()
        cached = layer.wrap(saver)
        converse(cached, thread, 1)
        assert len(messages_of(cached.get_tuple(latest(thread)))) == 2
        proc.kill()
        proc.wait()
        converse(cached, thread, 1, start=1)  # reads and writes, Redis gone
        for _ in range(2):
            got = messages_of(cached.get_tuple(latest(thread)))
            assert got == messages_of(saver.get_tuple(latest(thread))) and len(got) == 4
        assert layer.metrics().degraded
    finally:
        layer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_acknowledgements_must_be_authentic_and_count_once(redis_url: str, prefix: str) -> None:
    """A writer waits for every other process to acknowledge its invalidation. Whoever
    can publish on Redis without the secret cannot acknowledge in another process's
    name, and a genuine acknowledgement repeated counts once."""
    writer = layer_of("redis", redis_url, prefix).redis
    assert writer is not None
    try:
        seq, body = writer._message(["g"], ())
        waiter = writer._register(seq, body)
        writer._expect(waiter, 3)  # itself and two other processes
        forged = f"{seq} proc-b {'0' * 64}".encode()
        writer._acknowledged(forged)
        assert waiter.acks == set() and not waiter.event.is_set()
        genuine = f"{seq} proc-b {writer._ack_mac('proc-b', body)}".encode()
        writer._acknowledged(genuine)
        writer._acknowledged(genuine)  # replayed
        assert waiter.acks == {"proc-b"} and not waiter.event.is_set()
        other = f"{seq} proc-c {writer._ack_mac('proc-c', body + b'x')}".encode()
        writer._acknowledged(other)  # for another message
        assert not waiter.event.is_set()
        writer._acknowledged(f"{seq} proc-c {writer._ack_mac('proc-c', body)}".encode())
        assert waiter.event.is_set()
        writer._done(seq)
    finally:
        writer.close()
