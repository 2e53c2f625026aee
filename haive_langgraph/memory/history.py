"""LangChain chat message histories on PostgreSQL, and factories for
``RunnableWithMessageHistory``.

``PostgresChatMessageHistory`` takes a DSN, a psycopg ``Connection`` or a
``ConnectionPool``; ``AsyncPostgresChatMessageHistory`` takes a DSN, an
``AsyncConnection`` or an ``AsyncConnectionPool``. Appending a batch is one
statement (and one commit); reading a session is one statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.codec import Codec
from haive_langgraph.db import (
    AsyncConnectionSource,
    ConnectionSource,
    PersistenceConfig,
    migrate_op,
)
from haive_langgraph.db._conn_string import AsyncFromConnString, FromConnString
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.db._limits import check_count
from haive_langgraph.memory._history_base import AsyncClient, SyncClient, make_ops
from haive_langgraph.memory._history_codec import DEFAULT_MAX_MESSAGE_BYTES
from haive_langgraph.memory._history_ops import (
    Call,
    HistoryOps,
    check_id,
    check_optional_id,
    parse_message_cursor,
)
from haive_langgraph.memory._history_sql import COMPONENT
from haive_langgraph.memory._history_types import MessagePage

__all__ = [
    "AsyncChatHistoryFactory",
    "AsyncPostgresChatMessageHistory",
    "ChatHistoryFactory",
    "PostgresChatMessageHistory",
    "async_history_factory",
    "history_factory",
]


class _HistoryCalls:
    """The calls of one history (shared by the sync and async class)."""

    __slots__ = ("agent_id", "ops", "session_id", "subject", "user_id")

    def __init__(
        self, ops: HistoryOps, session_id: object, user_id: object, agent_id: object
    ) -> None:
        self.ops = ops
        self.session_id = check_id(session_id, "session_id")
        self.user_id = check_optional_id(user_id, "user_id")
        self.agent_id = check_optional_id(agent_id, "agent_id")
        self.subject = ops.describe("session", self.session_id)

    def get(self, last: int | None = None) -> Call[list[BaseMessage]]:
        sid = self.session_id
        if last is not None:
            check_count("n", last)
        return Call(lambda: self.ops.read_messages(sid, last=last), read=True, subject=self.subject)

    def add(self, messages: Sequence[BaseMessage]) -> Call[Any] | None:
        plan = self.ops.plan_append(
            self.session_id, messages, user_id=self.user_id, agent_id=self.agent_id
        )
        if not plan.message_ids:
            return None
        return Call(lambda: self.ops.append(plan, upsert=True), subject=self.subject)

    def clear(self) -> Call[int]:
        sid = self.session_id
        return Call(lambda: self.ops.clear(sid), transaction=True, subject=self.subject)

    def replace(self, messages: Sequence[BaseMessage]) -> Call[Any]:
        sid = self.session_id
        plan = self.ops.plan_append(sid, messages, user_id=self.user_id, agent_id=self.agent_id)

        def op() -> Any:
            yield from self.ops.clear(sid)
            if plan.message_ids:
                yield from self.ops.append(plan, upsert=True)

        return Call(op, transaction=True, subject=self.subject)

    def page(self, limit: int, cursor: str | None, newest_first: bool) -> Call[MessagePage]:
        sid = self.session_id
        ops = self.ops
        check_count("limit", limit)
        parse_message_cursor(cursor)

        def op() -> Any:
            row = yield from ops.get_row(sid)
            if row is None or row.expired:
                return MessagePage([], None)
            page: MessagePage = yield from ops.page(row, limit, cursor, newest_first)
            return page

        return Call(op, read=True, subject=self.subject)


class PostgresChatMessageHistory(SyncClient, BaseChatMessageHistory):
    """Chat message history of one session, in PostgreSQL (sync).

    A drop-in for LangChain's ``BaseChatMessageHistory`` (and
    ``langchain-postgres``'s class of the same name): messages come back in
    the order they were added, equal to what was saved (a message saved
    without an id reads back without one), and any message type
    round-trips. Adding a batch is one statement and one
    commit; a lent connection must be in autocommit mode and no transaction
    of the caller's is ever committed. The async methods run the sync ones
    in a worker thread; for asyncio use
    :class:`AsyncPostgresChatMessageHistory`.

    Args:
        session_id: The history (a conversation id; created on first write).
        conn: A DSN (a pool is opened and owned; call :meth:`close`), ``None``
            (the default server: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            then the embedded one), a psycopg ``Connection`` (autocommit, any
            row factory) or a ``ConnectionPool``. Or use :meth:`from_conn_string`.
        tenant_id: Tenant of the rows (default from the config: ``""``).
        user_id: Owner recorded when the history is created.
        agent_id: Agent recorded when the history is created.
        schema: Schema of the tables (default ``haive``).
        codec: Frames, compresses and encrypts message bodies.
        serde: Serializer of message fields (LangGraph's, strict allow-list).
        config: Connection and server settings.
        max_message_bytes: Largest serialised message accepted.

    Example:
        >>> history = PostgresChatMessageHistory("session-1", "postgresql://...")
        >>> history.setup()
        >>> history.add_messages([HumanMessage("hi"), AIMessage("hello")])
        >>> history.messages
    """

    def __init__(
        self,
        session_id: str,
        conn: SyncConn = None,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        schema: str | None = None,
        codec: Codec | None = None,
        serde: SerializerProtocol | None = None,
        config: PersistenceConfig | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__()
        config, ops = make_ops(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            serde=serde,
            max_message_bytes=max_message_bytes,
        )
        self._calls = _HistoryCalls(ops, session_id, user_id, agent_id)
        self._init_client(conn, config, ops)
        self._owns_source = True

    @classmethod
    def _shared(
        cls,
        source: ConnectionSource,
        ops: HistoryOps,
        session_id: str,
        user_id: str | None,
        agent_id: str | None,
    ) -> PostgresChatMessageHistory:
        history = cls.__new__(cls)
        BaseChatMessageHistory.__init__(history)
        history._calls = _HistoryCalls(ops, session_id, user_id, agent_id)
        history._ops = ops
        history._source = source
        history._owns_source = False
        return history

    @property
    def session_id(self) -> str:
        """The session (conversation id)."""
        return self._calls.session_id

    def close(self) -> None:
        """Close the pool this history opened (a lent or shared one stays open)."""
        if self._owns_source:
            self._source.close()

    # -- BaseChatMessageHistory ----------------------------------------------------

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first (``[]`` if it has none)."""
        return self._run(self._calls.get())

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        """Replace the session's messages (one transaction)."""
        self._run(self._calls.replace(value))

    def get_messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first."""
        return self._run(self._calls.get())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (one statement, one commit; nothing is written on bad input).

        Raises:
            InvalidMessageError: A value is not a message, or one is larger
                than ``max_message_bytes``.
            SerializationError: A message holds a value that cannot be stored.
            SessionExpiredError: The session is a session past its TTL.
            QuotaExceededError: The session's message limit would be exceeded.
        """
        call = self._calls.add(messages)
        if call is not None:
            self._run(call)

    def clear(self) -> None:
        """Delete the session's messages (branches of it keep theirs)."""
        self._run(self._calls.clear())

    def last(self, n: int) -> list[BaseMessage]:
        """The last ``n`` messages, oldest first."""
        return self._run(self._calls.get(last=n))

    def page(
        self, limit: int = 100, cursor: str | None = None, *, newest_first: bool = False
    ) -> MessagePage:
        """A page of stored messages (with positions and timestamps).

        Args:
            limit: Page size.
            cursor: ``next_cursor`` of the previous page.
            newest_first: Page from the newest message backwards.
        """
        return self._run(self._calls.page(limit, cursor, newest_first))

    # -- async (in a worker thread) --------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        return await asyncio.to_thread(self.get_messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await asyncio.to_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)


class AsyncPostgresChatMessageHistory(AsyncClient, BaseChatMessageHistory):
    """Chat message history of one session, in PostgreSQL, for asyncio.

    Same storage and behaviour as :class:`PostgresChatMessageHistory`, on
    psycopg's ``AsyncConnection``. The sync methods (``messages``,
    ``add_messages``, ``clear``) work from other threads only.

    Args:
        session_id: The history (a conversation id; created on first write).
        conn: A DSN (an async pool is opened on first use and owned), ``None``
            (the default server), an ``AsyncConnection`` (autocommit, any row
            factory) or an ``AsyncConnectionPool``.
        **options: As :class:`PostgresChatMessageHistory`.

    Example:
        >>> history = AsyncPostgresChatMessageHistory("session-1", pool)
        >>> await history.aadd_messages([HumanMessage("hi")])
        >>> await history.aget_messages()
    """

    def __init__(
        self,
        session_id: str,
        conn: AsyncConn = None,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        schema: str | None = None,
        codec: Codec | None = None,
        serde: SerializerProtocol | None = None,
        config: PersistenceConfig | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__()
        config, ops = make_ops(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            serde=serde,
            max_message_bytes=max_message_bytes,
        )
        self._calls = _HistoryCalls(ops, session_id, user_id, agent_id)
        self._init_client(conn, config, ops)
        self._owns_source = True

    @classmethod
    def _shared(
        cls,
        source: AsyncConnectionSource,
        ops: HistoryOps,
        session_id: str,
        user_id: str | None,
        agent_id: str | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> AsyncPostgresChatMessageHistory:
        history = cls.__new__(cls)
        BaseChatMessageHistory.__init__(history)
        history._calls = _HistoryCalls(ops, session_id, user_id, agent_id)
        history._ops = ops
        history._source = source
        history._owns_source = False
        history._loop = loop
        return history

    @property
    def session_id(self) -> str:
        """The session (conversation id)."""
        return self._calls.session_id

    async def aclose(self) -> None:
        """Close the pool this history opened (a lent or shared one stays open)."""
        if self._owns_source:
            await self._source.close()

    async def aget_messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first (``[]`` if it has none)."""
        return await self._arun(self._calls.get())

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (one statement, one commit); see
        :meth:`PostgresChatMessageHistory.add_messages`."""
        call = self._calls.add(messages)
        if call is not None:
            await self._arun(call)

    async def aclear(self) -> None:
        """Delete the session's messages (branches of it keep theirs)."""
        await self._arun(self._calls.clear())

    async def alast(self, n: int) -> list[BaseMessage]:
        """The last ``n`` messages, oldest first."""
        return await self._arun(self._calls.get(last=n))

    async def apage(
        self, limit: int = 100, cursor: str | None = None, *, newest_first: bool = False
    ) -> MessagePage:
        """A page of stored messages; see :meth:`PostgresChatMessageHistory.page`."""
        return await self._arun(self._calls.page(limit, cursor, newest_first))

    async def areplace(self, messages: Sequence[BaseMessage]) -> None:
        """Replace the session's messages (one transaction)."""
        await self._arun(self._calls.replace(messages))

    # -- sync (from other threads) ---------------------------------------------------

    @property  # type: ignore[override]
    def messages(self) -> list[BaseMessage]:
        return self._sync(self.aget_messages(), "aget_messages")

    @messages.setter
    def messages(self, value: Sequence[BaseMessage]) -> None:
        self._sync(self.areplace(value), "areplace")

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._sync(self.aadd_messages(messages), "aadd_messages")

    def clear(self) -> None:
        self._sync(self.aclear(), "aclear")


class ChatHistoryFactory(FromConnString):
    """``session_id -> PostgresChatMessageHistory``, all sharing one connection source.

    Pass it as ``get_session_history`` to ``RunnableWithMessageHistory``: it
    is called once per invocation, so histories are cheap (no connection,
    no query). ``user_id`` may also be passed when the runnable's
    ``history_factory_config`` names it.

    Args:
        conn: A DSN (a pool is opened and owned; call :meth:`close`), ``None``
            (the default server: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            then the embedded one), a psycopg ``Connection`` (autocommit, any
            row factory) or a ``ConnectionPool``. Or use :meth:`from_conn_string`.
        **options: ``tenant_id``, ``agent_id``, ``schema``, ``codec``,
            ``serde``, ``config``, ``max_message_bytes``.
    """

    def __init__(
        self,
        conn: SyncConn = None,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        schema: str | None = None,
        codec: Codec | None = None,
        serde: SerializerProtocol | None = None,
        config: PersistenceConfig | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        config, self._ops = make_ops(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            serde=serde,
            max_message_bytes=max_message_bytes,
        )
        self._agent_id = check_optional_id(agent_id, "agent_id")
        self._source = ConnectionSource(conn, config=config)

    def __call__(self, session_id: str, user_id: str | None = None) -> PostgresChatMessageHistory:
        return PostgresChatMessageHistory._shared(
            self._source, self._ops, session_id, user_id, self._agent_id
        )

    def setup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        schema = self._ops.schema
        self._source.run(lambda: migrate_op([COMPONENT], schema), transaction=True)

    def close(self) -> None:
        """Close the pool this factory opened (a lent connection or pool stays open)."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncChatHistoryFactory(AsyncFromConnString):
    """``session_id -> AsyncPostgresChatMessageHistory`` sharing one async source.

    Args:
        conn: A DSN (an async pool is opened on first use and owned; call
            :meth:`aclose`), ``None`` (the default server), an
            ``AsyncConnection`` (autocommit, any row factory) or an
            ``AsyncConnectionPool``.
        **options: As :class:`ChatHistoryFactory`.
    """

    def __init__(
        self,
        conn: AsyncConn = None,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        schema: str | None = None,
        codec: Codec | None = None,
        serde: SerializerProtocol | None = None,
        config: PersistenceConfig | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        config, self._ops = make_ops(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            serde=serde,
            max_message_bytes=max_message_bytes,
        )
        self._agent_id = check_optional_id(agent_id, "agent_id")
        self._source = AsyncConnectionSource(conn, config=config)
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(
        self, session_id: str, user_id: str | None = None
    ) -> AsyncPostgresChatMessageHistory:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
        return AsyncPostgresChatMessageHistory._shared(
            self._source, self._ops, session_id, user_id, self._agent_id, self._loop
        )

    async def asetup(self) -> None:
        """Create or upgrade the tables (idempotent; safe from many processes at once)."""
        schema = self._ops.schema
        await self._source.run(lambda: migrate_op([COMPONENT], schema), transaction=True)

    async def aclose(self) -> None:
        """Close the pool this factory opened (a lent connection or pool stays open)."""
        await self._source.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def history_factory(conn: SyncConn = None, **options: Any) -> ChatHistoryFactory:
    """A ``session_id -> history`` callable for ``RunnableWithMessageHistory``.

    Args:
        conn: A DSN, ``None`` (the default server: ``HAIVE_DATABASE_URL``,
            ``DATABASE_URL``, then the embedded one), a psycopg ``Connection``
            (autocommit, any row factory) or a ``ConnectionPool``.
        **options: ``tenant_id``, ``agent_id``, ``schema``, ``codec``,
            ``serde``, ``config``, ``max_message_bytes``.

    Example:
        >>> histories = history_factory(pool)
        >>> histories.setup()
        >>> chain = RunnableWithMessageHistory(model, histories)
        >>> chain.invoke("hi", {"configurable": {"session_id": "s1"}})
    """
    return ChatHistoryFactory(conn, **options)


def async_history_factory(conn: AsyncConn = None, **options: Any) -> AsyncChatHistoryFactory:
    """The asyncio twin of :func:`history_factory` (``AsyncConnection``/``AsyncConnectionPool``).

    Example:
        >>> histories = async_history_factory(async_pool)
        >>> await histories.asetup()
        >>> chain = RunnableWithMessageHistory(model, histories)
        >>> await chain.ainvoke("hi", {"configurable": {"session_id": "s1"}})
    """
    return AsyncChatHistoryFactory(conn, **options)
