"""The backup archive: a tar file of zstd-compressed JSONL parts and a signed manifest.

Layout (a plain ``tar``; ``tar tf`` lists it)::

    parts/0001-threads-0001.jsonl.zst       rows of a table, one JSON array per line
    parts/0001-threads-keys-0001.jsonl.zst  (incremental) primary keys present
    parts/scope.jsonl.zst                    what the selection covered, per table
    manifest.json                            tables, columns, row counts, SHA-256 per part
    manifest.sig                             SHA-256, or HMAC-SHA256 under the backup key

With a backup key every part is encrypted with AES-256-GCM under a key
derived from it (HKDF), with its own random nonce, and the archive id and
the part's name as associated data (a part moved to another archive or
renamed fails to decrypt); the manifest, which lists every part with its
size and SHA-256, is authenticated with HMAC-SHA256 under another derived
key. Without the key nobody can change the manifest or a part, nor drop,
add, swap or reorder parts. Without a backup key the manifest's SHA-256 and
the parts' are a check against damage only: anyone can recompute them.

Reading never extracts anything to disk and is bounded: the manifest is at
most :data:`MAX_MANIFEST_BYTES`, parts are hashed and decompressed as
streams (an encrypted part is held once in memory, as it was written), a
part decompresses to at most its declared size and :data:`MAX_PART_BYTES`,
and one line is at most :data:`MAX_LINE_BYTES`; past either, the error names
the part and the offset.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import zstandard
from cryptography.exceptions import InvalidTag

from haive_langgraph._lifetime import ClosedOnExit
from haive_langgraph.errors import (
    ArchiveContentError,
    ArchiveIntegrityError,
    BackupError,
    BackupKeyError,
    ConfigurationError,
    RestoreConflictError,
)
from haive_langgraph.ops._archive_rows import check_line, split_lines
from haive_langgraph.ops._backup_keys import (
    BACKUP_KEY_ENV,
    BackupKey,
    key_from_file,
    new_backup_key,
    resolve_key,
)
from haive_langgraph.ops._fields import field_dict
from haive_langgraph.ops._locations import Location, location
from haive_langgraph.ops._manifest import (
    FORMAT,
    FORMAT_VERSION,
    MAX_LINE_BYTES,
    MAX_PART_BYTES,
    check_manifest,
)

__all__ = [
    "BACKUP_KEY_ENV",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_LINE_BYTES",
    "MAX_PART_BYTES",
    "ArchiveContentError",
    "ArchiveIntegrityError",
    "BackupError",
    "BackupKey",
    "BackupKeyError",
    "RestoreConflictError",
    "key_from_file",
    "new_backup_key",
    "resolve_key",
]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_NONCE_BYTES = 12
_PART_MAGIC = b"HVB1"
_ZSTD_LEVEL = 3
MAX_MANIFEST_BYTES = 64 << 20
_MAX_SIGNATURE_BYTES = 4096
# Members read from one tar (a tar of millions of empty members is not ours).
MAX_MEMBERS = 1_000_000
# Our writer's zstd window is 2 MiB (level 3); a frame asking for more than
# this is refused instead of allocated.
_MAX_WINDOW = 1 << 24
_CHUNK = 1 << 20


# -- parts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One stored part: its member name, rows, stored size, SHA-256 and decompressed size.

    ``raw_bytes`` is ``None`` for parts of archives that did not record it.
    """

    name: str
    rows: int
    size: int
    raw_bytes: int | None
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartInfo:
        return cls(
            name=str(data["name"]),
            rows=int(data["rows"]),
            size=int(data["size"]),
            raw_bytes=int(data["raw_bytes"]) if "raw_bytes" in data else None,
            sha256=str(data["sha256"]),
        )


def _aad(archive_id: str, name: str) -> bytes:
    return f"haive-langgraph backup part\x00{archive_id}\x00{name}".encode()


class ArchiveWriter:
    """Writes an archive to ``path`` (through a temporary file, renamed when complete)."""

    def __init__(
        self, path: str | os.PathLike[str] | Location, archive_id: str, key: BackupKey | None
    ):
        self.location = location(path)
        self.path = self.location.path or self.location.url
        self.archive_id = archive_id
        self.key = key
        self._staged = self.location.open_staged()
        self._tar = tarfile.open(  # noqa: SIM115
            fileobj=self._staged.handle, mode="w", format=tarfile.PAX_FORMAT
        )
        self._mtime = int(time.time())
        self.bytes_written = 0

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = self._mtime
        info.mode = 0o600
        self._tar.addfile(info, io.BytesIO(data))
        self.bytes_written += len(data)

    def add_part(self, name: str, compressed: bytes, rows: int, raw_bytes: int) -> PartInfo:
        """Store one part (already compressed); encrypt it if there is a key."""
        data = compressed
        if self.key is not None:
            nonce = os.urandom(_NONCE_BYTES)
            data = (
                _PART_MAGIC
                + nonce
                + self.key.part_aead.encrypt(nonce, compressed, _aad(self.archive_id, name))
            )
        self._add(name, data)
        return PartInfo(name, rows, len(data), raw_bytes, hashlib.sha256(data).hexdigest())

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest and its signature, and move the archive into place."""
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self._add(MANIFEST, body)
        self._add(SIGNATURE, json.dumps(sign(body, self.key)).encode())
        self._tar.close()
        self._staged.commit()

    def abort(self) -> None:
        """Drop the partial archive."""
        try:
            self._tar.close()
        finally:
            self._staged.discard()


def sign(body: bytes, key: BackupKey | None) -> dict[str, str]:
    if key is None:
        return {"algorithm": "SHA-256", "value": hashlib.sha256(body).hexdigest()}
    return {
        "algorithm": "HMAC-SHA256",
        "key_fingerprint": key.fingerprint,
        "value": hmac.new(key.mac_key, body, hashlib.sha256).hexdigest(),
    }


class PartBuilder:
    """Collects JSONL lines into zstd-compressed parts of bounded size."""

    def __init__(self, max_rows: int, max_bytes: int, what: str = "a part") -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.what = what
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._reset()

    def _reset(self) -> None:
        self._buffer = io.BytesIO()
        self._stream = self._compressor.stream_writer(self._buffer, closefd=False)
        self.rows = 0
        self.raw_bytes = 0

    def add(self, line: bytes) -> bool:
        """Add one line (without its newline); True when the part is full.

        Raises:
            BackupError: The line is longer than :data:`MAX_LINE_BYTES`, which
                no reader accepts (limits hold at write time).
        """
        if len(line) > MAX_LINE_BYTES:
            raise BackupError(
                f"a row of {self.what} is {len(line):,} bytes as text, more than an archive line "
                f"may hold ({MAX_LINE_BYTES:,}): use pg_dump for this table"
            )
        self._stream.write(line)
        self._stream.write(b"\n")
        self.rows += 1
        self.raw_bytes += len(line) + 1
        return self.rows >= self.max_rows or self.raw_bytes >= self.max_bytes

    def take(self) -> tuple[bytes, int, int]:
        """The compressed part, its rows and uncompressed bytes; starts a new part."""
        self._stream.close()  # type: ignore[no-untyped-call]
        out = (self._buffer.getvalue(), self.rows, self.raw_bytes)
        self._reset()
        return out


# -- reading --------------------------------------------------------------------------------


class _HashedReader:
    """A part's stored bytes as a stream, hashed as they are read; :meth:`finish` checks them."""

    def __init__(self, handle: IO[bytes], part: PartInfo, where: str) -> None:
        self.handle = handle
        self.part = part
        self.where = where
        self.digest = hashlib.sha256()
        self.seen = 0
        self.done = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.handle.read(size if size is not None and size >= 0 else _CHUNK)
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveIntegrityError(
                f"part {self.part.name} of {self.where} cannot be read: {exc}"
            ) from None
        self.digest.update(data)
        self.seen += len(data)
        return data

    def finish(self) -> None:
        """Read what is left and compare size and SHA-256 with the manifest's."""
        if self.done:
            return
        while self.read(_CHUNK):
            pass
        self.done = True
        if self.seen != self.part.size or not hmac.compare_digest(
            self.digest.hexdigest(), self.part.sha256
        ):
            raise ArchiveIntegrityError(
                f"part {self.part.name} of {self.where} does not match its SHA-256 in the "
                "manifest: the archive was changed or damaged"
            )


class ArchiveReader(ClosedOnExit):
    """Reads and checks an archive written by :class:`ArchiveWriter`.

    Raises:
        BackupError: No archive at ``path``, or one of a newer format.
        ArchiveIntegrityError: The tar or the manifest is damaged or not ours.
    """

    def __init__(self, path: str | os.PathLike[str] | Location) -> None:
        self.location = location(path)
        self.path: Path | str = self.location.path or self.location.url
        self.where = repr(str(self.path))
        if not self.location.exists():
            raise BackupError(f"no backup archive at {self.where}")
        self.size = self.location.size()
        """The archive's size in bytes."""
        handle = self.location.open_read()
        try:
            self._tar = tarfile.open(fileobj=handle, mode="r:")  # noqa: SIM115
        except (tarfile.TarError, OSError) as exc:
            handle.close()
            raise ArchiveIntegrityError(
                f"{self.where} is not a readable backup archive (its tar structure is "
                f"damaged: {exc})"
            ) from None
        try:
            self._members, self._twice = self._scan()
            body = self._small_member(MANIFEST, MAX_MANIFEST_BYTES)
            sig_bytes = self._small_member(SIGNATURE, _MAX_SIGNATURE_BYTES)
            try:
                self.manifest: dict[str, Any] = json.loads(body)
                self.signature: dict[str, Any] = json.loads(sig_bytes)
            except (ValueError, RecursionError, UnicodeDecodeError):
                raise ArchiveIntegrityError(
                    f"the manifest of {self.where} is damaged (not valid JSON)"
                ) from None
            if not isinstance(self.signature, dict):
                raise ArchiveIntegrityError(f"the manifest signature of {self.where} is damaged")
            check_manifest(self.manifest, self.where)
        except BaseException:
            self._tar.close()
            handle.close()
            raise
        self._handle = handle
        self._body = body
        self.key: BackupKey | None = None

    def _scan(self) -> tuple[dict[str, tarfile.TarInfo], set[str]]:
        members: dict[str, tarfile.TarInfo] = {}
        twice: set[str] = set()
        try:
            for count, member in enumerate(self._tar, start=1):
                if count > MAX_MEMBERS:
                    raise ArchiveIntegrityError(
                        f"{self.where} holds more than {MAX_MEMBERS:,} members: not a backup archive"
                    )
                if member.name in members:
                    twice.add(member.name)
                members[member.name] = member
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveIntegrityError(
                f"{self.where} is not a readable backup archive (its tar structure is "
                f"damaged: {exc})"
            ) from None
        return members, twice

    def close(self) -> None:
        try:
            self._tar.close()
        finally:
            self._handle.close()

    @property
    def encrypted(self) -> bool:
        return self.manifest.get("encryption") is not None

    def _member(self, name: str, what: str) -> tarfile.TarInfo:
        member = self._members.get(name)
        if member is None:
            raise ArchiveIntegrityError(f"{what} is missing from {self.where}")
        if name in self._twice:
            raise ArchiveIntegrityError(f"{self.where} holds {name} twice: it was changed")
        # Only regular files: a link or a device is never followed.
        if not member.isfile() or member.issparse():
            raise ArchiveIntegrityError(f"{what} in {self.where} is not a regular file")
        return member

    def _open(self, member: tarfile.TarInfo) -> IO[bytes]:
        try:
            handle = self._tar.extractfile(member)
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveIntegrityError(f"{member.name} cannot be read: {exc}") from None
        assert handle is not None
        return handle

    def _small_member(self, name: str, limit: int) -> bytes:
        member = self._member(name, name)
        if member.size > limit:
            raise ArchiveIntegrityError(
                f"{name} of {self.where} is {member.size:,} bytes, more than {limit:,}: "
                "not a backup archive"
            )
        try:
            with self._open(member) as handle:
                return handle.read(member.size)
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveIntegrityError(f"{name} of {self.where} cannot be read: {exc}") from None

    def authenticate(self, key: BackupKey | None, *, unkeyed: bool = False) -> None:
        """Check the manifest's signature (and that ``key`` is the archive's key).

        Args:
            key: The backup key in effect (explicit or ``HAIVE_BACKUP_KEY``).
            unkeyed: Accept an archive written without a key although a key
                is in effect (it is then checked against damage only).

        Raises:
            BackupKeyError: The archive is encrypted and no key, or another
                key, was given; or a key is in effect for an archive that is
                not encrypted (it could have been swapped in) and ``unkeyed``
                is not set.
            ArchiveIntegrityError: The manifest was changed.
        """
        where = self.where
        encryption = self.manifest.get("encryption")
        algorithm = self.signature.get("algorithm")
        if encryption is None and algorithm == "SHA-256":
            if key is not None and not unkeyed:
                raise BackupKeyError(
                    f"{where} is not encrypted, but a backup key is in effect: refusing to trust "
                    "an unauthenticated archive in its place (anyone can write one); pass no "
                    f"key and unset {BACKUP_KEY_ENV}, or --unkeyed, to restore it"
                )
            expected = hashlib.sha256(self._body).hexdigest()
            if not hmac.compare_digest(expected, str(self.signature.get("value", ""))):
                raise ArchiveIntegrityError(
                    f"the manifest of {where} does not match its checksum: it was changed"
                )
            return
        if algorithm != "HMAC-SHA256":
            raise ArchiveIntegrityError(f"the manifest signature of {where} is damaged")
        if key is None:
            raise BackupKeyError(
                f"{where} is encrypted: give its backup key (--key-file, or {BACKUP_KEY_ENV})"
            )
        fingerprint = self.signature.get("key_fingerprint")
        if fingerprint != key.fingerprint:
            raise BackupKeyError(
                f"{where} was encrypted with another backup key (fingerprint {fingerprint}); "
                f"the key given has fingerprint {key.fingerprint}"
            )
        expected = hmac.new(key.mac_key, self._body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(self.signature.get("value", ""))):
            raise ArchiveIntegrityError(
                f"the manifest of {where} fails authentication: it was changed after the "
                "backup was written"
            )
        if not isinstance(encryption, dict) or encryption.get("key_fingerprint") != key.fingerprint:
            raise ArchiveIntegrityError(f"the manifest of {where} names another key")
        self.key = key

    def _stored(self, part: PartInfo) -> _HashedReader:
        member = self._member(part.name, f"part {part.name}")
        if member.size != part.size:
            raise ArchiveIntegrityError(
                f"part {part.name} of {self.where} is {member.size:,} bytes, its manifest says "
                f"{part.size:,}: the archive was changed or damaged"
            )
        return _HashedReader(self._open(member), part, self.where)

    def check_part(self, part: PartInfo) -> None:
        """Check a part's size and SHA-256 against the manifest (streamed)."""
        self._stored(part).finish()

    def _compressed(self, part: PartInfo) -> tuple[IO[bytes] | _HashedReader, Callable[[], None]]:
        """The part's zstd stream, and what to call once it is read (the hash check)."""
        stored = self._stored(part)
        if not self.encrypted:
            return stored, stored.finish
        if self.key is None:
            raise BackupKeyError("the archive is encrypted: authenticate it with its key first")
        # AES-GCM authenticates the whole part at once: it is held in memory
        # (at most the part size its writer, holding the key, chose).
        data = stored.read(part.size)
        stored.finish()
        if data[:4] != _PART_MAGIC:
            raise ArchiveIntegrityError(f"part {part.name} is not an encrypted part")
        nonce, body = data[4 : 4 + _NONCE_BYTES], data[4 + _NONCE_BYTES :]
        archive_id = str(self.manifest["archive_id"])
        try:
            plain = self.key.part_aead.decrypt(nonce, body, _aad(archive_id, part.name))
        except InvalidTag:
            raise ArchiveIntegrityError(
                f"part {part.name} fails authentication under the backup key"
            ) from None
        return io.BytesIO(plain), lambda: None

    def part_chunks(self, part: PartInfo) -> Iterator[bytes]:
        """The decompressed bytes of a part, in chunks of at most 1 MiB, checked as they come.

        Raises:
            ArchiveIntegrityError: The stored bytes do not match the manifest
                (raised at the latest after the last chunk), the part does not
                decompress, or it decompresses to more than it declares or
                than :data:`MAX_PART_BYTES`.
        """
        source, finish = self._compressed(part)
        limit = MAX_PART_BYTES if part.raw_bytes is None else min(part.raw_bytes, MAX_PART_BYTES)
        reader = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).stream_reader(
            cast(IO[bytes], source), read_size=_CHUNK, read_across_frames=True, closefd=False
        )
        total = 0
        try:
            while chunk := reader.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise ArchiveIntegrityError(
                        f"part {part.name} decompresses to more than {limit:,} bytes"
                        + (
                            f" (its manifest says {part.raw_bytes:,})"
                            if part.raw_bytes is not None
                            else ""
                        )
                        + ": refusing it (a damaged or crafted part)"
                    )
                yield chunk
        except zstandard.ZstdError as exc:
            finish()  # changed bytes are named as such
            raise ArchiveIntegrityError(f"part {part.name} cannot be decompressed: {exc}") from None
        finish()
        if part.raw_bytes is not None and total != part.raw_bytes:
            raise ArchiveIntegrityError(
                f"part {part.name} decompresses to {total:,} bytes; its manifest says "
                f"{part.raw_bytes:,}"
            )

    def part_lines(self, part: PartInfo) -> Iterator[bytes]:
        """The JSONL lines of a part (decrypted, decompressed, checked as they are read)."""
        yield from split_lines(self.part_chunks(part), part.name)

    def count_lines(self, part: PartInfo) -> int:
        """The number of lines of a part, reading it as a stream (memory: one chunk)."""
        count = 0
        run = 0  # bytes of the line not yet ended
        offset = 0
        for chunk in self.part_chunks(part):
            newlines = chunk.count(b"\n")
            if newlines:
                check_line(run + chunk.index(b"\n"), part.name, offset - run)
                run = len(chunk) - chunk.rindex(b"\n") - 1
                count += newlines
            else:
                run += len(chunk)
            offset += len(chunk)
            check_line(run, part.name, offset - run)
        if run:
            raise ArchiveIntegrityError(f"part {part.name} ends in the middle of a line")
        return count


def check_config_value(value: int, name: str, maximum: int | None = None) -> int:
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum:,}, got {value:,}")
    return value
