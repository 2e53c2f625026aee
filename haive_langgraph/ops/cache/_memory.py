"""The process-local level (an LRU bounded by bytes) and the layer's counters."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from haive_langgraph.errors import ConfigurationError

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
        outdated: Authentic Redis entries not served because PostgreSQL no
            longer holds the version they were read at (an entry replaced
            since, or an old one put back).
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
    outdated: int = 0
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
            "outdated": self.outdated,
            "degraded": self.degraded,
            "suspended": self.suspended,
        }


# -- levels -------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("expires", "group", "size", "tenant", "value")

    def __init__(self, value: Any, size: int, expires: float, group: str, tenant: str) -> None:
        self.value = value
        self.size = size
        self.expires = expires
        self.group = group
        self.tenant = tenant


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

    def put(
        self,
        group: str,
        sub: str,
        value: Any,
        size: int,
        token: tuple[int, int],
        tenant: str = "",
    ) -> bool:
        """Store ``value`` (of ``tenant``) if no invalidation happened since ``token`` was
        taken."""
        if size > self.max_bytes:
            return False
        with self._lock:
            if self.token(group) != token:
                return False
            key = (group, sub)
            self._remove(key)
            expires = time.monotonic() + self.ttl if self.ttl else 0.0
            self._entries[key] = _Entry(value, size, expires, group, tenant)
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

    def drop_tenant(self, tenant: str) -> None:
        """Drop every entry of ``tenant`` (a crypto-shred); loads in flight store nothing."""
        with self._lock:
            self._epoch += 1
            self._gen.clear()
            for key in [k for k, e in self._entries.items() if e.tenant == tenant]:
                self._remove(key)

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


def forget_tenant_here(
    tenant: str, memories: Iterable[InMemoryCache], keyrings: Iterable[Any]
) -> None:
    """Drop a shredded tenant from this process's memory levels and make its keyrings
    ask the key store again, so that none of them loads the tenant back meanwhile (a
    keyring that fails is logged, not raised: its problem is not the shred's)."""
    for memory in memories:
        memory.drop_tenant(tenant)
    for ring in list(keyrings):
        try:
            ring.invalidate(tenant)
        except Exception:
            log.debug("a keyring could not be invalidated", exc_info=True)
