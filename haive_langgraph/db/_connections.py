"""Where connections come from: a DSN, a lent connection, or a pool.

Every saver, store and history accepts any of them and normalises it
here (as LangGraph's ``_internal.get_connection`` does), so the classes above
never care which they were given:

* a DSN, or ``None`` for the default server (``HAIVE_DATABASE_URL``,
  ``DATABASE_URL``, then the embedded PostgreSQL): we open and own a pool,
  sized and tuned by :class:`PersistenceConfig`;
* a lent ``Connection``: used one operation at a time (a lock guards it); it
  must be in autocommit mode and outside pipeline mode, may have any row
  factory, and we never commit a transaction the caller owns (see
  :mod:`haive_langgraph.db._lent`);
* a lent ``ConnectionPool``: borrowed per operation; no instance-wide lock,
  so concurrency is the pool's job (connections not in autocommit mode
  are committed by the pool when they come back).

Reads (idempotent operations) are retried on a fresh connection (at most
twice) when the one they ran on turns out to be dead, for instance after a
pooler restart or idle reaping. Writes are never retried blindly. Those
decisions, and routing, are made once for both classes by the sans-I/O plan
in :mod:`haive_langgraph.db._call_plan`; the classes here only do its I/O.

With read replicas (``replicas=[dsn, ...]`` or ``HAIVE_REPLICA_URLS``), a
read run with ``route="replica"`` or ``route="fresh"`` goes to a replica
(see :mod:`haive_langgraph.db._replicas`); without them, or with the default
``route="primary"``, nothing changes.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, TypedDict, TypeVar, Unpack

import psycopg
from psycopg import AsyncConnection, Connection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from haive_langgraph.db._call import Call, drive
from haive_langgraph.db._call_plan import LOST, Attempt, Plan, Request, call_plan
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import OpFactory, Step, run
from haive_langgraph.db._dsn import (
    describe_dsn,
    parse_dsn,
    resolve_dsn,
    uses_transaction_pooler,
)
from haive_langgraph.db._lent import (
    check_lent_connection,
    check_lent_in_use,
    wrong_kind,
)
from haive_langgraph.db._liveness import (
    PING_AFTER_IDLE_SECONDS,
    IdleTracker,
    has_input,
    is_dead,
    usable,
)
from haive_langgraph.db._observe import observed_plan, watched
from haive_langgraph.db._replicas import AsyncReplicaSet, ReplicaSet, Route
from haive_langgraph.db._stats import CallTally
from haive_langgraph.db._tenancy import TenantScope, row_security_step
from haive_langgraph.errors import ConnectionFailedError

T = TypeVar("T")
C = TypeVar("C")

SyncConn = str | Connection[Any] | ConnectionPool[Any] | None
AsyncConn = str | AsyncConnection[Any] | AsyncConnectionPool[Any] | None


class RunOptions(TypedDict, total=False):
    """How ``source.run(factory, **options)`` runs an operation (see :meth:`ConnectionSource.run`)."""

    transaction: bool
    read: bool
    rollback: bool
    route: Route
    scope: TenantScope | None


def connection_kwargs(dsn: str, config: PersistenceConfig) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` derived from the config.

    A transaction-mode pooler gets ``prepare_threshold=None`` (no prepared
    statements) and no startup ``options`` (PgBouncer refuses them); the
    server settings are then left to the server's own configuration.
    """
    given = parse_dsn(dsn)
    kwargs: dict[str, Any] = {"autocommit": True}
    if "application_name" not in given:
        kwargs["application_name"] = config.application_name
    if "connect_timeout" not in given:
        kwargs["connect_timeout"] = max(1, math.ceil(config.connect_timeout))
    if not given.get("host", "").startswith("/"):
        # TCP keepalives notice a dead peer (a reaped or restarted pooler)
        # within about a minute instead of at the next statement's timeout.
        kwargs.setdefault("keepalives", 1)
        kwargs.setdefault("keepalives_idle", 30)
        kwargs.setdefault("keepalives_interval", 10)
        kwargs.setdefault("keepalives_count", 3)
    if uses_transaction_pooler(dsn, config.pooler_mode):
        kwargs["prepare_threshold"] = None
        return kwargs
    settings = {
        "statement_timeout": config.statement_timeout,
        "lock_timeout": config.lock_timeout,
        "idle_in_transaction_session_timeout": config.idle_in_transaction_session_timeout,
    }
    options = " ".join(f"-c {k}={v}" for k, v in settings.items() if v is not None)
    if options:
        kwargs["options"] = f"{given['options']} {options}" if given.get("options") else options
    return kwargs


def connect_error(dsn: str, exc: BaseException) -> ConnectionFailedError:
    """A :class:`ConnectionFailedError` naming the server, never the password."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    password = parse_dsn(dsn).get("password")
    if password:
        detail = detail.replace(password, "***")
    return ConnectionFailedError(
        f"could not connect to PostgreSQL at {describe_dsn(dsn)}: {detail}"
    )


def lost_if_dead(attempt: Attempt, conn: Any, exc: psycopg.OperationalError) -> Any:
    """What an attempt that raised ``exc`` on ``conn`` returns: :data:`LOST` (the plan
    tries again on another connection) when it may be retried and the connection
    died under it; otherwise ``exc`` is raised."""
    if attempt.retry and is_dead(conn, exc):
        return LOST
    raise exc


class RowSecurity:
    """Whether row-level security applies to a connection's role on a table (asked once)."""

    def __init__(self) -> None:
        self._known: weakref.WeakKeyDictionary[Any, dict[str, bool]] = weakref.WeakKeyDictionary()

    def known(self, conn: Any, table: str) -> bool | None:
        return self._known.get(conn, {}).get(table)

    def learn(self, conn: Any, table: str, row: Any) -> bool:
        if row is None or row[0] is None:
            return False  # the table is not there yet: ask again next time
        active = bool(row[0])
        self._known.setdefault(conn, {})[table] = active
        return active


class SourceBase(Generic[C]):
    """What the sync and async sources share: how they take the connection they are
    given (a DSN, a lent connection or a lent pool; see :class:`ConnectionSource`),
    the plan of a call and who does its requests."""

    config: PersistenceConfig
    dsn: str | None
    scope: TenantScope | None
    replicas: ReplicaSet | AsyncReplicaSet | None
    _conn: Any
    _pool: Any
    _lock: Any
    # The lent kinds a flavour takes, and the lock a lent connection is used under.
    _conn_type: ClassVar[type[Any]]
    _pool_type: ClassVar[type[Any]]
    _lock_type: ClassVar[type[Any]]
    _is_async: ClassVar[bool]

    def __init__(
        self,
        conn: C,
        *,
        config: PersistenceConfig | None = None,
        replicas: Sequence[str] | None = None,
        scope: TenantScope | None = None,
        argument: str = "conn",
    ) -> None:
        self.config = config or PersistenceConfig()
        self.scope = scope
        self.dsn = None
        self._row_security = RowSecurity()
        self._owned = False
        self._idle = IdleTracker()
        # What stats() reports, and whether calls are logged with their SQL (see _observe).
        self.tally = CallTally()
        self._echo = self.config.echo_sql
        dsns = self.config.replica_urls if replicas is None else replicas
        # Checked before the primary's pool opens, so a bad replica DSN leaks nothing.
        self.replicas = self._replica_set(dsns) if dsns else None
        self._lock = None
        self._conn = None
        self._pool = None
        if conn is None or isinstance(conn, str):
            self._own(conn, argument)
            self._owned = True
        elif isinstance(conn, self._conn_type):
            check_lent_connection(conn)
            self._conn = conn
            self._lock = self._lock_type()
        elif isinstance(conn, self._pool_type):
            self._pool = conn
        else:
            raise wrong_kind(conn, want_async=self._is_async)

    @property
    def lendable(self) -> Any:
        """The connection or pool this source runs its calls on, for another component
        to be given as its ``conn`` (it borrows, never closes it): the lent connection,
        else the pool (lent, or opened and owned by this source)."""
        return self._conn if self._conn is not None else self._pool

    def _replica_set(self, dsns: Sequence[str]) -> ReplicaSet | AsyncReplicaSet:
        """The replica set of this flavour on ``dsns``."""
        raise NotImplementedError

    def _own(self, conn: str | None, argument: str) -> None:
        """Take a DSN (``None`` or blank: the default server) whose pool this source owns."""
        raise NotImplementedError

    def _pool_options(self, dsn: str) -> dict[str, Any]:
        """The pool's settings from the config (the same for both kinds of pool)."""
        cfg = self.config
        # No `reset` callback: with one, psycopg_pool returns every connection
        # through a worker thread, which costs a thread hop per operation.
        return {
            "kwargs": connection_kwargs(dsn, cfg),
            "min_size": cfg.pool_min_size,
            "max_size": cfg.pool_max_size,
            "timeout": cfg.pool_timeout,
            "max_idle": cfg.pool_max_idle,
            "name": "haive-langgraph",
        }

    def _plan(self, call: Call[T], route: Route) -> Plan[T]:
        replicas = self.replicas
        router = None if replicas is None else replicas.router
        pooled = self._conn is None
        # Unobserved, a call pays for this test only (see db/_observe.watched).
        if self._echo or watched(call.op):
            return observed_plan(self, call, route=route, router=router, pooled=pooled)
        return call_plan(
            call, route=route, scope=self.scope, router=router, pooled=pooled, tally=self.tally
        )

    def _handle(self, request: Request) -> Any:
        # An Attempt is done by the source, replica requests by its replica set.
        doer = self if isinstance(request, Attempt) else self.replicas
        return getattr(doer, request.handler)(request)

    def _pool_error(self, exc: PoolTimeout) -> ConnectionFailedError:
        where = describe_dsn(self.dsn) if self.dsn else "the pool's server"
        return ConnectionFailedError(
            f"no connection to PostgreSQL at {where} within {self.config.pool_timeout:g}s "
            f"(pool exhausted or server unreachable): {exc}"
        )


class ConnectionSource(SourceBase[SyncConn]):
    """Hands out sync connections from a DSN-owned pool, a lent pool or a lent connection.

    Args:
        conn: The primary: a DSN, ``None`` (the default server, see
            :func:`resolve_dsn`), a lent ``Connection`` or ``ConnectionPool``.
        config: Settings.
        replicas: DSNs of read replicas of the primary (default:
            ``config.replica_urls``); pools to them are opened on first use.
        scope: The tenant calls act for, unless a call names another (see
            :class:`TenantScope`): where row-level security applies to the
            connection's role, each statement is sent with the setting that
            binds its transaction to that tenant, in the same round trip.
        argument: The name ``conn`` was given under, for errors about it.
    """

    replicas: ReplicaSet | None
    _lock: threading.Lock | None
    _conn: Connection[Any] | None
    _pool: ConnectionPool[Any] | None
    _conn_type = Connection
    _pool_type = ConnectionPool
    _lock_type = threading.Lock
    _is_async = False

    def _replica_set(self, dsns: Sequence[str]) -> ReplicaSet:
        return ReplicaSet(dsns, self.config, _sync_replica)

    def _own(self, conn: str | None, argument: str) -> None:
        self.dsn = resolve_dsn(conn, config=self.config, argument=argument)
        self._pool = self._open_pool(self.dsn)

    def _open_pool(self, dsn: str) -> ConnectionPool[Any]:
        options = self._pool_options(dsn)
        # Fail fast, with the server named, instead of waiting out the pool timeout.
        try:
            psycopg.connect(dsn, **options["kwargs"]).close()
        except psycopg.Error as exc:
            raise connect_error(dsn, exc) from None
        tracker = self._idle

        def check(conn: Connection[Any]) -> None:
            # A connection with input waiting is left to connection(), which
            # replaces it at once (a failed check backs off 1 s, 2 s, 4 s ...).
            if tracker.idle_for(conn) > PING_AFTER_IDLE_SECONDS and not has_input(conn):
                conn.execute("")

        return ConnectionPool(dsn, check=check, open=True, **options)

    @property
    def is_pooled(self) -> bool:
        return self._pool is not None

    @property
    def max_connections(self) -> int:
        """How many connections operations may hold at once (1 for a lent connection)."""
        return 1 if self._pool is None else self._pool.max_size

    @contextmanager
    def connection(self) -> Iterator[Connection[Any]]:
        """Borrow a connection for one operation."""
        if self._conn is not None:
            assert self._lock is not None
            with self._lock:
                check_lent_in_use(self._conn)
                yield self._conn
            return
        assert self._pool is not None
        # A connection the server closed while it sat in the pool is handed back
        # (the pool discards it) and replaced before anything is sent on it, so
        # that a restart or idle reaping costs the caller no error. The check
        # is a poll: measured 2.4 us, against 13 us for the borrow itself.
        for spare in range(self._pool.max_size, -1, -1):
            try:
                cm = self._pool.connection()
                conn = cm.__enter__()
            except PoolTimeout as exc:
                raise self._pool_error(exc) from None
            if not spare or usable(conn):
                break
            cm.__exit__(None, None, None)
        try:
            yield conn
        except BaseException as exc:
            if not cm.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            self._idle.mark(conn)
            cm.__exit__(None, None, None)

    def call(self, call: Call[T]) -> T:
        """Run a :class:`Call` (see :meth:`run`); its ``errors`` map database errors."""
        return drive(self._plan(call, call.route if call.read else "primary"), self._handle)

    def run(self, factory: OpFactory[T], **options: Unpack[RunOptions]) -> T:
        """Run the operation ``factory()`` builds on a borrowed connection.

        Args:
            factory: Builds a fresh operation generator (called again on retry).
            transaction: Run all its statements in one transaction (default no).
            read: The operation only reads; retry it once on a dead connection.
            rollback: Run it in a transaction and roll that back (a dry run).
            route: Where a read may run when replicas are configured:
                ``"primary"`` (the default); ``"replica"`` (any usable replica,
                may lag); ``"fresh"`` (a replica that has replayed this
                source's writes, else the primary). Needs ``read=True``.
            scope: The tenant this call acts for (default: the source's).
        """
        call = Call(factory, **options)
        return drive(self._plan(call, call.route), self._handle)

    def attempt(self, attempt: Attempt) -> Any:
        """Do an :class:`Attempt` of the plan: run its operation once on a connection."""
        with self.connection() as conn:
            try:
                prelude = self._prelude(conn, attempt.scope) if attempt.scope is not None else ()
                if not attempt.transaction:
                    return run(conn, attempt.op(), prelude=prelude, every=True)
                with conn.transaction() as tx:
                    result = run(conn, attempt.op(), prelude=prelude)
                    if attempt.rollback:
                        raise psycopg.Rollback(tx)
                return result
            except psycopg.OperationalError as exc:
                return lost_if_dead(attempt, conn, exc)

    def _prelude(self, conn: Connection[Any], scope: TenantScope) -> tuple[Step, ...]:
        active = self._row_security.known(conn, scope.table)
        if active is None:
            step = row_security_step(scope.table)
            with conn.cursor(row_factory=tuple_row) as cur:
                row = cur.execute(step.query, step.params).fetchone()
            active = self._row_security.learn(conn, scope.table, row)
        return scope.prelude(active)

    def close(self) -> None:
        if self.replicas is not None:
            self.replicas.close()
        if self._owned and self._pool is not None:
            self._pool.close()


def _sync_replica(dsn: str, config: PersistenceConfig) -> ConnectionSource:
    return ConnectionSource(dsn, config=config, replicas=())
