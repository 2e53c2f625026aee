"""Reliability suite: fault, load and adversarial scenarios, bounded for CI, longer in soak mode.

* ``budget``: how big each scenario runs. CI sizes by default; soak sizes
  with ``--soak`` (when ``tests/reliability`` is among the paths given to
  pytest) or ``HAIVE_SOAK=1`` (always).
* ``figures``: each scenario records its measured results; they are printed
  as they are measured (visible with ``-s``) and again, all together, in a
  "reliability figures" section at the end of the session, whichever tests
  ran.
* ``private_server``: a PostgreSQL server of the suite's own, which the
  crash and restart scenarios stop, crash and restart (never the session's);
  ``dsn`` gives each module a fresh database on it.
* ``pgbouncer``: a PgBouncer in transaction mode in front of the private
  server, which the pooler-restart scenario restarts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests._pgbouncer import PgBouncer, require_pgbouncer

from ._server import PrivateServer

SOAK_ENV = "HAIVE_SOAK"
_FIGURES = pytest.StashKey[list[tuple[str, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the reliability scenarios at soak size (same as HAIVE_SOAK=1)",
    )


def soak_enabled(config: pytest.Config) -> bool:
    if os.environ.get(SOAK_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        return bool(config.getoption("--soak"))
    except ValueError:  # option not registered: this conftest was not an initial one
        return False


@dataclass(frozen=True)
class Budget:
    """Sizes of the scenarios: CI or soak."""

    soak: bool

    def pick(self, ci: Any, soak: Any) -> Any:
        return soak if self.soak else ci

    @property
    def mode(self) -> str:
        return "soak" if self.soak else "ci"


@pytest.fixture(scope="session")
def budget(pytestconfig: pytest.Config) -> Budget:
    return Budget(soak=soak_enabled(pytestconfig))


@dataclass
class Figures:
    """Measured results of the scenarios, printed now and in the session summary."""

    store: list[tuple[str, str]] = field(default_factory=list)

    def record(self, scenario: str, text: str) -> None:
        self.store.append((scenario, text))
        print(f"\n[reliability] {scenario}: {text}", flush=True)


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Figures:
    store = pytestconfig.stash.setdefault(_FIGURES, [])
    return Figures(store)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    store = config.stash.get(_FIGURES, [])
    if not store:
        return
    mode = "soak" if soak_enabled(config) else "ci"
    terminalreporter.section(f"reliability figures ({mode} mode)")
    for scenario, text in sorted(store, key=lambda item: item[0]):  # by scenario number
        terminalreporter.write_line(f"{scenario}: {text}")


@pytest.fixture(scope="session")
def private_server() -> Iterator[PrivateServer]:
    """A server of the suite's own, on a free loopback port; tests may stop and crash it."""
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def dsn(private_server: PrivateServer) -> str:
    """A fresh database for the test module, on the suite's private server.

    Overrides the session's ``dsn``: every reliability scenario runs on the
    server it controls, so the figures do not depend on what else the shared
    test server is doing.
    """
    if not private_server.is_running():
        private_server.start()
    return private_server.create_database()


@pytest.fixture(scope="session")
def pgbouncer(private_server: PrivateServer) -> Iterator[PgBouncer]:
    """A PgBouncer (transaction mode) in front of the private server, for scenario 3.

    Skipped, saying why and how to install it, when PgBouncer is missing
    (see ``tests/_pgbouncer.py``).
    """
    require_pgbouncer()
    bouncer = PgBouncer(private_server.port)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.cleanup()
