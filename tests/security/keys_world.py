"""Helpers of tests/security/test_keys.py: rows in every component with encrypted columns.

:func:`populate` writes, for one tenant, checkpoints (list values, a value set
once and carried over, pending writes, optionally sealed metadata), a store
item, a conversation with messages and a vector memory; :func:`snapshot`
reads all of it back through the public APIs, so that two snapshots taken
under different keys can be compared.
"""

from __future__ import annotations

import base64
import operator
import os
from typing import Annotated, Any, TypedDict

import psycopg
from langgraph.graph import END, START, StateGraph
from psycopg import sql

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.memory import ConversationMetadata, ConversationStore, VectorMemory
from haive_langgraph.stores import PostgresStore

SECRET = "label-that-must-not-stay-in-plaintext"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def ring(*spec: tuple[str, str], **kwargs: Any) -> KeyRing:
    return KeyRing.from_string(",".join(f"{i}:{k}" for i, k in spec), **kwargs)


def keys_env(*spec: tuple[str, str]) -> str:
    return ",".join(f"{i}:{k}" for i, k in spec)


class LabelState(TypedDict, total=False):
    label: str
    log: Annotated[list[str], operator.add]


def _step(state: LabelState) -> dict[str, Any]:
    return {"log": [f"step {len(state.get('log', []))}"]}


def label_graph() -> StateGraph[Any]:
    """``label`` is set by the first input only; ``log`` grows at every step."""
    builder: StateGraph[Any] = StateGraph(LabelState)
    builder.add_node("step", _step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder


def _encrypts(codec: HaiveCodec) -> bool:
    return codec.keyring is not None


def populate(
    dsn: str,
    schema: str,
    codec: HaiveCodec,
    tenant: str = "",
    *,
    threads: int = 2,
    turns: int = 3,
    sealed: bool = False,
) -> None:
    """Write rows of every component for ``tenant`` (ids derived from the tenant)."""
    options: dict[str, Any] = {"encrypt_metadata": ("secret",)} if sealed else {}
    with PostgresCheckpointer.from_conn_string(
        dsn, schema=schema, codec=codec, tenant_id=tenant, **options
    ) as saver:
        saver.setup()
        graph = label_graph().compile(checkpointer=saver)
        for t in range(threads):
            config: dict[str, Any] = {"configurable": {"thread_id": f"{tenant}-thread-{t}"}}
            if sealed:
                config["metadata"] = {"secret": SECRET}
            graph.invoke({"label": f"{SECRET} {t}", "log": ["start"]}, config)
            for _ in range(turns - 1):
                graph.invoke({"log": ["more"]}, config)
            latest = saver.get_tuple(config)
            assert latest is not None
            saver.put_writes(latest.config, [("log", [f"pending {SECRET}"])], "task-1")
    with PostgresStore.from_conn_string(dsn, schema=schema, codec=codec, tenant_id=tenant) as store:
        store.setup()
        store.put(("docs",), "item", {"text": SECRET, "n": 1})
    with ConversationStore(dsn, schema=schema, codec=codec, tenant_id=tenant) as conversations:
        conversations.setup()
        conversations.create_conversation(
            "bot", "alice", ConversationMetadata(title=SECRET), conversation_id="conv"
        )
        conversations.add_message("conv", "user", f"message {SECRET}")
    with VectorMemory(dsn, schema=schema, codec=codec, tenant_id=tenant, user_id="u1") as memory:
        memory.setup()
        memory.add_memories([f"{SECRET} likes green tea"])


def snapshot(
    dsn: str, schema: str, codec: HaiveCodec, tenant: str = "", *, threads: int = 2
) -> dict[str, Any]:
    """Everything :func:`populate` wrote for ``tenant``, read back."""
    out: dict[str, Any] = {}
    with PostgresCheckpointer.from_conn_string(
        dsn, schema=schema, codec=codec, tenant_id=tenant
    ) as saver:
        graph = label_graph().compile(checkpointer=saver)
        for t in range(threads):
            config = {"configurable": {"thread_id": f"{tenant}-thread-{t}"}}
            state = graph.get_state(config)
            history = list(graph.get_state_history(config))
            latest = saver.get_tuple(config)
            assert latest is not None
            out[f"thread {t}"] = (
                state.values,
                [h.values for h in history],
                latest.pending_writes,
                latest.metadata.get("secret"),
            )
    with PostgresStore.from_conn_string(dsn, schema=schema, codec=codec, tenant_id=tenant) as store:
        item = store.get(("docs",), "item")
        out["store"] = item.value if item else None
    with ConversationStore(dsn, schema=schema, codec=codec, tenant_id=tenant) as conversations:
        conv = conversations.get_conversation("conv", include_messages=True)
        out["conversation"] = (
            conv.metadata.title,
            [m.message.content for m in conv.messages or []],
        )
    with VectorMemory(dsn, schema=schema, codec=codec, tenant_id=tenant, user_id="u1") as memory:
        out["memories"] = sorted(m.text for m in memory.list_memories())
    return out


def plaintext_rows(dsn: str, schema: str, needle: str = SECRET) -> dict[str, int]:
    """Rows of every table of ``schema`` holding ``needle`` in plaintext, as text or bytes."""
    hexed = needle.encode().hex()
    found: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            )
        ]
        for table in tables:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {} AS t WHERE t::text LIKE %s OR t::text LIKE %s"
                ).format(sql.Identifier(schema, table)),
                (f"%{needle}%", f"%{hexed}%"),
            ).fetchone()
            if row and row[0]:
                found[table] = int(row[0])
    return found
