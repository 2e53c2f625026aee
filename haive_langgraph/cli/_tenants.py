"""``haive-lg tenants``: the tenant registry (create, get, list, update, suspend, resume, delete).

Every command needs the ``tenants`` tables (``haive-lg migrate``); ``delete``
erases every row of the tenant in every component and asks for confirmation
(or ``--yes``). ``analytics`` and ``retention`` are in ``_tenant_analytics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from haive_langgraph.cli._common import (
    DatabaseOptions,
    command,
    console,
    print_json,
    require_schema,
    usage,
)
from haive_langgraph.cli._tenant_analytics import commands as analytics_commands

if TYPE_CHECKING:
    from haive_langgraph.tenants import Tenant, TenantQuota, TenantRegistry, TenantSettings

group = typer.Typer(
    help="Tenants: create, get, list, update, suspend, resume, delete; analytics, retention.",
    no_args_is_help=True,
)

TenantArgument = Annotated[str, typer.Argument(help="Tenant id.")]
_UNSET = ("none", "unlimited", "")
# A limit of TenantQuota: --max-sessions ... (Typer names the option after the field).
LimitOption = Annotated[str | None, typer.Option(help="Limit, or 'none'.")]


def _limit(text: str | None, option: str) -> int | None:
    """An option's limit: an integer, or ``none``/``unlimited`` (exits 2 otherwise)."""
    if text is None or text.strip().lower() in _UNSET:
        return None
    try:
        return int(text)
    except ValueError:
        usage(f"{option} {text!r} is neither an integer nor 'none'")


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """The options of ``create`` and ``update``: display name, settings and quota
    (each left as stored when not given)."""

    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA time zone, e.g. Europe/Paris.")
    ] = None
    retention_days: Annotated[
        str | None,
        typer.Option("--retention-days", help="Days data is kept, or 'none' (the mode's default)."),
    ] = None
    compliance: Annotated[
        str | None, typer.Option("--compliance", help="HIPAA, GDPR, or 'none'.")
    ] = None
    max_conversations: LimitOption = None
    max_sessions: LimitOption = None
    max_checkpoints_per_thread: LimitOption = None
    max_storage_bytes: LimitOption = None
    max_requests_per_minute: LimitOption = None
    max_tokens_per_month: LimitOption = None

    def settings(self, base: TenantSettings) -> TenantSettings | None:
        """``base`` with the settings given changed (``None``: none given)."""
        changes: dict[str, Any] = {}
        if self.timezone is not None:
            changes["timezone"] = self.timezone
        if self.retention_days is not None:
            changes["data_retention_days"] = _limit(self.retention_days, "--retention-days")
        if self.compliance is not None:
            mode = self.compliance.strip()
            changes["compliance_mode"] = None if mode.lower() in _UNSET else mode
        return replace(base, **changes) if changes else None

    def quota(self, base: TenantQuota) -> TenantQuota | None:
        """``base`` with the limits given changed (``None``: none given)."""
        changes = {
            name: _limit(getattr(self, name), "--" + name.replace("_", "-"))
            for name in (limit.name for limit in fields(base))  # an option per limit
            if getattr(self, name) is not None
        }
        return replace(base, **changes) if changes else None


@dataclass(frozen=True, slots=True)
class RegistryOptions(DatabaseOptions):
    """``--dsn``, ``--schema`` and ``--json``: the registry a command reads or changes,
    and how it prints."""

    @contextmanager
    def registry(self) -> Iterator[TenantRegistry]:
        """The registry on those tables (they must exist: ``haive-lg migrate``)."""
        from haive_langgraph.tenants import TenantRegistry

        require_schema(self.dsn, self.schema, "tenants")
        with TenantRegistry(self.dsn, schema=self.schema) as registry:
            yield registry


def _limits(tenant: Tenant) -> str:
    quota = tenant.quota.as_dict()
    return ", ".join(f"{k}={v:,}" for k, v in quota.items()) or "unlimited"


def _print(tenant: Tenant, as_json: bool) -> None:
    if as_json:
        print_json(tenant.as_dict())
        return
    effective = tenant.effective
    out = Table(title=f"Tenant {tenant.tenant_id}", show_header=False)
    out.add_column("field")
    out.add_column("value")
    rows = [
        ("display name", tenant.display_name),
        ("status", tenant.status),
        ("timezone", effective.timezone),
        ("compliance mode", effective.compliance_mode or "none"),
        (
            "retention",
            "none"
            if effective.data_retention_days is None
            else f"{effective.data_retention_days} days",
        ),
        ("encryption required", "yes" if effective.require_encryption else "no"),
        (
            "audit",
            "changes and reads"
            if effective.audit_reads
            else "changes"
            if effective.audit_writes
            else "not required",
        ),
        ("quota", _limits(tenant)),
        ("created", str(tenant.created_at)),
        ("updated", str(tenant.updated_at)),
    ]
    for field, value in rows:
        out.add_row(field, value)
    console.print(out)


@group.command("create")
@command
def tenants_create(
    tenant: TenantArgument, *, where: RegistryOptions, record: RecordOptions
) -> None:
    """Register a tenant (active), with its display name, settings and quota."""
    from haive_langgraph.tenants import TenantQuota, TenantSettings

    with where.registry() as registry:
        created = registry.create(
            tenant,
            display_name=record.name or "",
            settings=record.settings(TenantSettings()),
            quota=record.quota(TenantQuota()),
        )
    _print(created, where.as_json)


def _one_tenant_command(name: str, summary: str) -> None:
    """Add ``haive-lg tenants NAME TENANT``: the registry's method ``name`` (``get``,
    ``suspend``, ``resume``) on the tenant, which is then printed as it is."""

    @group.command(name, help=summary)
    @command
    def run(tenant: TenantArgument, *, where: RegistryOptions) -> None:
        with where.registry() as registry:
            _print(getattr(registry, name)(tenant), where.as_json)


_one_tenant_command(
    "get", "Show a tenant: status, settings (with its compliance mode's defaults), quota."
)


@group.command("list")
@command
def tenants_list(
    *,
    where: RegistryOptions,
    status: Annotated[
        str | None, typer.Option("--status", help="Only 'active' or 'suspended' tenants.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most tenants to show.")] = 100,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next cursor a previous page printed.")
    ] = None,
) -> None:
    """List tenants by id (a page at a time)."""
    with where.registry() as registry:
        page = registry.list(status=status, limit=limit, cursor=cursor)
    if where.as_json:
        print_json(
            {"tenants": [t.as_dict() for t in page.tenants], "next_cursor": page.next_cursor}
        )
        return
    out = Table(title="Tenants")
    for col in ("tenant", "display name", "status", "compliance", "retention", "quota"):
        out.add_column(col)
    for t in page.tenants:
        days = t.effective.data_retention_days
        out.add_row(
            t.tenant_id,
            t.display_name,
            t.status,
            t.effective.compliance_mode or "",
            "" if days is None else f"{days} d",
            _limits(t),
        )
    console.print(out)
    if page.next_cursor is not None:
        console.print(f"more: --cursor {page.next_cursor}")


@group.command("update")
@command
def tenants_update(
    tenant: TenantArgument, *, where: RegistryOptions, record: RecordOptions
) -> None:
    """Change a tenant's display name, settings or limits (only those given)."""
    with where.registry() as registry:
        current = registry.get(tenant)
        updated = registry.update(
            tenant,
            display_name=record.name,
            settings=record.settings(current.settings),
            quota=record.quota(current.quota),
        )
    _print(updated, where.as_json)


_one_tenant_command("suspend", "Suspend a tenant: its context refuses to open (its data stays).")
_one_tenant_command("resume", "Make a suspended tenant active again.")


@group.command("delete")
@command
def tenants_delete(
    tenant: TenantArgument,
    *,
    where: RegistryOptions,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:
    """Erase a tenant: every row of it in every component, then its record."""
    with where.registry() as registry:
        registry.get(tenant)  # an unknown tenant fails before the question
        if not yes and not typer.confirm(
            f"erase every row of tenant {tenant!r} in every component, and its record?"
        ):
            usage("not confirmed; nothing was deleted")
        erased = registry.delete(tenant)
    if where.as_json:
        print_json({"tenant_id": tenant, "deleted": erased})
        return
    out = Table(title=f"Tenant {tenant} erased")
    out.add_column("table")
    out.add_column("rows deleted", justify="right")
    for table, n in erased.items():
        out.add_row(table, f"{n:,}")
    console.print(out)


# analytics and retention (cli/_tenant_analytics.py)
group.add_typer(analytics_commands)
