"""Resumable uploads of archives to ``s3://``: a local spool file sent in parts.

A backup to ``s3://`` is first written to a local spool file (disk, not
memory; directory ``storage_options["spool_dir"]``, ``HAIVE_BACKUP_SPOOL_DIR``
or the system's temporary directory), then uploaded as a multipart upload to
``<key>.partial``, whose state is kept in the small object
``<key>.partial.upload.json``: the upload id, the part size, the spool file's
size and SHA-256, and each part sent (its ETag and the offset, size and
SHA-256 of the bytes of the spool it covers). Once every part is sent the
upload is completed and the object moved to ``<key>``; the sidecar and the
spool file are then removed. The spool file's path recorded in the sidecar
is only compared with this machine's (a sidecar is data from the bucket: it
never chooses a local file to read, and the only file it can have deleted is
one of our own spool files, in our spool directory).

If the upload stops (an error, a killed process), the multipart upload is
left open and the sidecar says how far it got. The next backup to the same
key, asked for the same (database, schema, selection, base, labels, key:
the spool file's name is derived from them), continues it when the spool
file is still there with the same SHA-256:
``ListParts`` confirms which parts the server holds, and only the others are
sent. When the spool file is gone or differs, the open upload is aborted and
the backup is taken again from scratch. :func:`abort_stale_uploads` aborts
uploads nobody resumed. An incomplete upload is never an archive: no object
exists at ``<key>`` until it is complete, and the manifest is written last.

The requests go through s3fs's own client (``call_s3``): the same
credentials, endpoint and retries as the rest of the location.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from haive_langgraph.errors import BackupError


class Location(Protocol):
    """What this module needs of :class:`haive_langgraph.ops._locations.Location`."""

    url: str
    path: Path | None
    storage_options: dict[str, Any]
    upload_request: str

    @property
    def fs(self) -> Any: ...

    @property
    def fs_path(self) -> str: ...


SIDECAR = ".upload.json"  # after ".partial": <key>.partial.upload.json
SPOOL_ENV = "HAIVE_BACKUP_SPOOL_DIR"
_SPOOL_NAME = re.compile(r"[0-9a-f]{32}\.tar")
_CHUNK = 1 << 20

before_part: Callable[[int], None] | None = None
"""Test hook: called with the part number before each ``UploadPart`` request."""


def is_s3(target: Location) -> bool:
    """Whether ``target`` is an ``s3://`` location (uploaded through a spool file)."""
    return target.path is None and urllib.parse.urlsplit(target.url).scheme.lower() in (
        "s3",
        "s3a",
    )


def spool_path(target: Location) -> Path:
    """The local spool file of the archive ``target``: one per URL and request (what the
    backup was asked for), so that only a backup asked for the same resumes an upload."""
    base = (
        target.storage_options.get("spool_dir")
        or os.environ.get(SPOOL_ENV)
        or Path(tempfile.gettempdir()) / "haive-backup-spool"
    )
    directory = Path(base)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "getuid") and directory.stat().st_uid != os.getuid():
        raise BackupError(
            f"the spool directory {str(directory)!r} belongs to another user: set "
            f"{SPOOL_ENV} or storage_options['spool_dir'] to a directory of yours"
        )
    name = hashlib.sha256(f"{target.url}\0{target.upload_request}".encode()).hexdigest()
    return directory / (name[:32] + ".tar")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class S3Upload:
    """The multipart upload of the archive at ``target`` (see the module docstring)."""

    def __init__(self, target: Location, partial: str) -> None:
        self.target = target
        self.fs = target.fs
        self.partial = partial  # bucket/key.partial
        self.sidecar = partial + SIDECAR
        self.bucket, _, self.key = partial.partition("/")
        self.parts_sent = 0

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self.fs.call_s3(method, Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise BackupError(f"{method} on {self.target.url!r} failed: {exc}") from exc

    # -- the sidecar ----------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        """The recorded state of an upload in progress, if any."""
        try:
            self.fs.invalidate_cache(self.sidecar)
            return dict(json.loads(self.fs.cat_file(self.sidecar)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackupError(f"cannot read {self.sidecar!r}: {exc}") from None

    def _save(self, state: dict[str, Any]) -> None:
        state["updated_at"] = _now()
        try:
            self.fs.pipe_file(self.sidecar, json.dumps(state, indent=1).encode())
        except OSError as exc:
            raise BackupError(f"cannot write {self.sidecar!r}: {exc}") from None

    def abandon(self, state: dict[str, Any] | None = None) -> bool:
        """Abort the upload in progress (if any), drop its sidecar and spool file."""
        state = state if state is not None else self.state()
        if state is None:
            return False
        with contextlib.suppress(BackupError):
            self._call("abort_multipart_upload", Key=self.key, UploadId=state["upload_id"])
        with contextlib.suppress(OSError):
            self.fs.rm_file(self.sidecar)
        # Only a spool file of ours (in our spool directory, named as we name them),
        # whatever the sidecar says: it may have been asked for something else.
        named = Path(str(state.get("spool", "")))
        if named.parent == spool_path(self.target).parent and _SPOOL_NAME.fullmatch(named.name):
            named.unlink(missing_ok=True)
        return True

    # -- uploading ------------------------------------------------------------------------

    def resume_pending(self) -> bool:
        """Continue a recorded upload whose spool file is intact: ``True`` once complete.
        ``False`` (after aborting it) when there is none or its spool is gone or changed."""
        state = self.state()
        if state is None:
            return False
        spool = spool_path(self.target)  # the sidecar's path is only compared, never used
        if (
            state.get("spool") != str(spool)
            or not spool.is_file()
            or spool.stat().st_size != int(state["size"])
            or file_sha256(spool) != state["spool_sha256"]
        ):
            self.abandon(state)
            return False
        try:
            server = self._server_parts(state["upload_id"])
        except BackupError:  # the upload is gone: completed (then not moved), or aborted
            if self._object_size(self.partial) == int(state["size"]):
                self._move_into_place(spool)
                return True
            self.abandon(state)
            return False
        state["parts"] = {
            n: p for n, p in state["parts"].items() if server.get(int(n)) == p["etag"]
        }
        self.upload(spool, int(state["part_size"]), state)
        return True

    def _object_size(self, key: str) -> int | None:
        try:
            self.fs.invalidate_cache(key)
            return int(self.fs.size(key))
        except (OSError, ValueError):
            return None

    def _server_parts(self, upload_id: str) -> dict[int, str]:
        parts: dict[int, str] = {}
        marker = 0
        while True:
            page = self._call(
                "list_parts", Key=self.key, UploadId=upload_id, PartNumberMarker=marker
            )
            for part in page.get("Parts", []):
                parts[int(part["PartNumber"])] = str(part["ETag"])
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    def upload(self, spool: Path, part_size: int, state: dict[str, Any] | None = None) -> None:
        """Send the spool file's parts not in ``state`` (a new upload without it),
        complete the upload, move the object into place."""
        size = spool.stat().st_size
        if state is None:
            created = self._call("create_multipart_upload", Key=self.key)
            state = {
                "url": self.target.url,
                "key": self.partial,
                "upload_id": str(created["UploadId"]),
                "part_size": part_size,
                "size": size,
                "spool": str(spool),
                "spool_sha256": file_sha256(spool),
                "started_at": _now(),
                "parts": {},
            }
            self._save(state)
        count = max(1, -(-size // part_size))
        try:
            self._send(spool, part_size, count, state)
        except Exception as exc:
            raise BackupError(
                f"the upload of {self.target.url!r} stopped after {len(state['parts'])} of "
                f"{count} parts ({exc}): it is kept open; the next backup to the same key "
                "continues it (`haive-lg backup abort-uploads` drops it)"
            ) from exc
        parts = [
            {"PartNumber": int(n), "ETag": p["etag"]}
            for n, p in sorted(state["parts"].items(), key=lambda item: int(item[0]))
        ]
        self._call(
            "complete_multipart_upload",
            Key=self.key,
            UploadId=state["upload_id"],
            MultipartUpload={"Parts": parts},
        )
        self._move_into_place(spool)

    def _move_into_place(self, spool: Path) -> None:
        try:
            self.fs.invalidate_cache(self.partial)
            self.fs.mv(self.partial, self.target.fs_path)
            self.fs.rm_file(self.sidecar)
        except OSError as exc:
            raise BackupError(f"cannot move {self.partial!r} into place: {exc}") from None
        spool.unlink(missing_ok=True)

    def _send(self, spool: Path, part_size: int, count: int, state: dict[str, Any]) -> None:
        with spool.open("rb") as handle:
            for number in range(1, count + 1):
                if str(number) in state["parts"]:
                    continue
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
                if before_part is not None:
                    before_part(number)
                sent = self._call(
                    "upload_part",
                    Key=self.key,
                    UploadId=state["upload_id"],
                    PartNumber=number,
                    Body=data,
                )
                self.parts_sent += 1
                state["parts"][str(number)] = {
                    "etag": str(sent["ETag"]),
                    "offset": (number - 1) * part_size,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                del data
                self._save(state)
