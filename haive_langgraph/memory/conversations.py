"""Conversations with owners, agents, metadata, token usage and cost.

``ConversationStore`` (sync) and ``AsyncConversationStore`` (asyncio) build
the same calls (:class:`_StoreCalls`) and only differ in how they run them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
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
    AppendPlan,
    Call,
    HistoryOps,
    check_id,
    check_json,
    check_optional_id,
    decode_conversation_cursor,
    encode_conversation_cursor,
)
from haive_langgraph.memory._history_sql import ORDER_COLUMNS
from haive_langgraph.memory._history_types import (
    Conversation,
    ConversationMetadata,
    ConversationPage,
    ErasureReport,
    InvalidMessageError,
    MessagePage,
    ModelPrice,
    Permission,
    StoredMessage,
    TokenUsage,
    UsageTotals,
)

__all__ = ["AsyncConversationStore", "ConversationStore"]

WHAT = "conversation"


def _check_time(value: object, what: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    raise ConfigurationError(f"{what} must be a datetime, got {type(value).__name__}")


class _StoreCalls:
    """Validates arguments and builds the store's calls (no I/O)."""

    __slots__ = ("ops",)

    def __init__(self, ops: HistoryOps) -> None:
        self.ops = ops

    def subject(self, conversation_id: str) -> str:
        return self.ops.describe(WHAT, conversation_id)

    def create_conversation(
        self,
        agent_id: str | None,
        user_id: str | None,
        metadata: ConversationMetadata | None,
        conversation_id: str | None,
    ) -> Call[Conversation]:
        ops = self.ops
        cid = (
            check_id(conversation_id, "conversation_id")
            if conversation_id is not None
            else str(uuid.uuid4())
        )
        agent = check_optional_id(agent_id, "agent_id")
        user = check_optional_id(user_id, "user_id")
        meta = metadata if metadata is not None else ConversationMetadata()
        if not isinstance(meta, ConversationMetadata):
            raise ConfigurationError(
                f"metadata must be a ConversationMetadata, got {type(meta).__name__}"
            )
        settings = check_json(meta.settings, "settings")
        details = ops.encode_details(cid, meta.title, meta.context)
        participants: dict[str, Permission] = {
            check_id(p, "participant"): "write" for p in meta.participants
        }

        def op() -> Any:
            row = yield from ops.create(
                cid,
                what=WHAT,
                user_id=user,
                agent_id=agent,
                tags=meta.tags,
                settings=settings,
                details=details,
                participants=participants,
            )
            return ops.conversation(row, [])

        return Call(op, subject=self.subject(cid))

    def add_messages(
        self,
        conversation_id: str,
        messages: Sequence[BaseMessage],
        *,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        run_id: str | None = None,
        skip_existing: bool = False,
    ) -> Call[list[StoredMessage]]:
        ops = self.ops
        cid = check_id(conversation_id, "conversation_id")
        run = check_optional_id(run_id, "run_id")
        if isinstance(messages, BaseMessage) or not isinstance(messages, Sequence):
            raise InvalidMessageError(
                f"expected a sequence of messages, got {type(messages).__name__}"
            )

        def plan_for(known: set[str]) -> AppendPlan:
            keep = [i for i, m in enumerate(messages) if not m.id or m.id not in known]
            return ops.plan_append(
                cid,
                [messages[i] for i in keep],
                usages=[token_usage[i] for i in keep] if token_usage is not None else None,
                metadata=[metadata[i] for i in keep] if metadata is not None else None,
                run_ids=[run] * len(keep) if run is not None else None,
            )

        if token_usage is not None and len(token_usage) != len(messages):
            raise ConfigurationError(
                f"token_usage has {len(token_usage)} entries for {len(messages)} messages"
            )
        if metadata is not None and len(metadata) != len(messages):
            raise ConfigurationError(
                f"metadata has {len(metadata)} entries for {len(messages)} messages"
            )
        plan = plan_for(set())

        def op() -> Any:
            if not plan.message_ids:
                found = yield from ops.get_row(cid)
                ops.require(found, cid, what=WHAT)
                return []
            if skip_existing:
                done, placed = yield from ops.append_new(plan, plan_for, upsert=False, what=WHAT)
                return ops.stored(done, placed)
            placed = yield from ops.append(plan, upsert=False, what=WHAT, returning=True)
            return ops.stored(plan, placed)

        return Call(op, transaction=skip_existing, subject=self.subject(cid))

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        token_usage: TokenUsage | None,
        metadata: Mapping[str, Any] | None,
        *,
        message_id: str | None,
        name: str | None,
        tool_call_id: str | None,
        run_id: str | None,
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
        inner = self.add_messages(
            conversation_id,
            [message],
            token_usage=[token_usage],
            metadata=[metadata],
            run_id=run_id,
        )

        def op() -> Any:
            stored = yield from inner.op()
            return stored[0]

        return Call(op, subject=inner.subject)

    def get_conversation(self, conversation_id: str, include_messages: bool) -> Call[Conversation]:
        ops = self.ops
        cid = check_id(conversation_id, "conversation_id")

        def op() -> Any:
            row = ops.require((yield from ops.get_row(cid)), cid, what=WHAT)
            messages = (yield from ops.read_stored(cid)) if include_messages else None
            return ops.conversation(row, messages)

        return Call(op, read=True, subject=self.subject(cid))

    def get_messages(
        self, conversation_id: str, limit: int | None, cursor: str | None, newest_first: bool
    ) -> Call[MessagePage]:
        ops = self.ops
        cid = check_id(conversation_id, "conversation_id")
        if limit is not None:
            check_count("limit", limit)

        if limit is None and cursor is not None:
            raise ConfigurationError("a cursor needs a limit")

        def op() -> Any:
            row = ops.require((yield from ops.get_row(cid)), cid, what=WHAT)
            if limit is None:
                messages = yield from ops.read_stored(cid)
                if newest_first:
                    messages.reverse()
                return MessagePage(messages, None)
            page: MessagePage = yield from ops.page(row, limit, cursor, newest_first)
            return page

        return Call(op, read=True, subject=self.subject(cid))

    def query_conversations(
        self,
        *,
        user_id: str | None,
        agent_id: str | None,
        created_after: datetime | None,
        created_before: datetime | None,
        tags: Sequence[str] | None,
        min_messages: int | None,
        order_by: str,
        include_messages: bool,
        limit: int,
        cursor: str | None,
    ) -> Call[ConversationPage]:
        ops = self.ops
        if order_by not in ORDER_COLUMNS:
            raise ConfigurationError(
                f"order_by {order_by!r} is not one of {', '.join(sorted(ORDER_COLUMNS))}"
            )
        check_count("limit", limit)
        filters: dict[str, Any] = {}
        if user_id is not None:
            filters["user_id"] = check_id(user_id, "user_id")
        if agent_id is not None:
            filters["agent_id"] = check_id(agent_id, "agent_id")
        if (after_time := _check_time(created_after, "created_after")) is not None:
            filters["created_after"] = after_time
        if (before_time := _check_time(created_before, "created_before")) is not None:
            filters["created_before"] = before_time
        if tags is not None:
            if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
                raise ConfigurationError(f"tags must be a sequence of strings, got {tags!r}")
            if tags:
                filters["tags"] = list(tags)
        if min_messages is not None:
            if isinstance(min_messages, bool) or not isinstance(min_messages, int):
                raise ConfigurationError(f"min_messages must be an integer, got {min_messages!r}")
            filters["min_messages"] = min_messages
        after = decode_conversation_cursor(cursor) if cursor is not None else None

        def op() -> Any:
            if limit == 0:
                return ConversationPage([], None)
            rows, messages = yield from ops.query(
                filters,
                order=order_by,
                after=after,
                limit=limit + 1,
                include_messages=include_messages,
            )
            more = len(rows) > limit
            rows = rows[:limit]
            convs = [
                ops.conversation(r, messages.get(r.conversation_id) if include_messages else None)
                for r in rows
            ]
            next_cursor = None
            if more and rows:
                last = rows[-1]
                next_cursor = encode_conversation_cursor(
                    getattr(last, order_by), last.conversation_id
                )
            return ConversationPage(convs, next_cursor)

        return Call(op, read=True, route="replica", subject="conversations")

    def usage(self, conversation_id: str) -> Call[UsageTotals]:
        ops = self.ops
        cid = check_id(conversation_id, "conversation_id")

        def op() -> Any:
            ops.require((yield from ops.get_row(cid)), cid, what=WHAT, live=False)
            totals: UsageTotals = yield from ops.usage(cid)
            return totals

        return Call(op, read=True, subject=self.subject(cid))

    def user_usage(
        self, user_id: str, since: datetime | None, until: datetime | None
    ) -> Call[UsageTotals]:
        ops = self.ops
        user = check_id(user_id, "user_id")
        start = _check_time(since, "since")
        end = _check_time(until, "until")
        return Call(
            lambda: ops.usage_of_user(user, start, end),
            read=True,
            route="replica",
            subject=f"user {user!r}",
        )

    def delete_conversation(self, conversation_id: str) -> Call[ErasureReport]:
        ops = self.ops
        cid = check_id(conversation_id, "conversation_id")

        def op() -> Any:
            rows = yield from ops.lock_rows([cid])
            ops.require(rows.get(cid), cid, what=WHAT, live=False)
            report: ErasureReport = yield from ops.delete_set([cid])
            return report

        return Call(op, transaction=True, subject=self.subject(cid))

    def delete_user_data(self, user_id: str) -> Call[ErasureReport]:
        ops = self.ops
        user = check_id(user_id, "user_id")
        return Call(lambda: ops.erase_user(user), transaction=True, subject=f"user {user!r}")


class ConversationStore(SyncClient):
    """Conversations of users with agents: messages, metadata, token usage and cost (sync).

    Conversations live in the same tables as chat histories and sessions: a
    history's ``session_id`` is a conversation id.

    Args:
        conn: A DSN (a pool is opened and owned; call :meth:`close`), ``None``
            (the default server: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            then the embedded one), a psycopg ``Connection`` (autocommit, any
            row factory) or a ``ConnectionPool``. Or use :meth:`from_conn_string`.
        tenant_id: Tenant of the rows (default from the config: ``""``).
        prices: Model name -> :class:`ModelPrice`; fills in the cost of usage
            that has none (a name matches itself or any model it prefixes).
        schema: Schema of the tables (default ``haive``).
        codec: Frames, compresses and encrypts message bodies, titles and context.
        serde: Serializer of message fields (LangGraph's, strict allow-list).
        config: Connection and server settings.
        max_message_bytes: Largest serialised message accepted.

    Example:
        >>> store = ConversationStore(dsn, prices={"gpt-4o": ModelPrice("2.5", "10")})
        >>> store.setup()
        >>> conv = store.create_conversation("support-bot", "user-1",
        ...     metadata=ConversationMetadata(title="Billing", tags=["billing"]))
        >>> store.add_message(conv.conversation_id, "user", "Why was I charged twice?")
    """

    def __init__(
        self,
        conn: SyncConn = None,
        *,
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
        self._calls = _StoreCalls(ops)
        self._init_client(conn, config, ops)

    def create_conversation(
        self,
        agent_id: str | None = None,
        user_id: str | None = None,
        metadata: ConversationMetadata | None = None,
        *,
        conversation_id: str | None = None,
    ) -> Conversation:
        """Create a conversation.

        Args:
            agent_id: The agent it is with.
            user_id: The user it belongs to.
            metadata: Title, tags, context, participants, settings.
            conversation_id: Its id (a new UUID by default).

        Raises:
            ConversationExistsError: ``conversation_id`` is taken.
        """
        return self._run(
            self._calls.create_conversation(agent_id, user_id, metadata, conversation_id)
        )

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        token_usage: TokenUsage | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        message_id: str | None = None,
        name: str | None = None,
        tool_call_id: str | None = None,
        run_id: str | None = None,
    ) -> StoredMessage:
        """Append one message (one statement).

        Args:
            conversation_id: The conversation.
            role: ``"human"``/``"user"``, ``"ai"``/``"assistant"``, ``"system"``,
                ``"tool"`` (with ``tool_call_id``) or ``"function"`` (with ``name``).
            content: Text or a list of content blocks.
            token_usage: Usage of the call that produced it; its cost comes
                from the price table when not given.
            metadata: Stored with the message (through the codec).
            message_id: Its id (a new UUID by default).
            name: Name of the speaker, tool or function.
            tool_call_id: The tool call a ``tool`` message answers.
            run_id: The run that produced it.

        Raises:
            ConversationNotFoundError: No such conversation.
            InvalidMessageError: Unknown role, bad content, negative token
                counts or a message over ``max_message_bytes``.
        """
        return self._run(
            self._calls.add_message(
                conversation_id,
                role,
                content,
                token_usage,
                metadata,
                message_id=message_id,
                name=name,
                tool_call_id=tool_call_id,
                run_id=run_id,
            )
        )

    def add_messages(
        self,
        conversation_id: str,
        messages: Sequence[BaseMessage],
        *,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        run_id: str | None = None,
        skip_existing: bool = False,
    ) -> list[StoredMessage]:
        """Append LangChain messages (one statement; all or nothing).

        Token usage of AI messages is read from their ``usage_metadata``
        unless given (one entry per message, ``None`` to read it).

        Args:
            conversation_id: The conversation.
            messages: The messages, in order.
            token_usage: Per-message usage overrides.
            metadata: Per-message metadata.
            run_id: The run that produced them.
            skip_existing: Leave out messages whose id the conversation holds.

        Raises:
            ConversationNotFoundError: No such conversation.
            InvalidMessageError: A bad message; nothing is written.
        """
        return self._run(
            self._calls.add_messages(
                conversation_id,
                messages,
                token_usage=token_usage,
                metadata=metadata,
                run_id=run_id,
                skip_existing=skip_existing,
            )
        )

    def get_conversation(
        self, conversation_id: str, *, include_messages: bool = True
    ) -> Conversation:
        """A conversation with its messages (or without, ``include_messages=False``).

        Raises:
            ConversationNotFoundError: No such conversation.
        """
        return self._run(self._calls.get_conversation(conversation_id, include_messages))

    def get_messages(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> MessagePage:
        """Messages of a conversation: all of them, or a page of ``limit`` after ``cursor``."""
        return self._run(self._calls.get_messages(conversation_id, limit, cursor, newest_first))

    def query_conversations(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        tags: Sequence[str] | None = None,
        min_messages: int | None = None,
        order_by: str = "last_message_at",
        include_messages: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ConversationPage:
        """Conversations matching every filter given, newest first by ``order_by``.

        Args:
            user_id: Owned by this user.
            agent_id: With this agent.
            created_after: Created after this time.
            created_before: Created before this time.
            tags: Carrying all of these tags.
            min_messages: Holding at least this many messages.
            order_by: ``"last_message_at"``, ``"created_at"`` or ``"updated_at"``.
            include_messages: Load each conversation's messages too.
            limit: Page size.
            cursor: ``next_cursor`` of the previous page.
        """
        return self._run(
            self._calls.query_conversations(
                user_id=user_id,
                agent_id=agent_id,
                created_after=created_after,
                created_before=created_before,
                tags=tags,
                min_messages=min_messages,
                order_by=order_by,
                include_messages=include_messages,
                limit=limit,
                cursor=cursor,
            )
        )

    def conversation_usage(self, conversation_id: str) -> UsageTotals:
        """Tokens and cost of a conversation's messages, in total and per model."""
        return self._run(self._calls.usage(conversation_id))

    def user_usage(
        self, user_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> UsageTotals:
        """Tokens and cost over a user's conversations, optionally in a time window."""
        return self._run(self._calls.user_usage(user_id, since, until))

    def delete_conversation(self, conversation_id: str) -> ErasureReport:
        """Delete a conversation and its messages (branches of it keep theirs).

        Raises:
            ConversationNotFoundError: No such conversation.
        """
        return self._run(self._calls.delete_conversation(conversation_id))

    def delete_user_data(self, user_id: str) -> ErasureReport:
        """Erase a user: their conversations, their messages in others' sessions, their
        participation. One transaction; returns the rows removed."""
        return self._run(self._calls.delete_user_data(user_id))


class AsyncConversationStore(AsyncClient):
    """Asyncio twin of :class:`ConversationStore` (``a``-prefixed methods).

    Args:
        conn: A DSN (an async pool is opened on first use and owned), ``None``
            (the default server), an ``AsyncConnection`` (autocommit, any row
            factory) or an ``AsyncConnectionPool``.
        **options: As :class:`ConversationStore`.
    """

    def __init__(
        self,
        conn: AsyncConn = None,
        *,
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
        self._calls = _StoreCalls(ops)
        self._init_client(conn, config, ops)

    async def acreate_conversation(
        self,
        agent_id: str | None = None,
        user_id: str | None = None,
        metadata: ConversationMetadata | None = None,
        *,
        conversation_id: str | None = None,
    ) -> Conversation:
        """See :meth:`ConversationStore.create_conversation`."""
        return await self._arun(
            self._calls.create_conversation(agent_id, user_id, metadata, conversation_id)
        )

    async def aadd_message(
        self,
        conversation_id: str,
        role: str,
        content: str | list[str | dict[str, Any]],
        token_usage: TokenUsage | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        message_id: str | None = None,
        name: str | None = None,
        tool_call_id: str | None = None,
        run_id: str | None = None,
    ) -> StoredMessage:
        """See :meth:`ConversationStore.add_message`."""
        return await self._arun(
            self._calls.add_message(
                conversation_id,
                role,
                content,
                token_usage,
                metadata,
                message_id=message_id,
                name=name,
                tool_call_id=tool_call_id,
                run_id=run_id,
            )
        )

    async def aadd_messages(
        self,
        conversation_id: str,
        messages: Sequence[BaseMessage],
        *,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        run_id: str | None = None,
        skip_existing: bool = False,
    ) -> list[StoredMessage]:
        """See :meth:`ConversationStore.add_messages`."""
        return await self._arun(
            self._calls.add_messages(
                conversation_id,
                messages,
                token_usage=token_usage,
                metadata=metadata,
                run_id=run_id,
                skip_existing=skip_existing,
            )
        )

    async def aget_conversation(
        self, conversation_id: str, *, include_messages: bool = True
    ) -> Conversation:
        """See :meth:`ConversationStore.get_conversation`."""
        return await self._arun(self._calls.get_conversation(conversation_id, include_messages))

    async def aget_messages(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> MessagePage:
        """See :meth:`ConversationStore.get_messages`."""
        return await self._arun(
            self._calls.get_messages(conversation_id, limit, cursor, newest_first)
        )

    async def aquery_conversations(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        tags: Sequence[str] | None = None,
        min_messages: int | None = None,
        order_by: str = "last_message_at",
        include_messages: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ConversationPage:
        """See :meth:`ConversationStore.query_conversations`."""
        return await self._arun(
            self._calls.query_conversations(
                user_id=user_id,
                agent_id=agent_id,
                created_after=created_after,
                created_before=created_before,
                tags=tags,
                min_messages=min_messages,
                order_by=order_by,
                include_messages=include_messages,
                limit=limit,
                cursor=cursor,
            )
        )

    async def aconversation_usage(self, conversation_id: str) -> UsageTotals:
        """See :meth:`ConversationStore.conversation_usage`."""
        return await self._arun(self._calls.usage(conversation_id))

    async def auser_usage(
        self, user_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> UsageTotals:
        """See :meth:`ConversationStore.user_usage`."""
        return await self._arun(self._calls.user_usage(user_id, since, until))

    async def adelete_conversation(self, conversation_id: str) -> ErasureReport:
        """See :meth:`ConversationStore.delete_conversation`."""
        return await self._arun(self._calls.delete_conversation(conversation_id))

    async def adelete_user_data(self, user_id: str) -> ErasureReport:
        """See :meth:`ConversationStore.delete_user_data`."""
        return await self._arun(self._calls.delete_user_data(user_id))
