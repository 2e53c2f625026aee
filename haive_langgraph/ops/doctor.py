"""The advisor: sizes, bloat, broken indexes, slow statements and settings, with fixes.

:func:`diagnose` looks at one schema of a live database and returns a
:class:`DoctorReport`: the size of each table and its indexes, per tenant,
and a list of :class:`Finding`, each with a severity, what is wrong and why
it matters, and the SQL that fixes it (lines starting with ``--`` are steps
outside SQL, such as a setting of the application). It only reads; nothing
is changed. ``haive-lg doctor`` prints it and exits with code 3 when a
finding is a warning or worse.

Everything is found from the catalog and the statistics views, so the tables
of every feature are covered. The checks:

* table, index and TOAST sizes; sizes per tenant (a scan of each tenant
  table: ``tenants=False`` skips it on large databases);
* bloat: dead rows left by updates and deletes, tables whose autovacuum is off;
* invalid indexes (a ``CREATE INDEX CONCURRENTLY`` that failed: maintained on
  every write, used by no query), large indexes never scanned;
* the slowest statements on our tables, from ``pg_stat_statements`` when it
  is installed;
* expression indexes for store filter keys that are used often (the usage is
  given by the caller: ``filter_keys``);
* settings wrong for the workload: a connection pooler in front of the
  server without pooler-safe connections (``prepare_threshold=None``),
  pgvector missing or too old for filtered vector search, HNSW ``ef_search``;
* pending migrations, and an audit log that does not cover every table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from psycopg import sql

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._dsn import describe_dsn, parse_dsn, resolve_dsn, uses_transaction_pooler
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import status_op
from haive_langgraph.errors import MigrationError
from haive_langgraph.ops import _doctor_sql as SQL
from haive_langgraph.ops._doctor_report import (
    SEVERITY_ORDER,
    DoctorReport,
    Finding,
    Severity,
    SlowStatement,
    TableSize,
    TenantSize,
)
from haive_langgraph.ops._schema import introspect_op

__all__ = [
    "DoctorReport",
    "Finding",
    "Severity",
    "SlowStatement",
    "TableSize",
    "TenantSize",
    "diagnose",
]


# Thresholds (a finding below them would be noise).
DEAD_ROW_RATIO = 0.2
DEAD_ROW_MIN = 1_000
UNUSED_INDEX_BYTES = 8 * 1024 * 1024
SLOW_STATEMENT_MS = 50.0
FILTER_KEY_MIN_USES = 100
FILTER_KEY_MIN_ROWS = 10_000
PGVECTOR_ITERATIVE_SCAN = (0, 8, 0)
PGVECTOR_DEFAULT_EF_SEARCH = 40
# Ports of the common poolers: Supabase's transaction pooler, PgBouncer.
POOLER_PORTS = {"6543": "Supabase/Supavisor (transaction mode)", "6432": "PgBouncer"}


# -- the checks --------------------------------------------------------------------------


def _q(schema: str, name: str) -> str:
    return sql.Identifier(schema, name).as_string(None)


def _version(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def pooler_finding(dsn: str, server_port: int | None, pooler_mode: str) -> Finding | None:
    """A pooler in front of the server, without pooler-safe connections (pure check)."""
    try:
        given = parse_dsn(dsn).get("port", "")
    except Exception:
        return None
    ports = [p for p in given.split(",") if p]
    if not ports or server_port is None or str(server_port) in ports:
        return None
    if uses_transaction_pooler(dsn, pooler_mode):  # type: ignore[arg-type]
        return None
    kind = next((POOLER_PORTS[p] for p in ports if p in POOLER_PORTS), "a connection pooler")
    return Finding(
        code="pooler-without-prepare-threshold",
        severity="warning",
        title=f"connections go through {kind}, but not as pooler-safe connections",
        explanation=(
            f"The DSN's port ({','.join(ports)}) is not the server's ({server_port}): something "
            "between them forwards the connections, most likely a pooler. In transaction mode a "
            "pooler hands each transaction to any server connection, so server-side prepared "
            "statements (psycopg prepares a statement after 5 executions) and session settings "
            "break with errors such as 'prepared statement \"_pg3_0\" does not exist'. Unless "
            "the pooler runs in session mode, connect with prepare_threshold=None and no "
            "session state."
        ),
        fix=(
            "-- export HAIVE_POOLER_MODE=transaction   (prepare_threshold=None on every connection)",
            "-- or, if the pooler runs in session mode: export HAIVE_POOLER_MODE=session",
        ),
        object="pooler_mode",
    )


def _diagnose_op(
    schema: str,
    *,
    dsn: str,
    pooler_mode: str,
    tenants: bool,
    filter_keys: Mapping[str, int],
    filter_key_min_uses: int,
    filter_key_min_rows: int,
) -> Op[DoctorReport]:
    from haive_langgraph.ops._migrate import all_components, schema_state_op

    server = yield Step(SQL.SERVER, fetch="one")
    (version, version_num, database, server_port, autovacuum, vector_available, vector_version,
     pgss_version, preload, ef_search) = server  # fmt: skip
    report = DoctorReport(schema=schema, server_version=str(version))
    findings = report.findings
    live = yield from introspect_op(schema)
    if not live.tables:
        # A schema that is missing or holds nothing of ours is a mistyped --schema
        # or --dsn: an error, worded as every command that creates nothing words it
        # (check_schema), not a finding on a database that was never examined.
        state = yield from schema_state_op(schema)
        if (problem := state.problem(server=describe_dsn(dsn))) is not None:
            raise MigrationError(problem)
        findings.append(
            Finding(
                "no-tables",
                "warning",
                f"schema {schema} holds no haive-langgraph tables",
                "Nothing to examine: the tables are created by the migrations.",
                (f"-- haive-lg migrate --schema {schema}",),
                schema,
            )
        )

    # Sizes and bloat.
    sizes = yield Step(SQL.SIZES, (schema,))
    parts = {r[0]: r for r in (yield Step(SQL.PARTITION_SIZES, (schema,)))}
    for name, total, heap, idx, toast, live_rows, dead, av_off in sizes:
        if name in parts:
            _, total, heap, idx, toast, live_rows, dead = parts[name]
        report.tables.append(
            TableSize(
                str(name), int(total), int(heap), int(idx), int(toast), int(live_rows), int(dead)
            )
        )
        qualified = _q(schema, name)
        if dead >= DEAD_ROW_MIN and dead > DEAD_ROW_RATIO * (live_rows + dead):
            share = dead / max(1, live_rows + dead)
            findings.append(
                Finding(
                    "bloat",
                    "warning",
                    f"{name}: {share:.0%} of its rows are dead (~{int(heap * share):,} bytes)",
                    f"{dead:,} dead row versions against {live_rows:,} live ones: updates and "
                    "deletes leave old versions until VACUUM reclaims them; every scan reads "
                    "past them and the table and its indexes stay larger than they need to be. "
                    "Autovacuum is behind (or off) on this table. VACUUM makes the space "
                    "reusable; VACUUM FULL (exclusive lock) or pg_repack gives it back to the "
                    "operating system.",
                    (f"VACUUM (ANALYZE) {qualified};",),
                    str(name),
                )
            )
        if av_off:
            findings.append(
                Finding(
                    "autovacuum-off",
                    "warning",
                    f"{name}: autovacuum is disabled on this table",
                    "Dead rows are never reclaimed and statistics never refreshed: the table "
                    "bloats and plans drift.",
                    (f"ALTER TABLE {qualified} RESET (autovacuum_enabled);",),
                    str(name),
                )
            )
    report.tables.sort(key=lambda t: (-t.total_bytes, t.table))
    if autovacuum != "on":
        findings.append(
            Finding(
                "autovacuum-off",
                "critical",
                "autovacuum is off for the whole server",
                "Dead rows accumulate in every table, and transaction id wraparound protection "
                "then relies on emergency vacuums.",
                ("ALTER SYSTEM SET autovacuum = on;", "SELECT pg_reload_conf();"),
                "autovacuum",
            )
        )

    if tenants:
        for table in live.tables:
            if not table.has_tenant:
                continue
            rows = yield Step(sql.SQL(SQL.TENANT_SIZES).format(sql.Identifier(schema, table.name)))
            report.tenants += [
                TenantSize(table.name, str(t), int(n), int(b or 0)) for t, n, b in rows
            ]
        report.tenants.sort(key=lambda t: (-t.bytes, t.table, t.tenant_id))
        del report.tenants[50:]

    # Indexes.
    for index, table, definition, ready in (yield Step(SQL.INVALID_INDEXES, (schema,))):
        qualified = _q(schema, index)
        concurrently = str(definition).replace(" INDEX ", " INDEX CONCURRENTLY ", 1)
        findings.append(
            Finding(
                "invalid-index",
                "critical" if "UNIQUE" in str(definition) else "warning",
                f"index {index} on {table} is invalid",
                "A CREATE INDEX CONCURRENTLY (or REINDEX CONCURRENTLY) failed part-way and "
                "left it behind: no query uses it, yet "
                + ("every write still maintains it. " if ready else "it takes space. ")
                + "Drop it and build it again (after fixing what made it fail, such as "
                "duplicate values for a unique index).",
                (f"DROP INDEX CONCURRENTLY IF EXISTS {qualified};", f"{concurrently};"),
                str(index),
            )
        )
    for index, table, size in (yield Step(SQL.UNUSED_INDEXES, (schema, UNUSED_INDEX_BYTES))):
        findings.append(
            Finding(
                "unused-index",
                "info",
                f"index {index} on {table} ({int(size):,} bytes) has never been scanned",
                "Since the statistics were last reset no query used it, but every write "
                "maintains it. Keep it if a rare query (or a replica) needs it.",
                (f"DROP INDEX CONCURRENTLY IF EXISTS {_q(schema, index)};",),
                str(index),
            )
        )
    for table in live.tables:
        if not table.primary_key:
            findings.append(
                Finding(
                    "no-primary-key",
                    "warning",
                    f"{table.name} has no primary key",
                    "Rows cannot be told apart: restores cannot merge into it, and logical "
                    "replication cannot update or delete its rows.",
                    (f"-- ALTER TABLE {_q(schema, table.name)} ADD PRIMARY KEY (...);",),
                    table.name,
                )
            )

    # Slow statements.
    if pgss_version:
        rows = yield Step(SQL.SLOW_STATEMENTS, (schema, schema))
        report.statements = [
            SlowStatement(str(q), int(c), float(m), float(t), int(r)) for q, c, m, t, r in rows
        ]
        for st in report.statements[:3]:
            if st.mean_ms >= SLOW_STATEMENT_MS:
                findings.append(
                    Finding(
                        "slow-statement",
                        "info",
                        f"a statement takes {st.mean_ms:.1f} ms on average ({st.calls:,} calls)",
                        "Among the slowest statements on this schema. Look at its plan with "
                        "representative values; a missing index or stale statistics are the "
                        "usual causes.",
                        (
                            f"-- EXPLAIN (ANALYZE, BUFFERS) {' '.join(st.query.split())[:300]}",
                            "ANALYZE;",
                        ),
                        "pg_stat_statements",
                    )
                )
    else:
        preloaded = "pg_stat_statements" in str(preload)
        findings.append(
            Finding(
                "pg-stat-statements-missing",
                "info",
                "pg_stat_statements is not installed: slow statements cannot be listed",
                "The extension records the time each statement takes; the advisor reads it to "
                "name the slowest statements on our tables."
                + ("" if preloaded else " It must be in shared_preload_libraries (a restart)."),
                (
                    *(
                        ()
                        if preloaded
                        else (
                            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';",
                            "-- restart PostgreSQL",
                        )
                    ),
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
                ),
                "pg_stat_statements",
            )
        )

    # pgvector.
    if not vector_available:
        findings.append(
            Finding(
                "pgvector-missing",
                "warning",
                "pgvector is not installed on this server",
                "The store's semantic search (PostgresStore with index=...) needs the vector "
                "extension; without it setup() fails as soon as an index is configured. Install "
                "the server package, then create the extension in this database.",
                (
                    f"-- install pgvector on the server, e.g. apt install postgresql-{version_num // 10000}-pgvector",
                    "CREATE EXTENSION IF NOT EXISTS vector;",
                ),
                "vector",
            )
        )
    elif vector_version is None:
        findings.append(
            Finding(
                "pgvector-not-created",
                "info",
                "pgvector is available but not created in this database",
                "The store creates it on setup() when an index is configured; creating it ahead "
                "needs the privilege to create extensions.",
                ("CREATE EXTENSION IF NOT EXISTS vector;",),
                "vector",
            )
        )
    elif _version(str(vector_version)) < PGVECTOR_ITERATIVE_SCAN:
        findings.append(
            Finding(
                "pgvector-old",
                "warning",
                f"pgvector {vector_version} is older than 0.8",
                "Filtered vector searches (a namespace, a tenant, a filter) rely on iterative "
                "index scans, new in pgvector 0.8: older versions return fewer results than "
                "asked when the filter removes most of the index's candidates.",
                (
                    "-- upgrade the server package to pgvector 0.8 or later, then:",
                    "ALTER EXTENSION vector UPDATE;",
                ),
                "vector",
            )
        )
    if vector_version is not None:
        hnsw = yield Step(SQL.HNSW_INDEXES, (schema,))
        if hnsw and (ef_search is None or int(ef_search) <= PGVECTOR_DEFAULT_EF_SEARCH):
            names = ", ".join(f"{i} on {t}" for i, t in hnsw)
            findings.append(
                Finding(
                    "hnsw-ef-search",
                    "info",
                    f"hnsw.ef_search is {ef_search or PGVECTOR_DEFAULT_EF_SEARCH} for HNSW indexes ({names})",
                    "A search returns at most ef_search candidates from an HNSW index, and its "
                    "recall falls with small values (about 0.90 recall@10 at 40 on 100,000 "
                    "vectors). The store sets its own ef_search per search (default 100); other "
                    "clients of these indexes get the database's value.",
                    (
                        f"ALTER DATABASE {sql.Identifier(str(database)).as_string(None)} SET hnsw.ef_search = 100;",
                    ),
                    "hnsw.ef_search",
                )
            )

    # Store filter keys used often: an expression index per key.
    items = live.table("store_items")
    if items is not None and filter_keys:
        rows_row = next((t for t in report.tables if t.table == "store_items"), None)
        existing = [str(d) for _, d in (yield Step(SQL.DOC_INDEXES, (schema, "store_items")))]
        for key, uses in sorted(filter_keys.items(), key=lambda kv: -kv[1]):
            if uses < filter_key_min_uses or (
                rows_row is not None and rows_row.rows < filter_key_min_rows
            ):
                continue
            path = key.split(".")
            literal = "'{" + ",".join(_path_segment(p) for p in path) + "}'"
            if any(literal in d for d in existing):
                continue
            name = "store_items_doc_" + re.sub(r"[^a-z0-9_]", "_", key.lower())[:40] + "_idx"
            findings.append(
                Finding(
                    "store-filter-index",
                    "info",
                    f"store filter key {key!r} is used often ({uses:,} times): an expression index",
                    f"Filters on {key!r} other than equality to a scalar ($exists, $eq on lists "
                    "and objects) evaluate `doc #> path` on every item of the namespace; an index "
                    "on that expression lets the planner go straight to the matching items "
                    "(equality to a scalar already uses the document's GIN index). Check the "
                    "plan of a typical search with EXPLAIN after creating it.",
                    (
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {sql.Identifier(name).as_string(None)} "
                        f"ON {_q(schema, 'store_items')} (tenant_id, (doc #> {literal}::text[]));",
                    ),
                    f"store_items.doc.{key}",
                )
            )

    # Migrations.
    versions = yield from status_op(all_components(), schema)
    for component, (applied, latest) in versions.items():
        if applied > latest:
            findings.append(
                Finding(
                    "schema-newer",
                    "critical",
                    f"{component} tables are at version {applied}, newer than this code ({latest})",
                    "This haive-langgraph is older than the one that migrated the schema: its "
                    "statements may not match the tables.",
                    ("-- upgrade haive-langgraph",),
                    component,
                )
            )
        elif 0 < applied < latest and live.tables:
            # A component never migrated (applied 0) is one the application does
            # not use: ``saver.setup()`` migrates the checkpoints only, as the
            # README shows, and that database is healthy. Only a component
            # left part-way behind this code needs ``haive-lg migrate``.
            findings.append(
                Finding(
                    "migrations-pending",
                    "warning",
                    f"{component}: "
                    + (
                        f"migration {latest} is"
                        if latest == applied + 1
                        else f"migrations {applied + 1}..{latest} are"
                    )
                    + " not applied",
                    "The code expects tables or columns these migrations create.",
                    (f"-- haive-lg migrate --schema {schema}   (or: haive-lg migrate --sql)",),
                    component,
                )
            )

    # Audit coverage.
    if live.table("audit_log") is not None:
        from haive_langgraph.ops.audit._ops import status_op as audit_status_op

        audit = yield from audit_status_op(schema)
        if audit.enabled and audit.uncovered:
            findings.append(
                Finding(
                    "audit-uncovered",
                    "warning",
                    f"the audit log does not cover {', '.join(audit.uncovered)}",
                    "Auditing is enabled, but these tables (added after it was enabled, or left "
                    "out) have no audit triggers: their changes are not recorded.",
                    (f"-- haive-lg audit enable --schema {schema}",),
                    "audit_log",
                )
            )

    pooler = pooler_finding(dsn, server_port, pooler_mode)
    if pooler is not None:
        findings.append(pooler)
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.code, f.object or ""))
    return report


def _path_segment(segment: str) -> str:
    # An element of a text[] literal, quoted when needed; single quotes doubled for SQL.
    if re.fullmatch(r"[A-Za-z0-9_]+", segment):
        return segment
    return '"' + segment.replace("\\", "\\\\").replace('"', '\\"').replace("'", "''") + '"'


def diagnose(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    tenants: bool = True,
    filter_keys: Mapping[str, int] | None = None,
    filter_key_min_uses: int = FILTER_KEY_MIN_USES,
    filter_key_min_rows: int = FILTER_KEY_MIN_ROWS,
    config: PersistenceConfig | None = None,
) -> DoctorReport:
    """Examine a schema and return sizes and findings (read only).

    Args:
        dsn: The server (default: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            the embedded server).
        schema: Schema of the tables (default ``haive``).
        tenants: Also measure each tenant's rows (scans every tenant table).
        filter_keys: Store filter keys and how often they were used, for
            index suggestions (``{"status": 1200, "meta.kind": 300}``).
        filter_key_min_uses: Uses below which a key gets no suggestion.
        filter_key_min_rows: Store size below which no index is suggested.
        config: Connection settings (its ``pooler_mode`` is checked).
    """
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    resolved = resolve_dsn(dsn, config=config)
    source = ConnectionSource(resolved, config=config)
    try:
        return source.run(
            lambda: _diagnose_op(
                target,
                dsn=resolved,
                pooler_mode=config.pooler_mode,
                tenants=tenants,
                filter_keys=dict(filter_keys or {}),
                filter_key_min_uses=filter_key_min_uses,
                filter_key_min_rows=filter_key_min_rows,
            ),
            read=True,
        )
    finally:
        source.close()
