"""Encryption keys in the database: key rotation, tenant keys, crypto-shredding.

* :func:`rotate_keys` re-encrypts every stored frame that is not under its
  tenant's current primary key, in batches, each batch in its own
  transaction with its resume point, so an interrupted rotation continues
  where it stopped. Rows are rewritten with a compare-and-set on the old
  frame: safe while the application writes (new writes already use the new
  primary key).
* :class:`PostgresTenantKeyStore` keeps tenants' own keys, wrapped by the
  global keys, in the ``tenant_keys`` table (the codec never stores key
  material unwrapped).
* :func:`forget_tenant_key` crypto-shreds a tenant: its keys are destroyed,
  after which none of its rows can be decrypted, by anyone, in any copy.

``haive-lg keys rotate|status|forget-tenant`` drive these from the shell.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from haive_langgraph.checkpointers._values import SEALED, body_context, metadata_context
from haive_langgraph.codec import (
    HaiveCodec,
    KeyRing,
    Kind,
    RowContext,
    TenantKeyRecord,
    WrappedKey,
)
from haive_langgraph.db import (
    Component,
    ConnectionSource,
    Migration,
    Op,
    PersistenceConfig,
    Step,
    migrate_op,
    validate_identifier,
)
from haive_langgraph.db._arrays import BigintArray, ByteaArray, TextArray
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.stores._values import row_context as store_row_context

__all__ = [
    "COMPONENT",
    "PostgresTenantKeyStore",
    "RotationReport",
    "forget_tenant_key",
    "frames_by_key",
    "rotate_keys",
]

COMPONENT = Component(
    name="keys",
    migrations=(
        Migration(
            "tenant keys and key rotation progress",
            (
                """
                CREATE TABLE IF NOT EXISTS {schema}.tenant_keys (
                    tenant_id  text COLLATE "C" NOT NULL PRIMARY KEY,
                    keys       jsonb NOT NULL DEFAULT '[]',
                    destroyed  boolean NOT NULL DEFAULT false,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                """
                CREATE TABLE IF NOT EXISTS {schema}.key_rotation (
                    table_name text COLLATE "C" NOT NULL PRIMARY KEY,
                    cursor     jsonb,
                    rewritten  bigint NOT NULL DEFAULT 0,
                    started_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """,
            ),
        ),
    ),
)


# -- tenant keys ------------------------------------------------------------------


def _record_json(record: TenantKeyRecord) -> list[dict[str, str]]:
    return [
        {
            "key_id": k.key_id,
            "wrapping_key_id": k.wrapping_key_id,
            "blob": base64.b64encode(k.blob).decode("ascii"),
        }
        for k in record.keys
    ]


class PostgresTenantKeyStore:
    """Tenant keys, wrapped by the global keys, in ``{schema}.tenant_keys``.

    Implements the codec's ``TenantKeyStore`` protocol. Pass it to
    ``KeyRing(..., tenant_store=store)`` (or ``KeyRing.from_env(tenant_store=...)``).

    Args:
        conn: A DSN (a small pool is opened), a psycopg connection or pool.
        schema: Schema of the table (default from ``HAIVE_SCHEMA``: ``haive``).
    """

    def __init__(
        self,
        conn: str | Connection[Any] | ConnectionPool[Any],
        *,
        schema: str | None = None,
        config: PersistenceConfig | None = None,
    ) -> None:
        config = config or PersistenceConfig()
        self.schema = validate_identifier(schema or config.schema_name, what="schema name")
        self._source = ConnectionSource(conn, config=config)
        self._table = sql.Identifier(self.schema, "tenant_keys")

    def setup(self) -> None:
        """Create the table (idempotent)."""
        self._source.run(lambda: migrate_op([COMPONENT], self.schema), transaction=True)

    def close(self) -> None:
        self._source.close()

    def load(self, tenant_id: str) -> TenantKeyRecord | None:
        def op() -> Op[Any]:
            row = yield Step(
                sql.SQL("SELECT keys, destroyed FROM {} WHERE tenant_id = %s").format(self._table),
                (tenant_id,),
                fetch="one",
            )
            return row

        row = self._source.run(op, read=True)
        if row is None:
            return None
        keys, destroyed = row
        return TenantKeyRecord(
            keys=tuple(
                WrappedKey(k["key_id"], k["wrapping_key_id"], base64.b64decode(k["blob"]))
                for k in keys
            ),
            destroyed=bool(destroyed),
        )

    def save(self, tenant_id: str, record: TenantKeyRecord) -> None:
        def op() -> Op[None]:
            yield Step(
                sql.SQL(
                    "INSERT INTO {} (tenant_id, keys, destroyed) VALUES (%s, %s, %s) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET keys = excluded.keys, "
                    "destroyed = excluded.destroyed, updated_at = now()"
                ).format(self._table),
                (tenant_id, Jsonb(_record_json(record)), record.destroyed),
                fetch="none",
            )

        self._source.run(op)

    def destroy(self, tenant_id: str) -> int:
        def op() -> Op[int]:
            row = yield Step(
                sql.SQL(
                    "INSERT INTO {t} AS k (tenant_id, keys, destroyed) VALUES (%s, '[]', true) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET keys = '[]', destroyed = true, "
                    "updated_at = now() "
                    "RETURNING (SELECT jsonb_array_length(o.keys) FROM {t} AS o "
                    "WHERE o.tenant_id = %s)"
                ).format(t=self._table),
                (tenant_id, tenant_id),
                fetch="one",
            )
            return int(row[0] or 0) if row else 0

        return self._source.run(op, transaction=True)


def forget_tenant_key(keyring: KeyRing, tenant_id: str) -> int:
    """Crypto-shred ``tenant_id``: destroy its keys; its rows become unreadable.

    The keyring must have a tenant store (e.g. :class:`PostgresTenantKeyStore`),
    so the destruction is permanent and seen by every process.

    Returns:
        How many keys were destroyed.
    """
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ConfigurationError("forget_tenant_key needs a non-empty tenant id")
    return keyring.forget_tenant(tenant_id)


# -- key rotation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FramedTable:
    """A table whose rows hold codec frames, and how to rotate them.

    Attributes:
        name: Table name (in the schema).
        key_columns: Primary key columns and their types (``text``,
            ``bytea``, ``bigint`` or ``text[]``), in order; the scan's cursor.
        context: Builds a frame's row context from the key values (and, for
            a JSON column, the JSON key the sealed value sits under).
        frame_column: The bytea column holding one frame per row.
        json_column: Or: a JSONB column whose values may be sealed frames.
        extra_columns: Columns read along and passed to ``context`` after
            the key values (what a frame is bound to besides its key).
        label: Name of this entry in reports and the progress table
            (default: the table's name; two entries may share a table).
    """

    name: str
    key_columns: tuple[tuple[str, str], ...]
    context: Callable[..., RowContext]
    frame_column: str | None = None
    json_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.name


def _blob_context(tenant: str, family: str, key: bytes) -> RowContext:
    return RowContext(tenant, family, Kind.BLOB, bytes(key))


def _metadata_context(
    tenant: str, thread: str, ns: str, checkpoint_id: str, family: str, json_key: str
) -> RowContext:
    return metadata_context(tenant, family, ns, checkpoint_id, json_key)


def _body_context(tenant: str, thread: str, ns: str, checkpoint_id: str, family: str) -> RowContext:
    return body_context(tenant, family, ns, checkpoint_id)


def _message_context(tenant: str, conversation: str, seq: int) -> RowContext:
    return RowContext(tenant, conversation, Kind.MESSAGE, "messages")


def _details_context(tenant: str, conversation: str) -> RowContext:
    return RowContext(tenant, conversation, Kind.METADATA, "details")


def _store_context(tenant: str, namespace: list[str], key: str) -> RowContext:
    return store_row_context(tenant, tuple(namespace), key)


FRAMED_TABLES: list[FramedTable] = [
    FramedTable(
        "blobs",
        (("tenant_id", "text"), ("family_id", "text"), ("key", "bytea")),
        _blob_context,
        frame_column="data",
    ),
    FramedTable(
        "checkpoints",
        (
            ("tenant_id", "text"),
            ("thread_id", "text"),
            ("checkpoint_ns", "text"),
            ("checkpoint_id", "text"),
        ),
        _metadata_context,
        json_column="metadata",
        extra_columns=("family_id",),
    ),
    FramedTable(
        "checkpoints",
        (
            ("tenant_id", "text"),
            ("thread_id", "text"),
            ("checkpoint_ns", "text"),
            ("checkpoint_id", "text"),
        ),
        _body_context,
        frame_column="checkpoint",
        extra_columns=("family_id",),
        label="checkpoint_bodies",
    ),
    FramedTable(
        "conversation_messages",
        (("tenant_id", "text"), ("conversation_id", "text"), ("seq", "bigint")),
        _message_context,
        frame_column="body",
    ),
    FramedTable(
        "conversations",
        (("tenant_id", "text"), ("conversation_id", "text")),
        _details_context,
        frame_column="details",
    ),
    FramedTable(
        "store_items",
        (("tenant_id", "text"), ("namespace", "text[]"), ("key", "text")),
        _store_context,
        frame_column="value",
    ),
]


@dataclass(slots=True)
class RotationReport:
    """Rows scanned and rewritten per table."""

    scanned: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)
    resumed: dict[str, bool] = field(default_factory=dict)

    @property
    def total_rewritten(self) -> int:
        return sum(self.rewritten.values())


Progress = Callable[[str, int, int], None]  # table, rows scanned so far, rows rewritten so far


def _cursor_out(values: Sequence[Any]) -> list[str]:
    return [
        "b" + base64.b64encode(bytes(v)).decode()
        if isinstance(v, bytes | memoryview)
        else f"i{v}"
        if isinstance(v, int)
        else "j" + json.dumps(list(v))
        if isinstance(v, list)
        else "s" + str(v)
        for v in values
    ]


def _cursor_in(values: Sequence[str]) -> list[Any]:
    return [
        base64.b64decode(v[1:])
        if v[0] == "b"
        else int(v[1:])
        if v[0] == "i"
        else json.loads(v[1:])
        if v[0] == "j"
        else v[1:]
        for v in values
    ]


def _array_literal(values: Sequence[str]) -> str:
    """A ``text[]`` value as its input literal (a text parameter cast on the server)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _reencoded(
    table: FramedTable, codec: HaiveCodec, pk: tuple[Any, ...], value: Any
) -> Any | None:
    """``pk``: the key values, then the extra columns."""
    """The row's value with its frames under the current keys, or None if unchanged."""
    tenant = str(pk[0])
    if value is None:
        return None  # a nullable frame column with nothing in it
    if table.frame_column is not None:
        frame = bytes(value)
        if not codec.needs_reencrypt(frame, tenant):
            return None
        return codec.reencode(frame, table.context(*pk))
    changed = False
    updated = dict(value)
    for json_key, item in value.items():
        if isinstance(item, dict) and len(item) == 1 and SEALED in item:
            frame = base64.b64decode(item[SEALED])
            if codec.needs_reencrypt(frame, tenant):
                new = codec.reencode(frame, table.context(*pk, json_key))
                updated[json_key] = {SEALED: base64.b64encode(new).decode("ascii")}
                changed = True
    return Jsonb(updated) if changed else None


def _batch_op(
    schema: str, table: FramedTable, codec: HaiveCodec, batch_size: int
) -> Op[tuple[int, int, bool]]:
    """One batch of one table, in one transaction: (scanned, rewritten, finished)."""
    ident = sql.Identifier(schema, table.name)
    progress_table = sql.Identifier(schema, "key_rotation")
    names = [c for c, _ in table.key_columns]
    keys = sql.SQL(", ").join(map(sql.Identifier, names))
    column = sql.Identifier(table.frame_column or table.json_column or "")
    state = yield Step(
        sql.SQL("SELECT cursor FROM {} WHERE table_name = %s FOR UPDATE").format(progress_table),
        (table.key,),
        fetch="one",
    )
    cursor = state[0] if state else None
    where: sql.Composable = sql.SQL("")
    params: list[Any] = []
    if cursor is not None:
        where = sql.SQL("WHERE ({}) > ({})").format(
            keys, sql.SQL(", ").join(sql.Placeholder() * len(names))
        )
        params = _cursor_in(cursor)
    selected = sql.SQL(", ").join(map(sql.Identifier, [*names, *table.extra_columns]))
    rows = yield Step(
        sql.SQL("SELECT {sel}, {col} FROM {t} {where} ORDER BY {keys} LIMIT %s").format(
            sel=selected, keys=keys, col=column, t=ident, where=where
        ),
        [*params, batch_size],
    )
    changes = [
        (tuple(row[:-1]), row[-1], fresh)
        for row in rows
        if (fresh := _reencoded(table, codec, tuple(row[:-1]), row[-1])) is not None
    ]
    rewritten = 0
    if changes:
        # One statement per batch, compare-and-set on the old value: a row
        # changed since it was read (rewritten by a writer, with the new
        # keys) is left alone and not counted.
        arrays: list[ByteaArray | TextArray | BigintArray] = []
        for i, (_, kind) in enumerate(table.key_columns):
            values = [c[0][i] for c in changes]
            arrays.append(
                ByteaArray(map(bytes, values))
                if kind == "bytea"
                else BigintArray(values)
                if kind == "bigint"
                else TextArray(map(_array_literal, values))
                if kind == "text[]"
                else TextArray(values)
            )
        old: ByteaArray | TextArray
        new: ByteaArray | TextArray
        if table.frame_column is not None:
            old = ByteaArray(bytes(c[1]) for c in changes)
            new = ByteaArray(c[2] for c in changes)
            cast = "bytea"
        else:
            old = TextArray(json.dumps(c[1]) for c in changes)
            new = TextArray(json.dumps(c[2].obj) for c in changes)
            cast = "jsonb"
        cols = [sql.Identifier(f"k{i}") for i in range(len(names))]
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{} = u.{}::text[]" if kind == "text[]" else "t.{} = u.{}").format(
                sql.Identifier(n), c
            )
            for (n, kind), c in zip(table.key_columns, cols, strict=True)
        )
        count = yield Step(
            sql.SQL(
                "UPDATE {t} AS t SET {col} = u.new::{cast} "
                "FROM unnest({arrays}, %s, %s) AS u({cols}, old, new) "
                "WHERE {match} AND t.{col} = u.old::{cast}"
            ).format(
                t=ident,
                col=column,
                cast=sql.SQL(cast),
                arrays=sql.SQL(", ").join(sql.Placeholder() * len(arrays)),
                cols=sql.SQL(", ").join(cols),
                match=match,
            ),
            [*arrays, old, new],
            fetch="rowcount",
        )
        rewritten = int(count)
    finished = len(rows) < batch_size
    if finished:
        yield Step(
            sql.SQL("DELETE FROM {} WHERE table_name = %s").format(progress_table),
            (table.key,),
            fetch="none",
        )
    else:
        yield Step(
            sql.SQL(
                "INSERT INTO {p} (table_name, cursor, rewritten) VALUES (%s, %s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET cursor = excluded.cursor, "
                "rewritten = {p}.rewritten + excluded.rewritten, updated_at = now()"
            ).format(p=progress_table),
            (table.key, Jsonb(_cursor_out(rows[-1][: len(names)])), rewritten),
            fetch="none",
        )
    return len(rows), rewritten, finished


def _existing_tables(source: ConnectionSource, schema: str) -> set[str]:
    def op() -> Op[set[str]]:
        rows = yield Step(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
            (schema, TextArray(t.name for t in FRAMED_TABLES)),
        )
        return {str(r[0]) for r in rows}

    return source.run(op, read=True)


def rotate_keys(
    conn: str | Connection[Any] | ConnectionPool[Any],
    codec: HaiveCodec,
    *,
    schema: str | None = None,
    batch_size: int = 500,
    tables: Sequence[str] | None = None,
    progress: Progress | None = None,
    config: PersistenceConfig | None = None,
) -> RotationReport:
    """Re-encrypt every frame not under its tenant's current primary key.

    Run it after making the new key primary (first in ``HAIVE_ENCRYPTION_KEYS``)
    in the application and here; keep the old keys in the ring until it has
    finished, then remove them. Interrupted, it resumes from its last
    committed batch the next time it runs.

    Args:
        conn: DSN, connection or pool.
        codec: An encrypting codec whose key ring holds the new primary and the
            old keys.
        schema: Schema of the tables.
        batch_size: Rows per transaction.
        tables: Limit to these tables (default: every table holding frames).
        progress: Called after each batch with (table, scanned, rewritten).

    Returns:
        Rows scanned and rewritten per table.

    Raises:
        ConfigurationError: The codec does not encrypt.
    """
    if codec.keyring is None:
        raise ConfigurationError("rotate_keys needs an encrypting codec (a key ring)")
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    source = ConnectionSource(conn, config=config)
    report = RotationReport()
    try:
        source.run(lambda: migrate_op([COMPONENT], target), transaction=True)
        present = _existing_tables(source, target)
        for table in FRAMED_TABLES:
            if table.name not in present or (tables is not None and table.name not in tables):
                continue
            report.resumed[table.key] = _in_progress(source, target, table.key)
            scanned = rewritten = 0
            while True:
                n, w, done = source.run(
                    lambda table=table: _batch_op(target, table, codec, batch_size),  # type: ignore[misc]
                    transaction=True,
                )
                scanned += n
                rewritten += w
                if progress is not None:
                    progress(table.key, scanned, rewritten)
                if done:
                    break
            report.scanned[table.key] = scanned
            report.rewritten[table.key] = rewritten
    finally:
        source.close()
    return report


def _in_progress(source: ConnectionSource, schema: str, table: str) -> bool:
    def op() -> Op[bool]:
        row = yield Step(
            sql.SQL("SELECT cursor IS NOT NULL FROM {} WHERE table_name = %s").format(
                sql.Identifier(schema, "key_rotation")
            ),
            (table,),
            fetch="one",
        )
        return bool(row and row[0])

    return source.run(op, read=True)


def frames_by_key(
    conn: str | Connection[Any] | ConnectionPool[Any],
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> dict[str, dict[str, int]]:
    """How many frames each key id protects, per table (``None`` key: unencrypted)."""
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    source = ConnectionSource(conn, config=config)
    try:
        present = _existing_tables(source, target)

        def op() -> Op[dict[str, dict[str, int]]]:
            out: dict[str, dict[str, int]] = {}
            for table in FRAMED_TABLES:
                if table.name not in present or table.frame_column is None:
                    continue
                col = sql.Identifier(table.frame_column)
                rows = yield Step(
                    sql.SQL(
                        "SELECT CASE WHEN get_byte({c}, 3) & 2 = 2 "
                        "THEN convert_from(substring({c} from 6 for get_byte({c}, 4)), 'UTF8') "
                        "END, count(*) FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY 1"
                    ).format(c=col, t=sql.Identifier(target, table.name)),
                )
                out[table.key] = {
                    str(k) if k is not None else "(unencrypted)": int(n) for k, n in rows
                }
            return out

        return source.run(op, read=True)
    finally:
        source.close()
