"""The invalidation channel of the Redis level: keys, liveness, messages and their
acknowledgements.

A process serves from memory only while its subscription is provably live,
and a writer returns once every other subscribed process acknowledged that
it dropped what the write replaced (see the package docstring). Messages
can only make a process drop entries (deny the cache); acknowledgements are
authenticated, so whoever publishes on Redis without the secret cannot make
a writer return early.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from haive_langgraph.ops.cache._memory import CacheMetrics, InMemoryCache, forget_tenant_here, log

# Lua: record this process's heartbeat (Redis time), forget members gone for
# longer than the grace period, return members whose heartbeat lapsed.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
"""


class _Waiter:
    """An invalidation waiting for the acknowledgements of the other processes.

    An acknowledgement counts once per process, and only with a valid MAC
    over the message (which carries a random nonce): someone who can publish
    on Redis but lacks the secret cannot acknowledge for a process that did
    not drop the entries, nor make one acknowledge a message before the
    writer sent it.
    """

    __slots__ = ("acks", "body", "callbacks", "event", "needed")

    def __init__(self, needed: int, body: bytes) -> None:
        self.needed = needed
        self.body = body
        self.acks: set[str] = set()
        self.event = threading.Event()
        self.callbacks: list[Callable[[], None]] = []
        if needed <= 0:
            self.event.set()

    def ack(self, receiver: str) -> None:
        self.acks.add(receiver)
        if len(self.acks) >= self.needed and not self.event.is_set():
            self.event.set()
            for cb in self.callbacks:
                cb()


class _Channel:
    """What :class:`RedisCache` does besides storing entries: the connection's keys and
    errors, the listener thread, invalidation and its acknowledgements."""

    _mac: bytes | None = None
    url: str
    socket_timeout: float

    def __init__(
        self,
        redis: Any,
        client: Any,
        prefix: str,
        lease: float,
        member_grace: float,
        ttl: float | None,
    ) -> None:
        self._redis = redis
        self.client = client
        self.prefix = prefix
        self.lease = lease
        self.member_grace = member_grace
        self.ttl = ttl
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._aclients: dict[int, Any] = {}
        self.me = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._memory: list[InMemoryCache] = []
        # Keyrings of the wrapped objects: told when another process shreds a tenant.
        self._keyrings: weakref.WeakSet[Any] = weakref.WeakSet()
        self._metrics: CacheMetrics | None = None
        # Liveness of the subscription (monotonic clock of this process).
        self._safe_until = 0.0
        self._last_heartbeat_ok = 0.0
        self._pings: dict[str, float] = {}
        self._lapsed: set[str] = set()
        self._connected = False
        self._needs_flush = False
        self._warned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- keys ---------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def _epoch_key(self) -> str:
        return self._k("epoch")

    @property
    def _members_key(self) -> str:
        return self._k("members")

    @property
    def _channel(self) -> str:
        return self._k("inv")

    def _tenant_key(self, tenant: str) -> str:
        return self._k("tver", json.dumps(tenant))

    # -- state --------------------------------------------------------------------------

    def attach(self, memory: Sequence[InMemoryCache], metrics: CacheMetrics) -> None:
        """Called by the layer: the memory levels to keep honest; starts the listener."""
        self._memory = list(memory)
        self._metrics = metrics
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._listen, name=f"haive-cache-{self.me}", daemon=True
            )
            self._thread.start()

    def add_keyring(self, keyring: Any) -> None:
        """A keyring to tell when another process shreds a tenant (held weakly)."""
        self._keyrings.add(keyring)

    def usable(self) -> bool:
        """Whether cached entries (memory or Redis) may be served now."""
        return self._connected and not self._lapsed and time.monotonic() < self._safe_until

    @property
    def connected(self) -> bool:
        """Whether the invalidation listener is subscribed now."""
        return self._connected

    def note_error(self, exc: BaseException, what: str) -> None:
        """Count a failed Redis ``what`` (read, write, invalidate): the level is degraded
        (warned once) until it is back."""
        if self._metrics is not None:
            self._metrics.redis_errors += 1
            self._metrics.degraded = True
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis cache at %s unreachable (%s: %s): reading from the next level until it is back",
                self._describe(),
                what,
                type(exc).__name__,
            )

    def _describe(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def _ack_mac(self, receiver: str, body: bytes) -> str:
        """What a process that handled ``body`` sends back (see :class:`_Waiter`)."""
        key = self._mac or b""
        return hmac.new(key, b"ack\x00" + receiver.encode() + b"\x00" + body, "sha256").hexdigest()

    # -- listener -----------------------------------------------------------------------

    def _listen(self) -> None:
        interval = self.lease / 4
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel, self._k("ack", self.me))
                self._reconnected()
                next_beat = 0.0
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now >= next_beat:
                        self._beat(pubsub, now)
                        next_beat = now + interval
                    message = pubsub.get_message(timeout=min(interval, max(0.0, next_beat - now)))
                    if message is not None:
                        try:
                            self._handle(message)
                        except (ValueError, TypeError, KeyError, AttributeError):
                            # Not a message of ours: Redis is not trusted to be well-formed.
                            log.debug("ignored a malformed cache message", exc_info=True)
            except Exception as exc:  # a server speaking garbage is an error too
                self._connected = False
                self._safe_until = 0.0
                if self._metrics is not None:
                    self._metrics.degraded = True
                self._needs_flush = True
                self.note_error(exc, "subscription")
                self._stop.wait(interval)
            finally:
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection
                    pass

    def _reconnected(self) -> None:
        """Back on Redis: what others wrote meanwhile may be cached here, and what this
        process wrote meanwhile did not reach the others: flush everything, everywhere."""
        if self._needs_flush:
            self.client.incr(self._epoch_key)
            self.client.publish(self._channel, json.dumps({"origin": self.me, "all": True}))
            for memory in self._memory:
                memory.clear()
            self._needs_flush = False
        self._connected = True
        if self._warned:
            log.warning("Redis cache at %s reachable again: caching resumed", self._describe())
        self._warned = False
        if self._metrics is not None:
            self._metrics.degraded = False

    def _beat(self, pubsub: Any, now: float) -> None:
        token = f"{now:.6f}"
        self._pings[token] = now
        pubsub.ping(token)
        lapsed = {
            m.decode() if isinstance(m, bytes) else str(m)
            for m in self._heartbeat(
                keys=[self._members_key],
                args=[self.me, int(self.lease * 1000), int(self.member_grace * 1000)],
            )
        } - {self.me}
        self._last_heartbeat_ok = time.monotonic()
        if self._lapsed and not lapsed:
            # The process that lost Redis is back (it flushed) or gone: what
            # this process cached meanwhile may predate its writes.
            for memory in self._memory:
                memory.clear()
        self._lapsed = lapsed
        if self._metrics is not None:
            self._metrics.suspended = bool(lapsed)

    def _handle(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        data = message.get("data")
        if kind == "pong":
            token = data.decode() if isinstance(data, bytes) else str(data or "")
            sent = self._pings.pop(token, None)
            if sent is not None:
                # Everything published before this ping has been handled.
                self._safe_until = max(self._safe_until, sent + self.lease)
                for stale in [t for t, at in self._pings.items() if at < sent]:
                    del self._pings[stale]
            return
        if kind != "message":
            return
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        raw = data if isinstance(data, bytes) else str(data).encode()
        if channel != self._channel:
            self._acknowledged(raw)
            return
        body = json.loads(raw)
        if body.get("origin") == self.me:
            return
        groups = body.get("groups", ())
        tenants = body.get("tenants", ())
        if not all(isinstance(x, str) for x in (*groups, *tenants)):
            raise TypeError("not a message of ours")
        if body.get("all"):
            for memory in self._memory:
                memory.clear()
        for group in groups:
            for memory in self._memory:
                memory.drop_group(group)
        for tenant in tenants:
            self._forget_here(tenant)
        if self._metrics is not None:
            self._metrics.invalidations_received += 1
        seq = body.get("seq")
        if seq is not None:
            ack = f"{int(seq)} {self.me} {self._ack_mac(self.me, raw)}"
            self.client.publish(self._k("ack", str(body["origin"])), ack)

    def _acknowledged(self, raw: bytes) -> None:
        """An acknowledgement of one of our messages: count it if it is authentic."""
        seq, receiver, mac = raw.decode("ascii").split(" ")
        with self._lock:
            waiter = self._waiters.get(int(seq))
            if waiter is None:
                return
            if self._mac is not None and not hmac.compare_digest(
                mac, self._ack_mac(receiver, waiter.body)
            ):
                log.debug("ignored an acknowledgement that failed authentication")
                return
            waiter.ack(receiver)

    def _forget_here(self, tenant: str) -> None:
        """Drop a shredded tenant from this process's memory and make its keyrings ask
        the key store again (so that they refuse the tenant at once)."""
        forget_tenant_here(tenant, self._memory, self._keyrings)

    # -- invalidation -------------------------------------------------------------------

    def _message(
        self, groups: Sequence[str] | None, tenants: Sequence[str], acks: bool = True
    ) -> tuple[int, bytes]:
        seq = next(self._seq)
        body: dict[str, Any] = {"origin": self.me, "nonce": uuid.uuid4().hex}
        if acks:
            body["seq"] = seq
        if groups is None:
            body["all"] = True
        else:
            body["groups"] = list(groups)
        if tenants:
            body["tenants"] = list(tenants)
        return seq, json.dumps(body).encode()

    def _bump(self, pipe: Any, groups: Sequence[str] | None, tenants: Sequence[str]) -> None:
        keep = int(((self.ttl or 86400) * 2 + self.member_grace) * 1000)
        if groups is None:
            pipe.incr(self._epoch_key)
        else:
            for group in groups:
                pipe.incr(self._k("ver", group))
                pipe.pexpire(self._k("ver", group), keep)
        for tenant in tenants:
            pipe.incr(self._tenant_key(tenant))
            pipe.pexpire(self._tenant_key(tenant), keep)

    def _register(self, seq: int, body: bytes) -> _Waiter:
        waiter = _Waiter(1 << 30, body)
        with self._lock:
            self._waiters[seq] = waiter
        return waiter

    def _expect(self, waiter: _Waiter, receivers: int) -> None:
        # Our own listener receives the message too (and ignores it).
        with self._lock:
            waiter.needed = receivers - (1 if self._connected else 0)
            if len(waiter.acks) >= waiter.needed:
                waiter.event.set()

    def _done(self, seq: int) -> None:
        with self._lock:
            self._waiters.pop(seq, None)

    def _offline_delay(self) -> float:
        """Seconds a write must wait when it could not tell the others (see docstring)."""
        noticed = self._last_heartbeat_ok + self.lease * 1.5 + 0.05
        return max(0.0, noticed - time.monotonic())

    def invalidate(self, groups: Sequence[str] | None, tenants: Sequence[str] = ()) -> None:
        """Bump versions, tell every process, wait for their acknowledgements.

        Args:
            groups: Groups to drop; ``None``: everything.
            tenants: Tenants to drop whole (a crypto-shred).
        """
        seq, message = self._message(groups, tenants)
        try:
            pipe = self.client.pipeline(transaction=True)
            self._bump(pipe, groups, tenants)
            # Register before publishing: an acknowledgement can beat the reply.
            waiter = self._register(seq, message)
            pipe.publish(self._channel, message)
            receivers = int(pipe.execute()[-1])
        except Exception as exc:  # whatever Redis answers, the write stands
            self._done(seq)
            self._needs_flush = True
            self.note_error(exc, "invalidate")
            time.sleep(self._offline_delay())
            return
        try:
            self._expect(waiter, receivers)
            # Someone who does not answer has stopped serving from memory by then.
            waiter.event.wait(self.lease)
        finally:
            self._done(seq)

    async def ainvalidate(self, groups: Sequence[str] | None, tenants: Sequence[str] = ()) -> None:
        seq, message = self._message(groups, tenants)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(resolve)

        try:
            client = self._aclient()
            waiter = self._register(seq, message)
            waiter.callbacks.append(wake)
            pipe = client.pipeline(transaction=True)
            self._bump(pipe, groups, tenants)
            pipe.publish(self._channel, message)
            receivers = int((await pipe.execute())[-1])
        except Exception as exc:
            self._done(seq)
            self._needs_flush = True
            self.note_error(exc, "invalidate")
            await asyncio.sleep(self._offline_delay())
            return
        try:
            self._expect(waiter, receivers)
            if not waiter.event.is_set():
                try:
                    await asyncio.wait_for(future, self.lease)
                except TimeoutError:
                    pass
        finally:
            self._done(seq)

    def notify(self, groups: Sequence[str]) -> None:
        """Bump versions and tell every process, without waiting for acknowledgements.

        For entries checked against the database on every read (chat
        histories): dropping them elsewhere only saves memory and a wasted
        comparison, correctness does not depend on it.
        """
        _, message = self._message(groups, (), acks=False)
        pipe = self.client.pipeline(transaction=True)
        self._bump(pipe, groups, ())
        pipe.publish(self._channel, message)
        pipe.execute()

    async def anotify(self, groups: Sequence[str]) -> None:
        _, message = self._message(groups, (), acks=False)
        pipe = self._aclient().pipeline(transaction=True)
        self._bump(pipe, groups, ())
        pipe.publish(self._channel, message)
        await pipe.execute()

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(id(loop))
        if client is None:
            import redis.asyncio as aredis

            client = aredis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
            )
            self._aclients[id(loop)] = client
        return client
