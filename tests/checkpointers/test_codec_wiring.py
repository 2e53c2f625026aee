"""The codec in the checkpointer: compression, encryption, binding to rows, fail closed."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import END, START, StateGraph

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.codec import KeyRing, PlainCodec
from haive_langgraph.errors import ConfigurationError, DecryptionError

from .conftest import Driver
from .test_graphs import MIXED, Mixed, _values

SECRET = "tangerine-7731-confidential"


def keyring(*ids: str) -> KeyRing:
    spec = ",".join(f"{i}:{base64.b64encode(os.urandom(32)).decode()}" for i in ids)
    return KeyRing.from_string(spec)


KEYS = keyring("k1")


def make(kind: str, dsn: str, **options: Any) -> Any:
    cls = AsyncPostgresCheckpointer if kind == "async" else PostgresCheckpointer
    return cls(dsn, **options)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def open_driver(kind: str, dsn: str, **options: Any) -> Driver:
    saver = (
        make(kind, dsn, **options)
        if kind == "async"
        else await asyncio.to_thread(make, kind, dsn, **options)
    )
    if kind == "async":
        await saver.setup()
    else:
        await asyncio.to_thread(saver.setup)
    return Driver(saver, kind)


async def close_driver(driver: Driver) -> None:
    if driver.is_async:
        await driver.saver.aclose()
    else:
        await asyncio.to_thread(driver.saver.close)


@pytest.mark.parametrize(
    "options",
    [
        {"compression": False},
        {"compression": True},
        {"compression": False, "keyring": KEYS},
        {"compression": True, "keyring": KEYS, "require_encryption": True},
    ],
    ids=["plain", "zstd", "aes", "zstd+aes"],
)
async def test_values_round_trip_under_every_codec(
    kind: str, dsn: str, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point and Color are the application's own state types, declared as an
    # application does (a plaintext row may rebuild only declared types).
    monkeypatch.setenv("HAIVE_ALLOWED_MODULES", "tests.checkpointers.test_graphs")
    driver = await open_driver(kind, dsn, **options)
    try:
        builder: StateGraph[Any] = StateGraph(Mixed)
        builder.add_node("set", lambda s: MIXED)
        builder.add_edge(START, "set")
        builder.add_edge("set", END)
        graph = driver.compile(builder)
        config = {"configurable": {"thread_id": f"codec-{uuid.uuid4().hex[:8]}"}}
        await driver.invoke(graph, {"text": "start"}, config)
        state = await driver.get_state(graph, config)
        expected = {**MIXED, "pair": list(MIXED["pair"])}
        assert state.values == expected
        # a reader that has never seen the values decodes them from the rows
        other = await open_driver(kind, dsn, **options)
        try:
            again = await other.get_state(other.compile(builder), config)
            assert again.values == expected
        finally:
            await close_driver(other)
    finally:
        await close_driver(driver)


def table_text(dsn: str) -> bytes:
    """Every row of the checkpointer tables, as bytes."""
    with psycopg.connect(dsn) as conn:
        out = b""
        for table in ("threads", "checkpoints", "writes", "blobs", "lineage_items"):
            for row in conn.execute(f"SELECT t::text FROM haive.{table} AS t"):
                out += row[0].encode()
        return out


async def test_encrypted_thread_leaves_no_plaintext(kind: str, dsn: str) -> None:
    driver = await open_driver(kind, dsn, keyring=KEYS)
    try:
        graph = driver.compile(chat_graph())
        config = {"configurable": {"thread_id": f"enc-{uuid.uuid4().hex[:8]}"}}
        await driver.invoke(graph, {"messages": [HumanMessage(content=f"short {SECRET}")]}, config)
        await driver.invoke(graph, {"messages": [HumanMessage(content=SECRET)]}, config)
        state = await driver.get_state(graph, config)
        assert SECRET in state.values["messages"][-2].content
        stored = table_text(dsn)
        assert SECRET.encode() not in stored
        # nothing is inline in the checkpoint JSON under encryption
        with psycopg.connect(dsn) as conn:
            inline = conn.execute(
                "SELECT DISTINCT inline_values FROM haive.checkpoints WHERE thread_id = %s",
                (config["configurable"]["thread_id"],),
            ).fetchall()
        assert inline == [({},)]
    finally:
        await close_driver(driver)


async def encrypted_thread(driver: Driver, text: str) -> tuple[dict[str, Any], str]:
    graph = driver.compile(chat_graph())
    tid = f"bind-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": tid}}
    await driver.invoke(graph, {"messages": [HumanMessage(content=text)]}, config)
    return config, tid


async def test_ciphertext_moved_to_another_thread_or_row_fails(kind: str, dsn: str) -> None:
    writer = await open_driver(kind, dsn, keyring=KEYS)
    try:
        config_a, tid_a = await encrypted_thread(writer, "alpha " * 50)
        config_b, tid_b = await encrypted_thread(writer, "bravo " * 50)
    finally:
        await close_driver(writer)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # copy a ciphertext of thread A over every value of thread B
        frame = conn.execute(
            "SELECT data FROM haive.blobs WHERE family_id = %s LIMIT 1", (tid_a,)
        ).fetchone()
        conn.execute("UPDATE haive.blobs SET data = %s WHERE family_id = %s", (frame[0], tid_b))
    reader = await open_driver(kind, dsn, keyring=KEYS)
    try:
        with pytest.raises(DecryptionError) as info:
            await reader.call("get_tuple", config_b)
        message = str(info.value)
        assert "k1" in message and repr(tid_b) in message
        # thread A is untouched
        assert (await reader.call("get_tuple", config_a)) is not None
    finally:
        await close_driver(reader)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # swap two values inside thread A (another row of the same family)
        # the two messages of the thread's list, both read by get_tuple
        rows = conn.execute(
            "SELECT b.key, b.data FROM haive.blobs b JOIN haive.lineage_items li "
            "ON li.family_id = b.family_id AND li.key = b.key "
            "WHERE b.family_id = %s ORDER BY li.seq",
            (tid_a,),
        ).fetchall()
        assert len(rows) >= 2
        (k1, d1), (k2, d2) = rows[0], rows[1]
        conn.execute(
            "UPDATE haive.blobs SET data = %s WHERE family_id = %s AND key = %s", (d2, tid_a, k1)
        )
        conn.execute(
            "UPDATE haive.blobs SET data = %s WHERE family_id = %s AND key = %s", (d1, tid_a, k2)
        )
    reader = await open_driver(kind, dsn, keyring=KEYS)
    try:
        with pytest.raises(DecryptionError):
            await reader.call("get_tuple", config_a)
    finally:
        await close_driver(reader)


async def test_flipped_byte_and_wrong_key_fail(kind: str, dsn: str) -> None:
    writer = await open_driver(kind, dsn, keyring=KEYS)
    try:
        config, tid = await encrypted_thread(writer, "charlie " * 50)
    finally:
        await close_driver(writer)
    stranger = await open_driver(kind, dsn, keyring=keyring("k1"))  # same id, other key
    try:
        with pytest.raises(DecryptionError, match="k1"):
            await stranger.call("get_tuple", config)
    finally:
        await close_driver(stranger)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE haive.blobs SET data = overlay(data placing "
            "decode(lpad(to_hex(get_byte(data, 30) # 1), 2, '0'), 'hex') from 31 for 1) "
            "WHERE family_id = %s",
            (tid,),
        )
    reader = await open_driver(kind, dsn, keyring=KEYS)
    try:
        with pytest.raises(DecryptionError):
            await reader.call("get_tuple", config)
    finally:
        await close_driver(reader)


async def test_plaintext_refused_when_encryption_is_required(kind: str, dsn: str) -> None:
    plain = await open_driver(kind, dsn, codec=PlainCodec())
    try:
        config, _ = await encrypted_thread(plain, "delta " * 20)
    finally:
        await close_driver(plain)
    strict = await open_driver(kind, dsn, keyring=KEYS, require_encryption=True)
    try:
        with pytest.raises(DecryptionError, match="encryption is required"):
            await strict.call("get_tuple", config)
    finally:
        await close_driver(strict)


async def test_encrypted_metadata_keys(kind: str, dsn: str) -> None:
    driver = await open_driver(kind, dsn, keyring=KEYS, encrypt_metadata=["patient"])
    try:
        graph = driver.compile(chat_graph())
        tid = f"meta-{uuid.uuid4().hex[:8]}"
        config = {"configurable": {"thread_id": tid}, "metadata": {"patient": SECRET, "ward": "B"}}
        await driver.invoke(graph, {"messages": [HumanMessage(content="hi")]}, config)
        tup = await driver.call("get_tuple", config)
        assert tup.metadata["patient"] == SECRET and tup.metadata["ward"] == "B"
        assert SECRET.encode() not in table_text(dsn)
        # plain keys stay filterable, sealed ones are not
        assert await driver.call("list", config, filter={"ward": "B"})
        assert not await driver.call("list", config, filter={"patient": SECRET})
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE haive.checkpoints SET metadata = jsonb_set(metadata, '{patient}', "
                "(SELECT metadata -> 'patient' FROM haive.checkpoints WHERE thread_id = %s "
                " ORDER BY checkpoint_id LIMIT 1)) WHERE thread_id = %s",
                (tid, tid),
            )
        with pytest.raises(DecryptionError, match="metadata key 'patient'"):
            await driver.call("list", config)
    finally:
        await close_driver(driver)


def test_codec_options_are_checked(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="either codec="):
        PostgresCheckpointer(dsn, codec=PlainCodec(), compression=True)
    with pytest.raises(ConfigurationError, match="encrypting codec"):
        PostgresCheckpointer(dsn, encrypt_metadata=["x"], compression=True)


async def test_compression_shrinks_chat_text(dsn: str) -> None:
    sizes = {}
    for compression in (False, True):
        saver = await asyncio.to_thread(PostgresCheckpointer, dsn, compression=compression)
        try:
            await asyncio.to_thread(saver.setup)
            graph = chat_graph().compile(checkpointer=saver)
            tid = f"z-{compression}-{uuid.uuid4().hex[:6]}"
            for i in range(5):
                text = f"turn {i}: " + "the agent answered the question about storage " * 20
                await asyncio.to_thread(
                    graph.invoke,
                    {"messages": [HumanMessage(content=text)]},
                    {"configurable": {"thread_id": tid}},
                )
            with psycopg.connect(dsn) as conn:
                sizes[compression] = conn.execute(
                    "SELECT sum(octet_length(data)) FROM haive.blobs WHERE family_id = %s", (tid,)
                ).fetchone()[0]
        finally:
            await asyncio.to_thread(saver.close)
    assert sizes[True] * 2 < sizes[False]


async def test_conformance_with_compression_and_encryption(dsn: str) -> None:
    async def factory() -> AsyncIterator[object]:
        saver = AsyncPostgresCheckpointer(dsn, keyring=KEYS, require_encryption=True)
        await saver.setup()
        try:
            yield saver
        finally:
            await saver.aclose()

    report = await validate(checkpointer_test(name="haive (zstd + AES-GCM)")(factory))
    report.print_report()
    assert report.conformance_level() == "FULL", report.to_dict()


async def test_history_values_match_under_encryption(kind: str, dsn: str) -> None:
    driver = await open_driver(kind, dsn, keyring=KEYS)
    try:
        graph = driver.compile(chat_graph())
        config = {"configurable": {"thread_id": f"h-{uuid.uuid4().hex[:8]}"}}
        for i in range(3):
            await driver.invoke(graph, {"messages": [HumanMessage(content=f"q{i} " * 100)]}, config)
        history = await driver.history(graph, config)
        assert [len(s.values.get("messages", [])) for s in history] == [6, 5, 4, 4, 3, 2, 2, 1, 0]
        assert _values(history[0].values) == _values((await driver.get_state(graph, config)).values)
    finally:
        await close_driver(driver)
