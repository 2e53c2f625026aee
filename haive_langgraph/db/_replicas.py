"""Read replicas: which server serves a read, and reading one's own writes.

A :class:`~haive_langgraph.db.ConnectionSource` given replica DSNs (or
``HAIVE_REPLICA_URLS``) routes each read by the ``route`` it is run with:

* ``"primary"`` (the default): the primary, exactly as without replicas;
* ``"replica"``: any usable replica; the result may lag by up to
  ``max_replica_lag`` seconds (history listing, search, thread listing);
* ``"fresh"``: a replica, but only once it has replayed every commit this
  source made, else the primary (the latest checkpoint right after ``put``).

Read-your-writes works on WAL positions and costs writes nothing: a write
only counts itself. The first fresh read after writes asks the primary for
its WAL flush position (:data:`~haive_langgraph.db._replica_ops.PRIMARY_LSN`), which is at or past the end of
every commit that has returned, and the replica is then asked, for at most ``replica_wait`` seconds,
until ``pg_last_wal_replay_lsn()`` reaches
it (:func:`~haive_langgraph.db._replica_ops.replica_op`). Reading the LSN at each commit
instead would add a round trip to every write, and the checkpointer's
``put`` is a single statement on the hot path; a graph step writes two or
three times for each fresh read, so the lookup is paid where it is rarer.

A replica that cannot be reached is skipped for ``replica_retry_after``
seconds, one behind by more than ``max_replica_lag`` until it catches up;
either is logged as a warning at most once per replica per
``replica_retry_after`` (on the ``haive_langgraph.replicas`` logger), and
the read goes to another replica or to the primary. A read that fails on a
replica for any other reason (a recovery conflict, a table the replica has
not replayed yet) is run again on the primary. Nothing fails because of a
replica.

The checks are sans-I/O operations (:mod:`haive_langgraph.db._replica_ops`),
the choices are made by :class:`ReplicaRouter` and the source's plan
(:mod:`haive_langgraph.db._call_plan`); :class:`ReplicaSet` and
:class:`AsyncReplicaSet` only open, use and close the replicas' sources.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._dsn import describe_dsn, normalize_dsn
from haive_langgraph.errors import ConfigurationError

if TYPE_CHECKING:
    from haive_langgraph.db._async_connections import AsyncConnectionSource
    from haive_langgraph.db._call_plan import CloseReplica, OnReplica, OpenReplica
    from haive_langgraph.db._connections import ConnectionSource

logger = logging.getLogger("haive_langgraph.replicas")

Route = Literal["primary", "replica", "fresh"]
"""Where a read may run when read replicas are configured: ``"primary"``,
``"replica"`` (any usable replica, may lag) or ``"fresh"`` (a replica that has
replayed the source's own writes, else the primary)."""
ROUTES: tuple[str, ...] = ("primary", "replica", "fresh")

# How often a replica in use has its lag measured (one small statement on a
# connection already borrowed), and how long a replica that lagged or did
# not catch up for a fresh read is passed over before it is asked again.
LAG_CHECK_INTERVAL = 1.0


def replica_config(config: PersistenceConfig) -> PersistenceConfig:
    """The primary's settings, with the replica timeouts, for a replica's pool."""
    return config.model_copy(
        update={
            "connect_timeout": config.replica_timeout,
            "pool_timeout": config.replica_timeout,
            "replica_urls": (),
        }
    )


@dataclass(slots=True)
class ReplicaStats:
    """Counters of one source's routed reads (since it was created).

    Attributes:
        replica_reads: Reads a replica served.
        primary_reads: Routed reads that ended on the primary: no usable
            replica, none caught up in time, or the read failed on one.
        behind: Fresh reads a replica had not caught up for in time.
        skipped: Times a replica was found down or lagging and passed over.
        lsn_lookups: Round trips to the primary to learn the LSN fresh
            reads wait for.
    """

    replica_reads: int = 0
    primary_reads: int = 0
    behind: int = 0
    skipped: int = 0
    lsn_lookups: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(eq=False, slots=True)
class Replica:
    """One replica and what we know of it (times are ``time.monotonic()``)."""

    dsn: str
    label: str
    source: Any = None
    state: Literal["new", "up", "down", "lagging"] = "new"
    skip_until: float = 0.0
    fresh_skip_until: float = 0.0
    lag_checked: float = -math.inf
    warned: float = -math.inf


class ReplicaRouter:
    """The replicas' health, the order they are tried in, and the LSN fresh reads wait for.

    No I/O; shared by the sync and async sets. Thread-safe.
    """

    def __init__(self, dsns: Sequence[str], config: PersistenceConfig) -> None:
        if isinstance(dsns, str):
            raise ConfigurationError("replicas must be a list of DSNs, not one string")
        self.replicas: list[Replica] = []
        for dsn in dsns:
            if not isinstance(dsn, str) or not dsn.strip():
                raise ConfigurationError(f"a replica must be a DSN string, got {dsn!r:.80}")
            dsn = normalize_dsn(dsn, where=f"replica {len(self.replicas) + 1}")
            self.replicas.append(Replica(dsn, describe_dsn(dsn)))
        self.config = config
        self.stats = ReplicaStats()
        self._lock = threading.Lock()
        self._next = 0
        self._writes = 0
        self._lsn: str | None = None
        self._lsn_writes = 0

    def __bool__(self) -> bool:
        return bool(self.replicas)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    # -- order and health -----------------------------------------------------

    def candidates(self, *, fresh: bool) -> list[Replica]:
        """Replicas to try for one read, in round-robin order, minus those on hold."""
        now = time.monotonic()
        with self._lock:
            start = self._next
            self._next = (start + 1) % len(self.replicas)
        ordered = self.replicas[start:] + self.replicas[:start]
        return [
            r for r in ordered if r.skip_until <= now and not (fresh and r.fresh_skip_until > now)
        ]

    def lag_bound(self, replica: Replica) -> float | None:
        """The lag bound to check on this read, if a check is due."""
        if time.monotonic() - replica.lag_checked >= LAG_CHECK_INTERVAL:
            return self.config.max_replica_lag
        return None

    def served(self, replica: Replica, lag: float | None) -> None:
        with self._lock:
            self.stats.replica_reads += 1
            if lag is not None:
                replica.lag_checked = time.monotonic()
            previous, replica.state = replica.state, "up"
        if previous in ("down", "lagging"):
            logger.info("read replica %s is in use again", replica.label)

    def lagging(self, replica: Replica, lag: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.stats.skipped += 1
            replica.state = "lagging"
            replica.lag_checked = now
            replica.skip_until = now + LAG_CHECK_INTERVAL
            warn = self._warn_due(replica, now)
        if warn:
            logger.warning(
                "read replica %s is %s behind the primary (max_replica_lag %gs); "
                "its reads go to another replica or the primary until it catches up",
                replica.label,
                "an unknown time" if math.isinf(lag) else f"{lag:.1f}s",
                self.config.max_replica_lag,
            )

    def behind(self, replica: Replica) -> None:
        with self._lock:
            self.stats.behind += 1
            replica.fresh_skip_until = time.monotonic() + LAG_CHECK_INTERVAL

    def down(self, replica: Replica, exc: BaseException, source: Any) -> Any:
        """Put a replica that failed on hold; returns its source to close (or None).

        ``source`` is the one that failed: a replica another caller has
        reopened meanwhile is left alone.
        """
        now = time.monotonic()
        with self._lock:
            if source is not None and replica.source is not source:
                return None
            self.stats.skipped += 1
            replica.state = "down"
            replica.skip_until = now + self.config.replica_retry_after
            stale, replica.source = replica.source, None
            warn = self._warn_due(replica, now)
        if warn:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning(
                "read replica %s is unavailable (%s); its reads go to another replica or "
                "the primary, and it is tried again in %gs",
                replica.label,
                detail,
                self.config.replica_retry_after,
            )
        return stale

    def _warn_due(self, replica: Replica, now: float) -> bool:
        if now - replica.warned >= self.config.replica_retry_after:
            replica.warned = now
            return True
        return False

    # -- read-your-writes ------------------------------------------------------

    def wrote(self) -> None:
        """A write of this source returned (committed or not: assume it did)."""
        with self._lock:
            self._writes += 1

    def fresh_target(self) -> tuple[str | None, int]:
        """``(lsn, 0)`` to wait for, or ``(None, n)``: look the LSN up for the first n writes.

        ``(None, 0)``: this source has written nothing, any replica will do.
        """
        with self._lock:
            if self._writes == 0:
                return None, 0
            if self._lsn_writes == self._writes:
                return self._lsn, 0
            return None, self._writes

    def learned(self, lsn: str, writes: int) -> None:
        """The primary's LSN, read after the first ``writes`` writes returned."""
        with self._lock:
            self.stats.lsn_lookups += 1
            if writes > self._lsn_writes:
                self._lsn, self._lsn_writes = lsn, writes


class ReplicaSet:
    """The replicas of one sync :class:`ConnectionSource`: opens and closes their sources.

    Which replica serves a read, and what becomes of it, is decided by the
    source's plan (:mod:`haive_langgraph.db._call_plan`); this only does the
    I/O it asks for.
    """

    def __init__(
        self,
        dsns: Sequence[str],
        config: PersistenceConfig,
        open_source: Callable[[str, PersistenceConfig], ConnectionSource],
    ) -> None:
        self.router = ReplicaRouter(dsns, config)
        self._config = replica_config(config)
        self._open_source = open_source
        self._opening = {r: threading.Lock() for r in self.router.replicas}

    @property
    def stats(self) -> ReplicaStats:
        return self.router.stats

    def open(self, request: OpenReplica) -> ConnectionSource | None:
        """The replica's source, opened now if needed; None if another caller is opening it.

        Raises:
            ConnectionFailedError: it cannot be reached.
        """
        replica = request.replica
        source = replica.source
        if source is not None:
            return source  # type: ignore[no-any-return]
        lock = self._opening[replica]
        # Another caller is connecting to it: skip it rather than wait.
        if not lock.acquire(blocking=False):
            return None
        try:
            if replica.source is None:
                replica.source = self._open_source(replica.dsn, self._config)
            return replica.source  # type: ignore[no-any-return]
        finally:
            lock.release()

    @staticmethod
    def read(request: OnReplica) -> Any:
        """Run a read on a replica's source."""
        return request.source.call(request.call)

    @staticmethod
    def discard(request: CloseReplica) -> None:
        """Close a failed replica's source in the background.

        A pool still connecting to a dead host can take seconds to close:
        not on the caller's time.
        """
        threading.Thread(target=_quiet_close, args=(request.source,), daemon=True).start()

    def close(self) -> None:
        for replica in self.router.replicas:
            source, replica.source = replica.source, None
            if source is not None:
                _quiet_close(source)


def _quiet_close(source: ConnectionSource) -> None:
    try:
        source.close()
    except Exception as exc:  # pragma: no cover - closing a broken pool
        logger.debug("closing a replica pool failed: %s", exc)


class AsyncReplicaSet:
    """Async twin of :class:`ReplicaSet`."""

    def __init__(
        self,
        dsns: Sequence[str],
        config: PersistenceConfig,
        open_source: Callable[[str, PersistenceConfig], AsyncConnectionSource],
    ) -> None:
        self.router = ReplicaRouter(dsns, config)
        self._config = replica_config(config)
        self._open_source = open_source
        self._opening: set[Replica] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def stats(self) -> ReplicaStats:
        return self.router.stats

    async def open(self, request: OpenReplica) -> AsyncConnectionSource | None:
        """Async twin of :meth:`ReplicaSet.open`."""
        replica = request.replica
        source = replica.source
        if source is not None:
            return source  # type: ignore[no-any-return]
        if replica in self._opening:
            return None
        self._opening.add(replica)
        try:
            candidate = self._open_source(replica.dsn, self._config)
            await candidate.open()
            replica.source = candidate
            return candidate
        finally:
            self._opening.discard(replica)

    @staticmethod
    async def read(request: OnReplica) -> Any:
        """Async twin of :meth:`ReplicaSet.read`."""
        return await request.source.call(request.call)

    async def discard(self, request: CloseReplica) -> None:
        """Async twin of :meth:`ReplicaSet.discard`."""
        task = asyncio.get_running_loop().create_task(_aquiet_close(request.source))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        pending: list[Coroutine[Any, Any, None]] = []
        for replica in self.router.replicas:
            source, replica.source = replica.source, None
            if source is not None:
                pending.append(_aquiet_close(source))
        for coro in pending:
            await coro
        if self._closing:
            await asyncio.gather(*self._closing)


async def _aquiet_close(source: AsyncConnectionSource) -> None:
    try:
        await source.close()
    except Exception as exc:  # pragma: no cover - closing a broken pool
        logger.debug("closing a replica pool failed: %s", exc)
