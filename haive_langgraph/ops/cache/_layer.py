"""The cache layer: levels in order in front of a source, reads and invalidation."""

from __future__ import annotations

import dataclasses
import hmac
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops.cache._checkpointer import CachedCheckpointer
from haive_langgraph.ops.cache._format import V, _Format
from haive_langgraph.ops.cache._history import (
    AsyncCachedChatHistory,
    CachedChatHistory,
    CachedHistoryFactory,
    _approx_size,
)
from haive_langgraph.ops.cache._levels import (
    _MISSING,
    CACHE_SECRET_ENV,
    CacheMetrics,
    InMemoryCache,
    RedisCache,
    Seen,
    secret_from_codec,
)
from haive_langgraph.ops.cache._memory import forget_tenant_here, log
from haive_langgraph.ops.cache._origin import _Origin
from haive_langgraph.ops.cache._requests import (
    _LOAD,
    _Check,
    _Load,
    _Op,
    _RedisCurrent,
    _RedisRead,
    _RedisWrite,
    adrive,
    drive,
)
from haive_langgraph.ops.cache._store import CachedStore


class CacheLayer:
    """Cache levels in order, in front of a source (the wrapped object).

    What each level promises (see ``docs/operations.md``, "Cache"):

    * **Redis** entries are served only after PostgreSQL confirmed, in the
      same read, that the thread or item still has the version the entry
      was read at (one round trip, a one-row lookup): an entry that is old,
      replayed, forged, or of another key, tenant or database is a miss.
    * **Memory** entries are served without a round trip: they were loaded
      from PostgreSQL by this process, or taken from Redis after that check,
      and every write through a wrapper drops them in every process before
      it returns (the invalidation channel, see :class:`RedisCache`).

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
        self._keyrings: weakref.WeakSet[Any] = weakref.WeakSet()
        if self.redis is not None:
            self.redis.attach(self.memory, self._metrics)

    # -- public -------------------------------------------------------------------------

    def metrics(self) -> CacheMetrics:
        """A snapshot of the counters."""
        return dataclasses.replace(self._metrics, hits=dict(self._metrics.hits))

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
                one from; or a :class:`RedisCache` and a checkpointer that is
                not one of ours (there is no database to check its entries
                against).
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
        from haive_langgraph.memory import (
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

    def adopt(self, origin: _Origin) -> None:
        """Called by the wrappers: check ``origin`` can be cached here, and listen to its
        keyring so that a crypto-shred drops the tenant from every level at once."""
        if self.redis is not None and not origin.checkable:
            raise ConfigurationError(
                f"a cache layer with a RedisCache cannot wrap {type(origin.inner).__name__}: "
                "Redis entries are served only after the database confirms they are current, "
                "and this object has no haive-langgraph database; use haive-langgraph's "
                "classes, or a layer with an InMemoryCache only"
            )
        ring = origin.keyring
        if ring is None or ring in self._keyrings:
            return
        self._keyrings.add(ring)
        ring.add_forget_listener(self.forget_tenant)
        if self.redis is not None:
            self.redis.add_keyring(ring)

    def forget_tenant(self, tenant: str) -> None:
        """Drop everything cached for ``tenant`` from every level, here and in every process
        sharing the Redis server, before returning (called when its keys are destroyed)."""
        # Other keyrings of this process (other wrapped objects) learn it now too.
        forget_tenant_here(tenant, self.memory, self._keyrings)
        if self.redis is not None:
            self.redis.invalidate([], tenants=[tenant])

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    # -- reads --------------------------------------------------------------------------

    def _shared_ok(self) -> bool:
        return self.redis is None or self.redis.usable()

    def _from_memory(self, group: str, sub: str) -> Any:
        for memory in self.memory:
            value = memory.get(group, sub)
            if value is not _MISSING:
                self._metrics.hits[memory.name] += 1
                return value
        return _MISSING

    def _tokens(self, group: str) -> list[tuple[int, int]]:
        return [m.token(group) for m in self.memory]

    def _fill_memory(
        self,
        group: str,
        sub: str,
        value: Any,
        size: int,
        tokens: list[tuple[int, int]],
        tenant: str,
    ) -> None:
        for memory, token in zip(self.memory, tokens, strict=True):
            if memory.put(group, sub, value, size, token, tenant):
                self._metrics.fills += 1
            else:
                self._metrics.stale_fills_refused += 1

    def read(
        self,
        group: str,
        sub: str,
        load: Callable[[], V],
        fmt: _Format[V],
        origin: _Origin,
        *,
        refresh: bool = False,
        version: str | None = None,
    ) -> V:
        """A cached value, else ``load()`` (stored in every level on the way back).

        ``refresh`` loads without looking (a read-back after a write);
        ``version`` is the group's version in PostgreSQL when the caller
        just set it (saves the round trip that asks for it).
        """
        if origin.shredded():
            self._count_miss(refresh)
            return load()
        shared, hit = self._memory_first(group, sub, fmt, refresh)
        if hit is not None:
            return hit[0]
        op = self._read(group, sub, fmt, origin, refresh, shared, version)
        return drive(op, self.redis, load)

    async def aread(
        self,
        group: str,
        sub: str,
        load: Callable[[], Awaitable[V]],
        fmt: _Format[V],
        origin: _Origin,
        *,
        refresh: bool = False,
        version: str | None = None,
    ) -> V:
        if origin.shredded():
            self._count_miss(refresh)
            return await load()
        shared, hit = self._memory_first(group, sub, fmt, refresh)
        if hit is not None:
            return hit[0]
        op = self._read(group, sub, fmt, origin, refresh, shared, version)
        return await adrive(op, self.redis, load)

    def _memory_first(
        self, group: str, sub: str, fmt: _Format[V], refresh: bool
    ) -> tuple[bool, tuple[V] | None]:
        """The first step of a read: (whether cached entries may be served, ``(a copy
        of the value,)`` if memory has it).

        Kept out of :meth:`_read` because a memory hit is the hot path: running
        a generator for it made a cached ``get_tuple`` ~12% slower (7.4 vs 6.6 µs).
        """
        shared = self._shared_ok()
        if shared and not refresh:
            value = self._from_memory(group, sub)
            if value is not _MISSING:
                return shared, (fmt.copy(value),)
        return shared, None

    def _read(
        self,
        group: str,
        sub: str,
        fmt: _Format[V],
        origin: _Origin,
        refresh: bool,
        shared: bool,
        version: str | None,
    ) -> _Op[V]:
        """The rest of :meth:`read` after a memory miss, as a sans-I/O generator (see
        ``_requests``)."""
        # Taken before the Redis read: a fill racing an invalidation is refused.
        tokens = self._tokens(group)
        tenant = origin.tenant
        redis = self.redis
        seen: Seen | None = None
        if redis is not None and shared:
            try:
                seen, tag, data = yield _RedisRead(group, sub, tenant)
            except Exception as exc:  # whatever Redis does, read on
                redis.note_error(exc, "read")
                seen, data = None, None
            if data is not None and not refresh and redis.usable():
                # Authentic is not enough: it must still be what PostgreSQL holds.
                if version is None:
                    version = yield _Check(origin, group)
                if version is not None and hmac.compare_digest(tag, version):
                    value = self._decode(group, sub, data, fmt)
                    if value is not _MISSING:
                        self._metrics.hits[redis.name] += 1
                        self._fill_memory(group, sub, value, len(data), tokens, tenant)
                        return fmt.copy(value)
                elif version is not None:
                    self._metrics.outdated += 1
            if seen is not None and version is None:
                # Asked before loading: what is loaded is at least that new.
                version = yield _Check(origin, group)
        self._count_miss(refresh)
        value = yield _LOAD
        try:
            data = fmt.dumps(value)
        except Exception:
            # Each stored value is within the limit, their sum (a whole
            # checkpoint, one cache entry) may not be (ValueTooLargeError);
            # or the cache's serde cannot encode it: served, not cached.
            loaded: V = value
            return loaded
        if shared or redis is None:
            self._fill_memory(group, sub, value, len(data), tokens, tenant)
        if redis is not None and seen is not None and version is not None:
            try:
                if (yield _RedisWrite(group, sub, tenant, seen, version, data)):
                    self._metrics.fills += 1
                else:
                    self._metrics.stale_fills_refused += 1
            except Exception as exc:
                redis.note_error(exc, "write")
        return fmt.copy(value)

    # -- versioned reads (chat histories) ----------------------------------------------
    #
    # An entry holds a value and the source version it was read at; every read
    # asks the source for the current version (one cheap round trip, in the
    # same operation that loads the value when they differ) and serves the
    # entry only when they are equal. Correctness needs no invalidation
    # message, so memory keeps serving when Redis is down or peers lapsed.

    def _candidate(
        self, group: str, fmt: _Format[Any], tenant: str, refresh: bool
    ) -> _Op[tuple[str | None, Any, Seen | None]]:
        """(level, cached (token, value), Redis counters seen) before a read."""
        if refresh:
            return None, None, None
        for memory in self.memory:
            value = memory.get(group, "")
            if value is not _MISSING:
                return memory.name, value, None
        redis = self.redis
        if redis is None or not redis.connected:
            return None, None, None
        try:
            seen, _, data = yield _RedisRead(group, "", tenant)
        except Exception as exc:
            redis.note_error(exc, "read")
            return None, None, None
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
        tenant: str,
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
                self._fill_memory(group, "", cached, _approx_size(cached[1]), tokens, tenant)
            return cached, True
        self._count_miss(refresh)
        entry = (token, value)
        self._fill_memory(group, "", entry, _approx_size(value), tokens, tenant)
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
        origin: _Origin,
        *,
        refresh: bool = False,
    ) -> Any:
        """A value checked against the source's version (see above).

        ``load(known_token)`` returns ``(token, None)`` when the source's
        version equals ``known_token``, ``(token, value)`` read at or after
        ``token`` otherwise, ``(None, None)`` when there is nothing. Returns
        the ``(token, value)`` entry, or ``None``.
        """
        if origin.shredded():
            refresh = True  # nothing cached is looked at, nothing loaded is kept
        return drive(self._read_versioned(group, fmt, origin, refresh), self.redis, load)

    async def aread_versioned(
        self,
        group: str,
        load: Callable[[Any], Awaitable[tuple[Any, Any]]],
        fmt: _Format[Any],
        origin: _Origin,
        *,
        refresh: bool = False,
    ) -> Any:
        if origin.shredded():
            refresh = True
        return await adrive(self._read_versioned(group, fmt, origin, refresh), self.redis, load)

    def _read_versioned(
        self, group: str, fmt: _Format[Any], origin: _Origin, refresh: bool
    ) -> _Op[Any]:
        """:meth:`read_versioned` as a sans-I/O generator (see ``_requests``)."""
        tenant = origin.tenant
        tokens = self._tokens(group)
        level, cached, seen = yield from self._candidate(group, fmt, tenant, refresh)
        loaded = yield _Load((cached[0] if cached is not None else None,))
        entry, hit = self._settle(group, level, cached, loaded, tokens, refresh, tenant)
        redis = self.redis
        if entry is not None and not hit and redis is not None and redis.connected:
            try:
                if seen is None:
                    seen = yield _RedisCurrent(group, tenant)
                data = self._redis_entry(entry, fmt)
                if (
                    seen is not None
                    and data is not None
                    and (yield _RedisWrite(group, "", tenant, seen, "", data))
                ):
                    self._metrics.fills += 1
            except Exception as exc:
                redis.note_error(exc, "write")
        return fmt.copy(entry) if entry is not None else None

    def drop(self, groups: Sequence[str]) -> None:
        """Drop versioned entries here and tell the other processes (no waiting)."""
        self._drop_local(groups)
        redis = self.redis
        if redis is not None and redis.connected:
            try:
                redis.notify(groups)
            except Exception as exc:
                redis.note_error(exc, "invalidate")

    async def adrop(self, groups: Sequence[str]) -> None:
        self._drop_local(groups)
        redis = self.redis
        if redis is not None and redis.connected:
            try:
                await redis.anotify(groups)
            except Exception as exc:
                redis.note_error(exc, "invalidate")

    def _decode(self, group: str, sub: str, data: bytes, fmt: _Format[Any]) -> Any:
        """An authenticated entry's value; one that does not decode is a miss."""
        assert self.redis is not None
        try:
            return fmt.loads(data)
        except Exception as exc:  # e.g. a key since rotated away, a serde change
            self.redis.reject_value(group, sub, f"{type(exc).__name__}")
            return _MISSING

    # -- writes -------------------------------------------------------------------------

    def invalidate(self, groups: Sequence[str] | None) -> None:
        """Drop ``groups`` (``None``: everything) here and in every process; returns when done.

        Entries in Redis are made misses by Redis's counters only: a write
        through a wrapper also gives its groups new versions in PostgreSQL
        (:meth:`written`), which no Redis writer can undo.
        """
        self._drop_local(groups)
        if self.redis is not None:
            self.redis.invalidate(groups)

    async def ainvalidate(self, groups: Sequence[str] | None) -> None:
        self._drop_local(groups)
        if self.redis is not None:
            await self.redis.ainvalidate(groups)

    def written(self, origin: _Origin, groups: Sequence[str] | None) -> dict[str, str]:
        """After a write through a wrapper: new versions for ``groups`` in PostgreSQL (with a
        Redis level), then :meth:`invalidate`. Returns the new versions."""
        versions = origin.bump(groups) if self.redis is not None else {}
        self.invalidate(groups)
        return versions

    async def awritten(self, origin: _Origin, groups: Sequence[str] | None) -> dict[str, str]:
        versions = await origin.abump(groups) if self.redis is not None else {}
        await self.ainvalidate(groups)
        return versions

    def _drop_local(self, groups: Sequence[str] | None) -> None:
        for memory in self.memory:
            if groups is None:
                memory.clear()
            else:
                for group in groups:
                    memory.drop_group(group)
        self._metrics.invalidations += 1 if groups is None else len(groups)
