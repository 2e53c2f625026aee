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
its WAL flush position (:data:`PRIMARY_LSN`), which is at or past the end of
every commit that has returned, and the replica is then asked, for at most ``replica_wait`` seconds,
until ``pg_last_wal_replay_lsn()`` reaches
it (:func:`replica_op`). Reading the LSN at each commit
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

The checks are sans-I/O operations (:func:`replica_op`); :class:`ReplicaSet`
and :class:`AsyncReplicaSet` only run them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import psycopg

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import Op, OpFactory, Step
from haive_langgraph.db._dsn import describe_dsn, normalize_dsn
from haive_langgraph.errors import ConfigurationError, ConnectionFailedError

if TYPE_CHECKING:
    from haive_langgraph.db._connections import AsyncConnectionSource, ConnectionSource
    from haive_langgraph.db._tenancy import TenantScope

T = TypeVar("T")

logger = logging.getLogger("haive_langgraph.replicas")

Route = Literal["primary", "replica", "fresh"]
ROUTES: tuple[str, ...] = ("primary", "replica", "fresh")

# How often a replica in use has its lag measured (one small statement on a
# connection already borrowed), and how long a replica that lagged or did
# not catch up for a fresh read is passed over before it is asked again.
LAG_CHECK_INTERVAL = 1.0

# A fresh read first asks the replica for its replay position back to back
# for this long (a streaming replica on the same network replays a commit
# within a few milliseconds: on a 2-core machine, 1.6 ms median asking back
# to back, 4.6 ms with a server-side wait, whose 1 ms sleeps overshoot),
# then waits server-side for the rest of `replica_wait`, pausing POLL_PAUSE
# between looks, so that a long wait costs one statement, not thousands.
FAST_POLL_SECONDS = 0.005
POLL_PAUSE = 0.001

# Seconds behind the primary; 0 when everything received is replayed. A
# replica that has not replayed a transaction since it started and still has
# WAL to replay does not know its lag: NULL, treated as too far behind.
REPLICA_LAG = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()
        THEN 0
    ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
END::float8
"""

# Whether this replica has replayed `lsn` (a promoted replica, no longer in
# recovery, has everything it will ever get).
REPLAYED = """
SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %(lsn)s::text::pg_lsn
"""

# Waits server-side, in one round trip, until this replica has replayed
# `lsn` or `wait` seconds have passed; true if it has.
WAIT_FOR_REPLAY = """
WITH RECURSIVE poll(caught_up, deadline) AS (
    SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %(lsn)s::text::pg_lsn,
           clock_timestamp() + make_interval(secs => %(wait)s::float8)
    UNION ALL
    SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %(lsn)s::text::pg_lsn,
           p.deadline
    FROM poll AS p, LATERAL (SELECT pg_sleep(%(pause)s::float8)) AS s
    WHERE NOT p.caught_up AND clock_timestamp() < p.deadline
)
SELECT coalesce(bool_or(caught_up), false) FROM poll
"""

# On the primary: a WAL position at or past the end of every returned
# commit. A commit returns once flushed, so the flush position covers it and
# a replica can reach it without waiting for anything else. The insert
# position would also count records not flushed yet (hint-bit page images,
# other sessions' open transactions) that reach a replica only with the next
# flush, up to wal_writer_delay later; it is used only where commits return
# before their flush (synchronous_commit = off).
PRIMARY_LSN = """
SELECT CASE WHEN current_setting('synchronous_commit') = 'off'
    THEN pg_current_wal_insert_lsn()
    ELSE pg_current_wal_flush_lsn()
END::text
"""

# SQLSTATEs that mean the server itself is unusable (shutdown, crash,
# starting up, out of connections). Client-side failures carry none.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03", "53300"})


def commit_lsn_op() -> Op[str]:
    """On the primary: the LSN a replica must replay to hold every returned commit."""
    row = yield Step(PRIMARY_LSN, fetch="one")
    return str(row[0])


@dataclass(frozen=True, slots=True)
class Served:
    """What became of a read sent to a replica.

    Attributes:
        status: ``"ok"`` (``value`` is the read's result), ``"lagging"``
            (the replica is more than the lag bound behind) or ``"behind"``
            (it did not replay the commit a fresh read waits for in time).
        value: The read's result when ``status == "ok"``.
        lag: Seconds behind, when it was measured on this call.
    """

    status: Literal["ok", "lagging", "behind"]
    value: Any = None
    lag: float | None = None


def _lag(row: Any) -> float:
    return math.inf if row is None or row[0] is None else float(row[0])


def replica_op(
    factory: OpFactory[T], *, lag_bound: float | None, lsn: str | None, wait: float
) -> Op[Served]:
    """Run the read ``factory()`` builds on a replica, after the checks it needs.

    Args:
        factory: The read.
        lag_bound: Measure the replica's lag first and give up above this
            many seconds (None: not this time).
        lsn: Wait until the replica has replayed this WAL position.
        wait: For at most this many seconds.
    """
    lag: float | None = None
    if lag_bound is not None:
        lag = _lag((yield Step(REPLICA_LAG, fetch="one")))
        if lag > lag_bound:
            # Look twice: a replica of a primary that was idle for a while
            # seems that long behind between receiving a record and
            # replaying it.
            lag = _lag((yield Step(REPLICA_LAG, fetch="one")))
            if lag > lag_bound:
                return Served("lagging", lag=lag)
    if lsn is not None:
        start = time.monotonic()
        deadline = start + wait
        fast_until = min(deadline, start + FAST_POLL_SECONDS)
        while True:
            row = yield Step(REPLAYED, {"lsn": lsn}, fetch="one")
            if row and row[0]:
                break
            now = time.monotonic()
            if now < fast_until:
                continue
            if now >= deadline:
                return Served("behind", lag=lag)
            row = yield Step(
                WAIT_FOR_REPLAY,
                {"lsn": lsn, "wait": deadline - now, "pause": POLL_PAUSE},
                fetch="one",
            )
            if not (row and row[0]):
                return Served("behind", lag=lag)
            break
    result = yield from factory()
    return Served("ok", result, lag)


def server_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the server (not the statement) is unusable."""
    if isinstance(exc, ConnectionFailedError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _SERVER_GONE
    return False


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


def _fallback(replica: Replica, exc: BaseException) -> None:
    logger.debug("read failed on replica %s, running it on the primary: %s", replica.label, exc)


class ReplicaSet:
    """The replicas of one sync :class:`ConnectionSource`; runs routed reads on them."""

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

    def wrote(self) -> None:
        self.router.wrote()

    def run(
        self,
        primary: ConnectionSource,
        factory: OpFactory[T],
        *,
        transaction: bool,
        rollback: bool,
        fresh: bool,
        scope: TenantScope | None = None,
    ) -> tuple[bool, T | None]:
        """Run a read on a replica: ``(True, result)``, or ``(False, None)`` for the primary."""
        router = self.router
        candidates = router.candidates(fresh=fresh)
        lsn: str | None = None
        if candidates and fresh:
            lsn, lookup = router.fresh_target()
            if lookup:
                lsn = primary.run(commit_lsn_op, read=True)
                router.learned(lsn, lookup)
        wait = router.config.replica_wait
        for replica in candidates:
            source = self._source(replica)
            if source is None:
                continue
            bound = router.lag_bound(replica)
            try:
                served: Served = source.run(
                    lambda bound=bound, wait=wait: replica_op(  # type: ignore[misc]
                        factory, lag_bound=bound, lsn=lsn, wait=wait
                    ),
                    transaction=transaction,
                    rollback=rollback,
                    read=True,
                    scope=scope,
                )
            except (psycopg.Error, ConnectionFailedError) as exc:
                if server_gone(exc):
                    self._close(router.down(replica, exc, source))
                    continue
                _fallback(replica, exc)
                break
            if served.status == "ok":
                router.served(replica, served.lag)
                return True, served.value
            if served.status == "lagging":
                router.lagging(replica, served.lag or math.inf)
                continue
            router.behind(replica)
            wait = 0.0  # the wait is spent; other replicas get one look
        router.count("primary_reads")
        return False, None

    def _source(self, replica: Replica) -> ConnectionSource | None:
        """The replica's source, opened now if needed; None if it cannot be had now."""
        source = replica.source
        if source is not None:
            return source  # type: ignore[no-any-return]
        lock = self._opening[replica]
        # Another caller is connecting to it: skip it rather than wait.
        if not lock.acquire(blocking=False):
            return None
        try:
            if replica.source is None:
                try:
                    replica.source = self._open_source(replica.dsn, self._config)
                except ConnectionFailedError as exc:
                    self.router.down(replica, exc, None)
                    return None
            return replica.source  # type: ignore[no-any-return]
        finally:
            lock.release()

    @staticmethod
    def _close(source: ConnectionSource | None) -> None:
        # A pool still connecting to a dead host can take seconds to close:
        # not on the caller's time.
        if source is not None:
            threading.Thread(target=_quiet_close, args=(source,), daemon=True).start()

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

    def wrote(self) -> None:
        self.router.wrote()

    async def run(
        self,
        primary: AsyncConnectionSource,
        factory: OpFactory[T],
        *,
        transaction: bool,
        rollback: bool,
        fresh: bool,
        scope: TenantScope | None = None,
    ) -> tuple[bool, T | None]:
        """Async twin of :meth:`ReplicaSet.run`."""
        router = self.router
        candidates = router.candidates(fresh=fresh)
        lsn: str | None = None
        if candidates and fresh:
            lsn, lookup = router.fresh_target()
            if lookup:
                lsn = await primary.run(commit_lsn_op, read=True)
                router.learned(lsn, lookup)
        wait = router.config.replica_wait
        for replica in candidates:
            source = await self._source(replica)
            if source is None:
                continue
            bound = router.lag_bound(replica)
            try:
                served: Served = await source.run(
                    lambda bound=bound, wait=wait: replica_op(  # type: ignore[misc]
                        factory, lag_bound=bound, lsn=lsn, wait=wait
                    ),
                    transaction=transaction,
                    rollback=rollback,
                    read=True,
                    scope=scope,
                )
            except (psycopg.Error, ConnectionFailedError) as exc:
                if server_gone(exc):
                    self._close(router.down(replica, exc, source))
                    continue
                _fallback(replica, exc)
                break
            if served.status == "ok":
                router.served(replica, served.lag)
                return True, served.value
            if served.status == "lagging":
                router.lagging(replica, served.lag or math.inf)
                continue
            router.behind(replica)
            wait = 0.0
        router.count("primary_reads")
        return False, None

    async def _source(self, replica: Replica) -> AsyncConnectionSource | None:
        """Async twin of :meth:`ReplicaSet._source`."""
        source = replica.source
        if source is not None:
            return source  # type: ignore[no-any-return]
        if replica in self._opening:
            return None
        self._opening.add(replica)
        try:
            candidate = self._open_source(replica.dsn, self._config)
            try:
                await candidate.open()
            except ConnectionFailedError as exc:
                self.router.down(replica, exc, None)
                return None
            replica.source = candidate
            return candidate
        finally:
            self._opening.discard(replica)

    def _close(self, source: AsyncConnectionSource | None) -> None:
        if source is not None:
            task = asyncio.get_running_loop().create_task(_aquiet_close(source))
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
