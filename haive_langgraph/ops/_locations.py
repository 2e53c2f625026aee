"""Where archives live: a local path, or a URL of an object store through fsspec.

A plain path and a ``file://`` URL are local files, written as before: to
``<name>.partial`` beside the archive, renamed into place once complete.
Any other URL (``s3://bucket/key``, ``gs://``, ``az://``, ``memory://`` ...)
goes through `fsspec <https://filesystem-spec.readthedocs.io>`_ and the
filesystem package of its protocol (``s3fs`` for ``s3://``, in the ``s3``
extra; ``gcsfs``, ``adlfs`` for the others):

* Writing is streamed: the archive goes out in blocks of ``block_size``
  bytes (a multipart upload on S3, each part retried by the library), to
  the key ``<key>.partial``; once the archive is complete the object is
  moved to its key (a server-side copy and a delete on S3). An interrupted
  upload leaves no object at the archive's key: in process the multipart
  upload is aborted; a killed process leaves an incomplete multipart upload
  (invisible, removed by the bucket's ``AbortIncompleteMultipartUpload``
  lifecycle rule) or, at worst, a ``.partial`` object, which is never taken
  for an archive (listings skip it, and a reader needs the manifest that is
  written last). ``s3://`` is the exception: the archive is spooled to a
  local file and its parts uploaded so that an interrupted upload can be
  resumed by the next run (see :mod:`haive_langgraph.ops._s3_upload`).
* Reading is streamed with random access (range requests of
  ``read_block_size`` bytes), which the tar reader needs to find members.

Options of the filesystem (credentials, region ...) come from
``storage_options``; for ``s3://`` the endpoint of an S3-compatible store
also from ``HAIVE_S3_ENDPOINT_URL``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from haive_langgraph.errors import BackupError, ConfigurationError
from haive_langgraph.ops._s3_upload import S3Upload, is_s3, spool_path

__all__ = [
    "S3_ENDPOINT_ENV",
    "Location",
    "StoredObject",
    "location",
]

S3_ENDPOINT_ENV = "HAIVE_S3_ENDPOINT_URL"
PARTIAL = ".partial"
# S3 takes parts of 5 MiB at least and 10,000 parts at most: 8 MiB blocks write
# archives up to 80 GB; larger ones need a larger block_size.
WRITE_BLOCK = 8 << 20
READ_BLOCK = 4 << 20
_OURS = ("block_size", "read_block_size", "spool_dir")  # options of ours, not fsspec's
_EXTRAS = {"s3": "s3fs (pip install 'haive-langgraph[s3]')", "gs": "gcsfs", "az": "adlfs"}


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object (or file) under a location: its URL, size and modification time."""

    url: str
    name: str
    size: int


def _is_url(target: str) -> bool:
    scheme = urllib.parse.urlsplit(target).scheme
    return len(scheme) > 1 and "://" in target  # "C:\\x" is a Windows path, not a URL


@dataclass(slots=True)
class Location:
    """An archive location: a local path or a URL (see the module docstring).

    Attributes:
        url: As given (a local path as a string).
        path: The local file, for a local location.
        storage_options: Options of the fsspec filesystem.
    """

    url: str
    path: Path | None
    storage_options: dict[str, Any] = field(default_factory=dict)
    # What a backup to this location was asked for (a digest); an interrupted
    # upload is resumed only by a backup asked for the same (see _s3_upload).
    upload_request: str = ""
    _fs: Any = None
    _fs_path: str = ""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.url

    @property
    def name(self) -> str:
        """The last component of the path or key."""
        if self.path is not None:
            return self.path.name
        return posixpath.basename(self.fs_path.rstrip("/"))

    # -- the fsspec side ------------------------------------------------------------------

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs, self._fs_path = _filesystem(self.url, self.storage_options)
        return self._fs

    @property
    def fs_path(self) -> str:
        self.fs  # noqa: B018 (resolves the path with the filesystem)
        return self._fs_path

    def child(self, name: str) -> Location:
        """The location ``name`` inside this one (a directory or a key prefix)."""
        if self.path is not None:
            return Location(str(self.path / name), self.path / name)
        return Location(
            self.url.rstrip("/") + "/" + name, None, dict(self.storage_options), self.fs
        ).with_path(self.fs_path.rstrip("/") + "/" + name)

    def with_path(self, fs_path: str) -> Location:
        self._fs_path = fs_path
        return self

    # -- files ----------------------------------------------------------------------------

    def exists(self) -> bool:
        if self.path is not None:
            return self.path.is_file()
        try:
            return bool(self.fs.isfile(self.fs_path))
        except OSError as exc:
            raise BackupError(f"cannot reach {self.url!r}: {exc}") from None

    def size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        try:
            return int(self.fs.size(self.fs_path))
        except OSError as exc:
            raise BackupError(f"cannot reach {self.url!r}: {exc}") from None

    def open_read(self) -> IO[bytes]:
        """A seekable stream of the archive (the caller closes it)."""
        if self.path is not None:
            return self.path.open("rb")
        try:
            block = int(self.storage_options.get("read_block_size", READ_BLOCK))
            return cast(IO[bytes], self.fs.open(self.fs_path, "rb", block_size=block))
        except OSError as exc:
            raise BackupError(f"cannot read {self.url!r}: {exc}") from None

    def open_staged(self) -> StagedWrite:
        """A stream writing the archive under a temporary name; commit moves it into place."""
        return StagedWrite(self)

    def read_bytes(self) -> bytes:
        """A small object's bytes (a marker)."""
        with self.open_read() as handle:
            return handle.read()

    def write_bytes(self, data: bytes) -> None:
        """Write a small object at once (a marker)."""
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + PARTIAL)
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
            return
        try:
            self.fs.pipe_file(self.fs_path, data)
        except OSError as exc:
            raise BackupError(f"cannot write {self.url!r}: {exc}") from None

    def remove(self) -> None:
        """Delete the file or object (nothing if there is none)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            return
        try:
            if self.fs.exists(self.fs_path):
                self.fs.rm_file(self.fs_path)
        except OSError as exc:
            raise BackupError(f"cannot delete {self.url!r}: {exc}") from None

    def list(self) -> list[StoredObject]:
        """The files directly under this location (a directory or a key prefix), by name."""
        if self.path is not None:
            if not self.path.is_dir():
                return []
            return sorted(
                (
                    StoredObject(str(p), p.name, p.stat().st_size)
                    for p in self.path.iterdir()
                    if p.is_file()
                ),
                key=lambda o: o.name,
            )
        prefix = self.fs_path.rstrip("/")
        try:
            self.fs.invalidate_cache(prefix)
            if not self.fs.exists(prefix):
                return []
            entries = self.fs.ls(prefix, detail=True)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackupError(f"cannot list {self.url!r}: {exc}") from None
        base = self.url.rstrip("/")
        out = []
        for entry in entries:
            if entry.get("type") != "file":
                continue
            name = posixpath.basename(str(entry["name"]))
            out.append(StoredObject(f"{base}/{name}", name, int(entry.get("size") or 0)))
        return sorted(out, key=lambda o: o.name)

    def ensure_dir(self) -> None:
        """Create the directory (local) or the bucket (if missing and allowed)."""
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            return
        with contextlib.suppress(OSError):
            self.fs.makedirs(self.fs_path, exist_ok=True)


class StagedWrite:
    """An archive being written under ``<name>.partial``; :meth:`commit` moves it into place."""

    def __init__(self, target: Location) -> None:
        self.target = target
        self.handle: IO[bytes]
        self._spool: Path | None = None  # s3://: the local file uploaded in parts
        self._uploading = False
        if target.path is not None:
            if target.path.is_dir():
                raise BackupError(f"{str(target.path)!r} is a directory, not an archive file")
            self._tmp_path = target.path.with_name(target.path.name + PARTIAL)
            try:
                self.handle = self._tmp_path.open("wb")
            except OSError as exc:
                raise BackupError(f"cannot write the archive {str(target)!r}: {exc}") from None
            return
        self._tmp_key = target.fs_path + PARTIAL
        block = int(target.storage_options.get("block_size", WRITE_BLOCK))
        try:
            if is_s3(target):  # a local spool file, then a resumable upload of its parts
                self._spool = spool_path(target)
                self.handle = self._spool.open("wb")
                return
            self.handle = cast(IO[bytes], target.fs.open(self._tmp_key, "wb", block_size=block))
        except OSError as exc:
            raise BackupError(f"cannot write the archive {target.url!r}: {exc}") from None

    def commit(self) -> None:
        """Finish the upload (or close the file) and move it to the archive's name."""
        target = self.target
        if self._spool is not None:
            self.handle.close()
            self._uploading = True  # from here on, an interruption keeps the upload open
            block = int(target.storage_options.get("block_size", WRITE_BLOCK))
            S3Upload(target, self._tmp_key).upload(self._spool, block)
            return
        try:
            self.handle.close()
            if target.path is not None:
                os.replace(self._tmp_path, target.path)
            else:
                target.fs.mv(self._tmp_key, target.fs_path)
        except OSError as exc:
            self.discard()
            raise BackupError(f"cannot write the archive {str(target)!r}: {exc}") from None

    def discard(self) -> None:
        """Drop what was written (abort the multipart upload)."""
        target = self.target
        if target.path is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self._tmp_path.unlink(missing_ok=True)
            return
        if self._spool is not None:
            if not self._uploading:  # the archive was not complete: nothing to resume
                with contextlib.suppress(OSError):
                    self.handle.close()
                self._spool.unlink(missing_ok=True)
            return
        discard = getattr(self.handle, "discard", None)
        with contextlib.suppress(Exception):
            if discard is not None and not self.handle.closed:
                discard()  # aborts the multipart upload: no object is created
                self.handle.closed = True  # type: ignore[misc]
            else:
                self.handle.close()
        with contextlib.suppress(Exception):
            if target.fs.exists(self._tmp_key):
                target.fs.rm_file(self._tmp_key)


def _filesystem(url: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigurationError(
            f"{url!r} is a URL: archives in object stores need fsspec and the filesystem "
            "of the protocol (pip install 'haive-langgraph[s3]' for s3://)"
        ) from None
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    kwargs = {k: v for k, v in options.items() if k not in _OURS}
    if scheme in ("s3", "s3a") and "endpoint_url" not in kwargs:
        endpoint = os.environ.get(S3_ENDPOINT_ENV)
        if endpoint:
            kwargs["endpoint_url"] = endpoint
    try:
        fs, path = fsspec.core.url_to_fs(url, **kwargs)
    except ImportError as exc:
        package = _EXTRAS.get(scheme, f"the fsspec filesystem of {scheme}://")
        raise ConfigurationError(f"{url!r} needs {package}: {exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"{url!r} is not a location fsspec knows: {exc}") from None
    return fs, str(path)


def location(
    target: str | os.PathLike[str] | Location,
    storage_options: Mapping[str, Any] | None = None,
) -> Location:
    """The location of an archive (or of a directory of archives).

    Args:
        target: A path, a ``file://`` URL, or a URL of an object store.
        storage_options: Options of the fsspec filesystem (credentials,
            ``endpoint_url``, ``block_size`` of uploads, ``read_block_size``).
    """
    if isinstance(target, Location):
        return target
    if isinstance(target, os.PathLike):
        return Location(str(target), Path(target))
    text = str(target)
    if text.startswith("file://"):
        local = Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
        return Location(text, local)
    if not _is_url(text):
        return Location(text, Path(text))
    return Location(text, None, dict(storage_options or {}))
