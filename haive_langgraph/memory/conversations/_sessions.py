"""Sessions: owned, collaborative, branchable, mergeable conversations with a TTL.

A session is a conversation row with an owner, participants (``read``,
``write``, ``moderate``), an idle TTL and a message limit. Every call names
the acting user (``user_id=``) and is checked: the owner may do anything, a
participant what their permission allows.

``SessionStore`` (sync) and ``AsyncSessionStore`` (asyncio) run the same
calls, built by :class:`_SessionCalls` (and its bases for participants,
branches and merges).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, Unpack

from langchain_core.messages import BaseMessage

from haive_langgraph.db._call import Call
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.db._driver import Op
from haive_langgraph.db._limits import check_count
from haive_langgraph.db._methods import async_method, sync_method
from haive_langgraph.errors import ConfigurationError, PermissionDeniedError
from haive_langgraph.memory.conversations import _erasure, _messages, _rows
from haive_langgraph.memory.conversations._branches import BranchCalls
from haive_langgraph.memory.conversations._checks import (
    check_id,
    check_optional_id,
    check_page,
    check_permission,
    check_positive,
    decode_conversation_cursor,
    new_id,
)
from haive_langgraph.memory.conversations._client import (
    AsyncClient,
    ConnT,
    SyncClient,
)
from haive_langgraph.memory.conversations._participants import ParticipantCalls
from haive_langgraph.memory.conversations._plans import async_plan, sync_plan
from haive_langgraph.memory.conversations._tables import (
    SESSION,
    PricedOptions,
    make_tables,
)
from haive_langgraph.memory.conversations._topics import TopicCalls, TopicRouting
from haive_langgraph.memory.conversations._types import (
    ErasureReport,
    MessagePage,
    Permission,
    Session,
    SessionPage,
    StoredMessage,
    TokenUsage,
    check_ttl,
)

__all__ = ["AsyncSessionManager", "AsyncSessionStore", "SessionManager", "SessionStore"]


class _SessionCalls(ParticipantCalls, BranchCalls, TopicCalls, Generic[ConnT]):
    """Validates arguments and builds the session manager's calls (no I/O)."""

    _default_ttl: timedelta | None

    def __init__(
        self,
        conn: ConnT = None,
        *,
        default_ttl: timedelta | float | None = None,
        max_messages_per_session: int | None = None,
        topic_routing: TopicRouting | None = None,
        **options: Unpack[PricedOptions],
    ) -> None:
        config, tables = make_tables(**options)
        if topic_routing is not None and not isinstance(topic_routing, TopicRouting):
            raise ConfigurationError(
                f"topic_routing must be a TopicRouting, got {type(topic_routing).__name__}"
            )
        self._topic_routing = topic_routing
        self._default_ttl = check_ttl(default_ttl)
        if max_messages_per_session is not None:
            check_positive(max_messages_per_session, "max_messages_per_session")
        self._max_messages = max_messages_per_session
        self._init_client(conn, config, tables)

    def _subject(self, session_id: str) -> str:
        return self._tables.describe(SESSION, session_id)

    def _create_session(
        self,
        user_id: str,
        agent_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        ttl: timedelta | float | None = None,
        parent_session_id: str | None = None,
        *,
        session_id: str | None = None,
        participants: Mapping[str, Permission] | None = None,
    ) -> Call[Session]:
        """Create a session owned by ``user_id``.

        Args:
            user_id: Owner (and acting user).
            agent_id: The agent it talks to.
            context: Free-form context (through the codec).
            ttl: Idle TTL (default: the manager's ``default_ttl``).
            parent_session_id: A session this one follows on from; it starts
                empty, inherits the parent's context, and the owner needs read
                permission on the parent.
            session_id: Its id (a new UUID by default).
            participants: Other users and their permission.

        Raises:
            ConversationExistsError: ``session_id`` is taken.
            ConversationNotFoundError: No such parent session.
            PermissionDeniedError: The owner may not read the parent.
        """
        t = self._tables
        owner = check_id(user_id, "user_id")
        sid = check_id(session_id, "session_id") if session_id is not None else new_id()
        agent = check_optional_id(agent_id, "agent_id")
        parent = check_optional_id(parent_session_id, "parent_session_id")
        lifetime = check_ttl(ttl) if ttl is not None else self._default_ttl
        if context is not None and not isinstance(context, Mapping):
            raise ConfigurationError(f"context must be a mapping, got {type(context).__name__}")
        people = {
            check_id(p, "participant"): check_permission(perm)
            for p, perm in (participants or {}).items()
        }
        people.pop(owner, None)
        limit = self._max_messages

        def op() -> Op[Session]:
            merged = dict(context or {})
            if parent is not None:
                found = yield from _rows.get_row(t, parent)
                row = t.require(found, parent, what=SESSION, actor=owner, need="read")
                _, base = t.decode_details(row)
                merged = {**base, **merged}
            created = yield from _rows.create(
                t,
                sid,
                what=SESSION,
                user_id=owner,
                agent_id=agent,
                details=t.encode_details(sid, None, merged),
                participants=people,
                parent_id=parent,
                branch_seq=0,
                ttl=lifetime,
                max_messages=limit,
            )
            return t.session(created)

        return t.call(op, transaction=True, subject=self._subject(sid), actor=owner)

    def _get_session(self, session_id: str, *, user_id: str) -> Call[Session]:
        """A session, if ``user_id`` may read it.

        Raises:
            ConversationNotFoundError: No such session.
            SessionExpiredError: It is past its TTL.
            PermissionDeniedError: ``user_id`` may not read it.
        """
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")

        def op() -> Op[Session]:
            row = yield from _rows.get_row(t, sid)
            return t.session(t.require(row, sid, what=SESSION, actor=who, need="read"))

        return t.call(op, read=True, subject=self._subject(sid), actor=who)

    def _get_messages(
        self,
        session_id: str,
        *,
        user_id: str,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Call[MessagePage]:
        """Messages of a session (all, or a page of ``limit`` after ``cursor``)."""
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")
        check_page(limit, cursor)

        def op() -> Op[MessagePage]:
            found = yield from _rows.get_row(t, sid)
            row = t.require(found, sid, what=SESSION, actor=who, need="read")
            page: MessagePage = yield from _messages.page_or_all(
                t, row, limit, cursor, newest_first
            )
            return page

        return t.call(op, read=True, subject=self._subject(sid), actor=who)

    def _add_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage],
        *,
        user_id: str,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Call[list[StoredMessage]]:
        """Append LangChain messages written by ``user_id`` (all or nothing)."""
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")
        plan = t.planner.plan(sid, messages, usages=token_usage, metadata=metadata, author=who)

        def op() -> Op[list[StoredMessage]]:
            if not plan.message_ids:
                found = yield from _rows.get_row(t, sid)
                t.require(found, sid, what=SESSION, actor=who, need="write")
                return []
            placed = yield from _messages.append(
                t, plan, upsert=False, what=SESSION, actor=who, check_actor=True, returning=True
            )
            return _messages.stored(plan, placed)

        return t.call(op, subject=self._subject(sid), actor=who)

    def _add_message(
        self,
        session_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        *,
        user_id: str,
        token_usage: TokenUsage | None = None,
        metadata: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        name: str | None = None,
        tool_call_id: str | None = None,
    ) -> Call[StoredMessage]:
        """Append a message written by ``user_id`` (one statement; checks in the same statement).

        Raises:
            ConversationNotFoundError: No such session.
            SessionExpiredError: It is past its TTL.
            PermissionDeniedError: ``user_id`` has no write permission.
            QuotaExceededError: The session is at its message limit.
            InvalidMessageError: A bad role, content or token usage.
        """
        message = _messages.message_of(role, content, token_usage, message_id, name, tool_call_id)
        return _messages.only(
            self._add_messages(
                session_id,
                [message],
                user_id=user_id,
                token_usage=[token_usage],
                metadata=[metadata],
            )
        )

    def _list_sessions(
        self,
        *,
        user_id: str,
        include_expired: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Call[SessionPage]:
        """Sessions ``user_id`` owns or takes part in, most recent message first."""
        t = self._tables
        who = check_id(user_id, "user_id")
        check_count("limit", limit)
        after = decode_conversation_cursor(cursor)
        filters: dict[str, Any] = {"participant": who}
        if not include_expired:
            filters["live"] = True

        def op() -> Op[SessionPage]:
            rows, _, next_cursor = yield from _rows.query(
                t,
                filters,
                order="last_message_at",
                after=after,
                limit=limit,
                include_messages=False,
            )
            return SessionPage([t.session(r) for r in rows], next_cursor)

        subject = f"sessions of user {who!r}"
        return t.call(op, read=True, route="replica", subject=subject, actor=who)

    def _delete_session(self, session_id: str, *, user_id: str) -> Call[ErasureReport]:
        """Delete a session (its owner only); branches of it keep their messages."""
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")

        def op() -> Op[ErasureReport]:
            rows = yield from _rows.lock_rows(t, [sid])
            row = t.require(rows.get(sid), sid, what=SESSION, live=False)
            if row.user_id != who:
                raise PermissionDeniedError(
                    f"user {who!r} may not delete {self._subject(sid)}: only its owner may"
                )
            report: ErasureReport = yield from _erasure.delete_set(t, [sid])
            return report

        return t.call(op, transaction=True, subject=self._subject(sid), actor=who)

    def _purge_expired(self) -> Call[ErasureReport]:
        """Delete every session of this tenant that is past its TTL."""
        t = self._tables
        return t.call(
            lambda: _erasure.purge_expired(t), transaction=True, subject="expired sessions"
        )


class SessionStore(SyncClient, _SessionCalls[SyncConn]):
    """Sessions of users with agents: TTL, limits, branches, merges, participants (sync).

    Args:
        conn: A DSN (a pool is opened and owned; call :meth:`close`), ``None``
            (the default server: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            then the embedded one), a psycopg ``Connection`` (autocommit, any
            row factory) or a ``ConnectionPool``. Or use :meth:`from_conn_string`.
        default_ttl: Idle TTL of new sessions (a ``timedelta`` or seconds);
            ``None``: sessions do not expire unless created with a ``ttl``.
        max_messages_per_session: Most messages a session created here may
            hold; ``None`` for no limit.
        tenant_id: Tenant of the rows (default from the config: ``""``).
        prices: Model prices for the cost of token usage (see
            :class:`~haive_langgraph.memory.ConversationStore`).
        schema: Schema of the tables (default ``haive``).
        codec: Frames, compresses and encrypts message bodies and context.
        serde: Serializer of message fields.
        config: Connection and server settings.
        max_message_bytes: Largest serialised message accepted.
        topic_routing: Enables :meth:`route_message` (topic threading): the
            embedder and threshold (:class:`TopicRouting`).

    Example:
        >>> sessions = SessionStore(dsn, default_ttl=timedelta(hours=1))
        >>> s = sessions.create_session("alice", "helper", context={"locale": "en"})
        >>> sessions.add_message(s.session_id, "user", "hello", user_id="alice")
        >>> b = sessions.branch_session(s.session_id, 0, user_id="alice")
    """

    create_session = sync_method(_SessionCalls._create_session)
    get_session = sync_method(_SessionCalls._get_session)
    get_messages = sync_method(_SessionCalls._get_messages)
    add_message = sync_method(_SessionCalls._add_message)
    add_messages = sync_method(_SessionCalls._add_messages)
    branch_session = sync_method(_SessionCalls._branch_session)
    merge_sessions = sync_plan(_SessionCalls._merge_sessions)
    merge_records = sync_method(_SessionCalls._merge_records)
    route_message = sync_plan(_SessionCalls._route_message)
    set_participant = sync_method(_SessionCalls._set_participant)
    remove_participant = sync_method(_SessionCalls._remove_participant)
    list_sessions = sync_method(_SessionCalls._list_sessions)
    delete_session = sync_method(_SessionCalls._delete_session)
    purge_expired = sync_method(_SessionCalls._purge_expired)


class AsyncSessionStore(AsyncClient, _SessionCalls[AsyncConn]):
    """Asyncio twin of :class:`SessionStore` (``acreate_session``, ``aadd_message``,
    ``abranch_session`` ...: its methods, ``a``-prefixed) on psycopg's
    ``AsyncConnection`` or ``AsyncConnectionPool`` (autocommit, any row factory), a
    DSN (an async pool opened on first use) or ``None`` (the default server)."""

    acreate_session = async_method(_SessionCalls._create_session)
    aget_session = async_method(_SessionCalls._get_session)
    aget_messages = async_method(_SessionCalls._get_messages)
    aadd_message = async_method(_SessionCalls._add_message)
    aadd_messages = async_method(_SessionCalls._add_messages)
    abranch_session = async_method(_SessionCalls._branch_session)
    amerge_sessions = async_plan(_SessionCalls._merge_sessions)
    amerge_records = async_method(_SessionCalls._merge_records)
    aroute_message = async_plan(_SessionCalls._route_message)
    aset_participant = async_method(_SessionCalls._set_participant)
    aremove_participant = async_method(_SessionCalls._remove_participant)
    alist_sessions = async_method(_SessionCalls._list_sessions)
    adelete_session = async_method(_SessionCalls._delete_session)
    apurge_expired = async_method(_SessionCalls._purge_expired)


# The names before 0.2 ("Manager" says how a thing is built, not what it is).
SessionManager = SessionStore
"""Deprecated alias of :class:`SessionStore`."""
AsyncSessionManager = AsyncSessionStore
"""Deprecated alias of :class:`AsyncSessionStore`."""
