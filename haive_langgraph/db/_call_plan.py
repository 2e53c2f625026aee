"""How a connection source runs a :class:`Call`, decided once for sync and async.

:func:`call_plan` is a generator that makes every decision of a run and
yields only the I/O it needs, as requests: :class:`Attempt` (run the
operation once on a connection of the primary), :class:`OpenReplica`,
:class:`OnReplica` and :class:`CloseReplica`. ``ConnectionSource`` and
``AsyncConnectionSource`` step it with :func:`~haive_langgraph.db._call.drive`
and :func:`~haive_langgraph.db._call.adrive`, doing each request and sending
back its result (or throwing its error in). The decisions made here:

* where a read runs (the primary, or which replica, see
  :mod:`haive_langgraph.db._replicas`) and when it falls back to the primary;
* how many attempts a read gets: reads (idempotent operations) are retried
  on a fresh connection, at most twice, when the one they ran on turns out
  to be dead, for instance after a pooler restart or idle reaping; writes
  are never retried blindly;
* what a write records (it counts for read-your-writes);
* which library error a database error becomes (the call's ``errors``);
* what the source's :class:`~haive_langgraph.db._stats.CallTally` counts
  (calls, errors, retries: :func:`haive_langgraph.db.stats`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

import psycopg

from haive_langgraph.db._call import Call, mapped_error
from haive_langgraph.db._driver import OpFactory
from haive_langgraph.db._replica_ops import Served, commit_lsn_op, replica_op, server_gone
from haive_langgraph.db._replicas import ROUTES, Replica, ReplicaRouter, Route
from haive_langgraph.db._stats import CallTally
from haive_langgraph.db._tenancy import TenantScope
from haive_langgraph.errors import ConfigurationError, ConnectionFailedError

T = TypeVar("T")

logger = logging.getLogger("haive_langgraph.replicas")

# A read that meets a dead connection is run again on another one, and again
# if that one dies too: a pooler going down (PgBouncer restarted under load)
# can close a connection the pool opened during its shutdown, after the
# first retry took it. Writes are never retried.
READ_ATTEMPTS = 3

LOST: Final = object()
"""What the driver sends back for an :class:`Attempt` whose connection died
(only when the attempt says it may be retried)."""


# Not frozen: a frozen dataclass costs a microsecond more to build, on every call.
@dataclass(slots=True)
class Attempt:
    """Run ``op`` once on a connection of the source's primary; send back its result.

    Attributes:
        op: Builds the operation generator.
        transaction: Run all its statements in one transaction.
        rollback: Roll that transaction back (a dry run).
        scope: The tenant it acts for (its prelude goes with the statements).
        retry: If the connection turns out to be dead, send back :data:`LOST`
            instead of raising.
    """

    handler: ClassVar[str] = "attempt"
    op: OpFactory[Any]
    transaction: bool
    rollback: bool
    scope: TenantScope | None
    retry: bool


@dataclass(frozen=True, slots=True)
class OpenReplica:
    """Send back the replica's source (opened if needed), or None if it is busy opening."""

    handler: ClassVar[str] = "open"
    replica: Replica


@dataclass(frozen=True, slots=True)
class OnReplica:
    """Run ``call`` on a replica's ``source``; send back its result."""

    handler: ClassVar[str] = "read"
    source: Any
    call: Call[Served]


@dataclass(frozen=True, slots=True)
class CloseReplica:
    """Close a failed replica's ``source`` in the background; send back None."""

    handler: ClassVar[str] = "discard"
    source: Any


Request = Attempt | OpenReplica | OnReplica | CloseReplica
Plan = Generator[Request, Any, T]


def call_plan(
    call: Call[T],
    *,
    route: Route,
    scope: TenantScope | None,
    router: ReplicaRouter | None,
    pooled: bool,
    tally: CallTally,
) -> Plan[T]:
    """Run ``call`` on a source: its whole plan, the I/O left to the driver.

    Args:
        call: The call (its ``route`` is ignored: see ``route``).
        route: Where it may run (``"primary"`` for writes).
        scope: The source's tenant, for a call that names none.
        router: The source's replicas, if it has any.
        pooled: Whether a dead connection can be replaced (not a lent one).
        tally: The source's counters (this call, its error, its retries).

    Raises:
        ConfigurationError: an unknown route, or a route for a write.
    """
    scope = call.scope or scope
    tally.calls += 1
    try:
        if route != "primary":
            check_route(route, call.read)
            if router is not None:
                fresh = route == "fresh"
                served = yield from _on_replica(
                    router, call, scope, fresh=fresh, pooled=pooled, tally=tally
                )
                if served is not None:
                    return served.value  # type: ignore[no-any-return]
        if call.read or router is None:
            return (yield from _on_primary(call, scope, pooled=pooled, tally=tally))
        try:
            return (yield from _on_primary(call, scope, pooled=pooled, tally=tally))
        finally:
            router.wrote()
    except psycopg.Error as exc:
        tally.errors += 1
        mapped = mapped_error(call, exc)
        if mapped is None:
            raise
        raise mapped from exc
    except BaseException:
        tally.errors += 1
        raise


def _on_primary(
    call: Call[T], scope: TenantScope | None, *, pooled: bool, tally: CallTally
) -> Plan[T]:
    attempts = READ_ATTEMPTS if call.read and pooled else 1
    for attempt in range(attempts):
        result = yield Attempt(
            call.op,
            call.transaction or call.rollback,
            call.rollback,
            scope,
            retry=attempt + 1 < attempts,
        )
        if result is not LOST:
            return result  # type: ignore[no-any-return]
        tally.retries += 1
    raise AssertionError("unreachable")  # pragma: no cover


def _on_replica(
    router: ReplicaRouter,
    call: Call[Any],
    scope: TenantScope | None,
    *,
    fresh: bool,
    pooled: bool,
    tally: CallTally,
) -> Plan[Served | None]:
    """The read on a replica (its :class:`Served`), or None: run it on the primary."""
    candidates = router.candidates(fresh=fresh)
    lsn: str | None = None
    if candidates and fresh:
        lsn, lookup = router.fresh_target()
        if lookup:
            lsn = yield from _on_primary(
                Call(commit_lsn_op, read=True), scope, pooled=pooled, tally=tally
            )
            router.learned(lsn, lookup)
    wait = router.config.replica_wait
    for replica in candidates:
        try:
            source = yield OpenReplica(replica)
        except ConnectionFailedError as exc:
            router.down(replica, exc, None)
            continue
        if source is None:
            continue
        bound = router.lag_bound(replica)
        read = Call(
            lambda bound=bound, wait=wait: replica_op(  # type: ignore[misc]
                call.op, lag_bound=bound, lsn=lsn, wait=wait
            ),
            transaction=call.transaction,
            rollback=call.rollback,
            read=True,
            scope=scope,
        )
        try:
            served: Served = yield OnReplica(source, read)
        except (psycopg.Error, ConnectionFailedError) as exc:
            if server_gone(exc):
                stale = router.down(replica, exc, source)
                if stale is not None:
                    yield CloseReplica(stale)
                continue
            logger.debug(
                "read failed on replica %s, running it on the primary: %s", replica.label, exc
            )
            break
        if served.status == "ok":
            router.served(replica, served.lag)
            return served
        if served.status == "lagging":
            router.lagging(replica, served.lag or math.inf)
            continue
        router.behind(replica)
        wait = 0.0  # the wait is spent; other replicas get one look
    router.count("primary_reads")
    return None


def check_route(route: str, read: bool) -> None:
    """Refuse an unknown route, or a route other than the primary for a write."""
    if route not in ROUTES:
        raise ConfigurationError(f"unknown route {route!r}; use one of {', '.join(ROUTES)}")
    if not read:
        raise ConfigurationError(
            f"route={route!r} needs read=True: only reads may run on a replica"
        )
