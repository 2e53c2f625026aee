"""What backup, verify and restore report (shared by :mod:`haive_langgraph.ops.backup`
and the restore that module runs)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from haive_langgraph.ops._fields import field_dict


@dataclass(slots=True)
class BackupReport:
    """What :func:`backup` wrote.

    Attributes:
        path: The archive.
        archive_id: Its id (an incremental backup names its base by it).
        kind: ``"full"`` or ``"incremental"``.
        tables: Rows written per table.
        rows: Rows written in all.
        bytes: Size of the archive file.
        raw_bytes: Size of the rows as uncompressed JSONL.
        seconds: Wall-clock time.
        encrypted: Whether parts are encrypted.
        base_archive_id: The archive an incremental backup continues.
        label: The label stored in the manifest.
        metadata: The metadata stored in the manifest.
        resumed: The archive is one whose interrupted upload (to ``s3://``) this
            call completed: its rows are those of that earlier backup's snapshot.
    """

    path: Path | str
    archive_id: str
    kind: Literal["full", "incremental"]
    tables: dict[str, int]
    rows: int
    bytes: int
    raw_bytes: int
    seconds: float
    encrypted: bool
    base_archive_id: str | None = None
    label: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    resumed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self, path=str(self.path), seconds=round(self.seconds, 3))


@dataclass(slots=True)
class ArchiveInfo:
    """An archive, as :func:`verify` found it.

    Attributes:
        path: The archive file.
        archive_id: Its id.
        kind: ``"full"`` or ``"incremental"``.
        created_at: When the backup was taken.
        schema: The schema it was taken from.
        tables: Rows per table.
        rows: Rows in all.
        bytes: Archive size.
        encrypted: Whether it is encrypted (and was checked with its key).
        base_archive_id: The archive an incremental backup continues.
        selection: What it covers (counts of selected tenants and values).
        label: The label stored in the manifest.
        metadata: The metadata stored in the manifest.
    """

    path: Path | str
    archive_id: str
    kind: str
    created_at: dt.datetime
    schema: str
    tables: dict[str, int]
    rows: int
    bytes: int
    encrypted: bool
    base_archive_id: str | None
    selection: dict[str, Any]
    label: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self, path=str(self.path), created_at=self.created_at.isoformat())


@dataclass(slots=True)
class RestoreReport:
    """What :func:`restore` did.

    Attributes:
        schema: The target schema.
        archives: Ids of the archives applied, base first.
        tables: Rows written per table.
        skipped: Rows not written because the target already had them
            (``on_existing="skip"``, and tenant-level rows such as a
            tenant's keys, which are never overwritten).
        deleted: Rows removed first (``on_existing="replace"``).
        created_tables: Tables no migration creates that were created for the
            archive (the store's vector table, from the store's definition).
        rows: Rows written in all.
        bytes: Size of the archives read.
        seconds: Wall-clock time.
    """

    schema: str
    archives: list[str]
    tables: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    created_tables: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self, seconds=round(self.seconds, 3))
