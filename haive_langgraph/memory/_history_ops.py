"""Conversation memory operations, written once as sans-I/O generators.

:class:`HistoryOps` holds the statements of one schema, the tenant and the
message codec; its generator methods yield :class:`~haive_langgraph.db.Step`
values and return results. Histories, conversation stores and session
managers (sync and async) only run them, through :class:`Call`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import psycopg
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int8

from haive_langgraph.codec import Codec, Kind, RowContext
from haive_langgraph.db import Op, Route, Step, TenantScope
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._limits import (
    MAX_JSON_BYTES,
    bad_json_text,
    check_count,
    check_depth,
    check_text_id,
)
from haive_langgraph.errors import (
    ConfigurationError,
    CorruptDataError,
    SerializationError,
    ValueTooLargeError,
)
from haive_langgraph.memory import _history_sql as S
from haive_langgraph.memory._history_codec import MessageCodec, build_message
from haive_langgraph.memory._history_plan import AppendPlan as AppendPlan
from haive_langgraph.memory._history_plan import AppendPlanner, usage_params
from haive_langgraph.memory._history_types import (
    PERMISSION_RANK,
    Conversation,
    ConversationExistsError,
    ConversationMetadata,
    ConversationNotFoundError,
    ErasureReport,
    MessagePage,
    ModelPrice,
    Permission,
    PermissionDeniedError,
    QuotaExceededError,
    Session,
    SessionExpiredError,
    StoredMessage,
    TokenUsage,
    UsageTotals,
)

T = TypeVar("T")

MAX_SEQ = 2**62
DETAILS_KEY = "details"


def check_id(value: object, what: str) -> str:
    """An id we store as text: a non-empty string of the shared id rule (``db._limits``).

    At most 512 bytes of UTF-8, no NUL character, no lone surrogate.
    """
    if isinstance(value, str) and not value:
        raise ConfigurationError(f"{what} must not be empty")
    return check_text_id(value, what)


def check_optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def check_positive(value: object, what: str) -> int:
    """A size or a quota: an integer from 1 to ``bigint``'s largest (``db._limits``)."""
    return check_count(what, value, minimum=1)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One operation and how to run it.

    Attributes:
        op: Builds a fresh operation generator (called again on a read retry).
        transaction: Run all its statements in one transaction.
        read: It only reads (retried once on a dead connection).
        route: Where a read runs when read replicas are configured:
            ``"fresh"`` (a replica that has replayed this instance's writes,
            else the primary) or ``"replica"`` (listings and reports that
            may lag by up to ``max_replica_lag``).
        subject: What it acts on, for error messages (``"session 'abc'"``).
        actor: The acting user, for permission errors.
    """

    op: Callable[[], Op[T]]
    transaction: bool = False
    read: bool = False
    route: Route = "fresh"
    subject: str = ""
    actor: str | None = None


def translate(exc: psycopg.Error, call: Call[Any]) -> Exception | None:
    """Our error for a check that failed in SQL, or ``None`` for other errors."""
    state = exc.sqlstate
    detail = exc.diag.message_primary or ""
    if state == S.PERMISSION_SQLSTATE:
        need = detail if detail in _VERBS else "write"
        return PermissionDeniedError(
            f"user {call.actor!r} may not {_VERBS[need]} {call.subject}: it needs {need} "
            f"permission (owner, or a participant with {need} or higher)"
        )
    if state == S.EXPIRED_SQLSTATE:
        return SessionExpiredError(
            f"{call.subject} has expired (past its TTL); nothing was written"
        )
    if state == S.LIMIT_SQLSTATE:
        return QuotaExceededError(
            f"{call.subject} {detail}: the messages would exceed it; nothing was written"
        )
    return None


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
    def from_row(cls, row: Sequence[Any]) -> ConvRow:
        r = row
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

    def permission_of(self, user_id: str | None) -> int:
        if user_id is not None and user_id == self.user_id:
            return PERMISSION_RANK["moderate"]
        perm = self.participants.get(user_id) if user_id is not None else None
        return PERMISSION_RANK[perm] if perm is not None else 0


@dataclass(slots=True)
class Entry:
    """One stored message, unpacked from its batch row.

    ``item`` is the decoded ``[fields, metadata]``; ``source`` the
    conversation whose row holds it (an ancestor, for shared messages).
    """

    pos: int
    source: str
    message_id: str
    role: str
    created_at: datetime
    user_id: str | None
    copied: bool
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost: Decimal | None
    latency_ms: float | None
    run_id: str | None
    item: list[Any]


def _at(values: Sequence[Any] | None, i: int) -> Any:
    return values[i] if values is not None else None


class HistoryOps:
    """Statements of one schema and the operations over them, for one tenant."""

    def scope(self) -> TenantScope:
        """This tenant, bound for row-level security where it applies."""
        return TenantScope(self._scope_table, self.tenant_id)

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

        def r(template: str) -> str:
            return S.q(template, schema)

        chain = S.READ_CHAIN
        self.read_bodies = r(
            chain.replace("{columns}", S.BODY_COLUMNS).replace("{live}", S.READ_LIVE)
        )
        self.read_bodies_any = r(chain.replace("{columns}", S.BODY_COLUMNS).replace("{live}", ""))
        self.read_ids = r(chain.replace("{columns}", S.ID_COLUMNS).replace("{live}", ""))
        self.read_records = r(chain.replace("{columns}", S.RECORD_COLUMNS).replace("{live}", ""))
        self.get_conversation = r(S.GET_CONVERSATION)
        self.version_chain = r(S.VERSION_CHAIN)
        self.lock_conversations = r(S.LOCK_CONVERSATIONS)
        self.pin_conversation = r(S.PIN_CONVERSATION)
        self.create_conversation = r(S.CREATE_CONVERSATION)
        self.lock_for_append = r(S.LOCK_FOR_APPEND)
        self.lock_for_append_upsert = r(S.LOCK_FOR_APPEND_UPSERT)
        self.conversation_usage = r(S.CONVERSATION_USAGE)
        self.user_usage = r(S.USER_USAGE)
        self.children = r(S.CHILDREN)
        self.insert_chunk = r(S.INSERT_CHUNK)
        self.note_chunks = r(S.NOTE_CHUNKS)
        self.set_parent = r(S.SET_PARENT)
        self.delete_own = r(S.DELETE_OWN_MESSAGES)
        self.delete_messages_of = r(S.DELETE_MESSAGES_OF)
        self.delete_participants_of = r(S.DELETE_PARTICIPANTS_OF)
        self.delete_conversations = r(S.DELETE_CONVERSATIONS)
        self.user_conversations = r(S.USER_CONVERSATIONS)
        self.expired_conversations = r(S.EXPIRED_CONVERSATIONS)
        self.delete_user_messages = r(S.DELETE_USER_MESSAGES)
        self.delete_user_participation = r(S.DELETE_USER_PARTICIPATION)
        self.recount = r(S.RECOUNT)
        self.set_details = r(S.SET_DETAILS)
        self.participants_replace = r(
            S.UPSERT_PARTICIPANTS.replace("{conflict}", S.PARTICIPANTS_REPLACE)
        )
        self.participants_keep = r(S.UPSERT_PARTICIPANTS.replace("{conflict}", S.PARTICIPANTS_KEEP))
        self.delete_participant = r(S.DELETE_PARTICIPANT)
        self._append: dict[tuple[bool, ...], str] = {}
        self._query: dict[tuple[Any, ...], str] = {}

    # -- statements --------------------------------------------------------------

    def append_statement(self, *, upsert: bool, actor: bool, returning: bool) -> str:
        key = (upsert, actor, returning)
        stmt = self._append.get(key)
        if stmt is None:
            stmt = S.append_statement(self.schema, upsert=upsert, actor=actor, returning=returning)
            self._append[key] = stmt
        return stmt

    def query_statement(self, filters: Sequence[str], order: str, after: bool) -> str:
        key = (tuple(filters), order, after)
        stmt = self._query.get(key)
        if stmt is None:
            column = S.ORDER_COLUMNS[order]
            where = "".join(f"\n  AND {S.QUERY_FILTERS[f]}" for f in filters)
            if after:
                where += "\n  " + S.QUERY_AFTER.format(order=column)
            stmt = S.q(
                S.QUERY_CONVERSATIONS.replace("{where}", where).replace("{order}", column),
                self.schema,
            )
            self._query[key] = stmt
        return stmt

    # -- helpers ------------------------------------------------------------------

    def describe(self, what: str, conversation_id: str) -> str:
        tenant = f" (tenant {self.tenant_id!r})" if self.tenant_id else ""
        return f"{what} {conversation_id!r}{tenant}"

    def not_found(self, what: str, conversation_id: str) -> ConversationNotFoundError:
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
                f"user {actor!r} may not {_VERBS[need]} {self.describe(what, conversation_id)}: "
                f"it needs {need} permission (owner, or a participant with {need} or higher)"
            )
        return row

    def _details_ctx(self, conversation_id: str) -> RowContext:
        return RowContext(self.tenant_id, conversation_id, Kind.METADATA, DETAILS_KEY)

    def encode_details(
        self, conversation_id: str, title: str | None, context: Mapping[str, Any]
    ) -> bytes | None:
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
            return self.codec.encode(payload, self._details_ctx(conversation_id))
        except ValueTooLargeError as exc:
            raise exc.about(
                f"title and context of {self.describe('conversation', conversation_id)}"
            ) from None

    def decode_details(self, row: ConvRow) -> tuple[str | None, dict[str, Any]]:
        if row.details is None:
            return None, {}
        payload = self.codec.decode(row.details, self._details_ctx(row.conversation_id))
        try:
            self.messages.check(row.details, payload)
            data = self.messages.serde.loads_typed(("msgpack", payload))
            return data.get("title"), dict(data.get("context") or {})
        except Exception as exc:
            raise (type(exc) if isinstance(exc, CorruptDataError) else CorruptDataError)(
                f"details of {self.describe('conversation', row.conversation_id)} are unreadable: "
                f"{exc}"
            ) from None

    def conversation(
        self, row: ConvRow, messages: list[StoredMessage] | None = None
    ) -> Conversation:
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
            user_id=row.user_id,
            agent_id=row.agent_id,
            metadata=metadata,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_message_at=row.last_message_at,
            message_count=row.message_count,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            total_tokens=row.total_tokens,
            cost=row.cost,
            parent_id=row.parent_id,
            messages=messages,
        )

    def session(self, row: ConvRow) -> Session:
        _, context = self.decode_details(row)
        return Session(
            session_id=row.conversation_id,
            user_id=row.user_id,
            agent_id=row.agent_id,
            context=context,
            parent_session_id=row.parent_id,
            branch_index=row.branch_seq - 1 if row.parent_id and row.branch_seq else None,
            participants=dict(row.participants),
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_message_at=row.last_message_at,
            ttl=row.ttl,
            expires_at=row.expires_at,
            max_messages=row.max_messages,
            message_count=row.message_count,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            total_tokens=row.total_tokens,
            cost=row.cost,
        )

    # -- planning appends -----------------------------------------------------------

    def plan_append(
        self,
        conversation_id: str,
        messages: Sequence[BaseMessage],
        *,
        usages: Sequence[TokenUsage | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        run_ids: Sequence[str | None] | None = None,
        latencies: Sequence[float | None] | None = None,
        fingerprint_ids: bool = False,
        author: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
    ) -> AppendPlan:
        """Serialise, price and encode a batch; raises before anything is written
        (see :meth:`AppendPlanner.plan`)."""
        return self.planner.plan(
            conversation_id,
            messages,
            usages=usages,
            metadata=metadata,
            run_ids=run_ids,
            latencies=latencies,
            fingerprint_ids=fingerprint_ids,
            author=author,
            user_id=user_id,
            agent_id=agent_id,
        )

    # -- operations: appending ----------------------------------------------------------

    def append(
        self,
        plan: AppendPlan,
        *,
        upsert: bool,
        what: str = "conversation",
        actor: str | None = None,
        check_actor: bool = False,
        returning: bool = False,
    ) -> Op[tuple[int, datetime] | None]:
        """Append a planned batch in one statement.

        Returns:
            (first position, created_at) of the batch with ``returning``.

        Raises:
            ConversationNotFoundError: Without ``upsert``, the conversation
                does not exist.
        """
        stmt = self.append_statement(upsert=upsert, actor=check_actor, returning=returning)
        params = plan.params
        if check_actor:
            params = {**params, "actor": actor}
        # Prepared at its first run on a connection: every message of a chat
        # is one of these, and planning it costs twice what running it does
        # (measured: 0.22 ms of server time unprepared, 0.07 ms prepared).
        if not returning:
            yield Step(stmt, params, fetch="none", prepare=True)
            return None
        row = yield Step(stmt, params, fetch="one", prepare=True)
        if row is None:
            raise self.not_found(what, plan.conversation_id)
        return int(row[0]), row[1]

    def append_new(
        self,
        plan: AppendPlan,
        plan_for: Callable[[set[str]], AppendPlan],
        *,
        upsert: bool,
        what: str = "conversation",
    ) -> Op[tuple[AppendPlan, tuple[int, datetime] | None]]:
        """Append only the messages of ``plan`` the conversation does not hold
        yet (run in a transaction).

        The conversation row is locked (created first with ``upsert``), the
        ids it shows are read, and when some of ``plan``'s are among them,
        ``plan_for(known ids)`` plans the rest.

        Returns:
            The plan appended and where (``None`` when nothing was new).
        """
        t = self.tenant_id
        cid = plan.conversation_id
        if upsert:
            lock = yield Step(
                self.lock_for_append_upsert,
                {"t": t, "c": cid, "user": plan.params["user"], "agent": plan.params["agent"]},
                fetch="one",
            )
        else:
            lock = yield Step(self.lock_for_append, {"t": t, "c": cid}, fetch="one")
        if lock is None:
            raise self.not_found(what, cid)
        rows = yield Step(self.read_ids, self._bounds(cid, 0, MAX_SEQ, None))
        known: set[str] = set()
        for _cid, seq, n, ids, lo, hi in rows:
            known.update(ids[max(lo - seq, 0) : min(hi - seq, n)])
        if known.intersection(plan.message_ids):
            plan = plan_for(known)
        if not plan.message_ids:
            return plan, None
        placed = yield from self.append(plan, upsert=False, what=what, returning=True)
        return plan, placed

    def stored(self, plan: AppendPlan, placed: tuple[int, datetime] | None) -> list[StoredMessage]:
        """The appended messages as :class:`StoredMessage`."""
        if placed is None:
            return []
        base, created_at = placed
        out = []
        for i, mid in enumerate(plan.message_ids):
            message = plan.messages[i]
            if message.id != mid:
                message = message.model_copy(update={"id": mid})
            out.append(
                StoredMessage(
                    seq=base + i,
                    message_id=mid,
                    role=message.type,
                    created_at=created_at,
                    message=message,
                    token_usage=plan.usages[i],
                    latency_ms=plan.latencies[i],
                    run_id=plan.run_ids[i],
                    user_id=plan.params.get("author"),
                    metadata=plan.metadata[i],
                )
            )
        return out

    # -- operations: reading --------------------------------------------------------------

    def _bounds(self, conversation_id: str, lo: int, hi: int, last: int | None) -> dict[str, Any]:
        return {
            "t": self.tenant_id,
            "c": conversation_id,
            "lo": Int8(lo),
            "hi": Int8(hi),
            "last": Int8(last) if last is not None else None,
        }

    def read_messages(
        self,
        conversation_id: str,
        *,
        lo: int = 0,
        hi: int = MAX_SEQ,
        last: int | None = None,
        live: bool = True,
    ) -> Op[list[BaseMessage]]:
        """The visible messages of a conversation in order (none if it does not exist,
        or with ``live`` if it expired)."""
        statement = self.read_bodies if live else self.read_bodies_any
        rows = yield Step(statement, self._bounds(conversation_id, lo, hi, last), prepare=True)
        unpack = self.messages.items
        out: list[BaseMessage] = []
        append = out.append
        for cid, seq, n, ids, body, start, stop in rows:
            items = unpack(body, cid, ids)
            a = start - seq
            b = stop - seq
            for item in items[a if a > 0 else 0 : b if b < n else n]:
                append(build_message(item[0]))
        return out

    def version(self, conversation_id: str) -> Op[tuple[int, ...] | None]:
        """The conversation's version and its ancestors' (see ``VERSION_CHAIN``);
        ``None`` if it does not exist or has expired (a history shows no messages)."""
        rows = yield Step(
            self.version_chain, {"t": self.tenant_id, "c": conversation_id}, prepare=True
        )
        if not rows or not rows[0][1]:
            return None
        return tuple(int(r[0]) for r in rows)

    def read_entries(
        self,
        conversation_id: str,
        *,
        lo: int = 0,
        hi: int = MAX_SEQ,
        last: int | None = None,
    ) -> Op[list[Entry]]:
        """The visible messages with their bookkeeping, unpacked from their rows."""
        rows = yield Step(self.read_records, self._bounds(conversation_id, lo, hi, last))
        unpack = self.messages.items
        out: list[Entry] = []
        for (
            cid,
            seq,
            n,
            ids,
            body,
            roles,
            created_at,
            user_id,
            copied,
            models,
            its,
            ots,
            tts,
            costs,
            lats,
            runs,
            start,
            stop,
        ) in rows:
            items = unpack(body, cid, ids)
            for i in range(max(start - seq, 0), min(stop - seq, n)):
                out.append(
                    Entry(
                        pos=seq + i,
                        source=cid,
                        message_id=ids[i],
                        role=roles[i],
                        created_at=created_at,
                        user_id=user_id,
                        copied=bool(copied),
                        model=_at(models, i),
                        input_tokens=_at(its, i),
                        output_tokens=_at(ots, i),
                        total_tokens=_at(tts, i),
                        cost=_at(costs, i),
                        latency_ms=_at(lats, i),
                        run_id=_at(runs, i),
                        item=items[i],
                    )
                )
        return out

    def record(self, entry: Entry) -> StoredMessage:
        fields, metadata = entry.item
        usage = None
        if entry.total_tokens is not None:
            usage = TokenUsage(
                entry.input_tokens or 0,
                entry.output_tokens or 0,
                entry.total_tokens,
                entry.model,
                entry.cost,
            )
        return StoredMessage(
            seq=entry.pos,
            message_id=entry.message_id,
            role=entry.role,
            created_at=entry.created_at,
            message=build_message(fields),
            token_usage=usage,
            latency_ms=entry.latency_ms,
            run_id=entry.run_id,
            user_id=entry.user_id,
            metadata=dict(metadata) if metadata else None,
        )

    def read_stored(
        self,
        conversation_id: str,
        *,
        lo: int = 0,
        hi: int = MAX_SEQ,
        last: int | None = None,
    ) -> Op[list[StoredMessage]]:
        entries = yield from self.read_entries(conversation_id, lo=lo, hi=hi, last=last)
        return [self.record(e) for e in entries]

    def page(
        self, row: ConvRow, limit: int, cursor: str | None, newest_first: bool
    ) -> Op[MessagePage]:
        """A page of ``limit`` positions after ``cursor`` (oldest first, or newest first)."""
        check_count("limit", limit)
        position = parse_message_cursor(cursor)
        if limit == 0:
            return MessagePage([], None)
        count = row.message_count
        cid = row.conversation_id
        if newest_first:
            hi = min(position if position is not None else count, count)
            lo = max(hi - limit, 0)
            messages = yield from self.read_stored(cid, lo=lo, hi=hi)
            messages.reverse()
            return MessagePage(messages, str(lo) if lo > 0 else None)
        lo = position + 1 if position is not None else 0
        hi = min(lo + limit, MAX_SEQ)  # a bigint: limit may be bigint's largest
        messages = yield from self.read_stored(cid, lo=lo, hi=hi)
        return MessagePage(messages, str(hi - 1) if hi < count else None)

    def get_row(self, conversation_id: str) -> Op[ConvRow | None]:
        row = yield Step(
            self.get_conversation, {"t": self.tenant_id, "c": conversation_id}, fetch="one"
        )
        return ConvRow.from_row(row) if row is not None else None

    def lock_rows(self, ids: Sequence[str]) -> Op[dict[str, ConvRow]]:
        rows = yield Step(self.lock_conversations, {"t": self.tenant_id, "ids": TextArray(ids)})
        return {r.conversation_id: r for r in map(ConvRow.from_row, rows)}

    # -- operations: creating ------------------------------------------------------------------

    def create(
        self,
        conversation_id: str,
        *,
        what: str,
        user_id: str | None,
        agent_id: str | None,
        tags: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
        details: bytes | None = None,
        participants: Mapping[str, Permission] | None = None,
        parent_id: str | None = None,
        branch_seq: int = 0,
        ttl: timedelta | None = None,
        max_messages: int | None = None,
    ) -> Op[ConvRow]:
        """Insert a conversation row (and its participants); it must not exist yet."""
        parts = dict(participants or {})
        params = {
            "t": self.tenant_id,
            "c": conversation_id,
            "user": user_id,
            "agent": agent_id,
            "parent": parent_id,
            "branch": Int8(branch_seq),
            "tags": TextArray(tags),
            "settings": Jsonb(dict(settings or {})),
            "details": details,
            "ttl": ttl,
            "max": Int8(max_messages) if max_messages is not None else None,
            "pids": TextArray(parts),
            "perms": TextArray(parts.values()),
        }
        row = yield Step(self.create_conversation, params, fetch="one")
        if row is None:
            raise ConversationExistsError(f"{self.describe(what, conversation_id)} already exists")
        return replace(ConvRow.from_row(row), participants=dict(sorted(parts.items())))

    # -- operations: queries and usage ---------------------------------------------------------------

    def query(
        self,
        filters: Mapping[str, Any],
        *,
        order: str,
        after: tuple[datetime, str] | None,
        limit: int,
        include_messages: bool,
    ) -> Op[tuple[list[ConvRow], dict[str, list[StoredMessage]]]]:
        names = sorted(filters)
        params: dict[str, Any] = {"t": self.tenant_id, "limit": Int8(limit)}
        for name in names:
            value = filters[name]
            if name == "tags":
                value = TextArray(value)
            elif name == "min_messages":
                value = Int8(value)
            params[name] = value
        params.pop("live", None)
        if after is not None:
            params["after_value"], params["after_id"] = after
        rows = yield Step(self.query_statement(names, order, after is not None), params)
        convs = [ConvRow.from_row(r) for r in rows]
        messages: dict[str, list[StoredMessage]] = {}
        if include_messages:
            for conv in convs:
                messages[conv.conversation_id] = yield from self.read_stored(conv.conversation_id)
        return convs, messages

    def usage(self, conversation_id: str) -> Op[UsageTotals]:
        rows = yield Step(self.conversation_usage, {"t": self.tenant_id, "c": conversation_id})
        return totals_of(rows)

    def usage_of_user(
        self, user_id: str, since: datetime | None, until: datetime | None
    ) -> Op[UsageTotals]:
        rows = yield Step(
            self.user_usage, {"t": self.tenant_id, "u": user_id, "since": since, "until": until}
        )
        return totals_of(rows)

    # -- operations: copying shared positions, deleting ------------------------------------------------

    def materialize(self, child: str, parent: str, lo: int, hi: int) -> Op[int]:
        """Copy the parent's visible positions [lo, hi) into ``child`` (re-encoded)."""
        entries = yield from self.read_entries(parent, lo=lo, hi=hi)
        yield from self.write_entries(child, entries, lo, [True] * len(entries))
        return len(entries)

    def write_entries(
        self,
        target: str,
        entries: Sequence[Entry],
        start: int,
        copied: Sequence[bool],
    ) -> Op[None]:
        """Store ``entries`` in ``target`` at positions ``start``.. as batch rows.

        Consecutive entries with the same time, author and ``copied`` flag
        share a row; each row is framed for ``target``.
        """
        if not entries:
            return
        t = self.tenant_id
        dump = self.messages.dump
        largest = 0
        i = 0
        while i < len(entries):
            first = entries[i]
            j = i + 1
            while (
                j < len(entries)
                and entries[j].created_at == first.created_at
                and entries[j].user_id == first.user_id
                and copied[j] == copied[i]
            ):
                j += 1
            group = entries[i:j]
            ids = [e.message_id for e in group]
            items = [dump(e.item, f"message {e.message_id!r}") for e in group]
            usages = [
                TokenUsage(
                    e.input_tokens or 0, e.output_tokens or 0, e.total_tokens, e.model, e.cost
                )
                if e.total_tokens is not None
                else None
                for e in group
            ]
            params = {
                "t": t,
                "c": target,
                "seq": Int8(start + i),
                "n": Int8(len(group)),
                "created_at": first.created_at,
                "author": first.user_id,
                "copied": copied[i],
                "ids": TextArray(ids),
                "roles": TextArray(e.role for e in group),
                "body": self.messages.frame(items, target),
            }
            params.update(
                usage_params(usages, [e.latency_ms for e in group], [e.run_id for e in group])
            )
            yield Step(self.insert_chunk, params, fetch="none")
            largest = max(largest, len(group))
            i = j
        yield Step(self.note_chunks, {"t": t, "c": target, "n": Int8(largest)}, fetch="none")

    def detach_children(self, ids: Sequence[str], cut: int) -> Op[None]:
        """Before positions >= ``cut`` of the conversations ``ids`` change, copy
        what their branches (outside ``ids``) still need into them.

        With ``cut == 0`` the branches no longer depend on ``ids`` at all.
        """
        children = yield Step(self.children, {"t": self.tenant_id, "ids": TextArray(ids)})
        for child, parent, branch in children:
            if cut == 0:
                if branch > 0:
                    yield from self.materialize(child, parent, 0, branch)
                yield Step(
                    self.set_parent,
                    {"t": self.tenant_id, "c": child, "parent": None, "branch": Int8(0)},
                    fetch="none",
                )
            elif branch > cut:
                yield from self.materialize(child, parent, cut, branch)
                yield Step(
                    self.set_parent,
                    {"t": self.tenant_id, "c": child, "parent": parent, "branch": Int8(cut)},
                    fetch="none",
                )

    def delete_set(self, ids: Sequence[str], *, user_id: str | None = None) -> Op[ErasureReport]:
        """Delete conversations (run in a transaction).

        Their branches keep their content (the shared messages are copied
        into them first). With ``user_id``, that user's messages in other
        conversations and their participation are deleted too.
        """
        conversations = messages = participants = 0
        if ids:
            t = self.tenant_id
            yield from self.lock_rows(ids)
            yield from self.detach_children(ids, 0)
            ids_param = TextArray(ids)
            removed = yield Step(self.delete_messages_of, {"t": t, "ids": ids_param}, fetch="one")
            messages = int(removed[0])
            participants = yield Step(
                self.delete_participants_of, {"t": t, "ids": ids_param}, fetch="rowcount"
            )
            conversations = yield Step(
                self.delete_conversations, {"t": t, "ids": ids_param}, fetch="rowcount"
            )
        if user_id is not None:
            params = {"t": self.tenant_id, "u": user_id}
            authored = yield Step(self.delete_user_messages, params, fetch="one")
            messages += int(authored[0])
            participants += yield Step(self.delete_user_participation, params, fetch="rowcount")
        return ErasureReport(conversations, messages, participants)

    def erase_user(self, user_id: str) -> Op[ErasureReport]:
        rows = yield Step(self.user_conversations, {"t": self.tenant_id, "u": user_id})
        report: ErasureReport = yield from self.delete_set([r[0] for r in rows], user_id=user_id)
        return report

    def purge_expired(self) -> Op[ErasureReport]:
        rows = yield Step(self.expired_conversations, {"t": self.tenant_id})
        report: ErasureReport = yield from self.delete_set([r[0] for r in rows])
        return report

    def clear(self, conversation_id: str) -> Op[int]:
        """Remove every message of a conversation; its branches keep theirs."""
        rows = yield from self.lock_rows([conversation_id])
        if conversation_id not in rows:
            return 0
        yield from self.detach_children([conversation_id], 0)
        t = self.tenant_id
        removed = yield Step(
            self.delete_messages_of, {"t": t, "ids": TextArray([conversation_id])}, fetch="one"
        )
        yield Step(
            self.recount,
            {"t": t, "c": conversation_id, "n": Int8(0), "branch": Int8(0), "parent": None},
            fetch="none",
        )
        return int(removed[0])

    # -- operations: participants ---------------------------------------------------------------

    def set_participants(
        self, conversation_id: str, participants: Mapping[str, Permission], *, replace: bool
    ) -> Op[None]:
        if not participants:
            return
        yield Step(
            self.participants_replace if replace else self.participants_keep,
            {
                "t": self.tenant_id,
                "c": conversation_id,
                "pids": TextArray(participants),
                "perms": TextArray(participants.values()),
            },
            fetch="none",
        )

    def remove_participant(self, conversation_id: str, user_id: str) -> Op[int]:
        removed: int = yield Step(
            self.delete_participant,
            {"t": self.tenant_id, "c": conversation_id, "u": user_id},
            fetch="rowcount",
        )
        return removed

    # -- operations: branches and merges ----------------------------------------------------------

    def branch(
        self,
        source: str,
        at_index: int,
        *,
        new_id: str,
        actor: str,
        context: Mapping[str, Any] | None,
        ttl: timedelta | None,
        inherit_ttl: bool,
        max_messages: int | None,
        inherit_max: bool,
    ) -> Op[ConvRow]:
        """A new session sharing the source's messages 0..``at_index`` (run in a transaction).

        The source is pinned (``FOR KEY SHARE``) so that a concurrent clear,
        delete or merge of it waits until the branch exists (and then copies
        the shared messages into it).
        """
        row = yield Step(self.pin_conversation, {"t": self.tenant_id, "c": source}, fetch="one")
        src = self.require(
            ConvRow.from_row(row) if row is not None else None,
            source,
            what="session",
            actor=actor,
            need="read",
        )
        count = src.message_count
        index = at_index + count if at_index < 0 else at_index
        if not 0 <= index < count:
            raise ConfigurationError(
                f"at_message_index {at_index} is out of range: "
                f"{self.describe('session', source)} holds {count} messages"
            )
        _, base = self.decode_details(src)
        merged_context = {**base, **dict(context or {})}
        created: ConvRow = yield from self.create(
            new_id,
            what="session",
            user_id=actor,
            agent_id=src.agent_id,
            tags=src.tags,
            settings=src.settings,
            details=self.encode_details(new_id, None, merged_context),
            parent_id=source,
            branch_seq=index + 1,
            ttl=src.ttl if inherit_ttl else ttl,
            max_messages=src.max_messages if inherit_max else max_messages,
        )
        return created

    def merge(
        self,
        primary: str,
        secondary: str,
        *,
        strategy: str,
        resolution: str,
        actor: str,
    ) -> Op[ConvRow]:
        """Merge ``secondary``'s messages into ``primary`` (run in a transaction).

        Messages are matched by id: one held by both is kept once (a
        conflict, when their contents differ, is settled by ``resolution``);
        the others are appended, or interleaved by time. Positions that
        change are rewritten; branches of ``primary`` that share them get a
        copy first. ``secondary`` is left as it is.
        """
        if primary == secondary:
            raise ConfigurationError(f"cannot merge session {primary!r} into itself")
        rows = yield from self.lock_rows([primary, secondary])
        p = self.require(rows.get(primary), primary, what="session", actor=actor, need="write")
        s = self.require(rows.get(secondary), secondary, what="session", actor=actor, need="read")
        prim = yield from self.read_entries(primary)
        sec = yield from self.read_entries(secondary)
        position: dict[str, int] = {}
        for i, e in enumerate(prim):
            position.setdefault(e.message_id, i)
        replaced: dict[int, Entry] = {}
        incoming: list[Entry] = []
        for e in sec:
            at = position.get(e.message_id)
            if at is None:
                incoming.append(e)
            elif (
                resolution == "secondary_wins"
                and at not in replaced
                and e.item[0] != prim[at].item[0]
            ):
                replaced[at] = e
        kept = [replaced.get(i, e) for i, e in enumerate(prim)]
        if strategy == "append":
            merged = kept + incoming
        else:
            merged = []
            a = b = 0
            while a < len(kept) and b < len(incoming):
                # Ties keep the primary's message first.
                if incoming[b].created_at < kept[a].created_at:
                    merged.append(incoming[b])
                    b += 1
                else:
                    merged.append(kept[a])
                    a += 1
            merged += kept[a:]
            merged += incoming[b:]
        if p.max_messages is not None and len(merged) > p.max_messages:
            raise QuotaExceededError(
                f"{self.describe('session', primary)} would hold {len(merged)} messages after "
                f"the merge and its limit is {p.max_messages}; nothing was written"
            )
        cut = next(
            (i for i, e in enumerate(merged) if i >= len(prim) or e is not prim[i]), len(merged)
        )
        parent, branch = p.parent_id, p.branch_seq
        t = self.tenant_id
        if cut < len(merged) or cut < len(prim):
            if cut < len(prim):
                yield from self.detach_children([primary], cut)
            if cut < branch:
                branch = cut
                parent = parent if cut > 0 else None
            # The primary's own rows are rewritten from its branch point: the
            # kept head, then the merged tail. Messages moved within the
            # primary keep their accounting; the others were counted where
            # they were written.
            yield Step(self.delete_own, {"t": t, "c": primary}, fetch="none")
            own = merged[branch:]
            copied = [e.copied if e.source == primary else True for e in own]
            yield from self.write_entries(primary, own, branch, copied)
        yield Step(
            self.recount,
            {
                "t": t,
                "c": primary,
                "n": Int8(len(merged)),
                "branch": Int8(branch),
                "parent": parent,
            },
            fetch="none",
        )
        title, p_context = self.decode_details(p)
        _, s_context = self.decode_details(s)
        if resolution == "secondary_wins":
            context = {**p_context, **s_context}
        else:
            context = {**s_context, **p_context}
        if context != p_context:
            yield Step(
                self.set_details,
                {"t": t, "c": primary, "details": self.encode_details(primary, title, context)},
                fetch="none",
            )
        people: dict[str, Permission] = dict(s.participants)
        if s.user_id is not None:
            people.setdefault(s.user_id, "write")
        if p.user_id is not None:
            people.pop(p.user_id, None)
        yield from self.set_participants(primary, people, replace=resolution == "secondary_wins")
        merged_row = yield from self.get_row(primary)
        assert merged_row is not None
        return merged_row


_VERBS = {"read": "read", "write": "write to", "moderate": "moderate"}


def totals_of(rows: Sequence[Sequence[Any]]) -> UsageTotals:
    by_model: dict[str, UsageTotals] = {}
    for model, count, inp, out, tot, cost in rows:
        by_model[str(model)] = UsageTotals(int(count), int(inp), int(out), int(tot), Decimal(cost))
    return UsageTotals(
        messages=sum(u.messages for u in by_model.values()),
        input_tokens=sum(u.input_tokens for u in by_model.values()),
        output_tokens=sum(u.output_tokens for u in by_model.values()),
        total_tokens=sum(u.total_tokens for u in by_model.values()),
        cost=sum((u.cost for u in by_model.values()), Decimal(0)),
        by_model=by_model,
    )


def parse_message_cursor(cursor: object) -> int | None:
    if cursor is None:
        return None
    # ASCII digits only ("²".isdigit() is true, int("²") fails), at most MAX_SEQ.
    if isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) < 20:
        position = int(cursor)
        if position < MAX_SEQ:
            return position
    raise ConfigurationError(f"invalid message cursor {cursor!r:.80}; pass a page's next_cursor")


def encode_conversation_cursor(value: datetime, conversation_id: str) -> str:
    return f"{value.isoformat()}|{conversation_id}"


def decode_conversation_cursor(cursor: object) -> tuple[datetime, str]:
    if isinstance(cursor, str) and "|" in cursor:
        stamp, _, conversation_id = cursor.partition("|")
        try:
            return datetime.fromisoformat(stamp), conversation_id
        except ValueError:
            pass
    raise ConfigurationError(f"invalid conversation cursor {cursor!r}; pass a page's next_cursor")


def check_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``value`` if PostgreSQL's jsonb can hold it, within the limits of ``db._limits``.

    Raises:
        ValueTooLargeError: Nested deeper than ``MAX_DEPTH`` or larger than
            ``MAX_JSON_BYTES`` as JSON.
        SerializationError: Not JSON, NaN or infinity, or a string with a
            NUL character or a lone surrogate.
    """
    check_depth(value, what)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} must be JSON-serialisable: {exc}") from None
    if ("\\u0000" in text or "\\ud" in text) and (bad := bad_json_text(value)) is not None:
        raise SerializationError(
            f"{what} holds {bad[:40]!r}, with a character PostgreSQL's jsonb cannot store "
            "(NUL or a lone surrogate)"
        )
    if len(text) > MAX_JSON_BYTES:
        raise ValueTooLargeError(what, len(text), MAX_JSON_BYTES, setting="for JSON metadata")
    return dict(value)
