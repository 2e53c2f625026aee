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
renamed fails to decrypt); the manifest is authenticated with HMAC-SHA256
under another derived key. The manifest itself stays readable (table names,
row counts, checksums), so an archive can be listed without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haive_langgraph.errors import ConfigurationError, CorruptDataError, HaiveError

FORMAT = "haive-langgraph-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
BACKUP_KEY_ENV = "HAIVE_BACKUP_KEY"
KEY_BYTES = 32
_NONCE_BYTES = 12
_PART_MAGIC = b"HVB1"
_ZSTD_LEVEL = 3
# A decompressed part larger than this is refused (a zstd bomb, or not ours).
MAX_PART_BYTES = 1 << 30


class BackupError(HaiveError, RuntimeError):
    """A backup or restore could not be carried out; nothing was written."""


class ArchiveIntegrityError(BackupError, CorruptDataError):
    """The archive is damaged or was changed after it was written; names the part."""


class BackupKeyError(BackupError, ValueError):
    """The backup key is missing, malformed, or not the one the archive was written with."""


class RestoreConflictError(BackupError):
    """The target already holds rows the archive would restore (use merge or replace)."""


# -- keys ---------------------------------------------------------------------------------


class BackupKey:
    """A 32-byte backup key, with the keys derived from it for parts and the manifest.

    Args:
        material: The raw 32 bytes.
    """

    __slots__ = ("_material", "fingerprint", "mac_key", "part_aead")

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise BackupKeyError(
                f"a backup key is {KEY_BYTES} bytes (base64: 44 characters), got {len(material)}"
            )
        self._material = material
        self.part_aead = AESGCM(_derive(material, b"parts"))
        self.mac_key = _derive(material, b"manifest")
        self.fingerprint = _derive(material, b"fingerprint")[:8].hex()

    @classmethod
    def from_text(cls, text: str) -> BackupKey:
        """A key from its base64 text (as printed by :func:`new_backup_key`)."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BackupKeyError(
                "the backup key is not valid base64; generate one with `haive-lg backup-key`"
            ) from None
        return cls(raw)

    def __repr__(self) -> str:
        return f"BackupKey(fingerprint={self.fingerprint!r})"


def _derive(material: bytes, purpose: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=b"haive-langgraph backup v1\x00" + purpose,
    ).derive(material)


def new_backup_key() -> str:
    """A new random backup key, as base64 text."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def resolve_key(
    key: BackupKey | bytes | str | os.PathLike[str] | None, *, use_env: bool = True
) -> BackupKey | None:
    """The backup key to use.

    Args:
        key: A :class:`BackupKey`, raw 32 bytes, base64 text, or a path to a
            file holding the base64 text. ``None`` reads ``HAIVE_BACKUP_KEY``
            (when ``use_env``).
    """
    if key is None:
        text = os.environ.get(BACKUP_KEY_ENV) if use_env else None
        return BackupKey.from_text(text) if text else None
    if isinstance(key, BackupKey):
        return key
    if isinstance(key, bytes):
        return BackupKey(key)
    if isinstance(key, os.PathLike):
        return key_from_file(key)
    return BackupKey.from_text(key)


def key_from_file(path: str | os.PathLike[str]) -> BackupKey:
    """Read a base64 backup key from a file."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise BackupKeyError(f"cannot read the backup key file {str(path)!r}: {exc}") from None
    except UnicodeDecodeError:
        raise BackupKeyError(f"the backup key file {str(path)!r} is not base64 text") from None
    return BackupKey.from_text(text)


# -- parts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One stored part: its member name, rows, stored size and SHA-256."""

    name: str
    rows: int
    size: int
    raw_bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "size": self.size,
            "raw_bytes": self.raw_bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartInfo:
        return cls(
            name=str(data["name"]),
            rows=int(data["rows"]),
            size=int(data["size"]),
            raw_bytes=int(data.get("raw_bytes", 0)),
            sha256=str(data["sha256"]),
        )


def _aad(archive_id: str, name: str) -> bytes:
    return f"haive-langgraph backup part\x00{archive_id}\x00{name}".encode()


class ArchiveWriter:
    """Writes an archive to ``path`` (through a temporary file, renamed when complete)."""

    def __init__(self, path: str | os.PathLike[str], archive_id: str, key: BackupKey | None):
        self.path = Path(path)
        self.archive_id = archive_id
        self.key = key
        self._tmp = self.path.with_name(self.path.name + ".partial")
        try:
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        except OSError as exc:
            raise BackupError(f"cannot write the archive {str(self.path)!r}: {exc}") from None
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
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial archive."""
        try:
            self._tar.close()
        finally:
            self._tmp.unlink(missing_ok=True)


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

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._reset()

    def _reset(self) -> None:
        self._buffer = io.BytesIO()
        self._stream = self._compressor.stream_writer(self._buffer, closefd=False)
        self.rows = 0
        self.raw_bytes = 0

    def add(self, line: bytes) -> bool:
        """Add one line (without its newline); True when the part is full."""
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


class ArchiveReader:
    """Reads and checks an archive written by :class:`ArchiveWriter`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BackupError(f"no backup archive at {str(self.path)!r}")
        try:
            self._tar = tarfile.open(self.path, "r:")  # noqa: SIM115
            self._members = {m.name: m for m in self._tar.getmembers()}
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveIntegrityError(
                f"{str(self.path)!r} is not a readable backup archive (its tar structure is "
                f"damaged: {exc})"
            ) from None
        body = self._member_bytes(MANIFEST)
        sig_bytes = self._member_bytes(SIGNATURE)
        try:
            self.manifest: dict[str, Any] = json.loads(body)
            self.signature: dict[str, str] = json.loads(sig_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ArchiveIntegrityError(
                f"the manifest of {str(self.path)!r} is damaged (not valid JSON)"
            ) from None
        self._body = body
        if self.manifest.get("format") != FORMAT:
            raise ArchiveIntegrityError(f"{str(self.path)!r} is not a haive-langgraph backup")
        if int(self.manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise BackupError(
                f"{str(self.path)!r} was written by a newer haive-langgraph (archive format "
                f"{self.manifest.get('format_version')}); upgrade haive-langgraph to read it"
            )
        self.key: BackupKey | None = None

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def encrypted(self) -> bool:
        return self.manifest.get("encryption") is not None

    def _member_bytes(self, name: str) -> bytes:
        member = self._members.get(name)
        if member is None:
            raise ArchiveIntegrityError(
                f"{str(self.path)!r} has no {name}: the archive is incomplete"
            )
        handle = self._tar.extractfile(member)
        assert handle is not None
        with handle:
            return handle.read()

    def authenticate(self, key: BackupKey | None) -> None:
        """Check the manifest's signature (and that ``key`` is the archive's key).

        Raises:
            BackupKeyError: The archive is encrypted and no key, or another
                key, was given; or a key was given for an archive that is not
                encrypted.
            ArchiveIntegrityError: The manifest was changed.
        """
        where = repr(str(self.path))
        encryption = self.manifest.get("encryption")
        algorithm = self.signature.get("algorithm")
        if encryption is None and algorithm == "SHA-256":
            if key is not None:
                raise BackupKeyError(
                    f"{where} is not encrypted, but a backup key was given: refusing to trust "
                    "an unauthenticated archive in its place (pass no key to restore it)"
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

    def stored_part(self, part: PartInfo) -> bytes:
        """The stored bytes of a part, checked against the manifest's size and SHA-256."""
        member = self._members.get(part.name)
        if member is None:
            raise ArchiveIntegrityError(f"part {part.name} is missing from {str(self.path)!r}")
        try:
            data = self._member_bytes(part.name)
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveIntegrityError(f"part {part.name} cannot be read: {exc}") from None
        if len(data) != part.size or hashlib.sha256(data).hexdigest() != part.sha256:
            raise ArchiveIntegrityError(
                f"part {part.name} of {str(self.path)!r} does not match its SHA-256 in the "
                "manifest: the archive was changed or damaged"
            )
        return data

    def part_lines(self, part: PartInfo) -> Iterator[bytes]:
        """The JSONL lines of a verified (and decrypted) part."""
        data = self.stored_part(part)
        if self.encrypted:
            if self.key is None:
                raise BackupKeyError("the archive is encrypted: authenticate it with its key first")
            if data[:4] != _PART_MAGIC:
                raise ArchiveIntegrityError(f"part {part.name} is not an encrypted part")
            nonce, body = data[4 : 4 + _NONCE_BYTES], data[4 + _NONCE_BYTES :]
            archive_id = str(self.manifest["archive_id"])
            try:
                data = self.key.part_aead.decrypt(nonce, body, _aad(archive_id, part.name))
            except InvalidTag:
                raise ArchiveIntegrityError(
                    f"part {part.name} fails authentication under the backup key"
                ) from None
        yield from _lines(data, part.name)


def _lines(compressed: bytes, name: str) -> Iterator[bytes]:
    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed))
    total = 0
    pending = b""
    try:
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_PART_BYTES:
                raise ArchiveIntegrityError(f"part {name} decompresses to more than 1 GiB")
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from lines
    except zstandard.ZstdError as exc:
        raise ArchiveIntegrityError(f"part {name} cannot be decompressed: {exc}") from None
    if pending:
        raise ArchiveIntegrityError(f"part {name} ends in the middle of a line")


def parse_row(line: bytes, width: int, part: str) -> list[str | None]:
    """One archived row: a JSON array of ``width`` text values (or nulls)."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArchiveIntegrityError(f"part {part} holds a line that is not JSON") from None
    if not isinstance(row, list) or len(row) != width:
        raise ArchiveIntegrityError(f"part {part} holds a row of the wrong width")
    return row


def check_config_value(value: int, name: str) -> int:
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1, got {value}")
    return value
