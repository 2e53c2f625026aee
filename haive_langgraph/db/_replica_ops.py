"""What runs on a read replica: its checks (lag, replay position) and the primary's LSN.

Sans-I/O operations (see :mod:`haive_langgraph.db._driver`): :func:`replica_op`
wraps a read with the checks a replica needs before it may serve it, and
:func:`commit_lsn_op` asks the primary for the WAL position a fresh read
waits for (see :mod:`haive_langgraph.db._replicas` for the story).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import psycopg

from haive_langgraph.db._driver import Op, OpFactory, Step
from haive_langgraph.errors import ConnectionFailedError

T = TypeVar("T")

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
