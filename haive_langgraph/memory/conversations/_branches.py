"""Branches and merges: a session that shares its source's first messages, the
copies made when shared positions change, a merge of two sessions; and the
calls of ``SessionStore.branch_session`` / ``merge_sessions``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from langchain_core.language_models import BaseChatModel
from psycopg.types.numeric import Int8

from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._call import Call
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError, QuotaExceededError
from haive_langgraph.memory.conversations._checks import check_id, new_id
from haive_langgraph.memory.conversations._client import _Client
from haive_langgraph.memory.conversations._messages import (
    Entry,
    materialize,
    read_entries,
    write_entries,
)
from haive_langgraph.memory.conversations._model_merge import SessionMergeRecord, merge_plan
from haive_langgraph.memory.conversations._model_merge import records as merge_records
from haive_langgraph.memory.conversations._participants import set_participants
from haive_langgraph.memory.conversations._plans import Plan
from haive_langgraph.memory.conversations._rows import create, get_row, lock_rows
from haive_langgraph.memory.conversations._tables import SESSION, ConversationTables, ConvRow
from haive_langgraph.memory.conversations._types import Permission, Session, check_ttl

MERGE_STRATEGIES = ("append", "interleave", "model")
CONFLICT_RESOLUTIONS = ("primary_wins", "secondary_wins")
# A model-assisted merge may also leave conflicts to the model.
MODEL_CONFLICT_RESOLUTIONS = (*CONFLICT_RESOLUTIONS, "model")


class _Inherit:
    def __repr__(self) -> str:
        return "INHERIT"


INHERIT: Any = _Inherit()
"""Default of ``branch_session(ttl=...)``: the branch takes its source's TTL."""


def detach_children(t: ConversationTables, ids: Sequence[str], cut: int) -> Op[None]:
    """Before positions >= ``cut`` of the conversations ``ids`` change, copy
    what their branches (outside ``ids``) still need into them.

    With ``cut == 0`` the branches no longer depend on ``ids`` at all.
    """
    children = yield Step(t.children, {"t": t.tenant_id, "ids": TextArray(ids)})
    for child, parent, branch in children:
        if cut == 0:
            if branch > 0:
                yield from materialize(t, child, parent, 0, branch)
            new_parent, new_branch = None, 0
        elif branch > cut:
            yield from materialize(t, child, parent, cut, branch)
            new_parent, new_branch = parent, cut
        else:
            continue
        params = {"t": t.tenant_id, "c": child, "parent": new_parent, "branch": Int8(new_branch)}
        yield Step(t.set_parent, params, fetch="none")


def branch(
    t: ConversationTables,
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
    row = yield Step(t.pin_conversation, {"t": t.tenant_id, "c": source}, fetch="one")
    found = ConvRow.from_row(row) if row is not None else None
    src = t.require(found, source, what=SESSION, actor=actor, need="read")
    count = src.message_count
    index = at_index + count if at_index < 0 else at_index
    if not 0 <= index < count:
        raise ConfigurationError(
            f"at_message_index {at_index} is out of range: "
            f"{t.describe(SESSION, source)} holds {count} messages"
        )
    _, base = t.decode_details(src)
    created: ConvRow = yield from create(
        t,
        new_id,
        what=SESSION,
        user_id=actor,
        agent_id=src.agent_id,
        tags=src.tags,
        settings=src.settings,
        details=t.encode_details(new_id, None, {**base, **dict(context or {})}),
        parent_id=source,
        branch_seq=index + 1,
        ttl=src.ttl if inherit_ttl else ttl,
        max_messages=src.max_messages if inherit_max else max_messages,
    )
    return created


def _merged(prim: list[Entry], sec: list[Entry], strategy: str, resolution: str) -> list[Entry]:
    """The primary's entries with the secondary's matched by id (see :func:`merge`)."""
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
            resolution == "secondary_wins" and at not in replaced and e.item[0] != prim[at].item[0]
        ):
            replaced[at] = e
    kept = [replaced.get(i, e) for i, e in enumerate(prim)]
    if strategy == "append":
        return kept + incoming
    merged: list[Entry] = []
    a = b = 0
    while a < len(kept) and b < len(incoming):
        # Ties keep the primary's message first.
        if incoming[b].created_at < kept[a].created_at:
            merged.append(incoming[b])
            b += 1
        else:
            merged.append(kept[a])
            a += 1
    return merged + kept[a:] + incoming[b:]


def merge(
    t: ConversationTables,
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
    rows = yield from lock_rows(t, [primary, secondary])
    p = t.require(rows.get(primary), primary, what=SESSION, actor=actor, need="write")
    s = t.require(rows.get(secondary), secondary, what=SESSION, actor=actor, need="read")
    prim = yield from read_entries(t, primary)
    sec = yield from read_entries(t, secondary)
    merged = _merged(prim, sec, strategy, resolution)
    if p.max_messages is not None and len(merged) > p.max_messages:
        raise QuotaExceededError(
            f"{t.describe(SESSION, primary)} would hold {len(merged)} messages after "
            f"the merge and its limit is {p.max_messages}; nothing was written"
        )
    cut = next((i for i, e in enumerate(merged) if i >= len(prim) or e is not prim[i]), len(merged))
    parent, branch_seq = p.parent_id, p.branch_seq
    tenant = t.tenant_id
    if cut < len(merged) or cut < len(prim):
        if cut < len(prim):
            yield from detach_children(t, [primary], cut)
        if cut < branch_seq:
            branch_seq = cut
            parent = parent if cut > 0 else None
        # The primary's own rows are rewritten from its branch point: the
        # kept head, then the merged tail. Messages moved within the
        # primary keep their accounting; the others were counted where
        # they were written.
        yield Step(t.delete_own, {"t": tenant, "c": primary}, fetch="none")
        own = merged[branch_seq:]
        copied = [e.copied if e.source == primary else True for e in own]
        yield from write_entries(t, primary, own, branch_seq, copied)
    params = {
        "t": tenant,
        "c": primary,
        "n": Int8(len(merged)),
        "branch": Int8(branch_seq),
        "parent": parent,
    }
    yield Step(t.recount, params, fetch="none")
    title, p_context = t.decode_details(p)
    _, s_context = t.decode_details(s)
    if resolution == "secondary_wins":
        context = {**p_context, **s_context}
    else:
        context = {**s_context, **p_context}
    if context != p_context:
        details = t.encode_details(primary, title, context)
        yield Step(t.set_details, {"t": tenant, "c": primary, "details": details}, fetch="none")
    people: dict[str, Permission] = dict(s.participants)
    if s.user_id is not None:
        people.setdefault(s.user_id, "write")
    if p.user_id is not None:
        people.pop(p.user_id, None)
    yield from set_participants(t, primary, people, replace=resolution == "secondary_wins")
    merged_row = yield from get_row(t, primary)
    assert merged_row is not None
    return merged_row


class BranchCalls(_Client):
    """The session manager's branch and merge methods, as calls (see ``db._methods.sync_method``)."""

    _max_messages: int | None

    def _branch_session(
        self,
        from_session: str,
        at_message_index: int,
        branch_context: Mapping[str, Any] | None = None,
        *,
        user_id: str,
        session_id: str | None = None,
        ttl: timedelta | float | None = INHERIT,
    ) -> Call[Session]:
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
        t = self._tables
        source = check_id(from_session, "from_session")
        who = check_id(user_id, "user_id")
        sid = check_id(session_id, "session_id") if session_id is not None else new_id()
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
        limit = self._max_messages

        def op() -> Op[Session]:
            row = yield from branch(
                t,
                source,
                at_message_index,
                new_id=sid,
                actor=who,
                context=branch_context,
                ttl=lifetime,
                inherit_ttl=inherit_ttl,
                max_messages=limit,
                inherit_max=limit is None,
            )
            return t.session(row)

        return t.call(op, transaction=True, subject=t.describe(SESSION, source), actor=who)

    def _merge_sessions(
        self,
        primary: str,
        secondary: str,
        strategy: str = "append",
        conflict_resolution: str = "primary_wins",
        *,
        user_id: str,
        model: BaseChatModel | None = None,
        session_id: str | None = None,
    ) -> Plan[Session]:
        """Merge ``secondary``'s messages, context and participants into ``primary``.

        Messages are matched by id (a shared prefix is kept once). With
        ``"append"`` the secondary's other messages follow the primary's; with
        ``"interleave"`` all are ordered by time. A message both hold with
        different contents is a conflict: ``"primary_wins"`` keeps the
        primary's, ``"secondary_wins"`` takes the secondary's (in the
        primary's position). Context keys and participant permissions follow
        the same rule; the secondary's owner joins with ``write``. The
        secondary is left unchanged.

        With ``"model"``, the chat model ``model`` writes the merged
        transcript (a :class:`MergeDecision`: each message of both sessions
        kept, rewritten or dropped, with a reason; structured output when the
        model has it, else its JSON answer parsed strictly), which becomes a
        NEW session owned by ``user_id`` (``session_id``, default a new
        UUID): both originals stay as they are (``user_id`` needs read
        permission on each). ``conflict_resolution`` may then also be
        ``"model"`` (the model picks or rewrites conflicting messages). The
        decision is kept (:meth:`merge_records`) and audited (``ops.audit``,
        when enabled), in the transaction that writes the session.

        Raises:
            PermissionDeniedError: ``user_id`` may not write to ``primary`` or
                read ``secondary``.
            QuotaExceededError: The result would exceed the primary's limit.
            InvalidModelOutputError: The model's answer is not a valid
                decision for these sessions; nothing was written.
            ConcurrentUpdateError: A session changed while the model worked;
                nothing was written.
        """
        t = self._tables
        first = check_id(primary, "primary")
        second = check_id(secondary, "secondary")
        who = check_id(user_id, "user_id")
        if strategy not in MERGE_STRATEGIES:
            raise ConfigurationError(
                f"strategy {strategy!r} is not one of {', '.join(map(repr, MERGE_STRATEGIES))}"
            )
        allowed = MODEL_CONFLICT_RESOLUTIONS if strategy == "model" else CONFLICT_RESOLUTIONS
        if conflict_resolution not in allowed:
            raise ConfigurationError(
                f"conflict_resolution {conflict_resolution!r} is not one of "
                f"{', '.join(map(repr, allowed))}"
                + (' ("model" needs strategy="model")' if conflict_resolution == "model" else "")
            )
        if strategy == "model":
            if not isinstance(model, BaseChatModel):
                raise ConfigurationError(
                    f'strategy="model" needs model=, a LangChain chat model, got {model!r}'
                )
            if first == second:
                raise ConfigurationError(f"cannot merge session {first!r} with itself")
            merged = check_id(session_id, "session_id") if session_id is not None else new_id()
            return self._model_merge(
                first, second, conflict_resolution, who, model, merged, new_id()
            )
        if model is not None or session_id is not None:
            raise ConfigurationError('model= and session_id= go with strategy="model" only')

        def op() -> Op[Session]:
            row = yield from merge(
                t, first, second, strategy=strategy, resolution=conflict_resolution, actor=who
            )
            return t.session(row)

        call = t.call(op, transaction=True, subject=t.describe(SESSION, first), actor=who)

        def plan() -> Plan[Session]:
            session: Session = yield call
            return session

        return plan()

    def _model_merge(
        self,
        first: str,
        second: str,
        conflict: str,
        who: str,
        model: BaseChatModel,
        merged: str,
        merge_id: str,
    ) -> Plan[Session]:
        t = self._tables
        row = yield from merge_plan(
            t,
            first,
            second,
            conflict=conflict,
            actor=who,
            model=model,
            new_session=merged,
            merge_id=merge_id,
        )
        return t.session(row)

    def _merge_records(self, session_id: str, *, user_id: str) -> Call[list[SessionMergeRecord]]:
        """The model-assisted merges that produced a session, with their decisions.

        Raises:
            PermissionDeniedError: ``user_id`` may not read the session.
        """
        t = self._tables
        sid = check_id(session_id, "session_id")
        who = check_id(user_id, "user_id")

        def op() -> Op[list[SessionMergeRecord]]:
            found = yield from get_row(t, sid)
            t.require(found, sid, what=SESSION, actor=who, need="read", live=False)
            result: list[SessionMergeRecord] = yield from merge_records(t, sid)
            return result

        return t.call(op, read=True, subject=t.describe(SESSION, sid), actor=who)
