"""Which server to talk to, and how to describe it without leaking secrets."""

from __future__ import annotations

from psycopg import conninfo

from haive_langgraph.db._config import PersistenceConfig, PoolerMode
from haive_langgraph.errors import ConfigurationError

# Supabase's Supavisor listens for transaction-mode pooling on 6543.
TRANSACTION_POOLER_PORT = "6543"


def resolve_dsn(dsn: str | None = None, *, config: PersistenceConfig | None = None) -> str:
    """Pick the server: explicit ``dsn``, then ``HAIVE_DATABASE_URL`` /
    ``DATABASE_URL`` (through ``config``), then the embedded PostgreSQL.

    The embedded server is started on first use and reused for the rest of
    the process.
    """
    if dsn:
        return dsn
    config = config or PersistenceConfig()
    if config.database_url:
        return config.database_url
    from haive_langgraph.db._embedded import embedded_dsn

    return embedded_dsn()


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a DSN (URI or key=value form), raising a clear error if malformed."""
    try:
        return {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items()}
    except Exception:
        # psycopg's message repeats the DSN, password included: drop it.
        raise ConfigurationError(
            "the database URL is malformed; expected postgresql://user:password@host:port/dbname "
            "or host=... port=... key=value pairs"
        ) from None


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
