"""The exceptions haive-langgraph raises.

Every error the package raises itself derives from :class:`HaiveError`, and
also from the builtin it resembles, so ``except ValueError`` keeps working
where callers expect one. Messages name the thing that is wrong and, where it
helps, what to do about it. Errors from psycopg that a caller should see (a
unique violation raised by the caller's own constraint, a query cancelled by
``statement_timeout``) pass through unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

__all__ = [
    "ArchiveContentError",
    "ArchiveIntegrityError",
    "BackupError",
    "BackupKeyError",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "CorruptDataError",
    "DecompressionLimitError",
    "DecryptionError",
    "EmbeddedPostgresError",
    "HaiveError",
    "InvalidFilterError",
    "InvalidIdentifierError",
    "InvalidMemoryError",
    "InvalidMessageError",
    "InvalidModelOutputError",
    "KeyDestroyedError",
    "MessageTooLargeError",
    "MigrationError",
    "NotFoundError",
    "PermissionDeniedError",
    "QueryStatsUnavailableError",
    "QuotaExceededError",
    "RestoreConflictError",
    "SerializationError",
    "SessionExpiredError",
    "SourceSchemaError",
    "TenantExistsError",
    "TenantNotFoundError",
    "TenantSuspendedError",
    "UnsafeValueError",
    "ValueTooLargeError",
]


class HaiveError(Exception):
    """Base class of every error raised by haive-langgraph."""


class ConfigurationError(HaiveError, ValueError):
    """A setting, argument or lent connection is not usable as given."""


class InvalidIdentifierError(ConfigurationError):
    """A schema, table or other SQL identifier is not a plain identifier."""


class ConnectionFailedError(HaiveError, ConnectionError):
    """The database could not be reached.

    The message names host and port (or socket directory) and never the
    password.
    """


class EmbeddedPostgresError(HaiveError, RuntimeError):
    """The embedded PostgreSQL server could not be started."""


class MigrationError(HaiveError, RuntimeError):
    """A schema migration could not be applied or does not match the database."""


class QueryStatsUnavailableError(HaiveError, RuntimeError):
    """``pg_stat_statements`` is not loaded or not created; the message says how to enable it."""


class SerializationError(HaiveError, TypeError):
    """A value could not be serialised; nothing of the operation was written."""


class ValueTooLargeError(HaiveError, ValueError):
    """A value is larger, or nested deeper, than a documented limit; nothing was written.

    Checked at write time, before any statement runs, so that whatever a write
    accepts a read returns: a serialised value may take at most
    ``max_decompressed_size`` bytes (64 MiB by default, the most readers
    expand a frame to), JSON metadata at most 64 MiB, and JSON values
    (metadata, store values, filters) may nest at most 128 levels deep. See
    ``docs/codec.md``, "Limits".

    Attributes:
        subject: The value, as the caller knows it (thread and channel,
            namespace and key, session and messages ...).
        size: Its size in bytes, or for ``unit="levels"`` a depth past the limit.
        limit: The limit, in the same unit.
        unit: ``"bytes"`` or ``"levels"``.
        setting: What sets the limit, for the message.
    """

    def __init__(
        self,
        subject: str,
        size: int,
        limit: int,
        unit: str = "bytes",
        setting: str = "max_decompressed_size, HAIVE_MAX_DECOMPRESSED_SIZE",
    ) -> None:
        super().__init__(subject, size, limit, unit, setting)
        self.subject = subject
        self.size = size
        self.limit = limit
        self.unit = unit
        self.setting = setting

    def __str__(self) -> str:
        if self.unit == "levels":
            return (
                f"{self.subject} is nested more than {self.limit} levels deep, the limit for "
                "stored JSON and values; nothing was written: flatten it (or store it as a "
                "string)"
            )
        return (
            f"{self.subject} is {self.size:,} bytes serialised, more than the limit of "
            f"{self.limit:,} bytes ({self.setting}); nothing was written: keep large content "
            "elsewhere (object storage) and store a reference, or split it"
        )

    def about(self, subject: str) -> ValueTooLargeError:
        """The same error, naming the value as the caller knows it."""
        return ValueTooLargeError(subject, self.size, self.limit, self.unit, self.setting)


class CorruptDataError(HaiveError, ValueError):
    """A stored row could not be decoded; the message names the row."""


class DecryptionError(CorruptDataError):
    """A ciphertext could not be authenticated or decrypted."""


class NotFoundError(HaiveError, LookupError):
    """A thread, checkpoint or other named object does not exist."""


class SourceSchemaError(HaiveError, LookupError):
    """The source database of an import lacks a table or column the import reads
    (``haive-lg import``); the message names it and the package that writes it."""


class ConcurrentUpdateError(HaiveError, RuntimeError):
    """Another writer changed the rows this operation depended on.

    Savers retry internally where that is safe; this surfaces only when a
    retry could not succeed either.
    """


# -- refinements used by several layers --------------------------------------------------


class DecompressionLimitError(CorruptDataError):
    """A compressed frame would expand beyond the configured maximum size.

    Raised before (or while, for frames without a declared size) the payload
    is expanded, so a small hostile frame cannot exhaust memory.
    """


class KeyDestroyedError(DecryptionError):
    """The key a row needs has been destroyed (crypto-shredded) and is gone for good.

    Raised when a tenant's keys were forgotten (:meth:`KeyRing.forget_tenant`)
    or a key provider reports a key as destroyed. Unlike a plain
    :class:`DecryptionError`, retrying with another configuration cannot help.
    """


class UnsafeValueError(CorruptDataError):
    """A stored value names a type or function that reading it may not import or call."""


class PermissionDeniedError(HaiveError, PermissionError):
    """The acting user lacks the permission the operation needs."""


class QuotaExceededError(HaiveError, RuntimeError):
    """A write would go past a quota (a tenant's store quota, a session's message
    limit); nothing was written.

    Attributes:
        tenant_id: The tenant, where the quota is a tenant's.
        resource: What is limited: ``"items"``, ``"bytes"``,
            ``"writes_per_minute"``, ``"messages"`` ...
        limit: The quota, where known.
        value: What the write would have reached, where known.
        current: What there was before the write, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        tenant_id: str = "",
        resource: str = "",
        limit: int | None = None,
        value: int | None = None,
        current: int | None = None,
    ) -> None:
        super().__init__(message)
        self.tenant_id = tenant_id
        self.resource = resource
        self.limit = limit
        self.value = value
        self.current = current

    @classmethod
    def from_diag(cls, message: str, detail: str | None) -> QuotaExceededError:
        """Build the error from a trigger's message and its JSON detail."""
        info: dict[str, Any] = {}
        if detail:
            try:
                info = json.loads(detail)
            except ValueError:
                info = {}
        return cls(
            message,
            tenant_id=str(info.get("tenant_id", "")),
            resource=str(info.get("resource", "")),
            limit=info.get("limit"),
            value=info.get("value"),
            current=info.get("current"),
        )


# -- the store and vector memory ------------------------------------------------------------


class InvalidFilterError(HaiveError, ValueError):
    """A search filter uses an unsupported operator, path or value."""


class InvalidMemoryError(HaiveError, ValueError):
    """A memory text, query or argument is not valid; nothing was written."""


# -- conversations ----------------------------------------------------------------------------


class TenantNotFoundError(HaiveError, LookupError):
    """No tenant with that id is registered (``haive_langgraph.tenants``).

    Attributes:
        tenant_id: The tenant named.
    """

    def __init__(self, message: str, *, tenant_id: str = "") -> None:
        super().__init__(message)
        self.tenant_id = tenant_id


class TenantExistsError(ConfigurationError):
    """A tenant with that id is already registered.

    Attributes:
        tenant_id: The tenant named.
    """

    def __init__(self, message: str, *, tenant_id: str = "") -> None:
        super().__init__(message)
        self.tenant_id = tenant_id


class TenantSuspendedError(HaiveError, RuntimeError):
    """The tenant is suspended: its tenant context refuses to open, and the database
    refuses its writes (resume it first).

    Not a ``PermissionError``: that is an ``OSError``, and psycopg's async wait
    loop takes any ``OSError`` raised while it reads a result (as this one is,
    for SQLSTATE ``HQ403``) for a closed socket.

    Attributes:
        tenant_id: The tenant named.
    """

    def __init__(self, message: str, *, tenant_id: str = "") -> None:
        super().__init__(message)
        self.tenant_id = tenant_id


class ConversationNotFoundError(NotFoundError):
    """The conversation, history or session named does not exist (for this tenant)."""


class ConversationExistsError(ConfigurationError):
    """A conversation or session with that id already exists."""


class SessionExpiredError(ConversationNotFoundError):
    """The session outlived its TTL; it is gone for reads and writes."""


class InvalidMessageError(HaiveError, ValueError):
    """A message, role or token usage is not valid; nothing was written."""


class InvalidModelOutputError(HaiveError, ValueError):
    """A chat model's answer is not what the operation asked for (a model-assisted
    merge's decision); nothing was written. The message says what is wrong."""


class MessageTooLargeError(InvalidMessageError):
    """A message is larger than the configured ``max_message_bytes``."""


# -- backup and restore -------------------------------------------------------------------------


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


# -- errors our triggers raise in the database ------------------------------------------------
#
# psycopg raises, for a SQLSTATE, the subclass of ``psycopg.errors.DatabaseError``
# declared with that ``code=``. These are psycopg errors and ours at once, so a
# tenant quota or suspension a trigger enforces (tenants/_quota_sql.py) reaches
# every caller, whichever component or hand-written SQL wrote, as
# QuotaExceededError or TenantSuspendedError, with no mapping at each call.


def _diag_detail(exc: psycopg.Error) -> dict[str, Any]:
    try:
        info = json.loads(exc.diag.message_detail or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


class _QuotaExceededInDatabase(psycopg.errors.DatabaseError, QuotaExceededError, code="HQ429"):
    """SQLSTATE ``HQ429``: a quota trigger refused the write (see QuotaExceededError)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        info = _diag_detail(self)
        if info:
            self.args = (self.diag.message_primary or str(self),)
            self.tenant_id = str(info.get("tenant_id", ""))
            self.resource = str(info.get("resource", ""))
            self.limit = info.get("limit")
            self.value = info.get("value")
            self.current = info.get("current")


class _TenantSuspendedInDatabase(psycopg.errors.DatabaseError, TenantSuspendedError, code="HQ403"):
    """SQLSTATE ``HQ403``: a write of a suspended tenant was refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        info = _diag_detail(self)
        if info:
            self.args = (self.diag.message_primary or str(self),)
            self.tenant_id = str(info.get("tenant_id", ""))
