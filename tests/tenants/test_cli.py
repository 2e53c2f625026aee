"""``haive-lg tenants``: create, get, list, update, suspend, resume, delete (typer's CliRunner)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from haive_langgraph.cli import app
from haive_langgraph.ops._migrate import migrate_all
from haive_langgraph.stores import PostgresStore
from haive_langgraph.tenants import TenantQuota, TenantRegistry

runner = CliRunner()


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    migrate_all(dsn)
    return dsn


def tenants(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["tenants", *args], input=input)


def new_tenant() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_create_get_update_suspend_resume_in_json(migrated: str) -> None:
    tid = new_tenant()
    made = tenants(
        "create", tid, "--dsn", migrated, "--name", "Acme", "--timezone", "Europe/Paris",
        "--compliance", "gdpr", "--max-sessions", "5", "--max-storage-bytes", "1000000", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    record = json.loads(made.stdout)
    assert record["tenant_id"] == tid and record["display_name"] == "Acme"
    assert record["settings"] == {
        "timezone": "Europe/Paris",
        "data_retention_days": None,
        "compliance_mode": "GDPR",
    }
    assert record["effective"]["require_encryption"] is True
    assert record["effective"]["data_retention_days"] == 365  # GDPR's default
    assert record["quota"] == {"max_sessions": 5, "max_storage_bytes": 1_000_000}
    changed = tenants(
        "update", tid, "--dsn", migrated, "--max-sessions", "none", "--max-conversations", "7",
        "--retention-days", "30", "--json",
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    after = json.loads(changed.stdout)
    assert after["display_name"] == "Acme"  # not given: kept
    assert after["quota"] == {"max_conversations": 7, "max_storage_bytes": 1_000_000}
    assert after["settings"]["data_retention_days"] == 30
    assert after["settings"]["compliance_mode"] == "GDPR"
    with TenantRegistry(migrated) as registry:
        assert registry.get(tid).quota == TenantQuota(
            max_conversations=7, max_storage_bytes=1_000_000
        )
    paused = tenants("suspend", tid, "--dsn", migrated, "--json")
    assert paused.exit_code == 0 and json.loads(paused.stdout)["status"] == "suspended"
    shown = tenants("get", tid, "--dsn", migrated)
    assert shown.exit_code == 0 and "suspended" in shown.stdout and "Europe/Paris" in shown.stdout
    back = tenants("resume", tid, "--dsn", migrated, "--json")
    assert back.exit_code == 0 and json.loads(back.stdout)["status"] == "active"


def test_list_pages_and_filters(migrated: str) -> None:
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        assert tenants("create", f"{prefix}-{i}", "--dsn", migrated).exit_code == 0
    assert tenants("suspend", f"{prefix}-1", "--dsn", migrated).exit_code == 0
    listed = tenants("list", "--dsn", migrated, "--json", "--limit", "1000")
    assert listed.exit_code == 0, listed.output
    ids = [t["tenant_id"] for t in json.loads(listed.stdout)["tenants"]]
    assert [i for i in ids if i.startswith(prefix)] == [f"{prefix}-{i}" for i in range(3)]
    held = tenants("list", "--dsn", migrated, "--status", "suspended", "--json")
    assert f"{prefix}-1" in [t["tenant_id"] for t in json.loads(held.stdout)["tenants"]]
    assert all(t["status"] == "suspended" for t in json.loads(held.stdout)["tenants"])
    first = json.loads(tenants("list", "--dsn", migrated, "--limit", "1", "--json").stdout)
    assert len(first["tenants"]) == 1 and first["next_cursor"] == first["tenants"][0]["tenant_id"]
    table = tenants("list", "--dsn", migrated, "--limit", "1")
    assert table.exit_code == 0 and "--cursor" in table.stdout


def test_errors_are_one_line_with_exit_codes(migrated: str) -> None:
    missing = tenants("get", "nobody-here", "--dsn", migrated)
    assert missing.exit_code == 1 and "no tenant 'nobody-here'" in missing.stderr
    tid = new_tenant()
    assert tenants("create", tid, "--dsn", migrated).exit_code == 0
    again = tenants("create", tid, "--dsn", migrated)
    assert again.exit_code == 1 and "already registered" in again.stderr
    zone = tenants("update", tid, "--dsn", migrated, "--timezone", "Mars/Base")
    assert zone.exit_code == 1 and "unknown time zone" in zone.stderr
    mode = tenants("update", tid, "--dsn", migrated, "--compliance", "SOX")
    assert mode.exit_code == 1 and "unknown compliance mode" in mode.stderr
    negative = tenants("update", tid, "--dsn", migrated, "--max-sessions", "-3")
    assert negative.exit_code == 1 and "at least 0" in negative.stderr
    word = tenants("update", tid, "--dsn", migrated, "--max-sessions", "many")
    assert word.exit_code == 2 and "neither an integer nor 'none'" in word.stderr


def test_a_schema_not_migrated_is_reported(migrated: str) -> None:
    out = tenants("list", "--dsn", migrated, "--schema", "nowhere")
    assert out.exit_code == 1 and "haive-lg migrate" in out.stderr


def test_delete_asks_then_erases_that_tenant_only(migrated: str) -> None:
    gone, kept = new_tenant(), new_tenant()
    for tid in (gone, kept):
        assert tenants("create", tid, "--dsn", migrated).exit_code == 0
        with PostgresStore.from_conn_string(migrated, tenant_id=tid) as store:
            store.put(("notes",), "n1", {"text": tid})
    refused = tenants("delete", gone, "--dsn", migrated, input="n\n")
    assert refused.exit_code == 2 and "nothing was deleted" in refused.stderr
    with TenantRegistry(migrated) as registry:
        assert registry.get(gone).tenant_id == gone
    confirmed = tenants("delete", gone, "--dsn", migrated, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "store_items" in confirmed.stdout
    again = tenants("delete", gone, "--dsn", migrated, "--yes")
    assert again.exit_code == 1 and "no tenant" in again.stderr
    erased = tenants("delete", kept, "--dsn", migrated, "--yes", "--json")
    assert erased.exit_code == 0
    assert json.loads(erased.stdout)["deleted"]["store_items"] == 1
    with psycopg.connect(migrated) as conn:
        rows = conn.execute(
            "SELECT tenant_id FROM haive.store_items WHERE tenant_id IN (%s, %s)", (gone, kept)
        ).fetchall()
    assert rows == []
