"""Conversations with owners, agents, metadata, token usage and cost.

``ConversationStore`` (sync) and ``AsyncConversationStore`` (asyncio) run the
same calls, built by :class:`_StoreCalls`, and only differ in how they run them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, Unpack

from langchain_core.messages import BaseMessage

from haive_langgraph.db._call import Call
from haive_langgraph.db._connections import AsyncConn, SyncConn
from haive_langgraph.db._driver import Op
from haive_langgraph.db._limits import check_count
from haive_langgraph.db._methods import async_method, sync_method
from haive_langgraph.errors import ConfigurationError, InvalidMessageError
from haive_langgraph.memory.conversations import _erasure, _messages, _rows
from haive_langgraph.memory.conversations._checks import (
    check_id,
    check_json,
    check_optional_id,
    check_page,
    check_time,
    decode_conversation_cursor,
    new_id,
)
from haive_langgraph.memory.conversations._client import (
    AsyncClient,
    ConnT,
    SyncClient,
    _Client,
)
from haive_langgraph.memory.conversations._plan import AppendPlan
from haive_langgraph.memory.conversations._sql_conversations import ORDER_COLUMNS
from haive_langgraph.memory.conversations._tables import PricedOptions, make_tables
from haive_langgraph.memory.conversations._types import (
    Conversation,
    ConversationMetadata,
    ConversationPage,
    ErasureReport,
    MessagePage,
    Permission,
    StoredMessage,
    TokenUsage,
    UsageTotals,
)

__all__ = ["AsyncConversationStore", "ConversationStore"]

WHAT = "conversation"


class _StoreCalls(_Client, Generic[ConnT]):
    """Validates arguments and builds the store's calls (no I/O)."""

    def __init__(self, conn: ConnT = None, **options: Unpack[PricedOptions]) -> None:
        config, tables = make_tables(**options)
        self._init_client(conn, config, tables)

    def _subject(self, conversation_id: str) -> str:
        return self._tables.describe(WHAT, conversation_id)

    def _create_conversation(
        self,
        agent_id: str | None = None,
        user_id: str | None = None,
        metadata: ConversationMetadata | None = None,
        *,
        conversation_id: str | None = None,
    ) -> Call[Conversation]:
        """Create a conversation.

        Args:
            agent_id: The agent it is with.
            user_id: The user it belongs to.
            metadata: Title, tags, context, participants, settings.
            conversation_id: Its id (a new UUID by default).

        Raises:
            ConversationExistsError: ``conversation_id`` is taken.
        """
        t = self._tables
        cid = (
            check_id(conversation_id, "conversation_id")
            if conversation_id is not None
            else new_id()
        )
        agent = check_optional_id(agent_id, "agent_id")
        user = check_optional_id(user_id, "user_id")
        meta = metadata if metadata is not None else ConversationMetadata()
        if not isinstance(meta, ConversationMetadata):
            raise ConfigurationError(
                f"metadata must be a ConversationMetadata, got {type(meta).__name__}"
            )
        settings = check_json(meta.settings, "settings")
        details = t.encode_details(cid, meta.title, meta.context)
        participants: dict[str, Permission] = {
            check_id(p, "participant"): "write" for p in meta.participants
        }

        def op() -> Op[Conversation]:
            row = yield from _rows.create(
                t,
                cid,
                what=WHAT,
                user_id=user,
                agent_id=agent,
                tags=meta.tags,
                settings=settings,
                details=details,
                participants=participants,
            )
            return t.conversation(row, [])

        return t.call(op, subject=self._subject(cid))

    def _add_message(
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
    ) -> Call[StoredMessage]:
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
        message = _messages.message_of(role, content, token_usage, message_id, name, tool_call_id)
        return _messages.only(
            self._add_messages(
                conversation_id,
                [message],
                token_usage=[token_usage],
                metadata=[metadata],
                run_id=run_id,
            )
        )

    def _add_messages(
        self,
        conversation_id: str,
        messages: Sequence[BaseMessage],
        *,
        token_usage: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        run_id: str | None = None,
        skip_existing: bool = False,
    ) -> Call[list[StoredMessage]]:
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
        t = self._tables
        cid = check_id(conversation_id, "conversation_id")
        run = check_optional_id(run_id, "run_id")
        if isinstance(messages, BaseMessage) or not isinstance(messages, Sequence):
            raise InvalidMessageError(
                f"expected a sequence of messages, got {type(messages).__name__}"
            )
        for what, values in (("token_usage", token_usage), ("metadata", metadata)):
            if values is not None and len(values) != len(messages):
                raise ConfigurationError(
                    f"{what} has {len(values)} entries for {len(messages)} messages"
                )

        def plan_for(known: set[str]) -> AppendPlan:
            keep = [i for i, m in enumerate(messages) if not m.id or m.id not in known]
            return t.planner.plan(
                cid,
                [messages[i] for i in keep],
                usages=[token_usage[i] for i in keep] if token_usage is not None else None,
                metadata=[metadata[i] for i in keep] if metadata is not None else None,
                run_ids=[run] * len(keep) if run is not None else None,
            )

        plan = plan_for(set())

        def op() -> Op[list[StoredMessage]]:
            if not plan.message_ids:
                found = yield from _rows.get_row(t, cid)
                t.require(found, cid, what=WHAT)
                return []
            if skip_existing:
                done, at = yield from _messages.append_new(
                    t, plan, plan_for, upsert=False, what=WHAT
                )
                return _messages.stored(done, at)
            placed = yield from _messages.append(t, plan, upsert=False, what=WHAT, returning=True)
            return _messages.stored(plan, placed)

        return t.call(op, transaction=skip_existing, subject=self._subject(cid))

    def _get_conversation(
        self, conversation_id: str, *, include_messages: bool = True
    ) -> Call[Conversation]:
        """A conversation with its messages (or without, ``include_messages=False``).

        Raises:
            ConversationNotFoundError: No such conversation.
        """
        t = self._tables
        cid = check_id(conversation_id, "conversation_id")

        def op() -> Op[Conversation]:
            row = t.require((yield from _rows.get_row(t, cid)), cid, what=WHAT)
            messages = (yield from _messages.read_stored(t, cid)) if include_messages else None
            return t.conversation(row, messages)

        return t.call(op, read=True, subject=self._subject(cid))

    def _get_messages(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Call[MessagePage]:
        """Messages of a conversation: all of them, or a page of ``limit`` after ``cursor``."""
        t = self._tables
        cid = check_id(conversation_id, "conversation_id")
        check_page(limit, cursor)

        def op() -> Op[MessagePage]:
            row = t.require((yield from _rows.get_row(t, cid)), cid, what=WHAT)
            page: MessagePage = yield from _messages.page_or_all(
                t, row, limit, cursor, newest_first
            )
            return page

        return t.call(op, read=True, subject=self._subject(cid))

    def _query_conversations(
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
    ) -> Call[ConversationPage]:
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
        t = self._tables
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
        if (after_time := check_time(created_after, "created_after")) is not None:
            filters["created_after"] = after_time
        if (before_time := check_time(created_before, "created_before")) is not None:
            filters["created_before"] = before_time
        if tags is not None:
            if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
                raise ConfigurationError(f"tags must be a sequence of strings, got {tags!r}")
            if tags:
                filters["tags"] = list(tags)
        if min_messages is not None:
            if isinstance(min_messages, bool) or not isinstance(min_messages, int):
                raise ConfigurationError(f"min_messages must be an integer, got {min_messages!r}")
            filters["min_messages"] = min_messages
        after = decode_conversation_cursor(cursor)

        def op() -> Op[ConversationPage]:
            rows, messages, next_cursor = yield from _rows.query(
                t,
                filters,
                order=order_by,
                after=after,
                limit=limit,
                include_messages=include_messages,
            )
            convs = [t.conversation(r, messages.get(r.conversation_id)) for r in rows]
            return ConversationPage(convs, next_cursor)

        return t.call(op, read=True, route="replica", subject="conversations")

    def _conversation_usage(self, conversation_id: str) -> Call[UsageTotals]:
        """Tokens and cost of a conversation's messages, in total and per model."""
        t = self._tables
        cid = check_id(conversation_id, "conversation_id")

        def op() -> Op[UsageTotals]:
            t.require((yield from _rows.get_row(t, cid)), cid, what=WHAT, live=False)
            totals: UsageTotals = yield from _rows.usage(t, cid)
            return totals

        return t.call(op, read=True, subject=self._subject(cid))

    def _user_usage(
        self, user_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> Call[UsageTotals]:
        """Tokens and cost over a user's conversations, optionally in a time window."""
        t = self._tables
        user = check_id(user_id, "user_id")
        start = check_time(since, "since")
        end = check_time(until, "until")
        return t.call(
            lambda: _rows.usage_of_user(t, user, start, end),
            read=True,
            route="replica",
            subject=f"user {user!r}",
        )

    def _delete_conversation(self, conversation_id: str) -> Call[ErasureReport]:
        """Delete a conversation and its messages (branches of it keep theirs).

        Raises:
            ConversationNotFoundError: No such conversation.
        """
        t = self._tables
        cid = check_id(conversation_id, "conversation_id")

        def op() -> Op[ErasureReport]:
            rows = yield from _rows.lock_rows(t, [cid])
            t.require(rows.get(cid), cid, what=WHAT, live=False)
            report: ErasureReport = yield from _erasure.delete_set(t, [cid])
            return report

        return t.call(op, transaction=True, subject=self._subject(cid))

    def _delete_user_data(self, user_id: str) -> Call[ErasureReport]:
        """Erase a user: their conversations, their messages in others' sessions, their
        participation. One transaction; returns the rows removed."""
        t = self._tables
        user = check_id(user_id, "user_id")
        return t.call(
            lambda: _erasure.erase_user(t, user), transaction=True, subject=f"user {user!r}"
        )


class ConversationStore(SyncClient, _StoreCalls[SyncConn]):
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

    create_conversation = sync_method(_StoreCalls._create_conversation)
    add_message = sync_method(_StoreCalls._add_message)
    add_messages = sync_method(_StoreCalls._add_messages)
    get_conversation = sync_method(_StoreCalls._get_conversation)
    get_messages = sync_method(_StoreCalls._get_messages)
    query_conversations = sync_method(_StoreCalls._query_conversations)
    conversation_usage = sync_method(_StoreCalls._conversation_usage)
    user_usage = sync_method(_StoreCalls._user_usage)
    delete_conversation = sync_method(_StoreCalls._delete_conversation)
    delete_user_data = sync_method(_StoreCalls._delete_user_data)


class AsyncConversationStore(AsyncClient, _StoreCalls[AsyncConn]):
    """:class:`ConversationStore` for asyncio: each method ``a``-prefixed
    (``aadd_messages``, ``aquery_conversations`` ...), the same options, and as
    ``conn`` an ``AsyncConnection``, an ``AsyncConnectionPool``, a DSN (the store
    opens and owns an async pool on first use) or ``None`` (the default server)."""

    acreate_conversation = async_method(_StoreCalls._create_conversation)
    aadd_message = async_method(_StoreCalls._add_message)
    aadd_messages = async_method(_StoreCalls._add_messages)
    aget_conversation = async_method(_StoreCalls._get_conversation)
    aget_messages = async_method(_StoreCalls._get_messages)
    aquery_conversations = async_method(_StoreCalls._query_conversations)
    aconversation_usage = async_method(_StoreCalls._conversation_usage)
    auser_usage = async_method(_StoreCalls._user_usage)
    adelete_conversation = async_method(_StoreCalls._delete_conversation)
    adelete_user_data = async_method(_StoreCalls._delete_user_data)
