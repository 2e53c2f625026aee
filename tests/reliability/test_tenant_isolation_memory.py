"""Scenario 8 (conversation memory): tenant isolation under attack.

Tenant ``globex`` (the victim) holds conversations, a chat history and a
session with a participant, all carrying a secret; tenant ``acme`` (the
attacker) holds a conversation of its own. As ``acme``, every public method
of :class:`ConversationStore`, the chat-history factory and
:class:`SessionStore` is called with the victim's conversation, session
and user ids: to read, list, page, measure usage, append, replace, clear,
branch, merge, share and delete. Then raw SQL on a role under row-level
security, bound to ``acme``, tries to read, update and delete the victim's
rows directly.

An attack succeeds if it returns the secret or changes any of the victim's
rows (compared byte for byte after each attack). Expected: 0 successes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from haive_langgraph.memory import (
    ChatHistoryFactory,
    ConversationMetadata,
    ConversationStore,
    SessionStore,
    TokenUsage,
)
from haive_langgraph.memory.conversations._sql import TENANT_TABLES
from tests._roles import application_role

from ._attacks import raw_sql_attacks, run_attacks, tenant_digest
from .conftest import Figures

VICTIM, ATTACKER = "globex", "acme"
SECRET = "globex-confidential-4420"
USER = "u-shared"  # the same user id exists in both tenants


def digest(dsn: str, tenant: str) -> str:
    return tenant_digest(dsn, tenant, TENANT_TABLES)


@pytest.fixture(scope="module")
def victim(dsn: str) -> dict[str, str]:
    with ConversationStore(dsn, tenant_id=VICTIM) as store:
        store.setup()
        conv = store.create_conversation(
            "bot", USER, metadata=ConversationMetadata(title=f"title {SECRET}", tags=["billing"])
        )
        store.add_message(
            conv.conversation_id, "user", f"card {SECRET}", token_usage=TokenUsage(10, 5)
        )
    with ChatHistoryFactory(dsn, tenant_id=VICTIM) as histories:
        history = histories("victim-history", USER)
        history.add_messages([HumanMessage(content=SECRET), AIMessage(content="noted " + SECRET)])
    with SessionStore(dsn, tenant_id=VICTIM) as sessions:
        session = sessions.create_session(USER, "bot", context={"secret": SECRET})
        sessions.add_message(session.session_id, "user", SECRET, user_id=USER)
        sessions.set_participant(session.session_id, "u-other", "read", user_id=USER)
    with ConversationStore(dsn, tenant_id=ATTACKER) as store:
        own = store.create_conversation("bot", USER)
        store.add_message(own.conversation_id, "user", "acme's own words")
    return {
        "conversation": conv.conversation_id,
        "history": "victim-history",
        "session": session.session_id,
        "own": own.conversation_id,
    }


@pytest.fixture(scope="module")
def app_dsn(dsn: str, victim: dict[str, str]) -> Iterator[str]:
    """A login role that may use the tables but does not own them: row security applies."""
    with application_role(dsn) as app:
        yield app


def attacks(ids: dict[str, str], dsn: str) -> list[tuple[str, Callable[[], Any]]]:
    store = ConversationStore(dsn, tenant_id=ATTACKER)
    histories = ChatHistoryFactory(dsn, tenant_id=ATTACKER)
    sessions = SessionStore(dsn, tenant_id=ATTACKER)
    conv, hist, sess = ids["conversation"], ids["history"], ids["session"]

    return [
        ("get_conversation", lambda: store.get_conversation(conv)),
        ("get_messages", lambda: store.get_messages(conv)),
        ("get_messages newest", lambda: store.get_messages(conv, newest_first=True, limit=5)),
        ("query by user", lambda: store.query_conversations(user_id=USER)),
        ("query by agent", lambda: store.query_conversations(agent_id="bot")),
        ("query all", lambda: store.query_conversations()),
        ("conversation_usage", lambda: store.conversation_usage(conv)),
        ("user_usage", lambda: store.user_usage(USER)),
        ("add_message to victim's", lambda: store.add_message(conv, "user", "injected")),
        (
            "add_messages to victim's",
            lambda: store.add_messages(conv, [HumanMessage(content="injected")]),
        ),
        ("delete_conversation", lambda: store.delete_conversation(conv)),
        (
            "create with victim's id",
            lambda: store.create_conversation("bot", USER, conversation_id=conv),
        ),
        ("history read", lambda: histories(hist, USER).messages),
        ("history last", lambda: histories(hist, USER).last(5)),
        ("history page", lambda: histories(hist, USER).page(limit=10)),
        ("history append", lambda: histories(hist, USER).add_messages([HumanMessage("x")])),
        ("history clear", lambda: histories(hist, USER).clear()),
        ("history conv id", lambda: histories(conv, USER).messages),
        ("history clear conv", lambda: histories(conv, USER).clear()),
        ("get_session", lambda: sessions.get_session(sess, user_id=USER)),
        ("session messages", lambda: sessions.get_messages(sess, user_id=USER)),
        ("session add", lambda: sessions.add_message(sess, "user", "x", user_id=USER)),
        ("list_sessions", lambda: sessions.list_sessions(user_id=USER, include_expired=True)),
        ("branch_session", lambda: sessions.branch_session(sess, 0, user_id=USER)),
        ("merge into own", lambda: sessions.merge_sessions(ids["own"], sess, user_id=USER)),
        ("merge from own", lambda: sessions.merge_sessions(sess, ids["own"], user_id=USER)),
        (
            "share victim's",
            lambda: sessions.set_participant(sess, "attacker", "moderate", user_id=USER),
        ),
        (
            "unshare victim's",
            lambda: sessions.remove_participant(sess, "u-other", user_id=USER),
        ),
        ("delete_session", lambda: sessions.delete_session(sess, user_id=USER)),
        ("purge_expired", lambda: sessions.purge_expired()),
        ("delete_user_data", lambda: store.delete_user_data(USER)),
    ]


def test_attacker_reaches_nothing_of_the_victim(
    dsn: str, victim: dict[str, str], figures: Figures
) -> None:
    report = run_attacks(attacks(victim, dsn), SECRET, lambda: digest(dsn, VICTIM))
    assert not report.successes, report.successes
    figures.record(
        "8 tenant isolation (conversation memory)",
        f"{report.planned} attacks through ConversationStore, chat histories and SessionStore "
        f"on the victim's conversations, history, session and user: 0 successes "
        f"({report.refused} refused with a HaiveError, {report.nothing} returned "
        f"nothing, {report.own_rows} acted on the attacker's own rows only); victim rows "
        "byte-identical",
    )


def test_raw_sql_bound_to_the_attacker_reaches_nothing(
    dsn: str, app_dsn: str, victim: dict[str, str], figures: Figures
) -> None:
    before = digest(dsn, VICTIM)
    statements = raw_sql_attacks(app_dsn, TENANT_TABLES, VICTIM, ATTACKER)
    assert digest(dsn, VICTIM) == before
    figures.record(
        "8 tenant isolation (raw SQL, conversation memory)",
        f"{statements} SELECT/UPDATE/DELETE/INSERT statements on the victim's rows in "
        f"{len(TENANT_TABLES)} tables from a role under row-level security, bound to the "
        "attacker or to no tenant: 0 rows reached, inserts refused by the policy",
    )
