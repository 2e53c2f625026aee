"""SessionStore: permissions, TTL, limits, branches that share, merges."""

from __future__ import annotations

from datetime import timedelta

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import (
    ConversationExistsError,
    ConversationNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    SessionExpiredError,
)

from .conftest import Side, history_side, new_id, rows


async def texts(sessions: Side, session_id: str, user: str) -> list[str]:
    page = await sessions("get_messages", session_id, user_id=user)
    return [str(m.message.content) for m in page]


def stored_rows(dsn: str, session_id: str) -> int:
    """Messages physically stored in a session's own rows (not shared ones)."""
    got = rows(
        dsn,
        "SELECT coalesce(sum(n), 0) FROM haive.conversation_messages WHERE conversation_id = %s",
        session_id,
    )
    return int(got[0][0])


def expire(dsn: str, session_id: str) -> None:
    rows(
        dsn,
        "UPDATE haive.conversations SET expires_at = now() - interval '1 second' "
        "WHERE conversation_id = %s RETURNING 1",
        session_id,
    )


async def test_create_get_and_context(sessions: Side) -> None:
    owner = new_id("u")
    s = await sessions("create_session", owner, "helper", {"locale": "en"}, timedelta(hours=1))
    assert (s.user_id, s.agent_id, s.context, s.ttl) == (
        owner,
        "helper",
        {"locale": "en"},
        timedelta(hours=1),
    )
    assert s.expires_at is not None and s.max_messages == 50 and s.message_count == 0
    got = await sessions("get_session", s.session_id, user_id=owner)
    assert got == s
    with pytest.raises(ConversationExistsError):
        await sessions("create_session", owner, session_id=s.session_id)
    child = await sessions(
        "create_session", owner, context={"step": 2}, parent_session_id=s.session_id
    )
    assert child.parent_session_id == s.session_id and child.branch_index is None
    assert child.context == {"locale": "en", "step": 2}
    assert child.message_count == 0
    with pytest.raises(PermissionDeniedError, match="may not read"):
        await sessions("create_session", new_id("stranger"), parent_session_id=s.session_id)
    with pytest.raises(ConversationNotFoundError, match="nope"):
        await sessions("get_session", "nope", user_id=owner)


async def test_participant_permissions_are_enforced(sessions: Side, migrated: str) -> None:
    owner, reader, writer, mod = (new_id(p) for p in ("owner", "reader", "writer", "mod"))
    s = await sessions(
        "create_session", owner, participants={reader: "read", writer: "write", mod: "moderate"}
    )
    sid = s.session_id
    assert s.participants == {reader: "read", writer: "write", mod: "moderate"}
    await sessions("add_message", sid, "user", "from the owner", user_id=owner)
    await sessions("add_message", sid, "user", "from a writer", user_id=writer)
    with pytest.raises(PermissionDeniedError, match=rf"user '{reader}' may not write to session"):
        await sessions("add_message", sid, "user", "from a reader", user_id=reader)
    with pytest.raises(PermissionDeniedError):
        await sessions("add_messages", sid, [HumanMessage("batch")], user_id=reader)
    stranger = new_id("stranger")
    with pytest.raises(PermissionDeniedError, match="may not read"):
        await sessions("get_messages", sid, user_id=stranger)
    assert await texts(sessions, sid, reader) == ["from the owner", "from a writer"]
    page = await sessions("get_messages", sid, user_id=reader)
    assert [m.user_id for m in page] == [owner, writer]
    # Moderation: only owner and moderators manage participants; anyone may leave.
    with pytest.raises(PermissionDeniedError, match="moderate"):
        await sessions("set_participant", sid, stranger, "read", user_id=writer)
    updated = await sessions("set_participant", sid, reader, "write", user_id=mod)
    assert updated.participants[reader] == "write"
    await sessions("add_message", sid, "user", "reader promoted", user_id=reader)
    left = await sessions("remove_participant", sid, writer, user_id=writer)
    assert writer not in left.participants
    with pytest.raises(PermissionDeniedError):
        await sessions("add_message", sid, "user", "gone", user_id=writer)
    with pytest.raises(ConfigurationError, match="permission 'admin'"):
        await sessions("set_participant", sid, stranger, "admin", user_id=owner)
    listed = await sessions("list_sessions", user_id=reader)
    assert sid in {x.session_id for x in listed}
    with pytest.raises(PermissionDeniedError, match="only its owner"):
        await sessions("delete_session", sid, user_id=mod)
    assert stored_rows(migrated, sid) == 3


async def test_expired_sessions_are_gone_and_purged(sessions: Side, migrated: str) -> None:
    owner = new_id("u")
    s = await sessions("create_session", owner, ttl=3600)
    await sessions("add_message", s.session_id, "user", "before", user_id=owner)
    before = (await sessions("get_session", s.session_id, user_id=owner)).expires_at
    await sessions("add_message", s.session_id, "user", "slides the TTL", user_id=owner)
    after = (await sessions("get_session", s.session_id, user_id=owner)).expires_at
    assert after > before  # each message extends an idle TTL
    keep = await sessions("create_session", owner)  # no TTL: never expires
    expire(migrated, s.session_id)
    with pytest.raises(SessionExpiredError, match="expired"):
        await sessions("get_session", s.session_id, user_id=owner)
    with pytest.raises(SessionExpiredError, match="nothing was written"):
        await sessions("add_message", s.session_id, "user", "too late", user_id=owner)
    listed = {x.session_id for x in await sessions("list_sessions", user_id=owner)}
    assert s.session_id not in listed and keep.session_id in listed
    report = await sessions("purge_expired")
    assert report.conversations >= 1 and report.messages >= 2
    with pytest.raises(ConversationNotFoundError):
        await sessions("get_session", s.session_id, user_id=owner)
    await sessions("get_session", keep.session_id, user_id=owner)


async def test_message_limit_is_enforced_atomically(sessions: Side) -> None:
    owner = new_id("u")
    s = await sessions("create_session", owner)
    sid = s.session_id
    await sessions("add_messages", sid, [HumanMessage(f"m{i}") for i in range(48)], user_id=owner)
    with pytest.raises(QuotaExceededError, match="limit is 50"):
        await sessions(
            "add_messages",
            sid,
            [HumanMessage("a"), HumanMessage("b"), HumanMessage("c")],
            user_id=owner,
        )
    assert (await sessions("get_session", sid, user_id=owner)).message_count == 48
    await sessions("add_messages", sid, [HumanMessage("a"), HumanMessage("b")], user_id=owner)
    with pytest.raises(QuotaExceededError):
        await sessions("add_message", sid, "user", "one more", user_id=owner)
    assert len(await texts(sessions, sid, owner)) == 50


async def test_branches_share_their_prefix_without_copying(sessions: Side, migrated: str) -> None:
    owner = new_id("u")
    s = await sessions("create_session", owner, context={"topic": "cats"})
    sid = s.session_id
    await sessions(
        "add_messages",
        sid,
        [HumanMessage("q1"), AIMessage("a1"), HumanMessage("q2")],
        user_id=owner,
    )
    await sessions("add_message", sid, "ai", "a2", user_id=owner)
    b = await sessions("branch_session", sid, 2, {"mood": "curious"}, user_id=owner)
    assert b.parent_session_id == sid and b.branch_index == 2 and b.message_count == 3
    assert b.context == {"topic": "cats", "mood": "curious"}
    assert await texts(sessions, b.session_id, owner) == ["q1", "a1", "q2"]
    assert stored_rows(migrated, b.session_id) == 0  # shared, not copied
    await sessions("add_message", b.session_id, "ai", "other a2", user_id=owner)
    await sessions("add_message", sid, "user", "q3", user_id=owner)
    assert await texts(sessions, b.session_id, owner) == ["q1", "a1", "q2", "other a2"]
    assert await texts(sessions, sid, owner) == ["q1", "a1", "q2", "a2", "q3"]
    # A branch of a branch, by negative index, in the middle of a stored batch.
    bb = await sessions("branch_session", b.session_id, -3, user_id=owner)
    assert await texts(sessions, bb.session_id, owner) == ["q1", "a1"]
    await sessions("add_message", bb.session_id, "user", "q2'", user_id=owner)
    assert await texts(sessions, bb.session_id, owner) == ["q1", "a1", "q2'"]
    assert stored_rows(migrated, bb.session_id) == 1
    page = await sessions("get_messages", bb.session_id, user_id=owner, limit=2, newest_first=True)
    assert [m.message.content for m in page] == ["q2'", "a1"]
    with pytest.raises(ConfigurationError, match="out of range"):
        await sessions("branch_session", sid, 5, user_id=owner)
    with pytest.raises(PermissionDeniedError):
        await sessions("branch_session", sid, 0, user_id=new_id("stranger"))


async def test_branches_keep_their_messages_when_the_source_changes(
    sessions: Side, histories: object, migrated: str
) -> None:
    owner = new_id("u")
    s = await sessions("create_session", owner)
    sid = s.session_id
    await sessions("add_messages", sid, [HumanMessage(f"m{i}") for i in range(4)], user_id=owner)
    b1 = await sessions("branch_session", sid, 1, user_id=owner)
    b2 = await sessions("branch_session", sid, 3, user_id=owner)
    await sessions("add_message", b2.session_id, "ai", "b2 own", user_id=owner)
    # Clearing the source (through its history) copies what branches share first.
    history = history_side(histories, sid)
    await history("clear")
    assert await texts(sessions, sid, owner) == []
    assert await texts(sessions, b1.session_id, owner) == ["m0", "m1"]
    assert await texts(sessions, b2.session_id, owner) == ["m0", "m1", "m2", "m3", "b2 own"]
    # Deleting a session does the same for its branches.
    bb = await sessions("branch_session", b2.session_id, 4, user_id=owner)
    await sessions("delete_session", b2.session_id, user_id=owner)
    assert await texts(sessions, bb.session_id, owner) == ["m0", "m1", "m2", "m3", "b2 own"]
    assert (await sessions("get_session", bb.session_id, user_id=owner)).parent_session_id is None


async def test_merge_append_deduplicates_the_shared_prefix(sessions: Side) -> None:
    owner, guest = new_id("u"), new_id("guest")
    s = await sessions("create_session", owner, context={"a": 1, "both": "primary"})
    sid = s.session_id
    await sessions("add_messages", sid, [HumanMessage("q1"), AIMessage("a1")], user_id=owner)
    b = await sessions("branch_session", sid, 1, {"both": "branch"}, user_id=owner)
    await sessions(
        "add_messages", b.session_id, [HumanMessage("bq"), AIMessage("ba")], user_id=owner
    )
    await sessions("add_message", sid, "user", "q2", user_id=owner)
    await sessions("set_participant", b.session_id, guest, "read", user_id=owner)
    merged = await sessions("merge_sessions", sid, b.session_id, user_id=owner)
    assert await texts(sessions, sid, owner) == ["q1", "a1", "q2", "bq", "ba"]
    assert merged.message_count == 5
    assert merged.context == {"a": 1, "both": "primary"}  # primary_wins
    assert merged.participants == {guest: "read"}
    # The secondary is unchanged; merging again adds nothing.
    assert await texts(sessions, b.session_id, owner) == ["q1", "a1", "bq", "ba"]
    again = await sessions("merge_sessions", sid, b.session_id, user_id=owner)
    assert again.message_count == 5


async def test_merge_interleave_and_conflict_resolution(sessions: Side, migrated: str) -> None:
    owner = new_id("u")
    p = await sessions("create_session", owner, context={"k": "p"})
    q = await sessions("create_session", owner, context={"k": "q", "extra": 1})
    pid, qid = p.session_id, q.session_id
    # Alternate writes so that timestamps interleave; "x" exists in both.
    await sessions("add_message", pid, "user", "p1", user_id=owner)
    await sessions("add_message", qid, "user", "q1", user_id=owner)
    await sessions("add_message", pid, "user", "p2 (primary's x)", user_id=owner, message_id="x")
    await sessions("add_message", qid, "user", "q2 (secondary's x)", user_id=owner, message_id="x")
    await sessions("add_message", pid, "user", "p3", user_id=owner)
    await sessions("add_message", qid, "user", "q3", user_id=owner)
    branch = await sessions("branch_session", pid, 2, user_id=owner)
    primary_first = await sessions("branch_session", pid, 2, user_id=owner)
    merged = await sessions(
        "merge_sessions", pid, qid, "interleave", "secondary_wins", user_id=owner
    )
    assert await texts(sessions, pid, owner) == ["p1", "q1", "q2 (secondary's x)", "p3", "q3"]
    assert merged.context == {"k": "q", "extra": 1}
    # The branch made before the merge still reads what it shared.
    assert await texts(sessions, branch.session_id, owner) == ["p1", "p2 (primary's x)", "p3"]
    assert await texts(sessions, primary_first.session_id, owner) == [
        "p1",
        "p2 (primary's x)",
        "p3",
    ]
    # primary_wins keeps the primary's version of a conflicting message.
    r = await sessions("create_session", owner)
    await sessions("add_message", r.session_id, "user", "r's x", user_id=owner, message_id="x")
    kept = await sessions(
        "merge_sessions", r.session_id, qid, "append", "primary_wins", user_id=owner
    )
    assert await texts(sessions, r.session_id, owner) == ["r's x", "q1", "q3"]
    assert kept.message_count == 3
    with pytest.raises(ConfigurationError, match="strategy 'zip'"):
        await sessions("merge_sessions", pid, qid, "zip", user_id=owner)
    with pytest.raises(ConfigurationError, match="conflict_resolution"):
        await sessions("merge_sessions", pid, qid, "append", "newest_wins", user_id=owner)
    with pytest.raises(PermissionDeniedError):
        await sessions("merge_sessions", pid, qid, user_id=new_id("stranger"))


async def test_merge_respects_the_message_limit(sessions: Side) -> None:
    owner = new_id("u")
    p = await sessions("create_session", owner)
    q = await sessions("create_session", owner)
    await sessions(
        "add_messages", p.session_id, [HumanMessage(f"p{i}") for i in range(30)], user_id=owner
    )
    await sessions(
        "add_messages", q.session_id, [HumanMessage(f"q{i}") for i in range(30)], user_id=owner
    )
    with pytest.raises(QuotaExceededError, match="would hold 60 messages"):
        await sessions("merge_sessions", p.session_id, q.session_id, user_id=owner)
    assert (await sessions("get_session", p.session_id, user_id=owner)).message_count == 30
