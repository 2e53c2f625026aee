"""LangChain chat message histories on PostgreSQL.

``PostgresChatMessageHistory`` takes a DSN, a psycopg ``Connection`` or a
``ConnectionPool``; ``AsyncPostgresChatMessageHistory`` takes a DSN, an
``AsyncConnection`` or an ``AsyncConnectionPool``. Appending a batch is one
statement (and one commit); reading a session is one statement. Both run the
calls of :class:`_HistoryCalls`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Self, Unpack

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from haive_langgraph._threaded_history import ThreadedAsyncHistory
from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._call import Call
from haive_langgraph.db._connections import AsyncConn, ConnectionSource, SyncConn
from haive_langgraph.db._driver import Op
from haive_langgraph.db._limits import check_count
from haive_langgraph.db._source_hook import ConnectionSourceHook
from haive_langgraph.memory.conversations import _erasure, _messages
from haive_langgraph.memory.conversations._checks import (
    check_id,
    check_optional_id,
    parse_message_cursor,
)
from haive_langgraph.memory.conversations._client import AsyncClient, ConnT, SyncClient, _Client
from haive_langgraph.memory.conversations._codec import _array_header, build_message
from haive_langgraph.memory.conversations._plan import AppendPlan
from haive_langgraph.memory.conversations._rows import get_row
from haive_langgraph.memory.conversations._tables import (
    SESSION,
    ConversationTables,
    TableOptions,
    make_tables,
)
from haive_langgraph.memory.conversations._types import MessagePage

if TYPE_CHECKING:
    from haive_langgraph.codec import Codec

__all__ = ["AsyncPostgresChatMessageHistory", "PostgresChatMessageHistory"]

Version = tuple[int, ...]
"""A conversation's version: its own and its branch sources' (see ``_messages.version``)."""


class _HistoryCalls:
    """The calls of one history (shared by the sync and async class)."""

    __slots__ = ("agent_id", "session_id", "subject", "t", "user_id")

    def __init__(
        self, t: ConversationTables, session_id: object, user_id: object, agent_id: object
    ) -> None:
        self.t = t
        self.session_id = check_id(session_id, "session_id")
        self.user_id = check_optional_id(user_id, "user_id")
        self.agent_id = check_optional_id(agent_id, "agent_id")
        self.subject = t.describe(SESSION, self.session_id)

    def _plan(self, messages: Sequence[BaseMessage]) -> AppendPlan:
        return self.t.planner.plan(
            self.session_id, messages, user_id=self.user_id, agent_id=self.agent_id
        )

    def get(self, last: int | None = None) -> Call[list[BaseMessage]]:
        t, sid = self.t, self.session_id
        if last is not None:
            check_count("n", last)
        return t.call(
            lambda: _messages.read_messages(t, sid, last=last), read=True, subject=self.subject
        )

    def add(self, messages: Sequence[BaseMessage]) -> Call[Any] | None:
        t, plan = self.t, self._plan(messages)
        if not plan.message_ids:
            return None
        return t.call(lambda: _messages.append(t, plan, upsert=True), subject=self.subject)

    def clear(self) -> Call[int]:
        t, sid = self.t, self.session_id
        return t.call(lambda: _erasure.clear(t, sid), transaction=True, subject=self.subject)

    def replace(self, messages: Sequence[BaseMessage]) -> Call[Any]:
        t, sid, plan = self.t, self.session_id, self._plan(messages)

        def op() -> Op[None]:
            yield from _erasure.clear(t, sid)
            if plan.message_ids:
                yield from _messages.append(t, plan, upsert=True)

        return t.call(op, transaction=True, subject=self.subject)

    def versioned(
        self, known: Version | None
    ) -> Call[tuple[Version | None, list[BaseMessage] | None]]:
        """The conversation's version; its messages too unless the version is ``known``.

        Both statements run on one connection, version first: the messages are
        at least as new as the version, and a version is never current again
        once a write replaced it.
        """
        t, sid = self.t, self.session_id

        def op() -> Op[tuple[Version | None, list[BaseMessage] | None]]:
            token = yield from _messages.version(t, sid)
            if token is None or token == known:
                return token, None
            # Not `live`: a cache checks expiry with the version on every read,
            # so the messages must not depend on the time they were read at.
            messages = yield from _messages.read_messages(t, sid, live=False)
            return token, messages

        return t.call(op, read=True, subject=self.subject)

    def page(self, limit: int, cursor: str | None, newest_first: bool) -> Call[MessagePage]:
        t, sid = self.t, self.session_id
        check_count("limit", limit)
        parse_message_cursor(cursor)

        def op() -> Op[MessagePage]:
            row = yield from get_row(t, sid)
            if row is None or row.expired:
                return MessagePage([], None)
            page: MessagePage = yield from _messages.page(t, row, limit, cursor, newest_first)
            return page

        return t.call(op, read=True, subject=self.subject)


class _History(_Client, BaseChatMessageHistory, Generic[ConnT]):
    """The constructor both histories share."""

    _calls: _HistoryCalls
    _owns_source: bool

    def __init__(
        self,
        session_id: str,
        conn: ConnT = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__()
        config, tables = make_tables(takes=TableOptions.__optional_keys__, **options)
        self._calls = _HistoryCalls(tables, session_id, user_id, agent_id)
        self._init_client(conn, config, tables)
        self._owns_source = True

    @classmethod
    def _shared(
        cls,
        source: Any,
        tables: ConversationTables,
        session_id: str,
        user_id: str | None,
        agent_id: str | None,
    ) -> Self:
        """A history on a factory's connection source (which it does not close)."""
        history = cls.__new__(cls)
        BaseChatMessageHistory.__init__(history)
        history._calls = _HistoryCalls(tables, session_id, user_id, agent_id)
        history._tables = tables
        history._source = source
        history._owns_source = False
        return history

    @property
    def session_id(self) -> str:
        """The session (conversation id)."""
        return self._calls.session_id

    # -- hooks for wrappers (the cache layer) -----------------------------------------

    @property
    def codec(self) -> Codec:
        """The codec that frames (and encrypts) the stored messages."""
        return self._tables.codec

    def encode_messages(self, messages: Sequence[BaseMessage]) -> bytes:
        """``messages`` serialised as this history stores them: one msgpack array, not framed.

        :meth:`decode_messages` reads it back. Frame it with :attr:`codec`
        before it leaves the process.

        Raises:
            InvalidMessageError: A value is not a message.
            SerializationError: A message holds a value that cannot be stored.
        """
        serializer = self._tables.messages
        items = [serializer.item(m, str(m.id), None, "cached message") for m in messages]
        return _array_header(len(items)) + b"".join(items)

    def decode_messages(self, data: bytes) -> list[BaseMessage]:
        """The messages :meth:`encode_messages` serialised."""
        items = self._tables.messages.serde.loads_typed(("msgpack", data))
        return [build_message(item[0]) for item in items]


class PostgresChatMessageHistory(
    SyncClient, _History[SyncConn], ConnectionSourceHook[ConnectionSource], ThreadedAsyncHistory
):
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

    def read_versioned(
        self, known: Version | None = None
    ) -> tuple[Version | None, list[BaseMessage] | None]:
        """The conversation's version, and its messages unless that version is ``known``.

        For caches: messages cached under a version are current exactly while
        that version is (every transaction that changes the conversation's
        messages, or those of a branch source it shares, gives it a new one).
        The version is ``None`` when the conversation does not exist or has
        expired.
        """
        return self._run(self._calls.versioned(known))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (one statement, one commit; nothing is written on bad input).

        Raises:
            InvalidMessageError: A value is not a message, or one is larger
                than ``max_message_bytes``.
            SerializationError: A message holds a value that cannot be stored.
            SessionExpiredError: The session is a session past its TTL.
            QuotaExceededError: The session's message limit would be exceeded.
        """
        if (call := self._calls.add(messages)) is not None:
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


class AsyncPostgresChatMessageHistory(
    AsyncClient, _History[AsyncConn], ConnectionSourceHook[AsyncConnectionSource]
):
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
        if (call := self._calls.add(messages)) is not None:
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

    async def aread_versioned(
        self, known: Version | None = None
    ) -> tuple[Version | None, list[BaseMessage] | None]:
        """See :meth:`PostgresChatMessageHistory.read_versioned`."""
        return await self._arun(self._calls.versioned(known))

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this history runs on (as ``AsyncPostgresCheckpointer.loop``):
        sync calls from other threads run there. ``None`` until it is known."""
        return self._loop

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
