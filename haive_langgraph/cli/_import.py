"""``haive-lg import``: bring data over from ``langgraph-checkpoint-postgres`` and
``langchain-postgres`` databases.

* ``haive-lg import langgraph SOURCE_DSN``: threads, checkpoints, pending
  writes and LangGraph store items (with their vectors);
* ``haive-lg import chat-history SOURCE_DSN --table T``: a
  ``PostgresChatMessageHistory`` table;
* ``haive-lg import pgvector SOURCE_DSN --collection C``: a ``PGVector`` collection
  (its vectors copied, or embedded again with ``--re-embed --embeddings MODULE:ATTR``).

Each reads its source read-only, can run again (it continues; nothing
doubles), shows a progress bar, takes ``--dry-run`` and ``--tenant``, and
verifies the target against the source at the end (``--no-verify`` skips
it, ``--verify-only`` only compares). Exit codes: 0 done (and verified), 1
an error we explain or a verification that found differences, 2 bad usage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.progress import MofNCompleteColumn
from rich.table import Table

from haive_langgraph.cli._common import (
    DsnOption,
    JsonOption,
    PhaseStep,
    SchemaOption,
    TenantOption,
    checked_dsn,
    command,
    console,
    err,
    phase_progress,
    print_json,
    usage,
)

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from haive_langgraph.ops.importers import ImportProgress, ImportReport, VerifyReport

R = TypeVar("R", "ImportReport", "VerifyReport")

# Differences printed before "... and N more" (--json lists up to 50).
SHOWN_MISMATCHES = 10


def _check_source(value: str) -> str:
    return checked_dsn(value, "SOURCE_DSN")


SourceArg = Annotated[
    str,
    typer.Argument(
        help="DSN of the source database (read only; prefer PGPASSWORD or ~/.pgpass "
        "for its password).",
        callback=_check_source,
        show_default=False,
    ),
]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Rows read per query.")]


@dataclass(frozen=True, slots=True)
class ImportTarget:
    """``--dsn``, ``--schema``, ``--tenant`` (ours) and ``--source-schema``."""

    dsn: DsnOption = None
    schema: SchemaOption = None
    tenant: TenantOption = None
    source_schema: Annotated[
        str, typer.Option("--source-schema", help="Schema of the source tables.")
    ] = "public"


@dataclass(frozen=True, slots=True)
class ImportChecks:
    """``--dry-run``, ``--no-verify``, ``--verify-only``: what an import writes and checks."""

    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and decode everything, count, write nothing.")
    ] = False
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the comparison of source and target.")
    ] = False
    verify_only: Annotated[
        bool, typer.Option("--verify-only", help="Only compare source and target; write nothing.")
    ] = False

    def __post_init__(self) -> None:
        if self.dry_run and self.verify_only:
            usage("--dry-run and --verify-only contradict each other")


group = typer.Typer(
    help="Import from langgraph-checkpoint-postgres and langchain-postgres databases.",
    no_args_is_help=True,
)


def _step(event: ImportProgress) -> PhaseStep:
    return PhaseStep(event.phase, event.done, event.total, event.detail[:40])


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


def _show_report(report: ImportReport) -> None:
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


def _run(
    importer: Callable[..., ImportReport],
    verifier: Callable[..., VerifyReport],
    source: str,
    target: ImportTarget,
    checks: ImportChecks,
    batch_size: int,
    as_json: bool,
    **options: Any,
) -> None:
    """Run an import (or only its verification), print its report; exit 1 unless all is well."""
    common: dict[str, Any] = {
        "tenant_id": target.tenant,
        "schema": target.schema,
        "source_schema": target.source_schema,
        "batch_size": batch_size,
        **options,
    }
    with phase_progress(as_json, MofNCompleteColumn(), _step) as progress:
        if checks.verify_only:
            result = verifier(source, target.dsn, progress=progress, **common)
        else:
            report = importer(
                source,
                target.dsn,
                dry_run=checks.dry_run,
                verify=not checks.no_verify,
                progress=progress,
                **common,
            )
    if checks.verify_only:
        _finish(result, as_json, _show_verification)
    else:
        _finish(report, as_json, _show_report)


def _finish(outcome: R, as_json: bool, show: Callable[[R], None]) -> None:
    """Print a report (as JSON, or as ``show`` does); exit 1 unless it is all well."""
    if as_json:
        print_json(outcome.as_dict())
    else:
        show(outcome)
    if not outcome.ok:
        raise typer.Exit(1)


@group.command("langgraph")
@command
def import_langgraph_cmd(
    source: SourceArg,
    *,
    target: ImportTarget,
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
    checks: ImportChecks,
    batch_size: BatchOption = 200,
    as_json: JsonOption = False,
) -> None:
    """Import a langgraph-checkpoint-postgres database: threads, checkpoints, pending
    writes, and LangGraph store items with their vectors."""
    from haive_langgraph.ops.importers import import_langgraph, verify_langgraph

    _run(
        import_langgraph,
        verify_langgraph,
        source,
        target,
        checks,
        batch_size,
        as_json,
        checkpoints=not no_checkpoints,
        store=not no_store,
        vectors=not no_vectors,
        store_index={"fields": list(store_fields)} if store_fields else None,
    )


@group.command("chat-history")
@command
def import_chat_history_cmd(
    source: SourceArg,
    table: Annotated[
        str, typer.Option("--table", help="The PostgresChatMessageHistory table (table_name).")
    ],
    *,
    target: ImportTarget,
    checks: ImportChecks,
    batch_size: BatchOption = 500,
    as_json: JsonOption = False,
) -> None:
    """Import a langchain-postgres PostgresChatMessageHistory table (session -> history)."""
    from haive_langgraph.ops.importers import import_chat_history, verify_chat_history

    _run(
        import_chat_history,
        verify_chat_history,
        source,
        target,
        checks,
        batch_size,
        as_json,
        table=table,
    )


def load_embeddings(spec: str) -> Embeddings:
    """The embeddings model ``MODULE:ATTR`` names: an ``Embeddings`` instance, or a class
    (or function) called with no arguments to make one (``langchain_openai:OpenAIEmbeddings``).

    This imports and runs the code named, as ``python -m`` would: only ever from the
    operator's own ``--embeddings`` flag, never from the environment or the source.
    Exits with code 2 when the name does not resolve to an embeddings model.
    """
    from langchain_core.embeddings import Embeddings

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        usage(f"--embeddings {spec!r} is not MODULE:ATTR, e.g. langchain_openai:OpenAIEmbeddings")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        usage(f"--embeddings {spec!r} cannot be loaded: {exc}")
    model = found
    if callable(found) and not isinstance(found, Embeddings):
        try:
            model = found()
        except Exception as exc:  # the operator's own code: say what it raised
            usage(f"--embeddings {spec!r} cannot be made: {type(exc).__name__}: {exc}")
    if not isinstance(model, Embeddings):
        usage(f"--embeddings {spec!r} is not a LangChain Embeddings (got {type(model).__name__})")
    return model


@group.command("pgvector")
@command
def import_pgvector_cmd(
    source: SourceArg,
    collection: Annotated[str, typer.Option("--collection", help="The PGVector collection.")],
    target_collection: Annotated[
        str | None, typer.Option("--target-collection", help="Our collection (default: same).")
    ] = None,
    embeddings: Annotated[
        str | None,
        typer.Option(
            "--embeddings",
            metavar="MODULE:ATTR",
            help="The collection's embeddings model, imported and run (trusted code): "
            "an Embeddings instance, or a class made with no arguments. Used by --re-embed "
            "and for documents the source holds no vector for.",
        ),
    ] = None,
    re_embed: Annotated[
        bool,
        typer.Option("--re-embed", help="Embed every document again with --embeddings."),
    ] = False,
    dims: Annotated[
        int | None,
        typer.Option(
            "--dims",
            min=1,
            help="Dimensions of our vectors (default: the source's, or what the model declares).",
        ),
    ] = None,
    *,
    target: ImportTarget,
    checks: ImportChecks,
    batch_size: BatchOption = 500,
    as_json: JsonOption = False,
) -> None:
    """Import a langchain-postgres PGVector collection into PostgresVectorStore (vectors copied)."""
    from haive_langgraph.ops.importers import import_pgvector, verify_pgvector

    if re_embed and embeddings is None:
        usage("--re-embed needs --embeddings MODULE:ATTR (the model to embed with)")
    _run(
        import_pgvector,
        verify_pgvector,
        source,
        target,
        checks,
        batch_size,
        as_json,
        collection=collection,
        target_collection=target_collection,
        embeddings=load_embeddings(embeddings) if embeddings else None,
        reembed=re_embed,
        dims=dims,
    )
