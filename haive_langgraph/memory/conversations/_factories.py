"""``session_id -> history`` factories for ``RunnableWithMessageHistory``.

A factory holds one connection source and the tables; each history it makes
shares them (no connection, no query to make one), and with them the tenant:
under row-level security each of its transactions is bound to the factory's
``tenant_id``, exactly as a directly constructed history's.
"""

from __future__ import annotations

from typing import Any, Generic, Unpack

from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.memory.conversations._checks import check_optional_id
from haive_langgraph.memory.conversations._client import AsyncClient, ConnT, SyncClient, _Client
from haive_langgraph.memory.conversations._histories import (
    AsyncPostgresChatMessageHistory,
    PostgresChatMessageHistory,
)
from haive_langgraph.memory.conversations._tables import TableOptions, make_tables

__all__ = [
    "AsyncChatHistoryFactory",
    "ChatHistoryFactory",
    "async_history_factory",
    "history_factory",
]


class _Factory(_Client, Generic[ConnT]):
    """The constructor both factories share."""

    def __init__(
        self, conn: ConnT = None, *, agent_id: str | None = None, **options: Unpack[TableOptions]
    ) -> None:
        config, tables = make_tables(takes=TableOptions.__optional_keys__, **options)
        self._agent_id = check_optional_id(agent_id, "agent_id")
        # The histories run on this source, so its scope is theirs: each transaction is
        # bound to the tenant wherever row-level security applies, as for a history
        # constructed directly.
        self._init_client(conn, config, tables)


class ChatHistoryFactory(SyncClient, _Factory[SyncConn]):
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

    def __call__(self, session_id: str, user_id: str | None = None) -> PostgresChatMessageHistory:
        return PostgresChatMessageHistory._shared(
            self._source, self._tables, session_id, user_id, self._agent_id
        )


class AsyncChatHistoryFactory(AsyncClient, _Factory[AsyncConn]):
    """``session_id -> AsyncPostgresChatMessageHistory`` sharing one async source.

    Args:
        conn: A DSN (an async pool is opened on first use and owned; call
            :meth:`aclose`), ``None`` (the default server), an
            ``AsyncConnection`` (autocommit, any row factory) or an
            ``AsyncConnectionPool``.
        **options: As :class:`ChatHistoryFactory`.
    """

    _loop_at_init = False

    def __call__(
        self, session_id: str, user_id: str | None = None
    ) -> AsyncPostgresChatMessageHistory:
        self._note_loop()
        history = AsyncPostgresChatMessageHistory._shared(
            self._source, self._tables, session_id, user_id, self._agent_id
        )
        history._loop = self._loop
        return history


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
        >>> await histories.setup()
        >>> chain = RunnableWithMessageHistory(model, histories)
        >>> await chain.ainvoke("hi", {"configurable": {"session_id": "s1"}})
    """
    return AsyncChatHistoryFactory(conn, **options)
