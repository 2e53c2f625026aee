"""``haive-lg keys``: rotate the encryption keys, count what each protects, crypto-shred a tenant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table

from haive_langgraph.cli._common import (
    DatabaseOptions,
    DsnOption,
    SchemaOption,
    command,
    console,
    err,
    fail,
    print_json,
    require_schema,
    usage,
)

group = typer.Typer(
    help="Encryption keys: rotation, status, crypto-shredding.", no_args_is_help=True
)


@contextmanager
def _env_codec(
    dsn: str, schema: str | None, *, required: bool = True, create: bool = True
) -> Iterator[Any]:
    """The codec of the ``HAIVE_*`` settings (``None`` without keys when not ``required``),
    its key ring reading tenants' own keys from ``{schema}.tenant_keys`` (created unless
    not ``create``: then they must exist)."""
    from haive_langgraph.codec import codec_from_config
    from haive_langgraph.ops import check_schema
    from haive_langgraph.ops.keys import PostgresTenantKeyStore

    # Without ``create``, a schema whose keys tables were never set up holds no
    # tenant keys: the key ring then reads the global keys only.
    with_tenant_keys = create or check_schema(dsn, schema=schema).versions["keys"][0] > 0
    store = PostgresTenantKeyStore(dsn, schema=schema) if with_tenant_keys else None
    try:
        codec = codec_from_config(tenant_store=store)
        if codec.keyring is None:
            if required:
                fail("no encryption keys: set HAIVE_ENCRYPTION_KEYS (new primary key first)")
            yield None
            return
        if store is not None and create:
            store.setup()
        elif store is not None:
            require_schema(dsn, schema, "keys")
        yield codec
    finally:
        if store is not None:
            store.close()


@group.command("rotate")
@command
def keys_rotate(
    *,
    where: DatabaseOptions,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction.")] = 500,
) -> None:
    """Put every stored value under the current primary key (resumable).

    Also encrypts plaintext values (turning encryption on) and re-wraps tenant
    keys. Rows of crypto-shredded tenants are skipped and counted. Exits 1 when
    rows could not be read or values are left under other keys.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from haive_langgraph.db._dsn import resolve_dsn
    from haive_langgraph.ops.keys import rotate_keys

    target = resolve_dsn(where.dsn)
    with (
        _env_codec(target, where.schema) as codec,
        Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err, disable=where.as_json
        ) as bar,
    ):
        task = bar.add_task("rotating", total=None)

        def progress(table: str, scanned: int, rewritten: int) -> None:
            bar.update(task, description=f"{table}: {scanned} rows scanned, {rewritten} rewritten")

        report = rotate_keys(
            target, codec, schema=where.schema, batch_size=batch_size, progress=progress
        )
        primary = codec.keyring.primary_key_id()
    unreadable = sum(report.unreadable.values())
    if where.as_json:
        print_json(
            {
                "primary": primary,
                "scanned": report.scanned,
                "rewritten": report.rewritten,
                "resumed": report.resumed,
                "restarted": report.restarted,
                "shredded": report.shredded,
                "unreadable": report.unreadable,
                "errors": report.errors,
                "left": report.left,
                "tenant_keys_rewrapped": report.tenant_keys_rewrapped,
                "passes": report.passes,
            }
        )
    else:
        table = Table(title=f"Key rotation to {primary}")
        for col in ("table", "rows scanned", "rewritten", "shredded", "unreadable", "left"):
            table.add_column(col)
        table.add_column("resumed")
        for name, scanned in report.scanned.items():
            table.add_row(
                name,
                str(scanned),
                str(report.rewritten[name]),
                str(sum(report.shredded.get(name, {}).values())),
                str(report.unreadable.get(name, 0)),
                str(report.left.get(name, 0)),
                "restarted"
                if report.restarted.get(name)
                else "yes"
                if report.resumed.get(name)
                else "",
            )
        console.print(table)
        console.print(f"tenant keys re-wrapped: {report.tenant_keys_rewrapped}")
        for tenant, n in sorted(report.shredded_tenants.items()):
            console.print(f"skipped {n} row(s) of crypto-shredded tenant {tenant!r}")
        for message in report.errors:
            err.print(f"unreadable: {message}")
    if unreadable or report.total_left:
        fail(
            f"{unreadable} row(s) could not be read and {report.total_left} value(s) are left "
            "under other keys; fix or add the keys named above and run it again, before "
            "removing any old key"
        )


@group.command("status")
@command
def keys_status(*, where: DatabaseOptions) -> None:
    """How many stored values each key id protects, per table; plaintext and left to rotate.

    "left" (with HAIVE_ENCRYPTION_KEYS set) counts values not under their tenant's
    current primary key, plaintext ones included: what ``keys rotate`` has to do.
    """
    from haive_langgraph.db._dsn import resolve_dsn
    from haive_langgraph.ops.keys import key_status

    target = resolve_dsn(where.dsn)
    require_schema(target, where.schema)
    with _env_codec(target, where.schema, required=False, create=False) as codec:
        status = key_status(
            target, keyring=codec.keyring if codec is not None else None, schema=where.schema
        )
    if where.as_json:
        print_json(
            {
                "by_key": status.by_key,
                "plaintext": status.plaintext,
                "left": status.left,
                "shredded": status.shredded,
                "total_plaintext": status.total_plaintext,
                "total_left": status.total_left,
            }
        )
        return
    table = Table(title="Stored values by key id")
    for col in ("table", "key id", "values"):
        table.add_column(col)
    for name, by_key in status.by_key.items():
        for key_id, n in by_key.items():
            table.add_row(name, key_id, str(n))
    console.print(table)
    console.print(f"plaintext values: {status.total_plaintext}")
    if status.total_left is not None:
        console.print(f"left to rotate: {status.total_left}")


@group.command("forget-tenant")
@command
def keys_forget_tenant(
    tenant: Annotated[str, typer.Argument(help="Tenant whose keys are destroyed.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:
    """Crypto-shred a tenant: destroy its keys so none of its rows can be read again."""
    from haive_langgraph.codec import KeyRing
    from haive_langgraph.db._dsn import resolve_dsn
    from haive_langgraph.ops.keys import PostgresTenantKeyStore, forget_tenant_key

    if not yes:
        usage(f"this destroys tenant {tenant!r}'s keys for good; add --yes to confirm")
    store = PostgresTenantKeyStore(resolve_dsn(dsn), schema=schema)
    try:
        store.setup()
        keyring = KeyRing.from_env(tenant_store=store)
        if keyring is None:
            fail("no encryption keys: set HAIVE_ENCRYPTION_KEYS")
        destroyed = forget_tenant_key(keyring, tenant)
    finally:
        store.close()
    console.print(
        f"tenant {tenant!r}: {destroyed} key(s) destroyed; its rows can no longer be read"
    )
