"""What restore accepts from an archive, checked before its rows are written.

An archive is data only. Restore creates tables from our own code (every
component's migrations, and the store's vector table from the store's own
definition) and never runs SQL an archive carries; then:

* **tables**: every archived table is one of :func:`~haive_langgraph.ops._schema.our_tables`;
* **columns**: every archived column exists in the target table with the same
  type, is not generated there, and the archive's primary key is the target's;
* **scope**: each archive's scope part gives every table of its manifest
  exactly one scope, of a shape its declared selection allows
  (:func:`check_scope`), and every row lies inside it (:func:`row_filter`,
  applied to each row as it is read, inside the restore's one transaction).

Each failure raises :class:`ArchiveContentError`; nothing is committed.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from psycopg import sql

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.ops._archive import (
    ArchiveContentError,
    ArchiveIntegrityError,
    ArchiveReader,
    BackupError,
    PartInfo,
)
from haive_langgraph.ops._archive_rows import parse_row
from haive_langgraph.ops._schema import TENANT_COLUMN, Column, Table, our_tables
from haive_langgraph.ops._selection import TableScope

RowFilter = Callable[[list[str | None]], bool]


class ArchivedTable:
    """One table as a chain of archives holds it."""

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = str(entry["name"])
        self.columns = [Column.from_dict(c) for c in entry["columns"]]
        self.data_columns = [str(c) for c in entry["data_columns"]]
        self.primary_key = [str(c) for c in entry["primary_key"]]
        self.rows = 0
        # (archive index, data parts, key parts) in chain order.
        self.sources: list[tuple[int, list[PartInfo], list[PartInfo] | None]] = []

    def add(self, index: int, entry: Mapping[str, Any], where: str) -> None:
        if [str(c) for c in entry["data_columns"]] != self.data_columns or [
            str(c) for c in entry["primary_key"]
        ] != self.primary_key:
            raise BackupError(
                f"{where} describes table {self.name} with other columns than the archive it "
                "continues: restore the full backup alone, or take a new full backup"
            )
        self.rows += int(entry["rows"])
        keys = entry.get("key_parts")
        self.sources.append(
            (
                index,
                [PartInfo.from_dict(p) for p in entry["parts"]],
                [PartInfo.from_dict(p) for p in keys] if keys is not None else None,
            )
        )


def plan_tables(readers: Sequence[ArchiveReader]) -> dict[str, ArchivedTable]:
    """The archived tables of a chain; refuses a table that is not ours."""
    ours = our_tables()
    archived: dict[str, ArchivedTable] = {}
    for index, reader in enumerate(readers):
        for entry in reader.manifest["tables"]:
            name = str(entry["name"])
            if name not in ours:
                raise ArchiveContentError(
                    f"{reader.where} holds a table {name!r}, which is not a haive-langgraph "
                    "table: restore creates and writes only the tables of our migrations; "
                    "nothing was written"
                )
            if name not in archived:
                archived[name] = ArchivedTable(entry)
            archived[name].add(index, entry, reader.where)
    return archived


def read_scopes(reader: ArchiveReader) -> dict[str, TableScope]:
    """The scope part of one archive: exactly one scope per table of its manifest."""
    part = PartInfo.from_dict(reader.manifest["scope_part"])
    kinds = {str(t["name"]): str(t["scope"]) for t in reader.manifest["tables"]}
    out: dict[str, TableScope] = {}
    count = 0
    for line in reader.part_lines(part):
        count += 1
        try:
            scope = TableScope.from_dict(json.loads(line))
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            raise ArchiveIntegrityError(f"part {part.name} holds an invalid scope: {exc}") from None
        if scope.table in out or kinds.get(scope.table) != scope.kind:
            raise ArchiveContentError(
                f"the scope part of {reader.where} does not match its manifest for table "
                f"{scope.table[:100]!r}: refusing it"
            )
        out[scope.table] = scope
    if count != part.rows:
        raise ArchiveIntegrityError(
            f"part {part.name} holds {count} rows; its manifest says {part.rows}"
        )
    if set(out) != set(kinds):
        raise ArchiveContentError(
            f"the scope part of {reader.where} gives no scope for "
            f"{', '.join(sorted(set(kinds) - set(out)))}: refusing it"
        )
    return out


def check_columns(table: Table, source: ArchivedTable, schema: str) -> None:
    """The target table takes the archived columns as they are."""
    archived_types = {c.name: c.type for c in source.columns}
    for name in source.data_columns:
        col = table.column(name)
        if col is None:
            raise ArchiveContentError(
                f"table {schema}.{table.name} has no column {name[:100]!r}, which the archive "
                "holds: the archive is of a newer or another schema (upgrade haive-langgraph "
                "here if it is newer); nothing was written"
            )
        if col.generated is not None:
            raise ArchiveContentError(
                f"column {schema}.{table.name}.{name} is generated in the target"
            )
        if archived_types.get(name) != col.type:
            raise ArchiveContentError(
                f"column {schema}.{table.name}.{name} is {col.type} in the target but "
                f"{archived_types.get(name)} in the archive"
            )
    if tuple(source.primary_key) != table.primary_key:
        raise ArchiveContentError(
            f"the archive gives table {table.name} the primary key {source.primary_key}; the "
            f"target's is {list(table.primary_key)}"
        )
    if table.has_tenant and TENANT_COLUMN not in source.data_columns:
        raise ArchiveContentError(f"the archive holds no {TENANT_COLUMN} for table {table.name}")


def check_scope(
    table: Table,
    scope: TableScope,
    columns: Sequence[str],
    selection: Mapping[str, Any],
    where: str,
) -> None:
    """The scope of ``table`` is one the archive's declared selection gives that table.

    ``selection`` is the manifest's summary (what ``verify`` shows): table
    patterns, how many tenants, which columns were selected by value, and
    whether tables without ``tenant_id`` were included.
    """

    def refuse(why: str) -> ArchiveContentError:
        return ArchiveContentError(
            f"{where} declares a {scope.kind} scope for table {table.name}, which {why}: "
            "refusing it; nothing was written"
        )

    name = table.name
    if not any(fnmatch.fnmatchcase(name, p) for p in selection["include"]) or any(
        fnmatch.fnmatchcase(name, p) for p in selection["exclude"]
    ):
        raise refuse("its selection's table patterns leave out")
    tenants, by_value = selection["tenants"], selection["where"]
    if not table.has_tenant:
        if scope.kind != "all" or not selection["global_tables"]:
            raise refuse("has no tenant_id and is backed up whole, only when asked")
        return
    if not by_value:
        wanted = "all" if tenants is None else "tenants"
        if scope.kind != wanted or (
            tenants is not None and len(set(scope.tenants or ())) != tenants
        ):
            raise refuse(f"its selection of {tenants} tenant(s) gives a {wanted} scope")
    elif scope.kind == "entities":
        if scope.column != table.entity:
            raise refuse(f"is keyed by {table.entity}, not {scope.column}")
    elif scope.kind == "shared":
        if not table.is_tenant_level:
            raise refuse("holds more than one row per tenant")
    elif scope.kind == "values":
        if scope.column not in by_value or (scope.tenants is None) != (tenants is None):
            raise refuse("its selection by value does not give")
        if tenants is not None and len(set(scope.tenants or ())) != tenants:
            raise refuse(f"its selection of {tenants} tenant(s) does not give")
    else:
        raise refuse("its selection by value does not give")
    needed = [TENANT_COLUMN] + ([scope.column] if scope.column is not None else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise refuse(f"the archive cannot be checked against: it holds no {', '.join(missing)}")


def row_filter(scope: TableScope, columns: Sequence[str]) -> RowFilter | None:
    """Whether a row (text values in ``columns`` order) lies in ``scope``; ``None``: all do.

    The archived text forms are the ``::text`` forms the scope's SQL predicate
    compares (:meth:`TableScope.predicate`), so this agrees with it.
    """
    if scope.kind == "all":
        return None
    at = {c: i for i, c in enumerate(columns)}
    t = at[TENANT_COLUMN]
    if scope.kind in ("tenants", "shared"):
        tenants = frozenset(scope.tenants or ())
        return lambda row: row[t] in tenants
    assert scope.column is not None
    c = at[scope.column]
    if scope.kind == "entities":
        pairs = frozenset(scope.pairs)
        return lambda row: (row[t], row[c]) in pairs
    values = frozenset(scope.values)
    if scope.tenants is not None:
        allowed = frozenset(scope.tenants)
        return lambda row: row[c] in values and row[t] in allowed
    return lambda row: row[c] in values


def archived_rows(
    reader: ArchiveReader, parts: Sequence[PartInfo], width: int
) -> Iterator[list[str | None]]:
    """The rows of some parts (each part's row count checked against its manifest)."""
    for part in parts:
        count = 0
        for line in reader.part_lines(part):
            count += 1
            yield parse_row(line, width, part.name)
        if count != part.rows:
            raise ArchiveIntegrityError(
                f"part {part.name} holds {count} rows; its manifest says {part.rows}"
            )


# -- tables no migration creates --------------------------------------------------------------


def vector_table_op(
    schema: str, readers: Sequence[ArchiveReader], archived: Mapping[str, ArchivedTable]
) -> Op[None]:
    """Create the store's vector table as ``store.setup()`` does, for the archived index.

    The index configuration is the archived ``store_vector_config`` row,
    taken as data: it must be one the store itself describes (checked by
    normalising it as a store's ``index=`` and comparing); the statements
    are the store's own (:func:`haive_langgraph.stores._sql.vector_ddl`).
    """
    from haive_langgraph.stores import _sql as S
    from haive_langgraph.stores._ops import text_config_op

    config = archived.get(S.VECTOR_CONFIG)
    described = None
    if config is not None and "name" in config.data_columns and "config" in config.data_columns:
        name_at, config_at = config.data_columns.index("name"), config.data_columns.index("config")
        for index, parts, _keys in config.sources:
            for row in archived_rows(readers[index], parts, len(config.data_columns)):
                if row[name_at] == "default":
                    described = row[config_at]
    if described is None:
        raise BackupError(
            f"the archive holds {S.VECTORS} but not the store_vector_config it was set up "
            f"with: run the store's setup() with its index configuration on schema {schema!r} "
            "first, then restore"
        )
    spec = vector_spec(described)
    # As setup() runs them: with the session's own search_path (the
    # extension and its types where the application would put them).
    yield Step("SET LOCAL search_path TO DEFAULT", fetch="none")
    if spec.text is not None:
        yield from text_config_op(spec.text.config)
    yield Step(S.CREATE_VECTOR_EXTENSION, fetch="none")
    for statement in S.vector_ddl(spec):
        yield Step(S.q(statement, schema), fetch="none", prepare=False)
    yield Step(
        "SELECT set_config('search_path', %s, true)",
        (sql.Identifier(schema).as_string(None),),
        fetch="none",
    )


def _no_embedding(texts: Sequence[str]) -> list[list[float]]:
    raise AssertionError("restore embeds nothing")


def vector_spec(described: str) -> Any:
    """The store's vector index spec for an archived ``store_vector_config`` value."""
    from haive_langgraph.stores._config import normalize_index

    def refuse(why: str) -> ArchiveContentError:
        return ArchiveContentError(
            f"the archived store_vector_config is not a vector index this store sets up ({why}): "
            "refusing it; nothing was written"
        )

    try:
        data = json.loads(described)
    except (ValueError, RecursionError):
        raise refuse("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise refuse("not an object with params")
    ann = {"kind": data.get("kind"), "vector_type": data.get("vector_type"), **data["params"]}
    index: dict[str, Any] = {
        "dims": data.get("dims"),
        "embed": _no_embedding,
        "distance_type": data.get("distance"),
        "ann_index_config": ann,
    }
    if "text_search" in data:
        text = data["text_search"]
        index["hybrid"] = {
            "text_search_config": text.get("config") if isinstance(text, dict) else text
        }
    try:
        _, spec = normalize_index(index)
    except (ConfigurationError, TypeError) as exc:
        raise refuse(str(exc)) from None
    if spec.describe() != data:
        raise refuse("it does not read back as itself")
    return spec
