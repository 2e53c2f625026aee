"""The tenant registry: create, get, list, update, suspend, resume, delete; validation.

Every behaviour runs on the sync and the async registry (``side``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from haive_langgraph.errors import (
    ConfigurationError,
    TenantExistsError,
    TenantNotFoundError,
)
from haive_langgraph.tenants import (
    COMPLIANCE_DEFAULTS,
    AsyncTenantRegistry,
    TenantQuota,
    TenantRegistry,
    TenantSettings,
)


class Side:
    """Calls ``registry.<method>`` (sync, in a worker thread) or ``a<method>`` (async)."""

    def __init__(self, registry: Any, is_async: bool) -> None:
        self.registry = registry
        self.is_async = is_async

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await getattr(self.registry, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.registry, method), *args, **kwargs)


def new_tenant(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    with TenantRegistry(dsn) as registry:
        registry.setup()
    return dsn


@pytest.fixture(scope="module")
def sync_registry(migrated: str) -> Iterator[TenantRegistry]:
    with TenantRegistry(migrated) as registry:
        yield registry


@pytest.fixture(scope="module")
async def async_registry(migrated: str) -> AsyncIterator[AsyncTenantRegistry]:
    async with AsyncTenantRegistry(migrated) as registry:
        yield registry


@pytest.fixture(params=["sync", "async"])
def side(request: pytest.FixtureRequest) -> Side:
    is_async = request.param == "async"
    name = "async_registry" if is_async else "sync_registry"
    return Side(request.getfixturevalue(name), is_async)


async def test_create_get_and_the_stored_row(side: Side, migrated: str) -> None:
    tid = new_tenant()
    settings = TenantSettings(timezone="Europe/Paris", data_retention_days=30)
    quota = TenantQuota(max_conversations=10, max_storage_bytes=1 << 20)
    created = await side("create", tid, display_name="Acme", settings=settings, quota=quota)
    assert (created.tenant_id, created.display_name, created.status) == (tid, "Acme", "active")
    assert created.settings == settings and created.quota == quota
    assert created.created_at is not None and created.updated_at is not None
    assert await side("get", tid) == created
    with psycopg.connect(migrated) as conn:
        row = conn.execute(
            "SELECT display_name, status, settings, quota FROM haive.tenants WHERE tenant_id = %s",
            (tid,),
        ).fetchone()
    assert row == (
        "Acme",
        "active",
        {"timezone": "Europe/Paris", "data_retention_days": 30, "compliance_mode": None},
        {"max_conversations": 10, "max_storage_bytes": 1 << 20},  # unset limits are absent
    )


async def test_create_twice_and_unknown_tenants_fail_clearly(side: Side) -> None:
    tid = new_tenant()
    await side("create", tid)
    with pytest.raises(TenantExistsError, match="already registered") as exists:
        await side("create", tid, display_name="again")
    assert exists.value.tenant_id == tid
    assert (await side("get", tid)).display_name == ""  # the first one is kept
    ghost = new_tenant("ghost")
    for method, kwargs in [
        ("get", {}),
        ("update", {"display_name": "x"}),
        ("suspend", {}),
        ("resume", {}),
        ("delete", {}),
    ]:
        with pytest.raises(TenantNotFoundError, match=ghost) as missing:
            await side(method, ghost, **kwargs)
        assert missing.value.tenant_id == ghost
        assert isinstance(missing.value, LookupError)


async def test_update_changes_only_what_is_given(side: Side) -> None:
    tid = new_tenant()
    before = await side("create", tid, display_name="Old", quota=TenantQuota(max_sessions=3))
    renamed = await side("update", tid, display_name="New")
    assert renamed.display_name == "New"
    assert renamed.quota == TenantQuota(max_sessions=3) and renamed.settings == before.settings
    assert renamed.updated_at >= before.updated_at
    hipaa = TenantSettings(compliance_mode="hipaa")  # normalised
    changed = await side("update", tid, settings=hipaa, quota=TenantQuota())
    assert changed.display_name == "New"
    assert changed.settings.compliance_mode == "HIPAA"
    assert changed.quota == TenantQuota()  # replaced as a whole: unlimited
    assert await side("get", tid) == changed


async def test_suspend_and_resume(side: Side) -> None:
    tid = new_tenant()
    await side("create", tid)
    suspended = await side("suspend", tid)
    assert suspended.status == "suspended" and not suspended.active
    assert (await side("suspend", tid)).status == "suspended"  # idempotent
    assert (await side("get", tid)).status == "suspended"
    resumed = await side("resume", tid)
    assert resumed.status == "active" and resumed.active


async def test_list_pages_by_id_and_filters_by_status(side: Side) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i}" for i in range(5)]
    for tid in ids:
        await side("create", tid)
    await side("suspend", ids[1])
    await side("suspend", ids[3])
    seen: list[str] = []
    cursor = None
    while True:
        page = await side("list", limit=2, cursor=cursor)
        assert len(page.tenants) <= 2
        seen += [t.tenant_id for t in page.tenants]
        cursor = page.next_cursor
        if cursor is None:
            break
    mine = [t for t in seen if t.startswith(prefix)]
    assert mine == ids  # every one, once, in order
    assert seen == sorted(seen)
    everything = (await side("list", limit=10_000)).tenants
    suspended = {
        t.tenant_id for t in (await side("list", status="suspended", limit=10_000)).tenants
    }
    active = {t.tenant_id for t in (await side("list", status="active", limit=10_000)).tenants}
    assert {ids[1], ids[3]} <= suspended and not {ids[0], ids[2], ids[4]} & suspended
    assert {ids[0], ids[2], ids[4]} <= active and not {ids[1], ids[3]} & active
    assert len(everything) == len(suspended) + len(active)
    with pytest.raises(ConfigurationError, match="unknown tenant status"):
        await side("list", status="deleted")
    with pytest.raises(ConfigurationError, match="limit"):
        await side("list", limit=0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TenantSettings(timezone="Mars/Olympus"), "unknown time zone"),
        (lambda: TenantSettings(timezone=""), "time zone"),
        (lambda: TenantSettings(data_retention_days=0), "data_retention_days must be at least 1"),
        (lambda: TenantSettings(data_retention_days=-5), "data_retention_days"),
        (lambda: TenantSettings(compliance_mode="SOX"), "unknown compliance mode 'SOX'"),
        (lambda: TenantQuota(max_conversations=-1), "max_conversations must be at least 0"),
        (lambda: TenantQuota(max_tokens_per_month=1.5), "max_tokens_per_month must be an int"),
        (lambda: TenantQuota(max_sessions=True), "max_sessions must be an int"),
    ],
)
def test_invalid_settings_and_quotas_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


async def test_invalid_arguments_are_refused_before_any_write(side: Side) -> None:
    for bad in ("", "a\x00b", 42):
        with pytest.raises(ConfigurationError, match="tenant_id"):
            await side("create", bad)
    tid = new_tenant()
    with pytest.raises(ConfigurationError, match="display_name"):
        await side("create", tid, display_name="x" * 256)
    with pytest.raises(ConfigurationError, match="settings must be a TenantSettings"):
        await side("create", tid, settings={"timezone": "UTC"})
    with pytest.raises(ConfigurationError, match="quota must be a TenantQuota"):
        await side("create", tid, quota={"max_sessions": 1})
    with pytest.raises(TenantNotFoundError):
        await side("get", tid)


def test_compliance_modes_turn_on_their_defaults() -> None:
    hipaa = TenantSettings(compliance_mode="HIPAA").effective()
    assert hipaa.require_encryption and hipaa.audit_writes and hipaa.audit_reads
    assert hipaa.data_retention_days == COMPLIANCE_DEFAULTS["HIPAA"].data_retention_days
    gdpr = TenantSettings(compliance_mode="GDPR", data_retention_days=30).effective()
    assert gdpr.require_encryption and gdpr.audit_writes and not gdpr.audit_reads
    assert gdpr.data_retention_days == 30  # the tenant's own retention wins
    plain = TenantSettings().effective()
    assert not (plain.require_encryption or plain.audit_writes or plain.audit_reads)
    assert plain.data_retention_days is None and plain.timezone == "UTC"
