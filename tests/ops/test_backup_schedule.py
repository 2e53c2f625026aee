"""Scheduled backups: a drill of several periods on a clock the test drives (into S3
through moto's server and into a directory), retention that never prunes without a newer
verified full backup, the long-lived command on second-long periods, cron and systemd."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.cli import app
from haive_langgraph.errors import ArchiveIntegrityError, BackupError, ConfigurationError
from haive_langgraph.ops.backup import restore
from haive_langgraph.ops.backup_schedule import BackupSchedule, catalog, latest_chain
from tests.ops._s3 import S3Server
from tests.ops.test_backup import converse, digests

runner = CliRunner()
HOUR = 3600.0
DAY = 24 * HOUR


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def _drill(
    migrated: str, other_db: str, to: str, options: dict[str, Any], days: int = 4
) -> list[Any]:
    """``days`` daily periods, an incremental backup every 6 hours, keep 2 chains; data
    written (and a thread deleted) between backups; then the newest chain is restored into
    a fresh database and compared row by row."""
    tenant = f"sched-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    schedule = BackupSchedule(
        to=to,
        every=DAY,
        keep=2,
        incremental_every=6 * HOUR,
        dsn=migrated,
        backup_options={"tenants": [tenant], "label": "drill"},
        storage_options=options,
        clock=clock,
    )
    rounds = []
    with PostgresCheckpointer.from_conn_string(migrated, tenant_id=tenant) as cp:
        for step in range(days * 4 + 2):
            converse(cp, f"t-{step % 3}", 1, start=step)
            if step == 5:
                converse(cp, "t-doomed", 1)
            if step == 6:
                cp.delete_thread("t-doomed")
            result = schedule.run_once()
            assert result.kind == ("full" if step % 4 == 0 else "incremental"), step
            assert result.verified_rows == result.report.rows  # type: ignore[union-attr]
            # nothing more is due at the same instant
            assert schedule.run_once().kind is None
            rounds.append(result)
            clock.now += 6 * HOUR
    # restore the newest chain: a full backup and its incremental ones
    chain = latest_chain(to, storage_options=options)
    assert [r.url for r in rounds[-2:]] == chain
    restore(chain, other_db, storage_options=options)
    where = f"tenant_id = '{tenant}'"
    got = digests(other_db, "haive", where)
    want = {k: v for k, v in digests(migrated, "haive", where).items() if k in got}
    assert got == want and got["checkpoints"][0] > 0
    with PostgresCheckpointer.from_conn_string(other_db, tenant_id=tenant) as copy:
        assert copy.get_thread("t-doomed") is None
        assert {t.thread_id for t in copy.list_threads()} == {"t-0", "t-1", "t-2"}
    return rounds


def _check_retention(rounds: list[Any], entries: list[Any]) -> None:
    # five daily fulls (steps 0, 4, 8, 12, 16): each one verified beyond the second prunes
    # the oldest chain, its incremental archives newest first and its full one last
    for full in (8, 12, 16):
        old = full - 8
        assert rounds[full].pruned == [
            *(r.url for r in reversed(rounds[old + 1 : old + 4])),
            rounds[old].url,
        ]
    assert sum(len(r.pruned) for r in rounds) == 12
    # the newest two chains are kept: day 4 (full + 3) and day 5 (full + 1)
    assert [e.url for e in entries] == [r.url for r in rounds[12:]]
    assert all(e.verified for e in entries)
    kinds = ["full", "incremental", "incremental", "incremental", "full", "incremental"]
    assert [e.kind for e in entries] == kinds


def test_a_drill_of_several_periods_into_s3_restores_the_newest_chain(
    s3: S3Server, migrated: str, other_db: str
) -> None:
    to = s3.url(f"sched-{uuid.uuid4().hex[:6]}")
    rounds = _drill(migrated, other_db, to, s3.options)
    entries = catalog(to, manifests=True, storage_options=s3.options)
    _check_retention(rounds, entries)
    assert all(e.label == "drill" and e.metadata == {"schedule": "haive"} for e in entries)
    # archives and markers only: no partial object left behind
    prefix = to.removeprefix(f"s3://{s3.bucket}/")
    names = s3.keys(prefix)
    assert len(names) == 2 * len(entries)
    assert all(n.endswith((".tar", ".tar.verified")) for n in names)


def test_a_drill_into_a_directory(migrated: str, other_db: str, tmp_path: Path) -> None:
    rounds = _drill(migrated, other_db, str(tmp_path / "archives"), {})
    _check_retention(rounds, catalog(tmp_path / "archives"))  # type: ignore[arg-type]


def test_nothing_is_pruned_without_a_newer_verified_full_backup(
    migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = f"keep-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    to = tmp_path / "a"
    schedule = BackupSchedule(
        to=str(to),
        every=DAY,
        keep=1,
        dsn=migrated,
        backup_options={"tenants": [tenant]},
        clock=clock,
    )
    with PostgresCheckpointer.from_conn_string(migrated, tenant_id=tenant) as cp:
        converse(cp, "t", 1)
    first = schedule.run_once()
    clock.now += DAY

    # the next full backup fails its read-back: it is deleted, and the old one is kept
    def damaged(*args: Any, **kwargs: Any) -> Any:
        raise ArchiveIntegrityError("part parts/0001 does not match its SHA-256")

    monkeypatch.setattr("haive_langgraph.ops.backup.verify", damaged)
    with pytest.raises(ArchiveIntegrityError):
        schedule.run_once()
    assert [e.url for e in catalog(str(to))] == [first.url]
    assert sorted(p.name for p in to.iterdir()) == [
        Path(str(first.url)).name,
        Path(str(first.url)).name + ".verified",
    ]
    monkeypatch.undo()
    second = schedule.run_once()
    assert second.kind == "full" and second.pruned == [first.url]
    # an archive without its marker (its check never finished) does not count: a full
    # backup is due at once, and the unverified one goes only once that one is verified
    (to / (Path(str(second.url)).name + ".verified")).unlink()
    clock.now += HOUR
    third = schedule.run_once()
    assert third.kind == "full" and third.pruned == [second.url]
    assert [e.url for e in catalog(str(to))] == [third.url]
    (to / (Path(str(third.url)).name + ".verified")).unlink()
    with pytest.raises(BackupError, match="no verified full backup"):
        latest_chain(str(to))


def test_schedule_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="keep"):
        BackupSchedule(to="x", every=DAY, keep=0)
    with pytest.raises(ConfigurationError, match="shorter than every"):
        BackupSchedule(to="x", every=HOUR, keep=1, incremental_every=2 * HOUR)
    with pytest.raises(ConfigurationError, match="since"):
        BackupSchedule(to="x", every=HOUR, keep=1, backup_options={"since": "y"})


def _documents(text: str) -> list[Any]:
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def test_the_long_lived_command_on_second_long_periods(migrated: str, tmp_path: Path) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    with PostgresCheckpointer.from_conn_string(migrated, tenant_id=tenant) as cp:
        converse(cp, "t", 2)
    to = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "backup",
            "schedule",
            str(to),
            "--every",
            "2s",
            "--incremental-every",
            "1s",
            "--keep",
            "1",
            "--max-backups",
            "4",
            "--dsn",
            migrated,
            "--tenant",
            tenant,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rounds = [d for d in _documents(result.stdout) if d["kind"] is not None]
    assert len(rounds) == 4 and rounds[0]["kind"] == "full"
    assert all(r["verified_rows"] == r["report"]["rows"] for r in rounds)
    assert rounds[0]["report"]["rows"] > 0
    fulls = [r for r in rounds if r["kind"] == "full"]
    assert len(fulls) >= 2, [r["kind"] for r in rounds]  # a 2 s period passed at least once
    pruned = [u for r in rounds for u in r["pruned"]]
    assert rounds[0]["url"] in pruned  # the first chain, once a newer full was verified
    entries = catalog(str(to))
    assert entries[0].kind == "full" and entries[0].url == fulls[-1]["url"]
    assert all(e.verified for e in entries)
    chain = runner.invoke(app, ["backup", "chain", str(to), "--json"])
    assert json.loads(chain.stdout) == [e.url for e in entries]
    once = runner.invoke(
        app,
        [
            "backup",
            "schedule",
            str(to),
            "--every",
            "1d",
            "--once",
            "--dsn",
            migrated,
            "--tenant",
            tenant,
        ],
    )
    assert once.exit_code == 0 and "nothing due" in once.stdout
    # a first run into an empty place takes a full backup, with progress bars (not --json)
    first = runner.invoke(
        app,
        [
            "backup",
            "schedule",
            str(tmp_path / "once"),
            "--once",
            "--dsn",
            migrated,
            "--tenant",
            tenant,
        ],
    )
    assert first.exit_code == 0, first.output
    assert "full backup ->" in first.stdout and "verified" in first.stdout
    assert "100%" in first.output and "bytes" in first.output  # the phases. bars on stderr


def test_print_cron_and_systemd() -> None:
    result = runner.invoke(
        app,
        [
            *("backup", "schedule", "s3://b/p", "--every", "1d", "--keep", "30"),
            "--incremental",
            "--label",
            "nightly",
            "--print-cron",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "0 * * * * haive-lg backup schedule s3://b/p --every 1d --keep 30 "
        "--incremental-every 3600s --label nightly --once"
    )
    result = runner.invoke(
        app, ["backup", "schedule", "/srv/b", "--every", "12h", "--keep", "7", "--print-systemd"]
    )
    assert result.exit_code == 0, result.output
    assert "OnUnitActiveSec=43200s" in result.stdout
    assert "ExecStart=haive-lg backup schedule /srv/b --every 12h --keep 7 --once" in (
        result.stdout
    )
    assert "[Install]\nWantedBy=timers.target" in result.stdout
    result = runner.invoke(
        app, ["backup", "schedule", "x", "--every", "2d", "--keep", "1", "--print-cron"]
    )
    assert result.exit_code == 0 and result.stdout.startswith("0 0 * * * ")  # due decides
    result = runner.invoke(
        app, ["backup", "schedule", "x", "--every", "90s", "--keep", "1", "--print-cron"]
    )
    assert result.exit_code == 2 and "long-lived" in result.output
