"""The restore transaction (see :func:`haive_langgraph.ops.backup.restore`).

Archives arrive here checked (manifest fields and signatures, every part's
size and SHA-256) and in chain order. Before connecting, the archived
tables must be ours and each archive's scope part must give every table
one scope (:mod:`haive_langgraph.ops._restore_checks`). Everything below
runs in one transaction on the target:

1. the migrations of every component, on the target schema;
2. the store's vector table, if the archive holds it and the target lacks
   it, from the store's own definition (never SQL from the archive);
3. a check that the target's columns are the archived ones, and that each
   table's scope is one the archive's declared selection gives it;
4. the conflict check (rows already in the archive's scope);
5. user triggers of the restored tables are disabled (re-enabled at the end);
6. ``replace``: the scope's rows are deleted;
7. rows are copied in (``COPY``), each checked against its archive's scope
   as it is read, straight into the table when nothing can conflict, else
   through a temporary staging table: a chain of incremental archives is
   applied there first (newer row versions win, rows whose keys are no
   longer present go), then moved with ``ON CONFLICT`` as asked;
8. identity and serial sequences are moved past the restored values.

A row outside its scope, a damaged part, or anything else that fails rolls
the whole transaction back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from haive_langgraph.db import connect
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import Op, Step, run
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.ops._archive import (
    ArchiveContentError,
    ArchiveIntegrityError,
    ArchiveReader,
    BackupError,
    PartInfo,
    RestoreConflictError,
)
from haive_langgraph.ops._archive_rows import parse_row
from haive_langgraph.ops._backup_reports import RestoreReport
from haive_langgraph.ops._backup_write import RESTORE_SESSION, RowCounter, session_op
from haive_langgraph.ops._keys_sql import TENANT_KEYS
from haive_langgraph.ops._migrate import all_components
from haive_langgraph.ops._restore_checks import (
    ArchivedTable,
    RowFilter,
    check_columns,
    check_scope,
    plan_tables,
    read_scopes,
    row_filter,
    vector_table_op,
)
from haive_langgraph.ops._schema import Schema, Table, introspect_op
from haive_langgraph.ops._selection import TableScope
from haive_langgraph.ops.audit import record_op


def _check_components(readers: Sequence[ArchiveReader]) -> None:
    known = {c.name: c.latest_version for c in all_components()}
    for reader in readers:
        for name, version in reader.manifest.get("components", {}).items():
            if name in known and int(version) > known[name]:
                raise BackupError(
                    f"{str(reader.path)!r} holds {name} tables at schema version {version}, newer "
                    f"than this haive-langgraph knows ({known[name]}); upgrade haive-langgraph "
                    "to restore it"
                )


def run_restore(
    readers: Sequence[ArchiveReader],
    dsn: str | None,
    schema: str,
    on_existing: str,
    progress: Callable[[Any], None] | None,
    config: PersistenceConfig,
) -> RestoreReport:
    started = time.perf_counter()
    _check_components(readers)
    archived = plan_tables(readers)
    # Each archive's rows are checked against that archive's own scope;
    # the chain's union bounds conflicts, replace and version renewal.
    own_scopes = [read_scopes(reader) for reader in readers]
    scopes: dict[str, TableScope] = {}
    for per_archive in own_scopes:
        for name, scope in per_archive.items():
            scopes[name] = scopes[name].merged(scope) if name in scopes else scope
    report = RestoreReport(
        schema=schema,
        archives=[str(r.manifest["archive_id"]) for r in readers],
        bytes=sum(r.size for r in readers),
    )
    total = sum(a.rows for a in archived.values())
    chain = len(readers) > 1
    conn = connect(dsn, config=config)
    try:
        with conn.transaction():
            run(conn, session_op(schema, RESTORE_SESSION))
            run(conn, migrate_op(all_components(), schema))
            live = run(conn, introspect_op(schema))
            for name in archived:
                if live.table(name) is None:
                    run(conn, vector_table_op(schema, readers, archived))
                    report.created_tables.append(name)
            if report.created_tables:
                live = run(conn, introspect_op(schema))
            missing = [n for n in archived if live.table(n) is None]
            if missing:
                raise BackupError(
                    f"no migration created {', '.join(missing)} in schema {schema!r}: this "
                    "haive-langgraph cannot restore them"
                )
            tables = [t for t in live.tables if t.name in archived]
            filters: dict[tuple[str, int], RowFilter | None] = {}
            for table in tables:
                source = archived[table.name]
                check_columns(table, source, schema)
                for index, _parts, _keys in source.sources:
                    own = own_scopes[index][table.name]
                    check_scope(
                        table,
                        own,
                        source.data_columns,
                        readers[index].manifest["selection"],
                        readers[index].where,
                    )
                    filters[table.name, index] = row_filter(own, source.data_columns)
            if on_existing == "refuse":
                _refuse_existing(conn, live, tables, scopes)
            disabled = run(conn, _disable_triggers_op(live, [t.name for t in tables]))
            if on_existing == "replace":
                for table in reversed(tables):
                    in_scope = scopes[table.name]
                    if _kept(table.name, in_scope):
                        continue
                    cond, params = in_scope.predicate(table)
                    cur = conn.execute(
                        sql.SQL("DELETE FROM {} AS t WHERE {}").format(
                            sql.Identifier(schema, table.name), cond
                        ),
                        params,
                    )
                    report.deleted[table.name] = cur.rowcount
            counter = RowCounter(progress, total, "restore")
            for number, table in enumerate(tables):
                source = archived[table.name]
                shared = _kept(table.name, scopes[table.name])
                direct = not chain and not shared and on_existing in ("refuse", "replace")
                tick = functools.partial(counter.advance, table.name)
                if direct:
                    written = 0
                    for index, parts, _keys in source.sources:
                        written += _copy_parts(
                            conn,
                            readers[index],
                            parts,
                            sql.Identifier(schema, table.name),
                            source.data_columns,
                            tick,
                            _Check(table.name, filters[table.name, index]),
                        )
                    report.tables[table.name] = written
                else:
                    written, staged = _via_staging(
                        conn,
                        readers,
                        schema,
                        table,
                        source,
                        number,
                        tick,
                        "skip" if shared or on_existing == "skip" else on_existing,
                        filters,
                    )
                    report.tables[table.name] = written
                    if staged > written:
                        report.skipped[table.name] = staged - written
                _advance_sequences(conn, schema, table)
            run(conn, _enable_triggers_op(disabled))
            _renew_versions(conn, schema, tables, scopes)
            _audit_restore(conn, live, schema, report)
    except psycopg.errors.UniqueViolation as exc:
        raise RestoreConflictError(
            f"restoring into schema {schema!r} hit a row that already exists in "
            f"{exc.diag.table_name}: {exc.diag.message_detail or exc}; pass on_existing='merge', "
            "'skip' or 'replace' (--merge, --skip-existing, --replace)"
        ) from None
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        # A null where the target requires a value (a null, or a column the
        # archive leaves out), or a value of the wrong form. Client-side
        # errors (a NUL in text) have no diagnostics: their text names the value.
        what = exc.diag.message_primary or str(exc)
        context = f"; {exc.diag.context}" if exc.diag.context else ""
        raise ArchiveIntegrityError(
            f"the archive holds a value the target does not accept ({what}{context}): nothing "
            "was written"
        ) from None
    except UnicodeEncodeError:
        raise ArchiveIntegrityError(
            "the archive holds text with a lone surrogate, which PostgreSQL cannot store (no "
            "backup writes one): nothing was written"
        ) from None
    finally:
        conn.close()
    report.rows = sum(report.tables.values())
    report.seconds = time.perf_counter() - started
    return report


def _kept(table: str, scope: TableScope) -> bool:
    """Whether rows of ``table`` already in the target are kept whatever ``on_existing`` says.

    Tenant-level rows of a selection by value (``shared``), and always a
    tenant's keys: the live record holds every key the tenant still has, or
    the marker of its crypto-shredding, which an archive taken before must
    never undo. Archived key rows are added only where the target has none.
    """
    return scope.kind == "shared" or table == TENANT_KEYS


def _refuse_existing(
    conn: psycopg.Connection[Any],
    live: Schema,
    tables: Sequence[Table],
    scopes: dict[str, TableScope],
) -> None:
    busy = []
    for table in tables:
        scope = scopes.get(table.name)
        if scope is None or _kept(table.name, scope):
            continue
        cond, params = scope.predicate(table)
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
                sql.Identifier(live.name, table.name), cond
            ),
            params,
        ).fetchone()
        if row and row[0]:
            busy.append(table.name)
    if busy:
        raise RestoreConflictError(
            f"schema {live.name!r} already holds rows in the archive's scope in "
            f"{', '.join(busy)}: pass on_existing='merge' (archived rows win), 'skip' (existing "
            "rows win) or 'replace' (existing rows in scope are deleted first); on the command "
            "line --merge, --skip-existing or --replace"
        )


def _renew_versions(
    conn: psycopg.Connection[Any],
    schema: str,
    tables: Sequence[Table],
    scopes: dict[str, TableScope],
) -> None:
    """Give restored conversations new versions, so no cache serves what it held before.

    Versions came back from the archive with triggers off; an archived version
    can equal one a cache holds for other messages (a merge into live rows).
    ``version = version`` lets the row trigger assign a fresh one, to the rows
    in the archive's scope only.
    """
    for table in tables:
        if table.name == "conversations" and any(c.name == "version" for c in table.columns):
            scope = scopes.get(table.name)
            cond, params = scope.predicate(table) if scope is not None else (sql.SQL("true"), {})
            conn.execute(
                sql.SQL("UPDATE {} AS t SET version = t.version WHERE {}").format(
                    sql.Identifier(schema, table.name), cond
                ),
                params,
            )


def _disable_triggers_op(live: Schema, tables: Sequence[str]) -> Op[list[tuple[str, str]]]:
    rows = yield Step(
        """
        SELECT c.relname::text, tg.tgname::text
        FROM pg_trigger AS tg
        JOIN pg_class AS c ON c.oid = tg.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname::text = ANY(%s::text[]) AND NOT tg.tgisinternal
          AND tg.tgenabled <> 'D'
        ORDER BY 1, 2
        """,
        (live.name, TextArray(tables)),
    )
    out = [(str(t), str(g)) for t, g in rows]
    for table, trigger in out:
        yield Step(
            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
                sql.Identifier(live.name, table), sql.Identifier(trigger)
            ),
            fetch="none",
        )
    return [(f"{live.name}\x00{t}", g) for t, g in out]


def _enable_triggers_op(disabled: Sequence[tuple[str, str]]) -> Op[None]:
    for qualified, trigger in disabled:
        schema, table = qualified.split("\x00")
        yield Step(
            sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(
                sql.Identifier(schema, table), sql.Identifier(trigger)
            ),
            fetch="none",
        )


class _Check:
    """Refuses a row outside its archive's scope for ``table`` (``keep`` None: all are in)."""

    __slots__ = ("keep", "table")

    def __init__(self, table: str, keep: RowFilter | None) -> None:
        self.table = table
        self.keep = keep

    def refuse(self, part: PartInfo, number: int) -> ArchiveContentError:
        return ArchiveContentError(
            f"row {number} of part {part.name} lies outside the scope its archive declares for "
            f"table {self.table} (another tenant, thread or user): refusing the restore; "
            "nothing was written"
        )


_NO_CHECK = _Check("", None)


def _copy_parts(
    conn: psycopg.Connection[Any],
    reader: ArchiveReader,
    parts: Sequence[PartInfo],
    target: sql.Composable,
    columns: Sequence[str],
    tick: Callable[[int], None],
    check: _Check,
) -> int:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    keep = check.keep
    width = len(columns)
    written = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        pending = 0
        for part in parts:
            count = 0
            for line in reader.part_lines(part):
                count += 1
                row = parse_row(line, width, part.name)
                if keep is not None and not keep(row):
                    raise check.refuse(part, count)
                copy.write_row(row)
                pending += 1
                if pending == 5000:
                    written += pending
                    tick(pending)
                    pending = 0
            if count != part.rows:
                raise ArchiveIntegrityError(
                    f"part {part.name} holds {count} rows; its manifest says {part.rows}"
                )
        written += pending
        tick(pending)
    return written


def _via_staging(
    conn: psycopg.Connection[Any],
    readers: Sequence[ArchiveReader],
    schema: str,
    table: Table,
    source: ArchivedTable,
    number: int,
    tick: Callable[[int], None],
    mode: str,
    filters: Mapping[tuple[str, int], RowFilter | None],
) -> tuple[int, int]:
    """Apply the chain to a staging table, then move it in; returns (written, staged)."""
    stage = sql.Identifier(f"haive_restore_stage_{number}")
    delta = sql.Identifier(f"haive_restore_delta_{number}")
    keys = sql.Identifier(f"haive_restore_keys_{number}")
    target = sql.Identifier(schema, table.name)
    columns = source.data_columns
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    pk = [sql.Identifier(c) for c in source.primary_key]
    pk_list = sql.SQL(", ").join(pk)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
            stage, target
        )
    )
    if pk:
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(stage, pk_list))
    non_key = [c for c in columns if c not in source.primary_key]
    upsert: sql.Composable = (
        sql.SQL("DO UPDATE SET {}").format(
            sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in non_key
            )
        )
        if non_key
        else sql.SQL("DO NOTHING")
    )
    for position, (index, parts, key_parts) in enumerate(source.sources):
        check = _Check(table.name, filters[table.name, index])
        if position == 0 or not pk:
            _copy_parts(conn, readers[index], parts, stage, columns, tick, check)
        else:
            conn.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DROP").format(
                    delta, stage
                )
            )
            _copy_parts(conn, readers[index], parts, delta, columns, tick, check)
            conn.execute(
                sql.SQL("INSERT INTO {s} ({c}) SELECT {c} FROM {d} ON CONFLICT ({k}) {u}").format(
                    s=stage, c=cols, d=delta, k=pk_list, u=upsert
                )
            )
            conn.execute(sql.SQL("TRUNCATE {}").format(delta))
        if key_parts is not None and pk:
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DROP AS "
                    "SELECT {} FROM {} WITH NO DATA"
                ).format(keys, pk_list, stage)
            )
            _copy_parts(
                conn,
                readers[index],
                key_parts,
                keys,
                source.primary_key,
                lambda n: None,
                _NO_CHECK,
            )
            conn.execute(
                sql.SQL(
                    "DELETE FROM {s} AS s WHERE NOT EXISTS "
                    "(SELECT 1 FROM {k} AS k WHERE ({kc}) = ({sc}))"
                ).format(
                    s=stage,
                    k=keys,
                    kc=sql.SQL(", ").join(sql.SQL("k.{}").format(c) for c in pk),
                    sc=sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in pk),
                )
            )
            conn.execute(sql.SQL("TRUNCATE {}").format(keys))
    staged_row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()
    staged = int(staged_row[0]) if staged_row else 0
    overriding: sql.Composable = (
        sql.SQL(" OVERRIDING SYSTEM VALUE")
        if any((c := table.column(n)) is not None and c.identity == "a" for n in columns)
        else sql.SQL("")
    )
    if mode == "merge" and pk:
        conflict: sql.Composable = sql.SQL(" ON CONFLICT ({}) {}").format(pk_list, upsert)
    elif mode == "skip":
        conflict = sql.SQL(" ON CONFLICT DO NOTHING")
    else:
        conflict = sql.SQL("")
    cur = conn.execute(
        sql.SQL("INSERT INTO {t} ({c}){o} SELECT {c} FROM {s}{conflict}").format(
            t=target, c=cols, o=overriding, s=stage, conflict=conflict
        )
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    return max(cur.rowcount, 0), staged


def _advance_sequences(conn: psycopg.Connection[Any], schema: str, table: Table) -> None:
    for col in table.columns:
        if col.identity is None and not (col.default or "").startswith("nextval("):
            continue
        conn.execute(
            sql.SQL(
                "SELECT setval(s::regclass, greatest(m, 1), m IS NOT NULL) FROM ("
                "SELECT pg_get_serial_sequence(%s, %s) AS s, (SELECT max({c}) FROM {t}) AS m"
                ") AS x WHERE s IS NOT NULL"
            ).format(c=sql.Identifier(col.name), t=sql.Identifier(schema, table.name)),
            (f"{schema}.{table.name}", col.name),
        )


def _audit_restore(
    conn: psycopg.Connection[Any], live: Schema, schema: str, report: RestoreReport
) -> None:
    """One RESTORE entry per restored table, when the target's audit log is enabled."""
    if live.table("audit_log") is None:
        return
    for table, rows in report.tables.items():
        run(
            conn,
            record_op(
                schema,
                operation="RESTORE",
                table=table,
                object_key={"archives": report.archives, "rows": rows},
                only_if_enabled=True,
            ),
        )
