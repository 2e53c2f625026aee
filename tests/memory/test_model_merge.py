"""Model-assisted merges: merge_sessions(strategy="model") with deterministic fake chat models."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable, RunnableLambda

from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidModelOutputError,
    PermissionDeniedError,
)
from haive_langgraph.memory import MergeDecision, SessionStore
from haive_langgraph.ops import audit
from haive_langgraph.ops.keys import frames_by_key, rotate_keys

from .conftest import Side, new_id, rows


def fake(answer: dict[str, Any] | str) -> GenericFakeChatModel:
    """A chat model answering one fixed message (JSON text; no structured output)."""
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return GenericFakeChatModel(messages=iter([AIMessage(content=text)]))


class StructuredFake(BaseChatModel):
    """A chat model with structured output: returns the decision as the schema's object."""

    answer: dict[str, Any]
    prompts: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "structured-fake"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise AssertionError("the structured runnable is used, not the plain model")

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
        def answer(messages: list[BaseMessage]) -> Any:
            self.prompts.append(messages)
            return schema.model_validate(self.answer)

        return RunnableLambda(answer)


def item(mid: str, source: str, action: str = "keep", content: str | None = None) -> dict[str, Any]:
    return {
        "message_id": mid,
        "source": source,
        "action": action,
        "content": content,
        "reason": f"{action} {mid}",
    }


async def two_branches(sessions: Side, user: str) -> tuple[str, str, dict[str, str]]:
    """A primary and a secondary session sharing a conflicting message ``m2``."""
    p = await sessions("create_session", user, "planner", context={"city": "Rome"})
    s = await sessions("create_session", user, "planner", context={"city": "Roma", "diet": "veg"})
    ids = {k: new_id("m") for k in ("p1", "p3", "s2", "s3")}
    ids["m2"] = new_id("m")
    pid, sid = p.session_id, s.session_id
    await sessions(
        "add_message", pid, "user", "plan a trip to Rome", user_id=user, message_id=ids["p1"]
    )
    await sessions(
        "add_message",
        pid,
        "ai",
        "Rome in 3 days: Colosseum, Vatican",
        user_id=user,
        message_id=ids["m2"],
    )
    await sessions("add_message", pid, "user", "budget 500 EUR", user_id=user, message_id=ids["p3"])
    await sessions(
        "add_message",
        sid,
        "ai",
        "Rome in 3 days: Colosseum, Trastevere",
        user_id=user,
        message_id=ids["m2"],
    )
    await sessions(
        "add_message", sid, "user", "budget 500 euros", user_id=user, message_id=ids["s2"]
    )
    await sessions(
        "add_message", sid, "user", "also vegetarian food", user_id=user, message_id=ids["s3"]
    )
    return pid, sid, ids


def decision(ids: dict[str, str], m2_source: str = "secondary") -> dict[str, Any]:
    return {
        "messages": [
            item(ids["p1"], "primary"),
            item(ids["m2"], m2_source),
            item(ids["p3"], "primary"),
            item(ids["s2"], "secondary", "drop"),
            item(ids["s3"], "secondary", "rewrite", "I also need vegetarian restaurants"),
        ],
        "summary": "one plan, the duplicate budget dropped",
    }


async def texts(sessions: Side, session_id: str, user: str) -> list[str]:
    page = await sessions("get_messages", session_id, user_id=user)
    return [str(m.message.content) for m in page.messages]


async def test_model_merge_writes_a_new_session_and_keeps_both(sessions: Side) -> None:
    user = new_id("u")
    pid, sid, ids = await two_branches(sessions, user)
    before = (await texts(sessions, pid, user), await texts(sessions, sid, user))
    merged = await sessions(
        "merge_sessions", pid, sid, "model", "model", user_id=user, model=fake(decision(ids))
    )
    assert merged.session_id not in (pid, sid)
    assert await texts(sessions, merged.session_id, user) == [
        "plan a trip to Rome",
        "Rome in 3 days: Colosseum, Trastevere",  # the model chose the secondary's
        "budget 500 EUR",
        "I also need vegetarian restaurants",
    ]
    # Both originals unchanged.
    assert (await texts(sessions, pid, user), await texts(sessions, sid, user)) == before
    page = await sessions("get_messages", merged.session_id, user_id=user)
    rewritten = page.messages[-1]
    assert rewritten.message_id == ids["s3"]
    assert rewritten.metadata["merge"] == {"rewritten": True, "reason": f"rewrite {ids['s3']}"}
    assert merged.context == {"city": "Rome", "diet": "veg"}  # the primary's keys win
    assert merged.agent_id == "planner" and merged.user_id == user
    (record,) = await sessions("merge_records", merged.session_id, user_id=user)
    assert (record.primary_id, record.secondary_id) == (pid, sid)
    assert record.conflict_resolution == "model" and record.user_id == user
    assert record.decision["conflicts"] == [ids["m2"]]
    assert [m["action"] for m in record.decision["messages"]] == [
        "keep",
        "keep",
        "keep",
        "drop",
        "rewrite",
    ]
    assert record.decision["messages"][3]["reason"] == f"drop {ids['s2']}"
    assert record.decision["summary"] == "one plan, the duplicate budget dropped"


async def test_the_merged_session_can_be_named(sessions: Side) -> None:
    user = new_id("u")
    pid, sid, ids = await two_branches(sessions, user)
    name = new_id("merged")
    merged = await sessions(
        "merge_sessions",
        pid,
        sid,
        "model",
        user_id=user,
        model=fake(decision(ids)),
        session_id=name,
    )
    assert merged.session_id == name
    assert len(await texts(sessions, name, user)) == 4


async def test_primary_wins_settles_conflicts_whatever_the_model_says(sessions: Side) -> None:
    user = new_id("u")
    pid, sid, ids = await two_branches(sessions, user)
    merged = await sessions(
        "merge_sessions", pid, sid, "model", user_id=user, model=fake(decision(ids, "secondary"))
    )
    got = await texts(sessions, merged.session_id, user)
    assert got[1] == "Rome in 3 days: Colosseum, Vatican"
    (record,) = await sessions("merge_records", merged.session_id, user_id=user)
    assert record.decision["messages"][1]["source"] == "primary"
    merged = await sessions(
        "merge_sessions",
        pid,
        sid,
        "model",
        "secondary_wins",
        user_id=user,
        model=fake(decision(ids, "primary")),
    )
    assert (await texts(sessions, merged.session_id, user))[1].endswith("Trastevere")


def invalid_decisions(ids: dict[str, str]) -> Iterator[tuple[Any, str]]:
    yield "Sure! Here is the merged conversation.", "not valid JSON"
    yield {"messages": [item(ids["p1"], "primary")], "extra": 1}, "not valid JSON"
    good = decision(ids)
    yield {**good, "messages": good["messages"][:-1]}, "not accounted for"
    yield {**good, "messages": [*good["messages"], item("nope", "primary")]}, "neither session"
    yield {**good, "messages": [*good["messages"], good["messages"][0]]}, "listed twice"
    bad = json.loads(json.dumps(good))
    bad["messages"][4]["content"] = "  "
    yield bad, "without a text"
    bad = json.loads(json.dumps(good))
    bad["messages"][0]["content"] = "changed"
    yield bad, "has a text"


async def test_invalid_model_output_fails_cleanly(sessions: Side, migrated: str) -> None:
    user = new_id("u")
    pid, sid, ids = await two_branches(sessions, user)
    count = "SELECT count(*) FROM haive.conversations WHERE user_id = %s"
    merges = "SELECT count(*) FROM haive.conversation_merges WHERE primary_id = %s"
    before = rows(migrated, count, user)
    for answer, error in invalid_decisions(ids):
        with pytest.raises(InvalidModelOutputError, match=error) as raised:
            await sessions(
                "merge_sessions", pid, sid, "model", "model", user_id=user, model=fake(answer)
            )
        assert "nothing was written" in str(raised.value)
    # A conflicting message rewritten although primary_wins fixes its version.
    bad = decision(ids)
    bad["messages"][1] = item(ids["m2"], "primary", "rewrite", "Rome: everything")
    with pytest.raises(InvalidModelOutputError, match="conflicts"):
        await sessions("merge_sessions", pid, sid, "model", user_id=user, model=fake(bad))
    assert rows(migrated, count, user) == before
    assert rows(migrated, merges, pid) == [(0,)]


def test_structured_output_is_used_when_the_model_has_it(sync_sessions: SessionStore) -> None:
    user = new_id("u")
    side = Side(sync_sessions, False)
    pid, sid, ids = asyncio.run(two_branches(side, user))
    model = StructuredFake(answer=decision(ids))
    merged = sync_sessions.merge_sessions(pid, sid, "model", "model", user_id=user, model=model)
    assert len(sync_sessions.get_messages(merged.session_id, user_id=user).messages) == 4
    (prompt,) = model.prompts
    shown = json.loads(str(prompt[-1].content))
    assert [m["id"] for m in shown["primary"]] == [ids["p1"], ids["m2"], ids["p3"]]
    assert shown["conflicting_ids"] == [ids["m2"]]
    assert isinstance(MergeDecision.model_validate(decision(ids)), MergeDecision)


async def test_model_merge_checks_arguments_and_permissions(sessions: Side) -> None:
    user, other = new_id("u"), new_id("u")
    pid, sid, ids = await two_branches(sessions, user)
    with pytest.raises(ConfigurationError, match="needs model="):
        await sessions("merge_sessions", pid, sid, "model", user_id=user)
    with pytest.raises(ConfigurationError, match='needs strategy="model"'):
        await sessions("merge_sessions", pid, sid, "append", "model", user_id=user)
    with pytest.raises(ConfigurationError, match="with strategy"):
        await sessions("merge_sessions", pid, sid, "append", user_id=user, model=fake("{}"))
    with pytest.raises(PermissionDeniedError):
        await sessions(
            "merge_sessions", pid, sid, "model", user_id=other, model=fake(decision(ids))
        )


def test_a_session_changed_during_the_merge_is_not_overwritten(
    sync_sessions: SessionStore,
) -> None:
    user = new_id("u")
    pid, sid, ids = asyncio.run(two_branches(Side(sync_sessions, False), user))

    class Interrupting(StructuredFake):
        def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
            def answer(messages: list[BaseMessage]) -> Any:
                sync_sessions.add_message(sid, "user", "one more thing", user_id=user)
                return schema.model_validate(self.answer)

            return RunnableLambda(answer)

    with pytest.raises(ConcurrentUpdateError, match="nothing was written"):
        sync_sessions.merge_sessions(
            pid, sid, "model", user_id=user, model=Interrupting(answer=decision(ids))
        )


def test_the_merge_is_audited(migrated: str, sync_sessions: SessionStore) -> None:
    audit.enable(migrated)
    try:
        user = new_id("u")
        pid, sid, ids = asyncio.run(two_branches(Side(sync_sessions, False), user))
        merged = sync_sessions.merge_sessions(
            pid, sid, "model", user_id=user, model=fake(decision(ids))
        )
        (event,) = audit.query(migrated, operation="MERGE", user_id=user)
        assert event.table == "conversations"
        assert event.object_key["conversation_id"] == merged.session_id
        assert (event.object_key["primary"], event.object_key["secondary"]) == (pid, sid)
    finally:
        audit.disable(migrated)


def test_merge_records_are_encrypted_and_rotate_with_the_keys(migrated: str) -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    old = KeyRing.from_string(f"k1:{k1}")
    new = KeyRing.from_string(f"k2:{k2},k1:{k1}")
    user = new_id("u")
    with SessionStore(migrated, codec=HaiveCodec(keyring=old)) as sessions:
        pid, sid, ids = asyncio.run(two_branches(Side(sessions, False), user))
        merged = sessions.merge_sessions(pid, sid, "model", user_id=user, model=fake(decision(ids)))
    (frame,) = rows(
        migrated,
        "SELECT decision FROM haive.conversation_merges WHERE conversation_id = %s",
        merged.session_id,
    )[0]
    assert b"rewrite" not in bytes(frame)  # the reasons are not in plaintext
    report = rotate_keys(migrated, HaiveCodec(keyring=new))
    assert report.rewritten["conversation_merges"] >= 1
    assert set(frames_by_key(migrated)["conversation_merges"]) == {"k2"}
    with SessionStore(migrated, codec=HaiveCodec(keyring=KeyRing.from_string(f"k2:{k2}"))) as s:
        (record,) = s.merge_records(merged.session_id, user_id=user)
        assert record.decision["messages"][4]["content"] == "I also need vegetarian restaurants"


async def test_erasing_a_user_erases_merge_records_of_their_sessions(
    sessions: Side, store: Side, migrated: str
) -> None:
    alice, bob = new_id("u"), new_id("u")
    pid, sid, ids = await two_branches(sessions, alice)
    await sessions("set_participant", pid, bob, "read", user_id=alice)
    await sessions("set_participant", sid, bob, "read", user_id=alice)
    merged = await sessions(
        "merge_sessions", pid, sid, "model", user_id=bob, model=fake(decision(ids))
    )
    assert len(await sessions("merge_records", merged.session_id, user_id=bob)) == 1
    await store("delete_user_data", alice)
    # Bob's merged session stays (Alice's messages in it are gone), its record too.
    assert await sessions("merge_records", merged.session_id, user_id=bob) == []
    assert rows(
        migrated, "SELECT count(*) FROM haive.conversation_merges WHERE user_id = %s", bob
    ) == [(0,)]
    assert await texts(sessions, merged.session_id, bob) == []
