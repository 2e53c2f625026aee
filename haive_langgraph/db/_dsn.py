"""Which server to talk to, and how to describe it without leaking secrets.

A DSN is accepted in libpq's two forms (``postgresql://...`` URLs and
``key=value`` pairs) and in SQLAlchemy's (``postgresql+psycopg://``,
``postgresql+asyncpg://``, ``postgres+psycopg2://`` ...): the driver suffix is
dropped (and asyncpg's ``ssl=`` becomes libpq's ``sslmode=``), the rest is
libpq's. A DSN that does not parse is refused with an
error naming where it came from (an argument or a variable), never its text:
libpq's own messages repeat fragments of it, password included.
"""

from __future__ import annotations

import os
import re

from psycopg import conninfo

from haive_langgraph.db._config import PersistenceConfig, PoolerMode
from haive_langgraph.errors import ConfigurationError

# Supabase's Supavisor listens for transaction-mode pooling on 6543.
TRANSACTION_POOLER_PORT = "6543"

# The variables PersistenceConfig reads database_url from, in its order.
DATABASE_URL_VARIABLES = ("HAIVE_DATABASE_URL", "DATABASE_URL")

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# postgresql:// and postgres:// (libpq's), with an optional SQLAlchemy driver.
_POSTGRES_SCHEME = re.compile(r"postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?", re.IGNORECASE)
# libpq messages whose quoted part is an option name, never a value.
_SAFE_REASON = re.compile(
    r'invalid URI query parameter: "[A-Za-z_]+"|invalid connection option "[A-Za-z_]+"'
)


def _libpq_form(dsn: str) -> tuple[str, str | None]:
    """``dsn`` with a SQLAlchemy-style scheme made libpq's, and the scheme if not a
    PostgreSQL one (``None`` for PostgreSQL URLs and key=value strings)."""
    match = _SCHEME.match(dsn)
    if match is None:
        return dsn, None
    scheme = match.group(1)
    if _POSTGRES_SCHEME.fullmatch(scheme) is None:
        return dsn, scheme
    rest = dsn[match.end() :]
    if "+" in scheme and "?" in rest:
        rest = _ssl_as_sslmode(rest)
    return "postgresql://" + rest, None


def _ssl_as_sslmode(rest: str) -> str:
    """asyncpg's ``ssl=<mode>`` query parameter as libpq's ``sslmode=<mode>`` (the
    other parameters left byte for byte)."""
    base, _, query = rest.partition("?")
    modes = {"true": "require", "false": "disable"}
    parts = []
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if key == "ssl" and eq:
            part = f"sslmode={modes.get(value.lower(), value)}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}"


def normalize_dsn(dsn: str, *, where: str = "the DSN") -> str:
    """``dsn`` in a form libpq accepts, checked.

    Surrounding whitespace is dropped, and the scheme of SQLAlchemy URLs
    (``postgresql+psycopg://``, ``postgresql+asyncpg://``,
    ``postgres+psycopg2://`` ...) becomes ``postgresql://``.

    Args:
        dsn: A URL or ``key=value`` pairs.
        where: Where it came from, for the error (``"the argument dsn"``,
            ``"the variable DATABASE_URL"``).

    Raises:
        ConfigurationError: naming ``where`` and what is wrong; never the
            DSN's text (it may hold a password).
    """
    if not isinstance(dsn, str):
        raise ConfigurationError(
            f"{where} must be a DSN string, got {type(dsn).__name__}"  # never the value
        )
    text, foreign = _libpq_form(dsn.strip())
    if foreign is not None:
        raise ConfigurationError(
            f"{where} is not a PostgreSQL URL: its scheme is {foreign!r}; expected "
            "postgresql://user:password@host:port/dbname (postgres://, postgresql+psycopg:// "
            "and the other SQLAlchemy forms are accepted too)"
        )
    try:
        conninfo.conninfo_to_dict(text)
        return text
    except Exception as exc:
        # psycopg's message repeats the DSN, password included: keep only the
        # messages whose quoted part is an option name.
        found = _SAFE_REASON.search(str(exc))
        reason = found.group(0) if found else _guess_reason(text)
    # Raised outside the handler, so that not even the exception's context
    # (shown by some error reporters) holds psycopg's message.
    raise ConfigurationError(
        f"{where} is not a valid PostgreSQL DSN ({reason}); expected "
        "postgresql://user:password@host:port/dbname or host=... dbname=... key=value pairs"
    )


def _guess_reason(text: str) -> str:
    if text.startswith("postgresql://"):
        return (
            "the URL does not parse: percent-encode special characters in the user name "
            "and password (space %20, @ %40, / %2F, : %3A, % %25)"
        )
    return "neither a postgresql:// URL nor key=value pairs"


def database_url_origin(config: PersistenceConfig) -> str:
    """Where ``config.database_url`` came from, to name it in an error."""
    value = config.database_url
    for name in DATABASE_URL_VARIABLES:
        if value is not None and os.environ.get(name) == value:
            return f"the variable {name}"
    return "the setting database_url"


def resolve_dsn(
    dsn: str | None = None,
    *,
    config: PersistenceConfig | None = None,
    argument: str = "dsn",
) -> str:
    """Pick the server: explicit ``dsn``, then ``HAIVE_DATABASE_URL`` /
    ``DATABASE_URL`` (through ``config``), then the embedded PostgreSQL.

    The DSN chosen is checked and normalised (see :func:`normalize_dsn`);
    the embedded server is started on first use and reused for the rest of
    the process.

    Args:
        dsn: An explicit DSN (``None`` or empty: the next source).
        config: Settings (default: from the environment).
        argument: The name ``dsn`` was given under, for errors (``"--dsn"``
            on the command line).

    Raises:
        ConfigurationError: the DSN chosen does not parse; the message names
            the argument or variable it came from, never its text.
    """
    if dsn is not None and (not isinstance(dsn, str) or dsn.strip()):
        return normalize_dsn(dsn, where=f"the argument {argument}")
    config = config or PersistenceConfig()
    if config.database_url and config.database_url.strip():
        return normalize_dsn(config.database_url, where=database_url_origin(config))
    from haive_langgraph.db._embedded import embedded_dsn

    return embedded_dsn(config)


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a DSN (URL, SQLAlchemy URL or key=value form), raising a clear error if
    malformed (never repeating the DSN)."""
    text, _ = _libpq_form(dsn.strip())
    try:
        return {k: str(v) for k, v in conninfo.conninfo_to_dict(text).items()}
    except Exception:
        pass
    # psycopg's message repeats the DSN, password included: not even kept as context.
    raise ConfigurationError(
        "the database URL is malformed; expected postgresql://user:password@host:port/dbname "
        "or host=... port=... key=value pairs"
    )


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` (or the socket directory) of a DSN; never the password."""
    try:
        params = parse_dsn(dsn)
    except ConfigurationError:
        return "<malformed DSN>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or params.get("user") or ""
    where = f"socket directory {host}" if host.startswith("/") else f"{host}:{port}"
    return f"{where}/{db}" if db else where


def uses_transaction_pooler(dsn: str, mode: PoolerMode) -> bool:
    """Whether connections must be safe for a transaction-mode pooler."""
    if mode == "transaction":
        return True
    if mode in ("none", "session"):
        return False
    port = parse_dsn(dsn).get("port", "")
    return TRANSACTION_POOLER_PORT in port.split(",")
