"""``haive-lg``: the admin command line.

Every command takes ``--dsn`` (default: ``HAIVE_DATABASE_URL``,
``DATABASE_URL``, then the embedded server) and, where it prints data,
``--json``. Exit codes: 0 success, 1 an error we explain, 2 bad usage
(``doctor``: 3 when it found warnings or critical issues).

One module per group of commands, each with its own ``typer.Typer``; this
module assembles them into :data:`app`, in the order ``haive-lg --help`` lists
them. What they share (options, consoles, the checkpointer they open, printing)
is in ``_common``; no command module imports this package.
"""

from __future__ import annotations

import typer

from haive_langgraph.cli import (
    _analyze,
    _audit,
    _backup,
    _backup_schedule,  # noqa: F401 (adds schedule, list, chain to the backup group)
    _branches,
    _cache,
    _demo,
    _doctor,
    _history,
    _import,
    _keys,
    _schema,
    _tenants,
)

app = typer.Typer(
    name="haive-lg",
    help="haive-langgraph: PostgreSQL persistence for LangGraph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
"""The ``haive-lg`` command line (``haive-lg = haive_langgraph.cli:main``)."""
# Top-level commands: demo, migrate, threads, doctor, then time travel.
for _commands in (
    _demo.commands,
    _schema.commands,
    _doctor.commands,
    _history.commands,
    _branches.commands,
):
    app.add_typer(_commands)
app.add_typer(_keys.group, name="keys")
app.add_typer(_import.group, name="import")
app.add_typer(_backup.group, name="backup")
app.add_typer(_audit.group, name="audit")
app.add_typer(_cache.group, name="cache")
app.add_typer(_tenants.group, name="tenants")
app.add_typer(_analyze.group, name="analyze")


def main() -> None:
    """Entry point of the ``haive-lg`` script."""
    app()
