"""Writing a backup: the snapshot, each table's rows as parts, the scope.

See :func:`haive_langgraph.ops.backup.backup`.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._migrations import MIGRATIONS_TABLE
from haive_langgraph.ops._archive import (
    MAX_PART_BYTES,
    ArchiveWriter,
    BackupError,
    PartBuilder,
    PartInfo,
)
from haive_langgraph.ops._schema import Schema
from haive_langgraph.ops._selection import TableScope


@dataclass(frozen=True, slots=True)
class BackupProgress:
    """One progress report.

    Attributes:
        phase: ``"backup"``, ``"verify"`` or ``"restore"``.
        table: The table being worked on.
        rows: Rows done so far (all tables); bytes for ``"verify"``.
        total: Rows (bytes) in all, when known.
    """

    phase: Literal["backup", "verify", "restore"]
    table: str
    rows: int
    total: int | None


ProgressCallback = Callable[[BackupProgress], None]


# Row versions written more than this many transactions before the backup
# cannot be told apart from future ones (32-bit xmin): take a full backup.
MAX_XID_SPAN = 1 << 31
_FETCH_ROWS = 5_000


# -- session settings ------------------------------------------------------------------------

# Text forms that read back exactly: hex bytea, ISO dates with offsets,
# shortest-exact floats, and no row-level security silently hiding rows
# (a role it applies to gets an error instead, as with pg_dump).
_SESSION = (
    "SET LOCAL bytea_output = 'hex'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL row_security = off",
)


# What a restore sets: input parsed as backup wrote it, and row-level security
# refusing (not hiding) rows, as for the backup.
RESTORE_SESSION = (
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL row_security = off",
)


def session_op(schema: str, settings: Sequence[str] = _SESSION) -> Op[None]:
    """Set the transaction's ``settings`` (default: the backup's text forms) and put
    ``schema`` first on the search path."""
    for statement in settings:
        yield Step(statement, fetch="none")
    # Catalog output relative to the schema: its names unqualified.
    yield Step(
        sql.SQL("SELECT set_config('search_path', %s, true)"),
        (sql.Identifier(schema).as_string(None),),
        fetch="none",
    )


# -- backup ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    xmin: int
    xmax: int
    server_version: str
    database: str
    database_oid: int
    system_identifier: str | None


def snapshot_op() -> Op[Snapshot]:
    row = yield Step(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
        "pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
        "current_setting('server_version'), current_database(), "
        "(SELECT oid FROM pg_database WHERE datname = current_database())::bigint, "
        "has_function_privilege('pg_control_system()', 'EXECUTE')",
        fetch="one",
    )
    system_id = None
    if row[5]:
        sid = yield Step("SELECT system_identifier::text FROM pg_control_system()", fetch="one")
        system_id = str(sid[0])
    return Snapshot(int(row[0]), int(row[1]), str(row[2]), str(row[3]), int(row[4]), system_id)


def components_op(schema: str) -> Op[dict[str, int]]:
    exists = yield Step(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{MIGRATIONS_TABLE}",), fetch="one"
    )
    if not exists[0]:
        return {}
    rows = yield Step(
        sql.SQL(
            "SELECT component, max(version) FROM {} GROUP BY component ORDER BY component"
        ).format(sql.Identifier(schema, MIGRATIONS_TABLE))
    )
    return {str(c): int(v) for c, v in rows}


def _text_row(columns: Sequence[str]) -> sql.Composable:
    """A row as a JSON array of its columns' text forms (ARRAY[]: no argument limit)."""
    if not columns:
        return sql.SQL("'[]'")
    return sql.SQL("array_to_json(ARRAY[{}]::text[])::text").format(
        sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in columns)
    )


def _xmin_filter(span: int, current_xmax: int) -> tuple[sql.Composable, dict[str, Any]]:
    """Row versions written at or after the base's snapshot xmin (see module docstring)."""
    # age = (current low 32 bits - row xmin) mod 2^32; the row is new when
    # current_xmax - age >= base_xmin, i.e. age <= span. Frozen and bootstrap
    # xids (< 3) are old.
    return (
        sql.SQL(
            "(t.xmin::text::bigint >= 3 AND "
            "((%(x_low)s::bigint - t.xmin::text::bigint) %% 4294967296 + 4294967296) "
            "%% 4294967296 <= %(x_span)s::bigint)"
        ),
        {"x_low": current_xmax & 0xFFFFFFFF, "x_span": span},
    )


class _PartSink:
    """Lines of one table into parts ``<prefix>-0001.jsonl.zst`` ... of bounded size."""

    def __init__(self, writer: ArchiveWriter, prefix: str, max_rows: int, max_bytes: int) -> None:
        self.writer = writer
        self.prefix = prefix
        self.builder = PartBuilder(max_rows, max_bytes, what=f"table {prefix.split('-', 1)[1]}")
        self.parts: list[PartInfo] = []
        self.rows = 0
        self.raw = 0

    def add(self, line: bytes) -> None:
        self.rows += 1
        if self.builder.add(line):
            self._flush()

    def _flush(self) -> None:
        data, rows, nbytes = self.builder.take()
        name = f"{self.prefix}-{len(self.parts) + 1:04d}.jsonl.zst"
        self.parts.append(self.writer.add_part(name, data, rows, nbytes))
        self.raw += nbytes

    def close(self) -> list[PartInfo]:
        if self.builder.rows or not self.parts:
            self._flush()
        return self.parts


class RowCounter:
    """Rows written so far by a backup or a restore (``phase``), reported to the
    progress callback."""

    def __init__(
        self,
        progress: ProgressCallback | None,
        total: int | None,
        phase: Literal["backup", "restore"] = "backup",
    ) -> None:
        self.progress = progress
        self.total = total
        self.phase = phase
        self.done = 0

    def advance(self, table: str, rows: int) -> None:
        self.done += rows
        if self.progress is not None:
            self.progress(BackupProgress(self.phase, table, self.done, self.total))


def _stream(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    params: Mapping[str, Any],
    sink: _PartSink,
    tick: Callable[[int], None] | None = None,
) -> None:
    with conn.cursor(name=f"haive_backup_{uuid.uuid4().hex[:8]}") as cur:
        cur.itersize = _FETCH_ROWS
        cur.execute(query, params)
        while rows := cur.fetchmany(_FETCH_ROWS):
            for (line,) in rows:
                sink.add(line.encode())
            if tick is not None:
                tick(len(rows))


def readonly_op() -> Op[None]:
    yield Step("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", fetch="none")


def check_base(base: Mapping[str, Any], snap: Snapshot, where: str) -> int:
    src = base["source"]
    if (
        src.get("system_identifier")
        and snap.system_identifier
        and src["system_identifier"] != snap.system_identifier
    ) or src.get("database_oid") != snap.database_oid:
        raise BackupError(
            f"{where!r} was taken on another server or database: an incremental backup can "
            "only continue a backup of the same database (take a full backup)"
        )
    base_xmin = int(base["snapshot"]["xmin"])
    span = snap.xmax - base_xmin
    if span < 0:
        raise BackupError(f"{where!r} is newer than this database's state (another server?)")
    if span >= MAX_XID_SPAN:
        raise BackupError(
            f"{where!r} is more than 2^31 transactions old: row versions since then cannot be "
            "identified reliably; take a full backup"
        )
    return span


def write_tables(
    conn: psycopg.Connection[Any],
    writer: ArchiveWriter,
    live: Schema,
    scopes: list[TableScope],
    span: int | None,
    snap: Snapshot,
    part_rows: int,
    part_bytes: int,
    progress: ProgressCallback | None,
) -> tuple[list[dict[str, Any]], int, int]:
    total_known = None
    if span is None and all(s.kind == "all" for s in scopes):
        total_known = sum(
            t.estimated_rows for t in live.tables if t.name in {s.table for s in scopes}
        )
    counter = RowCounter(progress, total_known)
    raw = 0
    out: list[dict[str, Any]] = []
    for index, scope in enumerate(scopes, start=1):
        table = live.table(scope.table)
        assert table is not None
        columns = [c.name for c in table.data_columns]
        cond, params = scope.predicate(table)
        incremental: sql.Composable = sql.SQL("true")
        if span is not None:
            incremental, xparams = _xmin_filter(span, snap.xmax)
            params = {**params, **xparams}
        query = sql.SQL("SELECT {row} FROM {table} AS t WHERE {cond} AND {inc}").format(
            row=_text_row(columns),
            table=sql.Identifier(live.name, table.name),
            cond=cond,
            inc=incremental,
        )
        sink = _PartSink(writer, f"parts/{index:04d}-{table.name}", part_rows, part_bytes)
        _stream(conn, query, params, sink, functools.partial(counter.advance, table.name))
        entry: dict[str, Any] = {
            "name": table.name,
            "columns": [c.as_dict() for c in table.columns],
            "data_columns": columns,
            "primary_key": list(table.primary_key),
            "scope": scope.kind,
            "rows": sink.rows,
            "parts": [p.as_dict() for p in sink.close()],
        }
        raw += sink.raw
        if span is not None and table.primary_key:
            # The keys present now, so a restore of the chain drops rows deleted since.
            keys = _PartSink(writer, f"parts/{index:04d}-{table.name}-keys", part_rows, part_bytes)
            cond, params = scope.predicate(table)
            _stream(
                conn,
                sql.SQL("SELECT {row} FROM {table} AS t WHERE {cond}").format(
                    row=_text_row(list(table.primary_key)),
                    table=sql.Identifier(live.name, table.name),
                    cond=cond,
                ),
                params,
                keys,
            )
            entry["key_rows"] = keys.rows
            entry["key_parts"] = [p.as_dict() for p in keys.close()]
            raw += keys.raw
        out.append(entry)
        counter.advance(table.name, 0)
    return out, counter.done, raw


def write_scope(
    writer: ArchiveWriter, scopes: list[TableScope], part_rows: int, part_bytes: int
) -> PartInfo:
    builder = PartBuilder(len(scopes) + 1, MAX_PART_BYTES + 1, what="the selection's scope")
    for scope in scopes:
        builder.add(json.dumps(scope.as_dict(), separators=(",", ":")).encode())
    data, rows, nbytes = builder.take()
    if nbytes > MAX_PART_BYTES:
        raise BackupError(
            f"the selection names too many values to record ({nbytes:,} bytes): select by "
            "tenant, or back up fewer threads or users per archive"
        )
    return writer.add_part("parts/scope.jsonl.zst", data, rows, nbytes)
