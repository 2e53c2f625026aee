"""``haive-lg migrate`` (create or upgrade the tables) and ``haive-lg threads`` (list them)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from haive_langgraph.cli._common import (
    DsnOption,
    JsonOption,
    SchemaOption,
    TenantOption,
    command,
    console,
    open_saver,
    print_json,
    usage,
)

commands = typer.Typer()


@commands.command()
@command
def migrate(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of applying it.")
    ] = False,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            help="Create the checkpoint, write and message tables hash-partitioned "
            "into N partitions (fresh schema only).",
        ),
    ] = None,
) -> None:
    """Create or upgrade the tables (or print the migration SQL)."""
    from haive_langgraph.db._config import PersistenceConfig
    from haive_langgraph.db._identifiers import validate_identifier
    from haive_langgraph.db._migrations import migration_script
    from haive_langgraph.ops import all_components

    target = validate_identifier(schema or PersistenceConfig().schema_name, what="schema name")
    if sql:
        sys.stdout.write(migration_script(all_components(), target, partitions=partitions))
        return
    from haive_langgraph.ops import migrate_all

    applied = migrate_all(dsn, schema=target, partitions=partitions)
    if partitions:
        console.print(f"partitioned tables: {partitions} hash partitions each")
    for component, versions in applied.items():
        if versions:
            console.print(f"{component}: applied {', '.join(map(str, versions))}")
        else:
            console.print(f"{component}: up to date")


@commands.command()
@command
def threads(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(help="Threads to show.")] = 50,
    filter: Annotated[
        str | None,
        typer.Option("--filter", help='Metadata filter as JSON, e.g. {"user_id": "u1"}.'),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List threads, most recently updated first."""
    try:
        parsed = json.loads(filter) if filter else None
    except json.JSONDecodeError as exc:
        usage(f"--filter is not valid JSON: {exc}")
    with open_saver(dsn, schema, tenant) as saver:
        page = saver.list_threads(parsed, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "thread_id": t.thread_id,
                    "created_at": t.created_at.isoformat(),
                    "updated_at": t.updated_at.isoformat(),
                    "checkpoint_count": t.checkpoint_count,
                    "metadata": t.metadata,
                }
                for t in page
            ]
        )
        return
    table = Table(title="Threads")
    for col in ("thread", "checkpoints", "updated", "created", "metadata"):
        table.add_column(col)
    for t in page:
        table.add_row(
            t.thread_id,
            str(t.checkpoint_count),
            f"{t.updated_at:%Y-%m-%d %H:%M:%S}",
            f"{t.created_at:%Y-%m-%d %H:%M:%S}",
            json.dumps(t.metadata)[:60],
        )
    console.print(table)
