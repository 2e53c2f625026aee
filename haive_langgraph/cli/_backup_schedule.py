"""``haive-lg backup schedule|list|chain``: scheduled backups into a location, with retention.

``schedule`` runs as a long-lived process (one backup whenever one is due,
see :mod:`haive_langgraph.ops.backup_schedule`), or once (``--once``, for cron or
a systemd timer), or prints the cron line (``--print-cron``) or the systemd
units (``--print-systemd``) that run it. ``list`` shows the archives of a
location with their labels and whether they were verified; ``chain`` prints
the newest verified chain, to give to ``haive-lg backup restore``.
"""

from __future__ import annotations

import re
import shlex
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from haive_langgraph.cli._archive_options import (
    EndpointOption,
    LabelOption,
    MetaOption,
    metadata,
    storage_options,
)
from haive_langgraph.cli._backup import KeyFileOption, ScopeOptions, _key, _progress, group
from haive_langgraph.cli._common import (
    DatabaseOptions,
    JsonOption,
    command,
    console,
    err,
    human,
    print_json,
    usage,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Steps cron can express exactly: minutes dividing an hour, hours dividing a day, a day.
_CRON_STEPS = [
    *(m * 60 for m in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)),
    *(h * 3600 for h in (1, 2, 3, 4, 6, 8, 12)),
    86400,
]


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``1d``, ``2w`` or plain seconds, as seconds.

    Raises:
        typer.BadParameter: Anything else, or a duration that is not positive.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None or float(match[1]) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 12h, 1d, 2w")
    return float(match[1]) * _UNITS[match[2] or "s"]


def cron_schedule(seconds: float) -> str:
    """The cron time fields running a job at least every ``seconds`` (a step cron can
    express that divides it; the job itself decides what is due)."""
    steps = [s for s in _CRON_STEPS if s <= seconds and seconds % s == 0]
    if not steps:
        raise typer.BadParameter(
            f"cron cannot run a job every {seconds:g}s (its steps are minutes dividing an "
            "hour, hours dividing a day, or a day): run the schedule as a long-lived process"
        )
    step = max(steps)
    if step < 3600:
        return f"*/{step // 60} * * * *" if step > 60 else "* * * * *"
    if step < 86400:
        return f"0 */{step // 3600} * * *" if step > 3600 else "0 * * * *"
    return "0 0 * * *"


def _command_line(to: str, options: list[str]) -> str:
    return shlex.join(["haive-lg", "backup", "schedule", to, *options, "--once"])


def _systemd_units(line: str, tick: float) -> str:
    return f"""# /etc/systemd/system/haive-backup.service
[Unit]
Description=haive-langgraph scheduled backup (one run: takes the backup that is due, verifies, prunes)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
# HAIVE_DATABASE_URL, HAIVE_BACKUP_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY ...
EnvironmentFile=/etc/haive-backup.env
ExecStart={line}

# /etc/systemd/system/haive-backup.timer
[Unit]
Description=Run haive-backup.service every {tick:g}s

[Timer]
OnBootSec=1min
OnUnitActiveSec={tick:g}s
AccuracySec=1s

[Install]
WantedBy=timers.target
"""


@group.command("schedule")
@command
def backup_schedule(
    to: Annotated[str, typer.Argument(help="Directory or key prefix (s3://bucket/prefix).")],
    every: Annotated[
        str, typer.Option("--every", help="Time between full backups (90s, 15m, 12h, 1d, 2w).")
    ] = "1d",
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="Verified full backups (and chains) to keep.")
    ] = 30,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Take incremental backups between full ones.")
    ] = False,
    incremental_every: Annotated[
        str | None,
        typer.Option(
            "--incremental-every", help="Time between incremental backups (default: every/24)."
        ),
    ] = None,
    *,
    where: DatabaseOptions,
    scope: ScopeOptions,
    label: LabelOption = None,
    meta: MetaOption = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Start of the archives' names.")] = (
        "haive"
    ),
    key_file: KeyFileOption = None,
    endpoint_url: EndpointOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Take the backup that is due (if any) and exit.")
    ] = False,
    max_backups: Annotated[
        int | None, typer.Option("--max-backups", min=1, help="Exit after this many backups.")
    ] = None,
    print_cron: Annotated[
        bool, typer.Option("--print-cron", help="Print the crontab line instead of running.")
    ] = False,
    print_systemd: Annotated[
        bool,
        typer.Option("--print-systemd", help="Print a systemd service and timer instead."),
    ] = False,
) -> None:
    """Back up on a schedule into a location: full backups --every, incremental ones in
    between (--incremental), each verified by reading it back; keep --keep chains."""
    from haive_langgraph.ops.backup_schedule import BackupSchedule

    full = parse_duration(every)
    inc = None
    if incremental or incremental_every is not None:
        inc = parse_duration(incremental_every) if incremental_every else full / 24
        if inc < 1:
            usage("incremental backups would be less than a second apart: give --incremental-every")
    tick = inc or full
    if print_cron or print_systemd:
        flags = ["--every", every, "--keep", str(keep)]
        if inc is not None:
            flags += ["--incremental-every", f"{inc:g}s"]
        flags += scope.flags()
        for flag, value in (("--schema", where.schema), ("--label", label), ("--prefix", prefix)):
            if value is not None and not (flag == "--prefix" and value == "haive"):
                flags += [flag, value]
        for item in meta or []:
            flags += ["--meta", item]
        if key_file is not None:
            flags += ["--key-file", str(Path(key_file).resolve())]
        if endpoint_url is not None:
            flags += ["--endpoint-url", endpoint_url]
        line = _command_line(to, flags)
        if where.dsn is not None:
            err.print("the DSN is not printed: set HAIVE_DATABASE_URL in the job's environment")
        if print_cron:
            print(f"{cron_schedule(tick)} {line}")
        if print_systemd:
            print(_systemd_units(line, tick), end="")
        return
    options: dict[str, Any] = {
        "schema": where.schema,
        **scope.arguments(),
        "label": label,
        "metadata": metadata(meta),
    }
    schedule = BackupSchedule(
        to=to,
        every=full,
        keep=keep,
        incremental_every=inc,
        dsn=where.dsn,
        backup_options=options,
        key=_key(key_file),
        storage_options=storage_options(endpoint_url) or {},
        prefix=prefix,
        # a job started by cron or a timer runs a little early or late: not a missed period
        slack=min(300.0, 0.1 * tick) if once else 0.0,
    )

    def show(result: Any) -> None:
        if where.as_json:
            print_json(result.as_dict())
            return
        if result.kind is not None:
            report = result.report
            console.print(
                f"{result.kind} backup -> {result.url}: {report.rows:,} rows, "
                f"{human(report.bytes)} in {report.seconds:.2f}s, verified "
                f"({result.verified_rows:,} rows read back)"
            )
        for url in result.pruned:
            console.print(f"pruned {url}")
        if result.kind is None and not result.pruned:
            console.print(f"nothing due; next backup in {result.next_due:,.0f}s")

    # progress bars on stderr (none with --json): the phases of the backup being taken
    with _progress(where.as_json) as progress:
        schedule.progress = progress
        if once:
            show(schedule.run_once())
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        err.print(
            f"backing up into {to}: full every {every}"
            + (f", incremental every {inc:g}s" if inc else "")
            + f", keeping {keep}; stop with Ctrl-C or SIGTERM (after the current backup)"
        )
        schedule.run(
            stop=stop,
            on_round=show,
            on_error=lambda exc: err.print(f"[bold red]backup failed:[/] {exc}"),
            max_backups=max_backups,
        )


@group.command("list")
@command
def backup_list(
    location: Annotated[str, typer.Argument(help="Directory or key prefix of archives.")],
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the archives of a location: kind, time, label, metadata, rows, verified."""
    from haive_langgraph.ops.backup_schedule import catalog

    entries = catalog(location, manifests=True, storage_options=storage_options(endpoint_url))
    if as_json:
        print_json([e.as_dict() for e in entries])
        return
    table = Table(title=f"Archives in {location}")
    for col in ("name", "kind", "taken", "label", "metadata", "rows", "size", "verified"):
        table.add_column(col, justify="right" if col in ("rows", "size") else "left")
    for e in entries:
        table.add_row(
            e.name,
            e.kind,
            f"{e.taken_at:%Y-%m-%d %H:%M:%S}",
            e.label or "",
            ", ".join(f"{k}={v}" for k, v in e.metadata.items()),
            f"{e.rows:,}" if e.rows is not None else "",
            human(e.bytes),
            "yes" if e.verified else "no",
        )
    console.print(table)


@group.command("chain")
@command
def backup_chain(
    location: Annotated[str, typer.Argument(help="Directory or key prefix of archives.")],
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the newest verified full archive and its incremental ones, in restore order."""
    from haive_langgraph.ops.backup_schedule import latest_chain

    urls = latest_chain(location, storage_options=storage_options(endpoint_url))
    if as_json:
        print_json(urls)
        return
    print(" ".join(shlex.quote(u) for u in urls))


@group.command("abort-uploads")
@command
def backup_abort_uploads(
    url: Annotated[str, typer.Argument(help="Where the archives are (an s3:// prefix).")],
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Only uploads idle this long (90s, 15m, 12h, 1d; default 1d: one running "
            "now would be broken).",
        ),
    ] = "1d",
    endpoint_url: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Abort interrupted s3:// uploads nobody resumed (their parts, record and spool)."""
    import datetime as dt

    from haive_langgraph.ops.backup import abort_uploads

    aborted = abort_uploads(
        url,
        older_than=dt.timedelta(seconds=parse_duration(older_than)),
        storage_options=storage_options(endpoint_url),
    )
    if as_json:
        print_json({"aborted": aborted})
        return
    for archive in aborted:
        console.print(f"aborted the upload of {archive}")
    console.print(f"{len(aborted)} interrupted upload(s) aborted")
