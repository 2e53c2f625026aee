"""Scheduled backups to a location, verified after writing, with retention.

A :class:`BackupSchedule` writes into one location (a directory, or a key
prefix of an object store) archives named
``<prefix>-<UTC time>-full.tar`` and ``<prefix>-<UTC time>-incremental.tar``.
Every archive is verified right after it is written by reading it back from
the location (manifest, signature, every part's SHA-256, rows counted); a
verified archive gets a small marker object beside it,
``<archive>.verified`` (JSON: id, kind, base, time, rows, bytes). An archive
that fails its verification is deleted.

All the schedule's state is in the location: each :meth:`BackupSchedule.run_once`
lists the markers and decides, so a restarted process, a cron job and a
long-lived process all behave alike, and several periods missed while
nothing ran give one backup, not a burst:

* a full backup when no verified full one is younger than ``every``;
* else, with ``incremental_every``, an incremental backup continuing the
  newest verified archive of the newest chain when that one is older than
  ``incremental_every``.

Retention keeps the ``keep`` newest verified full backups with their
incremental ones; older chains are deleted (incremental archives newest
first, the full one last, each with its marker) only once ``keep`` newer
verified full backups exist, so the newest verified chain is never pruned.
Archives without a marker (a failed or interrupted run) are deleted only
when older than the oldest chain kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.errors import BackupError, ConfigurationError
from haive_langgraph.ops._backup_reports import BackupReport
from haive_langgraph.ops._locations import Location, location

__all__ = ["BackupSchedule", "CatalogEntry", "ScheduleRound", "catalog", "latest_chain"]

log = logging.getLogger("haive_langgraph.ops.schedule")

MARKER = ".verified"
_NAME = re.compile(
    r"(?P<prefix>[A-Za-z0-9_.-]+)-(?P<stamp>\d{8}T\d{12}Z)-(?P<kind>full|incremental)\.tar"
)
_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """An archive found in a location.

    Attributes:
        url: Where it is.
        name: Its name in the location.
        kind: ``"full"`` or ``"incremental"``.
        taken_at: When the schedule took it (from the name or marker, else
            the manifest's ``created_at``).
        bytes: Its size.
        verified: Whether a marker of a read-back verification matches it.
        archive_id: Its id (``None`` if unknown: neither marker nor manifest read).
        base_archive_id: The archive an incremental one continues.
        rows: Rows archived (``None`` if unknown).
        label: The manifest's label (when read).
        metadata: The manifest's metadata (when read).
    """

    url: str
    name: str
    kind: str
    taken_at: dt.datetime
    bytes: int
    verified: bool
    archive_id: str | None = None
    base_archive_id: str | None = None
    rows: int | None = None
    label: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from haive_langgraph.ops._fields import field_dict

        return field_dict(self, taken_at=self.taken_at.isoformat())


def _marker(where: Location, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads(where.child(name + MARKER).read_bytes())
    except (BackupError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def catalog(
    to: str | os.PathLike[str],
    *,
    manifests: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[CatalogEntry]:
    """The archives (``*.tar``) in a location, oldest first.

    Args:
        to: A directory or a key prefix.
        manifests: Also read every archive's manifest (label, metadata, rows,
            archives not written by a schedule); else names and markers only.
        storage_options: Options of the object store's filesystem.
    """
    return _catalog(location(to, storage_options), manifests)


def _catalog(where: Location, manifests: bool = False) -> list[CatalogEntry]:
    from haive_langgraph.ops._archive import ArchiveReader

    objects = where.list()
    names = {o.name for o in objects}
    out = []
    for obj in objects:
        if not obj.name.endswith(".tar"):
            continue
        match = _NAME.fullmatch(obj.name)
        marker = _marker(where, obj.name) if obj.name + MARKER in names else None
        verified = marker is not None and int(marker.get("bytes", -1)) == obj.size
        info: dict[str, Any] = dict(marker) if verified and marker is not None else {}
        if match is not None:
            info.setdefault("kind", match["kind"])
            info.setdefault(
                "taken_at",
                dt.datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=dt.UTC).isoformat(),
            )
        if manifests or "kind" not in info:
            try:
                with ArchiveReader(where.child(obj.name)) as reader:
                    m = reader.manifest
            except BackupError as exc:
                log.warning("%s is not a readable archive: %s", obj.url, exc)
                continue
            if verified and marker is not None and marker.get("archive_id") != m["archive_id"]:
                verified = False
            info.update(
                archive_id=m["archive_id"],
                kind=m["kind"],
                base_archive_id=(m.get("base") or {}).get("archive_id"),
                rows=sum(int(t["rows"]) for t in m["tables"]),
                label=m.get("label"),
                metadata=dict(m.get("metadata") or {}),
            )
            info.setdefault("taken_at", m["created_at"])
        out.append(
            CatalogEntry(
                url=obj.url,
                name=obj.name,
                kind=str(info["kind"]),
                taken_at=dt.datetime.fromisoformat(str(info["taken_at"])),
                bytes=obj.size,
                verified=verified,
                archive_id=info.get("archive_id"),
                base_archive_id=info.get("base_archive_id"),
                rows=info.get("rows"),
                label=info.get("label"),
                metadata=dict(info.get("metadata") or {}),
            )
        )
    return sorted(out, key=lambda e: (e.taken_at, e.name))


def _chains(entries: Sequence[CatalogEntry]) -> dict[str, list[CatalogEntry]]:
    """Verified archives by the id of their full archive, each chain in order."""
    by_id = {e.archive_id: e for e in entries if e.verified and e.archive_id}
    chains: dict[str, list[CatalogEntry]] = {}
    for entry in sorted(by_id.values(), key=lambda e: e.taken_at):
        root: CatalogEntry | None = entry
        seen = 0
        while root is not None and root.kind != "full" and seen <= len(by_id):
            root = by_id.get(root.base_archive_id or "")
            seen += 1
        if root is not None and root.kind == "full" and root.archive_id:
            chains.setdefault(root.archive_id, []).append(entry)
    # a chain is what continues its full archive link by link
    out = {}
    for root_id, members in chains.items():
        chain = [by_id[root_id]]
        for e in members:
            if e.kind == "incremental" and e.base_archive_id == chain[-1].archive_id:
                chain.append(e)
        out[root_id] = chain
    return out


def latest_chain(
    to: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """The URLs of the newest verified full archive and its incremental ones, in order
    (what to give :func:`~haive_langgraph.ops.backup.restore`).

    Raises:
        BackupError: The location holds no verified full archive.
    """
    chains = _chains(catalog(to, storage_options=storage_options))
    if not chains:
        raise BackupError(f"{str(to)!r} holds no verified full backup")
    newest = max(chains.values(), key=lambda c: c[0].taken_at)
    return [e.url for e in newest]


def prune_plan(entries: Sequence[CatalogEntry], keep: int) -> list[CatalogEntry]:
    """The archives retention deletes, in the order to delete them."""
    fulls = sorted(
        (e for e in entries if e.verified and e.kind == "full"),
        key=lambda e: e.taken_at,
        reverse=True,
    )
    if len(fulls) < keep:
        return []
    kept = fulls[:keep]
    cutoff = kept[-1].taken_at
    chains = _chains(entries)
    kept_ids = {e.archive_id for f in kept for e in chains.get(f.archive_id or "", [f])}
    doomed = [e for e in entries if e.archive_id not in kept_ids and e.taken_at < cutoff]
    # incremental archives newest first, full ones last: a chain never loses its base first
    return sorted(doomed, key=lambda e: (e.kind == "full", -e.taken_at.timestamp()))


@dataclass(slots=True)
class ScheduleRound:
    """What one :meth:`BackupSchedule.run_once` did.

    Attributes:
        kind: ``"full"``, ``"incremental"``, or ``None`` when nothing was due.
        url: The archive written.
        report: The backup's report.
        verified_rows: Rows counted when reading the archive back.
        pruned: URLs of the archives retention deleted.
        next_due: Seconds until the next backup is due.
    """

    kind: Literal["full", "incremental"] | None
    url: str | None = None
    report: BackupReport | None = None
    verified_rows: int | None = None
    pruned: list[str] = field(default_factory=list)
    next_due: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "report": self.report.as_dict() if self.report is not None else None,
            "verified_rows": self.verified_rows,
            "pruned": list(self.pruned),
            "next_due": round(self.next_due, 3),
        }


@dataclass(slots=True)
class BackupSchedule:
    """Full backups every ``every`` seconds, optionally incremental ones in between,
    into ``to``, keeping ``keep`` verified full backups with their chains.

    Args:
        to: Directory or key prefix of the archives (a path or a URL).
        every: Seconds between full backups.
        keep: Full backups (with their incremental ones) to keep.
        incremental_every: Seconds between incremental backups (``None``: none).
        dsn: The server backed up.
        backup_options: Further keyword arguments of
            :func:`~haive_langgraph.ops.backup.backup` (``schema``,
            ``include``, ``tenants``, ``label``, ``metadata`` ...).
        key: Backup key (default ``HAIVE_BACKUP_KEY``).
        storage_options: Options of the object store's filesystem.
        prefix: Start of the archives' names.
        config: Connection settings.
        clock: The time source (tests drive it).
        slack: A backup counts as due this many seconds early (a job that cron
            or a timer starts runs a little early or late).
        progress: Called as each backup writes rows and its read-back checks parts.
    """

    to: str
    every: float
    keep: int
    incremental_every: float | None = None
    dsn: str | None = None
    backup_options: dict[str, Any] = field(default_factory=dict)
    key: Any = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    prefix: str = "haive"
    config: PersistenceConfig | None = None
    clock: Callable[[], float] = time.time
    slack: float = 0.0
    progress: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise ConfigurationError(f"every must be positive, got {self.every}")
        if self.keep < 1:
            raise ConfigurationError(f"keep must be at least 1, got {self.keep}")
        if self.incremental_every is not None and not 0 < self.incremental_every < self.every:
            raise ConfigurationError(
                "incremental_every must be positive and shorter than every "
                f"(got {self.incremental_every} and {self.every})"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", self.prefix):
            raise ConfigurationError(
                f"prefix must be letters, digits, '.', '_' or '-': {self.prefix!r}"
            )
        for reserved in ("since", "progress", "path", "dsn", "key", "storage_options", "config"):
            if reserved in self.backup_options:
                raise ConfigurationError(f"backup_options may not set {reserved!r}")

    @property
    def location(self) -> Location:
        return location(self.to, self.storage_options)

    def _due(
        self, entries: Sequence[CatalogEntry], now: dt.datetime
    ) -> tuple[Literal["full", "incremental"] | None, CatalogEntry | None, float]:
        """What is due now, the archive an incremental one continues, seconds to the next."""
        chains = _chains(entries)
        if not chains:
            return "full", None, self.every
        chain = max(chains.values(), key=lambda c: c[0].taken_at)
        full_age = (now - chain[0].taken_at).total_seconds()
        if full_age >= self.every - self.slack:
            return "full", None, self.every
        to_full = self.every - full_age
        if self.incremental_every is None:
            return None, None, to_full
        last = chain[-1]
        age = (now - last.taken_at).total_seconds()
        if age >= self.incremental_every - self.slack:
            return "incremental", last, min(to_full, self.incremental_every)
        return None, None, min(to_full, self.incremental_every - age)

    def run_once(self) -> ScheduleRound:
        """Take the backup that is due (if any), verify it from the location, prune.

        Raises:
            BackupError: The backup failed, or its verification did (the
                archive is then deleted).
        """
        from haive_langgraph.ops.backup import abort_uploads, backup, verify

        where = self.location
        where.ensure_dir()
        # An earlier round's interrupted upload to s3:// (each round writes a new key, so
        # none is resumed): aborted once idle for a period (a running one sends parts).
        idle = dt.timedelta(seconds=self.incremental_every or self.every)
        for url in abort_uploads(str(where), older_than=idle, storage_options=self.storage_options):
            log.warning("aborted the interrupted upload of %s", url)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        entries = _catalog(where)
        kind, base, next_due = self._due(entries, now)
        result = ScheduleRound(kind, next_due=next_due)
        if kind is not None:
            name = f"{self.prefix}-{now.strftime(_STAMP)}-{kind}.tar"
            target = where.child(name)
            options = dict(self.backup_options)
            metadata = dict(options.pop("metadata", None) or {})
            metadata.setdefault("schedule", self.prefix)
            report = backup(
                str(target),
                self.dsn,
                since=str(where.child(base.name)) if base is not None else None,
                key=self.key,
                config=self.config,
                metadata=metadata,
                storage_options=self.storage_options,
                progress=self.progress,
                **options,
            )
            try:
                info = verify(
                    str(target),
                    key=self.key,
                    deep=True,
                    storage_options=self.storage_options,
                    progress=self.progress,
                )
                if info.archive_id != report.archive_id or info.rows != report.rows:
                    raise BackupError(f"{target} read back is not the archive written")
            except BaseException:
                log.error("%s failed its verification: deleted", target)
                target.remove()
                raise
            marker = {
                "archive_id": report.archive_id,
                "kind": kind,
                "base_archive_id": report.base_archive_id,
                "taken_at": now.isoformat(),
                "rows": report.rows,
                "bytes": target.size(),
                "label": report.label,
                "verified_at": dt.datetime.now(dt.UTC).isoformat(),
            }
            where.child(name + MARKER).write_bytes(json.dumps(marker).encode())
            log.info("%s backup %s: %s rows, verified", kind, target, report.rows)
            result.url, result.report, result.verified_rows = str(target), report, info.rows
            entries = _catalog(where)
            result.next_due = self._due(entries, now)[2]
        for entry in prune_plan(entries, self.keep):
            doomed = where.child(entry.name)
            where.child(entry.name + MARKER).remove()
            doomed.remove()
            result.pruned.append(entry.url)
            log.info("pruned %s", entry.url)
        return result

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        on_round: Callable[[ScheduleRound], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        max_backups: int | None = None,
        retry: float = 60.0,
    ) -> None:
        """Run until ``stop`` is set (or ``max_backups`` were taken): sleep until the
        next backup is due, take it, repeat. A failed round is logged (and given to
        ``on_error``) and retried after ``retry`` seconds (at most the time to the
        next due backup)."""
        stop = stop or threading.Event()
        taken = 0
        while not stop.is_set():
            try:
                result = self.run_once()
            except Exception as exc:  # a failed round must not end the schedule
                log.exception("scheduled backup failed")
                if on_error is not None:
                    on_error(exc)
                stop.wait(retry)
                continue
            if on_round is not None:
                on_round(result)
            if result.kind is not None:
                taken += 1
                if max_backups is not None and taken >= max_backups:
                    return
            stop.wait(max(result.next_due, 0.05))
