"""The shared, authenticated Redis level, and the channel that keeps every process's memory
honest.

What Redis holds is never trusted to be current: an entry carries the
version PostgreSQL gave its thread (or item) when it was read, and is served
only while PostgreSQL still holds that version (``CacheLayer``). Redis's own
counters (a version per group, the epoch, a version per tenant) only make
outdated entries cheap misses and keep a slow reader from overwriting a
newer entry; whoever writes to Redis can change them, which denies the
cache, nothing more.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import time
from typing import Any

from haive_langgraph.errors import ConfigurationError, HaiveError
from haive_langgraph.ops.cache._channel import _Channel
from haive_langgraph.ops.cache._memory import _MISSING as _MISSING
from haive_langgraph.ops.cache._memory import CacheMetrics, InMemoryCache, log

__all__ = ["CACHE_SECRET_ENV", "CacheMetrics", "InMemoryCache", "RedisCache", "secret_from_codec"]

# Lua: store a value only if the group's version, the global epoch and the
# tenant's version are still the ones the reader saw before loading.
_PUT_IF_CURRENT = """
local v = redis.call('GET', KEYS[1]) or '0'
local e = redis.call('GET', KEYS[2]) or '0'
local t = redis.call('GET', KEYS[3]) or '0'
if v == ARGV[1] and e == ARGV[2] and t == ARGV[3] then
    redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
    return 1
end
return 0
"""

Seen = tuple[str, str, str]
"""The Redis counters a reader saw: the group's version, the epoch, the tenant's version."""


CACHE_SECRET_ENV = "HAIVE_CACHE_SECRET"
_MAC_INFO = b"haive-langgraph cache entry mac v1"
_KID_BYTES = 8
_MAC_BYTES = 32
# A forged or garbled entry is logged at most this often (a flood of them
# is one attack, not thousands of warnings).
_REJECT_WARN_EVERY = 60.0
# What a counter and a database version look like when we wrote them.
_COUNTER = re.compile(rb"[0-9]{1,20}")
_TAG = re.compile(rb"[0-9a-f]{0,64}")
_TAG_MAX = 65


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


class RedisCache(_Channel):
    """Shared level in Redis, and the channel that keeps every process's memory honest.

    Redis is a weaker trust boundary than the database: every entry carries
    an HMAC-SHA256 over its Redis key (which names the database, schema,
    tenant and thread or item), the counters it was written under, the
    PostgreSQL version it was read at, and its payload, checked before
    anything is deserialised. An entry that fails the check (forged,
    garbled, copied from another key, or written under another secret) is a
    miss, logged as a warning and counted in ``metrics().rejected``; it is
    never loaded. An authentic entry is served only while PostgreSQL still
    holds the version it was read at (see :class:`CacheLayer`), so an old
    entry put back is a miss too (``metrics().outdated``).

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
        self.socket_timeout = socket_timeout
        client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        super().__init__(redis, client, prefix, lease, member_grace, ttl)
        self._put_if = self.client.register_script(_PUT_IF_CURRENT)

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

    def reject_value(self, group: str, sub: str, why: str) -> None:
        """Count (and warn, at most every few minutes) an entry that was not served: it
        failed authentication or did not decode."""
        self._reject(self._k("val", group, sub), why)

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

    # -- values -------------------------------------------------------------------------

    def _read_keys(self, group: str, sub: str, tenant: str) -> tuple[str, list[str]]:
        key = self._k("val", group, sub)
        return key, [self._k("ver", group), self._epoch_key, self._tenant_key(tenant), key]

    def read(self, group: str, sub: str, tenant: str) -> tuple[Seen | None, str, bytes | None]:
        """``(counters seen, database version, value)`` of an entry.

        The counters are ``None`` when they are not ones we wrote; the value
        is ``None`` if absent, written under other counters, or not authentic
        (see the class docstring). The database version is the one the value
        was read at (``""`` when unchecked).
        """
        key, keys = self._read_keys(group, sub, tenant)
        return self._unpack(key, *self.client.mget(keys))

    async def aread(
        self, group: str, sub: str, tenant: str
    ) -> tuple[Seen | None, str, bytes | None]:
        key, keys = self._read_keys(group, sub, tenant)
        return self._unpack(key, *await self._aclient().mget(keys))

    def _unpack(
        self, key: str, ver: Any, epoch: Any, tver: Any, raw: Any
    ) -> tuple[Seen | None, str, bytes | None]:
        counters = []
        for value in (ver, epoch, tver):
            if value is None:
                counters.append("0")
            elif isinstance(value, bytes) and _COUNTER.fullmatch(value):
                counters.append(value.decode("ascii"))
            else:
                # Counters we did not write: nothing under them can be trusted.
                self._reject(key, "damaged version counter")
                return None, "", None
        seen: Seen = (counters[0], counters[1], counters[2])
        if raw is None:
            return seen, "", None
        raw = bytes(raw)
        stamp = ":".join(seen).encode() + b":"
        if not raw.startswith(stamp):
            return seen, "", None  # written under other counters: outdated, an ordinary miss
        end = raw.find(b":", len(stamp), len(stamp) + _TAG_MAX)
        tag = raw[len(stamp) : end] if end >= 0 else b"-"
        if not _TAG.fullmatch(tag):
            self._reject(key, "malformed")
            return seen, "", None
        head = raw[: end + 1]
        body = raw[len(head) :]
        if len(body) < _KID_BYTES + _MAC_BYTES:
            self._reject(key, "too short to be authentic")
            return seen, "", None
        kid, mac, data = (
            body[:_KID_BYTES],
            body[_KID_BYTES : _KID_BYTES + _MAC_BYTES],
            body[_KID_BYTES + _MAC_BYTES :],
        )
        if self._mac is None or not hmac.compare_digest(kid, self._kid):
            self._reject(key, "written under another secret")
            return seen, "", None
        if not hmac.compare_digest(mac, self._sign(key, head, data)):
            self._reject(key, "authentication failed")
            return seen, "", None
        return seen, tag.decode("ascii"), data

    def _put_args(
        self, group: str, sub: str, tenant: str, seen: Seen, tag: str, data: bytes
    ) -> dict[str, Any]:
        ttl = int((self.ttl or 86400) * 1000)
        key, keys = self._read_keys(group, sub, tenant)
        head = (":".join(seen) + f":{tag}:").encode()
        return {
            "keys": keys,
            "args": [*seen, head + self._kid + self._sign(key, head, data) + data, ttl],
        }

    def write(self, group: str, sub: str, tenant: str, seen: Seen, tag: str, data: bytes) -> bool:
        """Store ``data`` read at database version ``tag`` if the counters are still ``seen``."""
        return bool(self._put_if(**self._put_args(group, sub, tenant, seen, tag, data)))

    async def awrite(
        self, group: str, sub: str, tenant: str, seen: Seen, tag: str, data: bytes
    ) -> bool:
        script = self._aclient().register_script(_PUT_IF_CURRENT)
        return bool(await script(**self._put_args(group, sub, tenant, seen, tag, data)))

    def current(self, group: str, tenant: str) -> Seen | None:
        """The counters now: what a fill without a prior read is made under."""
        seen, _, _ = self.read(group, "\x00", tenant)
        return seen

    async def acurrent(self, group: str, tenant: str) -> Seen | None:
        seen, _, _ = await self.aread(group, "\x00", tenant)
        return seen

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease * 2)
            self._thread = None
        try:
            self.client.zrem(self._members_key, self.me)
        except Exception:  # leaving is best effort
            pass
        self.client.close()

    async def aclose(self) -> None:
        for client in self._aclients.values():
            await client.aclose()
        self._aclients.clear()
        await asyncio.to_thread(self.close)
