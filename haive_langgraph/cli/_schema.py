"""``haive-lg migrate`` (create or upgrade the tables) and ``haive-lg threads`` (list them)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import MofNCompleteColumn
from rich.table import Table

from haive_langgraph.cli._common import (
    DatabaseOptions,
    PhaseStep,
    TenantOption,
    command,
    console,
    open_saver,
    phase_progress,
    print_json,
    repeatable,
    usage,
)
from haive_langgraph.db._online_migrations import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from haive_langgraph.db._online_migrations import MigrationProgress
    from haive_langgraph.ops._online import PlannedStep

commands = typer.Typer()


@commands.command()
@command
def migrate(
    *,
    where: DatabaseOptions,
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
    to: Annotated[
        list[str] | None,
        repeatable(
            "--to",
            "Stop a component at a version, as COMPONENT:VERSION (e.g. checkpoints:3); "
            "versions are per component, the others go to their latest",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, help="Rows per batch of a data backfill."),
    ] = DEFAULT_BATCH_SIZE,
    plan: Annotated[
        bool,
        typer.Option("--plan", help="List the pending steps and what each locks; change nothing."),
    ] = False,
) -> None:
    """Create or upgrade the tables online, one step at a time (or print the plan, or the SQL).

    Each migration commits on its own; data backfills run in committed batches
    and indexes are built CONCURRENTLY, so writers keep working.
    """
    from haive_langgraph.db._config import PersistenceConfig
    from haive_langgraph.db._identifiers import validate_identifier
    from haive_langgraph.db._migrations import migration_script
    from haive_langgraph.db._online_migrations import parse_target
    from haive_langgraph.ops import all_components
    from haive_langgraph.ops._online import migrate as migrate_online
    from haive_langgraph.ops._online import migration_plan

    target = validate_identifier(
        where.schema or PersistenceConfig().schema_name, what="schema name"
    )
    try:
        versions = parse_target(to or [])
    except ValueError as exc:
        usage(f"--to {exc}")
    if sql:
        if versions or plan:
            usage("--sql prints every migration: it takes no --to or --plan")
        sys.stdout.write(migration_script(all_components(), target, partitions=partitions))
        return
    if plan:
        _print_plan(
            migration_plan(where.dsn, schema=target, target_version=versions), where.as_json
        )
        return
    with phase_progress(where.as_json, MofNCompleteColumn(), _step) as progress:
        applied = migrate_online(
            where.dsn,
            schema=target,
            target_version=versions,
            batch_size=batch_size,
            on_progress=progress,
            partitions=partitions,
        )
    if where.as_json:
        print_json({"applied": applied})
        return
    if partitions:
        console.print(f"partitioned tables: {partitions} hash partitions each")
    for component, done in applied.items():
        if done:
            console.print(f"{component}: applied {', '.join(map(str, done))}")
        else:
            console.print(f"{component}: up to date")


def _step(event: MigrationProgress) -> PhaseStep:
    rows = f" ({event.rows:,} rows, {event.batches} batches)" if event.kind == "backfill" else ""
    return PhaseStep(
        "migrate",
        event.step if event.done else event.step - 1,
        event.steps,
        f"{event.component} {event.version}: {event.description}{rows}",
    )


def _print_plan(steps: list[PlannedStep], as_json: bool) -> None:
    if as_json:
        print_json([step.as_dict() for step in steps])
        return
    if not steps:
        console.print("nothing to apply: every component is at its target version")
        return
    table = Table(title="Pending migrations")
    for col in ("step", "kind", "statement", "table", "lock", "blocks", "for"):
        table.add_column(col)
    for step in steps:
        for i, lock in enumerate(step.locks):
            table.add_row(
                f"{step.component} {step.version}: {step.description}" if i == 0 else "",
                step.kind if i == 0 else "",
                lock.action,
                lock.table or "-",
                lock.lock or "none",
                lock.blocks,
                lock.duration,
            )
    console.print(table)


@commands.command()
@command
def threads(
    *,
    where: DatabaseOptions,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(help="Threads to show.")] = 50,
    filter: Annotated[
        str | None,
        typer.Option("--filter", help='Metadata filter as JSON, e.g. {"user_id": "u1"}.'),
    ] = None,
) -> None:
    """List threads, most recently updated first."""
    try:
        parsed = json.loads(filter) if filter else None
    except json.JSONDecodeError as exc:
        usage(f"--filter is not valid JSON: {exc}")
    with open_saver(where.dsn, where.schema, tenant) as saver:
        page = saver.list_threads(parsed, limit=limit)
    if where.as_json:
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
