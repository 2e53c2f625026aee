"""Operations on conversation rows: reading, locking, creating, querying, usage.

Sans-I/O generators over :class:`ConversationTables` (see :mod:`._tables`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int8

from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConversationExistsError
from haive_langgraph.memory.conversations._checks import encode_conversation_cursor
from haive_langgraph.memory.conversations._messages import read_stored
from haive_langgraph.memory.conversations._tables import SESSION, ConversationTables, ConvRow
from haive_langgraph.memory.conversations._types import Permission, StoredMessage, UsageTotals


def get_row(t: ConversationTables, conversation_id: str) -> Op[ConvRow | None]:
    """The conversation's row (``None`` if it does not exist)."""
    row = yield Step(t.get_conversation, {"t": t.tenant_id, "c": conversation_id}, fetch="one")
    return ConvRow.from_row(row) if row is not None else None


def lock_rows(t: ConversationTables, ids: Sequence[str]) -> Op[dict[str, ConvRow]]:
    """Lock the rows of ``ids`` that exist (``FOR UPDATE``, in id order)."""
    rows = yield Step(t.lock_conversations, {"t": t.tenant_id, "ids": TextArray(ids)})
    return {r.conversation_id: r for r in map(ConvRow.from_row, rows)}


def create(
    t: ConversationTables,
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
    """Insert a conversation row (and its participants); it must not exist yet.

    Raises:
        ConversationExistsError: It exists.
    """
    parts = dict(participants or {})
    params = {
        "t": t.tenant_id,
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
        # Sessions are marked: tenant quotas count them (tenants/_quota_sql.py).
        "kind": SESSION if what == SESSION else None,
    }
    row = yield Step(t.create_conversation, params, fetch="one")
    if row is None:
        raise ConversationExistsError(f"{t.describe(what, conversation_id)} already exists")
    # The statement does not see the participants its own CTE inserted.
    return replace(ConvRow.from_row(row), participants=dict(sorted(parts.items())))


def query(
    t: ConversationTables,
    filters: Mapping[str, Any],
    *,
    order: str,
    after: tuple[datetime, str] | None,
    limit: int,
    include_messages: bool,
) -> Op[tuple[list[ConvRow], dict[str, list[StoredMessage]], str | None]]:
    """A page of the rows matching ``filters`` (names of ``QUERY_FILTERS``), newest
    first by ``order``, after the cursor ``after``; with ``include_messages`` each
    one's messages too; and the ``next_cursor`` (``None`` on the last page)."""
    if limit == 0:
        return [], {}, None
    names = sorted(filters)
    params: dict[str, Any] = {"t": t.tenant_id, "limit": Int8(limit + 1)}
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
    rows = yield Step(t.query_statement(names, order, after is not None), params)
    convs = [ConvRow.from_row(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = convs[-1]
        next_cursor = encode_conversation_cursor(getattr(last, order), last.conversation_id)
    messages: dict[str, list[StoredMessage]] = {}
    if include_messages:
        for conv in convs:
            messages[conv.conversation_id] = yield from read_stored(t, conv.conversation_id)
    return convs, messages, next_cursor


def totals_of(rows: Sequence[Sequence[Any]]) -> UsageTotals:
    """Per-model rows of a usage statement, summed."""
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


def usage(t: ConversationTables, conversation_id: str) -> Op[UsageTotals]:
    """Tokens and cost of the messages written to a conversation."""
    rows = yield Step(t.conversation_usage, {"t": t.tenant_id, "c": conversation_id})
    return totals_of(rows)


def usage_of_user(
    t: ConversationTables, user_id: str, since: datetime | None, until: datetime | None
) -> Op[UsageTotals]:
    """Tokens and cost over a user's conversations, in a time window."""
    params = {"t": t.tenant_id, "u": user_id, "since": since, "until": until}
    rows = yield Step(t.user_usage, params)
    return totals_of(rows)
