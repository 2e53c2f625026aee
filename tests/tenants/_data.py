"""Test data for per-tenant retention and analytics: a registry row with settings,
and per tenant a checkpoint thread, conversations with usage, a session, store
items; ``age`` moves rows back in time (what the clock would have done)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.memory import ConversationStore, SessionStore, TokenUsage
from haive_langgraph.ops import migrate_all
from haive_langgraph.stores import PostgresStore


def migrate(dsn: str) -> None:
    migrate_all(dsn)


def register(dsn: str, tenant_id: str, **settings: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO haive.tenants (tenant_id, display_name, settings) VALUES (%s, %s, %s) "
            "ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings",
            (tenant_id, tenant_id.title(), json.dumps(settings)),
        )


def put_thread(dsn: str, tenant_id: str, thread_id: str) -> None:
    saver = PostgresCheckpointer(dsn, tenant_id=tenant_id)
    try:
        config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": ["x" * 600]}
        checkpoint["channel_versions"] = {"messages": 1}
        saver.put(config, checkpoint, {"source": "input", "step": 0}, {"messages": 1})
    finally:
        saver.close()


def add_conversation(
    dsn: str, tenant_id: str, conversation_id: str, *, usage: list[TokenUsage]
) -> None:
    """A conversation with a human message and one AI reply per ``usage``."""
    with ConversationStore(dsn, tenant_id=tenant_id) as store:
        store.create_conversation("bot", "alice", conversation_id=conversation_id)
        messages: list[Any] = [HumanMessage("hello " * 20)]
        messages += [AIMessage(f"reply {i} " * 20) for i in range(len(usage))]
        store.add_messages(conversation_id, messages, token_usage=[None, *usage])


def add_session(dsn: str, tenant_id: str, session_id: str) -> None:
    with SessionStore(dsn, tenant_id=tenant_id) as sessions:
        sessions.create_session("alice", "bot", session_id=session_id)
        sessions.add_message(session_id, "human", "hi there", user_id="alice")


def put_item(dsn: str, tenant_id: str, key: str) -> None:
    store = PostgresStore(dsn, tenant_id=tenant_id)
    try:
        store.put(("docs",), key, {"text": "y" * 300})
    finally:
        store.close()


def age(
    dsn: str,
    tenant_id: str,
    days: float,
    *,
    threads: tuple[str, ...] = (),
    conversations: tuple[str, ...] = (),
    items: tuple[str, ...] = (),
) -> None:
    """Move the named rows ``days`` back (their writes, their messages)."""
    shift = f"{days} days"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.threads SET updated_at = updated_at - %s::interval, "
            "created_at = created_at - %s::interval "
            "WHERE tenant_id = %s AND thread_id = ANY(%s)",
            (shift, shift, tenant_id, list(threads)),
        )
        conn.execute(
            "UPDATE haive.conversations SET updated_at = updated_at - %s::interval, "
            "last_message_at = last_message_at - %s::interval, "
            "created_at = created_at - %s::interval "
            "WHERE tenant_id = %s AND conversation_id = ANY(%s)",
            (shift, shift, shift, tenant_id, list(conversations)),
        )
        conn.execute(
            "UPDATE haive.conversation_messages SET created_at = created_at - %s::interval "
            "WHERE tenant_id = %s AND conversation_id = ANY(%s)",
            (shift, tenant_id, list(conversations)),
        )
        conn.execute(
            "UPDATE haive.store_items SET updated_at = updated_at - %s::interval, "
            "created_at = created_at - %s::interval "
            "WHERE tenant_id = %s AND key = ANY(%s)",
            (shift, shift, tenant_id, list(items)),
        )


def counts(dsn: str, tenant_id: str) -> dict[str, set[str]]:
    """What a tenant holds: thread, conversation and item ids."""
    with psycopg.connect(dsn, autocommit=True) as conn:

        def ids(query: str) -> set[str]:
            return {r[0] for r in conn.execute(query, (tenant_id,)).fetchall()}

        return {
            "threads": ids("SELECT thread_id FROM haive.threads WHERE tenant_id = %s"),
            "checkpoint_threads": ids(
                "SELECT DISTINCT thread_id FROM haive.checkpoints WHERE tenant_id = %s"
            ),
            "conversations": ids(
                "SELECT conversation_id FROM haive.conversations WHERE tenant_id = %s"
            ),
            "message_rows": ids(
                "SELECT DISTINCT conversation_id FROM haive.conversation_messages "
                "WHERE tenant_id = %s"
            ),
            "items": ids("SELECT key FROM haive.store_items WHERE tenant_id = %s"),
        }


USAGE = [
    TokenUsage(100, 50, model="gpt-a", cost=Decimal("0.01")),
    TokenUsage(200, 80, model="gpt-b", cost=Decimal("0.02")),
]
