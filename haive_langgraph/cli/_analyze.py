"""``haive-lg analyze``: our statements over a window, by feature, with index advice;
``haive-lg analyze snapshot`` records the reading windows start from."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from haive_langgraph.cli._audit import parse_duration
from haive_langgraph.cli._common import (
    DsnOption,
    JsonOption,
    SchemaOption,
    command,
    console,
    err,
    print_json,
)

group = typer.Typer(
    help="Query analysis over pg_stat_statements (no subcommand), snapshot.",
    invoke_without_command=True,
)


@group.callback()
@command
def analyze(
    ctx: typer.Context,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    since: Annotated[
        str, typer.Option("--since", help="The window, ending now: 7d, 12h, 2w ...")
    ] = "7d",
    min_ms: Annotated[
        float,
        typer.Option("--min-ms", min=0, help="List statements averaging at least this many ms."),
    ] = 100.0,
    explain: Annotated[
        bool,
        typer.Option("--explain/--no-explain", help="Read the slow statements' plans for indexes."),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Our statements over a window: per feature, the slow ones, the indexes to create."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"dsn": dsn, "schema": schema, "json": as_json}
        return
    from haive_langgraph.ops.queries import analyze_queries

    window = parse_duration(since, "--since")
    analysis = analyze_queries(dsn, schema=schema, since=window, min_ms=min_ms, explain=explain)
    if as_json:
        print_json(analysis.as_dict())
        return
    start = f"{analysis.start:%Y-%m-%d %H:%M}" if analysis.start else "the server's start"
    features = Table(title=f"Statements by feature, {start} to {analysis.end:%Y-%m-%d %H:%M} UTC")
    for col in ("feature", "statements", "calls", "total ms", "mean ms", "p95 ms"):
        features.add_column(col, justify="left" if col == "feature" else "right")
    for f in analysis.features:
        features.add_row(*_row(f.feature, f.statements, f.calls, f.total_ms, f.mean_ms, f.p95_ms))
    console.print(features)
    slow = Table(title=f"Statements averaging {min_ms:g} ms or more")
    for col in ("feature", "calls", "mean ms", "p95 ms", "statement"):
        slow.add_column(col, justify="right" if "ms" in col or col == "calls" else "left")
    for s in analysis.statements:
        text = " ".join(s.query.split())
        slow.add_row(s.feature, f"{s.calls:,}", f"{s.mean_ms:.1f}", f"{s.p95_ms:.1f}", text[:120])
    console.print(slow)
    for advice in analysis.advice:
        gain = (
            f" (estimated cost {advice.cost_before:,.0f} -> {advice.cost_after:,.0f}, hypopg)"
            if advice.cost_after is not None
            else ""
        )
        console.print(f"[bold]index[/] {advice.reason}{gain}\n  {advice.create};")
    for note in analysis.notes:
        err.print(f"note: {note}")


def _row(feature: str, statements: int, calls: int, *ms: float) -> list[str]:
    return [feature, f"{statements:,}", f"{calls:,}", *(f"{m:,.1f}" for m in ms)]


@group.command("snapshot")
@command
def snapshot(
    ctx: typer.Context,
    keep: Annotated[
        str, typer.Option("--keep", help="Delete snapshots older than this (e.g. 90d).")
    ] = "90d",
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record the counters of our statements now (run it on a schedule, e.g. hourly)."""
    from haive_langgraph.ops.queries import snapshot_queries

    parent: dict[str, Any] = ctx.obj or {}
    taken = snapshot_queries(
        dsn or parent.get("dsn"),
        schema=schema or parent.get("schema"),
        keep=parse_duration(keep, "--keep"),
    )
    if as_json or parent.get("json"):
        print_json(
            {
                "id": taken.id,
                "taken_at": taken.taken_at.isoformat(),
                "statements": taken.statements,
                "pruned": taken.pruned,
            }
        )
        return
    console.print(
        f"snapshot {taken.id} at {taken.taken_at:%Y-%m-%d %H:%M:%S}: {taken.statements} "
        f"statements recorded, {taken.pruned} old snapshots deleted"
    )
