"""The errors of backup, verify and restore (defined in :mod:`haive_langgraph.errors`,
re-exported by :mod:`haive_langgraph.ops.backup`)."""

from __future__ import annotations

from haive_langgraph.errors import (
    ArchiveContentError,
    ArchiveIntegrityError,
    BackupError,
    BackupKeyError,
    RestoreConflictError,
)

__all__ = [
    "ArchiveContentError",
    "ArchiveIntegrityError",
    "BackupError",
    "BackupKeyError",
    "RestoreConflictError",
]
