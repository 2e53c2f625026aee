"""Logical backup and restore of our tables: portable, selective, encrypted, incremental.

:func:`backup` writes an archive (see :mod:`haive_langgraph.ops._archive`
for the layout) of the tables in a schema: all of them, or a selection by
table patterns, tenants, users or threads. Rows are copied as stored: values
the codec encrypted stay encrypted (their associated data names tenant,
thread, kind and key, not the schema, so they stay readable wherever the
archive is restored, with the same keys). Every value is written as its
PostgreSQL text form, so a restore gives back the same bytes.

:func:`restore` checks the whole archive first (the manifest's fields and
signature, every part's size and SHA-256), then, in one transaction:
applies our migrations to the target schema (and creates the store's vector
table from the store's own definition), refuses if the target already holds
rows in the archive's scope (unless told to merge or replace), loads the
rows, each checked against the scope the archive declares, and moves
identity sequences past them. An archive is data only: no SQL it carries is
run, a table or column that is not ours is refused. Nothing is written if
anything fails. Archives written with a backup key are authenticated
(nobody without the key can change them); without a key they are checked
against damage only.

Incremental backups (``since=`` a previous archive) hold the rows inserted or
updated since that archive's snapshot, found by the transaction id that wrote
each row version (``xmin``), plus the primary keys of every row in scope, so
that restoring the chain also removes rows deleted meanwhile. See
``docs/operations.md`` for the limits.

Archives may live in object stores (``s3://``, ``gs://``, ``az://`` URLs, see
:mod:`haive_langgraph.ops._locations`);
:class:`~haive_langgraph.ops.backup_schedule.BackupSchedule` takes verified
backups on a schedule and prunes old ones.

``haive-lg backup create|restore|verify|list|schedule|chain|abort-uploads`` drive these
from the shell.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import haive_langgraph
from haive_langgraph.db import connect
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._driver import run
from haive_langgraph.db._dsn import describe_dsn, resolve_dsn
from haive_langgraph.db._identifiers import validate_identifier

# Names imported "as" themselves stay importable from here, outside __all__: errors
# (exported by haive_langgraph.errors), BACKUP_KEY_ENV (documented in docs/operations.md).
from haive_langgraph.errors import ArchiveContentError as ArchiveContentError
from haive_langgraph.errors import BackupKeyError as BackupKeyError
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.errors import RestoreConflictError as RestoreConflictError
from haive_langgraph.ops._archive import (
    FORMAT,
    FORMAT_VERSION,
    MAX_LINE_BYTES,
    MAX_PART_BYTES,
    ArchiveIntegrityError,
    ArchiveReader,
    ArchiveWriter,
    BackupError,
    BackupKey,
    PartInfo,
    check_config_value,
    key_from_file,
    new_backup_key,
    resolve_key,
)
from haive_langgraph.ops._archive_meta import check_labels, expand_components
from haive_langgraph.ops._archive_rows import parse_row
from haive_langgraph.ops._backup_keys import BACKUP_KEY_ENV as BACKUP_KEY_ENV
from haive_langgraph.ops._backup_reports import ArchiveInfo, BackupReport, RestoreReport
from haive_langgraph.ops._backup_resume import abort_uploads as abort_uploads
from haive_langgraph.ops._backup_resume import resumed_report
from haive_langgraph.ops._backup_write import (
    BackupProgress,
    ProgressCallback,
    check_base,
    components_op,
    readonly_op,
    session_op,
    snapshot_op,
    write_scope,
    write_tables,
)
from haive_langgraph.ops._locations import PARTIAL, Location, location
from haive_langgraph.ops._manifest import part_entries
from haive_langgraph.ops._restore import run_restore
from haive_langgraph.ops._s3_upload import S3Upload, is_s3
from haive_langgraph.ops._schema import introspect_op, our_tables
from haive_langgraph.ops._selection import Selection, scopes_op

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_PART_BYTES",
    "ArchiveInfo",
    "BackupKey",
    "BackupProgress",
    "BackupReport",
    "OnExisting",
    "RestoreReport",
    "abort_uploads",
    "backup",
    "key_from_file",
    "new_backup_key",
    "restore",
    "verify",
]

OnExisting = Literal["refuse", "merge", "skip", "replace"]
"""What :func:`restore` does with rows the target already holds (``on_existing=``)."""
KeyArg = BackupKey | bytes | str | os.PathLike[str] | None

DEFAULT_PART_ROWS = 100_000
DEFAULT_PART_BYTES = 64 * 1024 * 1024


def _request_digest(
    dsn: str,
    schema: str,
    selection: Selection,
    since: str | os.PathLike[str] | None,
    label: str | None,
    meta: Mapping[str, str],
    key: BackupKey | None,
) -> str:
    """What a backup was asked for, as a digest: an interrupted upload of an archive
    is resumed only by a backup asked for the same (never the password, never the key:
    the server's address and the key's fingerprint)."""
    asked = {
        "server": describe_dsn(dsn),
        "schema": schema,
        "selection": selection.digest(),
        "since": None if since is None else os.fspath(since),
        "label": label,
        "metadata": dict(meta),
        "key": None if key is None else key.fingerprint,
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def backup(
    path: str | os.PathLike[str],
    dsn: str | None = None,
    *,
    schema: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    users: Sequence[str] | None = None,
    threads: Sequence[str] | None = None,
    where: Mapping[str, Sequence[str]] | None = None,
    global_tables: bool | None = None,
    tenant_keys: bool = False,
    since: str | os.PathLike[str] | None = None,
    key: KeyArg = None,
    encrypt: bool = True,
    part_rows: int = DEFAULT_PART_ROWS,
    part_bytes: int = DEFAULT_PART_BYTES,
    progress: ProgressCallback | None = None,
    config: PersistenceConfig | None = None,
    label: str | None = None,
    metadata: Mapping[str, str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    resume: bool = True,
) -> BackupReport:
    """Write a logical backup of our tables to the archive ``path``.

    The backup reads one consistent snapshot (a repeatable-read, read-only
    transaction): the application keeps running meanwhile.

    Args:
        path: The archive to write (replaced only once complete): a path, a
            ``file://`` URL, or a URL of an object store (``s3://bucket/key``,
            ``gs://``, ``az://``: see ``docs/operations.md``).
        dsn: The server (default: ``HAIVE_DATABASE_URL``, ``DATABASE_URL``,
            the embedded server).
        schema: Schema of the tables (default ``haive``).
        include: Table name patterns to back up (``fnmatch``; default all);
            ``component:pattern`` names tables of components (``"store:*"``).
        exclude: Table name patterns to leave out (same forms).
        tenants: Only these tenants' rows.
        users: Only rows reached from rows with these ``user_id`` values.
        threads: Only these threads, with what they need (their thread
            family's stored values, the threads sharing them, the threads
            they branched from).
        where: Generic form of ``users``/``threads``: ``{column: values}``.
        global_tables: Back up tables without ``tenant_id`` (default: only
            in a backup that selects no rows).
        tenant_keys: Also back up the tenants' own keys (``tenant_keys``,
            wrapped by the global keys). Off by default, so that a later
            crypto-shred reaches every archive: keep the key store's own
            backups apart and destroy a shredded tenant's copies there. An
            archive with tenant keys reads the tenant's rows wherever it is
            restored, even after the tenant was shredded here.
        since: A previous archive of the same selection: write only what
            changed after it (an incremental backup).
        key: Backup key (a :class:`BackupKey`, raw bytes, base64 text or a
            path to a key file). Default: ``HAIVE_BACKUP_KEY`` if set.
        encrypt: ``False`` to write an unencrypted archive even when
            ``HAIVE_BACKUP_KEY`` is set.
        part_rows: Most rows per part.
        part_bytes: Most uncompressed bytes per part.
        progress: Called as rows are written.
        config: Connection settings.
        label: A short text stored in the manifest (shown by ``backup list``).
        metadata: Text keys and values stored in the manifest.
        storage_options: Options of the object store's filesystem (fsspec):
            credentials, ``endpoint_url``, ``block_size`` of the upload,
            ``spool_dir`` (the local spool file of an ``s3://`` upload).
        resume: For ``s3://``: complete an earlier backup to the same key whose
            upload was interrupted, if its spool file is intact, instead of taking
            a new one (the report says ``resumed``); ``False`` aborts it and takes
            a new backup. See ``docs/operations.md``.

    Returns:
        What was written.

    Raises:
        BackupError: The schema holds no tables, or ``since`` does not fit.
        NotFoundError: A selection by value matched no row.
        ConfigurationError: Bad arguments.
    """
    started = time.perf_counter()
    config = config or PersistenceConfig()
    schema = validate_identifier(schema or config.schema_name, what="schema name")
    check_config_value(part_rows, "part_rows")
    # A part may overrun part_bytes by one line; readers refuse parts over MAX_PART_BYTES.
    check_config_value(part_bytes, "part_bytes", MAX_PART_BYTES - MAX_LINE_BYTES)
    backup_key = resolve_key(key) if encrypt else None
    if not encrypt and key is not None:
        raise ConfigurationError("a key was given with encrypt=False")
    meta = check_labels(label, metadata)
    selection = Selection.build(
        expand_components(include),
        expand_components(exclude),
        tenants,
        users,
        threads,
        where,
        global_tables,
        tenant_keys,
    )
    server = resolve_dsn(dsn, config=config)
    target = location(path, storage_options)
    target.upload_request = _request_digest(
        server, schema, selection, since, label, meta, backup_key
    )
    if is_s3(target):
        pending = S3Upload(target, target.fs_path + PARTIAL)
        if resume and pending.resume_pending():
            return resumed_report(target, started)
        pending.abandon()
    base: dict[str, Any] | None = None
    if since is not None:
        with ArchiveReader(location(since, storage_options)) as previous:
            previous.authenticate(backup_key if previous.encrypted else None)
            base = previous.manifest
        if base["selection_digest"] != selection.digest():
            raise BackupError(
                f"{str(since)!r} was taken with another selection (tables, tenants, users or "
                "threads): an incremental backup must select what its base selected"
            )
        if base["source"]["schema"] != schema:
            raise BackupError(
                f"{str(since)!r} is a backup of schema {base['source']['schema']!r}, not {schema!r}"
            )
    archive_id = str(uuid.uuid4())
    conn = connect(server, config=config)
    writer: ArchiveWriter | None = None
    try:
        with conn.transaction():
            run(conn, readonly_op())
            run(conn, session_op(schema))
            snap = run(conn, snapshot_op())
            components = run(conn, components_op(schema))
            live = run(conn, introspect_op(schema)).only(our_tables())
            if not live.tables:
                raise BackupError(
                    f"schema {schema!r} holds no haive-langgraph tables (run `haive-lg migrate`)"
                )
            span = None
            if base is not None:
                span = check_base(base, snap, str(since))
            scopes = run(conn, scopes_op(live, selection))
            writer = ArchiveWriter(target, archive_id, backup_key)
            manifest_tables, total_rows, raw_bytes = write_tables(
                conn, writer, live, scopes, span, snap, part_rows, part_bytes, progress
            )
            scope_part = write_scope(writer, scopes, part_rows, part_bytes)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "archive_id": archive_id,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "haive_langgraph": haive_langgraph.__version__,
            "kind": "incremental" if base is not None else "full",
            "base": (
                {"archive_id": base["archive_id"], "snapshot_xmin": base["snapshot"]["xmin"]}
                if base is not None
                else None
            ),
            "source": {
                "schema": schema,
                "database": snap.database,
                "database_oid": snap.database_oid,
                "system_identifier": snap.system_identifier,
                "server_version": snap.server_version,
            },
            "snapshot": {"xmin": snap.xmin, "xmax": snap.xmax},
            "components": components,
            "selection": selection.summary(),
            "selection_digest": selection.digest(),
            "encryption": (
                {
                    "algorithm": "AES-256-GCM",
                    "kdf": "HKDF-SHA256",
                    "key_fingerprint": backup_key.fingerprint,
                }
                if backup_key is not None
                else None
            ),
            "scope_part": scope_part.as_dict(),
            "tables": manifest_tables,
            "label": label,
            "metadata": meta,
        }
        writer.finish(manifest)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        conn.close()
    return BackupReport(
        path=target.path or target.url,
        archive_id=archive_id,
        kind="incremental" if base is not None else "full",
        tables={t["name"]: int(t["rows"]) for t in manifest_tables},
        rows=total_rows,
        bytes=target.size(),
        raw_bytes=raw_bytes,
        seconds=time.perf_counter() - started,
        encrypted=backup_key is not None,
        base_archive_id=base["archive_id"] if base is not None else None,
        label=label,
        metadata=meta,
    )


# -- verify ----------------------------------------------------------------------------------


def _open_checked(
    path: str | os.PathLike[str] | Location,
    key: BackupKey | None,
    *,
    deep: bool,
    unkeyed: bool = False,
    progress: ProgressCallback | None = None,
    done: int = 0,
    total: int | None = None,
) -> tuple[ArchiveReader, int]:
    reader = ArchiveReader(path)
    try:
        reader.authenticate(key, unkeyed=unkeyed)
        for part, table in _all_parts(reader.manifest):
            if deep:
                rows = reader.count_lines(part)
                if rows != part.rows:
                    raise ArchiveIntegrityError(
                        f"part {part.name} holds {rows} rows; its manifest says {part.rows}"
                    )
            else:
                reader.check_part(part)
            done += part.size
            if progress is not None:
                progress(BackupProgress("verify", table, done, total))
    except BaseException:
        reader.close()
        raise
    return reader, done


def _all_parts(manifest: Mapping[str, Any]) -> list[tuple[PartInfo, str]]:
    return [(PartInfo.from_dict(p), table) for p, table in part_entries(manifest)]


def _info(reader: ArchiveReader) -> ArchiveInfo:
    m = reader.manifest
    tables = {str(t["name"]): int(t["rows"]) for t in m["tables"]}
    return ArchiveInfo(
        path=reader.path,
        archive_id=str(m["archive_id"]),
        kind=str(m["kind"]),
        created_at=dt.datetime.fromisoformat(m["created_at"]),
        schema=str(m["source"]["schema"]),
        tables=tables,
        rows=sum(tables.values()),
        bytes=reader.size,
        encrypted=reader.encrypted,
        base_archive_id=(m.get("base") or {}).get("archive_id"),
        selection=dict(m.get("selection", {})),
        label=m.get("label"),
        metadata=dict(m.get("metadata") or {}),
    )


def verify(
    path: str | os.PathLike[str],
    *,
    key: KeyArg = None,
    unkeyed: bool = False,
    deep: bool = True,
    progress: ProgressCallback | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ArchiveInfo:
    """Check an archive without restoring it.

    Checks the manifest (its fields, and its signature: with the backup key
    if the archive was written with one), every part's size and SHA-256, and
    with ``deep`` decrypts and decompresses every part as a stream and counts
    its rows (time linear in the archive's size, memory of one chunk; a line
    longer than :data:`MAX_LINE_BYTES` is an error naming part and offset).

    Args:
        path: The archive (a path or a URL: it is read back from there).
        key: Backup key (default ``HAIVE_BACKUP_KEY``). With a key in effect,
            an archive written without one is refused: anyone could have
            written it.
        unkeyed: Accept an archive written without a key although a key is
            in effect (it is then checked against damage only).
        deep: Decompress and count rows (else sizes and checksums only).
        progress: Called as parts are checked (bytes).
        storage_options: Options of the object store's filesystem (fsspec).

    Raises:
        ArchiveIntegrityError: Naming the part (or the manifest field) that is damaged.
        BackupKeyError: The archive is encrypted and the key is missing or
            wrong, or it is not encrypted and a key is in effect.
    """
    backup_key = resolve_key(key)
    total = None
    reader, _ = _open_checked(
        location(path, storage_options),
        backup_key,
        deep=deep,
        unkeyed=unkeyed,
        progress=progress,
        total=total,
    )
    with reader:
        return _info(reader)


# -- restore ---------------------------------------------------------------------------------


def restore(
    archives: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dsn: str | None = None,
    *,
    schema: str | None = None,
    on_existing: OnExisting = "refuse",
    key: KeyArg = None,
    unkeyed: bool = False,
    progress: ProgressCallback | None = None,
    config: PersistenceConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> RestoreReport:
    """Restore an archive (or a full archive and its incremental ones) into a schema.

    Every archive is checked completely before anything is written; then the
    restore runs in one transaction: migrations of the target schema (and the
    store's vector table, from the store's own definition), the rows,
    identity sequences. Restore runs no SQL from an archive: it refuses an
    archive holding a table or column that is not ours, and every row must
    lie inside the scope the archive declares (its tenants, threads, users,
    tables), else nothing is written. Triggers of the restored tables do not
    fire for restored rows (usage counters and audit entries come with the
    archive); an enabled audit log gets one ``RESTORE`` entry per table.

    Args:
        archives: One archive, or a full archive followed by incremental
            archives, each continuing the one before it (paths or URLs).
        dsn: The target server.
        schema: Target schema (default: the schema the backup was taken from).
        on_existing: What to do when the target already holds rows in the
            archive's scope: ``"refuse"`` (default), ``"merge"`` (archived
            rows overwrite rows with the same key, others are kept),
            ``"skip"`` (rows with the same key are kept as they are), or
            ``"replace"`` (the scope's rows are deleted first).
        key: Backup key of encrypted archives (default ``HAIVE_BACKUP_KEY``).
            With a key in effect, an archive written without one is refused.
        unkeyed: Accept archives written without a key although a key is in
            effect (they are then checked against damage only).
        progress: Called as parts are checked and rows are written.
        config: Connection settings.
        storage_options: Options of the object store's filesystem (fsspec).

    Raises:
        ArchiveIntegrityError: An archive was changed or damaged (names the part).
        ArchiveContentError: An archive holds a table or column that is not
            ours, or a row outside its declared scope.
        BackupKeyError: Missing or wrong backup key, or an archive without
            one while a key is in effect.
        RestoreConflictError: The target has rows in scope and ``on_existing``
            is ``"refuse"``.
        BackupError: The archives do not form a chain, or the target cannot
            take them.
    """
    if on_existing not in ("refuse", "merge", "skip", "replace"):
        raise ConfigurationError(
            f"on_existing must be 'refuse', 'merge', 'skip' or 'replace', got {on_existing!r}"
        )
    paths = [
        location(p, storage_options)
        for p in ([archives] if isinstance(archives, str | os.PathLike) else archives)
    ]
    if not paths:
        raise ConfigurationError("no archive to restore")
    config = config or PersistenceConfig()
    if schema is not None:
        validate_identifier(schema, what="schema name")
    backup_key = resolve_key(key)
    total_bytes = sum(p.size() for p in paths if p.exists())
    readers: list[ArchiveReader] = []
    try:
        done = 0
        for p in paths:
            reader, done = _open_checked(
                p,
                backup_key,
                deep=False,
                unkeyed=unkeyed,
                progress=progress,
                done=done,
                total=total_bytes,
            )
            readers.append(reader)
        _check_chain(readers)
        target = schema or str(readers[0].manifest["source"]["schema"])
        return run_restore(readers, dsn, target, on_existing, progress, config)
    finally:
        for reader in readers:
            reader.close()


def _check_chain(readers: Sequence[ArchiveReader]) -> None:
    first = readers[0].manifest
    if first["kind"] != "full":
        raise BackupError(
            f"{str(readers[0].path)!r} is an incremental backup: restore it after the full "
            f"backup it continues ({first['base']['archive_id']})"
        )
    for previous, current in itertools.pairwise(readers):
        m = current.manifest
        if m["selection_digest"] != first["selection_digest"]:
            raise BackupError(
                f"{str(current.path)!r} was taken with another selection than "
                f"{str(readers[0].path)!r}: a chain restores one selection"
            )
        if (
            m["kind"] != "incremental"
            or (m.get("base") or {}).get("archive_id") != (previous.manifest["archive_id"])
        ):
            raise BackupError(
                f"{str(current.path)!r} does not continue {str(previous.path)!r}: give a full "
                "backup followed by its incremental backups, in order"
            )


def row_values(line: bytes, width: int, part: str) -> list[str | None]:
    """The text values of one archived row (for tools reading archives)."""
    return parse_row(line, width, part)
