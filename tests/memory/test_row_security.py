"""Conversations under row-level security, and their frames under key rotation."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import ConversationMetadata, ConversationStore
from haive_langgraph.memory.conversations._sql import TENANT_TABLES
from haive_langgraph.ops.keys import rotate_keys
from tests._roles import application_role


@pytest.fixture(scope="module")
def app_dsn(dsn: str) -> Iterator[str]:
    """A login role that may use the conversation tables but does not own them."""
    ConversationStore(dsn).setup()
    with application_role(dsn) as app:
        yield app


def test_tenants_are_separated_by_the_database(app_dsn: str) -> None:
    cid = f"conv-{uuid.uuid4().hex[:6]}"  # the same id in both tenants
    with (
        ConversationStore(app_dsn, tenant_id="acme") as acme,
        ConversationStore(app_dsn, tenant_id="globex") as globex,
    ):
        acme.create_conversation(
            "bot", "alice", ConversationMetadata(title="a"), conversation_id=cid
        )
        globex.create_conversation("bot", "bob", conversation_id=cid)
        acme.add_message(cid, "user", "acme's secret")
        globex.add_message(cid, "user", "globex's plan")
        page = acme.get_messages(cid)
        assert [m.message.content for m in page.messages] == ["acme's secret"]
        assert [c.user_id for c in acme.query_conversations().conversations] == ["alice"]
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        for table in TENANT_TABLES:  # no tenant bound: nothing
            assert conn.execute(f"SELECT count(*) FROM haive.{table}").fetchone() == (0,)
        with conn.transaction():
            conn.execute("SELECT set_config('haive.tenant_id', 'acme', true)")
            assert conn.execute(
                "SELECT DISTINCT tenant_id FROM haive.conversation_messages"
            ).fetchall() == [("acme",)]
            gone = conn.execute(
                "DELETE FROM haive.conversation_messages WHERE tenant_id = 'globex'"
            ).rowcount
            assert gone == 0


def test_the_default_tenant_cannot_be_bound(app_dsn: str) -> None:
    with ConversationStore(app_dsn) as store, pytest.raises(ConfigurationError, match="tenant"):
        store.create_conversation("bot", "alice")


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_rotation_rewrites_message_and_detail_frames(dsn: str) -> None:
    k1, k2 = key(), key()
    old = HaiveCodec(keyring=KeyRing.from_string(f"k1:{k1}"))
    with ConversationStore(dsn, codec=old, tenant_id="rot") as store:
        conv = store.create_conversation(
            "bot", "alice", ConversationMetadata(title="secret title", context={"plan": "x"})
        )
        for i in range(5):
            store.add_message(conv.conversation_id, "user", f"message {i}")
    both = HaiveCodec(keyring=KeyRing.from_string(f"k2:{k2},k1:{k1}"))
    report = rotate_keys(dsn, both, batch_size=2)
    assert report.rewritten["conversation_messages"] >= 5  # and the plaintext rows of other tests
    assert report.rewritten["conversations"] >= 1
    new_only = HaiveCodec(keyring=KeyRing.from_string(f"k2:{k2}"))
    with ConversationStore(dsn, codec=new_only, tenant_id="rot") as store:
        again = store.get_conversation(conv.conversation_id, include_messages=True)
        assert again.metadata.title == "secret title"
        assert [m.message.content for m in again.messages or []] == [
            f"message {i}" for i in range(5)
        ]
