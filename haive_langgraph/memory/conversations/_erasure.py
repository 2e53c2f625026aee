"""Operations that delete: conversations, a user's data, expired sessions, a
history's messages. Branches of what is deleted keep their content (the
positions they share are copied into them first, see
:func:`._branches.detach_children`).
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg.types.numeric import Int8

from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.memory.conversations import _sql as S
from haive_langgraph.memory.conversations import _sql_topics as ST
from haive_langgraph.memory.conversations._branches import detach_children
from haive_langgraph.memory.conversations._rows import lock_rows
from haive_langgraph.memory.conversations._tables import ConversationTables
from haive_langgraph.memory.conversations._types import ErasureReport


def delete_set(
    t: ConversationTables, ids: Sequence[str], *, user_id: str | None = None
) -> Op[ErasureReport]:
    """Delete conversations (run in a transaction).

    Their branches keep their content (the shared messages are copied
    into them first). With ``user_id``, that user's messages in other
    conversations and their participation are deleted too.
    """
    conversations = messages = participants = 0
    if ids:
        tenant = t.tenant_id
        yield from lock_rows(t, ids)
        yield from detach_children(t, ids, 0)
        ids_param = TextArray(ids)
        removed = yield Step(t.delete_messages_of, {"t": tenant, "ids": ids_param}, fetch="one")
        messages = int(removed[0])
        participants = yield Step(
            t.delete_participants_of, {"t": tenant, "ids": ids_param}, fetch="rowcount"
        )
        conversations = yield Step(
            t.delete_conversations, {"t": tenant, "ids": ids_param}, fetch="rowcount"
        )
    if user_id is not None:
        params = {"t": t.tenant_id, "u": user_id}
        if ids:
            yield Step(
                S.q(ST.DELETE_MERGES_FROM, t.schema),
                {"t": t.tenant_id, "ids": TextArray(ids)},
                fetch="none",
            )
        authored = yield Step(t.delete_user_messages, params, fetch="one")
        messages += int(authored[0])
        participants += yield Step(t.delete_user_participation, params, fetch="rowcount")
    return ErasureReport(conversations, messages, participants)


def erase_user(t: ConversationTables, user_id: str) -> Op[ErasureReport]:
    """Delete a user's conversations, their messages elsewhere and their participation."""
    rows = yield Step(t.user_conversations, {"t": t.tenant_id, "u": user_id})
    report: ErasureReport = yield from delete_set(t, [r[0] for r in rows], user_id=user_id)
    return report


def purge_expired(t: ConversationTables) -> Op[ErasureReport]:
    """Delete every conversation of the tenant past its TTL."""
    rows = yield Step(t.expired_conversations, {"t": t.tenant_id})
    report: ErasureReport = yield from delete_set(t, [r[0] for r in rows])
    return report


def clear(t: ConversationTables, conversation_id: str) -> Op[int]:
    """Remove every message of a conversation; its branches keep theirs."""
    rows = yield from lock_rows(t, [conversation_id])
    if conversation_id not in rows:
        return 0
    yield from detach_children(t, [conversation_id], 0)
    removed = yield Step(
        t.delete_messages_of,
        {"t": t.tenant_id, "ids": TextArray([conversation_id])},
        fetch="one",
    )
    yield Step(
        t.recount,
        {"t": t.tenant_id, "c": conversation_id, "n": Int8(0), "branch": Int8(0), "parent": None},
        fetch="none",
    )
    return int(removed[0])
