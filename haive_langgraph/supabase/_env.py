"""Where a Supabase class connects: the DSN from the environment and settings tuned for it."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from psycopg import AsyncConnection, Connection

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._dsn import TRANSACTION_POOLER_PORT, normalize_dsn, parse_dsn
from haive_langgraph.errors import ConfigurationError

ENV_DB_URL = "SUPABASE_DB_URL"
"""The variable holding the database connection string (wins over the others)."""
ENV_URL = "SUPABASE_URL"
"""The variable holding the project's API URL, ``https://<project-ref>.supabase.co``."""
ENV_DB_PASSWORD = "SUPABASE_DB_PASSWORD"
"""The variable holding the database password (with :data:`ENV_URL`)."""
ENV_POOLER_HOST = "SUPABASE_POOLER_HOST"
"""The variable naming the Supavisor host (optional)."""
ENV_REGION = "SUPABASE_REGION"
"""The variable naming the project's region, for the Supavisor host (optional)."""

# Pooled connections are recycled after this many idle seconds, well below
# the 5-10 minute idle reaping of the load balancers and proxies in front of
# hosted PostgreSQL (AWS NLB: 350 s); a connection idle for more than 30 s is
# pinged before use, and one the server closed is replaced without an error.
SUPABASE_POOL_MAX_IDLE = 120.0

_PROJECT_HOST = re.compile(r"([a-z0-9]{6,40})\.supabase\.(?:co|in|net)")
_REGION = re.compile(r"[a-z]{2}-[a-z]+-\d")


class SupabaseWarning(UserWarning):
    """A Supabase setting that works but is likely to hurt: read the message."""


def supabase_dsn(env: Mapping[str, str] | None = None) -> str:
    """The Supabase database DSN from the environment.

    ``SUPABASE_DB_URL`` (the connection string from the dashboard's
    *Connect* panel) wins. Otherwise ``SUPABASE_URL``
    (``https://<ref>.supabase.co``) and ``SUPABASE_DB_PASSWORD`` build a DSN
    for the transaction pooler on port 6543: on ``SUPABASE_POOLER_HOST``
    (e.g. ``aws-0-eu-central-1.pooler.supabase.com``) or
    ``aws-0-<SUPABASE_REGION>.pooler.supabase.com`` as user
    ``postgres.<ref>`` (Supavisor), else on the project's dedicated pooler
    ``db.<ref>.supabase.co:6543`` as user ``postgres``; always with
    ``sslmode=require``.

    Args:
        env: Variables to read (default ``os.environ``).

    Raises:
        ConfigurationError: naming every missing variable, or a
            ``SUPABASE_URL`` that does not name a project.
    """
    env = os.environ if env is None else env
    if url := env.get(ENV_DB_URL, "").strip():
        return normalize_dsn(url, where=f"the variable {ENV_DB_URL}")
    missing = [name for name in (ENV_URL, ENV_DB_PASSWORD) if not env.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"Supabase connection settings missing: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Set {ENV_DB_URL} to the "
            f"connection string from the dashboard (Connect > Transaction pooler), or set "
            f"{ENV_URL} (https://<project-ref>.supabase.co) and {ENV_DB_PASSWORD}"
        )
    host = (urlsplit(env[ENV_URL].strip()).hostname or "").lower()
    match = _PROJECT_HOST.fullmatch(host)
    if match is None:
        raise ConfigurationError(
            f"{ENV_URL} must look like https://<project-ref>.supabase.co (the API URL of a "
            f"hosted project), got host {host or '(none)'!r}; for a local or self-hosted "
            f"Supabase set {ENV_DB_URL} instead"
        )
    ref = match.group(1)
    password = quote(env[ENV_DB_PASSWORD], safe="")
    pooler = env.get(ENV_POOLER_HOST, "").strip()
    region = env.get(ENV_REGION, "").strip().lower()
    if not pooler and region:
        if not _REGION.fullmatch(region):
            raise ConfigurationError(
                f"{ENV_REGION} must be a region such as 'eu-central-1', got {region!r}"
            )
        pooler = f"aws-0-{region}.pooler.supabase.com"
    if pooler:
        user, host = f"postgres.{ref}", pooler
    else:
        user, host = "postgres", f"db.{ref}.supabase.co"
    return (
        f"postgresql://{user}:{password}@{host}:{TRANSACTION_POOLER_PORT}/postgres?sslmode=require"
    )


def supabase_config(config: PersistenceConfig | None = None) -> PersistenceConfig:
    """Settings for Supabase: ``config`` as given, or the defaults tuned for it.

    The defaults are :class:`PersistenceConfig`'s (``HAIVE_*`` variables
    apply) with pooled connections recycled after
    :data:`SUPABASE_POOL_MAX_IDLE` seconds unless ``HAIVE_POOL_MAX_IDLE`` says
    otherwise. Pooler safety follows ``pooler_mode`` (``auto``: on for port
    6543).
    """
    if config is not None:
        return config
    config = PersistenceConfig()
    if "pool_max_idle" in config.model_fields_set:  # set by HAIVE_POOL_MAX_IDLE
        return config
    return config.model_copy(update={"pool_max_idle": SUPABASE_POOL_MAX_IDLE})


def check_pooler(conn: object, config: PersistenceConfig) -> None:
    """Warn when a connection to the transaction pooler (port 6543) may prepare statements."""
    if isinstance(conn, str):
        port = parse_dsn(conn).get("port", "")
        unsafe = config.pooler_mode in ("none", "session")
        how = f"pooler_mode={config.pooler_mode!r}"
    elif isinstance(conn, Connection | AsyncConnection):
        port = str(conn.info.port)
        unsafe = conn.prepare_threshold is not None
        how = f"the connection's prepare_threshold={conn.prepare_threshold}"
    else:
        return
    if unsafe and TRANSACTION_POOLER_PORT in port.split(","):
        warnings.warn(
            f"port 6543 is Supabase's transaction pooler, but {how} turns pooler safety off. "
            "psycopg then prepares statements on the server (after 5 executions; LangGraph's "
            "own savers at once), and a transaction pooler runs each transaction on whichever "
            "server connection is free, so those statements fail with 'prepared statement "
            "\"_pg3_0\" does not exist' or 'already exists'. Use pooler_mode='auto' or "
            "'transaction' (prepare_threshold=None), or the session pooler on port 5432",
            SupabaseWarning,
            stacklevel=4,
        )


def connect_args(conn: Any, config: PersistenceConfig | None) -> tuple[Any, PersistenceConfig]:
    """``conn`` (``None``: :func:`supabase_dsn`) and the Supabase config, checked."""
    config = supabase_config(config)
    if conn is None:
        conn = supabase_dsn()
    check_pooler(conn, config)
    return conn, config
