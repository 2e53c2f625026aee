"""Values and errors of conversation memory (histories, conversations, sessions)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Literal, TypeVar, cast

from langchain_core.messages import BaseMessage

from haive_langgraph.db._limits import id_problem
from haive_langgraph.errors import ConfigurationError, InvalidMessageError

__all__ = [
    "Conversation",
    "ConversationMetadata",
    "ConversationPage",
    "ErasureReport",
    "MessagePage",
    "ModelPrice",
    "Permission",
    "Session",
    "SessionPage",
    "StoredMessage",
    "TokenUsage",
    "UsageTotals",
]

_INT4_MAX = 2**31 - 1
T = TypeVar("T")

Permission = Literal["read", "write", "moderate"]
"""What a session participant may do: read its messages, also write to it, also
manage its participants (``moderate``); its owner may do everything."""
PERMISSIONS: tuple[Permission, ...] = ("read", "write", "moderate")
PERMISSION_RANK = {"read": 1, "write": 2, "moderate": 3}


# -- errors ----------------------------------------------------------------------------


# -- token usage -------------------------------------------------------------------------


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessageError(f"{what} must be an integer, got {value!r}")
    if value < 0:
        raise InvalidMessageError(f"{what} must not be negative, got {value}")
    if value > _INT4_MAX:
        raise InvalidMessageError(f"{what} {value} is larger than {_INT4_MAX}")
    return value


def _money(value: object, what: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidMessageError(f"{what} must be a number, got {value!r}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidMessageError(f"{what} must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise InvalidMessageError(f"{what} must be finite, got {value!r}")
    if amount < 0:
        raise InvalidMessageError(f"{what} must not be negative, got {value}")
    return amount


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens (and what they cost) of one model call.

    Attributes:
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
        total_tokens: Defaults to input plus output.
        model: Model name; selects the price when ``cost`` is not given.
        cost: Cost in your currency; from the store's price table when
            ``None`` and the model has a price.

    Raises:
        InvalidMessageError: A count is negative or not an integer, or the
            cost is negative or not a number.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None
    model: str | None = None
    cost: Decimal | None = None

    def __post_init__(self) -> None:
        i, o, t = self.input_tokens, self.output_tokens, self.total_tokens
        # Fast path (one per AI message on every append): plain in-range ints.
        if not (
            type(i) is int
            and type(o) is int
            and 0 <= i <= _INT4_MAX
            and 0 <= o <= _INT4_MAX
            and (t is None or (type(t) is int and 0 <= t <= _INT4_MAX))
        ):
            _count(i, "input_tokens")
            _count(o, "output_tokens")
            if t is not None:
                _count(t, "total_tokens")
        if t is None:
            object.__setattr__(self, "total_tokens", _count(i + o, "total_tokens"))
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidMessageError(f"model must be a string, got {self.model!r}")
        if self.cost is not None:
            object.__setattr__(self, "cost", _money(self.cost, "cost"))

    def with_cost(self, cost: Decimal) -> TokenUsage:
        return TokenUsage(
            self.input_tokens, self.output_tokens, self.total_tokens, self.model, cost
        )


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Price of a model per million tokens.

    Example:
        >>> store = ConversationStore(dsn, prices={"gpt-4o": ModelPrice("2.50", "10.00")})
    """

    input_per_million: Decimal
    output_per_million: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "input_per_million", _money(self.input_per_million, "input_per_million")
        )
        object.__setattr__(
            self, "output_per_million", _money(self.output_per_million, "output_per_million")
        )

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        return (
            self.input_per_million * input_tokens + self.output_per_million * output_tokens
        ) / Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Summed token usage.

    Attributes:
        messages: Messages that reported usage.
        by_model: The same totals per model (``""`` for messages without one).
    """

    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)
    by_model: dict[str, UsageTotals] = field(default_factory=dict)


# -- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored, with its position and bookkeeping.

    Attributes:
        seq: Position in the conversation, from 0.
        message_id: The message's id (assigned when it had none).
        role: The message type (``human``, ``ai``, ``system``, ``tool`` ...).
        created_at: When it was stored.
        message: The LangChain message.
        token_usage: Usage recorded with it (AI messages), else ``None``.
        latency_ms: Model latency recorded by the tracker.
        run_id: Run that produced it (the LangSmith run id when traced).
        user_id: Who wrote it, in a collaborative session.
        metadata: Metadata stored with it.
    """

    seq: int
    message_id: str
    role: str
    created_at: datetime
    message: BaseMessage
    token_usage: TokenUsage | None = None
    latency_ms: float | None = None
    run_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None


class _Page(Generic[T]):
    """What the pages share: iterating over one, or taking its length, goes over
    its items (the list in its first field)."""

    __slots__ = ()

    def _items(self) -> list[T]:
        items: list[T] = getattr(self, fields(cast(Any, self))[0].name)
        return items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


@dataclass(frozen=True, slots=True)
class MessagePage(_Page[StoredMessage]):
    """A page of messages; pass ``next_cursor`` back for the next one."""

    messages: list[StoredMessage]
    next_cursor: str | None


# -- conversations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationMetadata:
    """Descriptive data of a conversation.

    Attributes:
        title: Display title (stored through the codec, like messages).
        tags: Labels to filter by (stored in plain text, indexed).
        context: Free-form context (stored through the codec).
        participants: User ids taking part (they get ``write`` permission).
        settings: Free-form settings (plain JSON).
    """

    title: str | None = None
    tags: Sequence[str] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    participants: Sequence[str] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.title is not None and not isinstance(self.title, str):
            raise InvalidMessageError(f"title must be a string, got {self.title!r}")
        for name in ("tags", "participants"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise InvalidMessageError(f"{name} must be a sequence of strings, got {value!r}")
            for v in value:
                if (problem := id_problem(v)) is not None:
                    raise InvalidMessageError(f"{name} entry {v[:60]!r} {problem}")
            object.__setattr__(self, name, tuple(value))
        for name in ("context", "settings"):
            if not isinstance(getattr(self, name), Mapping):
                raise InvalidMessageError(f"{name} must be a mapping, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation's registry entry, and its messages when asked for.

    Totals cover the messages written to this conversation (not those it
    shares with the conversation it was branched from).
    """

    conversation_id: str
    user_id: str | None
    agent_id: str | None
    metadata: ConversationMetadata
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime
    message_count: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: Decimal
    parent_id: str | None = None
    messages: list[StoredMessage] | None = None


@dataclass(frozen=True, slots=True)
class ConversationPage(_Page[Conversation]):
    """A page of conversations; pass ``next_cursor`` back for the next one."""

    conversations: list[Conversation]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """Rows removed by a delete or an erasure."""

    conversations: int = 0
    messages: int = 0
    participants: int = 0


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A session: a conversation with an owner, participants, a TTL and limits.

    Attributes:
        session_id: The session.
        user_id: Its owner (all permissions).
        agent_id: The agent it talks to.
        context: Free-form context (stored through the codec).
        parent_session_id: The session it was created from or branched off.
        branch_index: For a branch, the last message index it shares with
            its parent; ``None`` otherwise.
        participants: Other users and their permission.
        ttl: Idle time after which it expires; each message extends it.
        expires_at: When it expires if idle.
        max_messages: Most messages it may hold.
        message_count: Messages it holds (shared ones included).
    """

    session_id: str
    user_id: str | None
    agent_id: str | None
    context: dict[str, Any]
    parent_session_id: str | None
    branch_index: int | None
    participants: dict[str, Permission]
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime
    ttl: timedelta | None
    expires_at: datetime | None
    max_messages: int | None
    message_count: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class SessionPage(_Page[Session]):
    """A page of sessions; pass ``next_cursor`` back for the next one."""

    sessions: list[Session]
    next_cursor: str | None


def check_ttl(ttl: object) -> timedelta | None:
    if ttl is None:
        return None
    if isinstance(ttl, int | float) and not isinstance(ttl, bool):
        if not math.isfinite(ttl):
            raise ConfigurationError(f"ttl must be finite, got {ttl!r}")
        ttl = timedelta(seconds=ttl)
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise ConfigurationError(f"ttl must be a positive timedelta or seconds, got {ttl!r}")
    return ttl
