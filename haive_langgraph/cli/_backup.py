"""``haive-lg backup create|restore|verify|key``: logical backups (a group, since
``haive-lg restore`` is the time-travel command that restores a checkpoint).

Exit codes: 0 success, 1 an error we explain (a damaged archive, a refused
restore ...), 2 bad usage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

import typer
from rich.progress import TaskProgressColumn
from rich.table import Table

from haive_langgraph.cli._archive_options import (
    EndpointOption,
    LabelOption,
    MetaOption,
    metadata,
    storage_options,
)
from haive_langgraph.cli._common import (
    DatabaseOptions,
    DsnOption,
    JsonOption,
    PhaseStep,
    command,
    console,
    human,
    phase_progress,
    print_json,
    repeatable,
    require_schema,
    usage,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from haive_langgraph.ops.backup import BackupProgress

KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="File holding the base64 backup key (default: HAIVE_BACKUP_KEY).",
        dir_okay=False,
    ),
]
UnkeyedOption = Annotated[
    bool,
    typer.Option(
        "--unkeyed",
        help="Accept an archive written without a backup key although one is set "
        "(checked against damage only: anyone can write such an archive).",
    ),
]


class _Scope(TypedDict):
    include: list[str] | None
    exclude: list[str] | None
    tenants: list[str] | None


@dataclass(frozen=True, slots=True)
class ScopeOptions:
    """``--include``, ``--exclude`` and ``--tenant``: what a backup takes (default: every
    table of every tenant)."""

    include: Annotated[
        list[str] | None,
        repeatable("--include", "Table or component:table pattern to back up"),
    ] = None
    exclude: Annotated[
        list[str] | None,
        repeatable("--exclude", "Table or component:table pattern to leave out"),
    ] = None
    tenants: Annotated[list[str] | None, repeatable("--tenant", "Only this tenant")] = None

    def arguments(self) -> _Scope:
        """``include``, ``exclude`` and ``tenants`` for :func:`~haive_langgraph.ops.backup.backup`."""
        return {
            "include": self.include or None,
            "exclude": self.exclude or None,
            "tenants": self.tenants or None,
        }

    def flags(self) -> list[str]:
        """The options as a command line gives them (``--include PATTERN`` ...)."""
        given = (
            ("--include", self.include),
            ("--exclude", self.exclude),
            ("--tenant", self.tenants),
        )
        return [word for flag, values in given for value in values or [] for word in (flag, value)]


def _step(event: BackupProgress) -> PhaseStep:
    unit = "bytes" if event.phase == "verify" else "rows"
    return PhaseStep(event.phase, event.rows, event.total, f"{event.table}: {event.rows:,} {unit}")


def _progress(as_json: bool) -> AbstractContextManager[Callable[[BackupProgress], None]]:
    """A progress bar per phase on stderr (silent with --json); yields the callback."""
    return phase_progress(as_json, TaskProgressColumn(), _step)


def _key(key_file: Path | None) -> Any:
    if key_file is None:
        return None
    from haive_langgraph.ops.backup import key_from_file

    return key_from_file(key_file)


def _print_rows(title: str, tables: Mapping[str, int]) -> None:
    """The rows of each table of an archive, as a table."""
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in tables.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)


group = typer.Typer(
    help="Logical backups: create, restore, verify archives; make a backup key.",
    no_args_is_help=True,
)


@group.command("create")
@command
def backup_create(
    path: Annotated[str, typer.Argument(help="Archive to write: a path or a URL (s3://...).")],
    *,
    where: DatabaseOptions,
    scope: ScopeOptions,
    users: Annotated[list[str] | None, repeatable("--user", "Only this user's data")] = None,
    threads: Annotated[list[str] | None, repeatable("--thread", "Only this thread")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Previous archive: write only what changed since (incremental)."
        ),
    ] = None,
    key_file: KeyFileOption = None,
    no_encrypt: Annotated[
        bool, typer.Option("--no-encrypt", help="Do not encrypt even if HAIVE_BACKUP_KEY is set.")
    ] = False,
    with_tenant_keys: Annotated[
        bool,
        typer.Option(
            "--with-tenant-keys",
            help="Also archive the tenants' own keys (a later crypto-shred then does not "
            "reach this archive).",
        ),
    ] = False,
    label: LabelOption = None,
    meta: MetaOption = None,
    endpoint_url: EndpointOption = None,
    read_back: Annotated[
        bool,
        typer.Option("--verify", help="Then read the archive back from where it was written."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="s3://: complete an interrupted upload to the same key (default), or abort "
            "it and take a new backup.",
        ),
    ] = True,
) -> None:
    """Write a logical backup archive of the tables (all, or a selection)."""
    from haive_langgraph.ops.backup import backup, verify

    if no_encrypt and key_file is not None:
        usage("--no-encrypt and --key-file contradict each other")
    require_schema(
        where.dsn, where.schema
    )  # a mistyped --schema or --dsn: name schema and database
    with _progress(where.as_json) as progress:
        report = backup(
            path,
            where.dsn,
            schema=where.schema,
            **scope.arguments(),
            users=users or None,
            threads=threads or None,
            tenant_keys=with_tenant_keys,
            since=since,
            key=_key(key_file),
            encrypt=not no_encrypt,
            progress=progress,
            label=label,
            metadata=metadata(meta),
            storage_options=storage_options(endpoint_url),
            resume=resume,
        )
        verified = None
        if read_back:
            verified = verify(
                path,
                key=_key(key_file),
                unkeyed=no_encrypt,
                progress=progress,
                storage_options=storage_options(endpoint_url),
            ).rows
    if where.as_json:
        print_json(report.as_dict() | ({"verified_rows": verified} if read_back else {}))
        return
    resumed = " (an interrupted upload, completed)" if report.resumed else ""
    _print_rows(f"{report.kind} backup {report.archive_id}{resumed}", report.tables)
    seconds = max(report.seconds, 1e-9)
    console.print(
        f"{report.rows:,} rows, {human(report.raw_bytes)} of rows in {human(report.bytes)} "
        f"({'encrypted' if report.encrypted else 'not encrypted'}) in {report.seconds:.2f}s: "
        f"{report.rows / seconds:,.0f} rows/s, {report.raw_bytes / seconds / 1e6:.1f} MB/s -> "
        f"{report.path}" + (f", verified ({verified:,} rows read back)" if read_back else "")
    )


@group.command("restore")
@command
def backup_restore(
    archives: Annotated[
        list[str],
        typer.Argument(help="Archive, or a full archive and its incremental ones in order."),
    ],
    dsn: DsnOption = None,
    schema: Annotated[
        str | None,
        typer.Option("--schema", help="Target schema (default: the schema backed up)."),
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Target has rows: archived rows overwrite them.")
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Target has rows: keep them, add the rest.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Target has rows: delete those in scope first.")
    ] = False,
    key_file: KeyFileOption = None,
    unkeyed: UnkeyedOption = False,
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check an archive completely, then restore it in one transaction."""
    from haive_langgraph.ops.backup import restore

    chosen = [
        m for m, on in (("merge", merge), ("skip", skip_existing), ("replace", replace)) if on
    ]
    if len(chosen) > 1:
        usage("give at most one of --merge, --skip-existing and --replace")
    with _progress(as_json) as progress:
        report = restore(
            archives,
            dsn,
            schema=schema,
            on_existing=chosen[0] if chosen else "refuse",  # type: ignore[arg-type]
            key=_key(key_file),
            unkeyed=unkeyed,
            progress=progress,
            storage_options=storage_options(endpoint_url),
        )
    if as_json:
        print_json(report.as_dict())
        return
    table = Table(title=f"Restored into schema {report.schema}")
    for col in ("table", "rows", "skipped", "deleted first"):
        table.add_column(col, justify="right" if col != "table" else "left")
    for name, rows in report.tables.items():
        table.add_row(
            name,
            f"{rows:,}",
            f"{report.skipped.get(name, 0):,}" if name in report.skipped else "",
            f"{report.deleted.get(name, 0):,}" if name in report.deleted else "",
        )
    console.print(table)
    if report.created_tables:
        console.print(f"created for the archive: {', '.join(report.created_tables)}")
    seconds = max(report.seconds, 1e-9)
    console.print(
        f"{report.rows:,} rows from {len(report.archives)} archive(s) in {report.seconds:.2f}s "
        f"({report.rows / seconds:,.0f} rows/s)"
    )


@group.command("verify")
@command
def backup_verify(
    archive: Annotated[str, typer.Argument(help="Archive to check (a path or a URL).")],
    key_file: KeyFileOption = None,
    unkeyed: UnkeyedOption = False,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Check checksums only (do not decompress and count rows)."),
    ] = False,
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check an archive: manifest signature, every part's SHA-256, row counts."""
    from haive_langgraph.ops.backup import verify

    with _progress(as_json) as progress:
        info = verify(
            archive,
            key=_key(key_file),
            unkeyed=unkeyed,
            deep=not quick,
            progress=progress,
            storage_options=storage_options(endpoint_url),
        )
    if as_json:
        print_json({"ok": True, **info.as_dict()})
        return
    _print_rows(f"{info.kind} backup {info.archive_id}: OK", info.tables)
    console.print(
        f"schema {info.schema}, taken {info.created_at:%Y-%m-%d %H:%M:%S} UTC, "
        f"{info.rows:,} rows, {human(info.bytes)}, "
        f"{'encrypted' if info.encrypted else 'not encrypted'}"
        + (f", continues {info.base_archive_id}" if info.base_archive_id else "")
    )


@group.command("key")
def backup_key(as_json: JsonOption = False) -> None:
    """Print a new random backup key (base64); keep it apart from the archives."""
    from haive_langgraph.ops.backup import BackupKey, new_backup_key

    key = new_backup_key()
    if as_json:
        print_json({"key": key, "fingerprint": BackupKey.from_text(key).fingerprint})
        return
    print(key)
