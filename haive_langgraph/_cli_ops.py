"""``haive-lg`` operations commands: backup, audit, doctor.

* ``haive-lg backup create|restore|verify|key``: logical backups (a group,
  since ``haive-lg restore`` is the time-travel command that restores a
  checkpoint);
* ``haive-lg audit`` (query), ``audit enable|disable|status|prune``;
* ``haive-lg doctor``: the advisor;
* ``haive-lg cache warm|stats|flush``: the shared (Redis) level of the cache.

Every command takes ``--dsn`` where it talks to a server and ``--json``.
Exit codes: 0 success, 1 an error we explain (a damaged archive, a refused
restore ...), 2 bad usage, 3 ``doctor`` found warnings or critical issues.

Importing this module adds the commands to :data:`haive_langgraph.cli.app`
(``cli.py`` imports it at its end).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from haive_langgraph.cli import (
    DsnOption,
    JsonOption,
    SchemaOption,
    TenantOption,
    _fail,
    _require_schema,
    _saver,
    app,
    console,
    err,
    handled,
)

if TYPE_CHECKING:
    from haive_langgraph.ops.backup import BackupProgress

EXIT_FINDINGS = 3

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


def _usage(message: str) -> NoReturn:
    _fail(message, 2)
    raise AssertionError("unreachable")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@contextmanager
def _progress(as_json: bool) -> Iterator[Callable[[BackupProgress], None]]:
    """A progress bar on stderr (silent with --json); yields the callback."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=as_json, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def callback(event: BackupProgress) -> None:
            task = tasks.get(event.phase)
            if task is None:
                task = bar.add_task(event.phase, total=event.total, detail="")
                tasks[event.phase] = task
            unit = "bytes" if event.phase == "verify" else "rows"
            bar.update(
                task,
                completed=event.rows,
                total=event.total,
                detail=f"{event.table}: {event.rows:,} {unit}",
            )

        yield callback
        for task in tasks.values():
            bar.update(task, total=bar.tasks[task].completed)


def _key(key_file: Path | None) -> Any:
    if key_file is None:
        return None
    from haive_langgraph.ops.backup import key_from_file

    return key_from_file(key_file)


# -- backup -------------------------------------------------------------------------------

backup_app = typer.Typer(
    help="Logical backups: create, restore, verify archives; make a backup key.",
    no_args_is_help=True,
)
app.add_typer(backup_app, name="backup")


@backup_app.command("create")
@handled
def backup_create(
    path: Annotated[Path, typer.Argument(help="Archive file to write.", dir_okay=False)],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Table pattern to back up (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Table pattern to leave out (repeatable).")
    ] = None,
    tenants: Annotated[
        list[str] | None, typer.Option("--tenant", help="Only this tenant (repeatable).")
    ] = None,
    users: Annotated[
        list[str] | None, typer.Option("--user", help="Only this user's data (repeatable).")
    ] = None,
    threads: Annotated[
        list[str] | None, typer.Option("--thread", help="Only this thread (repeatable).")
    ] = None,
    since: Annotated[
        Path | None,
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
    as_json: JsonOption = False,
) -> None:
    """Write a logical backup archive of the tables (all, or a selection)."""
    from haive_langgraph.ops.backup import backup

    if no_encrypt and key_file is not None:
        _usage("--no-encrypt and --key-file contradict each other")
    _require_schema(dsn, schema)  # a mistyped --schema or --dsn: name schema and database
    with _progress(as_json) as progress:
        report = backup(
            path,
            dsn,
            schema=schema,
            include=include or None,
            exclude=exclude or None,
            tenants=tenants or None,
            users=users or None,
            threads=threads or None,
            tenant_keys=with_tenant_keys,
            since=since,
            key=_key(key_file),
            encrypt=not no_encrypt,
            progress=progress,
        )
    if as_json:
        _print_json(report.as_dict())
        return
    table = Table(title=f"{report.kind} backup {report.archive_id}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in report.tables.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    seconds = max(report.seconds, 1e-9)
    console.print(
        f"{report.rows:,} rows, {_human(report.raw_bytes)} of rows in {_human(report.bytes)} "
        f"({'encrypted' if report.encrypted else 'not encrypted'}) in {report.seconds:.2f}s: "
        f"{report.rows / seconds:,.0f} rows/s, {report.raw_bytes / seconds / 1e6:.1f} MB/s -> "
        f"{report.path}"
    )


@backup_app.command("restore")
@handled
def backup_restore(
    archives: Annotated[
        list[Path],
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
    as_json: JsonOption = False,
) -> None:
    """Check an archive completely, then restore it in one transaction."""
    from haive_langgraph.ops.backup import restore

    chosen = [
        m for m, on in (("merge", merge), ("skip", skip_existing), ("replace", replace)) if on
    ]
    if len(chosen) > 1:
        _usage("give at most one of --merge, --skip-existing and --replace")
    with _progress(as_json) as progress:
        report = restore(
            archives,
            dsn,
            schema=schema,
            on_existing=chosen[0] if chosen else "refuse",  # type: ignore[arg-type]
            key=_key(key_file),
            unkeyed=unkeyed,
            progress=progress,
        )
    if as_json:
        _print_json(report.as_dict())
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


@backup_app.command("verify")
@handled
def backup_verify(
    archive: Annotated[Path, typer.Argument(help="Archive to check.")],
    key_file: KeyFileOption = None,
    unkeyed: UnkeyedOption = False,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Check checksums only (do not decompress and count rows)."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check an archive: manifest signature, every part's SHA-256, row counts."""
    from haive_langgraph.ops.backup import verify

    with _progress(as_json) as progress:
        info = verify(
            archive, key=_key(key_file), unkeyed=unkeyed, deep=not quick, progress=progress
        )
    if as_json:
        _print_json({"ok": True, **info.as_dict()})
        return
    table = Table(title=f"{info.kind} backup {info.archive_id}: OK")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in info.tables.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(
        f"schema {info.schema}, taken {info.created_at:%Y-%m-%d %H:%M:%S} UTC, "
        f"{info.rows:,} rows, {_human(info.bytes)}, "
        f"{'encrypted' if info.encrypted else 'not encrypted'}"
        + (f", continues {info.base_archive_id}" if info.base_archive_id else "")
    )


@backup_app.command("key")
def backup_key(as_json: JsonOption = False) -> None:
    """Print a new random backup key (base64); keep it apart from the archives."""
    from haive_langgraph.ops.backup import BackupKey, new_backup_key

    key = new_backup_key()
    if as_json:
        _print_json({"key": key, "fingerprint": BackupKey.from_text(key).fingerprint})
        return
    print(key)


# -- audit --------------------------------------------------------------------------------

audit_app = typer.Typer(
    help="Audit log: query it (no subcommand), enable, disable, status, prune.",
    invoke_without_command=True,
)
app.add_typer(audit_app, name="audit")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` (exits with code 2 otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        _usage(f"{option} {text!r} is not a duration such as 30d, 12h, 90m, 2w")
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
        _usage(f"{option} {text!r} is neither an ISO date/time nor a duration such as 2h")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@audit_app.callback()
@handled
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

    _require_schema(dsn, schema, "audit")
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
        _print_json([e.as_dict() for e in events])
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


def _opt(ctx: typer.Context, name: str, value: Any) -> Any:
    """A subcommand's option, else the same option given before the subcommand."""
    if value not in (None, False):
        return value
    return (ctx.obj or {}).get(name, value)


def _status_out(status: Any, as_json: bool, title: str) -> None:
    if as_json:
        _print_json(status.as_dict())
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


@audit_app.command("enable")
@handled
def audit_enable(
    ctx: typer.Context,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tables: Annotated[
        list[str] | None, typer.Option("--table", help="Table pattern to audit (repeatable).")
    ] = None,
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

    status = enable(
        _opt(ctx, "dsn", dsn),
        schema=_opt(ctx, "schema", schema),
        tables=tables or None,
        reads=reads,
        retention=parse_duration(retention, "--retention") if retention else None,
    )
    _status_out(status, _opt(ctx, "json", as_json), "enabled")


@audit_app.command("disable")
@handled
def audit_disable(
    ctx: typer.Context,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop auditing (recorded entries stay)."""
    from haive_langgraph.ops.audit import disable

    _require_schema(_opt(ctx, "dsn", dsn), _opt(ctx, "schema", schema), "audit")
    status = disable(_opt(ctx, "dsn", dsn), schema=_opt(ctx, "schema", schema))
    _status_out(status, _opt(ctx, "json", as_json), "disabled")


@audit_app.command("status")
@handled
def audit_status(
    ctx: typer.Context,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Whether auditing is on, which tables are covered, how large the log is."""
    from haive_langgraph.ops.audit import status

    _require_schema(_opt(ctx, "dsn", dsn), _opt(ctx, "schema", schema))
    result = status(_opt(ctx, "dsn", dsn), schema=_opt(ctx, "schema", schema))
    _status_out(result, _opt(ctx, "json", as_json), "status")


@audit_app.command("prune")
@handled
def audit_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Delete entries older than this, e.g. 90d (default: the retention).",
        ),
    ] = None,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply the audit log's retention: delete old entries."""
    from haive_langgraph.ops.audit import prune

    _require_schema(_opt(ctx, "dsn", dsn), _opt(ctx, "schema", schema), "audit")
    deleted = prune(
        _opt(ctx, "dsn", dsn),
        schema=_opt(ctx, "schema", schema),
        older_than=parse_duration(older_than, "--older-than") if older_than else None,
    )
    if _opt(ctx, "json", as_json):
        _print_json({"deleted": deleted})
        return
    console.print(f"{deleted:,} audit entries deleted")


# -- doctor -------------------------------------------------------------------------------

_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _filter_key(text: str) -> tuple[str, int]:
    key, sep, count = text.rpartition("=")
    if not sep or not key or not count.isdigit():
        _usage(f"--filter-key {text!r} is not KEY=USES, e.g. status=1200")
    return key, int(count)


@app.command("doctor")
@handled
def doctor(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenants: Annotated[
        bool, typer.Option("--tenants/--no-tenants", help="Measure sizes per tenant (scans).")
    ] = True,
    filter_keys: Annotated[
        list[str] | None,
        typer.Option("--filter-key", help="Store filter key and its uses, KEY=USES (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check sizes, bloat, indexes, slow statements and settings; print fixes.

    Exits with code 3 when something is a warning or critical.
    """
    from haive_langgraph.ops.doctor import diagnose

    keys = dict(_filter_key(k) for k in filter_keys or [])
    with console.status("examining ...") if not as_json else _nothing():
        report = diagnose(dsn, schema=schema, tenants=tenants, filter_keys=keys)
    if as_json:
        _print_json(report.as_dict())
    else:
        sizes = Table(title=f"Schema {report.schema} (PostgreSQL {report.server_version})")
        for col in ("table", "total", "table", "indexes", "toast", "rows", "dead rows"):
            sizes.add_column(col, justify="left" if col == "table" else "right")
        for t in report.tables:
            sizes.add_row(
                t.table,
                _human(t.total_bytes),
                _human(t.table_bytes),
                _human(t.index_bytes),
                _human(t.toast_bytes),
                f"{t.rows:,}",
                f"{t.dead_rows:,}",
            )
        console.print(sizes)
        if report.tenants:
            per = Table(title="Largest tenants (row data)")
            for col in ("tenant", "table", "rows", "bytes"):
                per.add_column(col, justify="right" if col in ("rows", "bytes") else "left")
            for s in report.tenants[:15]:
                per.add_row(s.tenant_id or "''", s.table, f"{s.rows:,}", _human(s.bytes))
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- cache --------------------------------------------------------------------------------

cache_app = typer.Typer(
    help="The cache's shared Redis level: warm it, show what it holds, flush it.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")

RedisOption = Annotated[
    str,
    typer.Option("--redis", envvar="HAIVE_REDIS_URL", help="Redis URL (default HAIVE_REDIS_URL)."),
]
PrefixOption = Annotated[
    str, typer.Option("--prefix", help="Key prefix of the deployment's cache (default haive).")
]


@contextmanager
def _redis_layer(url: str, prefix: str) -> Iterator[Any]:
    """A layer with only the Redis level, checked reachable (exit 1 if not)."""
    import redis

    from haive_langgraph.errors import ConnectionFailedError
    from haive_langgraph.ops.cache import CacheLayer, RedisCache

    level = RedisCache(url, prefix=prefix, socket_timeout=2.0)
    try:
        level.client.ping()
    except redis.RedisError as exc:
        level.client.close()
        raise ConnectionFailedError(f"cannot reach Redis at {url}: {exc}") from None
    layer = CacheLayer([level])
    try:
        yield layer
    finally:
        layer.close()


@cache_app.command("warm")
@handled
def cache_warm(
    redis_url: RedisOption = "redis://127.0.0.1:6379/0",
    threads: Annotated[
        list[str] | None, typer.Option("--thread", help="Thread to warm (repeatable).")
    ] = None,
    recent: Annotated[
        int, typer.Option("--recent", min=1, help="Else: the most recently updated threads.")
    ] = 100,
    prefix: PrefixOption = "haive",
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load threads' latest checkpoints into Redis (after a deployment or a restore).

    The entries are authenticated with HAIVE_CACHE_SECRET, else a secret
    derived from HAIVE_ENCRYPTION_KEYS: the same as the application's.
    """
    with _redis_layer(redis_url, prefix) as layer, _saver(dsn, schema, tenant) as saver:
        cached = layer.wrap(saver)
        if not layer.wait_ready():
            _fail(f"the Redis subscription at {redis_url} did not come up")
        ids = list(threads) if threads else [t.thread_id for t in saver.list_threads(limit=recent)]
        columns = (TextColumn("warming"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, disable=as_json) as bar:
            task = bar.add_task("warm", total=len(ids))
            for thread_id in ids:
                cached.warm([thread_id])
                bar.advance(task)
        m = layer.metrics()
    out = {"threads": len(ids), "stored": m.fills, "redis_errors": m.redis_errors}
    if as_json:
        _print_json(out)
    else:
        console.print(f"warmed {len(ids)} threads ({m.fills} entries stored in Redis)")
    if m.redis_errors:
        raise typer.Exit(1)


@cache_app.command("stats")
@handled
def cache_stats(
    redis_url: RedisOption = "redis://127.0.0.1:6379/0",
    prefix: PrefixOption = "haive",
    as_json: JsonOption = False,
) -> None:
    """What the shared level holds: entries, bytes, live processes, epoch."""
    with _redis_layer(redis_url, prefix) as layer:
        client = layer.redis.client
        entries = 0
        size = 0
        kinds: dict[str, int] = {}
        for key in client.scan_iter(match=f"{prefix}:val:*", count=1000):
            entries += 1
            size += int(client.strlen(key))
            kind = key.decode(errors="replace")[len(prefix) + 5 :].split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        members = client.zrange(f"{prefix}:members", 0, -1)
        epoch = client.get(f"{prefix}:epoch")
        me = layer.redis.me
    names = {"cp": "checkpoints", "st": "store items"}
    by_kind = {names.get(k, k): n for k, n in kinds.items()}
    out = {
        "entries": entries,
        "bytes": size,
        "by_kind": by_kind,
        "processes": len([m for m in members if m.decode() != me]),
        "epoch": int(epoch or 0),
    }
    if as_json:
        _print_json(out)
        return
    table = Table(title=f"Redis cache {redis_url} (prefix {prefix})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("entries", f"{entries:,}")
    for kind, n in by_kind.items():
        table.add_row(f"  {kind}", f"{n:,}")
    table.add_row("bytes", _human(size))
    table.add_row("processes subscribed", str(out["processes"]))
    table.add_row("epoch (flushes)", str(out["epoch"]))
    console.print(table)


@cache_app.command("flush")
@handled
def cache_flush(
    redis_url: RedisOption = "redis://127.0.0.1:6379/0",
    prefix: PrefixOption = "haive",
    as_json: JsonOption = False,
) -> None:
    """Invalidate every cached entry in Redis and in every subscribed process's memory.

    Use after writes made outside the cache (a restore, a manual fix).
    """
    with _redis_layer(redis_url, prefix) as layer:
        if not layer.wait_ready():
            _fail(f"the Redis subscription at {redis_url} did not come up")
        layer.invalidate(None)
        errors = layer.metrics().redis_errors
    if errors:
        _fail("the flush did not reach Redis")
    if as_json:
        _print_json({"flushed": True})
    else:
        console.print("flushed: every process drops its cached entries")
