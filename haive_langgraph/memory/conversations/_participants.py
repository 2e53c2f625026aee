"""Participants of a session: the operations on their rows and the calls of
``SessionStore.set_participant`` / ``remove_participant`` (and their async twins).
"""

from __future__ import annotations

from collections.abc import Mapping

from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._call import Call
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.conversations._checks import check_id, check_permission
from haive_langgraph.memory.conversations._client import _Client
from haive_langgraph.memory.conversations._rows import get_row, lock_rows
from haive_langgraph.memory.conversations._tables import SESSION, ConversationTables
from haive_langgraph.memory.conversations._types import Permission, Session


def set_participants(
    t: ConversationTables,
    conversation_id: str,
    participants: Mapping[str, Permission],
    *,
    replace: bool,
) -> Op[None]:
    """Add participants; with ``replace`` a participant's permission is replaced, else kept."""
    if not participants:
        return
    yield Step(
        t.participants_replace if replace else t.participants_keep,
        {
            "t": t.tenant_id,
            "c": conversation_id,
            "pids": TextArray(participants),
            "perms": TextArray(participants.values()),
        },
        fetch="none",
    )


def remove_participant(t: ConversationTables, conversation_id: str, user_id: str) -> Op[int]:
    """Remove a participant; how many rows went (0 or 1)."""
    removed: int = yield Step(
        t.delete_participant,
        {"t": t.tenant_id, "c": conversation_id, "u": user_id},
        fetch="rowcount",
    )
    return removed


def _changed(t: ConversationTables, sid: str) -> Op[Session]:
    row = yield from get_row(t, sid)
    return t.session(t.require(row, sid, what=SESSION, live=False))


class ParticipantCalls(_Client):
    """The session manager's participant methods, as calls (see ``db._methods.sync_method``)."""

    def _set_participant(
        self, session_id: str, participant_id: str, permission: Permission, *, user_id: str
    ) -> Call[Session]:
        """Add a participant or change their permission (``user_id`` needs moderate)."""
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")
        person = check_id(participant_id, "participant_id")
        perm = check_permission(permission)
        subject = t.describe(SESSION, sid)

        def op() -> Op[Session]:
            rows = yield from lock_rows(t, [sid])
            row = t.require(rows.get(sid), sid, what=SESSION, actor=who, need="moderate")
            if person == row.user_id:
                raise ConfigurationError(
                    f"user {person!r} owns {subject}; owners are not participants"
                )
            yield from set_participants(t, sid, {person: perm}, replace=True)
            session: Session = yield from _changed(t, sid)
            return session

        return t.call(op, transaction=True, subject=subject, actor=who)

    def _remove_participant(
        self, session_id: str, participant_id: str, *, user_id: str
    ) -> Call[Session]:
        """Remove a participant (moderate permission, or a participant leaving)."""
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")
        person = check_id(participant_id, "participant_id")

        def op() -> Op[Session]:
            rows = yield from lock_rows(t, [sid])
            # Anyone may leave; removing someone else takes moderation.
            need: Permission = "read" if person == who else "moderate"
            t.require(rows.get(sid), sid, what=SESSION, actor=who, need=need)
            yield from remove_participant(t, sid, person)
            session: Session = yield from _changed(t, sid)
            return session

        return t.call(op, transaction=True, subject=t.describe(SESSION, sid), actor=who)
