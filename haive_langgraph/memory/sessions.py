"""Sessions: owned, collaborative, branchable, mergeable conversations with a TTL.

A session is a conversation row with an owner, participants (``read``,
``write``, ``moderate``), an idle TTL and a message limit. Every call names
the acting user (``user_id=``) and is checked: the owner may do anything, a
participant what their permission allows.

``SessionManager`` (sync) and ``AsyncSessionManager`` (asyncio) build the same
calls (:class:`_SessionCalls`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.codec import Codec
from haive_langgraph.db import PersistenceConfig
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory._history_base import AsyncClient, SyncClient, make_ops
from haive_langgraph.memory._history_codec import DEFAULT_MAX_MESSAGE_BYTES, message_from_role
from haive_langgraph.memory._history_ops import (
    Call,
    HistoryOps,
    check_id,
    check_optional_id,
    check_positive,
    decode_conversation_cursor,
    encode_conversation_cursor,
)
from haive_langgraph.memory._history_types import (
    PERMISSIONS,
    ErasureReport,
    InvalidMessageError,
    MessagePage,
    ModelPrice,
    Permission,
    PermissionDeniedError,
    Session,
    SessionPage,
    StoredMessage,
    TokenUsage,
    check_ttl,
)

__all__ = ["AsyncSessionManager", "SessionManager"]

WHAT = "session"
MERGE_STRATEGIES = ("append", "interleave")
CONFLICT_RESOLUTIONS = ("primary_wins", "secondary_wins")


class _Inherit:
    def __repr__(self) -> str:
        return "INHERIT"


INHERIT: Any = _Inherit()
"""Default of ``branch_session(ttl=...)``: the branch takes its source's TTL."""


def _permission(value: object) -> Permission:
    if value not in PERMISSIONS:
        raise ConfigurationError(
            f"permission {value!r} is not one of {', '.join(repr(p) for p in PERMISSIONS)}"
        )
    return value  # type: ignore[return-value]


class _SessionCalls:
    """Validates arguments and builds the session manager's calls (no I/O)."""

    __slots__ = ("default_ttl", "max_messages", "ops")

    def __init__(
        self, ops: HistoryOps, default_ttl: object, max_messages_per_session: object
    ) -> None:
        self.ops = ops
        self.default_ttl = check_ttl(default_ttl)
        if max_messages_per_session is not None:
            check_positive(max_messages_per_session, "max_messages_per_session")
        self.max_messages: int | None = max_messages_per_session  # type: ignore[assignment]

    def subject(self, session_id: str) -> str:
        return self.ops.describe(WHAT, session_id)

    def create_session(
        self,
        user_id: str,
        agent_id: str | None,
        context: Mapping[str, Any] | None,
        ttl: timedelta | float | None,
        parent_session_id: str | None,
        session_id: str | None,
        participants: Mapping[str, Permission] | None,
    ) -> Call[Session]:
        ops = self.ops
        owner = check_id(user_id, "user_id")
        sid = check_id(session_id, "session_id") if session_id is not None else str(uuid.uuid4())
        agent = check_optional_id(agent_id, "agent_id")
        parent = check_optional_id(parent_session_id, "parent_session_id")
        lifetime = check_ttl(ttl) if ttl is not None else self.default_ttl
        if context is not None and not isinstance(context, Mapping):
            raise ConfigurationError(f"context must be a mapping, got {type(context).__name__}")
        people = {
            check_id(p, "participant"): _permission(perm)
            for p, perm in (participants or {}).items()
        }
        people.pop(owner, None)

        def op() -> Any:
            merged = dict(context or {})
            if parent is not None:
                found = yield from ops.get_row(parent)
                row = ops.require(found, parent, what=WHAT, actor=owner, need="read")
                _, base = ops.decode_details(row)
                merged = {**base, **merged}
            created = yield from ops.create(
                sid,
                what=WHAT,
                user_id=owner,
                agent_id=agent,
                details=ops.encode_details(sid, None, merged),
                participants=people,
                parent_id=parent,
                branch_seq=0,
                ttl=lifetime,
                max_messages=self.max_messages,
            )
            return ops.session(created)

        return Call(op, transaction=True, subject=self.subject(sid), actor=owner)

    def get_session(self, session_id: str, actor: str) -> Call[Session]:
        ops = self.ops
        sid = check_id(session_id, "session_id")
        who = check_id(actor, "user_id")

        def op() -> Any:
            row = ops.require((yield from ops.get_row(sid)), sid, what=WHAT, actor=who, need="read")
            return ops.session(row)

        return Call(op, read=True, subject=self.subject(sid), actor=who)

    def get_messages(
        self,
        session_id: str,
        actor: str,
        limit: int | None,
        cursor: str | None,
        newest_first: bool,
    ) -> Call[MessagePage]:
        ops = self.ops
        sid = check_id(session_id, "session_id")
        who = check_id(actor, "user_id")
        if limit is not None:
            check_count("limit", limit)
        elif cursor is not None:
            raise ConfigurationError("a cursor needs a limit")

        def op() -> Any:
            row = yield from ops.get_row(sid)
            row = ops.require(row, sid, what=WHAT, actor=who, need="read")
            if limit is None:
                messages = yield from ops.read_stored(sid)
                if newest_first:
                    messages.reverse()
                return MessagePage(messages, None)
            page: MessagePage = yield from ops.page(row, limit, cursor, newest_first)
            return page

        return Call(op, read=True, subject=self.subject(sid), actor=who)

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage],
        actor: str,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Call[list[StoredMessage]]:
        ops = self.ops
        sid = check_id(session_id, "session_id")
        who = check_id(actor, "user_id")
        plan = ops.plan_append(sid, messages, usages=token_usage, metadata=metadata, author=who)

        def op() -> Any:
            if not plan.message_ids:
                found = yield from ops.get_row(sid)
                ops.require(found, sid, what=WHAT, actor=who, need="write")
                return []
            placed = yield from ops.append(
                plan, upsert=False, what=WHAT, actor=who, check_actor=True, returning=True
            )
            return ops.stored(plan, placed)

        return Call(op, subject=self.subject(sid), actor=who)

    def add_message(
        self,
        session_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        actor: str,
        token_usage: TokenUsage | None,
        metadata: Mapping[str, Any] | None,
        message_id: str | None,
        name: str | None,
        tool_call_id: str | None,
    ) -> Call[StoredMessage]:
        message = message_from_role(
            role,
            content,
            message_id=check_optional_id(message_id, "message_id"),
            name=name,
            tool_call_id=tool_call_id,
        )
        if token_usage is not None and not isinstance(token_usage, TokenUsage):
            raise InvalidMessageError(
                f"token_usage must be a TokenUsage, got {type(token_usage).__name__}"
            )
        inner = self.add_messages(session_id, [message], actor, [token_usage], [metadata])

        def op() -> Any:
            stored = yield from inner.op()
            return stored[0]

        return Call(op, subject=inner.subject, actor=inner.actor)

    def branch_session(
        self,
        from_session: str,
        at_message_index: int,
        branch_context: Mapping[str, Any] | None,
        actor: str,
        session_id: str | None,
        ttl: Any,
    ) -> Call[Session]:
        ops = self.ops
        source = check_id(from_session, "from_session")
        who = check_id(actor, "user_id")
        sid = check_id(session_id, "session_id") if session_id is not None else str(uuid.uuid4())
        if isinstance(at_message_index, bool) or not isinstance(at_message_index, int):
            raise ConfigurationError(
                f"at_message_index must be an integer, got {at_message_index!r}"
            )
        if branch_context is not None and not isinstance(branch_context, Mapping):
            raise ConfigurationError(
                f"branch_context must be a mapping, got {type(branch_context).__name__}"
            )
        inherit_ttl = ttl is INHERIT
        lifetime = None if inherit_ttl else check_ttl(ttl)

        def op() -> Any:
            row = yield from ops.branch(
                source,
                at_message_index,
                new_id=sid,
                actor=who,
                context=branch_context,
                ttl=lifetime,
                inherit_ttl=inherit_ttl,
                max_messages=self.max_messages,
                inherit_max=self.max_messages is None,
            )
            return ops.session(row)

        return Call(op, transaction=True, subject=self.subject(source), actor=who)

    def merge_sessions(
        self,
        primary: str,
        secondary: str,
        strategy: str,
        conflict_resolution: str,
        actor: str,
    ) -> Call[Session]:
        ops = self.ops
        first = check_id(primary, "primary")
        second = check_id(secondary, "secondary")
        who = check_id(actor, "user_id")
        if strategy not in MERGE_STRATEGIES:
            raise ConfigurationError(
                f"strategy {strategy!r} is not one of {', '.join(map(repr, MERGE_STRATEGIES))}"
            )
        if conflict_resolution not in CONFLICT_RESOLUTIONS:
            raise ConfigurationError(
                f"conflict_resolution {conflict_resolution!r} is not one of "
                f"{', '.join(map(repr, CONFLICT_RESOLUTIONS))}"
            )

        def op() -> Any:
            row = yield from ops.merge(
                first, second, strategy=strategy, resolution=conflict_resolution, actor=who
            )
            return ops.session(row)

        return Call(op, transaction=True, subject=self.subject(first), actor=who)

    def set_participant(
        self, session_id: str, participant_id: str, permission: str, actor: str
    ) -> Call[Session]:
        ops = self.ops
        sid = check_id(session_id, "session_id")
        who = check_id(actor, "user_id")
        person = check_id(participant_id, "participant_id")
        perm = _permission(permission)

        def op() -> Any:
            rows = yield from ops.lock_rows([sid])
            row = ops.require(rows.get(sid), sid, what=WHAT, actor=who, need="moderate")
            if person == row.user_id:
                raise ConfigurationError(
                    f"user {person!r} owns {self.subject(sid)}; owners are not participants"
                )
            yield from ops.set_participants(sid, {person: perm}, replace=True)
            updated = yield from ops.get_row(sid)
            return ops.session(ops.require(updated, sid, what=WHAT, live=False))

        return Call(op, transaction=True, subject=self.subject(sid), actor=who)

    def remove_participant(self, session_id: str, participant_id: str, actor: str) -> Call[Session]:
        ops = self.ops
        sid = check_id(session_id, "session_id")
        who = check_id(actor, "user_id")
        person = check_id(participant_id, "participant_id")

        def op() -> Any:
            rows = yield from ops.lock_rows([sid])
            # Anyone may leave; removing someone else takes moderation.
            need: Permission = "read" if person == who else "moderate"
            ops.require(rows.get(sid), sid, what=WHAT, actor=who, need=need)
            yield from ops.remove_participant(sid, person)
            updated = yield from ops.get_row(sid)
            return ops.session(ops.require(updated, sid, what=WHAT, live=False))

        return Call(op, transaction=True, subject=self.subject(sid), actor=who)

    def list_sessions(
        self, actor: str, include_expired: bool, limit: int, cursor: str | None
    ) -> Call[SessionPage]:
        ops = self.ops
        who = check_id(actor, "user_id")
        check_count("limit", limit)
        after = decode_conversation_cursor(cursor) if cursor is not None else None
        filters: dict[str, Any] = {"participant": who}
        if not include_expired:
            filters["live"] = True

        def op() -> Any:
            if limit == 0:
                return SessionPage([], None)
            rows, _ = yield from ops.query(
                filters,
                order="last_message_at",
                after=after,
                limit=limit + 1,
                include_messages=False,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            next_cursor = None
            if more and rows:
                next_cursor = encode_conversation_cursor(
                    rows[-1].last_message_at, rows[-1].conversation_id
                )
            return SessionPage([ops.session(r) for r in rows], next_cursor)

        return Call(op, read=True, route="replica", subject=f"sessions of user {who!r}", actor=who)

    def delete_session(self, session_id: str, actor: str) -> Call[ErasureReport]:
        ops = self.ops
        sid = check_id(session_id, "session_id")
        who = check_id(actor, "user_id")

        def op() -> Any:
            rows = yield from ops.lock_rows([sid])
            row = ops.require(rows.get(sid), sid, what=WHAT, live=False)
            if row.user_id != who:
                raise PermissionDeniedError(
                    f"user {who!r} may not delete {self.subject(sid)}: only its owner may"
                )
            report: ErasureReport = yield from ops.delete_set([sid])
            return report

        return Call(op, transaction=True, subject=self.subject(sid), actor=who)

    def purge_expired(self) -> Call[ErasureReport]:
        ops = self.ops
        return Call(ops.purge_expired, transaction=True, subject="expired sessions")


class SessionManager(SyncClient):
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

    Example:
        >>> sessions = SessionManager(dsn, default_ttl=timedelta(hours=1))
        >>> s = sessions.create_session("alice", "helper", context={"locale": "en"})
        >>> sessions.add_message(s.session_id, "user", "hello", user_id="alice")
        >>> b = sessions.branch_session(s.session_id, 0, user_id="alice")
    """

    def __init__(
        self,
        conn: SyncConn = None,
        *,
        default_ttl: timedelta | float | None = None,
        max_messages_per_session: int | None = None,
        tenant_id: str | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        schema: str | None = None,
        codec: Codec | None = None,
        serde: SerializerProtocol | None = None,
        config: PersistenceConfig | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        config, ops = make_ops(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            serde=serde,
            max_message_bytes=max_message_bytes,
            prices=prices,
        )
        self._calls = _SessionCalls(ops, default_ttl, max_messages_per_session)
        self._init_client(conn, config, ops)

    def create_session(
        self,
        user_id: str,
        agent_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        ttl: timedelta | float | None = None,
        parent_session_id: str | None = None,
        *,
        session_id: str | None = None,
        participants: Mapping[str, Permission] | None = None,
    ) -> Session:
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
        return self._run(
            self._calls.create_session(
                user_id, agent_id, context, ttl, parent_session_id, session_id, participants
            )
        )

    def get_session(self, session_id: str, *, user_id: str) -> Session:
        """A session, if ``user_id`` may read it.

        Raises:
            ConversationNotFoundError: No such session.
            SessionExpiredError: It is past its TTL.
            PermissionDeniedError: ``user_id`` may not read it.
        """
        return self._run(self._calls.get_session(session_id, user_id))

    def get_messages(
        self,
        session_id: str,
        *,
        user_id: str,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> MessagePage:
        """Messages of a session (all, or a page of ``limit`` after ``cursor``)."""
        return self._run(self._calls.get_messages(session_id, user_id, limit, cursor, newest_first))

    def add_message(
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
    ) -> StoredMessage:
        """Append a message written by ``user_id`` (one statement; checks in the same statement).

        Raises:
            ConversationNotFoundError: No such session.
            SessionExpiredError: It is past its TTL.
            PermissionDeniedError: ``user_id`` has no write permission.
            QuotaExceededError: The session is at its message limit.
            InvalidMessageError: A bad role, content or token usage.
        """
        return self._run(
            self._calls.add_message(
                session_id,
                role,
                content,
                user_id,
                token_usage,
                metadata,
                message_id,
                name,
                tool_call_id,
            )
        )

    def add_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage],
        *,
        user_id: str,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[StoredMessage]:
        """Append LangChain messages written by ``user_id`` (all or nothing)."""
        return self._run(
            self._calls.add_messages(session_id, messages, user_id, token_usage, metadata)
        )

    def branch_session(
        self,
        from_session: str,
        at_message_index: int,
        branch_context: Mapping[str, Any] | None = None,
        *,
        user_id: str,
        session_id: str | None = None,
        ttl: timedelta | float | None = INHERIT,
    ) -> Session:
        """A new session, owned by ``user_id``, continuing ``from_session`` after a message.

        The branch shares the source's messages ``0..at_message_index``
        (inclusive; negative indexes count from the end) without copying them.

        Args:
            from_session: The source session (``user_id`` needs read permission).
            at_message_index: Last message of the source the branch keeps.
            branch_context: Context keys that override the source's.
            user_id: Acting user; owns the branch.
            session_id: Its id (a new UUID by default).
            ttl: Its TTL; by default the source's.

        Raises:
            ConfigurationError: ``at_message_index`` is out of range.
        """
        return self._run(
            self._calls.branch_session(
                from_session, at_message_index, branch_context, user_id, session_id, ttl
            )
        )

    def merge_sessions(
        self,
        primary: str,
        secondary: str,
        strategy: str = "append",
        conflict_resolution: str = "primary_wins",
        *,
        user_id: str,
    ) -> Session:
        """Merge ``secondary``'s messages, context and participants into ``primary``.

        Messages are matched by id (a shared prefix is kept once). With
        ``"append"`` the secondary's other messages follow the primary's; with
        ``"interleave"`` all are ordered by time. A message both hold with
        different contents is a conflict: ``"primary_wins"`` keeps the
        primary's, ``"secondary_wins"`` takes the secondary's (in the
        primary's position). Context keys and participant permissions follow
        the same rule; the secondary's owner joins with ``write``. The
        secondary is left unchanged.

        Raises:
            PermissionDeniedError: ``user_id`` may not write to ``primary`` or
                read ``secondary``.
            QuotaExceededError: The result would exceed the primary's limit.
        """
        return self._run(
            self._calls.merge_sessions(primary, secondary, strategy, conflict_resolution, user_id)
        )

    def set_participant(
        self, session_id: str, participant_id: str, permission: Permission, *, user_id: str
    ) -> Session:
        """Add a participant or change their permission (``user_id`` needs moderate)."""
        return self._run(
            self._calls.set_participant(session_id, participant_id, permission, user_id)
        )

    def remove_participant(self, session_id: str, participant_id: str, *, user_id: str) -> Session:
        """Remove a participant (moderate permission, or a participant leaving)."""
        return self._run(self._calls.remove_participant(session_id, participant_id, user_id))

    def list_sessions(
        self,
        *,
        user_id: str,
        include_expired: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions ``user_id`` owns or takes part in, most recent message first."""
        return self._run(self._calls.list_sessions(user_id, include_expired, limit, cursor))

    def delete_session(self, session_id: str, *, user_id: str) -> ErasureReport:
        """Delete a session (its owner only); branches of it keep their messages."""
        return self._run(self._calls.delete_session(session_id, user_id))

    def purge_expired(self) -> ErasureReport:
        """Delete every session of this tenant that is past its TTL."""
        return self._run(self._calls.purge_expired())


class AsyncSessionManager(AsyncClient):
    """Asyncio twin of :class:`SessionManager` (``a``-prefixed methods).

    Args:
        conn: A DSN (an async pool is opened on first use and owned), ``None``
            (the default server), an ``AsyncConnection`` (autocommit, any row
            factory) or an ``AsyncConnectionPool``.
        **options: As :class:`SessionManager`.
    """

    def __init__(
        self,
        conn: AsyncConn = None,
        *,
        default_ttl: timedelta | float | None = None,
        max_messages_per_session: int | None = None,
        tenant_id: str | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        schema: str | None = None,
        codec: Codec | None = None,
        serde: SerializerProtocol | None = None,
        config: PersistenceConfig | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        config, ops = make_ops(
            config=config,
            schema=schema,
            tenant_id=tenant_id,
            codec=codec,
            serde=serde,
            max_message_bytes=max_message_bytes,
            prices=prices,
        )
        self._calls = _SessionCalls(ops, default_ttl, max_messages_per_session)
        self._init_client(conn, config, ops)

    async def acreate_session(
        self,
        user_id: str,
        agent_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        ttl: timedelta | float | None = None,
        parent_session_id: str | None = None,
        *,
        session_id: str | None = None,
        participants: Mapping[str, Permission] | None = None,
    ) -> Session:
        """See :meth:`SessionManager.create_session`."""
        return await self._arun(
            self._calls.create_session(
                user_id, agent_id, context, ttl, parent_session_id, session_id, participants
            )
        )

    async def aget_session(self, session_id: str, *, user_id: str) -> Session:
        """See :meth:`SessionManager.get_session`."""
        return await self._arun(self._calls.get_session(session_id, user_id))

    async def aget_messages(
        self,
        session_id: str,
        *,
        user_id: str,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> MessagePage:
        """See :meth:`SessionManager.get_messages`."""
        return await self._arun(
            self._calls.get_messages(session_id, user_id, limit, cursor, newest_first)
        )

    async def aadd_message(
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
    ) -> StoredMessage:
        """See :meth:`SessionManager.add_message`."""
        return await self._arun(
            self._calls.add_message(
                session_id,
                role,
                content,
                user_id,
                token_usage,
                metadata,
                message_id,
                name,
                tool_call_id,
            )
        )

    async def aadd_messages(
        self,
        session_id: str,
        messages: Sequence[BaseMessage],
        *,
        user_id: str,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[StoredMessage]:
        """See :meth:`SessionManager.add_messages`."""
        return await self._arun(
            self._calls.add_messages(session_id, messages, user_id, token_usage, metadata)
        )

    async def abranch_session(
        self,
        from_session: str,
        at_message_index: int,
        branch_context: Mapping[str, Any] | None = None,
        *,
        user_id: str,
        session_id: str | None = None,
        ttl: timedelta | float | None = INHERIT,
    ) -> Session:
        """See :meth:`SessionManager.branch_session`."""
        return await self._arun(
            self._calls.branch_session(
                from_session, at_message_index, branch_context, user_id, session_id, ttl
            )
        )

    async def amerge_sessions(
        self,
        primary: str,
        secondary: str,
        strategy: str = "append",
        conflict_resolution: str = "primary_wins",
        *,
        user_id: str,
    ) -> Session:
        """See :meth:`SessionManager.merge_sessions`."""
        return await self._arun(
            self._calls.merge_sessions(primary, secondary, strategy, conflict_resolution, user_id)
        )

    async def aset_participant(
        self, session_id: str, participant_id: str, permission: Permission, *, user_id: str
    ) -> Session:
        """See :meth:`SessionManager.set_participant`."""
        return await self._arun(
            self._calls.set_participant(session_id, participant_id, permission, user_id)
        )

    async def aremove_participant(
        self, session_id: str, participant_id: str, *, user_id: str
    ) -> Session:
        """See :meth:`SessionManager.remove_participant`."""
        return await self._arun(self._calls.remove_participant(session_id, participant_id, user_id))

    async def alist_sessions(
        self,
        *,
        user_id: str,
        include_expired: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SessionPage:
        """See :meth:`SessionManager.list_sessions`."""
        return await self._arun(self._calls.list_sessions(user_id, include_expired, limit, cursor))

    async def adelete_session(self, session_id: str, *, user_id: str) -> ErasureReport:
        """See :meth:`SessionManager.delete_session`."""
        return await self._arun(self._calls.delete_session(session_id, user_id))

    async def apurge_expired(self) -> ErasureReport:
        """See :meth:`SessionManager.purge_expired`."""
        return await self._arun(self._calls.purge_expired())
