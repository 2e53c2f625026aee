"""The advisor on real servers: an invalid index, bloat, pgvector missing, JSON and exit codes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from haive_langgraph.cli import app
from haive_langgraph.ops import migrate_all
from haive_langgraph.ops.audit import enable
from haive_langgraph.ops.doctor import DoctorReport, Finding, diagnose, pooler_finding

runner = CliRunner()
SYSTEM_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(scope="module")
def migrated(dsn: str) -> str:
    migrate_all(dsn)
    return dsn


def codes(report: DoctorReport) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


def test_an_invalid_index_is_reported_with_its_fix(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        for i in range(2):
            conn.execute(
                "INSERT INTO haive.threads (tenant_id, thread_id, family_id, metadata) "
                "VALUES ('t', %s, 'f', '{\"dup\": 1}')",
                (f"dup-{i}",),
            )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY threads_dup_idx ON haive.threads ((metadata->'dup'))"
            )
    report = diagnose(migrated)
    [finding] = codes(report)["invalid-index"]
    assert finding.object == "threads_dup_idx" and finding.severity == "critical"
    assert "failed part-way" in finding.explanation
    assert finding.fix[0] == 'DROP INDEX CONCURRENTLY IF EXISTS "haive"."threads_dup_idx";'
    assert "CREATE UNIQUE INDEX CONCURRENTLY threads_dup_idx" in finding.fix[1]
    assert not report.healthy
    # the fix works
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(finding.fix[0])
    assert "invalid-index" not in codes(diagnose(migrated))


def test_sizes_per_table_and_tenant(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO haive.blobs (tenant_id, family_id, key, data) "
            "SELECT 'big', 'f', int8send(g), repeat('x', 500)::bytea FROM generate_series(1, 200) g"
        )
        conn.execute("ANALYZE haive.blobs")
    report = diagnose(migrated)
    tables = {t.table: t for t in report.tables}
    assert set(tables) >= {"threads", "checkpoints", "blobs", "audit_log"}
    assert tables["blobs"].total_bytes >= tables["blobs"].table_bytes > 0
    assert tables["blobs"].index_bytes > 0
    big = [t for t in report.tenants if t.tenant_id == "big" and t.table == "blobs"]
    assert big and big[0].rows == 200 and big[0].bytes > 200 * 500
    assert diagnose(migrated, tenants=False).tenants == []


def test_dead_rows_and_disabled_autovacuum(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("ALTER TABLE haive.lineages SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO haive.lineages (tenant_id, family_id, lineage_id, length) "
            "SELECT 'b', 'f', g, 1 FROM generate_series(1, 5000) g"
        )
        conn.execute("DELETE FROM haive.lineages WHERE lineage_id % 2 = 0")
        conn.execute("SELECT pg_stat_force_next_flush()")
    found = codes(diagnose(migrated))
    assert [f.object for f in found["autovacuum-off"]] == ["lineages"]
    bloat = [f for f in found["bloat"] if f.object == "lineages"]
    assert bloat and bloat[0].fix == ('VACUUM (ANALYZE) "haive"."lineages";',)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute('ALTER TABLE "haive"."lineages" RESET (autovacuum_enabled)')
        conn.execute(bloat[0].fix[0])
        conn.execute("SELECT pg_stat_force_next_flush()")
    found = codes(diagnose(migrated))
    assert "lineages" not in [
        f.object for f in found.get("bloat", []) + found.get("autovacuum-off", [])
    ]


def test_audit_gaps_and_store_filter_keys(migrated: str) -> None:
    enable(migrated, tables=["threads"])
    found = codes(diagnose(migrated))
    [gap] = found["audit-uncovered"]
    assert "checkpoints" in gap.title and gap.severity == "warning"
    enable(migrated)
    assert "audit-uncovered" not in codes(diagnose(migrated))
    report = diagnose(
        migrated, filter_keys={"status": 5000, "rare": 3, "meta.kind": 900}, filter_key_min_rows=0
    )
    suggested = {f.object: f for f in codes(report)["store-filter-index"]}
    assert set(suggested) == {"store_items.doc.status", "store_items.doc.meta.kind"}
    fix = suggested["store_items.doc.meta.kind"].fix[0]
    assert "(doc #> '{meta,kind}'::text[])" in fix
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(fix)
    again = diagnose(migrated, filter_keys={"meta.kind": 900}, filter_key_min_rows=0)
    assert "store-filter-index" not in codes(again)


def test_missing_statistics_extension_and_hnsw(migrated: str) -> None:
    found = codes(diagnose(migrated))
    # the embedded server has no pg_stat_statements preloaded
    [pgss] = found["pg-stat-statements-missing"]
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" in pgss.fix
    assert "pgvector-missing" not in found


def test_a_pooler_in_front_is_recognised() -> None:
    finding = pooler_finding("postgresql://u@db.example.com:6543/postgres", 5432, "none")
    assert finding is not None and "Supavisor" in finding.title
    assert "HAIVE_POOLER_MODE=transaction" in finding.fix[0]
    assert pooler_finding("postgresql://u@db.example.com:6543/postgres", 5432, "auto") is None
    assert pooler_finding("postgresql://u@h:6432/db", 5432, "auto") is not None
    assert pooler_finding("postgresql://u@h:5432/db", 5432, "none") is None
    assert pooler_finding("postgresql://u@h:6432/db", 5432, "transaction") is None


@pytest.fixture
def system_db() -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL 15 (no pgvector), dropped after."""
    try:
        admin = psycopg.connect(SYSTEM_SERVER, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"the system PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    name = f"haive_doctor_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(SYSTEM_SERVER, dbname=name)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_pgvector_missing_on_a_server_without_it(system_db: str) -> None:
    with psycopg.connect(system_db) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
            pytest.skip("this server has pgvector")
    migrate_all(system_db)
    report = diagnose(system_db)
    [missing] = codes(report)["pgvector-missing"]
    assert missing.severity == "warning" and "CREATE EXTENSION IF NOT EXISTS vector;" in missing.fix
    assert "postgresql-15-pgvector" in missing.fix[0]
    result = runner.invoke(app, ["doctor", "--dsn", system_db, "--json"])
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["healthy"] is False
    assert any(f["code"] == "pgvector-missing" for f in data["findings"])
    assert all({"severity", "explanation", "fix"} <= set(f) for f in data["findings"])


def test_cli_exit_codes(dsn: str) -> None:
    healthy_schema = "doctor_ok"
    migrate_all(dsn, schema=healthy_schema)
    ok = runner.invoke(app, ["doctor", "--dsn", dsn, "--schema", healthy_schema, "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["healthy"] is True
    text = runner.invoke(app, ["doctor", "--dsn", dsn, "--schema", healthy_schema])
    assert text.exit_code == 0 and "INFO" in text.stdout
    bad = runner.invoke(app, ["doctor", "--dsn", dsn, "--filter-key", "nope"])
    assert bad.exit_code == 2
