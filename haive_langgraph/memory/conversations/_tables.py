"""The conversation tables of one schema, as one tenant sees them.

:class:`ConversationTables` holds what every operation needs: the rendered
statements, the tenant, the codecs and the price table; it describes rows in
messages, checks them (:meth:`~ConversationTables.require`), encodes their
details, turns them into public values, and builds the :class:`Call` that
runs an operation (mapping the errors our SQL checks raise). The operations
themselves are generator functions grouped by what they act on: ``_rows``
(conversation rows), ``_messages``, ``_erasure``, ``_participants``,
``_branches``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict, TypeVar, Unpack

import psycopg
from langgraph.checkpoint.serde.base import SerializerProtocol

from haive_langgraph.codec import Codec, default_codec
from haive_langgraph.db._call import Call, ErrorMap
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import OpFactory
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.db._render import render
from haive_langgraph.db._replicas import Route
from haive_langgraph.db._tenancy import TenantScope, validate_tenant_id
from haive_langgraph.errors import (
    ConfigurationError,
    ConversationNotFoundError,
    CorruptDataError,
    PermissionDeniedError,
    QuotaExceededError,
    SerializationError,
    SessionExpiredError,
    ValueTooLargeError,
)
from haive_langgraph.memory.conversations import _sql as S
from haive_langgraph.memory.conversations import _sql_conversations as SC
from haive_langgraph.memory.conversations import _sql_messages as SM
from haive_langgraph.memory.conversations._checks import check_positive
from haive_langgraph.memory.conversations._codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MessageCodec,
    details_context,
)
from haive_langgraph.memory.conversations._plan import AppendPlanner
from haive_langgraph.memory.conversations._types import (
    PERMISSION_RANK,
    Conversation,
    ConversationMetadata,
    ModelPrice,
    Permission,
    Session,
)

T = TypeVar("T")

SESSION = "session"
"""What a session manager calls its rows in messages."""
VERBS = {"read": "read", "write": "write to", "moderate": "moderate"}


# See ConvRow.activity.
_ACTIVITY = (
    "user_id",
    "agent_id",
    "created_at",
    "updated_at",
    "last_message_at",
    "message_count",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
)


@dataclass(frozen=True, slots=True)
class ConvRow:
    """A ``conversations`` row as read (see ``CONVERSATION_COLUMNS``)."""

    conversation_id: str
    user_id: str | None
    agent_id: str | None
    parent_id: str | None
    branch_seq: int
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime
    message_count: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: Decimal
    tags: list[str]
    settings: dict[str, Any]
    details: bytes | None
    ttl: timedelta | None
    expires_at: datetime | None
    max_messages: int | None
    expired: bool
    max_chunk: int
    participants: dict[str, Permission]

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> ConvRow:
        """The row as the statements' ``{columns}`` return it."""
        return cls(
            conversation_id=r[0],
            user_id=r[1],
            agent_id=r[2],
            parent_id=r[3],
            branch_seq=int(r[4]),
            created_at=r[5],
            updated_at=r[6],
            last_message_at=r[7],
            message_count=int(r[8]),
            input_tokens=int(r[9]),
            output_tokens=int(r[10]),
            total_tokens=int(r[11]),
            cost=r[12],
            tags=list(r[13] or []),
            settings=dict(r[14] or {}),
            details=bytes(r[15]) if r[15] is not None else None,
            ttl=r[16],
            expires_at=r[17],
            max_messages=int(r[18]) if r[18] is not None else None,
            expired=bool(r[19]),
            max_chunk=int(r[20]),
            participants=dict(zip(r[21] or [], r[22] or [], strict=True)),
        )

    def activity(self) -> dict[str, Any]:
        """The fields a :class:`Conversation` and a :class:`Session` take from the row as
        they are: owner, agent, timestamps, message count and usage totals."""
        return {name: getattr(self, name) for name in _ACTIVITY}

    def permission_of(self, user_id: str | None) -> int:
        """The rank of what ``user_id`` may do (the owner moderates; 0: nothing)."""
        if user_id is not None and user_id == self.user_id:
            return PERMISSION_RANK["moderate"]
        perm = self.participants.get(user_id) if user_id is not None else None
        return PERMISSION_RANK[perm] if perm is not None else 0


def sql_errors(subject: str, actor: str | None) -> ErrorMap:
    """Maps the checks that fail in our SQL (``HM4xx`` states) to our errors.

    Args:
        subject: What the call acts on (``"session 'abc'"``).
        actor: The acting user, for permission errors.
    """

    def mapped(exc: psycopg.Error) -> Exception | None:
        state = exc.sqlstate
        detail = exc.diag.message_primary or ""
        if state == S.PERMISSION_SQLSTATE:
            need = detail if detail in VERBS else "write"
            return PermissionDeniedError(
                f"user {actor!r} may not {VERBS[need]} {subject}: it needs {need} "
                f"permission (owner, or a participant with {need} or higher)"
            )
        if state == S.EXPIRED_SQLSTATE:
            return SessionExpiredError(f"{subject} has expired (past its TTL); nothing was written")
        if state == S.LIMIT_SQLSTATE:
            return QuotaExceededError(
                f"{subject} {detail}: the messages would exceed it; nothing was written"
            )
        return None

    return mapped


class ConversationTables:
    """Statements of one schema, the tenant, the codecs and the prices."""

    def __init__(
        self,
        *,
        schema: str,
        tenant_id: str,
        codec: Codec,
        serde: SerializerProtocol | None,
        max_message_bytes: int,
        prices: Mapping[str, ModelPrice] | None,
    ) -> None:
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int):
            raise ConfigurationError(
                f"max_message_bytes must be a positive integer, got {max_message_bytes!r}"
            )
        check_positive(max_message_bytes, "max_message_bytes")
        for name, price in (prices or {}).items():
            if not isinstance(name, str) or not isinstance(price, ModelPrice):
                raise ConfigurationError(
                    f"prices maps model names to ModelPrice, got {name!r}: {price!r}"
                )
        self.schema = schema
        self.tenant_id = tenant_id
        self.codec = codec
        self.messages = MessageCodec(codec, tenant_id, serde, max_message_bytes)
        self.prices: dict[str, ModelPrice] = dict(prices or {})
        self.planner = AppendPlanner(self.messages, tenant_id, self.prices, self.describe)
        self._scope_table = S.q(f"{{schema}}.{S.SCOPE_TABLE}", schema)

        def r(template: str, **fragments: str) -> str:
            return S.q(template, schema, **fragments)

        def chain(columns: str, live: str = "") -> str:
            return render(SM.READ_CHAIN, schema, columns=columns, live=live)

        self.read_bodies = chain(SM.BODY_COLUMNS, SM.READ_LIVE)
        self.read_bodies_any = chain(SM.BODY_COLUMNS)
        self.read_ids = chain(SM.ID_COLUMNS)
        self.read_records = chain(SM.RECORD_COLUMNS)
        self.version_chain = r(SM.VERSION_CHAIN)
        self.lock_for_append = r(SM.LOCK_FOR_APPEND)
        self.lock_for_append_upsert = r(SM.LOCK_FOR_APPEND_UPSERT)
        self.insert_chunk = r(SM.INSERT_CHUNK)
        self.note_chunks = r(SM.NOTE_CHUNKS)
        self.delete_own = r(SM.DELETE_OWN_MESSAGES)
        self.get_conversation = r(SC.GET_CONVERSATION)
        self.lock_conversations = r(SC.LOCK_CONVERSATIONS)
        self.pin_conversation = r(SC.PIN_CONVERSATION)
        self.create_conversation = r(SC.CREATE_CONVERSATION)
        self.conversation_usage = r(SC.CONVERSATION_USAGE)
        self.user_usage = r(SC.USER_USAGE)
        self.children = r(SC.CHILDREN)
        self.set_parent = r(SC.SET_PARENT)
        self.delete_messages_of = r(SC.DELETE_MESSAGES_OF)
        self.delete_participants_of = r(SC.DELETE_PARTICIPANTS_OF)
        self.delete_conversations = r(SC.DELETE_CONVERSATIONS)
        self.user_conversations = r(SC.USER_CONVERSATIONS)
        self.expired_conversations = r(SC.EXPIRED_CONVERSATIONS)
        self.delete_user_messages = r(SC.DELETE_USER_MESSAGES)
        self.delete_user_participation = r(SC.DELETE_USER_PARTICIPATION)
        self.recount = r(SC.RECOUNT)
        self.set_details = r(SC.SET_DETAILS)
        upsert = SC.UPSERT_PARTICIPANTS
        self.participants_replace = r(upsert, conflict=SC.PARTICIPANTS_REPLACE)
        self.participants_keep = r(upsert, conflict=SC.PARTICIPANTS_KEEP)
        self.delete_participant = r(SC.DELETE_PARTICIPANT)
        self._append: dict[tuple[bool, ...], str] = {}
        self._query: dict[tuple[Any, ...], str] = {}

    def scope(self) -> TenantScope:
        """This tenant, bound for row-level security where it applies."""
        return TenantScope(self._scope_table, self.tenant_id)

    # -- calls ------------------------------------------------------------------------

    def call(
        self,
        op: OpFactory[T],
        *,
        subject: str,
        actor: str | None = None,
        transaction: bool = False,
        read: bool = False,
        route: Route = "fresh",
    ) -> Call[T]:
        """A call of ``op`` whose failed SQL checks raise our errors about ``subject``.

        Reads go to a replica that has replayed this instance's writes
        (``"fresh"``), or with ``route="replica"`` to any (listings and
        reports that may lag by up to ``max_replica_lag``).
        """
        return Call(
            op,
            transaction=transaction,
            read=read,
            route=route if read else "primary",
            errors=sql_errors(subject, actor),
        )

    def setup_call(self) -> Call[Any]:
        """Creates or upgrades the tables (idempotent; safe from many processes at once)."""
        schema = self.schema
        return Call(lambda: migrate_op([S.COMPONENT], schema), transaction=True)

    # -- statements built on first use ------------------------------------------------

    def append_statement(self, *, upsert: bool, actor: bool, returning: bool) -> str:
        """The append statement for these options (see ``_sql_messages.append_statement``)."""
        key = (upsert, actor, returning)
        stmt = self._append.get(key)
        if stmt is None:
            stmt = SM.append_statement(self.schema, upsert=upsert, actor=actor, returning=returning)
            self._append[key] = stmt
        return stmt

    def query_statement(self, filters: Sequence[str], order: str, after: bool) -> str:
        """The query of conversations matching ``filters`` (names of ``QUERY_FILTERS``)."""
        key = (tuple(filters), order, after)
        stmt = self._query.get(key)
        if stmt is None:
            column = SC.ORDER_COLUMNS[order]
            where = "".join(f"\n  AND {SC.QUERY_FILTERS[f]}" for f in filters)
            if after:
                where += "\n  " + SC.QUERY_AFTER.format(order=column)
            stmt = S.q(SC.QUERY_CONVERSATIONS, self.schema, where=where, order=column)
            self._query[key] = stmt
        return stmt

    # -- rows: describing and checking ------------------------------------------------

    def describe(self, what: str, conversation_id: str) -> str:
        """``"session 'abc' (tenant 't')"``: a row, named for messages."""
        tenant = f" (tenant {self.tenant_id!r})" if self.tenant_id else ""
        return f"{what} {conversation_id!r}{tenant}"

    def not_found(self, what: str, conversation_id: str) -> ConversationNotFoundError:
        """The error for a row that does not exist."""
        return ConversationNotFoundError(f"{self.describe(what, conversation_id)} not found")

    def require(
        self,
        row: ConvRow | None,
        conversation_id: str,
        *,
        what: str,
        actor: str | None = None,
        need: Permission | None = None,
        live: bool = True,
    ) -> ConvRow:
        """``row``, after checking it exists, is not expired and ``actor`` may ``need``."""
        if row is None:
            raise self.not_found(what, conversation_id)
        if live and row.expired:
            raise SessionExpiredError(
                f"{self.describe(what, conversation_id)} has expired (past its TTL)"
            )
        if need is not None and row.permission_of(actor) < PERMISSION_RANK[need]:
            raise PermissionDeniedError(
                f"user {actor!r} may not {VERBS[need]} {self.describe(what, conversation_id)}: "
                f"it needs {need} permission (owner, or a participant with {need} or higher)"
            )
        return row

    # -- rows: details (title and context, through the codec) ----------------------------

    def encode_details(
        self, conversation_id: str, title: str | None, context: Mapping[str, Any]
    ) -> bytes | None:
        """The ``details`` column: title and context serialised and framed for the row."""
        if title is None and not context:
            return None
        try:
            kind, payload = self.messages.serde.dumps_typed(
                {"title": title, "context": dict(context)}
            )
        except Exception as exc:
            raise SerializationError(
                f"context of {self.describe('conversation', conversation_id)} could not be "
                f"serialised: {exc}"
            ) from None
        if kind != "msgpack":
            raise SerializationError(f"context serialised as {kind!r}; only msgpack is stored")
        try:
            return self.codec.encode(payload, details_context(self.tenant_id, conversation_id))
        except ValueTooLargeError as exc:
            raise exc.about(
                f"title and context of {self.describe('conversation', conversation_id)}"
            ) from None

    def decode_details(self, row: ConvRow) -> tuple[str | None, dict[str, Any]]:
        """Title and context of a row."""
        if row.details is None:
            return None, {}
        payload = self.codec.decode(
            row.details, details_context(self.tenant_id, row.conversation_id)
        )
        try:
            self.messages.check(row.details, payload)
            data = self.messages.serde.loads_typed(("msgpack", payload))
            return data.get("title"), dict(data.get("context") or {})
        except Exception as exc:
            raise (type(exc) if isinstance(exc, CorruptDataError) else CorruptDataError)(
                f"details of {self.describe('conversation', row.conversation_id)} are unreadable: "
                f"{exc}"
            ) from None

    # -- rows as public values -------------------------------------------------------

    def conversation(self, row: ConvRow, messages: list[Any] | None = None) -> Conversation:
        """The row as a :class:`Conversation` (with ``messages`` if given)."""
        title, context = self.decode_details(row)
        metadata = ConversationMetadata(
            title=title,
            tags=tuple(row.tags),
            context=context,
            participants=tuple(row.participants),
            settings=row.settings,
        )
        return Conversation(
            conversation_id=row.conversation_id,
            metadata=metadata,
            parent_id=row.parent_id,
            messages=messages,
            **row.activity(),
        )

    def session(self, row: ConvRow) -> Session:
        """The row as a :class:`Session`."""
        _, context = self.decode_details(row)
        return Session(
            session_id=row.conversation_id,
            context=context,
            parent_session_id=row.parent_id,
            branch_index=row.branch_seq - 1 if row.parent_id and row.branch_seq else None,
            participants=dict(row.participants),
            ttl=row.ttl,
            expires_at=row.expires_at,
            max_messages=row.max_messages,
            **row.activity(),
        )


class TableOptions(TypedDict, total=False):
    """The keyword arguments every conversation-memory class takes (histories,
    factories, stores, session managers).

    Attributes:
        tenant_id: Tenant of the rows (default from the config: ``""``).
        schema: Schema of the tables (default ``haive``).
        codec: Frames, compresses and encrypts message bodies, titles and context.
        serde: Serializer of message fields (LangGraph's, strict allow-list).
        config: Connection and server settings.
        max_message_bytes: Largest serialised message accepted.
    """

    tenant_id: str | None
    schema: str | None
    codec: Codec | None
    serde: SerializerProtocol | None
    config: PersistenceConfig | None
    max_message_bytes: int


class PricedOptions(TableOptions, total=False):
    """:class:`TableOptions` and ``prices`` (stores and session managers).

    Attributes:
        prices: Model name -> :class:`ModelPrice`; fills in the cost of usage
            that has none (a name matches itself or any model it prefixes).
    """

    prices: Mapping[str, ModelPrice] | None


def make_tables(
    *, takes: frozenset[str] = PricedOptions.__optional_keys__, **options: Unpack[PricedOptions]
) -> tuple[PersistenceConfig, ConversationTables]:
    """Resolve the options a class took into a config and its tables.

    Args:
        takes: The names the class takes (histories and factories take no ``prices``).
        **options: The keyword arguments.

    Raises:
        TypeError: An option the class does not take.
    """
    if unknown := set(options) - takes:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    config = options.get("config") or PersistenceConfig()
    schema = options.get("schema")
    tenant_id = options.get("tenant_id")
    schema_name = validate_identifier(
        config.schema_name if schema is None else schema, what="schema name"
    )
    tenant = validate_tenant_id(
        config.tenant_id if tenant_id is None else tenant_id, allow_default=True
    )
    tables = ConversationTables(
        schema=schema_name,
        tenant_id=tenant,
        codec=options.get("codec") or default_codec(),
        serde=options.get("serde"),
        max_message_bytes=options.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
        prices=options.get("prices"),
    )
    return config, tables
