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


class CorruptDataError(HaiveError, ValueError):
    """A stored row could not be decoded; the message names the row."""


class DecryptionError(CorruptDataError):
    """A ciphertext could not be authenticated or decrypted."""


class NotFoundError(HaiveError, LookupError):
    """A thread, checkpoint or other named object does not exist."""


class ConcurrentUpdateError(HaiveError, RuntimeError):
    """Another writer changed the rows this operation depended on.

    Savers retry internally where that is safe; this surfaces only when a
    retry could not succeed either.
    """
