"""Per-tenant retention: a dry run reports and changes nothing, a run deletes exactly
the old data of the tenants with a data_retention_days, nothing of the others,
sync and async; a tenant-bound source sweeps its own tenant only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from haive_langgraph.db._async_connections import AsyncConnectionSource
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._tenancy import TenantScope
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.tenants._retention import (
    ConversationsRemoved,
    atenant_retention,
    tenant_retention,
)
from haive_langgraph.tenants._retention_sweeper import (
    AsyncTenantRetentionSweeper,
    TenantRetentionSweeper,
)

from .._roles import application_role
from ..conftest import create_database, drop_database
from ._data import (
    USAGE,
    add_conversation,
    add_session,
    age,
    counts,
    migrate,
    put_item,
    put_thread,
    register,
)

RETAINED = "acme"  # data_retention_days = 30
UNLIMITED = "globex"  # registered, no retention setting
UNREGISTERED = "initech"  # not in the registry


def seed(dsn: str, tenant: str) -> None:
    """Per tenant: an old and a new thread, conversation, session and item."""
    for when in ("old", "new"):
        put_thread(dsn, tenant, f"{when}-thread")
        add_conversation(dsn, tenant, f"{when}-conv", usage=USAGE)
        add_session(dsn, tenant, f"{when}-session")
        put_item(dsn, tenant, f"{when}-item")
    age(
        dsn,
        tenant,
        45,
        threads=("old-thread",),
        conversations=("old-conv", "old-session"),
        items=("old-item",),
    )


@pytest.fixture
def seeded(dsn: str) -> Iterator[str]:
    migrate(dsn)
    register(dsn, RETAINED, data_retention_days=30, timezone="UTC")
    register(dsn, UNLIMITED, timezone="UTC")
    for tenant in (RETAINED, UNLIMITED, UNREGISTERED):
        seed(dsn, tenant)
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("threads", "checkpoints", "conversations", "conversation_messages"):
            conn.execute(f"DELETE FROM haive.{table}")
        conn.execute("DELETE FROM haive.store_items")
        conn.execute("DELETE FROM haive.tenants")


ALL = {
    "threads": {"old-thread", "new-thread"},
    "checkpoint_threads": {"old-thread", "new-thread"},
    "conversations": {"old-conv", "new-conv", "old-session", "new-session"},
    "message_rows": {"old-conv", "new-conv", "old-session", "new-session"},
    "items": {"old-item", "new-item"},
}
NEW_ONLY = {
    "threads": {"new-thread"},
    "checkpoint_threads": {"new-thread"},
    "conversations": {"new-conv", "new-session"},
    "message_rows": {"new-conv", "new-session"},
    "items": {"new-item"},
}


def run(is_async: bool, dsn: Any, **kwargs: Any) -> Any:
    if is_async:
        return asyncio.run(atenant_retention(dsn, **kwargs))
    return tenant_retention(dsn, **kwargs)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_dry_run_reports_and_run_deletes_only_the_old_data_of_retained_tenants(
    seeded: str, is_async: bool
) -> None:
    dsn = seeded
    preview = run(is_async, dsn, dry_run=True)
    assert preview.dry_run and [t.tenant_id for t in preview.tenants] == [RETAINED]
    (p,) = preview.tenants
    assert p.retention_days == 30
    assert (p.threads, p.checkpoints) == (1, 1) and p.checkpoint_bytes > 0
    # old-conv: a human message and two replies; old-session: one message.
    assert p.conversations == ConversationsRemoved(1, 3, 0, p.conversations.bytes)
    assert p.sessions == ConversationsRemoved(1, 1, 0, p.sessions.bytes)
    assert p.conversations.bytes > 0 and p.sessions.bytes > 0
    assert p.store_items == 1 and p.store_bytes > 0
    assert p.as_dict()["store"] == {"items": 1, "bytes": p.store_bytes}
    for tenant in (RETAINED, UNLIMITED, UNREGISTERED):
        assert counts(dsn, tenant) == ALL  # a dry run changes nothing

    report = run(is_async, dsn)
    assert not report.dry_run
    (r,) = report.tenants
    assert r.components() == p.components()  # the preview was exact
    assert counts(dsn, RETAINED) == NEW_ONLY
    assert counts(dsn, UNLIMITED) == ALL and counts(dsn, UNREGISTERED) == ALL

    again = run(is_async, dsn)  # nothing left to do
    assert all(v == 0 for c in again.tenants[0].components().values() for v in c.values())


def test_a_tenant_bound_source_sweeps_its_own_tenant_only(seeded: str) -> None:
    dsn = seeded
    register(dsn, UNLIMITED, data_retention_days=30)
    scope = TenantScope("haive.checkpoints", UNLIMITED)
    source = ConnectionSource(dsn, scope=scope)
    try:
        with pytest.raises(ConfigurationError, match="bound to tenant 'globex'"):
            tenant_retention(source, tenant_ids=[RETAINED])
        report = tenant_retention(source)
    finally:
        source.close()
    assert [t.tenant_id for t in report.tenants] == [UNLIMITED]
    assert counts(dsn, UNLIMITED) == NEW_ONLY and counts(dsn, RETAINED) == ALL


def test_the_sweeper_applies_it_and_a_missing_registry_is_explained(
    seeded: str, pg_server: str
) -> None:
    source = ConnectionSource(seeded)  # a source given is the caller's: stop() leaves it open
    try:
        sweeper = TenantRetentionSweeper(source, interval=3600)
        assert sweeper.run_once(dry_run=True).tenants[0].store_items == 1
        assert sweeper.last_report is None  # a dry run is not the sweeper's last round
        sweeper.start()
        for _ in range(100):
            if sweeper.last_report is not None:
                break
            time.sleep(0.05)
        sweeper.stop()
        assert tenant_retention(source, dry_run=True).tenants  # still usable
    finally:
        source.close()
    assert sweeper.last_report is not None and sweeper.last_report.tenants[0].store_items == 1
    assert counts(seeded, RETAINED) == NEW_ONLY

    empty = create_database(pg_server)
    try:
        with pytest.raises(ConfigurationError, match="no tenant registry"):
            tenant_retention(empty)
    finally:
        drop_database(pg_server, empty)


def test_async_source_is_accepted(seeded: str) -> None:
    async def go() -> Any:
        source = AsyncConnectionSource(seeded)
        try:
            return await atenant_retention(source, dry_run=True, tenant_ids=[RETAINED])
        finally:
            await source.close()

    assert asyncio.run(go()).tenants[0].threads == 1


def test_a_compliance_mode_brings_its_default_retention(seeded: str) -> None:
    dsn = seeded
    register(dsn, "hooli", compliance_mode="GDPR")  # 365 days unless it names its own
    put_item(dsn, "hooli", "recent")
    put_item(dsn, "hooli", "ancient")
    age(dsn, "hooli", 45, items=("recent",))
    age(dsn, "hooli", 400, items=("ancient",))
    report = tenant_retention(dsn, tenant_ids=["hooli"])
    assert [(t.tenant_id, t.retention_days, t.store_items) for t in report.tenants] == [
        ("hooli", 365.0, 1)
    ]
    assert counts(dsn, "hooli")["items"] == {"recent"}


def test_an_application_role_under_row_security_applies_it_tenant_by_tenant(
    seeded: str,
) -> None:
    with application_role(seeded) as app:
        preview = tenant_retention(app, dry_run=True)
        report = asyncio.run(atenant_retention(app))
    # Each call bound its tenant: the role saw (and removed) the retained
    # tenant's old rows, as the owner would, and nothing of the others.
    assert [t.tenant_id for t in report.tenants] == [RETAINED]
    assert report.tenants[0].components() == preview.tenants[0].components()
    assert report.tenants[0].store_items == 1 and report.tenants[0].threads == 1
    assert counts(seeded, RETAINED) == NEW_ONLY
    assert counts(seeded, UNLIMITED) == ALL and counts(seeded, UNREGISTERED) == ALL


def test_the_async_sweeper_owns_the_pool_it_opens(seeded: str) -> None:
    async def go() -> Any:
        sweeper = AsyncTenantRetentionSweeper(seeded, interval=3600)
        sweeper.start()
        for _ in range(200):
            if sweeper.last_report is not None:
                break
            await asyncio.sleep(0.05)
        await sweeper.stop()
        assert sweeper.source._pool is None  # closed by stop()
        return sweeper.last_report

    report = asyncio.run(go())
    assert report is not None and report.tenants[0].conversations.rows == 1
    assert counts(seeded, RETAINED) == NEW_ONLY
