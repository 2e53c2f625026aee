"""Encryption keys in the database: key rotation, tenant keys, crypto-shredding.

* :func:`rotate_keys` re-encrypts every stored value that is not under its
  tenant's current primary key (every column a feature declares framed in
  its component, see ``ops._migrate.framed_tables()``: checkpoint values,
  bodies and sealed metadata, chat messages and conversation details, store
  and vector-memory items), moves the plaintext
  inline values of checkpoints written before encryption into encrypted
  values, and re-wraps tenant keys under the global primary key. It works
  in batches, each in its own transaction with its resume point, so an
  interrupted rotation continues where it stopped (or starts again, if the
  keys changed since). Rows are rewritten with a compare-and-set on the old
  value: safe while the application writes (new writes already use the new
  primary key). Rows of crypto-shredded tenants are skipped and counted.
* :func:`key_status` counts stored values by key id, the plaintext ones and
  those not yet under their tenant's primary key.
* :class:`PostgresTenantKeyStore` keeps tenants' own keys, wrapped by the
  global keys, in the ``tenant_keys`` table (the codec never stores key
  material unwrapped).
* :func:`forget_tenant_key` crypto-shreds a tenant: its keys are destroyed,
  after which none of its rows can be decrypted, by anyone, in any copy.

``haive-lg keys rotate|status|forget-tenant`` drive these from the shell.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg import Connection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from haive_langgraph.codec import (
    HaiveCodec,
    KeyDestroyedError,
    KeyRing,
    TenantKeyRecord,
    WrappedKey,
)
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._connections import ConnectionSource
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._features import FramedTable
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import ConfigurationError, DecryptionError
from haive_langgraph.ops._keys_sql import COMPONENT, TENANT_KEYS
from haive_langgraph.ops._migrate import framed_tables
from haive_langgraph.ops._rotation import (
    MAX_ERRORS,
    RotationPass,
    batch_op,
    counts_op,
    progress_op,
)

__all__ = [
    "KeyStatus",
    "PostgresTenantKeyStore",
    "RotationReport",
    "forget_tenant_key",
    "frames_by_key",
    "key_status",
    "rotate_keys",
]

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


def _record_of(keys: list[dict[str, str]], destroyed: bool) -> TenantKeyRecord:
    return TenantKeyRecord(
        keys=tuple(
            WrappedKey(k["key_id"], k["wrapping_key_id"], base64.b64decode(k["blob"])) for k in keys
        ),
        destroyed=destroyed,
    )


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
        return _record_of(keys, bool(destroyed))

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


@dataclass(slots=True)
class RotationReport:
    """What a rotation did, per entry of ``framed_tables()`` (its ``key``).

    Attributes:
        scanned: Rows read.
        rewritten: Rows rewritten under the current keys.
        resumed: The entry continued from a saved resume point.
        restarted: A saved resume point was dropped because the keys changed
            since it was saved (another primary key, tenant keys created or
            destroyed): the entry was scanned again from the start.
        shredded: Rows skipped because their tenant was crypto-shredded,
            per entry and tenant.
        unreadable: Rows that could not be decoded (corrupt, tampered with,
            or under a key that is not in the ring) and were left as they are.
        errors: The first messages about unreadable rows, each naming its row.
        left: After the run, values still not under their tenant's primary
            key (shredded tenants aside): 0 everywhere once rotation converged.
        tenant_keys_rewrapped: Tenant keys re-wrapped under the global primary.
        passes: Passes over the tables (another pass runs when values were
            left, for instance written meanwhile by a process with old keys).
    """

    scanned: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)
    resumed: dict[str, bool] = field(default_factory=dict)
    restarted: dict[str, bool] = field(default_factory=dict)
    shredded: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)
    tenant_keys_rewrapped: int = 0
    passes: int = 0

    @property
    def total_rewritten(self) -> int:
        return sum(self.rewritten.values())

    @property
    def total_left(self) -> int:
        return sum(self.left.values())

    @property
    def shredded_tenants(self) -> dict[str, int]:
        """Rows skipped per crypto-shredded tenant, over every entry."""
        total: Counter[str] = Counter()
        for per_tenant in self.shredded.values():
            total.update(per_tenant)
        return dict(total)


Progress = Callable[[str, int, int], None]  # table, rows scanned so far, rows rewritten so far


def _existing_tables(source: ConnectionSource, schema: str) -> set[str]:
    names = {t.name for t in framed_tables()} | {TENANT_KEYS}

    def op() -> Op[set[str]]:
        rows = yield Step(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
            (schema, TextArray(sorted(names))),
        )
        return {str(r[0]) for r in rows}

    return source.run(op, read=True)


def _target(source: ConnectionSource, schema: str, keyring: KeyRing, present: set[str]) -> str:
    """What a resume point is valid for: the global primary key and the tenant keys' state."""
    stamp = ""
    if TENANT_KEYS in present:

        def op() -> Op[str]:
            row = yield Step(
                sql.SQL(
                    "SELECT count(*) || '@' || coalesce(max(updated_at)::text, '') FROM {}"
                ).format(sql.Identifier(schema, TENANT_KEYS)),
                fetch="one",
            )
            return str(row[0])

        stamp = source.run(op, read=True)
    return f"{keyring.primary_key_id()}|{stamp}"


def _rewrap_op(
    schema: str, keyring: KeyRing, after: str, batch_size: int, report: RotationReport
) -> Op[str | None]:
    """Re-wrap one batch of tenants' keys under the global primary; the last tenant, or None."""
    table = sql.Identifier(schema, TENANT_KEYS)
    primary = keyring.primary_key_id()
    rows = yield Step(
        sql.SQL(
            "SELECT tenant_id, keys FROM {} WHERE tenant_id > %s AND NOT destroyed "
            "AND EXISTS (SELECT 1 FROM jsonb_array_elements(keys) AS k "
            "WHERE k ->> 'wrapping_key_id' IS DISTINCT FROM %s) "
            "ORDER BY tenant_id LIMIT %s FOR UPDATE"
        ).format(table),
        (after, primary, batch_size),
    )
    for tenant, keys in rows:
        try:
            record, count = keyring.rewrapped(tenant, _record_of(keys, False))
        except KeyDestroyedError:
            continue
        except DecryptionError as exc:
            report.unreadable[TENANT_KEYS] = report.unreadable.get(TENANT_KEYS, 0) + 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(f"{TENANT_KEYS} row (tenant_id={tenant!r}): {exc}")
            continue
        yield Step(
            sql.SQL(
                "UPDATE {} SET keys = %s, updated_at = now() WHERE tenant_id = %s AND NOT destroyed"
            ).format(table),
            (Jsonb(_record_json(record)), tenant),
            fetch="none",
        )
        report.tenant_keys_rewrapped += count
        keyring.invalidate(tenant)
    return str(rows[-1][0]) if len(rows) == batch_size else None


def _rotate_entry(
    source: ConnectionSource,
    run: RotationPass,
    table: FramedTable,
    report: RotationReport,
    progress: Progress | None,
) -> int:
    """Every batch of one entry; returns how many rows were unreadable."""
    key = table.key
    resumed, restarted = source.run(
        lambda: progress_op(run.schema, key, run.target), transaction=True
    )
    report.resumed[key] = report.resumed.get(key, False) or resumed
    report.restarted[key] = report.restarted.get(key, False) or restarted
    unreadable = 0
    while True:
        batch = source.run(lambda: batch_op(run, table), transaction=True)
        report.scanned[key] = report.scanned.get(key, 0) + batch.scanned
        report.rewritten[key] = report.rewritten.get(key, 0) + batch.rewritten
        if batch.shredded:
            per_tenant = report.shredded.setdefault(key, {})
            for tenant, n in batch.shredded.items():
                per_tenant[tenant] = per_tenant.get(tenant, 0) + n
        unreadable += len(batch.unreadable)
        report.errors.extend(batch.unreadable[: max(0, MAX_ERRORS - len(report.errors))])
        if progress is not None:
            progress(key, report.scanned[key], report.rewritten[key])
        if batch.finished:
            break
    report.unreadable[key] = report.unreadable.get(key, 0) + unreadable
    return unreadable


def rotate_keys(
    conn: str | Connection[Any] | ConnectionPool[Any],
    codec: HaiveCodec,
    *,
    schema: str | None = None,
    batch_size: int = 500,
    tables: Sequence[str] | None = None,
    progress: Progress | None = None,
    config: PersistenceConfig | None = None,
    serde: SerializerProtocol | None = None,
    max_passes: int = 3,
) -> RotationReport:
    """Put every stored value under its tenant's current primary key.

    Run it after making the new key primary (first in ``HAIVE_ENCRYPTION_KEYS``)
    in the application and here; keep the old keys in the ring until it has
    finished (``report.total_left == 0``), then remove them. Run it also
    when turning encryption on: it encrypts plaintext rows, and moves the
    inline values of checkpoints written without encryption into encrypted
    values. Interrupted, it resumes from its last committed batch the next
    time it runs, unless the keys changed meanwhile (then that table is
    scanned again from the start). After its pass it counts what is left
    under other keys and passes again over those tables, up to
    ``max_passes`` times.

    Tenant keys: rows under a tenant's own key need the codec's key ring to
    reach the tenant key store (``KeyRing(..., tenant_store=PostgresTenantKeyStore(...))``);
    the tenant keys in ``{schema}.tenant_keys`` are re-wrapped under the
    global primary key. Rows of crypto-shredded tenants are skipped and
    counted in ``report.shredded``; rows that cannot be decoded are left as
    they are, counted in ``report.unreadable`` and named in ``report.errors``.

    Args:
        conn: DSN, connection or pool.
        codec: An encrypting codec whose key ring holds the new primary and the
            old keys. With ``require_encryption`` plaintext rows are not
            encrypted (they count as unreadable): migrate with a codec that
            accepts them, then require encryption.
        schema: Schema of the tables.
        batch_size: Rows per transaction.
        tables: Limit to these tables or entries (default: all of
            :func:`~haive_langgraph.ops._migrate.framed_tables` and ``tenant_keys``).
        progress: Called after each batch with (entry, scanned, rewritten).
        config: Connection settings.
        serde: Serialises the inline values moved into stored values; the
            checkpointer's (default LangGraph's ``JsonPlusSerializer``).
        max_passes: Passes over the tables at most.

    Returns:
        What was scanned, rewritten, skipped and left, per entry.

    Raises:
        ConfigurationError: The codec does not encrypt.
    """
    keyring = codec.keyring
    if keyring is None:
        raise ConfigurationError("rotate_keys needs an encrypting codec (a key ring)")
    if batch_size < 1 or max_passes < 1:
        raise ConfigurationError("rotate_keys needs batch_size >= 1 and max_passes >= 1")
    serde = serde or JsonPlusSerializer()
    config = config or PersistenceConfig()
    target_schema = validate_identifier(schema or config.schema_name, what="schema name")
    source = ConnectionSource(conn, config=config)
    report = RotationReport()
    try:
        source.run(lambda: migrate_op([COMPONENT], target_schema), transaction=True)
        present = _existing_tables(source, target_schema)
        keyring.invalidate()  # see tenant keys created or destroyed by other processes
        if TENANT_KEYS in present and (tables is None or TENANT_KEYS in tables):
            after: str | None = ""
            while after is not None:
                after = source.run(
                    lambda last=after: _rewrap_op(  # type: ignore[misc]
                        target_schema, keyring, last, batch_size, report
                    ),
                    transaction=True,
                )
        entries = [
            t
            for t in framed_tables()
            if t.name in present and (tables is None or t.name in tables or t.key in tables)
        ]
        pending = entries
        while pending and report.passes < max_passes:
            report.passes += 1
            target = _target(source, target_schema, keyring, present)
            run = RotationPass(target_schema, codec, batch_size, target, serde)
            unreadable = {t.key: _rotate_entry(source, run, t, report, progress) for t in pending}
            keyring.invalidate()
            left = _status(source, target_schema, pending, keyring).left or {}
            report.left.update(left)
            pending = [t for t in pending if left.get(t.key, 0) > unreadable[t.key]]
    finally:
        source.close()
    return report


# -- status -------------------------------------------------------------------------

UNENCRYPTED = "(unencrypted)"


@dataclass(slots=True)
class KeyStatus:
    """Stored values by key, per entry of ``framed_tables()`` (and ``tenant_keys``).

    Attributes:
        by_key: Values per key id (``"(unencrypted)"`` for plaintext ones,
            inline checkpoint values included; for ``tenant_keys``: wrapped
            keys per wrapping key id).
        plaintext: Plaintext values per entry.
        left: With a key ring: values not under their tenant's current
            primary key (plaintext included, shredded tenants excluded);
            ``None`` without one.
        shredded: With a key ring: values of crypto-shredded tenants.
    """

    by_key: dict[str, dict[str, int]] = field(default_factory=dict)
    plaintext: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] | None = None
    shredded: dict[str, int] | None = None

    @property
    def total_plaintext(self) -> int:
        return sum(self.plaintext.values())

    @property
    def total_left(self) -> int | None:
        return None if self.left is None else sum(self.left.values())


def _tenant_keys_op(schema: str) -> Op[list[tuple[str, str | None, int]]]:
    rows = yield Step(
        sql.SQL(
            "SELECT '', k ->> 'wrapping_key_id', count(*) FROM {} AS t, "
            "jsonb_array_elements(t.keys) AS k WHERE NOT t.destroyed GROUP BY 2"
        ).format(sql.Identifier(schema, TENANT_KEYS))
    )
    return [(str(r[0]), None if r[1] is None else str(r[1]), int(r[2])) for r in rows]


def _status(
    source: ConnectionSource,
    schema: str,
    entries: Sequence[FramedTable],
    keyring: KeyRing | None,
    tenant_keys: bool = False,
) -> KeyStatus:
    def op() -> Op[dict[str, list[tuple[str, str | None, int]]]]:
        out: dict[str, list[tuple[str, str | None, int]]] = {}
        for table in entries:
            out[table.key] = yield from counts_op(schema, table)
        if tenant_keys:
            out[TENANT_KEYS] = yield from _tenant_keys_op(schema)
        return out

    counts = source.run(op, read=True)
    status = KeyStatus(
        left={} if keyring is not None else None, shredded={} if keyring is not None else None
    )
    global_primary = keyring.primary_key_id() if keyring is not None else None
    for entry, rows in counts.items():
        by_key: Counter[str] = Counter()
        plaintext = left = shredded = 0
        for tenant, key_id, n in rows:
            by_key[key_id or UNENCRYPTED] += n
            if key_id is None:
                plaintext += n
            if keyring is None:
                continue
            if entry == TENANT_KEYS:
                left += n if key_id != global_primary else 0
                continue
            try:
                primary = keyring.primary_key_id(tenant)
            except KeyDestroyedError:
                shredded += n
                continue
            if key_id != primary:
                left += n
        status.by_key[entry] = dict(sorted(by_key.items()))
        status.plaintext[entry] = plaintext
        if status.left is not None and status.shredded is not None:
            status.left[entry] = left
            status.shredded[entry] = shredded
    return status


def key_status(
    conn: str | Connection[Any] | ConnectionPool[Any],
    *,
    keyring: KeyRing | None = None,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> KeyStatus:
    """Count stored values by key id, plaintext values, and what rotation has left.

    Args:
        conn: DSN, connection or pool.
        keyring: The current keys (with the tenant key store, for tenants'
            own keys): then ``left`` counts values not under their tenant's
            primary key, the work a rotation has left.
        schema: Schema of the tables.
        config: Connection settings.
    """
    config = config or PersistenceConfig()
    target = validate_identifier(schema or config.schema_name, what="schema name")
    source = ConnectionSource(conn, config=config)
    try:
        present = _existing_tables(source, target)
        entries = [t for t in framed_tables() if t.name in present]
        return _status(source, target, entries, keyring, tenant_keys=TENANT_KEYS in present)
    finally:
        source.close()


def frames_by_key(
    conn: str | Connection[Any] | ConnectionPool[Any],
    *,
    schema: str | None = None,
    config: PersistenceConfig | None = None,
) -> dict[str, dict[str, int]]:
    """How many values each key id protects, per entry (``"(unencrypted)"``: plaintext).

    See :func:`key_status` for plaintext and left-to-rotate counts.
    """
    return key_status(conn, schema=schema, config=config).by_key
