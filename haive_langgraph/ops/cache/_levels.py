"""Cache levels: the process-local LRU and the shared, authenticated Redis level."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from haive_langgraph.errors import ConfigurationError, HaiveError

log = logging.getLogger("haive_langgraph.cache")

_MISSING: Any = object()


@dataclass(slots=True)
class CacheMetrics:
    """Counters of a :class:`CacheLayer` since it was created.

    Attributes:
        hits: Reads served per level (``"memory"``, ``"redis"``).
        misses: Reads that went to the source (PostgreSQL).
        refreshes: Read-backs after writes (write-through), not counted as reads.
        fills: Results stored in a level.
        stale_fills_refused: Results not stored because a write raced the read.
        invalidations: Groups (threads) invalidated by writes here.
        invalidations_received: Invalidations from other processes applied here.
        redis_errors: Redis calls that failed (the call went on without it).
        rejected: Redis entries that failed authentication (forged, garbled,
            or written under another secret): treated as misses, never loaded.
        degraded: Redis is unreachable from this process now.
        suspended: Cached entries are not served now (a process lost Redis).
    """

    hits: dict[str, int] = field(default_factory=dict)
    misses: int = 0
    refreshes: int = 0
    fills: int = 0
    stale_fills_refused: int = 0
    invalidations: int = 0
    invalidations_received: int = 0
    redis_errors: int = 0
    rejected: int = 0
    degraded: bool = False
    suspended: bool = False

    @property
    def reads(self) -> int:
        return sum(self.hits.values()) + self.misses

    @property
    def hit_rate(self) -> float:
        return sum(self.hits.values()) / self.reads if self.reads else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "hits": dict(self.hits),
            "misses": self.misses,
            "refreshes": self.refreshes,
            "hit_rate": round(self.hit_rate, 4),
            "fills": self.fills,
            "stale_fills_refused": self.stale_fills_refused,
            "invalidations": self.invalidations,
            "invalidations_received": self.invalidations_received,
            "redis_errors": self.redis_errors,
            "rejected": self.rejected,
            "degraded": self.degraded,
            "suspended": self.suspended,
        }


# -- levels -------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("expires", "group", "size", "value")

    def __init__(self, value: Any, size: int, expires: float, group: str) -> None:
        self.value = value
        self.size = size
        self.expires = expires
        self.group = group


class InMemoryCache:
    """Process-local level: an LRU bounded by bytes, with a time to live.

    Args:
        max_bytes: Bytes of cached values (as serialised) kept at most.
        ttl: Seconds an entry is served (``None``: until evicted or invalidated).
    """

    name = "memory"

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, ttl: float | None = 300.0) -> None:
        if max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be positive, got {max_bytes}")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be positive, got {ttl}")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._groups: dict[str, set[str]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        # Generations: a write bumps its group's; `clear` bumps the epoch.
        # A load stores its result only if neither moved since it started.
        self._gen: dict[str, int] = {}
        self._epoch = 0

    def token(self, group: str) -> tuple[int, int]:
        return self._epoch, self._gen.get(group, 0)

    def get(self, group: str, sub: str) -> Any:
        key = (group, sub)
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        if entry.expires and entry.expires < time.monotonic():
            with self._lock:
                self._remove(key)
            return _MISSING
        try:
            self._entries.move_to_end(key)
        except KeyError:  # removed by another thread meanwhile
            return _MISSING
        return entry.value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return self.get(str(key[0]), str(key[1])) is not _MISSING

    def put(self, group: str, sub: str, value: Any, size: int, token: tuple[int, int]) -> bool:
        """Store ``value`` if no invalidation happened since ``token`` was taken."""
        if size > self.max_bytes:
            return False
        with self._lock:
            if self.token(group) != token:
                return False
            key = (group, sub)
            self._remove(key)
            expires = time.monotonic() + self.ttl if self.ttl else 0.0
            self._entries[key] = _Entry(value, size, expires, group)
            self._groups.setdefault(group, set()).add(sub)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                self._remove(next(iter(self._entries)))
            return True

    def _remove(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        subs = self._groups.get(entry.group)
        if subs is not None:
            subs.discard(key[1])
            if not subs:
                del self._groups[entry.group]

    def drop_group(self, group: str) -> None:
        with self._lock:
            self._gen[group] = self._gen.get(group, 0) + 1
            if len(self._gen) > 100_000:
                # Forget old generations; the epoch keeps loads in flight honest.
                self._gen.clear()
                self._epoch += 1
            for sub in list(self._groups.get(group, ())):
                self._remove((group, sub))

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._gen.clear()
            self._entries.clear()
            self._groups.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


# Lua: store a value only if the group's version and the global epoch are
# still the ones the reader saw before loading.
_PUT_IF_CURRENT = """
local v = redis.call('GET', KEYS[1]) or '0'
local e = redis.call('GET', KEYS[2]) or '0'
if v == ARGV[1] and e == ARGV[2] then
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
    return 1
end
return 0
"""

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
    """An invalidation waiting for the acknowledgements of the other processes."""

    __slots__ = ("acks", "callbacks", "event", "needed")

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.acks = 0
        self.event = threading.Event()
        self.callbacks: list[Callable[[], None]] = []
        if needed <= 0:
            self.event.set()

    def ack(self) -> None:
        self.acks += 1
        if self.acks >= self.needed and not self.event.is_set():
            self.event.set()
            for cb in self.callbacks:
                cb()


CACHE_SECRET_ENV = "HAIVE_CACHE_SECRET"
_MAC_INFO = b"haive-langgraph cache entry mac v1"
_KID_BYTES = 8
_MAC_BYTES = 32
# A forged or garbled entry is logged at most this often (a flood of them
# is one attack, not thousands of warnings).
_REJECT_WARN_EVERY = 60.0


def _mac_key(secret: bytes | str) -> bytes:
    """The HMAC key of cache entries: SHA-256 of the secret, domain-separated."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(raw) < 16:
        raise ConfigurationError(
            f"the cache secret must be at least 16 bytes, got {len(raw)} "
            f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return hmac.digest(raw, _MAC_INFO, "sha256")


def secret_from_codec(codec: Any) -> bytes | None:
    """A cache secret derived from an encrypting codec's keyring, else ``None``.

    The codec's keyed content hash of a fixed label: secret while the keyring
    is, equal in every process holding the same primary key. A plain codec's
    content hash is public, so it gives none.
    """
    if getattr(codec, "keyring", None) is None:
        return None
    try:
        return bytes(codec.content_key(_MAC_INFO, ""))
    except HaiveError:  # e.g. the global key was destroyed
        return None


class RedisCache:
    """Shared level in Redis, and the channel that keeps every process's memory honest.

    Redis is a weaker trust boundary than the database: every entry carries
    an HMAC-SHA256 over its Redis key, version, epoch and payload, checked
    before anything is deserialised. An entry that fails the check (forged,
    garbled, or written under another secret) is a miss, logged as a
    warning and counted in ``metrics().rejected``; it is never loaded.

    Args:
        url: Redis URL (``redis://host:port/db``).
        ttl: Seconds a value is kept in Redis.
        secret: Key of the entries' HMAC, shared by every process of the
            deployment (at least 16 bytes). Default: ``HAIVE_CACHE_SECRET``;
            else one derived from the wrapped object's encrypting codec (its
            keyring); else :meth:`CacheLayer.wrap` refuses.
        prefix: Prefix of every key and channel (several deployments can
            share a server under different prefixes).
        lease: Seconds a process trusts its memory after a ping through its
            subscription was sent; also the longest a write waits for
            acknowledgements.
        member_grace: Seconds after which a process whose heartbeat stopped
            is forgotten (see the module docstring).
        socket_timeout: Seconds a Redis call may take before the cache gives
            up on it (the call goes on to the next level).
    """

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        ttl: float | None = 300.0,
        *,
        secret: bytes | str | None = None,
        prefix: str = "haive",
        lease: float = 1.0,
        member_grace: float = 60.0,
        socket_timeout: float = 0.5,
    ) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - an extra
            raise ConfigurationError(
                "RedisCache needs the redis package: pip install 'haive-langgraph[redis]'"
            ) from None
        if lease <= 0 or member_grace <= lease:
            raise ConfigurationError("lease must be positive and member_grace larger than lease")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be positive, got {ttl}")
        self.url = url
        self.ttl = ttl
        if secret is None:
            secret = os.environ.get(CACHE_SECRET_ENV) or None
        self._mac: bytes | None = None
        self._kid = b""
        if secret is not None:
            self.set_secret(secret)
        self._last_reject_warning = -_REJECT_WARN_EVERY
        self.prefix = prefix
        self.lease = lease
        self.member_grace = member_grace
        self.socket_timeout = socket_timeout
        self._redis = redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._put_if = self.client.register_script(_PUT_IF_CURRENT)
        self._heartbeat = self.client.register_script(_HEARTBEAT)
        self._aclients: dict[int, Any] = {}
        self.me = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._memory: list[InMemoryCache] = []
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

    # -- authentication -----------------------------------------------------------------

    @property
    def has_secret(self) -> bool:
        return self._mac is not None

    def set_secret(self, secret: bytes | str) -> None:
        """Set the key entries are authenticated with (see the class docstring)."""
        self._mac = _mac_key(secret)
        self._kid = hashlib.sha256(b"kid\x00" + self._mac).digest()[:_KID_BYTES]

    def _sign(self, key: str, head: bytes, data: bytes) -> bytes:
        assert self._mac is not None, "RedisCache used without a secret"
        mac = hmac.new(self._mac, digestmod="sha256")
        name = key.encode()
        mac.update(len(name).to_bytes(4, "big") + name)
        mac.update(len(head).to_bytes(4, "big") + head)
        mac.update(data)
        return mac.digest()

    def _reject(self, key: str, why: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected += 1
        now = time.monotonic()
        if now - self._last_reject_warning >= _REJECT_WARN_EVERY:
            self._last_reject_warning = now
            log.warning(
                "Redis cache entry %s rejected (%s): treated as a miss and not loaded; "
                "if this is not a secret rotation, something else writes to this Redis",
                key,
                why,
            )

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

    def usable(self) -> bool:
        """Whether cached entries (memory or Redis) may be served now."""
        return self._connected and not self._lapsed and time.monotonic() < self._safe_until

    def _error(self, exc: BaseException, what: str) -> None:
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
            except self._redis.RedisError as exc:
                self._connected = False
                self._safe_until = 0.0
                if self._metrics is not None:
                    self._metrics.degraded = True
                self._needs_flush = True
                self._error(exc, "subscription")
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
        if channel != self._channel:
            seq = int(str(data.decode() if isinstance(data, bytes) else data))
            with self._lock:
                waiter = self._waiters.get(seq)
                if waiter is not None:
                    waiter.ack()
            return
        body = json.loads(data if isinstance(data, str | bytes) else str(data))
        if body.get("origin") == self.me:
            return
        if body.get("all"):
            for memory in self._memory:
                memory.clear()
        else:
            for group in body.get("groups", ()):
                for memory in self._memory:
                    memory.drop_group(group)
        if self._metrics is not None:
            self._metrics.invalidations_received += 1
        seq = body.get("seq")
        if seq is not None:
            self.client.publish(self._k("ack", str(body["origin"])), str(seq))

    # -- values -------------------------------------------------------------------------

    def read(self, group: str, sub: str) -> tuple[str, str, bytes | None]:
        """(version, epoch, value) of an entry; the value is ``None`` if absent, stale or
        not authentic (see the class docstring)."""
        key = self._k("val", group, sub)
        ver, epoch, raw = self.client.mget([self._k("ver", group), self._epoch_key, key])
        return self._unpack(key, ver, epoch, raw)

    async def aread(self, group: str, sub: str) -> tuple[str, str, bytes | None]:
        client = self._aclient()
        key = self._k("val", group, sub)
        ver, epoch, raw = await client.mget([self._k("ver", group), self._epoch_key, key])
        return self._unpack(key, ver, epoch, raw)

    def _unpack(self, key: str, ver: Any, epoch: Any, raw: Any) -> tuple[str, str, bytes | None]:
        try:
            v = ver.decode("ascii") if ver is not None else "0"
            e = epoch.decode("ascii") if epoch is not None else "0"
        except (AttributeError, UnicodeDecodeError):
            # Counters we did not write: nothing under them can be trusted.
            self._reject(key, "damaged version counter")
            return "", "", None
        if raw is None:
            return v, e, None
        raw = bytes(raw)
        head = f"{v}:{e}:".encode()
        if not raw.startswith(head):
            return v, e, None  # another version's entry: stale, an ordinary miss
        body = raw[len(head) :]
        if len(body) < _KID_BYTES + _MAC_BYTES:
            self._reject(key, "too short to be authentic")
            return v, e, None
        kid, mac, data = (
            body[:_KID_BYTES],
            body[_KID_BYTES : _KID_BYTES + _MAC_BYTES],
            body[_KID_BYTES + _MAC_BYTES :],
        )
        if self._mac is None or not hmac.compare_digest(kid, self._kid):
            self._reject(key, "written under another secret")
            return v, e, None
        if not hmac.compare_digest(mac, self._sign(key, head, data)):
            self._reject(key, "authentication failed")
            return v, e, None
        return v, e, data

    def _put_args(self, group: str, sub: str, ver: str, epoch: str, data: bytes) -> dict[str, Any]:
        ttl = int((self.ttl or 86400) * 1000)
        key = self._k("val", group, sub)
        head = f"{ver}:{epoch}:".encode()
        return {
            "keys": [self._k("ver", group), self._epoch_key, key],
            "args": [ver, epoch, head + self._kid + self._sign(key, head, data) + data, ttl],
        }

    def write(self, group: str, sub: str, ver: str, epoch: str, data: bytes) -> bool:
        return bool(self._put_if(**self._put_args(group, sub, ver, epoch, data)))

    async def awrite(self, group: str, sub: str, ver: str, epoch: str, data: bytes) -> bool:
        client = self._aclient()
        script = client.register_script(_PUT_IF_CURRENT)
        return bool(await script(**self._put_args(group, sub, ver, epoch, data)))

    # -- invalidation -------------------------------------------------------------------

    def _message(self, groups: Sequence[str] | None) -> tuple[int, str]:
        seq = next(self._seq)
        body: dict[str, Any] = {"origin": self.me, "seq": seq}
        if groups is None:
            body["all"] = True
        else:
            body["groups"] = list(groups)
        return seq, json.dumps(body)

    def _bump(self, pipe: Any, groups: Sequence[str] | None) -> None:
        keep = int(((self.ttl or 86400) * 2 + self.member_grace) * 1000)
        if groups is None:
            pipe.incr(self._epoch_key)
            return
        for group in groups:
            pipe.incr(self._k("ver", group))
            pipe.pexpire(self._k("ver", group), keep)

    def _register(self, seq: int, receivers: int) -> _Waiter:
        # Our own listener receives the message too (and ignores it).
        own = 1 if self._connected else 0
        waiter = _Waiter(receivers - own)
        with self._lock:
            self._waiters[seq] = waiter
        return waiter

    def _done(self, seq: int) -> None:
        with self._lock:
            self._waiters.pop(seq, None)

    def _offline_delay(self) -> float:
        """Seconds a write must wait when it could not tell the others (see docstring)."""
        noticed = self._last_heartbeat_ok + self.lease * 1.5 + 0.05
        return max(0.0, noticed - time.monotonic())

    def invalidate(self, groups: Sequence[str] | None) -> None:
        """Bump versions, tell every process, wait for their acknowledgements."""
        seq, message = self._message(groups)
        try:
            pipe = self.client.pipeline(transaction=True)
            self._bump(pipe, groups)
            # Register before publishing: an acknowledgement can beat the reply.
            waiter = self._register(seq, 1 << 30)
            pipe.publish(self._channel, message)
            receivers = int(pipe.execute()[-1])
        except self._redis.RedisError as exc:
            self._done(seq)
            self._needs_flush = True
            self._error(exc, "invalidate")
            time.sleep(self._offline_delay())
            return
        try:
            with self._lock:
                waiter.needed = receivers - (1 if self._connected else 0)
                if waiter.acks >= waiter.needed:
                    waiter.event.set()
            if not waiter.event.wait(self.lease):
                # Someone did not answer: by now it has stopped serving from memory.
                pass
        finally:
            self._done(seq)

    async def ainvalidate(self, groups: Sequence[str] | None) -> None:
        seq, message = self._message(groups)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(resolve)

        try:
            client = self._aclient()
            waiter = self._register(seq, 1 << 30)
            waiter.callbacks.append(wake)
            pipe = client.pipeline(transaction=True)
            self._bump(pipe, groups)
            pipe.publish(self._channel, message)
            receivers = int((await pipe.execute())[-1])
        except self._redis.RedisError as exc:
            self._done(seq)
            self._needs_flush = True
            self._error(exc, "invalidate")
            await asyncio.sleep(self._offline_delay())
            return
        try:
            with self._lock:
                waiter.needed = receivers - (1 if self._connected else 0)
                if waiter.acks >= waiter.needed:
                    waiter.event.set()
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
        _, message = self._message(groups)
        body = json.loads(message)
        del body["seq"]  # no acknowledgements wanted
        pipe = self.client.pipeline(transaction=True)
        self._bump(pipe, groups)
        pipe.publish(self._channel, json.dumps(body))
        pipe.execute()

    async def anotify(self, groups: Sequence[str]) -> None:
        _, message = self._message(groups)
        body = json.loads(message)
        del body["seq"]
        pipe = self._aclient().pipeline(transaction=True)
        self._bump(pipe, groups)
        pipe.publish(self._channel, json.dumps(body))
        await pipe.execute()

    def current(self, group: str) -> tuple[str, str]:
        """The group's (version, epoch) now: what a fill without a prior read is made under."""
        ver, epoch, _ = self.read(group, "\x00")
        return ver, epoch

    async def acurrent(self, group: str) -> tuple[str, str]:
        ver, epoch, _ = await self.aread(group, "\x00")
        return ver, epoch

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

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease * 2)
            self._thread = None
        try:
            self.client.zrem(self._members_key, self.me)
        except self._redis.RedisError:
            pass
        self.client.close()

    async def aclose(self) -> None:
        for client in self._aclients.values():
            await client.aclose()
        self._aclients.clear()
        await asyncio.to_thread(self.close)
