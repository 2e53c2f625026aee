"""Realtime for Python consumers: the ``NOTIFY`` channels' changes as :class:`ChangeEvent` values.

What a subscription does is written once, without I/O: :class:`_Listener`
holds the channel, the filters and the queue, and :meth:`_Listener.get_op`
decides when to wait, when to reconnect and what to return. The sync and the
async subscription only perform its two actions (wait for notifications,
reconnect) on their connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import psycopg
from psycopg import AsyncConnection, Connection, sql
from psycopg import conninfo as _conninfo

from haive_langgraph.db._call import adrive, drive
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import connect_error, connection_kwargs
from haive_langgraph.db._dsn import TRANSACTION_POOLER_PORT, normalize_dsn, parse_dsn
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._tenancy import validate_tenant_id
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.supabase._env import supabase_config, supabase_dsn
from haive_langgraph.supabase._schema import CHANNEL_ALIASES

logger = logging.getLogger(__name__)

# Supavisor's session mode listens on 5432 of the same host as its
# transaction mode (6543); LISTEN needs a session.
SESSION_POOLER_PORT = "5432"

RECONNECT: Final = "reconnect"
"""The action asking a subscription's driver to reopen its connection."""

Wait = float | None
"""The action asking the driver for the notifications of one packet, waiting at most this long."""

Received = list[str] | psycopg.OperationalError | None
"""What the driver sends back: payloads, the error that dropped the connection, or nothing."""


def channel_name(schema: str, tenant_id: str | None = None) -> str:
    """The ``NOTIFY`` channel of a schema's changes, all tenants or one tenant's.

    Hashed so that any schema and tenant id fit PostgreSQL's 63-byte channel
    names; the triggers compute the same (``md5`` in SQL).
    """
    text = schema if tenant_id is None else f"{schema}/{tenant_id}"
    return "haive_" + hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change notified by a realtime channel's trigger.

    Attributes:
        schema: Schema of the table.
        table: The table (``threads``, ``conversation_messages`` ...).
        op: ``"insert"``, ``"update"`` or ``"delete"``.
        tenant_id: Tenant of the row (``None`` when ``truncated``).
        key: The row's key columns (``thread_id``; ``conversation_id`` and
            ``seq``; ``namespace`` and ``key`` ...); ``None`` when ``truncated``.
        truncated: The key was too large for a notification.
    """

    schema: str
    table: str
    op: str
    tenant_id: str | None
    key: tuple[Any, ...] | None
    truncated: bool = False


def _event(payload: str) -> ChangeEvent | None:
    try:
        data = json.loads(payload)
        key = data.get("key")
        return ChangeEvent(
            schema=str(data["schema"]),
            table=str(data["table"]),
            op=str(data["op"]),
            tenant_id=data.get("tenant"),
            key=tuple(key) if isinstance(key, list) else None,
            truncated=bool(data.get("truncated", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("ignoring a malformed change notification: %.200r", payload)
        return None


def listen_dsn(dsn: str, config: PersistenceConfig) -> str:
    """A DSN on which ``LISTEN`` works: Supabase's transaction pooler (6543) becomes its
    session pooler (5432); a DSN forced to transaction mode otherwise is refused."""
    params = parse_dsn(dsn)
    ports = params.get("port", "").split(",")
    if config.pooler_mode in ("none", "session"):
        return dsn
    if TRANSACTION_POOLER_PORT in ports:
        port = ",".join(SESSION_POOLER_PORT if p == TRANSACTION_POOLER_PORT else p for p in ports)
        return _conninfo.make_conninfo(dsn, port=port)
    if config.pooler_mode == "transaction":
        raise ConfigurationError(
            "subscribe needs a session (LISTEN does not survive a transaction-mode pooler): "
            "pass the direct or session-pooler DSN (Supabase: port 5432)"
        )
    return dsn


class _Listener:
    """What the sync and async subscriptions share: channel, filters, DSN, queue, and ``get``."""

    def __init__(
        self,
        conn: str | None,
        schema: str,
        tenant_id: str | None,
        tables: Sequence[str] | None,
        config: PersistenceConfig | None,
    ) -> None:
        self.config = supabase_config(config)
        self.schema = validate_identifier(schema, what="schema name")
        if tenant_id is not None:
            tenant_id = validate_tenant_id(tenant_id, allow_default=True)
        if isinstance(tables, str):
            raise ConfigurationError(f"tables must be a list of tables, got the string {tables!r}")
        self.tables = (
            None if tables is None else frozenset(CHANNEL_ALIASES.get(t, t) for t in tables)
        )
        dsn = supabase_dsn() if conn is None else normalize_dsn(conn, where="the argument conn")
        self.dsn = listen_dsn(dsn, self.config)
        self.channel = channel_name(self.schema, tenant_id)
        kwargs = connection_kwargs(self.dsn, self.config.model_copy(update={"pooler_mode": "none"}))
        kwargs.pop("options", None)  # a session pooler may refuse startup options
        self.kwargs = kwargs
        self.listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        self.pending: deque[ChangeEvent] = deque()

    def take(self, payload: str) -> None:
        """Queue the change ``payload`` describes, if it is one this subscription wants."""
        event = _event(payload)
        if event is None or event.schema != self.schema:
            return
        if self.tables is not None and event.table not in self.tables:
            return
        self.pending.append(event)

    def get_op(self, timeout: float | None) -> Generator[Wait | str, Received, ChangeEvent | None]:
        """The next change, or ``None`` after ``timeout`` seconds; a dropped connection is
        reopened once per call (changes committed meanwhile are not replayed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reconnected = False
        while not self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            received = yield left
            if isinstance(received, psycopg.OperationalError):
                if reconnected:
                    raise received
                reconnected = True
                yield RECONNECT
                continue
            for payload in received or ():
                self.take(payload)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self.pending.popleft() if self.pending else None


class _Subscribing:
    """What both subscriptions are built with: the filters, and the channel they listen to."""

    def __init__(
        self,
        conn: str | None = None,
        *,
        schema: str = "haive",
        tenant_id: str | None = None,
        tables: Sequence[str] | None = None,
        config: PersistenceConfig | None = None,
    ) -> None:
        self._l = _Listener(conn, schema, tenant_id, tables, config)
        self._start()

    def _start(self) -> None:
        """Connect now (sync) or on ``open()`` (async)."""

    @property
    def channel(self) -> str:
        """The ``NOTIFY`` channel listened to."""
        return self._l.channel


class Subscription(_Subscribing):
    """Changes of a schema's realtime channels, as :class:`ChangeEvent` values (sync).

    Iterate over it (blocks until the next change) or call :meth:`get` with
    a timeout. A dropped connection is reopened and the channel listened to
    again; changes committed while it was down are not replayed.

    Args:
        conn: A DSN (see :func:`subscribe`).
        schema: Schema of the tables.
        tenant_id: Only this tenant's changes; ``None``: every tenant's.
        tables: Only these tables (or aliases).
        config: Connection settings.
    """

    _conn: Connection[Any] | None = None

    def _start(self) -> None:
        self._connect()

    def _connect(self) -> None:
        try:
            conn = psycopg.connect(self._l.dsn, **self._l.kwargs)
        except psycopg.Error as exc:
            raise connect_error(self._l.dsn, exc) from None
        conn.execute(self._l.listen)
        self._conn = conn

    def _perform(self, action: Wait | str) -> Received:
        if self._conn is None:
            raise ConfigurationError("this subscription is closed")
        if isinstance(action, str):  # RECONNECT
            self._conn.close()
            self._connect()
            return None
        try:  # one packet may hold several notifications: take them all
            return [n.payload for n in self._conn.notifies(timeout=action, stop_after=1)]
        except psycopg.OperationalError as exc:
            return exc

    def get(self, timeout: float | None = None) -> ChangeEvent | None:
        """The next change, or ``None`` if none arrives within ``timeout`` seconds."""
        return drive(self._l.get_op(timeout), self._perform)

    def __iter__(self) -> Iterator[ChangeEvent]:
        while True:
            if (event := self.get()) is not None:
                yield event

    def close(self) -> None:
        """Stop listening and close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSubscription(_Subscribing):
    """Async twin of :class:`Subscription` (``async for event in sub``; ``await sub.get()``).

    Open it with ``await asubscribe(...)`` or ``async with AsyncSubscription(...)``.
    """

    _conn: AsyncConnection[Any] | None = None

    async def open(self) -> Self:
        """Connect and ``LISTEN`` (idempotent)."""
        if self._conn is None:
            try:
                conn = await AsyncConnection.connect(self._l.dsn, **self._l.kwargs)
            except psycopg.Error as exc:
                raise connect_error(self._l.dsn, exc) from None
            await conn.execute(self._l.listen)
            self._conn = conn
        return self

    async def _perform(self, action: Wait | str) -> Received:
        if isinstance(action, str):  # RECONNECT
            await self.aclose()
            return None
        conn = (await self.open())._conn
        assert conn is not None
        try:
            return [n.payload async for n in conn.notifies(timeout=action, stop_after=1)]
        except psycopg.OperationalError as exc:
            return exc

    async def get(self, timeout: float | None = None) -> ChangeEvent | None:  # noqa: ASYNC109
        """The next change, or ``None`` if none arrives within ``timeout`` seconds."""
        return await adrive(self._l.get_op(timeout), self._perform)

    async def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        while True:
            if (event := await self.get()) is not None:
                yield event

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def subscribe(
    conn: str | None = None,
    *,
    schema: str = "haive",
    tenant_id: str | None = None,
    tables: Sequence[str] | None = None,
    config: PersistenceConfig | None = None,
) -> Subscription:
    """Listen to the changes of the tables set up with ``enable_realtime=True``.

    Args:
        conn: A DSN (``None``: :func:`supabase_dsn`). Supabase's transaction
            pooler (6543) is swapped for its session pooler (5432): ``LISTEN``
            needs a session.
        schema: Schema of the tables.
        tenant_id: Only this tenant's changes (filtered by the server: each
            tenant has its own channel); ``None``: every tenant's.
        tables: Only these tables (or aliases ``messages``, ``items`` ...).
        config: Connection settings.

    Returns:
        An open :class:`Subscription` (close it, or use it in ``with``).

    Example:
        >>> with subscribe(tenant_id=user_id, tables=["messages"]) as changes:
        ...     for change in changes:
        ...         print(change.op, change.key)
    """
    return Subscription(conn, schema=schema, tenant_id=tenant_id, tables=tables, config=config)


async def asubscribe(
    conn: str | None = None,
    *,
    schema: str = "haive",
    tenant_id: str | None = None,
    tables: Sequence[str] | None = None,
    config: PersistenceConfig | None = None,
) -> AsyncSubscription:
    """Async :func:`subscribe`: an open :class:`AsyncSubscription`."""
    sub = AsyncSubscription(conn, schema=schema, tenant_id=tenant_id, tables=tables, config=config)
    return await sub.open()
