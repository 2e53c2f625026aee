"""The errors of backup, verify and restore (re-exported by :mod:`haive_langgraph.ops.backup`)."""

from __future__ import annotations

from haive_langgraph.errors import CorruptDataError, HaiveError


class BackupError(HaiveError, RuntimeError):
    """A backup or restore could not be carried out; nothing was written."""


class ArchiveIntegrityError(BackupError, CorruptDataError):
    """The archive is damaged or was changed after it was written; names the part."""


class ArchiveContentError(ArchiveIntegrityError):
    """The archive holds what restore never writes; nothing was written.

    A table or column that none of our migrations creates, a manifest field
    this version does not accept (table definitions as SQL), or a row outside
    the scope the archive declares (another tenant, thread, user or table).
    """


class BackupKeyError(BackupError, ValueError):
    """The backup key is missing, malformed, or not the one the archive was written with."""


class RestoreConflictError(BackupError):
    """The target already holds rows the archive would restore (use merge or replace)."""
