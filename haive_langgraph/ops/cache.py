"""A read cache in front of the checkpointer and the store: memory, then Redis, then PostgreSQL.

::

    layer = CacheLayer([InMemoryCache(max_bytes=64 << 20, ttl=300),
                        RedisCache("redis://127.0.0.1:6379/0", ttl=300)])
    saver = layer.wrap(PostgresCheckpointer(dsn))      # a CachedCheckpointer
    graph = builder.compile(checkpointer=saver)

:class:`CachedCheckpointer` caches ``get_tuple``: a thread's latest
checkpoint (what every ``invoke`` and ``get_state`` reads first) and
checkpoints read by id. Every write through it (``put``, ``put_writes``,
deletes, copies, branches, prunes, retention) invalidates what it changes
before it returns, and ``put`` reads the new latest checkpoint back into the
cache (write-through), so the next read of an active thread is a hit.

:class:`CachedStore` (``layer.wrap_store(store)``) does the same for a
store's ``get``, through the public ``BaseStore`` batch API (no TTLs, see
its docstring).

:class:`CachedChatHistory` / :class:`AsyncCachedChatHistory`
(``layer.wrap_history(history)``, ``layer.wrap_history_factory(factory)``)
cache a chat history's messages differently: conversations are written by
much that does not go through a history (``ConversationStore``,
``SessionManager``, the tracker, erasure), so every read is checked against
the conversation's version in PostgreSQL (one round trip; a trigger renews
it in every transaction that changes the conversation's messages). What
follows about invalidation does not bear on their correctness.

Redis is not trusted: every entry is authenticated (HMAC-SHA256 over its
key, version and payload, see :class:`RedisCache`) before anything is
deserialised; an entry that fails is a miss, never loaded.

Correctness comes first: a read never returns what a write that has already
returned replaced, in this process or any other sharing the Redis server.

* **In this process**, a write drops the thread's entries and bumps its
  generation; a read that loaded from PostgreSQL stores its result only if
  the generation did not move meanwhile (a write that raced the read wins).
* **Redis entries** carry the thread's version (a Redis counter the writer
  increments); an entry whose version is not the current one is a miss, and
  a read stores its result only if the version is still the one it saw
  before loading (a compare-and-set script).
* **Other processes' memory**: the writer publishes the invalidation and
  waits until every subscribed process acknowledges it has dropped the
  entries (about one round trip). A process serves from memory only while
  its subscription is provably live: it pings through the subscription
  every ``lease / 4`` and trusts its memory for ``lease`` seconds after each
  ping was sent, since every invalidation published before the ping reached
  it first. A writer whose acknowledgements do not all arrive waits out
  ``lease`` before returning, by which time a process that did not see the
  message has stopped serving from memory.
* **Redis down or unreachable from one process**: every process keeps a
  heartbeat in Redis; when one stops (it cannot reach Redis and may be
  writing), the others stop serving cached entries until it is back (it then
  flushes every cache) or gone for ``member_grace`` seconds. The process
  that lost Redis serves from PostgreSQL, logs one warning, and delays its
  first writes by a lease or so until the others have noticed. A call never
  fails because of the cache.

What remains: a process cut off from Redis for longer than ``member_grace``
(default 60 s) that keeps writing, while the others still reach Redis, can
have its writes served stale by the others until it reconnects or the
entries' ``ttl`` runs out. ``InMemoryCache`` alone (no Redis level) is for a
single process: nothing tells it about other processes' writes.

Returned tuples are shallow copies of the cached ones: their dicts are new,
the channel values (messages) are shared; treat them as read-only, as
LangGraph does.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import itertools
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result

from haive_langgraph.codec import Codec, Kind, RowContext, default_codec
from haive_langgraph.db import Op as DbOp
from haive_langgraph.errors import ConfigurationError, HaiveError

if TYPE_CHECKING:
    from haive_langgraph.memory._history_ops import Call, HistoryOps
    from haive_langgraph.memory._history_types import MessagePage
    from haive_langgraph.memory.history import (
        AsyncPostgresChatMessageHistory,
        PostgresChatMessageHistory,
    )

__all__ = [
    "AsyncCachedChatHistory",
    "CacheLayer",
    "CacheMetrics",
    "CachedChatHistory",
    "CachedCheckpointer",
    "CachedHistoryFactory",
    "CachedStore",
    "InMemoryCache",
    "RedisCache",
]

log = logging.getLogger("haive_langgraph.cache")

V = TypeVar("V")

_NONE = b"\x00"  # a cached "nothing there" (a thread without checkpoints)
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


# -- the layer ----------------------------------------------------------------------------


class _Format(Protocol[V]):
    """How one kind of value is stored in Redis and copied for callers."""

    def dumps(self, value: V) -> bytes: ...

    def loads(self, data: bytes) -> V: ...

    def copy(self, value: V) -> V: ...


class CacheLayer:
    """Cache levels in order, in front of a source (the wrapped object).

    Args:
        levels: ``InMemoryCache`` and/or ``RedisCache``, fastest first.
        strategy: ``"write-through"``: writes invalidate, then the new value
            is read back into the levels.
    """

    def __init__(
        self,
        levels: Sequence[InMemoryCache | RedisCache],
        strategy: str = "write-through",
    ) -> None:
        if strategy != "write-through":
            raise ConfigurationError(f"unsupported cache strategy {strategy!r} (write-through)")
        if not levels:
            raise ConfigurationError("a cache layer needs at least one level")
        self.strategy = strategy
        self.levels = list(levels)
        self.memory = [lv for lv in self.levels if isinstance(lv, InMemoryCache)]
        redis_levels = [lv for lv in self.levels if isinstance(lv, RedisCache)]
        if len(redis_levels) > 1:
            raise ConfigurationError("a cache layer takes one RedisCache")
        self.redis = redis_levels[0] if redis_levels else None
        self._metrics = CacheMetrics(hits={lv.name: 0 for lv in self.levels})
        if self.redis is not None:
            self.redis.attach(self.memory, self._metrics)

    # -- public -------------------------------------------------------------------------

    def metrics(self) -> CacheMetrics:
        """A snapshot of the counters."""
        m = self._metrics
        return CacheMetrics(
            hits=dict(m.hits),
            misses=m.misses,
            refreshes=m.refreshes,
            fills=m.fills,
            stale_fills_refused=m.stale_fills_refused,
            invalidations=m.invalidations,
            invalidations_received=m.invalidations_received,
            redis_errors=m.redis_errors,
            rejected=m.rejected,
            degraded=m.degraded,
            suspended=m.suspended,
        )

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until cached entries may be served (the Redis subscription is live)."""
        deadline = time.monotonic() + timeout
        while not self._shared_ok():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def wrap(self, checkpointer: BaseCheckpointSaver[Any]) -> CachedCheckpointer:
        """A :class:`CachedCheckpointer` in front of ``checkpointer``.

        Raises:
            ConfigurationError: The layer has a :class:`RedisCache` without a
                secret, and the checkpointer's codec has no keyring to derive
                one from.
        """
        return CachedCheckpointer(checkpointer, self)

    def wrap_store(self, store: BaseStore) -> CachedStore:
        """A :class:`CachedStore` in front of ``store`` (see :class:`CachedStore`).

        Raises:
            ConfigurationError: As for :meth:`wrap`; or the store gives every
                item a default TTL.
        """
        return CachedStore(store, self)

    def wrap_history(self, history: Any) -> CachedChatHistory | AsyncCachedChatHistory:
        """A cached chat history in front of ``history`` (see :class:`CachedChatHistory`).

        Args:
            history: A ``PostgresChatMessageHistory`` (gives a
                :class:`CachedChatHistory`) or an
                ``AsyncPostgresChatMessageHistory`` (gives an
                :class:`AsyncCachedChatHistory`).

        Raises:
            ConfigurationError: Another kind of history; or as for :meth:`wrap`.
        """
        from haive_langgraph.memory.history import (
            AsyncPostgresChatMessageHistory,
            PostgresChatMessageHistory,
        )

        if isinstance(history, PostgresChatMessageHistory):
            return CachedChatHistory(history, self)
        if isinstance(history, AsyncPostgresChatMessageHistory):
            return AsyncCachedChatHistory(history, self)
        raise ConfigurationError(
            f"wrap_history takes a PostgresChatMessageHistory or an "
            f"AsyncPostgresChatMessageHistory, got {type(history).__name__}: a cached history "
            "is checked against the conversation's version in PostgreSQL on every read"
        )

    def wrap_history_factory(self, factory: Callable[..., Any]) -> CachedHistoryFactory:
        """``session_id -> cached history`` for ``RunnableWithMessageHistory``.

        Args:
            factory: A ``ChatHistoryFactory`` / ``AsyncChatHistoryFactory``
                (or any ``(session_id, user_id=None) -> history`` callable
                giving our histories).
        """
        return CachedHistoryFactory(factory, self)

    def ensure_secret(self, codec: Any) -> None:
        """Give the Redis level a secret derived from ``codec`` if it has none yet."""
        if self.redis is None or self.redis.has_secret:
            return
        derived = secret_from_codec(codec)
        if derived is None:
            raise ConfigurationError(
                "RedisCache needs a secret to authenticate its entries (Redis is shared and "
                f"less trusted than the database): pass RedisCache(secret=...), set "
                f"{CACHE_SECRET_ENV}, or use an encrypting codec (HAIVE_ENCRYPTION_KEYS) to "
                "derive one from"
            )
        self.redis.set_secret(derived)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    # -- reads --------------------------------------------------------------------------

    def _shared_ok(self) -> bool:
        return self.redis is None or self.redis.usable()

    def _from_memory(self, group: str, sub: str, fmt: _Format[Any]) -> Any:
        for memory in self.memory:
            value = memory.get(group, sub)
            if value is not _MISSING:
                self._metrics.hits[memory.name] += 1
                return value
        return _MISSING

    def _tokens(self, group: str) -> list[tuple[int, int]]:
        return [m.token(group) for m in self.memory]

    def _fill_memory(
        self, group: str, sub: str, value: Any, size: int, tokens: list[tuple[int, int]]
    ) -> None:
        for memory, token in zip(self.memory, tokens, strict=True):
            if memory.put(group, sub, value, size, token):
                self._metrics.fills += 1
            else:
                self._metrics.stale_fills_refused += 1

    def read(
        self,
        group: str,
        sub: str,
        load: Callable[[], V],
        fmt: _Format[V],
        *,
        refresh: bool = False,
    ) -> V:
        """A cached value, else ``load()`` (stored in every level on the way back).

        ``refresh`` loads without looking (a read-back after a write).
        """
        shared = self._shared_ok()
        if shared and not refresh:
            value = self._from_memory(group, sub, fmt)
            if value is not _MISSING:
                return fmt.copy(value)
        tokens = self._tokens(group)
        seen: tuple[str, str] | None = None
        if self.redis is not None and shared:
            try:
                ver, epoch, data = self.redis.read(group, sub)
                seen = (ver, epoch) if ver else None
                if data is not None and not refresh and self.redis.usable():
                    value = self._decode(group, sub, data, fmt)
                    if value is not _MISSING:
                        self._metrics.hits[self.redis.name] += 1
                        self._fill_memory(group, sub, value, len(data), tokens)
                        return fmt.copy(value)
            except self._redis_errors() as exc:
                self.redis._error(exc, "read")
                seen = None
        if refresh:
            self._metrics.refreshes += 1
        else:
            self._metrics.misses += 1
        value = load()
        data = fmt.dumps(value)
        if shared or self.redis is None:
            self._fill_memory(group, sub, value, len(data), tokens)
        if self.redis is not None and seen is not None:
            try:
                if self.redis.write(group, sub, seen[0], seen[1], data):
                    self._metrics.fills += 1
                else:
                    self._metrics.stale_fills_refused += 1
            except self._redis_errors() as exc:
                self.redis._error(exc, "write")
        return fmt.copy(value)

    async def aread(
        self,
        group: str,
        sub: str,
        load: Callable[[], Awaitable[V]],
        fmt: _Format[V],
        *,
        refresh: bool = False,
    ) -> V:
        shared = self._shared_ok()
        if shared and not refresh:
            value = self._from_memory(group, sub, fmt)
            if value is not _MISSING:
                return fmt.copy(value)
        tokens = self._tokens(group)
        seen: tuple[str, str] | None = None
        if self.redis is not None and shared:
            try:
                ver, epoch, data = await self.redis.aread(group, sub)
                seen = (ver, epoch) if ver else None
                if data is not None and not refresh and self.redis.usable():
                    value = self._decode(group, sub, data, fmt)
                    if value is not _MISSING:
                        self._metrics.hits[self.redis.name] += 1
                        self._fill_memory(group, sub, value, len(data), tokens)
                        return fmt.copy(value)
            except self._redis_errors() as exc:
                self.redis._error(exc, "read")
                seen = None
        if refresh:
            self._metrics.refreshes += 1
        else:
            self._metrics.misses += 1
        value = await load()
        data = fmt.dumps(value)
        if shared or self.redis is None:
            self._fill_memory(group, sub, value, len(data), tokens)
        if self.redis is not None and seen is not None:
            try:
                if await self.redis.awrite(group, sub, seen[0], seen[1], data):
                    self._metrics.fills += 1
                else:
                    self._metrics.stale_fills_refused += 1
            except self._redis_errors() as exc:
                self.redis._error(exc, "write")
        return fmt.copy(value)

    # -- versioned reads (chat histories) ----------------------------------------------
    #
    # An entry holds a value and the source version it was read at; every read
    # asks the source for the current version (one cheap round trip, in the
    # same operation that loads the value when they differ) and serves the
    # entry only when they are equal. Correctness needs no invalidation
    # message, so memory keeps serving when Redis is down or peers lapsed.

    def _candidate(
        self, group: str, fmt: _Format[Any], refresh: bool
    ) -> tuple[str | None, Any, tuple[str, str] | None]:
        """(level, cached (token, value), Redis (version, epoch) seen) before a sync read."""
        if refresh:
            return None, None, None
        for memory in self.memory:
            value = memory.get(group, "")
            if value is not _MISSING:
                return memory.name, value, None
        redis = self.redis
        if redis is None or not redis._connected:
            return None, None, None
        try:
            ver, epoch, data = redis.read(group, "")
        except self._redis_errors() as exc:
            redis._error(exc, "read")
            return None, None, None
        seen = (ver, epoch) if ver else None
        if data is not None:
            value = self._decode(group, "", data, fmt)
            if value is not _MISSING:
                return redis.name, value, seen
        return None, None, seen

    async def _acandidate(
        self, group: str, fmt: _Format[Any], refresh: bool
    ) -> tuple[str | None, Any, tuple[str, str] | None]:
        if refresh:
            return None, None, None
        for memory in self.memory:
            value = memory.get(group, "")
            if value is not _MISSING:
                return memory.name, value, None
        redis = self.redis
        if redis is None or not redis._connected:
            return None, None, None
        try:
            ver, epoch, data = await redis.aread(group, "")
        except self._redis_errors() as exc:
            redis._error(exc, "read")
            return None, None, None
        seen = (ver, epoch) if ver else None
        if data is not None:
            value = self._decode(group, "", data, fmt)
            if value is not _MISSING:
                return redis.name, value, seen
        return None, None, seen

    def _settle(
        self,
        group: str,
        level: str | None,
        cached: Any,
        loaded: tuple[Any, Any],
        tokens: list[tuple[int, int]],
        refresh: bool,
    ) -> tuple[Any, bool]:
        """Count the read and fill memory; returns (the entry or ``None``, whether a hit)."""
        token, value = loaded
        if token is None:  # nothing there: nothing to cache
            self._count_miss(refresh)
            return None, False
        if value is None:  # the cached entry is current
            assert level is not None
            self._metrics.hits[level] += 1
            if level == self.redis_name:
                self._fill_memory(group, "", cached, _approx_size(cached[1]), tokens)
            return cached, True
        self._count_miss(refresh)
        entry = (token, value)
        self._fill_memory(group, "", entry, _approx_size(value), tokens)
        return entry, False

    @property
    def redis_name(self) -> str:
        return self.redis.name if self.redis is not None else ""

    def _count_miss(self, refresh: bool) -> None:
        if refresh:
            self._metrics.refreshes += 1
        else:
            self._metrics.misses += 1

    def _redis_entry(self, entry: Any, fmt: _Format[Any]) -> bytes | None:
        try:
            return fmt.dumps(entry)
        except Exception:  # e.g. a message over a since lowered size limit: not shared
            log.debug("a history could not be encoded for Redis", exc_info=True)
            return None

    def read_versioned(
        self,
        group: str,
        load: Callable[[Any], tuple[Any, Any]],
        fmt: _Format[Any],
        *,
        refresh: bool = False,
    ) -> Any:
        """A value checked against the source's version (see above).

        ``load(known_token)`` returns ``(token, None)`` when the source's
        version equals ``known_token``, ``(token, value)`` read at or after
        ``token`` otherwise, ``(None, None)`` when there is nothing. Returns
        the ``(token, value)`` entry, or ``None``.
        """
        tokens = self._tokens(group)
        level, cached, seen = self._candidate(group, fmt, refresh)
        loaded = load(cached[0] if cached is not None else None)
        entry, hit = self._settle(group, level, cached, loaded, tokens, refresh)
        redis = self.redis
        if entry is not None and not hit and redis is not None and redis._connected:
            try:
                if seen is None:
                    seen = redis.current(group)
                data = self._redis_entry(entry, fmt)
                if data is not None and redis.write(group, "", seen[0], seen[1], data):
                    self._metrics.fills += 1
            except self._redis_errors() as exc:
                redis._error(exc, "write")
        return fmt.copy(entry) if entry is not None else None

    async def aread_versioned(
        self,
        group: str,
        load: Callable[[Any], Awaitable[tuple[Any, Any]]],
        fmt: _Format[Any],
        *,
        refresh: bool = False,
    ) -> Any:
        tokens = self._tokens(group)
        level, cached, seen = await self._acandidate(group, fmt, refresh)
        loaded = await load(cached[0] if cached is not None else None)
        entry, hit = self._settle(group, level, cached, loaded, tokens, refresh)
        redis = self.redis
        if entry is not None and not hit and redis is not None and redis._connected:
            try:
                if seen is None:
                    seen = await redis.acurrent(group)
                data = self._redis_entry(entry, fmt)
                if data is not None and await redis.awrite(group, "", seen[0], seen[1], data):
                    self._metrics.fills += 1
            except self._redis_errors() as exc:
                redis._error(exc, "write")
        return fmt.copy(entry) if entry is not None else None

    def drop(self, groups: Sequence[str]) -> None:
        """Drop versioned entries here and tell the other processes (no waiting)."""
        self._drop_local(groups)
        redis = self.redis
        if redis is not None and redis._connected:
            try:
                redis.notify(groups)
            except self._redis_errors() as exc:
                redis._error(exc, "invalidate")

    async def adrop(self, groups: Sequence[str]) -> None:
        self._drop_local(groups)
        redis = self.redis
        if redis is not None and redis._connected:
            try:
                await redis.anotify(groups)
            except self._redis_errors() as exc:
                redis._error(exc, "invalidate")

    def _decode(self, group: str, sub: str, data: bytes, fmt: _Format[Any]) -> Any:
        """An authenticated entry's value; one that does not decode is a miss."""
        assert self.redis is not None
        try:
            return fmt.loads(data)
        except Exception as exc:  # e.g. a key since rotated away, a serde change
            self.redis._reject(self.redis._k("val", group, sub), f"{type(exc).__name__}")
            return _MISSING

    def _redis_errors(self) -> tuple[type[BaseException], ...]:
        if self.redis is None:
            return ()
        return (self.redis._redis.RedisError, OSError)

    # -- writes -------------------------------------------------------------------------

    def invalidate(self, groups: Sequence[str] | None) -> None:
        """Drop ``groups`` (``None``: everything) here and in every process; returns when done."""
        self._drop_local(groups)
        if self.redis is not None:
            self.redis.invalidate(groups)

    async def ainvalidate(self, groups: Sequence[str] | None) -> None:
        self._drop_local(groups)
        if self.redis is not None:
            await self.redis.ainvalidate(groups)

    def _drop_local(self, groups: Sequence[str] | None) -> None:
        for memory in self.memory:
            if groups is None:
                memory.clear()
            else:
                for group in groups:
                    memory.drop_group(group)
        self._metrics.invalidations += 1 if groups is None else len(groups)


# -- the checkpointer ---------------------------------------------------------------------

# Methods of our checkpointers that only read (passed through as they are).
_READ_ONLY = frozenset(
    {
        "get_thread",
        "aget_thread",
        "list_threads",
        "alist_threads",
        "find_checkpoints",
        "afind_checkpoints",
        "list_branches",
        "alist_branches",
        "diff",
        "adiff",
        "setup",
        "close",
        "aclose",
        "schema",
        "tenant_id",
        "config",
        "codec",
        "encrypt_metadata",
    }
)

_ENVELOPE = struct.Struct(">H")


def _copy_config(config: RunnableConfig | None) -> Any:
    if config is None:
        return None
    out: dict[str, Any] = dict(config)
    if "configurable" in out:
        out["configurable"] = dict(out["configurable"])
    return out


def _copy_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """New dicts (values shared), with exactly the keys of the original."""
    out: dict[str, Any] = dict(checkpoint)
    for key in ("channel_values", "channel_versions"):
        if key in out:
            out[key] = dict(out[key])
    if "versions_seen" in out:
        out["versions_seen"] = {k: dict(v) for k, v in out["versions_seen"].items()}
    if isinstance(out.get("pending_sends"), list):
        out["pending_sends"] = list(out["pending_sends"])
    return out  # type: ignore[return-value]


def _copy_tuple(tup: CheckpointTuple | None) -> CheckpointTuple | None:
    if tup is None:
        return None
    return CheckpointTuple(
        config=_copy_config(tup.config),
        checkpoint=_copy_checkpoint(tup.checkpoint),
        metadata=dict(tup.metadata),  # type: ignore[arg-type]
        parent_config=_copy_config(tup.parent_config),
        pending_writes=list(tup.pending_writes) if tup.pending_writes is not None else None,
    )


class _TupleFormat:
    """Checkpoint tuples of one thread in Redis: serde, then the codec (bound to the thread)."""

    __slots__ = ("ctx", "saver")

    def __init__(self, saver: CachedCheckpointer, thread_id: str) -> None:
        self.saver = saver
        self.ctx = RowContext(saver._tenant, thread_id, Kind.BLOB, f"cache:{saver._prefix}")

    copy = staticmethod(_copy_tuple)

    def dumps(self, tup: CheckpointTuple | None) -> bytes:
        if tup is None:
            return _NONE
        kind, payload = self.saver.serde.dumps_typed(
            [
                tup.config,
                tup.checkpoint,
                tup.metadata,
                tup.parent_config,
                [list(w) for w in tup.pending_writes or ()],
                tup.pending_writes is None,
            ]
        )
        head = kind.encode()
        return self.saver._codec.encode(_ENVELOPE.pack(len(head)) + head + payload, self.ctx)

    def loads(self, data: bytes) -> CheckpointTuple | None:
        if data == _NONE:
            return None
        body = self.saver._codec.decode(data, self.ctx)
        (n,) = _ENVELOPE.unpack_from(body)
        kind = body[2 : 2 + n].decode()
        config, checkpoint, metadata, parent, writes, no_writes = self.saver.serde.loads_typed(
            (kind, body[2 + n :])
        )
        return CheckpointTuple(
            config=config,
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=parent,
            pending_writes=None if no_writes else [tuple(w) for w in writes],  # type: ignore[misc]
        )


class CachedCheckpointer(BaseCheckpointSaver[Any]):
    """A checkpointer whose ``get_tuple`` is cached (see the module docstring).

    Build it with :meth:`CacheLayer.wrap`. Everything else is the wrapped
    checkpointer's: reads pass through, writes pass through and invalidate.

    Args:
        inner: The checkpointer (``PostgresCheckpointer`` or
            ``AsyncPostgresCheckpointer``, or any LangGraph checkpointer).
        layer: The cache levels.
        refresh_on_put: Read the new latest checkpoint into the cache after
            each ``put`` (write-through), so the next read is a hit.
        codec: Frames (and encrypts) values stored in Redis; default: the
            checkpointer's codec, else :func:`default_codec`.
    """

    def __init__(
        self,
        inner: BaseCheckpointSaver[Any],
        layer: CacheLayer,
        *,
        refresh_on_put: bool = True,
        codec: Codec | None = None,
    ) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self.layer = layer
        self.refresh_on_put = refresh_on_put
        self._codec: Codec = codec or getattr(inner, "codec", None) or default_codec()
        layer.ensure_secret(self._codec)
        schema = str(getattr(inner, "schema", ""))
        self._tenant = str(getattr(inner, "tenant_id", ""))
        self._prefix = "cp:" + json.dumps([schema, self._tenant]) + ":"

    # -- plumbing -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in _READ_ONLY:
            return getattr(self.inner, name)
        raise AttributeError(
            f"CachedCheckpointer has no {name!r}: call it on .inner if it does not write "
            "(a write through .inner is not seen by the cache)"
        )

    @property
    def config_specs(self) -> builtins.list[Any]:
        return list(self.inner.config_specs)

    def get_next_version(self, current: Any, channel: Any) -> Any:
        return self.inner.get_next_version(current, channel)

    def _group(self, thread_id: Any) -> str:
        return self._prefix + str(thread_id)

    def _keys(self, config: RunnableConfig) -> tuple[str, str]:
        conf = config["configurable"]
        ns = str(conf.get("checkpoint_ns", ""))
        return self._group(conf["thread_id"]), f"{ns}\x00{conf.get('checkpoint_id') or ''}"

    # -- reads --------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or the thread's latest), from the cache if there."""
        group, sub = self._keys(config)
        thread = str(config["configurable"]["thread_id"])
        return self.layer.read(
            group, sub, lambda: self.inner.get_tuple(config), _TupleFormat(self, thread)
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        group, sub = self._keys(config)
        thread = str(config["configurable"]["thread_id"])
        return await self.layer.aread(
            group, sub, lambda: self.inner.aget_tuple(config), _TupleFormat(self, thread)
        )

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        return self.inner.alist(config, filter=filter, before=before, limit=limit)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return self.inner.get_delta_channel_history(config=config, channels=channels)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return await self.inner.aget_delta_channel_history(config=config, channels=channels)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> CachedCheckpointer:
        inner = self.inner.with_allowlist(extra_allowlist)
        if inner is self.inner:
            return self
        return CachedCheckpointer(
            inner, self.layer, refresh_on_put=self.refresh_on_put, codec=self._codec
        )

    # -- writes -------------------------------------------------------------------------

    def _latest(self, config: RunnableConfig) -> RunnableConfig:
        conf = config["configurable"]
        return {
            "configurable": {
                "thread_id": conf["thread_id"],
                "checkpoint_ns": conf.get("checkpoint_ns", ""),
            }
        }

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        try:
            return self.inner.put(config, checkpoint, metadata, new_versions)
        finally:
            self.layer.invalidate([self._group(config["configurable"]["thread_id"])])
            if self.refresh_on_put:
                self._refresh(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        try:
            return await self.inner.aput(config, checkpoint, metadata, new_versions)
        finally:
            await self.layer.ainvalidate([self._group(config["configurable"]["thread_id"])])
            if self.refresh_on_put:
                await self._arefresh(config)

    def _load_head(self, config: RunnableConfig) -> None:
        """Load a thread's latest checkpoint from the source into the levels."""
        head = self._latest(config)
        group, sub = self._keys(head)
        thread = str(config["configurable"]["thread_id"])
        self.layer.read(
            group, sub, lambda: self.inner.get_tuple(head), _TupleFormat(self, thread), refresh=True
        )

    async def _aload_head(self, config: RunnableConfig) -> None:
        head = self._latest(config)
        group, sub = self._keys(head)
        thread = str(config["configurable"]["thread_id"])
        await self.layer.aread(
            group,
            sub,
            lambda: self.inner.aget_tuple(head),
            _TupleFormat(self, thread),
            refresh=True,
        )

    def _refresh(self, config: RunnableConfig) -> None:
        try:
            self._load_head(config)
        except Exception:  # the write succeeded; a failed read-back only costs a miss
            log.debug("read-back after put failed", exc_info=True)

    async def _arefresh(self, config: RunnableConfig) -> None:
        try:
            await self._aload_head(config)
        except Exception:
            log.debug("read-back after put failed", exc_info=True)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        try:
            self.inner.put_writes(config, writes, task_id, task_path)
        finally:
            self.layer.invalidate([self._group(config["configurable"]["thread_id"])])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        try:
            await self.inner.aput_writes(config, writes, task_id, task_path)
        finally:
            await self.layer.ainvalidate([self._group(config["configurable"]["thread_id"])])

    def _threads(self, thread_ids: Sequence[str]) -> builtins.list[str]:
        if isinstance(thread_ids, str):
            return [self._group(thread_ids)]
        return [self._group(t) for t in thread_ids]

    def delete_thread(self, thread_id: str) -> None:
        try:
            self.inner.delete_thread(thread_id)
        finally:
            self.layer.invalidate([self._group(thread_id)])

    async def adelete_thread(self, thread_id: str) -> None:
        try:
            await self.inner.adelete_thread(thread_id)
        finally:
            await self.layer.ainvalidate([self._group(thread_id)])

    def delete_threads(self, thread_ids: Sequence[str]) -> Any:
        try:
            return self.inner.delete_threads(thread_ids)  # type: ignore[attr-defined]
        finally:
            self.layer.invalidate(self._threads(thread_ids))

    async def adelete_threads(self, thread_ids: Sequence[str]) -> Any:
        try:
            return await self.inner.adelete_threads(thread_ids)  # type: ignore[attr-defined]
        finally:
            await self.layer.ainvalidate(self._threads(thread_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        try:
            self.inner.copy_thread(source_thread_id, target_thread_id)
        finally:
            self.layer.invalidate([self._group(target_thread_id)])

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        try:
            await self.inner.acopy_thread(source_thread_id, target_thread_id)
        finally:
            await self.layer.ainvalidate([self._group(target_thread_id)])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        # The threads the runs wrote to are not known here: drop everything.
        try:
            self.inner.delete_for_runs(run_ids)
        finally:
            self.layer.invalidate(None)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        try:
            await self.inner.adelete_for_runs(run_ids)
        finally:
            await self.layer.ainvalidate(None)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        try:
            self.inner.prune(thread_ids, strategy=strategy)
        finally:
            self.layer.invalidate(self._threads(thread_ids))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        try:
            await self.inner.aprune(thread_ids, strategy=strategy)
        finally:
            await self.layer.ainvalidate(self._threads(thread_ids))

    def _config_group(self, config: RunnableConfig) -> builtins.list[str]:
        return [self._group(config["configurable"]["thread_id"])]

    def tag(self, config: RunnableConfig, *tags: str) -> None:
        try:
            self.inner.tag(config, *tags)  # type: ignore[attr-defined]
        finally:
            self.layer.invalidate(self._config_group(config))

    async def atag(self, config: RunnableConfig, *tags: str) -> None:
        try:
            await self.inner.atag(config, *tags)  # type: ignore[attr-defined]
        finally:
            await self.layer.ainvalidate(self._config_group(config))

    def untag(self, config: RunnableConfig, *tags: str) -> None:
        try:
            self.inner.untag(config, *tags)  # type: ignore[attr-defined]
        finally:
            self.layer.invalidate(self._config_group(config))

    async def auntag(self, config: RunnableConfig, *tags: str) -> None:
        try:
            await self.inner.auntag(config, *tags)  # type: ignore[attr-defined]
        finally:
            await self.layer.ainvalidate(self._config_group(config))

    def create_branch(self, config: RunnableConfig, name: str, **kwargs: Any) -> RunnableConfig:
        out: RunnableConfig = self.inner.create_branch(config, name, **kwargs)  # type: ignore[attr-defined]
        self.layer.invalidate(self._config_group(out) + self._config_group(config))
        return out

    async def acreate_branch(
        self, config: RunnableConfig, name: str, **kwargs: Any
    ) -> RunnableConfig:
        out: RunnableConfig = await self.inner.acreate_branch(config, name, **kwargs)  # type: ignore[attr-defined]
        await self.layer.ainvalidate(self._config_group(out) + self._config_group(config))
        return out

    def restore(self, config: RunnableConfig) -> RunnableConfig:
        try:
            out: RunnableConfig = self.inner.restore(config)  # type: ignore[attr-defined]
            return out
        finally:
            self.layer.invalidate(self._config_group(config))

    async def arestore(self, config: RunnableConfig) -> RunnableConfig:
        try:
            out: RunnableConfig = await self.inner.arestore(config)  # type: ignore[attr-defined]
            return out
        finally:
            await self.layer.ainvalidate(self._config_group(config))

    def apply_retention(
        self, policy: Any, *, dry_run: bool = False, thread_ids: Sequence[str] | None = None
    ) -> Any:
        try:
            return self.inner.apply_retention(policy, dry_run=dry_run, thread_ids=thread_ids)  # type: ignore[attr-defined]
        finally:
            if not dry_run:
                self.layer.invalidate(self._threads(thread_ids) if thread_ids is not None else None)

    async def aapply_retention(
        self, policy: Any, *, dry_run: bool = False, thread_ids: Sequence[str] | None = None
    ) -> Any:
        try:
            return await self.inner.aapply_retention(  # type: ignore[attr-defined]
                policy, dry_run=dry_run, thread_ids=thread_ids
            )
        finally:
            if not dry_run:
                await self.layer.ainvalidate(
                    self._threads(thread_ids) if thread_ids is not None else None
                )

    # -- warm-up ------------------------------------------------------------------------

    def warm(self, thread_ids: Sequence[str] | None = None, *, recent: int = 100) -> int:
        """Load threads' latest checkpoints from the source into the cache.

        What is cached for them is replaced (not served): warm-up after a
        deployment or after writes made outside the cache. Returns how many
        threads were loaded.

        Args:
            thread_ids: These threads; default: the ``recent`` most recently
                updated threads (needs a checkpointer with ``list_threads``).
            recent: How many recent threads to warm.
        """
        ids = list(thread_ids) if thread_ids is not None else self._recent(recent)
        for thread_id in ids:
            self._load_head({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        return len(ids)

    async def awarm(self, thread_ids: Sequence[str] | None = None, *, recent: int = 100) -> int:
        if thread_ids is not None:
            ids = list(thread_ids)
        else:
            lister = getattr(self.inner, "alist_threads", None)
            if lister is None:
                raise HaiveError("this checkpointer cannot list threads: give thread_ids")
            ids = [t.thread_id for t in await lister(limit=recent)]
        for thread_id in ids:
            await self._aload_head({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        return len(ids)

    def _recent(self, limit: int) -> builtins.list[str]:
        lister = getattr(self.inner, "list_threads", None)
        if lister is None:
            raise HaiveError("this checkpointer cannot list threads: give thread_ids")
        return [t.thread_id for t in lister(limit=limit)]


# -- the store ----------------------------------------------------------------------------


def _copy_item(item: Item | None) -> Item | None:
    if item is None:
        return None
    return Item(
        value=dict(item.value),
        key=item.key,
        namespace=tuple(item.namespace),
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


class _ItemFormat:
    """Store items in Redis: LangGraph's serde (values round-trip as the store returns
    them, datetimes included), then the codec bound to the item's namespace and key."""

    __slots__ = ("codec", "ctx", "serde")

    def __init__(self, store: CachedStore, namespace: tuple[str, ...], key: str) -> None:
        self.codec = store._codec
        self.serde = store._serde
        self.ctx = RowContext(
            store._tenant, json.dumps(list(namespace)), Kind.STORE_VALUE, f"cache:{key}"
        )

    copy = staticmethod(_copy_item)

    def dumps(self, item: Item | None) -> bytes:
        if item is None:
            return _NONE
        kind, payload = self.serde.dumps_typed(
            [item.value, item.key, list(item.namespace), item.created_at, item.updated_at]
        )
        head = kind.encode()
        return self.codec.encode(_ENVELOPE.pack(len(head)) + head + payload, self.ctx)

    def loads(self, data: bytes) -> Item | None:
        if data == _NONE:
            return None
        body = self.codec.decode(data, self.ctx)
        (n,) = _ENVELOPE.unpack_from(body)
        kind = body[2 : 2 + n].decode()
        value, key, namespace, created, updated = self.serde.loads_typed((kind, body[2 + n :]))
        return Item(
            value=value,
            key=key,
            namespace=tuple(namespace),
            created_at=created,
            updated_at=updated,
        )


class CachedStore(BaseStore):
    """A store whose ``get`` is cached; everything else passes through.

    Build it with :meth:`CacheLayer.wrap_store`. It wraps any LangGraph
    ``BaseStore`` through its public ``batch``/``abatch`` API: ``GetOp``
    results are served from the levels; ``PutOp`` (puts and deletes) runs on
    the store, then invalidates its items here and in every process before
    the call returns, and reads them back into the levels (write-through);
    searches and namespace listings always go to the store.

    No TTLs (``supports_ttl = False``): the store expires items at a time the
    ``Item`` does not carry and refreshes it on reads, so a cached item could
    outlive its expiry. ``put(..., ttl=...)`` raises, and a store with a
    default TTL is refused; keep TTL namespaces on the store itself.

    Args:
        inner: The store.
        layer: The cache levels.
        codec: Frames (and encrypts) values stored in Redis; default: the
            store's codec, else :func:`default_codec`.
    """

    supports_ttl = False

    def __init__(self, inner: BaseStore, layer: CacheLayer, *, codec: Codec | None = None) -> None:
        ttl_config = getattr(inner, "ttl_config", None) or {}
        if ttl_config.get("default_ttl") is not None:
            raise ConfigurationError(
                "CachedStore cannot wrap a store with a default TTL: items expire in the "
                "database at a time the cache cannot see (use the store without a cache, or "
                "without default_ttl)"
            )
        self.inner = inner
        self.layer = layer
        self.ttl_config = None
        self._codec: Codec = codec or getattr(inner, "codec", None) or default_codec()
        self._serde = JsonPlusSerializer()
        layer.ensure_secret(self._codec)
        schema = str(getattr(inner, "schema", ""))
        self._tenant = str(getattr(inner, "tenant_id", ""))
        self._prefix = "st:" + json.dumps([schema, self._tenant]) + ":"

    def _group(self, namespace: tuple[str, ...], key: str) -> str:
        return self._prefix + json.dumps([*namespace, key], separators=(",", ":"))

    @staticmethod
    def _check(ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, PutOp) and op.ttl is not None:
                raise NotImplementedError(
                    "CachedStore does not support TTLs: put items with a ttl on the store itself"
                )

    def _split(self, ops: Sequence[Op]) -> tuple[builtins.list[int], builtins.list[int]]:
        gets = [i for i, op in enumerate(ops) if isinstance(op, GetOp)]
        others = [i for i, op in enumerate(ops) if not isinstance(op, GetOp)]
        return gets, others

    def _written(self, ops: Sequence[Op]) -> builtins.list[tuple[tuple[str, ...], str]]:
        seen: dict[tuple[tuple[str, ...], str], None] = {}
        for op in ops:
            if isinstance(op, PutOp):
                seen[(tuple(op.namespace), op.key)] = None
        return builtins.list(seen)

    def batch(self, ops: Iterable[Op]) -> builtins.list[Result]:
        ops = builtins.list(ops)
        self._check(ops)
        written = self._written(ops)
        if written:
            # A batch that writes runs as it is (its reads see its writes).
            try:
                return self.inner.batch(ops)
            finally:
                self.layer.invalidate([self._group(ns, key) for ns, key in written])
                for ns, key in written:
                    self._refresh(ns, key)
        gets, others = self._split(ops)
        results: builtins.list[Result] = [None] * len(ops)
        if others:
            for i, result in zip(others, self.inner.batch([ops[i] for i in others]), strict=True):
                results[i] = result
        for i in gets:
            op = ops[i]
            assert isinstance(op, GetOp)
            results[i] = self._get(op)
        return results

    async def abatch(self, ops: Iterable[Op]) -> builtins.list[Result]:
        ops = builtins.list(ops)
        self._check(ops)
        written = self._written(ops)
        if written:
            try:
                return await self.inner.abatch(ops)
            finally:
                await self.layer.ainvalidate([self._group(ns, key) for ns, key in written])
                for ns, key in written:
                    await self._arefresh(ns, key)
        gets, others = self._split(ops)
        results: builtins.list[Result] = [None] * len(ops)
        if others:
            for i, result in zip(
                others, await self.inner.abatch([ops[i] for i in others]), strict=True
            ):
                results[i] = result
        for i in gets:
            op = ops[i]
            assert isinstance(op, GetOp)
            results[i] = await self._aget(op)
        return results

    def _get(self, op: GetOp, *, refresh: bool = False) -> Item | None:
        ns = tuple(op.namespace)

        def load() -> Item | None:
            result = self.inner.batch([op])[0]
            return result if isinstance(result, Item) else None

        return self.layer.read(
            self._group(ns, op.key), "", load, _ItemFormat(self, ns, op.key), refresh=refresh
        )

    async def _aget(self, op: GetOp, *, refresh: bool = False) -> Item | None:
        ns = tuple(op.namespace)

        async def load() -> Item | None:
            result = (await self.inner.abatch([op]))[0]
            return result if isinstance(result, Item) else None

        return await self.layer.aread(
            self._group(ns, op.key), "", load, _ItemFormat(self, ns, op.key), refresh=refresh
        )

    def _refresh(self, namespace: tuple[str, ...], key: str) -> None:
        try:
            self._get(GetOp(namespace, key, False), refresh=True)
        except Exception:  # the write succeeded; a failed read-back only costs a miss
            log.debug("read-back after put failed", exc_info=True)

    async def _arefresh(self, namespace: tuple[str, ...], key: str) -> None:
        try:
            await self._aget(GetOp(namespace, key, False), refresh=True)
        except Exception:
            log.debug("read-back after put failed", exc_info=True)

    def warm(self, items: Iterable[tuple[tuple[str, ...], str]]) -> int:
        """Load ``(namespace, key)`` items from the store into the levels (replacing what is
        cached for them); returns how many."""
        count = 0
        for namespace, key in items:
            self._get(GetOp(tuple(namespace), key, False), refresh=True)
            count += 1
        return count

    async def awarm(self, items: Iterable[tuple[tuple[str, ...], str]]) -> int:
        count = 0
        for namespace, key in items:
            await self._aget(GetOp(tuple(namespace), key, False), refresh=True)
            count += 1
        return count

    def __getattr__(self, name: str) -> Any:
        if name in _STORE_PASSTHROUGH:
            return getattr(self.inner, name)
        raise AttributeError(
            f"CachedStore has no {name!r}: call it on .inner if it does not write "
            "(a write through .inner is not seen by the cache)"
        )


# Attributes of our stores that neither write items nor depend on the cache.
_STORE_PASSTHROUGH = frozenset(
    {"setup", "close", "schema", "tenant_id", "config", "codec", "index_config", "embeddings"}
)


# -- chat histories -----------------------------------------------------------------------

_COUNT = struct.Struct(">H")


def _approx_size(messages: Sequence[BaseMessage]) -> int:
    """Bytes a history holds in memory, roughly (its text and a per-message overhead)."""
    size = 64
    for message in messages:
        content = message.content
        size += 256 + (len(content) if isinstance(content, str) else 64 * len(content))
        size += 128 * len(getattr(message, "tool_calls", None) or ())
    return size


class _HistoryFormat:
    """A history in Redis: the versions it was read at, then its messages serialised as the
    history stores them, in one codec frame bound to the tenant and conversation."""

    __slots__ = ("array_header", "build", "codec", "ctx", "messages")

    def __init__(self, ops: HistoryOps, session_id: str) -> None:
        # Imported here: memory imports much that a checkpointer cache does not need.
        from haive_langgraph.memory._history_codec import _array_header, build_message

        self.array_header = _array_header
        self.build = build_message
        self.messages = ops.messages
        self.codec = ops.codec
        self.ctx = RowContext(ops.tenant_id, session_id, Kind.MESSAGE, "cache:history")

    @staticmethod
    def copy(entry: tuple[Any, list[BaseMessage]]) -> tuple[Any, list[BaseMessage]]:
        return entry[0], list(entry[1])

    def dumps(self, entry: tuple[tuple[int, ...], list[BaseMessage]]) -> bytes:
        token, messages = entry
        head = _COUNT.pack(len(token)) + struct.pack(f">{len(token)}q", *token)
        items = [self.messages.item(m, str(m.id), None, "cached message") for m in messages]
        return self.codec.encode(head + self.array_header(len(items)) + b"".join(items), self.ctx)

    def loads(self, data: bytes) -> tuple[tuple[int, ...], list[BaseMessage]]:
        body = self.codec.decode(data, self.ctx)
        (n,) = _COUNT.unpack_from(body)
        token = struct.unpack_from(f">{n}q", body, _COUNT.size)
        items = self.messages.serde.loads_typed(("msgpack", body[_COUNT.size + 8 * n :]))
        build = self.build
        return tuple(token), [build(item[0]) for item in items]


def _history_read(
    ops: HistoryOps, session_id: str, known: tuple[int, ...] | None
) -> DbOp[tuple[tuple[int, ...] | None, list[BaseMessage] | None]]:
    """The conversation's version; its messages too unless the version is ``known``.

    Both statements run on one connection, version first: the messages are
    at least as new as the version they are cached under, and a version is
    never current again once a write replaced it, so an entry served when
    its version is current holds exactly the current messages.
    """
    token = yield from ops.version(session_id)
    if token is None or token == known:
        return token, None
    # Not `live`: expiry is checked with the version on every read, so the
    # cached messages must not depend on the time they were read at.
    messages = yield from ops.read_messages(session_id, live=False)
    return token, messages


class _CachedHistoryBase(BaseChatMessageHistory):
    """What the sync and async cached histories share."""

    def __init__(self, inner: Any, layer: CacheLayer, *, refresh_on_write: bool = True) -> None:
        self.inner = inner
        self.layer = layer
        self.refresh_on_write = refresh_on_write
        ops: HistoryOps = inner._ops
        self._ops = ops
        layer.ensure_secret(ops.codec)
        self._session = str(inner.session_id)
        self._group = "ch:" + json.dumps([ops.schema, ops.tenant_id, self._session])
        self._fmt = _HistoryFormat(ops, self._session)

    @property
    def session_id(self) -> str:
        return self._session

    @property
    def tenant_id(self) -> str:
        return self._ops.tenant_id

    @property
    def schema(self) -> str:
        return self._ops.schema

    def _call(self, known: tuple[int, ...] | None) -> Call[Any]:
        from haive_langgraph.memory._history_ops import Call

        ops, sid = self._ops, self._session
        return Call(
            lambda: _history_read(ops, sid, known),
            read=True,
            subject=ops.describe("session", sid),
        )

    @staticmethod
    def _messages(entry: Any) -> list[BaseMessage]:
        return [] if entry is None else list(entry[1])


class CachedChatHistory(_CachedHistoryBase):
    """A ``PostgresChatMessageHistory`` whose reads are cached, never stale.

    Build it with :meth:`CacheLayer.wrap_history`. A conversation's messages
    are written by histories, ``ConversationStore``, ``SessionManager``, the
    tracker and erasure, most of them not through this object; so every read
    asks PostgreSQL for the conversation's version (one round trip, a
    one-row lookup; a database trigger gives the conversation a new version
    in every transaction that changes its messages or those of a branch
    source it shares) and serves the cached messages only when it is the one
    they were read at. A hit saves transferring, decrypting and decoding the
    messages; it never depends on an invalidation message arriving.

    Writes through this object (``add_messages``, ``clear``, ``messages =``)
    pass through, drop the entry here and in every process, and read the new
    messages back (write-through) so the next read is a hit. ``last`` and
    ``page`` pass through uncached.

    The messages returned are shared with the cache (the list is new):
    treat them as read-only.

    Args:
        inner: The history.
        layer: The cache levels.
        refresh_on_write: Read the messages back after each write.
    """

    inner: PostgresChatMessageHistory

    def __init__(
        self, inner: PostgresChatMessageHistory, layer: CacheLayer, *, refresh_on_write: bool = True
    ) -> None:
        super().__init__(inner, layer, refresh_on_write=refresh_on_write)

    def _read(self, refresh: bool = False) -> list[BaseMessage]:
        inner = self.inner
        entry = self.layer.read_versioned(
            self._group, lambda known: inner._run(self._call(known)), self._fmt, refresh=refresh
        )
        return self._messages(entry)

    def _written(self) -> None:
        self.layer.drop([self._group])
        if self.refresh_on_write:
            try:
                self._read(refresh=True)
            except Exception:  # the write succeeded; a failed read-back only costs a miss
                log.debug("read-back after a history write failed", exc_info=True)

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first (cached, checked on every read)."""
        return self._read()

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        try:
            self.inner.messages = value
        finally:
            self._written()

    def get_messages(self) -> list[BaseMessage]:
        return self._read()

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        try:
            self.inner.add_messages(messages)
        finally:
            self._written()

    def clear(self) -> None:
        try:
            self.inner.clear()
        finally:
            self._written()

    def last(self, n: int) -> list[BaseMessage]:
        return self.inner.last(n)

    def page(
        self, limit: int = 100, cursor: str | None = None, *, newest_first: bool = False
    ) -> MessagePage:
        return self.inner.page(limit, cursor, newest_first=newest_first)

    def warm(self) -> int:
        """Load the messages into the cache (replacing what is cached); returns how many."""
        return len(self._read(refresh=True))

    def close(self) -> None:
        self.inner.close()

    async def aget_messages(self) -> list[BaseMessage]:
        return await asyncio.to_thread(self.get_messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await asyncio.to_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)


class AsyncCachedChatHistory(_CachedHistoryBase):
    """The asyncio twin of :class:`CachedChatHistory`, over an
    ``AsyncPostgresChatMessageHistory`` (its sync methods work from other
    threads, as the wrapped history's do)."""

    inner: AsyncPostgresChatMessageHistory

    def __init__(
        self,
        inner: AsyncPostgresChatMessageHistory,
        layer: CacheLayer,
        *,
        refresh_on_write: bool = True,
    ) -> None:
        super().__init__(inner, layer, refresh_on_write=refresh_on_write)

    async def _aread(self, refresh: bool = False) -> list[BaseMessage]:
        inner = self.inner

        async def load(known: tuple[int, ...] | None) -> Any:
            return await inner._arun(self._call(known))

        entry = await self.layer.aread_versioned(self._group, load, self._fmt, refresh=refresh)
        return self._messages(entry)

    async def _awritten(self) -> None:
        await self.layer.adrop([self._group])
        if self.refresh_on_write:
            try:
                await self._aread(refresh=True)
            except Exception:
                log.debug("read-back after a history write failed", exc_info=True)

    async def aget_messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first (cached, checked on every read)."""
        return await self._aread()

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        try:
            await self.inner.aadd_messages(messages)
        finally:
            await self._awritten()

    async def aclear(self) -> None:
        try:
            await self.inner.aclear()
        finally:
            await self._awritten()

    async def areplace(self, messages: Sequence[BaseMessage]) -> None:
        try:
            await self.inner.areplace(messages)
        finally:
            await self._awritten()

    async def alast(self, n: int) -> list[BaseMessage]:
        return await self.inner.alast(n)

    async def apage(
        self, limit: int = 100, cursor: str | None = None, *, newest_first: bool = False
    ) -> MessagePage:
        return await self.inner.apage(limit, cursor, newest_first=newest_first)

    async def awarm(self) -> int:
        """Load the messages into the cache (replacing what is cached); returns how many."""
        return len(await self._aread(refresh=True))

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        return self.inner._sync(self.aget_messages(), "aget_messages")

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        self.inner._sync(self.areplace(value), "areplace")

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.inner._sync(self.aadd_messages(messages), "aadd_messages")

    def clear(self) -> None:
        self.inner._sync(self.aclear(), "aclear")


class CachedHistoryFactory:
    """``(session_id, user_id=None) -> cached history``, for ``RunnableWithMessageHistory``.

    Build it with :meth:`CacheLayer.wrap_history_factory`; ``setup``,
    ``asetup``, ``close`` and ``aclose`` are the wrapped factory's.
    """

    def __init__(self, factory: Callable[..., Any], layer: CacheLayer) -> None:
        self.factory = factory
        self.layer = layer

    def __call__(
        self, session_id: str, user_id: str | None = None
    ) -> CachedChatHistory | AsyncCachedChatHistory:
        history = self.factory(session_id) if user_id is None else self.factory(session_id, user_id)
        return self.layer.wrap_history(history)

    def __getattr__(self, name: str) -> Any:
        if name in ("setup", "asetup", "close", "aclose"):
            return getattr(self.factory, name)
        raise AttributeError(f"CachedHistoryFactory has no {name!r}")
