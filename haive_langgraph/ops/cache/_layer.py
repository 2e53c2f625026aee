"""The cache layer: levels in order in front of a source, reads and invalidation."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from haive_langgraph.errors import ConfigurationError, ValueTooLargeError
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
    log,
    secret_from_codec,
)
from haive_langgraph.ops.cache._store import CachedStore

T = TypeVar("T")

# A read is written once, as a generator that yields requests and receives
# their results (or gets their exception thrown in, so its own ``except``
# around a Redis call catches it and a loader's exception passes through);
# ``CacheLayer._run`` performs them with the sync Redis client and loader,
# ``CacheLayer._arun`` with the async ones (as ``haive_langgraph.db`` does
# for SQL steps).


@dataclass(frozen=True, slots=True)
class _Load:
    """Call the loader with ``args``; receives what it returns."""

    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class _RedisRead:
    """``RedisCache.read``; receives ``(version, epoch, value or None)``."""

    group: str
    sub: str


@dataclass(frozen=True, slots=True)
class _RedisWrite:
    """``RedisCache.write``; receives whether the entry was stored."""

    group: str
    sub: str
    ver: str
    epoch: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _RedisCurrent:
    """``RedisCache.current``; receives the group's ``(version, epoch)``."""

    group: str


_Request = _Load | _RedisRead | _RedisWrite | _RedisCurrent
"""What a read yields: one of the requests above."""

_Op = Generator[_Request, Any, T]

_LOAD = _Load()


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
        shared, hit = self._memory_first(group, sub, fmt, refresh)
        if hit is not None:
            return hit[0]
        return self._run(self._read(group, sub, fmt, refresh, shared), load)

    async def aread(
        self,
        group: str,
        sub: str,
        load: Callable[[], Awaitable[V]],
        fmt: _Format[V],
        *,
        refresh: bool = False,
    ) -> V:
        shared, hit = self._memory_first(group, sub, fmt, refresh)
        if hit is not None:
            return hit[0]
        return await self._arun(self._read(group, sub, fmt, refresh, shared), load)

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
            value = self._from_memory(group, sub, fmt)
            if value is not _MISSING:
                return shared, (fmt.copy(value),)
        return shared, None

    def _read(self, group: str, sub: str, fmt: _Format[V], refresh: bool, shared: bool) -> _Op[V]:
        """The rest of :meth:`read` after a memory miss, as a sans-I/O generator (see
        :data:`_Request`)."""
        # Taken before the Redis read: a fill racing an invalidation is refused.
        tokens = self._tokens(group)
        seen: tuple[str, str] | None = None
        if self.redis is not None and shared:
            try:
                ver, epoch, data = yield _RedisRead(group, sub)
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
        self._count_miss(refresh)
        value = yield _LOAD
        try:
            data = fmt.dumps(value)
        except ValueTooLargeError:
            # Each stored value is within the limit, their sum (a whole
            # checkpoint, one cache entry) may not be: served, not cached.
            loaded: V = value
            return loaded
        if shared or self.redis is None:
            self._fill_memory(group, sub, value, len(data), tokens)
        if self.redis is not None and seen is not None:
            try:
                if (yield _RedisWrite(group, sub, seen[0], seen[1], data)):
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
    ) -> _Op[tuple[str | None, Any, tuple[str, str] | None]]:
        """(level, cached (token, value), Redis (version, epoch) seen) before a read."""
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
            ver, epoch, data = yield _RedisRead(group, "")
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
        return self._run(self._read_versioned(group, fmt, refresh), load)

    async def aread_versioned(
        self,
        group: str,
        load: Callable[[Any], Awaitable[tuple[Any, Any]]],
        fmt: _Format[Any],
        *,
        refresh: bool = False,
    ) -> Any:
        return await self._arun(self._read_versioned(group, fmt, refresh), load)

    def _read_versioned(self, group: str, fmt: _Format[Any], refresh: bool) -> _Op[Any]:
        """:meth:`read_versioned` as a sans-I/O generator (see :data:`_Request`)."""
        tokens = self._tokens(group)
        level, cached, seen = yield from self._candidate(group, fmt, refresh)
        loaded = yield _Load((cached[0] if cached is not None else None,))
        entry, hit = self._settle(group, level, cached, loaded, tokens, refresh)
        redis = self.redis
        if entry is not None and not hit and redis is not None and redis._connected:
            try:
                if seen is None:
                    seen = yield _RedisCurrent(group)
                data = self._redis_entry(entry, fmt)
                if data is not None and (yield _RedisWrite(group, "", seen[0], seen[1], data)):
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

    # -- the two drivers ----------------------------------------------------------------

    def _run(self, op: _Op[T], load: Callable[..., Any]) -> T:
        """Drive ``op`` to completion with the sync Redis client and ``load``."""
        try:
            request = next(op)
            while True:
                try:
                    result = self._perform(request, load)
                except BaseException as exc:
                    request = op.throw(exc)
                else:
                    request = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _perform(self, request: _Request, load: Callable[..., Any]) -> Any:
        if isinstance(request, _Load):
            return load(*request.args)
        redis = self.redis
        assert redis is not None  # reads ask Redis only when there is one
        if isinstance(request, _RedisRead):
            return redis.read(request.group, request.sub)
        if isinstance(request, _RedisWrite):
            return redis.write(request.group, request.sub, request.ver, request.epoch, request.data)
        return redis.current(request.group)

    async def _arun(self, op: _Op[T], load: Callable[..., Awaitable[Any]]) -> T:
        """Drive ``op`` to completion with the async Redis client and ``load``."""
        try:
            request = next(op)
            while True:
                try:
                    result = await self._aperform(request, load)
                except BaseException as exc:
                    request = op.throw(exc)
                else:
                    request = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _aperform(self, request: _Request, load: Callable[..., Awaitable[Any]]) -> Any:
        if isinstance(request, _Load):
            return await load(*request.args)
        redis = self.redis
        assert redis is not None  # reads ask Redis only when there is one
        if isinstance(request, _RedisRead):
            return await redis.aread(request.group, request.sub)
        if isinstance(request, _RedisWrite):
            return await redis.awrite(
                request.group, request.sub, request.ver, request.epoch, request.data
            )
        return await redis.acurrent(request.group)

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
