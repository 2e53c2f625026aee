"""Resumable uploads of archives to s3:// (moto's S3 server): an upload interrupted after
some parts is continued by the next backup to the same key, sending only the parts the
server lacks; a spool that is gone means a clean new backup; abandoned uploads are aborted."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haive_langgraph.errors import BackupError
from haive_langgraph.ops import _s3_upload
from haive_langgraph.ops.backup import abort_uploads, backup, restore, verify
from tests.ops._s3 import S3Server, s3_server
from tests.ops.test_backup_locations import _same_rows, _tenant_data

# Parts of 8 KiB, so that a small backup is many parts: moto's server takes parts this
# small when told (S3 itself takes 5 MiB at least, but the same requests).
PART = 8192


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    saved = os.environ.get("S3_UPLOAD_PART_MIN_SIZE")
    os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(PART)  # read by the server at start
    try:
        yield from s3_server()
    finally:
        if saved is None:
            os.environ.pop("S3_UPLOAD_PART_MIN_SIZE", None)
        else:
            os.environ["S3_UPLOAD_PART_MIN_SIZE"] = saved


class Parts:
    """Counts UploadPart requests; fails the one numbered ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.sent: list[int] = []

    def __call__(self, number: int) -> None:
        if number == self.fail_at:
            raise ConnectionError(f"injected failure before part {number}")
        self.sent.append(number)


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def install(counter: Parts) -> Parts:
        monkeypatch.setattr(_s3_upload, "before_part", counter)
        return counter

    yield install


def _options(s3: S3Server, tmp_path: Path) -> dict[str, Any]:
    return {**s3.options, "block_size": PART, "spool_dir": str(tmp_path / "spool")}


def _sidecar(s3: S3Server, key: str) -> dict[str, Any]:
    return dict(json.loads(s3.fs().cat_file(f"{s3.bucket}/{key}.partial.upload.json")))


def test_an_interrupted_upload_resumes_with_the_remaining_parts(
    s3: S3Server, migrated: str, other_db: str, tmp_path: Path, parts: Any
) -> None:
    tenant = _tenant_data(migrated, 4)
    key = f"resume/{tenant}.tar"
    url, options = s3.url(key), _options(s3, tmp_path)
    first = parts(Parts(fail_at=4))
    with pytest.raises(BackupError, match="injected failure"):
        backup(url, migrated, tenants=[tenant], label="r", storage_options=options)
    assert first.sent == [1, 2, 3]
    # nothing at the archive's key: the upload is open, its state recorded
    assert s3.keys("resume") == [f"{tenant}.tar.partial.upload.json"]
    state = _sidecar(s3, key)
    assert sorted(state["parts"]) == ["1", "2", "3"] and state["part_size"] == PART
    assert [state["parts"][n]["offset"] for n in ("1", "2", "3")] == [0, PART, 2 * PART]
    (upload,) = s3.multipart_uploads()
    assert upload["UploadId"] == state["upload_id"] and upload["Key"] == key + ".partial"
    with pytest.raises(BackupError, match="no backup archive"):
        verify(url, storage_options=options)
    total = -(-int(state["size"]) // PART)
    assert total > 4
    # the next backup to the same key sends only the parts the server lacks
    second = parts(Parts())
    report = backup(url, migrated, tenants=[tenant], label="r", storage_options=options)
    assert report.resumed and report.label == "r" and report.rows > 0
    assert second.sent == list(range(4, total + 1))
    assert s3.keys("resume") == [f"{tenant}.tar"]
    assert s3.multipart_uploads() == []
    assert not list((tmp_path / "spool").iterdir())  # the spool file is removed
    info = verify(url, storage_options=options)
    assert info.archive_id == report.archive_id and info.rows == report.rows
    restore(url, other_db, storage_options=options)
    _same_rows(migrated, other_db, tenant)


def test_a_resume_whose_spool_is_gone_starts_over(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any
) -> None:
    tenant = _tenant_data(migrated, 2)
    key = f"gone/{tenant}.tar"
    url, options = s3.url(key), _options(s3, tmp_path)
    parts(Parts(fail_at=2))
    with pytest.raises(BackupError):
        backup(url, migrated, tenants=[tenant], storage_options=options)
    old = _sidecar(s3, key)
    Path(old["spool"]).unlink()
    again = parts(Parts())
    report = backup(url, migrated, tenants=[tenant], storage_options=options)
    assert not report.resumed and again.sent[0] == 1  # a new backup, all its parts
    assert [u["UploadId"] for u in s3.multipart_uploads()] == []  # the old one aborted
    assert s3.keys("gone") == [f"{tenant}.tar"]
    assert verify(url, storage_options=options).archive_id == report.archive_id


def test_a_changed_spool_is_not_resumed_and_resume_false_starts_over(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any
) -> None:
    tenant = _tenant_data(migrated, 2)
    key = f"changed/{tenant}.tar"
    url, options = s3.url(key), _options(s3, tmp_path)
    parts(Parts(fail_at=2))
    with pytest.raises(BackupError):
        backup(url, migrated, tenants=[tenant], storage_options=options)
    spool = Path(_sidecar(s3, key)["spool"])
    with spool.open("r+b") as handle:  # one byte changed: not the archive that was sent
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    parts(Parts())
    report = backup(url, migrated, tenants=[tenant], storage_options=options)
    assert not report.resumed and s3.multipart_uploads() == []
    assert verify(url, storage_options=options).archive_id == report.archive_id
    # resume=False: an interrupted upload is aborted and a new backup taken
    parts(Parts(fail_at=2))
    with pytest.raises(BackupError):
        backup(url, migrated, tenants=[tenant], storage_options=options)
    assert len(s3.multipart_uploads()) == 1
    parts(Parts())
    fresh = backup(url, migrated, tenants=[tenant], storage_options=options, resume=False)
    assert not fresh.resumed and fresh.archive_id != report.archive_id
    assert s3.multipart_uploads() == [] and s3.keys("changed") == [f"{tenant}.tar"]


def test_abandoned_uploads_are_aborted(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any
) -> None:
    tenant = _tenant_data(migrated, 1)
    options = _options(s3, tmp_path)
    parts(Parts(fail_at=2))
    for name in ("a", "b"):
        with pytest.raises(BackupError):
            backup(s3.url(f"old/{name}.tar"), migrated, tenants=[tenant], storage_options=options)
    assert len(s3.multipart_uploads()) == 2
    # not yet an hour old: kept
    assert (
        abort_uploads(s3.url("old"), older_than=dt.timedelta(hours=1), storage_options=options)
        == []
    )
    assert len(s3.multipart_uploads()) == 2
    aborted = abort_uploads(s3.url("old"), storage_options=options)
    assert sorted(aborted) == [s3.url("old/a.tar"), s3.url("old/b.tar")]
    assert s3.multipart_uploads() == [] and s3.keys("old") == []
    assert not list((tmp_path / "spool").iterdir())
    assert abort_uploads(str(tmp_path)) == []  # a local directory has none


def test_cli_resume_and_abort_uploads(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from haive_langgraph.cli import app

    runner = CliRunner()
    tenant = _tenant_data(migrated, 1)
    monkeypatch.setenv("HAIVE_S3_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("HAIVE_BACKUP_SPOOL_DIR", str(tmp_path / "cli-spool"))
    monkeypatch.setattr("haive_langgraph.ops._locations.WRITE_BLOCK", PART)
    url = s3.url(f"cli-resume/{tenant}.tar")
    create = ["backup", "create", url, "--dsn", migrated, "--tenant", tenant, "--json"]
    parts(Parts(fail_at=2))
    result = runner.invoke(app, create)
    assert result.exit_code == 1 and "continues it" in result.output, result.output
    sent = parts(Parts())
    result = runner.invoke(app, create)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed"] is True and sent.sent[0] == 2
    parts(Parts(fail_at=2))
    assert runner.invoke(app, create).exit_code == 1
    listing = ["backup", "abort-uploads", s3.url("cli-resume"), "--json"]
    result = runner.invoke(app, listing)  # idle for less than a day: kept
    assert result.exit_code == 0 and json.loads(result.stdout) == {"aborted": []}
    result = runner.invoke(app, [*listing, "--older-than", "0.001s"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"aborted": [url]}
    assert s3.multipart_uploads() == []
    assert s3.keys("cli-resume") == [f"{tenant}.tar"]  # the archive completed earlier stays


def test_a_schedule_aborts_an_earlier_rounds_interrupted_upload(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any
) -> None:
    import time

    from haive_langgraph.ops.backup_schedule import BackupSchedule

    tenant = _tenant_data(migrated, 1)
    schedule = BackupSchedule(
        to=s3.url("sched"),
        every=1.0,
        keep=1,
        dsn=migrated,
        backup_options={"tenants": [tenant]},
        storage_options=_options(s3, tmp_path),
    )
    parts(Parts(fail_at=2))
    with pytest.raises(BackupError, match="kept open"):
        schedule.run_once()
    assert len(s3.multipart_uploads()) == 1
    time.sleep(1.2)  # idle for longer than a period
    parts(Parts())
    done = schedule.run_once()
    assert done.kind == "full" and done.report is not None
    assert done.verified_rows == done.report.rows
    assert s3.multipart_uploads() == []
    assert not [k for k in s3.keys("sched") if ".partial" in k]


def test_a_sidecar_never_chooses_a_local_file(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any
) -> None:
    """The sidecar is data from the bucket: a spool path it names that is not this
    machine's spool file is neither read (resumed from) nor deleted."""
    tenant = _tenant_data(migrated, 1)
    key = f"decoy/{tenant}.tar"
    url, options = s3.url(key), _options(s3, tmp_path)
    parts(Parts(fail_at=2))
    with pytest.raises(BackupError):
        backup(url, migrated, tenants=[tenant], storage_options=options)
    state = _sidecar(s3, key)
    decoy = tmp_path / "precious.tar"
    decoy.write_bytes(Path(state["spool"]).read_bytes())  # even with the right hash
    state["spool"] = str(decoy)
    s3.fs().pipe_file(f"{s3.bucket}/{key}.partial.upload.json", json.dumps(state).encode())
    sent = parts(Parts())
    report = backup(url, migrated, tenants=[tenant], storage_options=options)
    assert not report.resumed and sent.sent[0] == 1 and decoy.is_file()
    assert s3.multipart_uploads() == []


def test_an_upload_completed_but_not_moved_is_moved_by_the_next_run(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = _tenant_data(migrated, 1)
    url, options = s3.url(f"moved/{tenant}.tar"), _options(s3, tmp_path)
    move = _s3_upload.S3Upload._move_into_place

    def broken(self: Any, spool: Path) -> None:
        raise BackupError("injected: moved nothing")

    monkeypatch.setattr(_s3_upload.S3Upload, "_move_into_place", broken)
    parts(Parts())
    with pytest.raises(BackupError, match="injected"):
        backup(url, migrated, tenants=[tenant], storage_options=options)
    assert s3.multipart_uploads() == []  # completed, as <key>.partial
    assert s3.keys("moved") == [f"{tenant}.tar.partial", f"{tenant}.tar.partial.upload.json"]
    monkeypatch.setattr(_s3_upload.S3Upload, "_move_into_place", move)
    sent = parts(Parts())
    report = backup(url, migrated, tenants=[tenant], storage_options=options)
    assert report.resumed and sent.sent == []
    assert s3.keys("moved") == [f"{tenant}.tar"]
    assert verify(url, storage_options=options).archive_id == report.archive_id


def test_a_backup_asked_for_something_else_does_not_resume(
    s3: S3Server, migrated: str, tmp_path: Path, parts: Any
) -> None:
    """Resuming goes by what was asked for, not by the key alone: the same key with
    another selection (or label, base, key, schema, server) aborts the open upload
    and writes the archive it was asked for."""
    first_tenant, second_tenant = _tenant_data(migrated, 4), _tenant_data(migrated, 4)
    key = f"resume/asked-{first_tenant}.tar"
    url, options = s3.url(key), _options(s3, tmp_path)
    parts(Parts(fail_at=3))
    with pytest.raises(BackupError, match="injected failure"):
        backup(url, migrated, tenants=[first_tenant], storage_options=options)
    assert len(s3.multipart_uploads()) == 1
    counted = parts(Parts())
    report = backup(url, migrated, tenants=[second_tenant], storage_options=options)
    assert not report.resumed and counted.sent[0] == 1  # a new upload, from its first part
    assert s3.multipart_uploads() == []  # the first one was aborted
    info = verify(url, storage_options=options)
    assert info.archive_id == report.archive_id and info.rows == report.rows
    assert not list((tmp_path / "spool").iterdir())  # both spool files are gone
