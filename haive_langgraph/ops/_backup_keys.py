"""Backup keys: 32 random bytes, and the keys derived from them for parts and the manifest."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haive_langgraph.errors import BackupKeyError

BACKUP_KEY_ENV = "HAIVE_BACKUP_KEY"
KEY_BYTES = 32


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
