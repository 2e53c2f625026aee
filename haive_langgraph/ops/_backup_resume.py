"""Resumed uploads to ``s3://``: the report of a completed one, aborting abandoned ones.

See :mod:`haive_langgraph.ops._s3_upload`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from haive_langgraph.ops._archive import ArchiveReader
from haive_langgraph.ops._backup_reports import BackupReport
from haive_langgraph.ops._locations import PARTIAL, Location, location
from haive_langgraph.ops._manifest import part_entries
from haive_langgraph.ops._s3_upload import SIDECAR, S3Upload, is_s3


def resumed_report(target: Location, started: float) -> BackupReport:
    """The report of an archive whose interrupted upload was just completed."""
    with ArchiveReader(target) as reader:
        m = reader.manifest
        size = reader.size
    tables = {str(t["name"]): int(t["rows"]) for t in m["tables"]}
    return BackupReport(
        path=target.url,
        archive_id=str(m["archive_id"]),
        kind="incremental" if m["kind"] == "incremental" else "full",
        tables=tables,
        rows=sum(tables.values()),
        bytes=size,
        raw_bytes=sum(int(p.get("raw_bytes") or 0) for p, _ in part_entries(m)),
        seconds=time.perf_counter() - started,
        encrypted=m.get("encryption") is not None,
        base_archive_id=(m.get("base") or {}).get("archive_id"),
        label=m.get("label"),
        metadata=dict(m.get("metadata") or {}),
        resumed=True,
    )


def abort_uploads(
    url: str,
    *,
    older_than: dt.timedelta = dt.timedelta(0),
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Abort the interrupted uploads of archives under ``url`` (an ``s3://`` prefix).

    An interrupted upload to ``s3://`` is kept open so that the next backup to
    the same key can continue it; this aborts those nobody continued: their
    multipart upload, their ``<key>.partial.upload.json`` record and their
    local spool file (when it is on this machine).

    Args:
        url: The prefix (a "directory") of the archives.
        older_than: Only uploads whose last part was sent longer ago than this
            (default: all; an upload running now would be broken by it).
        storage_options: Options of the object store's filesystem.

    Returns:
        The URLs of the archives whose uploads were aborted.
    """
    prefix = location(url, storage_options)
    if not is_s3(prefix):
        return []
    return _abort_stale(prefix, older_than)


def _abort_stale(prefix: Location, older_than: dt.timedelta) -> list[str]:
    """Abort the uploads under ``prefix`` (a key prefix) whose sidecar was last updated
    more than ``older_than`` ago; the URLs of their archives."""
    cutoff = dt.datetime.now(dt.UTC) - older_than
    aborted = []
    for obj in prefix.list():
        if not obj.name.endswith(PARTIAL + SIDECAR):
            continue
        archive = prefix.child(obj.name[: -len(PARTIAL + SIDECAR)])
        upload = S3Upload(archive, archive.fs_path + PARTIAL)
        state = upload.state()
        if state is None or dt.datetime.fromisoformat(state["updated_at"]) > cutoff:
            continue
        upload.abandon(state)
        aborted.append(archive.url)
    return aborted
