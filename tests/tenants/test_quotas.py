"""Tenant quotas across components, enforced by the database in the writing transaction.

Each limit refuses the write that would pass it with QuotaExceededError naming
tenant, resource, limit, current and attempted value, and nothing of that write
remains; deletes free quota; concurrent writers at the edge never overshoot; a
tenant without a quota is untouched; suspended tenants cannot write; all of it
holds for a role under row-level security.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.errors import QuotaExceededError, TenantSuspendedError
from haive_langgraph.memory import (
    AsyncConversationStore,
    ConversationStore,
    PostgresChatMessageHistory,
    SessionStore,
    TokenUsage,
)
from haive_langgraph.ops import all_components
from haive_langgraph.ops.backup import backup, restore
from haive_langgraph.stores import PostgresStore
from haive_langgraph.tenants import TenantQuota, TenantRegistry
from tests._roles import application_role
from tests.conftest import create_database, drop_database


@pytest.fixture(scope="module")
def registry(dsn: str) -> Iterator[TenantRegistry]:
    with TenantRegistry(dsn) as reg:
        reg.setup()
        yield reg


def new_tenant(registry: TenantRegistry, **limits: int) -> str:
    tid = f"t-{uuid.uuid4().hex[:10]}"
    registry.create(tid, quota=TenantQuota(**limits))
    return tid


def usage(dsn: str, tid: str) -> dict[str, Any] | None:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT * FROM haive.tenant_usage WHERE tenant_id = %s", (tid,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c.name for c in cur.description or ()], row, strict=True))


def count(dsn: str, table: str, tid: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM haive.{table} WHERE tenant_id = %s",
            (tid,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def refused(err: pytest.ExceptionInfo[QuotaExceededError]) -> tuple[Any, ...]:
    e = err.value
    return (e.tenant_id, e.resource, e.limit, e.current, e.value)


def put_checkpoints(saver: PostgresCheckpointer, thread: str, n: int) -> None:
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    for _ in range(n):
        config = saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


# -- each limit ---------------------------------------------------------------------------


def test_max_conversations_counts_conversations_sessions_and_histories(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry, max_conversations=3)
    with (
        ConversationStore(dsn, tenant_id=tid) as convs,
        SessionStore(dsn, tenant_id=tid) as sessions,
    ):
        convs.create_conversation("bot", "alice")
        sessions.create_session("alice", "bot")
        with PostgresChatMessageHistory("history-1", dsn, tenant_id=tid) as history:
            history.add_user_message("hi")  # its first append creates its row
        with pytest.raises(QuotaExceededError) as err:
            convs.create_conversation("bot", "bob", conversation_id="one-too-many")
        assert refused(err) == (tid, "conversations", 3, 3, 4)
        assert "tenant" in str(err.value) and "quota of 3" in str(err.value)
        with (
            PostgresChatMessageHistory("history-2", dsn, tenant_id=tid) as history,
            pytest.raises(QuotaExceededError),
        ):
            history.add_user_message("hi")
    assert count(dsn, "conversations", tid) == 3
    assert count(dsn, "conversation_messages", tid) == 1  # the refused append wrote nothing


def test_max_sessions_leaves_conversations_free(dsn: str, registry: TenantRegistry) -> None:
    tid = new_tenant(registry, max_sessions=2)
    with (
        ConversationStore(dsn, tenant_id=tid) as convs,
        SessionStore(dsn, tenant_id=tid) as sessions,
    ):
        first = sessions.create_session("alice", "bot")
        sessions.add_message(first.session_id, "user", "hi", user_id="alice")
        sessions.create_session("alice", "bot")
        with pytest.raises(QuotaExceededError) as err:
            sessions.create_session("alice", "bot")
        assert refused(err) == (tid, "sessions", 2, 2, 3)
        with pytest.raises(QuotaExceededError):  # a branch is a session too
            sessions.branch_session(first.session_id, at_message_index=0, user_id="alice")
        for _ in range(3):
            convs.create_conversation("bot", "alice")
    assert (usage(dsn, tid) or {})["sessions"] == 2
    assert count(dsn, "conversations", tid) == 5


def test_max_checkpoints_per_thread(dsn: str, registry: TenantRegistry) -> None:
    tid = new_tenant(registry, max_checkpoints_per_thread=3)
    with PostgresCheckpointer.from_conn_string(dsn, tenant_id=tid) as saver:
        put_checkpoints(saver, "a", 3)
        with pytest.raises(QuotaExceededError) as err:
            put_checkpoints(saver, "a", 1)
        assert refused(err) == (tid, "checkpoints_per_thread", 3, 3, 4)
        put_checkpoints(saver, "b", 3)  # the limit is per thread
        assert count(dsn, "checkpoints", tid) == 6
        saver.delete_thread("a")  # deletes free it
        put_checkpoints(saver, "a", 3)
    assert count(dsn, "checkpoints", tid) == 6


def test_max_checkpoints_per_thread_holds_for_hand_written_sql(
    dsn: str, registry: TenantRegistry
) -> None:
    """Rows written without the thread's registry row are counted."""
    tid = new_tenant(registry, max_checkpoints_per_thread=2)
    insert = (
        "INSERT INTO haive.checkpoints (tenant_id, thread_id, checkpoint_id, family_id, checkpoint)"
        " VALUES (%s, 'raw', %s, 'raw', '\\x00')"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(insert, (tid, "c1"))
        conn.execute(insert, (tid, "c2"))
        with pytest.raises(QuotaExceededError) as err:
            conn.execute(insert, (tid, "c3"))
    assert refused(err) == (tid, "checkpoints_per_thread", 2, 2, 3)
    assert count(dsn, "checkpoints", tid) == 2


def noise(chars: int) -> str:
    """Text zstd cannot shrink much (random base64), so stored bytes track its length."""
    return base64.b64encode(os.urandom(chars)).decode()[:chars]


def stored(dsn: str, tid: str) -> int:
    held = usage(dsn, tid) or {}
    return int(held["checkpoint_bytes"] + held["store_bytes"] + held["conversation_bytes"])


def test_max_storage_bytes_spans_checkpoints_store_and_conversations(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry, max_storage_bytes=10**9)
    with (
        PostgresStore.from_conn_string(dsn, tenant_id=tid) as store,
        ConversationStore(dsn, tenant_id=tid) as convs,
        PostgresCheckpointer.from_conn_string(dsn, tenant_id=tid) as saver,
    ):
        convs.create_conversation("bot", "alice", conversation_id="c")
        store.put(("docs",), "a", {"text": noise(20_000)})
        convs.add_message("c", "user", noise(20_000))
        put_checkpoints(saver, "t", 1)
        held = usage(dsn, tid) or {}
        assert held["store_bytes"] > 15_000 and held["conversation_bytes"] > 15_000
        assert held["checkpoint_bytes"] > 0
        before = stored(dsn, tid)
        registry.update(tid, quota=TenantQuota(max_storage_bytes=before + 10_000))
        with pytest.raises(QuotaExceededError) as err:
            store.put(("docs",), "b", {"text": noise(20_000)})
        e = err.value
        assert (e.tenant_id, e.resource, e.limit, e.current) == (
            tid,
            "storage_bytes",
            before + 10_000,
            before,
        )
        assert e.value is not None and e.value > before + 10_000
        assert store.get(("docs",), "b") is None
        with pytest.raises(QuotaExceededError):
            convs.add_message("c", "user", noise(20_000))
        assert stored(dsn, tid) == before  # nothing of the refused writes
        store.delete(("docs",), "a")  # deletes free bytes
        convs.add_message("c", "user", noise(20_000))
    assert (usage(dsn, tid) or {})["store_bytes"] == 0


def test_storage_counters_match_the_rows(dsn: str, registry: TenantRegistry) -> None:
    """The incremental counts equal a recount (what the guard does when a quota is set)."""
    tid = f"t-{uuid.uuid4().hex[:10]}"
    with (
        PostgresCheckpointer.from_conn_string(dsn, tenant_id=tid) as saver,
        ConversationStore(dsn, tenant_id=tid) as convs,
        PostgresStore.from_conn_string(dsn, tenant_id=tid) as store,
    ):
        put_checkpoints(saver, "early", 2)  # written before the tenant had a quota
        registry.create(tid, quota=TenantQuota(max_storage_bytes=10**9))
        put_checkpoints(saver, "late", 2)
        store.put(("n",), "k", {"v": "x" * 500})
        store.put(("n",), "k", {"v": "y" * 900})  # an update changes the size
        convs.create_conversation("bot", "alice", conversation_id="c")
        convs.add_message("c", "user", "hello")
        convs.delete_conversation("c")
    counted = usage(dsn, tid) or {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT haive.haive_quota_refresh(%s)", (tid,))
    recounted = usage(dsn, tid) or {}
    keys = ("conversations", "sessions", "checkpoint_bytes", "store_bytes", "conversation_bytes")
    assert {k: counted[k] for k in keys} == {k: recounted[k] for k in keys}
    assert counted["checkpoint_bytes"] > 0 and counted["conversation_bytes"] == 0


def test_max_tokens_per_month_counts_recorded_usage(dsn: str, registry: TenantRegistry) -> None:
    tid = new_tenant(registry, max_tokens_per_month=1_000)
    with ConversationStore(dsn, tenant_id=tid) as convs:
        convs.create_conversation("bot", "alice", conversation_id="c")
        convs.create_conversation("bot", "alice", conversation_id="d")
        convs.add_message("c", "ai", "a", TokenUsage(input_tokens=300, output_tokens=300))
        convs.add_message("c", "user", "no usage recorded")
        with pytest.raises(QuotaExceededError) as err:
            convs.add_message("c", "ai", "b", TokenUsage(input_tokens=200, output_tokens=250))
        assert refused(err) == (tid, "tokens_per_month", 1_000, 600, 1_050)
        convs.add_message("c", "ai", "c", TokenUsage(input_tokens=100, output_tokens=300))
        assert convs.get_conversation("c").total_tokens == 1_000
        convs.delete_conversation("c")  # spent tokens stay spent this month
        with pytest.raises(QuotaExceededError):
            convs.add_message("d", "ai", "e", TokenUsage(input_tokens=1))
    assert (usage(dsn, tid) or {})["tokens"] == 1_000


def wait_for_a_fresh_minute(margin: float = 10.0) -> None:
    """Let a per-minute test start with enough of its minute left."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.1)


def test_max_requests_per_minute_counts_write_transactions(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry, max_requests_per_minute=3)
    wait_for_a_fresh_minute()
    with PostgresStore.from_conn_string(dsn, tenant_id=tid) as store:
        store.put(("n",), "a", {"v": 1})
        with PostgresChatMessageHistory("c", dsn, tenant_id=tid) as history:
            history.add_user_message("one statement, several tables: one request")
        store.put(("n",), "b", {"v": 1})
        with pytest.raises(QuotaExceededError) as err:
            store.put(("n",), "c", {"v": 1})
        assert refused(err) == (tid, "requests_per_minute", 3, 3, 4)
        assert store.get(("n",), "c") is None
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT n FROM haive.tenant_requests WHERE tenant_id = %s", (tid,)
        ).fetchall()
    assert rows == [(3,)]  # the refused request rolled back with its write
    with PostgresStore.from_conn_string(dsn, tenant_id=tid) as store:
        store.delete(("n",), "a")  # deletes are neither counted nor refused
        assert store.get(("n",), "a") is None


async def test_the_async_classes_raise_the_same_errors(dsn: str, registry: TenantRegistry) -> None:
    tid = new_tenant(registry, max_conversations=1, max_checkpoints_per_thread=1)
    async with AsyncConversationStore(dsn, tenant_id=tid) as convs:
        await convs.acreate_conversation("bot", "alice")
        with pytest.raises(QuotaExceededError) as err:
            await convs.acreate_conversation("bot", "alice")
        assert refused(err) == (tid, "conversations", 1, 1, 2)
    saver = AsyncPostgresCheckpointer(dsn, tenant_id=tid)
    try:
        config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        config = await saver.aput(config, empty_checkpoint(), {"step": -1}, {})
        with pytest.raises(QuotaExceededError) as err:
            await saver.aput(config, empty_checkpoint(), {"step": 0}, {})
        assert refused(err) == (tid, "checkpoints_per_thread", 1, 1, 2)
        registry.suspend(tid)
        with pytest.raises(TenantSuspendedError):
            await saver.aput(
                {"configurable": {"thread_id": "u", "checkpoint_ns": ""}},
                empty_checkpoint(),
                {},
                {},
            )
    finally:
        await saver.aclose()


# -- concurrency --------------------------------------------------------------------------


def race(dsn: str, n: int, write: Any) -> list[BaseException | None]:
    """``n`` threads, each on its own connection, call ``write(conn, i)`` at once."""
    barrier = threading.Barrier(n)
    outcomes: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            try:
                write(conn, i)
            except BaseException as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_fifty_concurrent_writers_never_overshoot_a_quota(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry, max_conversations=20)
    with ConversationStore(dsn, tenant_id=tid) as convs:
        for i in range(17):
            convs.create_conversation("bot", "alice", conversation_id=f"before-{i}")

    def write(conn: psycopg.Connection[Any], i: int) -> None:
        conn.execute(
            "INSERT INTO haive.conversations (tenant_id, conversation_id) VALUES (%s, %s)",
            (tid, f"racer-{i}"),
        )

    outcomes = race(dsn, 50, write)
    assert sum(o is None for o in outcomes) == 3
    assert all(isinstance(o, QuotaExceededError) for o in outcomes if o is not None)
    assert count(dsn, "conversations", tid) == 20
    assert (usage(dsn, tid) or {})["conversations"] == 20


def test_fifty_concurrent_checkpoint_writers_on_one_thread(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry, max_checkpoints_per_thread=10)

    def write(conn: psycopg.Connection[Any], i: int) -> None:
        put_checkpoints(PostgresCheckpointer(conn, tenant_id=tid), "shared", 1)

    outcomes = race(dsn, 50, write)
    assert all(isinstance(o, QuotaExceededError) for o in outcomes if o is not None)
    assert count(dsn, "checkpoints", tid) == 10


# -- who is not affected, who may not write -----------------------------------------------


def test_a_tenant_without_a_quota_is_not_guarded(dsn: str, registry: TenantRegistry) -> None:
    new_tenant(registry, max_conversations=1)  # some tenant has a quota
    plain = new_tenant(registry)  # registered, empty quota
    unregistered = f"t-{uuid.uuid4().hex[:10]}"
    for tid in (plain, unregistered, ""):
        with ConversationStore(dsn, tenant_id=tid) as convs:
            for _ in range(3):
                convs.create_conversation("bot", "alice")
        assert usage(dsn, tid) is None
    with psycopg.connect(dsn) as conn:
        requests = conn.execute(
            "SELECT count(*) FROM haive.tenant_requests WHERE tenant_id = ANY(%s)",
            ([plain, unregistered, ""],),
        ).fetchone()
    assert requests == (0,)


def test_quota_changes_take_effect_and_removing_it_unguards(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry, max_conversations=1)
    with ConversationStore(dsn, tenant_id=tid) as convs:
        convs.create_conversation("bot", "alice")
        with pytest.raises(QuotaExceededError):
            convs.create_conversation("bot", "alice")
        registry.update(tid, quota=TenantQuota(max_conversations=2))
        convs.create_conversation("bot", "alice")
        registry.update(tid, quota=TenantQuota())
        assert usage(dsn, tid) is None
        convs.create_conversation("bot", "alice")
        registry.update(tid, quota=TenantQuota(max_conversations=3))  # recounted: 3 held
        assert (usage(dsn, tid) or {})["conversations"] == 3
        with pytest.raises(QuotaExceededError):
            convs.create_conversation("bot", "alice")


def test_a_suspended_tenant_cannot_write_but_can_be_erased(
    dsn: str, registry: TenantRegistry
) -> None:
    tid = new_tenant(registry)
    with (
        ConversationStore(dsn, tenant_id=tid) as convs,
        PostgresStore.from_conn_string(dsn, tenant_id=tid) as store,
        PostgresCheckpointer.from_conn_string(dsn, tenant_id=tid) as saver,
    ):
        convs.create_conversation("bot", "alice", conversation_id="c")
        store.put(("n",), "k", {"v": 1})
        registry.suspend(tid)
        with pytest.raises(TenantSuspendedError) as err:
            convs.add_message("c", "user", "hi")
        assert err.value.tenant_id == tid and "suspended" in str(err.value)
        with pytest.raises(TenantSuspendedError):
            store.put(("n",), "k", {"v": 2})
        with pytest.raises(TenantSuspendedError):
            put_checkpoints(saver, "t", 1)
        assert store.get(("n",), "k").value == {"v": 1}  # type: ignore[union-attr]
        store.delete(("n",), "k")  # deletes pass
        registry.resume(tid)
        assert usage(dsn, tid) is None
        convs.add_message("c", "user", "back")
    registry.delete(tid)  # erasure of a tenant with a quota row deletes it
    assert usage(dsn, tid) is None and count(dsn, "conversations", tid) == 0


def test_a_restored_schema_enforces_its_quotas(
    pg_server: str, registry: TenantRegistry, tmp_path: Path
) -> None:
    """Restore writes with the triggers off; the guards' sequence follows the rows."""
    source, target = (
        create_database(pg_server, "quota_src"),
        create_database(pg_server, "quota_dst"),
    )
    try:
        with TenantRegistry(source) as reg:
            reg.setup()
            reg.create("restored", quota=TenantQuota(max_conversations=2))
        with ConversationStore(source, tenant_id="restored") as convs:
            convs.create_conversation("bot", "alice")
            convs.create_conversation("bot", "alice")
        backup(tmp_path / "all.tar", source)
        with TenantRegistry(target) as reg:
            reg.setup()  # a fresh schema: no tenant was ever guarded here
        restore(tmp_path / "all.tar", target)
        assert (usage(target, "restored") or {})["conversations"] == 2
        with (
            ConversationStore(target, tenant_id="restored") as convs,
            pytest.raises(QuotaExceededError),
        ):
            convs.create_conversation("bot", "alice")
    finally:
        drop_database(pg_server, source)
        drop_database(pg_server, target)


# -- row-level security -------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_dsn(dsn: str, registry: TenantRegistry) -> Iterator[str]:
    """A role under row-level security, granted the tenant tables only (not the counters)."""
    tables = ", ".join(
        f"haive.{t.name}" for c in all_components() for t in c.tables if t.tenant and t.migrated
    )
    grants = (
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {{r}}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA haive TO {r}",
    )
    with application_role(dsn, grants) as app:
        yield app


def test_quotas_hold_and_stay_per_tenant_under_row_level_security(
    dsn: str, app_dsn: str, registry: TenantRegistry
) -> None:
    capped = new_tenant(registry, max_conversations=1, max_checkpoints_per_thread=2)
    other = new_tenant(registry, max_conversations=5)
    with (
        ConversationStore(app_dsn, tenant_id=capped) as a,
        ConversationStore(app_dsn, tenant_id=other) as b,
        PostgresCheckpointer.from_conn_string(app_dsn, tenant_id=capped) as saver,
    ):
        a.create_conversation("bot", "alice", conversation_id="same-id")
        with pytest.raises(QuotaExceededError) as err:
            a.create_conversation("bot", "alice")
        assert refused(err) == (capped, "conversations", 1, 1, 2)
        b.create_conversation("bot", "bob", conversation_id="same-id")  # its own count
        b.create_conversation("bot", "bob")
        put_checkpoints(saver, "t", 2)
        with pytest.raises(QuotaExceededError):
            put_checkpoints(saver, "t", 1)
    assert (usage(dsn, capped) or {})["conversations"] == 1
    assert (usage(dsn, other) or {})["conversations"] == 2
    # a role that may not read the guards' sequence is checked all the same
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON SEQUENCE haive.tenant_quota_guards FROM PUBLIC")
    try:
        with (
            ConversationStore(app_dsn, tenant_id=capped) as a,
            pytest.raises(QuotaExceededError),
        ):
            a.create_conversation("bot", "alice")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("GRANT SELECT ON SEQUENCE haive.tenant_quota_guards TO PUBLIC")
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        for statement in (
            "SELECT * FROM haive.tenant_usage",
            "UPDATE haive.tenant_usage SET max_conversations = NULL",
            "DELETE FROM haive.tenant_requests",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # the counting functions run as the caller: no way around the counters
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "SELECT haive.haive_quota_charge('store', 'DELETE', ARRAY[%s], ARRAY[-5]::bigint[],"
                " ARRAY[0]::bigint[], ARRAY[0]::bigint[], ARRAY[0]::bigint[])",
                (capped,),
            )
