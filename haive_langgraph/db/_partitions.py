"""Hash partitioning of the tables with the most rows, chosen per deployment.

A component names the tables a deployment may partition and the leading key
columns to hash (:class:`PartitionKey`), for instance the checkpointer's
``checkpoints`` by ``(tenant_id, thread_id)``. ``haive-lg migrate
--partitions N`` (``migrate_op(..., partitions=N)``) then creates each of
them ``PARTITION BY HASH`` with N partitions ``<table>_p0`` ...
``<table>_p<N-1>``, on a fresh schema only.

The migrations themselves do not change: the runner rewrites a declared
table's ``CREATE TABLE`` statement as it applies it (:func:`expand`), and
checksums cover the statement as written, so a partitioned and a plain
deployment record the same checksums and take the same later migrations.
The partition count is recorded where it cannot drift from the truth: the
catalog (:data:`LAYOUT`). A schema whose tables are partitioned keeps that
layout for tables later migrations add, without ``--partitions``.

Partitioned parents cannot carry storage parameters; a ``WITH (...)`` after
the column list moves to the partitions. Every unique constraint and unique
index of a partitioned table must include the hashed columns, which
:class:`PartitionKey` checks when the component is declared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from haive_langgraph.errors import ConfigurationError, MigrationError

MAX_PARTITIONS = 1024

# The checkpoint write tells a new row from a rewritten one by `xmax = 0`;
# a partitioned table has no system columns to return, and PostgreSQL 18 is
# the first with `RETURNING old.*`, which replaces it.
PARTITIONS_MIN_SERVER_VERSION = 180000

_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_CREATE = re.compile(r"\s*CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+\{schema\}\.(\w+)\s*\(", re.I)
_UNIQUE_INDEX = re.compile(
    r"\s*CREATE\s+UNIQUE\s+INDEX\b.*?\bON\s+\{schema\}\.(\w+)\s*(?:USING\s+\w+\s*)?\(([^)]*)\)",
    re.I | re.S,
)
_KEY_CLAUSE = re.compile(r"\b(PRIMARY\s+KEY|UNIQUE)\s*\(([^)]*)\)", re.I)
_WITH = re.compile(r"\s*WITH\s*\(.*\)\s*", re.I | re.S)

# The server version, and every plain and partitioned table of a schema
# that is not itself a partition: kind ('r' plain, 'p' partitioned),
# strategy ('h' hash) and partition count. One row with NULLs when the
# schema has no table.
LAYOUT = """
SELECT current_setting('server_version_num')::int, t.relname, t.relkind, t.partstrat, t.parts
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT c.relname::text AS relname, c.relkind::text AS relkind,
           pt.partstrat::text AS partstrat,
           (SELECT count(*) FROM pg_inherits AS i WHERE i.inhparent = c.oid)::int AS parts
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN pg_partitioned_table AS pt ON pt.partrelid = c.oid
    WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
) AS t ON true
"""


@dataclass(frozen=True, slots=True)
class PartitionKey:
    """A table deployments may hash-partition, and the leading key columns hashed.

    Attributes:
        table: The table (created by a ``CREATE TABLE IF NOT EXISTS
            {schema}.<table> (...)`` statement of the same component).
        columns: Leading columns of its primary key, e.g.
            ``("tenant_id", "thread_id")``: a thread's rows share a partition,
            and a query naming tenant and thread reads only that partition.
    """

    table: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in (self.table, *self.columns):
            if not _NAME.fullmatch(name):
                raise ConfigurationError(f"not a plain lower-case identifier: {name!r}")
        if not self.columns:
            raise ConfigurationError(f"partition key of {self.table} has no columns")


def _split_create(statement: str) -> tuple[str, str, str] | None:
    """``(head through the column list, column list body, tail)`` of a CREATE TABLE."""
    match = _CREATE.match(statement)
    if match is None:
        return None
    depth, i, quoted = 1, match.end(), False
    while i < len(statement) and depth:
        ch = statement[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        i += 1
    if depth:
        return None
    return statement[:i], statement[match.end() : i - 1], statement[i:]


def _columns(text: str) -> list[str]:
    return [c.strip().strip('"').lower() for c in text.split(",") if c.strip()]


def check_partition_keys(
    name: str, keys: Sequence[PartitionKey], statements: Iterable[str]
) -> None:
    """Check a component's declared partition keys against its statements.

    Raises:
        ConfigurationError: naming the table and what stops it from being
            partitioned by its key.
    """
    statements = list(statements)
    for key in keys:
        creates = [s for s in statements if (m := _CREATE.match(s)) and m.group(1) == key.table]
        where = f"component {name!r}, partitioned table {key.table!r}"
        if len(creates) != 1:
            raise ConfigurationError(
                f"{where}: expected one 'CREATE TABLE IF NOT EXISTS {{schema}}.{key.table} (...)' "
                f"statement, found {len(creates)}"
            )
        split = _split_create(creates[0])
        if split is None:
            raise ConfigurationError(f"{where}: unbalanced parentheses in its CREATE TABLE")
        _, body, tail = split
        if tail.strip() and not _WITH.fullmatch(tail):
            raise ConfigurationError(
                f"{where}: only a WITH (...) clause may follow the column list, got {tail.strip()!r}"
            )
        found_pk = False
        for kind, cols in _KEY_CLAUSE.findall(body):
            columns = _columns(cols)
            if kind.upper().startswith("PRIMARY"):
                found_pk = True
                if tuple(columns[: len(key.columns)]) != key.columns:
                    raise ConfigurationError(
                        f"{where}: its primary key ({', '.join(columns)}) must start with the "
                        f"partition key ({', '.join(key.columns)})"
                    )
            elif not set(key.columns) <= set(columns):
                raise ConfigurationError(
                    f"{where}: UNIQUE ({', '.join(columns)}) must include the partition key"
                )
        if not found_pk:
            raise ConfigurationError(f"{where}: needs a PRIMARY KEY (...) clause")
        for statement in statements:
            m = _UNIQUE_INDEX.match(statement)
            if m and m.group(1) == key.table and not set(key.columns) <= set(_columns(m.group(2))):
                raise ConfigurationError(
                    f"{where}: unique index on ({m.group(2).strip()}) must include the "
                    "partition key"
                )


def creates_partitionable(statement: str, keys: Sequence[PartitionKey]) -> bool:
    """Whether ``statement`` creates one of the tables ``keys`` declare."""
    match = _CREATE.match(statement)
    return match is not None and any(k.table == match.group(1) for k in keys)


def expand(statement: str, keys: Sequence[PartitionKey], partitions: int | None) -> list[str]:
    """The statements to run for one migration statement under a partition count.

    A declared table's ``CREATE TABLE`` becomes the partitioned parent and
    its partitions; everything else is returned unchanged.
    """
    if not partitions or not keys:
        return [statement]
    match = _CREATE.match(statement)
    key = next((k for k in keys if match and match.group(1) == k.table), None)
    split = _split_create(statement) if key else None
    if key is None or split is None:
        return [statement]
    head, _, tail = split
    options = tail.strip()
    out = [f"{head}\nPARTITION BY HASH ({', '.join(key.columns)})"]
    for i in range(partitions):
        out.append(
            f"CREATE TABLE IF NOT EXISTS {{schema}}.{key.table}_p{i} "
            f"PARTITION OF {{schema}}.{key.table} "
            f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
            + (f" {options}" if options else "")
        )
    return out


def check_count(partitions: int) -> int:
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ConfigurationError(f"partitions must be an integer, got {partitions!r}")
    if not 2 <= partitions <= MAX_PARTITIONS:
        raise ConfigurationError(
            f"partitions must be between 2 and {MAX_PARTITIONS}, got {partitions}"
        )
    return partitions


def choose_partitions(
    schema: str,
    keys: Sequence[PartitionKey],
    rows: Sequence[Sequence[object]],
    requested: int | None,
) -> int | None:
    """The partition count for tables created now, from the request and the catalog.

    Args:
        schema: The schema (for messages).
        keys: Partitionable tables of the components being migrated.
        rows: :data:`LAYOUT` rows of the schema.
        requested: ``--partitions``, or None to keep the schema's layout.

    Raises:
        MigrationError: partitions are requested on a schema that already
            has a partitionable table unpartitioned, or partitioned with
            another count; or the server is too old.
    """
    version = int(str(rows[0][0])) if rows else None
    kinds = {str(r[1]): (str(r[2]), r[3], int(str(r[4]))) for r in rows if r[1] is not None}
    counts = {count for kind, strat, count in kinds.values() if kind == "p" and strat == "h"}
    if requested is not None:
        plain = sorted(k.table for k in keys if kinds.get(k.table, ("", None, 0))[0] == "r")
        if plain:
            raise MigrationError(
                f"schema {schema!r} already has {', '.join(plain)} unpartitioned; "
                "partitions can only be chosen for a fresh schema. Migrate into a new schema "
                "(--schema) with --partitions and copy the data over, or leave out --partitions"
            )
        if counts - {requested}:
            raise MigrationError(
                f"schema {schema!r} is already hash-partitioned into "
                f"{', '.join(map(str, sorted(counts)))} partitions, not {requested}"
            )
        chosen: int | None = requested
    elif len(counts) > 1:
        raise MigrationError(
            f"schema {schema!r} mixes hash partition counts ({', '.join(map(str, sorted(counts)))}); "
            "pass --partitions to say which new tables get"
        )
    else:
        chosen = next(iter(counts), None)
    if chosen and version is not None and version < PARTITIONS_MIN_SERVER_VERSION:
        raise MigrationError(
            "the hash-partitioned layout needs PostgreSQL 18 or later (partitioned tables "
            f"have no xmax to return; 18 returns old.* instead); this server is {version}"
        )
    return chosen
