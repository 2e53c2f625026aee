"""``haive-lg import``: bring data over from ``langgraph-checkpoint-postgres`` and
``langchain-postgres`` databases.

* ``haive-lg import langgraph SOURCE_DSN``: threads, checkpoints, pending
  writes and LangGraph store items (with their vectors);
* ``haive-lg import chat-history SOURCE_DSN --table T``: a
  ``PostgresChatMessageHistory`` table;
* ``haive-lg import pgvector SOURCE_DSN --collection C``: a ``PGVector`` collection.

Each reads its source read-only, can run again (it continues; nothing
doubles), shows a progress bar, takes ``--dry-run`` and ``--tenant``, and
verifies the target against the source at the end (``--no-verify`` skips
it, ``--verify-only`` only compares). Exit codes: 0 done (and verified), 1
an error we explain or a verification that found differences, 2 bad usage.

Importing this module adds the commands to :data:`haive_langgraph.cli.app`
(``cli.py`` imports it at its end).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from haive_langgraph.cli import (
    DsnOption,
    JsonOption,
    SchemaOption,
    TenantOption,
    _fail,
    app,
    console,
    err,
    handled,
)
from haive_langgraph.errors import HaiveError

if TYPE_CHECKING:
    from haive_langgraph.ops.importers import ImportProgress, ImportReport, VerifyReport

# Differences printed before "... and N more" (--json lists up to 50).
SHOWN_MISMATCHES = 10


def _check_source(value: str) -> str:
    """The source DSN, checked before anything runs; errors never show its text."""
    from haive_langgraph.db import normalize_dsn

    try:
        return normalize_dsn(value, where="SOURCE_DSN")
    except HaiveError as exc:
        raise typer.BadParameter(str(exc)) from None


SourceArg = Annotated[
    str,
    typer.Argument(
        help="DSN of the source database (read only; prefer PGPASSWORD or ~/.pgpass "
        "for its password).",
        callback=_check_source,
        show_default=False,
    ),
]
SourceSchemaOption = Annotated[
    str, typer.Option("--source-schema", help="Schema of the source tables.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Read and decode everything, count, write nothing.")
]
NoVerifyOption = Annotated[
    bool, typer.Option("--no-verify", help="Skip the comparison of source and target.")
]
VerifyOnlyOption = Annotated[
    bool, typer.Option("--verify-only", help="Only compare source and target; write nothing.")
]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Rows read per query.")]

import_app = typer.Typer(
    help="Import from langgraph-checkpoint-postgres and langchain-postgres databases.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@contextmanager
def _progress(as_json: bool) -> Iterator[Callable[[ImportProgress], None]]:
    """A progress bar per phase on stderr (silent with --json); yields the callback."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=as_json, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def callback(event: ImportProgress) -> None:
            task = tasks.get(event.phase)
            if task is None:
                task = tasks[event.phase] = bar.add_task(event.phase, total=event.total, detail="")
            bar.update(task, completed=event.done, total=event.total, detail=event.detail[:40])

        yield callback
        for task in tasks.values():
            bar.update(task, total=bar.tasks[task].completed)


def _show_verification(result: VerifyReport) -> None:
    checked = ", ".join(f"{n:,} {kind}" for kind, n in result.checked.items()) or "nothing"
    if result.ok:
        console.print(f"verified: {checked} identical in {result.seconds:.2f}s")
        return
    err.print(
        f"[bold red]verification failed:[/] {result.mismatch_count} difference(s) in {checked}"
    )
    for line in result.mismatches[:SHOWN_MISMATCHES]:
        err.print(f"  {line}")
    if result.mismatch_count > SHOWN_MISMATCHES:
        err.print(f"  ... and {result.mismatch_count - SHOWN_MISMATCHES} more (--json lists 50)")


def _finish(report: ImportReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        title = f"{'Dry run: ' if report.dry_run else ''}import from {report.source}"
        if report.tenant_id:
            title += f" into tenant {report.tenant_id!r}"
        table = Table(title=title)
        for col in (
            "rows",
            "source",
            "would import" if report.dry_run else "imported",
            "already there",
            "left out",
        ):
            table.add_column(col, justify="left" if col == "rows" else "right")
        for kind, c in report.counts.items():
            table.add_row(
                kind,
                f"{c.source:,}",
                f"{c.imported:,}",
                f"{c.skipped:,}",
                f"{c.dropped:,}" if c.dropped else "",
            )
        console.print(table)
        for note in report.notes:
            console.print(f"note: {note}")
        console.print(f"{'read' if report.dry_run else 'imported'} in {report.seconds:.2f}s")
        if report.verification is not None:
            _show_verification(report.verification)
    if not report.ok:
        raise typer.Exit(1)


def _verified(result: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        _show_verification(result)
    if not result.ok:
        raise typer.Exit(1)


def _exclusive(dry_run: bool, verify_only: bool) -> None:
    if dry_run and verify_only:
        _fail("--dry-run and --verify-only contradict each other", 2)


@import_app.command("langgraph")
@handled
def import_langgraph_cmd(
    source: SourceArg,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    source_schema: SourceSchemaOption = "public",
    no_checkpoints: Annotated[
        bool, typer.Option("--no-checkpoints", help="Leave the checkpoints out.")
    ] = False,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Leave the store items out.")
    ] = False,
    no_vectors: Annotated[
        bool, typer.Option("--no-vectors", help="Import store items without their vectors.")
    ] = False,
    store_fields: Annotated[
        list[str] | None,
        typer.Option(
            "--store-field",
            help="Indexed field of the store (repeatable; default: "
            "the fields the source's vectors name).",
        ),
    ] = None,
    dry_run: DryRunOption = False,
    no_verify: NoVerifyOption = False,
    verify_only: VerifyOnlyOption = False,
    batch_size: BatchOption = 200,
    as_json: JsonOption = False,
) -> None:
    """Import a langgraph-checkpoint-postgres database: threads, checkpoints, pending
    writes, and LangGraph store items with their vectors."""
    from haive_langgraph.ops.importers import import_langgraph, verify_langgraph

    _exclusive(dry_run, verify_only)
    options: dict[str, Any] = {
        "tenant_id": tenant,
        "schema": schema,
        "source_schema": source_schema,
        "checkpoints": not no_checkpoints,
        "store": not no_store,
        "vectors": not no_vectors,
        "store_index": {"fields": list(store_fields)} if store_fields else None,
        "batch_size": batch_size,
    }
    with _progress(as_json) as progress:
        if verify_only:
            result = verify_langgraph(source, dsn, progress=progress, **options)
        else:
            report = import_langgraph(
                source, dsn, dry_run=dry_run, verify=not no_verify, progress=progress, **options
            )
    if verify_only:
        _verified(result, as_json)
    else:
        _finish(report, as_json)


@import_app.command("chat-history")
@handled
def import_chat_history_cmd(
    source: SourceArg,
    table: Annotated[
        str, typer.Option("--table", help="The PostgresChatMessageHistory table (table_name).")
    ],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    source_schema: SourceSchemaOption = "public",
    dry_run: DryRunOption = False,
    no_verify: NoVerifyOption = False,
    verify_only: VerifyOnlyOption = False,
    batch_size: BatchOption = 500,
    as_json: JsonOption = False,
) -> None:
    """Import a langchain-postgres PostgresChatMessageHistory table (session -> history)."""
    from haive_langgraph.ops.importers import import_chat_history, verify_chat_history

    _exclusive(dry_run, verify_only)
    options: dict[str, Any] = {
        "table": table,
        "source_schema": source_schema,
        "tenant_id": tenant,
        "schema": schema,
        "batch_size": batch_size,
    }
    with _progress(as_json) as progress:
        if verify_only:
            result = verify_chat_history(source, dsn, progress=progress, **options)
        else:
            report = import_chat_history(
                source, dsn, dry_run=dry_run, verify=not no_verify, progress=progress, **options
            )
    if verify_only:
        _verified(result, as_json)
    else:
        _finish(report, as_json)


@import_app.command("pgvector")
@handled
def import_pgvector_cmd(
    source: SourceArg,
    collection: Annotated[str, typer.Option("--collection", help="The PGVector collection.")],
    target_collection: Annotated[
        str | None, typer.Option("--target-collection", help="Our collection (default: same).")
    ] = None,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    source_schema: SourceSchemaOption = "public",
    dry_run: DryRunOption = False,
    no_verify: NoVerifyOption = False,
    verify_only: VerifyOnlyOption = False,
    batch_size: BatchOption = 500,
    as_json: JsonOption = False,
) -> None:
    """Import a langchain-postgres PGVector collection into PostgresVectorStore (vectors copied)."""
    from haive_langgraph.ops.importers import import_pgvector, verify_pgvector

    _exclusive(dry_run, verify_only)
    options: dict[str, Any] = {
        "collection": collection,
        "target_collection": target_collection,
        "source_schema": source_schema,
        "tenant_id": tenant,
        "schema": schema,
        "batch_size": batch_size,
    }
    with _progress(as_json) as progress:
        if verify_only:
            result = verify_pgvector(source, dsn, progress=progress, **options)
        else:
            report = import_pgvector(
                source, dsn, dry_run=dry_run, verify=not no_verify, progress=progress, **options
            )
    if verify_only:
        _verified(result, as_json)
    else:
        _finish(report, as_json)
