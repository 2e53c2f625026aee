"""Key rotation one batch at a time, and counting frames by key (sans-I/O operations).

:func:`batch_op` rotates one batch of one :class:`FramedTable` entry in one
transaction, with its resume point; :func:`counts_op` counts an entry's
frames by tenant and key id for ``keys status``. ``ops/keys.py`` drives them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import sql
from psycopg.types.json import Jsonb

from haive_langgraph.checkpointers._sql import LOCK_CLASS_FAMILY
from haive_langgraph.checkpointers._values import SEALED, move_inline
from haive_langgraph.codec import HaiveCodec, KeyDestroyedError, KeyRing, frame_key_id
from haive_langgraph.db._arrays import BigintArray, ByteaArray, TextArray
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._features import FramedTable
from haive_langgraph.errors import CorruptDataError, DecryptionError, SerializationError
from haive_langgraph.ops._keys_sql import PROGRESS_TABLE

__all__ = ["BatchResult", "RotationPass", "batch_op", "counts_op", "progress_op"]

# At most this many messages about unreadable rows are kept per run.
MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class RotationPass:
    """What every batch of one rotation pass works with.

    Attributes:
        schema: Schema of the tables.
        codec: The codec whose keyring's primary key values are rewritten to.
        batch_size: Rows per batch (one transaction each).
        target: The key id this pass rewrites to (its resume points name it).
        serde: Serializer of checkpoint values (for inline values moved out).
    """

    schema: str
    codec: HaiveCodec
    batch_size: int
    target: str
    serde: SerializerProtocol


@dataclass(slots=True)
class BatchResult:
    """What one batch did."""

    scanned: int = 0
    rewritten: int = 0
    finished: bool = False
    shredded: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)


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


def _describe(table: FramedTable, pk: Sequence[Any]) -> str:
    names = [c for c, _ in table.key_columns]
    parts = (
        f"{n}={bytes(v).hex() if isinstance(v, bytes | memoryview) else v!r}"
        for n, v in zip(names, pk, strict=False)
    )
    return f"{table.name} row ({', '.join(parts)})"


def _shredded(keyring: KeyRing, tenant: str) -> bool:
    return False


def _json_text(payload: bytes) -> str | None:
    """``payload`` as JSON text PostgreSQL can compare as jsonb, or None."""
    try:
        text = payload.decode("utf-8")
        json.loads(text)
    except ValueError:
        return None
    return text if "\\u0000" not in text else None  # jsonb cannot hold it


def _reencoded(
    table: FramedTable, codec: HaiveCodec, pk: tuple[Any, ...], value: Any
) -> tuple[Any, str | None] | None:
    """The row's value with its frames under the current keys, or None if unchanged;
    and, for a frame that was plaintext, its payload as text (to clear plaintext copies).

    ``pk``: the key values, then the extra columns.
    """
    tenant = str(pk[0])
    if value is None:
        return None  # a nullable frame column with nothing in it
    if table.frame_column is not None:
        frame = bytes(value)
        if not codec.needs_reencrypt(frame, tenant):
            return None
        ctx = table.context(*pk)
        payload = codec.decode(frame, ctx)
        plain = None
        if table.copy_column is not None and frame_key_id(frame) is None:
            plain = _json_text(payload)
        return codec.encode(payload, ctx), plain
    changed = False
    updated = dict(value)
    for json_key, item in value.items():
        if isinstance(item, dict) and len(item) == 1 and SEALED in item:
            try:
                frame = base64.b64decode(item[SEALED], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise CorruptDataError(
                    f"metadata key {json_key!r}: the sealed value is malformed ({exc})"
                ) from None
            if codec.needs_reencrypt(frame, tenant):
                new = codec.reencode(frame, table.context(*pk, json_key))
                updated[json_key] = {SEALED: base64.b64encode(new).decode("ascii")}
                changed = True
    return (Jsonb(updated), None) if changed else None


def progress_op(schema: str, label: str, target: str) -> Op[tuple[bool, bool]]:
    """Look at the saved resume point of ``label``: (resumed, restarted).

    A resume point saved for another target (another primary key, tenant
    keys changed since) is dropped: rows before it were rotated to keys that
    are no longer current, so the scan starts again from the beginning.
    """
    progress = sql.Identifier(schema, PROGRESS_TABLE)
    row = yield Step(
        sql.SQL("SELECT cursor, target FROM {} WHERE table_name = %s FOR UPDATE").format(progress),
        (label,),
        fetch="one",
    )
    if row is None or row[0] is None:
        return False, False
    if row[1] != target:
        yield Step(
            sql.SQL("DELETE FROM {} WHERE table_name = %s").format(progress), (label,), fetch="none"
        )
        return False, True
    return True, False


def _select_rows(
    schema: str, table: FramedTable, batch_size: int, extra: sql.Composable | None = None
) -> Op[tuple[Any, list[Any]]]:
    """Read the resume point and the next batch: (cursor, rows)."""
    progress = sql.Identifier(schema, PROGRESS_TABLE)
    names = [c for c, _ in table.key_columns]
    keys = sql.SQL(", ").join(sql.Identifier("c", n) for n in names)
    state = yield Step(
        sql.SQL("SELECT cursor FROM {} WHERE table_name = %s FOR UPDATE").format(progress),
        (table.key,),
        fetch="one",
    )
    cursor = state[0] if state else None
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if cursor is not None:
        conditions.append(
            sql.SQL("({}) > ({})").format(keys, sql.SQL(", ").join(sql.Placeholder() * len(names)))
        )
        params = _cursor_in(cursor)
    if table.inline_column is not None:
        conditions.append(
            sql.SQL("c.{} <> '{{}}'::jsonb").format(sql.Identifier(table.inline_column))
        )
    where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    selected = sql.SQL(", ").join(
        sql.Identifier("c", n) for n in [*names, *table.extra_columns, table.column]
    )
    if extra is not None:
        selected = sql.SQL("{}, {}").format(selected, extra)
    rows = yield Step(
        sql.SQL("SELECT {sel} FROM {t} AS c {where} ORDER BY {keys} LIMIT %s").format(
            sel=selected, t=sql.Identifier(schema, table.name), where=where, keys=keys
        ),
        [*params, batch_size],
    )
    return cursor, rows


def _save_progress(
    run: RotationPass, table: FramedTable, rows: list[Any], rewritten: int
) -> Op[bool]:
    progress = sql.Identifier(run.schema, PROGRESS_TABLE)
    if len(rows) < run.batch_size:
        yield Step(
            sql.SQL("DELETE FROM {} WHERE table_name = %s").format(progress),
            (table.key,),
            fetch="none",
        )
        return True
    n = len(table.key_columns)
    yield Step(
        sql.SQL(
            "INSERT INTO {p} (table_name, cursor, rewritten, target) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET cursor = excluded.cursor, "
            "rewritten = {p}.rewritten + excluded.rewritten, target = excluded.target, "
            "updated_at = now()"
        ).format(p=progress),
        (table.key, Jsonb(_cursor_out(rows[-1][:n])), rewritten, run.target),
        fetch="none",
    )
    return False


def batch_op(run: RotationPass, table: FramedTable) -> Op[BatchResult]:
    """One batch of one entry, in one transaction, with its resume point."""
    if table.inline_column is not None:
        return (yield from _inline_batch_op(run, table))
    schema, codec, batch_size = run.schema, run.codec, run.batch_size
    keyring = codec.keyring
    assert keyring is not None
    copy = sql.Identifier("c", table.copy_column) if table.copy_column else None
    _, rows = yield from _select_rows(schema, table, batch_size, copy)
    result = BatchResult(scanned=len(rows))
    changes: list[tuple[tuple[Any, ...], Any, Any, str | None]] = []
    width = len(table.key_columns) + len(table.extra_columns)
    for row in rows:
        pk, value = tuple(row[:width]), row[width]
        tenant = str(pk[0])
        try:
            if _shredded(keyring, tenant):
                result.shredded[tenant] += 1
                continue
            fresh = _reencoded(table, codec, pk, value)
        except KeyDestroyedError:
            result.shredded[tenant] += 1
        except (DecryptionError, CorruptDataError) as exc:
            result.unreadable.append(f"{_describe(table, pk)}: {exc}")
        else:
            if fresh is not None:
                changes.append((pk, value, *fresh))
    if changes:
        result.rewritten = yield from _update_op(schema, table, changes)
    result.finished = yield from _save_progress(run, table, rows, result.rewritten)
    return result


def _update_op(
    schema: str,
    table: FramedTable,
    changes: list[tuple[tuple[Any, ...], Any, Any, str | None]],
) -> Op[int]:
    """One statement per batch, compare-and-set on the old value: a row changed
    since it was read (rewritten by a writer, with the new keys) is left alone
    and not counted. Plaintext copies equal to a value encrypted now are cleared."""
    names = [c for c, _ in table.key_columns]
    column = sql.Identifier(table.column)
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
    plain = TextArray(c[3] for c in changes)
    clear: sql.Composable = sql.SQL("")
    if table.copy_column is not None:
        clear = sql.SQL(
            ", {d} = CASE WHEN u.plain IS NOT NULL AND t.{d} = u.plain::jsonb THEN NULL "
            "ELSE t.{d} END"
        ).format(d=sql.Identifier(table.copy_column))
    unnest = sql.SQL("unnest({arrays}, %s, %s, %s) AS u({cols}, old, new, plain)").format(
        arrays=sql.SQL(", ").join(sql.Placeholder() * len(arrays)),
        cols=sql.SQL(", ").join(cols),
    )
    count = yield Step(
        sql.SQL(
            "UPDATE {t} AS t SET {col} = u.new::{cast}{clear} FROM {unnest} "
            "WHERE {match} AND t.{col} = u.old::{cast}"
        ).format(
            t=sql.Identifier(schema, table.name),
            col=column,
            cast=sql.SQL(cast),
            clear=clear,
            unnest=unnest,
            match=match,
        ),
        [*arrays, old, new, plain],
        fetch="rowcount",
    )
    if table.copy_column is not None and any(p is not None for p in plain):
        for other in table.copy_tables:
            exists = yield Step(
                "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                (schema, other),
                fetch="one",
            )
            if not exists[0]:
                continue
            yield Step(
                sql.SQL(
                    "UPDATE {t} AS t SET {d} = NULL FROM {unnest} "
                    "WHERE {match} AND u.plain IS NOT NULL AND t.{d} = u.plain::jsonb"
                ).format(
                    t=sql.Identifier(schema, other),
                    d=sql.Identifier(table.copy_column),
                    unnest=unnest,
                    match=match,
                ),
                [*arrays, old, new, plain],
                fetch="none",
            )
    return int(count)


# The references of a checkpoint row, to compare-and-set on, and its list items.
_REFS_SIGNATURE = sql.SQL(
    "md5(row(c.value_channels, c.value_keys, c.list_channels, c.list_lineages, "
    "c.list_lengths)::text)"
)


def _inline_extra(schema: str) -> sql.Composable:
    return sql.SQL(
        "c.value_channels, c.value_keys, c.list_channels, c.list_lengths, "
        "ARRAY(SELECT i.key FROM unnest(c.list_lineages, c.list_lengths) "
        "WITH ORDINALITY AS l(lineage, length, ord) "
        "JOIN {items} AS i ON i.tenant_id = c.tenant_id AND i.family_id = c.family_id "
        "AND i.lineage_id = l.lineage AND i.seq < l.length ORDER BY l.ord, i.seq), "
        "c.checkpoint, {sig}"
    ).format(items=sql.Identifier(schema, "lineage_items"), sig=_REFS_SIGNATURE)


def _inline_batch_op(run: RotationPass, table: FramedTable) -> Op[BatchResult]:
    """Move the inline (plaintext) values of checkpoint rows into encrypted values.

    Each row is rewritten as an encrypting saver writes it: its inline values
    become stored values (new rows of ``blobs``), and its body is sealed
    afresh with a references digest covering them. The family's lock is
    taken shared, as a checkpoint write does, so that garbage collection
    cannot remove a value between its insert and the row's update.
    """
    schema, codec, batch_size = run.schema, run.codec, run.batch_size
    keyring = codec.keyring
    assert keyring is not None
    _, rows = yield from _select_rows(schema, table, batch_size, _inline_extra(schema))
    result = BatchResult(scanned=len(rows))
    n = len(table.key_columns)
    blobs: dict[tuple[str, str, bytes], bytes] = {}
    updates: list[tuple[Any, ...]] = []
    for row in rows:
        pk = tuple(row[:n])
        tenant, ns, checkpoint_id = str(pk[0]), str(pk[2]), str(pk[3])
        family = str(row[n])
        inline, vch, vkeys, lch, llen, items, body, signature = row[n + 1 :]
        try:
            if _shredded(keyring, tenant):
                result.shredded[tenant] += 1
                continue
            if codec.require_encryption:
                raise DecryptionError(
                    "plaintext inline values where encryption is required; run the migration "
                    "with a codec that does not require encryption, then turn it on"
                )
            lists: dict[str, bytes] = {}
            pos = 0
            for channel, length in zip(lch, llen, strict=True):
                lists[channel] = b"".join(bytes(k) for k in items[pos : pos + length])
                pos += length
            if pos != len(items) or any(
                len(keys) != length * 16 for keys, length in zip(lists.values(), llen, strict=True)
            ):
                raise CorruptDataError("the items of its lists do not match their lengths")
            moved = move_inline(
                serde=run.serde,
                codec=codec,
                tenant=tenant,
                family=family,
                ns=ns,
                checkpoint_id=checkpoint_id,
                body=bytes(body),
                inline=inline,
                values={c: bytes(k) for c, k in zip(vch, vkeys, strict=True)},
                lists=lists,
            )
        except KeyDestroyedError:
            result.shredded[tenant] += 1
            continue
        except (DecryptionError, CorruptDataError, SerializationError) as exc:
            result.unreadable.append(f"{_describe(table, pk)}: {exc}")
            continue
        for key, frame in moved.blobs:
            blobs[(tenant, family, key)] = frame
        updates.append(
            (
                *pk,
                bytes(body),
                moved.body,
                json.dumps(inline),
                signature,
                json.dumps(moved.channels),
                json.dumps([k.hex() for k in moved.keys]),
                family,
            )
        )
    if updates:
        families = sorted({(u[0], u[-1]) for u in updates})
        yield Step(
            sql.SQL(
                "SELECT count(pg_advisory_xact_lock_shared(%s, hashtext(f.t || '/' || f.f))) "
                "FROM (SELECT t, f FROM unnest(%s, %s) AS u(t, f) ORDER BY t, f) AS f"
            ),
            (
                LOCK_CLASS_FAMILY,
                TextArray(t for t, _ in families),
                TextArray(f for _, f in families),
            ),
            fetch="one",
        )
        ordered = sorted(blobs.items())
        yield Step(
            sql.SQL(
                "INSERT INTO {} (tenant_id, family_id, key, data) "
                "SELECT * FROM unnest(%s, %s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(schema, "blobs")),
            (
                TextArray(k[0] for k, _ in ordered),
                TextArray(k[1] for k, _ in ordered),
                ByteaArray(k[2] for k, _ in ordered),
                ByteaArray(v for _, v in ordered),
            ),
            fetch="none",
        )
        columns = list(zip(*updates, strict=True))
        count = yield Step(
            sql.SQL(
                "UPDATE {t} AS c SET checkpoint = u.new_body, inline_values = '{{}}'::jsonb, "
                "value_channels = c.value_channels || ARRAY("
                "SELECT e FROM jsonb_array_elements_text(u.channels::jsonb) WITH ORDINALITY AS x(e, o) "
                "ORDER BY o), "
                "value_keys = c.value_keys || ARRAY("
                "SELECT decode(e, 'hex') FROM jsonb_array_elements_text(u.keys::jsonb) "
                "WITH ORDINALITY AS x(e, o) ORDER BY o) "
                "FROM unnest(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "AS u(t, th, ns, cid, old_body, new_body, old_inline, sig, channels, keys) "
                "WHERE c.tenant_id = u.t AND c.thread_id = u.th AND c.checkpoint_ns = u.ns "
                "AND c.checkpoint_id = u.cid AND c.checkpoint = u.old_body "
                "AND c.inline_values = u.old_inline::jsonb AND {sig} = u.sig"
            ).format(t=sql.Identifier(schema, table.name), sig=_REFS_SIGNATURE),
            (
                TextArray(columns[0]),
                TextArray(columns[1]),
                TextArray(columns[2]),
                TextArray(columns[3]),
                ByteaArray(columns[4]),
                ByteaArray(columns[5]),
                TextArray(columns[6]),
                TextArray(columns[7]),
                TextArray(columns[8]),
                TextArray(columns[9]),
            ),
            fetch="rowcount",
        )
        result.rewritten = int(count)
    result.finished = yield from _save_progress(run, table, rows, result.rewritten)
    return result


# -- counting frames by key ---------------------------------------------------------

# The key id of a frame, or NULL for a plaintext one; a frame too short to
# hold the key id it announces counts as "(malformed)".
_KEY_ID = sql.SQL(
    "CASE WHEN length({c}) < 4 THEN '(malformed)' "
    "WHEN get_byte({c}, 3) & 2 = 0 THEN NULL "
    "WHEN length({c}) < 5 OR length({c}) < 5 + get_byte({c}, 4) THEN '(malformed)' "
    "ELSE encode(substring({c} from 6 for get_byte({c}, 4)), 'escape') END"
)


def counts_op(schema: str, table: FramedTable) -> Op[list[tuple[str, str | None, int]]]:
    """``(tenant, key id or None for plaintext, count)`` of an entry's values."""
    t = sql.Identifier(schema, table.name)
    if table.frame_column is not None:
        col = sql.Identifier(table.frame_column)
        query = sql.SQL(
            "SELECT tenant_id, {k}, count(*) FROM {t} WHERE {c} IS NOT NULL GROUP BY 1, 2"
        ).format(k=_KEY_ID.format(c=col), c=col, t=t)
    elif table.json_column is not None:
        frame = sql.SQL("decode(e.value ->> {s}, 'base64')").format(s=sql.Literal(SEALED))
        query = sql.SQL(
            "SELECT c.tenant_id, CASE WHEN e.value ->> {s} ~ '^[A-Za-z0-9+/]*={{0,2}}$' "
            "AND length(e.value ->> {s}) % 4 = 0 THEN {k} ELSE '(malformed)' END, "
            "count(*) FROM {t} AS c, jsonb_each(c.{j}) AS e "
            "WHERE jsonb_typeof(e.value) = 'object' AND e.value ? {s} GROUP BY 1, 2"
        ).format(
            k=_KEY_ID.format(c=frame),
            s=sql.Literal(SEALED),
            t=t,
            j=sql.Identifier(table.json_column),
        )
    else:
        assert table.inline_column is not None
        query = sql.SQL(
            "SELECT c.tenant_id, NULL, sum((SELECT count(*) FROM jsonb_object_keys(c.{j}))) "
            "FROM {t} AS c WHERE c.{j} <> '{{}}'::jsonb GROUP BY 1"
        ).format(t=t, j=sql.Identifier(table.inline_column))
    rows = yield Step(query)
    return [(str(r[0]), None if r[1] is None else str(r[1]), int(r[2])) for r in rows]
