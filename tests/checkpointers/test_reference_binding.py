"""With encryption, a checkpoint's references to stored values are bound to its sealed body.

Which value a channel holds and which items a list holds, in which order, are
plain columns and lineage rows. Someone with write access to the tables (but
not to the keys) who rewires them to other values of the same thread family
must get a ``CorruptDataError`` from every read, not the other values.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import ormsgpack
import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.checkpointers._values import REFS_DIGEST, body_context, payload_of
from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import CorruptDataError

KEYS = KeyRing.from_string("k1:" + base64.b64encode(os.urandom(32)).decode())
MISMATCH = "do not match its authenticated body"

MESSAGES = [
    HumanMessage(content="first question", id="h1"),
    AIMessage(content="first answer", id="a1"),
    HumanMessage(content="second question", id="h2"),
]


def doc(n: int) -> dict[str, Any]:
    return {"n": n, "text": f"document version {n} " * 20}


# Three checkpoints: the list grows by one item each time, ``doc`` changes once.
# (messages, doc version, the versions that moved)
STEPS = [
    (1, 1, {"messages": 1, "doc": 1}),
    (2, 2, {"messages": 2, "doc": 2}),
    (3, 2, {"messages": 3}),
]


def step_checkpoint(n_messages: int, n_doc: int) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": MESSAGES[:n_messages], "doc": doc(n_doc)}
    cp["channel_versions"] = {"messages": n_messages, "doc": n_doc}
    return cp


def write_thread(saver: PostgresCheckpointer, thread_id: str) -> list[dict[str, Any]]:
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    saved = []
    for step, (n_messages, n_doc, moved) in enumerate(STEPS):
        cp = step_checkpoint(n_messages, n_doc)
        config = saver.put(config, cp, {"source": "loop", "step": step}, moved)
        saved.append(config)
    return saved


@pytest.fixture
def writer(dsn: str) -> Iterator[PostgresCheckpointer]:
    saver = PostgresCheckpointer(dsn, keyring=KEYS)
    saver.setup()
    try:
        yield saver
    finally:
        saver.close()


def fresh_read(dsn: str, config: dict[str, Any]) -> Any:
    with PostgresCheckpointer.from_conn_string(dsn, keyring=KEYS) as reader:  # nothing cached
        return reader.get_tuple(config)


def fresh_list(dsn: str, config: dict[str, Any]) -> list[Any]:
    """The thread's whole history."""
    thread = {"configurable": {"thread_id": config["configurable"]["thread_id"]}}
    with PostgresCheckpointer.from_conn_string(dsn, keyring=KEYS) as reader:
        return list(reader.list(thread))


def cid(config: dict[str, Any]) -> str:
    return str(config["configurable"]["checkpoint_id"])


def rewire_value(conn: psycopg.Connection[Any], saved: list[dict[str, Any]]) -> None:
    """The latest checkpoint's ``doc`` points at the first checkpoint's value."""
    conn.execute(
        "UPDATE haive.checkpoints SET value_keys = "
        "(SELECT value_keys FROM haive.checkpoints WHERE checkpoint_id = %s) "
        "WHERE checkpoint_id = %s",
        (cid(saved[0]), cid(saved[2])),
    )


def reorder_items(conn: psycopg.Connection[Any], saved: list[dict[str, Any]]) -> None:
    """The first two messages of the latest checkpoint's list swap places."""
    conn.execute(
        "UPDATE haive.lineage_items AS i SET key = o.key "
        "FROM haive.checkpoints AS c, haive.lineage_items AS o "
        "WHERE c.checkpoint_id = %s AND i.family_id = c.family_id "
        "AND i.lineage_id = c.list_lineages[1] AND o.family_id = i.family_id "
        "AND o.lineage_id = i.lineage_id AND i.seq IN (0, 1) AND o.seq = 1 - i.seq",
        (cid(saved[2]),),
    )


def shorten_list(conn: psycopg.Connection[Any], saved: list[dict[str, Any]]) -> None:
    """The latest checkpoint's list claims only its first two items."""
    conn.execute(
        "UPDATE haive.checkpoints SET list_lengths = '{2}' WHERE checkpoint_id = %s",
        (cid(saved[2]),),
    )


TAMPERINGS: dict[str, Callable[[psycopg.Connection[Any], list[dict[str, Any]]], None]] = {
    "value rewired": rewire_value,
    "items reordered": reorder_items,
    "list shortened": shorten_list,
}


def test_untampered_encrypted_thread_reads_back(writer: PostgresCheckpointer, dsn: str) -> None:
    saved = write_thread(writer, f"ref-{uuid.uuid4().hex[:8]}")
    tup = fresh_read(dsn, saved[2])
    assert tup.checkpoint["channel_values"] == {"messages": MESSAGES, "doc": doc(2)}
    assert REFS_DIGEST not in tup.checkpoint
    history = fresh_list(dsn, saved[2])
    assert [len(t.checkpoint["channel_values"]["messages"]) for t in history] == [3, 2, 1]


@pytest.mark.parametrize("tamper", list(TAMPERINGS))
def test_rewired_references_are_refused_by_every_read(
    writer: PostgresCheckpointer, dsn: str, tamper: str
) -> None:
    saved = write_thread(writer, f"ref-{uuid.uuid4().hex[:8]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        TAMPERINGS[tamper](conn, saved)
    with pytest.raises(CorruptDataError, match=MISMATCH) as info:
        fresh_read(dsn, saved[2])
    assert cid(saved[2]) in str(info.value)  # names the checkpoint
    with pytest.raises(CorruptDataError, match=MISMATCH):
        fresh_list(dsn, saved[2])
    # the writer's own cache does not hide it either: its next read asks the rows
    with pytest.raises(CorruptDataError, match=MISMATCH):
        writer.get_tuple(saved[2])
    if tamper != "items reordered":  # the earlier checkpoints share those two items
        assert fresh_read(dsn, saved[1]).checkpoint["channel_values"] == {
            "messages": MESSAGES[:2],
            "doc": doc(2),
        }


async def test_async_writer_binds_references_too(dsn: str) -> None:
    thread_id = f"ref-async-{uuid.uuid4().hex[:8]}"
    async with AsyncPostgresCheckpointer.from_conn_string(dsn, keyring=KEYS) as saver:
        await saver.setup()
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        saved = []
        for step, (n_messages, n_doc, moved) in enumerate(STEPS):
            cp = step_checkpoint(n_messages, n_doc)
            config = await saver.aput(config, cp, {"source": "loop", "step": step}, moved)
            saved.append(config)
    with psycopg.connect(dsn, autocommit=True) as conn:
        reorder_items(conn, saved)
    with pytest.raises(CorruptDataError, match=MISMATCH):
        await asyncio.to_thread(fresh_read, dsn, saved[2])


def test_restored_checkpoint_is_bound_to_the_references_it_copies(
    writer: PostgresCheckpointer, dsn: str
) -> None:
    saved = write_thread(writer, f"ref-{uuid.uuid4().hex[:8]}")
    head = writer.restore(saved[0])
    assert fresh_read(dsn, head).checkpoint["channel_values"] == {
        "messages": MESSAGES[:1],
        "doc": doc(1),
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.checkpoints SET value_keys = "
            "(SELECT value_keys FROM haive.checkpoints WHERE checkpoint_id = %s) "
            "WHERE checkpoint_id = %s",
            (cid(saved[2]), cid(head)),
        )
    with pytest.raises(CorruptDataError, match=MISMATCH):
        fresh_read(dsn, head)


def test_body_without_a_digest_still_reads(writer: PostgresCheckpointer, dsn: str) -> None:
    """A body sealed by an earlier version (no digest) reads as before."""
    saved = write_thread(writer, f"ref-{uuid.uuid4().hex[:8]}")
    codec = HaiveCodec(keyring=KEYS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        family, frame = conn.execute(
            "SELECT family_id, checkpoint FROM haive.checkpoints WHERE checkpoint_id = %s",
            (cid(saved[2]),),
        ).fetchone()  # type: ignore[misc]
        ctx = body_context("", family, "", cid(saved[2]))
        payload = codec.decode(frame, ctx)
        body = ormsgpack.unpackb(payload[payload.index(b"\x00") + 1 :])
        assert isinstance(body.pop(REFS_DIGEST), bytes)
        old = codec.encode(payload_of("msgpack", ormsgpack.packb(body)), ctx)
        conn.execute(
            "UPDATE haive.checkpoints SET checkpoint = %s WHERE checkpoint_id = %s",
            (old, cid(saved[2])),
        )
    tup = fresh_read(dsn, saved[2])
    assert tup.checkpoint["channel_values"] == {"messages": MESSAGES, "doc": doc(2)}


def test_plaintext_bodies_carry_no_digest(dsn: str) -> None:
    """Without encryption nothing is authenticated, and the body is not made larger."""
    with PostgresCheckpointer.from_conn_string(dsn) as saver:
        saver.setup()
        saved = write_thread(saver, f"ref-plain-{uuid.uuid4().hex[:8]}")
    codec = HaiveCodec()
    with psycopg.connect(dsn, autocommit=True) as conn:
        family, frame = conn.execute(
            "SELECT family_id, checkpoint FROM haive.checkpoints WHERE checkpoint_id = %s",
            (cid(saved[2]),),
        ).fetchone()  # type: ignore[misc]
    payload = codec.decode(frame, body_context("", family, "", cid(saved[2])))
    body = ormsgpack.unpackb(payload[payload.index(b"\x00") + 1 :])
    assert REFS_DIGEST not in body and "channel_versions" in body
