"""Keys and key stores: what encryption covers, what rotation guarantees, shredding.

* Turning encryption on: an encrypting saver never writes a plaintext value
  (a value carried over from a plaintext checkpoint is stored encrypted);
  ``haive-lg keys rotate`` converts every row of every component, inline
  checkpoint values included, and ``keys status`` counts every plaintext
  value; the migrated data reads under ``require_encryption``.
* Rotation: rows under tenant keys, tenant keys re-wrapped, crypto-shredded
  tenants skipped and reported, a resumed rotation under a newer primary
  key, a SIGKILL in the middle of a batch.
* Tampering: swapped, flipped, truncated or foreign-key frames always fail
  with ``DecryptionError``/``CorruptDataError`` naming the row.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.codec import HaiveCodec, KeyDestroyedError, Kind, RowContext
from haive_langgraph.errors import CorruptDataError, DecryptionError
from haive_langgraph.ops.keys import (
    PostgresTenantKeyStore,
    frames_by_key,
    key_status,
    rotate_keys,
)

from .keys_world import (
    SECRET,
    keys_env,
    label_graph,
    new_key,
    plaintext_rows,
    populate,
    ring,
    snapshot,
)

# -- turning encryption on ------------------------------------------------------------


def _saver(kind: str, dsn: str, schema: str, **options: Any) -> Any:
    cls = PostgresCheckpointer if kind == "sync" else AsyncPostgresCheckpointer
    return cls(dsn, schema=schema, **options)


async def _call(kind: str, saver: Any, method: str, *args: Any) -> Any:
    if kind == "sync":
        return await asyncio.to_thread(getattr(saver, method), *args)
    return await getattr(saver, method if method == "setup" else "a" + method)(*args)


async def _graph(kind: str, saver: Any, method: str, *args: Any) -> Any:
    graph = label_graph().compile(checkpointer=saver)
    if kind == "sync":
        return await asyncio.to_thread(getattr(graph, method), *args)
    return await getattr(graph, "a" + method)(*args)


def _checkpoints_with_plaintext(dsn: str, schema: str, thread: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            psycopg.sql.SQL(
                "SELECT checkpoint_id FROM {} AS c WHERE thread_id = %s "
                "AND (c::text LIKE %s OR c::text LIKE %s) ORDER BY 1"
            ).format(psycopg.sql.Identifier(schema, "checkpoints")),
            (thread, f"%{SECRET}%", f"%{SECRET.encode().hex()}%"),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_encrypting_saver_writes_no_carried_plaintext(dsn: str, kind: str) -> None:
    """A channel set before encryption was on and never written again is stored
    encrypted in every checkpoint an encrypting saver writes."""
    schema = f"carry_{kind}"
    thread = f"carry-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": thread}}
    plain = _saver(kind, dsn, schema, codec=HaiveCodec())
    await _call(kind, plain, "setup")
    await _graph(kind, plain, "invoke", {"label": SECRET, "log": ["start"]}, config)
    await _call(kind, plain, "close")
    before = _checkpoints_with_plaintext(dsn, schema, thread)
    assert before  # the plaintext saver kept it inline

    k1 = new_key()
    encrypting = _saver(kind, dsn, schema, keyring=ring(("k1", k1)))
    await _graph(kind, encrypting, "invoke", {"log": ["more"]}, config)
    await _graph(kind, encrypting, "invoke", {"log": ["again"]}, config)
    await _call(kind, encrypting, "close")
    assert _checkpoints_with_plaintext(dsn, schema, thread) == before

    fresh = _saver(kind, dsn, schema, keyring=ring(("k1", k1)))  # no cached references
    state = await _graph(kind, fresh, "get_state", config)
    await _call(kind, fresh, "close")
    assert state.values["label"] == SECRET
    assert state.values["log"][-1] == "step 5"


def test_turning_encryption_on_migrates_every_row(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keys status`` counts every plaintext value (inline ones too), ``keys rotate``
    encrypts all of them, and the data then reads under ``require_encryption``."""
    schema = "migrate"
    tenants = ("", "acme")
    for tenant in tenants:
        populate(dsn, schema, HaiveCodec(), tenant)
    before = {t: snapshot(dsn, schema, HaiveCodec(), t) for t in tenants}
    status = key_status(dsn, schema=schema)
    # one carried label per thread, at least, kept inline in plaintext
    assert status.by_key["checkpoint_inline_values"]["(unencrypted)"] >= 4
    assert status.total_plaintext > status.plaintext["checkpoint_inline_values"]

    k1 = new_key()
    monkeypatch.setenv("HAIVE_ENCRYPTION_KEYS", keys_env(("k1", k1)))
    runner = CliRunner()
    shown = runner.invoke(app, ["keys", "status", "--dsn", dsn, "--schema", schema, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["total_left"] == status.total_plaintext
    rotated = runner.invoke(app, ["keys", "rotate", "--dsn", dsn, "--schema", schema, "--json"])
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.stdout)["rewritten"]["checkpoint_inline_values"] >= 4
    shown = runner.invoke(app, ["keys", "status", "--dsn", dsn, "--schema", schema, "--json"])
    after = json.loads(shown.stdout)
    assert (after["total_plaintext"], after["total_left"]) == (0, 0), after
    assert plaintext_rows(dsn, schema) == {}

    strict = HaiveCodec(keyring=ring(("k1", k1)), require_encryption=True)
    for tenant in tenants:
        assert snapshot(dsn, schema, strict, tenant) == before[tenant]
    # the migrated threads go on under the strict codec
    with PostgresCheckpointer.from_conn_string(dsn, schema=schema, codec=strict) as saver:
        graph = label_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "-thread-0"}}
        graph.invoke({"log": ["later"]}, config)
        assert graph.get_state(config).values["label"] == f"{SECRET} 0"


# -- rotation -------------------------------------------------------------------------


def test_cli_rotation_covers_tenant_keys_and_skips_shredded_tenants(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows under tenants' own keys rotate through the CLI, tenant keys are re-wrapped
    under the new global key, a crypto-shredded tenant is skipped and reported."""
    schema = "tenants"
    k1, k2 = new_key(), new_key()
    store = PostgresTenantKeyStore(dsn, schema=schema)
    store.setup()
    keys = ring(("k1", k1), tenant_store=store)
    keys.create_tenant_key("acme")
    keys.create_tenant_key("gone")
    codec = HaiveCodec(keyring=keys)
    for tenant in ("", "acme", "gone"):
        populate(dsn, schema, codec, tenant, sealed=True)
    before = {t: snapshot(dsn, schema, codec, t) for t in ("", "acme")}
    keys.forget_tenant("gone")
    store.close()

    monkeypatch.setenv("HAIVE_ENCRYPTION_KEYS", keys_env(("k2", k2), ("k1", k1)))
    runner = CliRunner()
    rotated = runner.invoke(app, ["keys", "rotate", "--dsn", dsn, "--schema", schema, "--json"])
    assert rotated.exit_code == 0, rotated.output
    report = json.loads(rotated.stdout)
    assert report["tenant_keys_rewrapped"] == 1  # acme's; gone's were destroyed
    shredded = {entry: n["gone"] for entry, n in report["shredded"].items()}
    assert shredded.keys() >= {"blobs", "checkpoint_bodies", "checkpoints", "store_items"}
    assert set(report["left"].values()) == {0}
    assert sum(report["unreadable"].values()) == 0

    # Only the new global key is left: acme's key unwraps with it, everything reads.
    only_k2 = PostgresTenantKeyStore(dsn, schema=schema)
    after = HaiveCodec(keyring=ring(("k2", k2), tenant_store=only_k2), require_encryption=True)
    for tenant in ("", "acme"):
        assert snapshot(dsn, schema, after, tenant) == before[tenant]
    with pytest.raises(KeyDestroyedError, match="gone"):
        snapshot(dsn, schema, after, "gone")
    status = key_status(dsn, schema=schema, keyring=after.keyring)
    assert status.total_left == 0
    assert status.shredded is not None and status.shredded["blobs"] > 0
    assert status.by_key["tenant_keys"] == {"k2": 1}
    only_k2.close()


def test_resumed_rotation_under_a_newer_primary_converges(dsn: str) -> None:
    """Interrupted on the way to k2 and resumed with k3 primary: every row ends on k3."""
    schema = "resume3"
    k1, k2, k3 = new_key(), new_key(), new_key()
    populate(dsn, schema, HaiveCodec(keyring=ring(("k1", k1))), sealed=True)
    before = snapshot(dsn, schema, HaiveCodec(keyring=ring(("k1", k1))))
    calls = 0

    def stop_after_two(table: str, scanned: int, rewritten: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt("interrupted")

    to_k2 = HaiveCodec(keyring=ring(("k2", k2), ("k1", k1)))
    with pytest.raises(KeyboardInterrupt):
        rotate_keys(dsn, to_k2, schema=schema, batch_size=3, progress=stop_after_two)
    assert frames_by_key(dsn, schema=schema)["blobs"]["k2"] == 6

    to_k3 = HaiveCodec(keyring=ring(("k3", k3), ("k2", k2), ("k1", k1)))
    report = rotate_keys(dsn, to_k3, schema=schema, batch_size=3)
    assert report.restarted["blobs"] and not report.resumed["blobs"]
    assert report.total_left == 0
    by_key = frames_by_key(dsn, schema=schema)
    assert {k for counts in by_key.values() for k in counts} <= {"k3"}, by_key
    assert snapshot(dsn, schema, HaiveCodec(keyring=ring(("k3", k3)))) == before


def _blocked_rotation(dsn: str) -> int | None:
    """pid of the backend whose rotation UPDATE waits for our lock, if any."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE%%blobs%%'"
        ).fetchone()
    return int(row[0]) if row else None


def _until(check: Any, what: str, child: subprocess.Popen[bytes] | None = None) -> Any:
    """Poll the database for ``check()`` to hold (no fixed sleeps)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if child is not None and child.poll() is not None:
            _, errs = child.communicate()
            pytest.fail(f"the rotation exited ({child.returncode}) before {what}: {errs!r}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_sigkill_in_the_middle_of_a_rotation_batch(dsn: str) -> None:
    """A rotation killed inside a batch transaction loses nothing, leaves every row
    readable, and a second run resumes and converges."""
    schema = "sigkill"
    k1, k2 = new_key(), new_key()
    old = HaiveCodec(keyring=ring(("k1", k1)))
    for tenant in ("", "acme"):
        populate(dsn, schema, old, tenant, threads=3, turns=3)
    before = {t: snapshot(dsn, schema, old, t, threads=3) for t in ("", "acme")}
    env = {**os.environ, "HAIVE_ENCRYPTION_KEYS": keys_env(("k2", k2), ("k1", k1))}
    command = [sys.executable, "-m", "haive_langgraph.cli", "keys", "rotate", "--dsn", dsn]
    command += ["--schema", schema, "--batch-size", "5", "--json"]

    # Hold a lock on the 18th blob: batches 1-3 commit, batch 4 blocks in its UPDATE.
    with psycopg.connect(dsn) as holder:
        holder.execute(
            psycopg.sql.SQL(
                "SELECT 1 FROM {t} WHERE (tenant_id, family_id, key) = (SELECT tenant_id, "
                "family_id, key FROM {t} ORDER BY 1, 2, 3 OFFSET 17 LIMIT 1) FOR UPDATE"
            ).format(t=psycopg.sql.Identifier(schema, "blobs"))
        )
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            backend = _until(lambda: _blocked_rotation(dsn), "the blocked batch", child)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.communicate()
        holder.rollback()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The server ends the killed client's transaction (rolled back).
        _until(
            lambda: conn.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", (backend,)
            ).fetchone()[0],  # type: ignore[index]
            "the killed backend to end",
        )
        saved = conn.execute(
            psycopg.sql.SQL("SELECT rewritten FROM {} WHERE table_name = 'blobs'").format(
                psycopg.sql.Identifier(schema, "key_rotation")
            )
        ).fetchone()
    assert saved == (15,)  # three committed batches; the fourth left no trace
    assert frames_by_key(dsn, schema=schema)["blobs"]["k2"] == 15
    both = HaiveCodec(keyring=ring(("k2", k2), ("k1", k1)))
    for tenant, expected in before.items():
        assert snapshot(dsn, schema, both, tenant, threads=3) == expected

    again = subprocess.run(command, env=env, capture_output=True, check=False)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed"]["blobs"] is True
    assert set(report["left"].values()) == {0}
    new_only = HaiveCodec(keyring=ring(("k2", k2)), require_encryption=True)
    assert key_status(dsn, schema=schema, keyring=new_only.keyring).total_left == 0
    for tenant, expected in before.items():
        assert snapshot(dsn, schema, new_only, tenant, threads=3) == expected


# -- tampering (property-based) -------------------------------------------------------

_CONTEXTS = [
    RowContext("acme", "thread-1", Kind.BLOB, b"k" * 16),
    RowContext("acme", "thread-2", Kind.BLOB, b"k" * 16),
    RowContext("globex", "thread-1", Kind.BLOB, b"k" * 16),
    RowContext("acme", "thread-1", Kind.CHECKPOINT, "cp-1", "ns"),
    RowContext("acme", "thread-1", Kind.METADATA, "cp-1/secret", "ns"),
    RowContext("acme", "conv", Kind.MESSAGE, "messages"),
    RowContext("", "docs", Kind.STORE_VALUE, "item"),
]
_K1, _K2, _FOREIGN = new_key(), new_key(), new_key()


def _tamper_codecs() -> tuple[HaiveCodec, HaiveCodec]:
    reader = HaiveCodec(keyring=ring(("k2", _K2), ("k1", _K1)))
    stranger = HaiveCodec(keyring=ring(("kx", _FOREIGN)))
    return reader, stranger


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(max_size=300),
    source=st.sampled_from(range(len(_CONTEXTS))),
    target=st.sampled_from(range(len(_CONTEXTS))),
    attack=st.sampled_from(["swap", "flip", "truncate", "foreign", "relabel"]),
    where=st.integers(min_value=0, max_value=10_000),
    bit=st.integers(min_value=0, max_value=7),
    strict=st.booleans(),
)
def test_tampered_frames_fail_naming_the_row(
    payload: bytes, source: int, target: int, attack: str, where: int, bit: int, strict: bool
) -> None:
    reader, stranger = _tamper_codecs()
    if strict:
        reader = HaiveCodec(keyring=reader.keyring, require_encryption=True)
    written, read = _CONTEXTS[source], _CONTEXTS[target]
    frame = bytearray(reader.encode(payload, written))
    if attack == "swap":  # a frame moved to another row (tenant, scope, kind or key)
        if source == target:
            read = _CONTEXTS[(target + 1) % len(_CONTEXTS)]
    elif attack == "flip":
        read = written
        frame[where % len(frame)] ^= 1 << bit
    elif attack == "truncate":
        read = written
        frame = frame[: where % len(frame)]
    elif attack == "foreign":  # a frame under a key id the ring does not have
        read = written
        frame = bytearray(stranger.encode(payload, written))
    else:  # the key id of the frame renamed to the ring's other key
        read = written
        at = frame.index(b"k2")
        frame[at : at + 2] = b"k1"
    downgrade = attack == "flip" and where % len(frame) == 3 and bit == 1
    try:
        reader.decode(bytes(frame), read)
    except (DecryptionError, CorruptDataError) as exc:
        assert read.describe() in str(exc)
    else:
        # The one documented exception: clearing the "encrypted" flag makes a
        # (garbage) plaintext frame, which only require_encryption refuses.
        assert downgrade and not strict
