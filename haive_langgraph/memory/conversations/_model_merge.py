"""Model-assisted merges: a chat model writes the merged transcript of two sessions.

``merge_sessions(primary, secondary, strategy="model", model=...)`` reads both
sessions, shows them to the model, and asks for a :class:`MergeDecision`:
every message of either session, in the order of the merged transcript, each
kept, rewritten (with its new text) or dropped, with a reason. The decision
is checked against the sessions (no unknown or repeated message, a text for
every rewrite, conflicts settled as ``conflict_resolution`` says) before
anything is written; then, in one transaction, the merged transcript becomes
a new session (both originals stay as they were), the decision is kept as a
merge record of it (``merge_records``), and the audit log, when enabled,
records the merge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from psycopg.types.numeric import Int8
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import (
    ConcurrentUpdateError,
    InvalidModelOutputError,
    QuotaExceededError,
)
from haive_langgraph.memory.conversations import _sql as S
from haive_langgraph.memory.conversations import _sql_topics as ST
from haive_langgraph.memory.conversations._messages import Entry, read_entries, write_entries
from haive_langgraph.memory.conversations._participants import set_participants
from haive_langgraph.memory.conversations._plans import AskModel, Plan, structured
from haive_langgraph.memory.conversations._rows import create, get_row, lock_rows
from haive_langgraph.memory.conversations._tables import SESSION, ConversationTables, ConvRow
from haive_langgraph.memory.conversations._types import Permission

__all__ = ["MergeDecision", "MergedMessage", "SessionMergeRecord"]

ModelConflict = Literal["primary_wins", "secondary_wins", "model"]


class MergedMessage(BaseModel):
    """The model's decision about one message of either session."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(description="id of a message of the primary or secondary session")
    source: Literal["primary", "secondary"] = Field(
        description="which session's version of the message this is"
    )
    action: Literal["keep", "rewrite", "drop"] = Field(
        description="keep it as it is, rewrite it (give content), or drop it"
    )
    content: str | None = Field(
        default=None, description="the new text of a rewritten message (only for rewrite)"
    )
    reason: str = Field(description="why, in one sentence")


class MergeDecision(BaseModel):
    """The merged transcript: every message of both sessions once, kept and
    rewritten ones in their merged order."""

    model_config = ConfigDict(extra="forbid")

    messages: list[MergedMessage]
    summary: str = Field(default="", description="what the merge did, in one or two sentences")


@dataclass(frozen=True, slots=True)
class SessionMergeRecord:
    """A model-assisted merge that produced a session (``merge_records``).

    Attributes:
        session_id: The merged session.
        merge_id: Id of the merge.
        primary_id, secondary_id: The sessions merged (left unchanged).
        user_id: Who merged them.
        model: The chat model's name, when it gives one.
        conflict_resolution: How conflicts were settled.
        created_at: When.
        decision: The checked decision: ``messages`` (each with
            ``message_id``, ``source``, ``action``, ``reason``, and
            ``content`` for rewrites), ``summary``, ``conflicts`` (ids of
            messages both sessions held with different contents).
    """

    session_id: str
    merge_id: str
    primary_id: str
    secondary_id: str
    user_id: str
    model: str | None
    conflict_resolution: str
    created_at: datetime
    decision: dict[str, Any]


INSTRUCTIONS = """You merge two branches of one conversation into one transcript.
You get the primary and the secondary session's messages as JSON (id, role, text).
Answer with the merged transcript: list EVERY message of both sessions exactly once
(a message id present in both sessions once), in the order it should have in the
merged transcript. For each give its message_id, its source ("primary" or
"secondary"), an action ("keep"; "rewrite" with the new text in "content"; or
"drop" for a duplicate or a message the merged conversation does not need) and a
short reason. Keep roles as they are. Conflicts (the same id with different texts):
{conflict}
Answer with JSON only: {{"messages": [{{"message_id": "...", "source": "primary",
"action": "keep", "content": null, "reason": "..."}}], "summary": "..."}}"""

CONFLICT_RULES = {
    "primary_wins": "keep the primary's version (source primary, action keep).",
    "secondary_wins": "keep the secondary's version (source secondary, action keep).",
    "model": "choose the better version, or rewrite the message to reconcile both.",
}


def _text(entry: Entry) -> str:
    fields = entry.item[0]
    content = fields.get("content", "")
    return content if isinstance(content, str) else json.dumps(content, default=str)


def fingerprint(entries: Sequence[Entry]) -> str:
    """What the model saw of a session: ids and texts, hashed (to detect a concurrent change)."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e.message_id, e.role, _text(e)]).encode())
    return h.hexdigest()


def conflicts(prim: Sequence[Entry], sec: Sequence[Entry]) -> list[str]:
    """Ids both sessions hold with different contents."""
    mine = {e.message_id: e for e in prim}
    return [
        e.message_id
        for e in sec
        if e.message_id in mine and mine[e.message_id].item[0] != e.item[0]
    ]


def prompt(prim: Sequence[Entry], sec: Sequence[Entry], conflict: str) -> list[BaseMessage]:
    """The messages asking the model for a :class:`MergeDecision`."""

    def side(entries: Sequence[Entry]) -> list[dict[str, str]]:
        return [{"id": e.message_id, "role": e.role, "text": _text(e)} for e in entries]

    body = {
        "primary": side(prim),
        "secondary": side(sec),
        "conflicting_ids": conflicts(prim, sec),
    }
    return [
        SystemMessage(INSTRUCTIONS.format(conflict=CONFLICT_RULES[conflict])),
        HumanMessage(json.dumps(body, ensure_ascii=False)),
    ]


def parse(answer: Any) -> MergeDecision:
    """The model's answer as a :class:`MergeDecision` (structured output, or a message
    whose text is the JSON object alone).

    Raises:
        InvalidModelOutputError: Anything else.
    """
    try:
        if isinstance(answer, MergeDecision):
            return answer
        if isinstance(answer, dict):
            return MergeDecision.model_validate(answer)
        if isinstance(answer, BaseMessage):
            text = answer.text if isinstance(answer.text, str) else str(answer.content)
            return MergeDecision.model_validate_json(text.strip())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidModelOutputError(
            f"the model's merge decision is not valid JSON of the expected shape "
            f"({exc.error_count()} error(s); first at {where or 'the top'}: {first['msg']}); "
            "nothing was written"
        ) from None
    raise InvalidModelOutputError(
        f"the model returned {type(answer).__name__}, not a merge decision; nothing was written"
    )


def _invalid(detail: str) -> InvalidModelOutputError:
    return InvalidModelOutputError(
        f"the model's merge decision is invalid: {detail}; nothing was written"
    )


def settle(
    decision: MergeDecision, prim: Sequence[Entry], sec: Sequence[Entry], conflict: str
) -> tuple[list[Entry], dict[str, Any]]:
    """The merged entries a decision gives, and the decision as recorded.

    Raises:
        InvalidModelOutputError: An unknown or repeated message, a message
            left out, a rewrite without text (or text without a rewrite), or a
            conflicting message rewritten or dropped when ``conflict`` fixes its version.
    """
    sides = {
        "primary": {e.message_id: e for e in prim},
        "secondary": {e.message_id: e for e in sec},
    }
    clash = set(conflicts(prim, sec))
    expected = [e.message_id for e in prim] + [
        e.message_id for e in sec if e.message_id not in sides["primary"]
    ]
    seen: set[str] = set()
    merged: list[Entry] = []
    record: list[dict[str, Any]] = []
    for item in decision.messages:
        mid = item.message_id
        if mid in seen:
            raise _invalid(f"message {mid!r} is listed twice")
        seen.add(mid)
        source: str = item.source
        if mid not in sides[source]:
            other = "secondary" if source == "primary" else "primary"
            if mid not in sides[other]:
                raise _invalid(f"message {mid!r} is in neither session")
            source = other  # the only version there is
        if mid in clash and conflict != "model":
            if item.action != "keep":
                raise _invalid(
                    f"message {mid!r} conflicts and conflict_resolution={conflict!r} keeps "
                    f"its {conflict.split('_')[0]} version, but the model chose {item.action!r}"
                )
            source = conflict.split("_")[0]
        if item.action == "rewrite":
            if not item.content or not item.content.strip():
                raise _invalid(f"message {mid!r} is rewritten without a text")
        elif item.content is not None:
            raise _invalid(f"message {mid!r} has a text but the action {item.action!r}")
        entry = sides[source][mid]
        if item.action == "rewrite":
            fields, meta = entry.item
            note = {"rewritten": True, "reason": item.reason}
            rewritten = [{**fields, "content": item.content}, {**dict(meta or {}), "merge": note}]
            entry = replace(entry, item=rewritten)
        if item.action != "drop":
            merged.append(entry)
        record.append(
            {
                "message_id": mid,
                "source": source,
                "action": item.action,
                "reason": item.reason,
                **({"content": item.content} if item.action == "rewrite" else {}),
            }
        )
    missing = [m for m in expected if m not in seen]
    if missing:
        raise _invalid(
            f"{len(missing)} message(s) are not accounted for (first {missing[0]!r}): every "
            "message of both sessions must be kept, rewritten or dropped"
        )
    return merged, {"messages": record, "summary": decision.summary, "conflicts": sorted(clash)}


def model_name(model: BaseChatModel) -> str | None:
    """A chat model's name, as LangChain tracing reads it (``ls_model_name``), if any."""
    try:
        name = model._get_ls_params().get("ls_model_name")
    except Exception:
        name = None
    return str(name) if name else None


def apply(
    t: ConversationTables,
    primary: str,
    secondary: str,
    *,
    seen: tuple[str, str],
    merged: list[Entry],
    decision: dict[str, Any],
    conflict: str,
    actor: str,
    new_session: str,
    merge_id: str,
    model: str | None,
) -> Op[ConvRow]:
    """Write the merged transcript as a new session, with its merge record (run in a transaction).

    Raises:
        ConcurrentUpdateError: A session changed since the model read it.
        QuotaExceededError: More messages than the primary's limit.
    """
    rows = yield from lock_rows(t, [primary, secondary])
    p = t.require(rows.get(primary), primary, what=SESSION, actor=actor, need="read")
    s = t.require(rows.get(secondary), secondary, what=SESSION, actor=actor, need="read")
    prim = yield from read_entries(t, primary)
    sec = yield from read_entries(t, secondary)
    if (fingerprint(prim), fingerprint(sec)) != seen:
        raise ConcurrentUpdateError(
            f"{t.describe(SESSION, primary)} or {t.describe(SESSION, secondary)} changed while "
            "the model was merging them; nothing was written: merge again"
        )
    if p.max_messages is not None and len(merged) > p.max_messages:
        raise QuotaExceededError(
            f"the merge of {t.describe(SESSION, primary)} would hold {len(merged)} messages and "
            f"its limit is {p.max_messages}; nothing was written"
        )
    title, p_context = t.decode_details(p)
    _, s_context = t.decode_details(s)
    context = (
        {**p_context, **s_context} if conflict == "secondary_wins" else {**s_context, **p_context}
    )
    people: dict[str, Permission] = {**dict(s.participants), **dict(p.participants)}
    for owner in (s.user_id, p.user_id):
        if owner is not None:
            people[owner] = "write"
    people.pop(actor, None)
    yield from create(
        t,
        new_session,
        what=SESSION,
        user_id=actor,
        agent_id=p.agent_id,
        tags=p.tags,
        settings=p.settings,
        details=t.encode_details(new_session, title, context),
        ttl=p.ttl,
        max_messages=p.max_messages,
    )
    yield from set_participants(t, new_session, people, replace=True)
    # Copies: their token usage stays counted where it was written.
    yield from write_entries(t, new_session, merged, 0, [True] * len(merged))
    params = {
        "t": t.tenant_id,
        "c": new_session,
        "n": Int8(len(merged)),
        "branch": Int8(0),
        "parent": None,
    }
    yield Step(t.recount, params, fetch="none")
    payload = json.dumps(decision, ensure_ascii=False, sort_keys=True).encode()
    frame = t.codec.encode(payload, S.merge_context(t.tenant_id, new_session, merge_id))
    yield Step(
        S.q(ST.INSERT_MERGE, t.schema),
        {
            "t": t.tenant_id,
            "c": new_session,
            "m": merge_id,
            "primary": primary,
            "secondary": secondary,
            "u": actor,
            "model": model,
            "conflict": conflict,
            "decision": frame,
        },
        fetch="one",
    )
    yield from audit(t, actor, new_session, primary, secondary, merge_id)
    row = yield from get_row(t, new_session)
    assert row is not None
    return row


def audit(
    t: ConversationTables, actor: str, merged: str, primary: str, secondary: str, merge_id: str
) -> Op[None]:
    """Record the merge in the audit log (``ops.audit``) when it exists and is enabled."""
    # Imported here: the audit package imports the operations layer, which imports memory.
    from haive_langgraph.ops.audit import record_op

    name = f'"{t.schema}".audit_log'
    exists = yield Step(ST.AUDIT_LOG_EXISTS, {"name": name}, fetch="one")
    if not exists or not exists[0]:
        return
    key = {
        "conversation_id": merged,
        "merge_id": merge_id,
        "primary": primary,
        "secondary": secondary,
        "strategy": "model",
    }
    yield from record_op(
        t.schema,
        operation="MERGE",
        table="conversations",
        object_key=key,
        tenant_id=t.tenant_id,
        user_id=actor,
        only_if_enabled=True,
    )


def records(t: ConversationTables, session_id: str) -> Op[list[SessionMergeRecord]]:
    """The merge records of a session (its decisions decoded), oldest first."""
    rows = yield Step(S.q(ST.MERGES_OF, t.schema), {"t": t.tenant_id, "c": session_id})
    out = []
    for cid, mid, prim, sec, user, model, conflict, created, frame in rows:
        payload = t.codec.decode(bytes(frame), S.merge_context(t.tenant_id, cid, mid))
        out.append(
            SessionMergeRecord(
                cid, mid, prim, sec, user, model, conflict, created, json.loads(payload)
            )
        )
    return out


def merge_plan(
    t: ConversationTables,
    primary: str,
    secondary: str,
    *,
    conflict: str,
    actor: str,
    model: BaseChatModel,
    new_session: str,
    merge_id: str,
) -> Plan[ConvRow]:
    """Read both sessions, ask the model, check its decision, write the merged session."""
    subject = t.describe(SESSION, primary)

    def read() -> Op[tuple[list[Entry], list[Entry]]]:
        for sid in (primary, secondary):
            found = yield from get_row(t, sid)
            t.require(found, sid, what=SESSION, actor=actor, need="read")
        prim = yield from read_entries(t, primary)
        sec = yield from read_entries(t, secondary)
        return prim, sec

    prim, sec = yield t.call(read, read=True, subject=subject, actor=actor)
    runnable = structured(model, MergeDecision) or model
    try:
        answer = yield AskModel(runnable, prompt(prim, sec, conflict))
    except OutputParserException as exc:
        raise InvalidModelOutputError(
            f"the model's structured merge decision could not be parsed ({exc}); "
            "nothing was written"
        ) from exc
    merged, decision = settle(parse(answer), prim, sec, conflict)
    seen = (fingerprint(prim), fingerprint(sec))
    name = model_name(model)

    def write() -> Op[ConvRow]:
        row: ConvRow = yield from apply(
            t,
            primary,
            secondary,
            seen=seen,
            merged=merged,
            decision=decision,
            conflict=conflict,
            actor=actor,
            new_session=new_session,
            merge_id=merge_id,
            model=name,
        )
        return row

    row: ConvRow = yield t.call(write, transaction=True, subject=subject, actor=actor)
    return row
