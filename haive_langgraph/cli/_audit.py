"""``haive-lg audit`` (query the audit log) and ``audit enable|disable|status|prune``.

Options given before a subcommand (``haive-lg audit --dsn D status``) count as
the subcommand's own.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from haive_langgraph.cli._common import (
    DatabaseOptions,
    DsnOption,
    JsonOption,
    SchemaOption,
    command,
    console,
    print_json,
    repeatable,
    require_schema,
    usage,
)

group = typer.Typer(
    help="Audit log: query it (no subcommand), enable, disable, status, prune.",
    invoke_without_command=True,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` (exits with code 2 otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        usage(f"{option} {text!r} is not a duration such as 30d, 12h, 90m, 2w")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_moment(text: str | None, option: str) -> dt.datetime | None:
    """An ISO date/time (naive means UTC) or a duration ago (``2h``)."""
    if text is None:
        return None
    if _DURATION.fullmatch(text.strip().lower()):
        return dt.datetime.now(dt.UTC) - parse_duration(text, option)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        usage(f"{option} {text!r} is neither an ISO date/time nor a duration such as 2h")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@group.callback()
@command
def audit_query(
    ctx: typer.Context,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user.")] = None,
    table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
    operation: Annotated[
        str | None, typer.Option("--operation", help="INSERT, UPDATE, DELETE, READ ...")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO time, or an age such as 2h.")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time, or an age.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most entries to show.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Show audit entries, newest first (or run a subcommand)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"dsn": dsn, "schema": schema, "json": as_json}
        return
    from haive_langgraph.ops.audit import query

    require_schema(dsn, schema, "audit")
    events = query(
        dsn,
        schema=schema,
        tenant_id=tenant,
        user_id=user,
        table=table,
        operation=operation,
        since=parse_moment(since, "--since"),
        until=parse_moment(until, "--until"),
        limit=limit,
    )
    if as_json:
        print_json([e.as_dict() for e in events])
        return
    out = Table(title="Audit log (newest first)")
    for col in ("id", "time", "tenant", "user", "operation", "table", "key"):
        out.add_column(col)
    for e in events:
        out.add_row(
            str(e.id),
            f"{e.occurred_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
            e.tenant_id,
            e.user_id,
            e.operation,
            e.table,
            json.dumps(e.object_key, ensure_ascii=False)[:80],
        )
    console.print(out)


@dataclass(frozen=True, slots=True)
class AuditOptions(DatabaseOptions):
    """``--dsn``, ``--schema``, ``--json`` of an audit subcommand."""

    def under(self, ctx: typer.Context) -> AuditOptions:
        """These options, each not given taken from before the subcommand
        (``haive-lg audit --dsn D status``)."""
        given = ctx.obj or {}
        return AuditOptions(
            self.dsn or given.get("dsn"),
            self.schema or given.get("schema"),
            self.as_json or bool(given.get("json")),
        )


def _status_out(status: Any, as_json: bool, title: str) -> None:
    if as_json:
        print_json(status.as_dict())
        return
    console.print(
        f"{title}: auditing is [bold]{'on' if status.enabled else 'off'}[/]"
        + (", reads recorded" if status.reads else "")
        + (f", retention {status.retention}" if status.retention else ", no retention")
    )
    console.print(f"tables audited: {', '.join(status.tables) or 'none'}")
    if status.uncovered:
        console.print(
            f"[yellow]not audited[/]: {', '.join(status.uncovered)} (run `haive-lg audit enable`)"
        )
    console.print(
        f"{status.entries:,} entries" + (f", oldest {status.oldest}" if status.oldest else "")
    )


@group.command("enable")
@command
def audit_enable(
    ctx: typer.Context,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tables: Annotated[list[str] | None, repeatable("--table", "Table pattern to audit")] = None,
    reads: Annotated[
        bool | None, typer.Option("--reads/--no-reads", help="Also record reads libraries report.")
    ] = None,
    retention: Annotated[
        str | None, typer.Option("--retention", help="Keep entries this long, e.g. 90d.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start auditing changes (triggers on every table, or the --table patterns)."""
    from haive_langgraph.ops.audit import enable

    given = AuditOptions(dsn, schema, as_json).under(ctx)
    status = enable(
        given.dsn,
        schema=given.schema,
        tables=tables or None,
        reads=reads,
        retention=parse_duration(retention, "--retention") if retention else None,
    )
    _status_out(status, given.as_json, "enabled")


@group.command("disable")
@command
def audit_disable(ctx: typer.Context, *, options: AuditOptions) -> None:
    """Stop auditing (recorded entries stay)."""
    from haive_langgraph.ops.audit import disable

    given = options.under(ctx)
    require_schema(given.dsn, given.schema, "audit")
    _status_out(disable(given.dsn, schema=given.schema), given.as_json, "disabled")


@group.command("status")
@command
def audit_status(ctx: typer.Context, *, options: AuditOptions) -> None:
    """Whether auditing is on, which tables are covered, how large the log is."""
    from haive_langgraph.ops.audit import status

    given = options.under(ctx)
    require_schema(given.dsn, given.schema)
    _status_out(status(given.dsn, schema=given.schema), given.as_json, "status")


@group.command("prune")
@command
def audit_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Delete entries older than this, e.g. 90d (default: the retention).",
        ),
    ] = None,
    *,
    options: AuditOptions,
) -> None:
    """Apply the audit log's retention: delete old entries."""
    from haive_langgraph.ops.audit import prune

    given = options.under(ctx)
    require_schema(given.dsn, given.schema, "audit")
    deleted = prune(
        given.dsn,
        schema=given.schema,
        older_than=parse_duration(older_than, "--older-than") if older_than else None,
    )
    if given.as_json:
        print_json({"deleted": deleted})
        return
    console.print(f"{deleted:,} audit entries deleted")
