"""The embedded default server: started once, reused, and a clear error if it cannot start."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from haive_langgraph.db import _embedded, connect, embedded_dsn, start_embedded
from haive_langgraph.errors import EmbeddedPostgresError


def test_embedded_default_starts_once_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAIVE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv(_embedded.DATA_DIR_ENV, str(tmp_path / "pg"))
    monkeypatch.setattr(_embedded, "_server", None)
    first = embedded_dsn()
    server = _embedded._server
    try:
        assert embedded_dsn() == first and _embedded._server is server
        with connect() as conn:  # no DSN anywhere: the embedded server
            version = conn.execute("SHOW server_version_num").fetchone()
            assert version is not None and int(version[0]) >= 180000
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            assert conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone() == (
                1.0,
            )
        assert (tmp_path / "pg" / "PG_VERSION").exists()
        # another handle on the same directory attaches to the running server
        again = start_embedded(tmp_path / "pg")
        assert again.get_pid() == server.get_pid()
    finally:
        server.cleanup()
        monkeypatch.setattr(_embedded, "_server", None)


def test_embedded_failure_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(EmbeddedPostgresError) as info:
        start_embedded(blocker / "pg")
    message = str(info.value)
    assert str(blocker / "pg") in message
    assert "HAIVE_DATABASE_URL" in message and "HAIVE_EMBEDDED_DATA_DIR" in message


def test_connect_uses_explicit_dsn(dsn: str) -> None:
    with connect(dsn) as conn:
        assert isinstance(conn, psycopg.Connection) and conn.autocommit
