"""``haive-lg doctor``: the advisor (sizes, bloat, indexes, slow statements, settings).

Exit codes: 0 healthy, 1 an error we explain, 2 bad usage, 3 warnings or
critical findings.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from haive_langgraph.cli._common import (
    DatabaseOptions,
    command,
    console,
    human,
    print_json,
    repeatable,
    usage,
    working,
)

EXIT_FINDINGS = 3

commands = typer.Typer()

_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _filter_key(text: str) -> tuple[str, int]:
    key, sep, count = text.rpartition("=")
    if not sep or not key or not count.isdigit():
        usage(f"--filter-key {text!r} is not KEY=USES, e.g. status=1200")
    return key, int(count)


@commands.command("doctor")
@command
def doctor(
    *,
    where: DatabaseOptions,
    tenants: Annotated[
        bool, typer.Option("--tenants/--no-tenants", help="Measure sizes per tenant (scans).")
    ] = True,
    filter_keys: Annotated[
        list[str] | None, repeatable("--filter-key", "Store filter key and its uses, KEY=USES")
    ] = None,
) -> None:
    """Check sizes, bloat, indexes, slow statements and settings; print fixes.

    Exits with code 3 when something is a warning or critical.
    """
    from haive_langgraph.ops.doctor import diagnose

    keys = dict(_filter_key(k) for k in filter_keys or [])
    with working(where.as_json, "examining ..."):
        report = diagnose(where.dsn, schema=where.schema, tenants=tenants, filter_keys=keys)
    if where.as_json:
        print_json(report.as_dict())
    else:
        sizes = Table(title=f"Schema {report.schema} (PostgreSQL {report.server_version})")
        for col in ("table", "total", "table", "indexes", "toast", "rows", "dead rows"):
            sizes.add_column(col, justify="left" if col == "table" else "right")
        for t in report.tables:
            sizes.add_row(
                t.table,
                human(t.total_bytes),
                human(t.table_bytes),
                human(t.index_bytes),
                human(t.toast_bytes),
                f"{t.rows:,}",
                f"{t.dead_rows:,}",
            )
        console.print(sizes)
        if report.tenants:
            per = Table(title="Largest tenants (row data)")
            for col in ("tenant", "table", "rows", "bytes"):
                per.add_column(col, justify="right" if col in ("rows", "bytes") else "left")
            for s in report.tenants[:15]:
                per.add_row(s.tenant_id or "''", s.table, f"{s.rows:,}", human(s.bytes))
            console.print(per)
        if report.statements:
            slow = Table(title="Slowest statements (pg_stat_statements)")
            for col in ("mean ms", "calls", "statement"):
                slow.add_column(col)
            for st in report.statements[:5]:
                slow.add_row(f"{st.mean_ms:.2f}", f"{st.calls:,}", " ".join(st.query.split())[:100])
            console.print(slow)
        if not report.findings:
            console.print("[green]no findings[/]")
        for f in report.findings:
            style = _SEVERITY_STYLE[f.severity]
            console.print(
                f"\n[{style}]{f.severity.upper()}[/] [bold]{f.title}[/] [dim]({f.code})[/]"
            )
            console.print(f"  {f.explanation}", soft_wrap=True)
            for line in f.fix:
                console.print(Text(f"  {line}", style="green"), soft_wrap=True)
    if not report.healthy:
        raise typer.Exit(EXIT_FINDINGS)
