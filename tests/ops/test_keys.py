"""Key rotation while writing, resumable rotation, tenant keys and crypto-shredding."""

from __future__ import annotations

import base64
import os
import threading
import uuid
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.codec import HaiveCodec, KeyRing
from haive_langgraph.errors import DecryptionError
from haive_langgraph.ops.keys import (
    PostgresTenantKeyStore,
    forget_tenant_key,
    frames_by_key,
    rotate_keys,
)


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def ring(spec: list[tuple[str, str]], **kwargs: Any) -> KeyRing:
    return KeyRing.from_string(",".join(f"{i}:{k}" for i, k in spec), **kwargs)


def contents(saver: PostgresCheckpointer, thread_id: str) -> list[str]:
    graph = chat_graph().compile(checkpointer=saver)
    state = graph.get_state({"configurable": {"thread_id": thread_id}})
    return [str(m.content) for m in state.values.get("messages", [])]


def chat(saver: PostgresCheckpointer, thread_id: str, turns: int) -> None:
    graph = chat_graph().compile(checkpointer=saver)
    for i in range(turns):
        graph.invoke(
            {"messages": [HumanMessage(content=f"{thread_id} turn {i} " + "x" * 600)]},
            {"configurable": {"thread_id": thread_id}},
        )


def test_rotation_through_three_keys_while_writing_loses_nothing(dsn: str) -> None:
    k1, k2, k3 = new_key(), new_key(), new_key()
    threads = [f"rot-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
    with PostgresCheckpointer.from_conn_string(dsn, keyring=ring([("k1", k1)])) as saver:
        saver.setup()
        for t in threads:
            chat(saver, t, 2)
    for primary, spec in (
        ("k2", [("k2", k2), ("k1", k1)]),
        ("k3", [("k3", k3), ("k2", k2), ("k1", k1)]),
    ):
        keys = ring(spec)
        with PostgresCheckpointer.from_conn_string(dsn, keyring=keys) as app_saver:
            # the application keeps writing while the rotation runs
            stop = threading.Event()
            written: list[str] = []

            def writer(
                app_saver: PostgresCheckpointer = app_saver,
                stop: threading.Event = stop,
                primary: str = primary,
                written: list[str] = written,
            ) -> None:
                i = 0
                while not stop.is_set():
                    t = f"live-{primary}-{i}"
                    chat(app_saver, t, 1)
                    written.append(t)
                    i += 1

            worker = threading.Thread(target=writer)
            worker.start()
            try:
                report = rotate_keys(dsn, HaiveCodec(keyring=keys), batch_size=7)
            finally:
                stop.set()
                worker.join(60)
            assert report.rewritten["blobs"] > 0
            threads += written
        counts = frames_by_key(dsn)["blobs"]
        assert set(counts) == {primary}, counts
    # only the last key is left: everything must still read, unchanged
    with PostgresCheckpointer.from_conn_string(dsn, keyring=ring([("k3", k3)])) as saver:
        for t in threads:
            msgs = contents(saver, t)
            assert msgs and all(m.startswith(f"{t} turn") for m in msgs[::2])


def test_interrupted_rotation_resumes(dsn: str) -> None:
    k1, k2 = new_key(), new_key()
    with PostgresCheckpointer.from_conn_string(
        dsn, schema="resume", keyring=ring([("k1", k1)])
    ) as saver:
        saver.setup()
        for i in range(6):
            chat(saver, f"resume-{i}", 2)
    codec = HaiveCodec(keyring=ring([("k2", k2), ("k1", k1)]))
    calls = 0

    def crash_after_two(table: str, scanned: int, rewritten: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt("interrupted")

    with pytest.raises(KeyboardInterrupt):
        rotate_keys(dsn, codec, schema="resume", batch_size=5, progress=crash_after_two)
    first_pass = frames_by_key(dsn, schema="resume")["blobs"]
    assert first_pass.get("k2") == 10 and first_pass.get("k1", 0) > 0
    report = rotate_keys(dsn, codec, schema="resume", batch_size=5)
    assert report.resumed["blobs"] is True
    assert report.rewritten["blobs"] == first_pass["k1"]
    assert report.scanned["blobs"] == sum(first_pass.values()) - 10
    assert frames_by_key(dsn, schema="resume")["blobs"] == {"k2": sum(first_pass.values())}


def test_tenant_keys_and_crypto_shredding(dsn: str) -> None:
    master = [("m1", new_key())]
    store = PostgresTenantKeyStore(dsn)
    store.setup()
    keys = ring(master, tenant_store=store)
    keys.create_tenant_key("acme")
    keys.create_tenant_key("globex")
    for tenant in ("acme", "globex"):
        with PostgresCheckpointer.from_conn_string(dsn, keyring=keys, tenant_id=tenant) as saver:
            saver.setup()
            chat(saver, "shared-thread-id", 2)
    with psycopg.connect(dsn) as conn:
        ids = dict(
            conn.execute(
                "SELECT tenant_id, array_agg(DISTINCT convert_from(substring(data from 6 for "
                "get_byte(data, 4)), 'UTF8')) FROM haive.blobs GROUP BY 1"
            ).fetchall()
        )
    assert ids["acme"] != ids["globex"]  # each tenant under its own key
    assert forget_tenant_key(keys, "acme") == 1
    # a fresh process, with the master key and the store, cannot read acme any more
    later = ring(master, tenant_store=PostgresTenantKeyStore(dsn))
    with (
        PostgresCheckpointer.from_conn_string(dsn, keyring=later, tenant_id="acme") as saver,
        pytest.raises(DecryptionError, match="acme"),
    ):
        contents(saver, "shared-thread-id")
    with PostgresCheckpointer.from_conn_string(dsn, keyring=later, tenant_id="globex") as saver:
        assert len(contents(saver, "shared-thread-id")) == 4
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT keys, destroyed FROM haive.tenant_keys WHERE tenant_id = 'acme'"
        ).fetchone()
    assert stored == ([], True)
    store.close()


def test_keys_cli_status_and_rotate(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = new_key(), new_key()
    monkeypatch.setenv("HAIVE_ENCRYPTION_KEYS", f"k1:{k1}")
    with PostgresCheckpointer.from_conn_string(dsn, schema="clikeys") as saver:
        saver.setup()
        chat(saver, "cli", 1)
    monkeypatch.setenv("HAIVE_ENCRYPTION_KEYS", f"k2:{k2},k1:{k1}")
    runner = CliRunner()
    rotated = runner.invoke(app, ["keys", "rotate", "--dsn", dsn, "--schema", "clikeys", "--json"])
    assert rotated.exit_code == 0, rotated.output
    assert '"blobs"' in rotated.stdout
    status = runner.invoke(app, ["keys", "status", "--dsn", dsn, "--schema", "clikeys", "--json"])
    assert status.exit_code == 0 and '"k2"' in status.stdout and '"k1"' not in status.stdout
    table = runner.invoke(app, ["keys", "status", "--dsn", dsn, "--schema", "clikeys"])
    assert table.exit_code == 0, table.output
    assert "plaintext values: 0" in table.stdout and "left to rotate: 0" in table.stdout
    again = runner.invoke(app, ["keys", "rotate", "--dsn", dsn, "--schema", "clikeys"])
    assert again.exit_code == 0 and "tenant keys re-wrapped: 0" in again.stdout
    monkeypatch.delenv("HAIVE_ENCRYPTION_KEYS")
    refused = runner.invoke(app, ["keys", "rotate", "--dsn", dsn, "--schema", "clikeys"])
    assert refused.exit_code == 1 and "HAIVE_ENCRYPTION_KEYS" in refused.output
