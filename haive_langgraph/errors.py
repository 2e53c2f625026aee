"""The exceptions haive-langgraph raises.

Every error the package raises itself derives from :class:`HaiveError`, and
also from the builtin it resembles, so ``except ValueError`` keeps working
where callers expect one. Messages name the thing that is wrong and, where it
helps, what to do about it. Errors from psycopg that a caller should see (a
unique violation raised by the caller's own constraint, a query cancelled by
``statement_timeout``) pass through unchanged.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentUpdateError",
    "ConfigurationError",
    "ConnectionFailedError",
    "CorruptDataError",
    "DecryptionError",
    "EmbeddedPostgresError",
    "HaiveError",
    "InvalidIdentifierError",
    "MigrationError",
    "NotFoundError",
    "SerializationError",
    "SourceSchemaError",
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
