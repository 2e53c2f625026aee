"""``haive-lg tenants analytics`` and ``haive-lg tenants retention``: admin figures per
tenant over a time range, and each tenant's ``data_retention_days`` applied (or,
``--dry-run``, reported)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from haive_langgraph.cli._common import (
    DatabaseOptions,
    command,
    console,
    human,
    print_json,
    repeatable,
    require_schema,
    usage,
    working,
)

commands = typer.Typer()

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, flag: str, now: dt.datetime) -> dt.datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` (back from ``now``) or an ISO date or time
    (UTC unless it names an offset)."""
    if match := re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text):
        return now - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        usage(f"{flag} {text!r} is neither a duration (30d, 12h, 90m, 2w) nor an ISO date or time")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@commands.command("analytics")
@command
def analytics(
    *,
    where: DatabaseOptions,
    since: Annotated[
        str, typer.Option("--since", help="Start: a duration back (30d, 12h, 2w) or an ISO date.")
    ] = "30d",
    until: Annotated[
        str | None, typer.Option("--until", help="End (excluded): the same forms; default now.")
    ] = None,
    chart: Annotated[
        Path | None,
        typer.Option("--chart", help="Also write a PNG of usage per day (needs matplotlib)."),
    ] = None,
) -> None:
    """Per tenant: conversations, sessions, messages, tokens and cost by model, storage,
    requests."""
    from haive_langgraph.tenants._analytics import tenant_analytics

    now = dt.datetime.now(dt.UTC)
    end = parse_moment(until, "--until", now) if until is not None else now
    start = parse_moment(since, "--since", end)
    require_schema(where.dsn, where.schema, "conversations", "tenant_analytics")
    with working(where.as_json, "measuring ..."):
        usages = tenant_analytics(where.dsn, since=start, until=end, schema=where.schema)
    if chart is not None:
        from haive_langgraph.tenants._chart import write_usage_chart

        write_usage_chart(usages, chart, since=start, until=end)
    if where.as_json:
        print_json(
            {
                "since": start.isoformat(),
                "until": end.isoformat(),
                "tenants": [u.as_dict() for u in usages],
                "chart": str(chart) if chart is not None else None,
            }
        )
        return
    title = f"Tenants, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    table = Table(title=title)
    columns = ("tenant", "name", "conversations", "sessions", "messages", "tokens", "cost")
    for col in (*columns, "checkpoints", "conversations", "store", "requests"):
        table.add_column(col, justify="left" if col in ("tenant", "name") else "right")
    for u in usages:
        table.add_row(
            u.tenant_id or "(default)",
            u.display_name,
            f"{u.conversations:,}",
            f"{u.sessions:,}",
            f"{u.messages:,}",
            f"{u.total_tokens:,}",
            f"{u.cost:,.4f}",
            human(u.storage["checkpoints"]),
            human(u.storage["conversations"]),
            human(u.storage["store"]),
            "n/a" if u.requests is None else f"{u.requests:,}",
        )
    console.print(table)
    models = Table(title="Usage by model")
    for col in ("tenant", "model", "messages", "input", "output", "total", "cost"):
        models.add_column(col, justify="left" if col in ("tenant", "model") else "right")
    for u in usages:
        for name, m in u.by_model.items():
            models.add_row(
                u.tenant_id or "(default)",
                name or "(none)",
                f"{m.messages:,}",
                f"{m.input_tokens:,}",
                f"{m.output_tokens:,}",
                f"{m.total_tokens:,}",
                f"{m.cost:,.4f}",
            )
    if models.row_count:
        console.print(models)
    if chart is not None:
        console.print(f"chart written to {chart}")


@commands.command("retention")
@command
def retention(
    *,
    where: DatabaseOptions,
    tenants: Annotated[
        list[str] | None, repeatable("--tenant", "Only this tenant (default: every tenant)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Change nothing; report what would go.")
    ] = False,
) -> None:
    """Apply each tenant's data_retention_days to its checkpoints, conversations, sessions
    and store."""
    from haive_langgraph.tenants._retention import tenant_retention

    require_schema(where.dsn, where.schema, "tenants")
    with working(where.as_json, "applying retention ..."):
        report = tenant_retention(
            where.dsn, dry_run=dry_run, tenant_ids=tenants, schema=where.schema
        )
    if where.as_json:
        print_json(report.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    table = Table(title=f"Per-tenant retention ({'dry run' if dry_run else 'applied'})")
    for col in ("tenant", "days", "cutoff", "component", verb, "bytes"):
        table.add_column(col, justify="right" if col in ("days", "bytes") else "left")
    for t in report.tenants:
        for name, figures in t.components().items():
            rows = ", ".join(f"{n:,} {k}" for k, n in figures.items() if k != "bytes")
            table.add_row(
                t.tenant_id,
                f"{t.retention_days:g}",
                f"{t.cutoff:%Y-%m-%d %H:%M}",
                name,
                rows,
                human(figures["bytes"]),
            )
    console.print(table)
    if not report.tenants:
        console.print("no tenant has a data_retention_days (or a compliance mode)")
    for t in report.tenants:
        if t.skipped_threads:
            console.print(
                f"{t.tenant_id}: {len(t.skipped_threads)} busy thread(s) skipped (next run)"
            )
