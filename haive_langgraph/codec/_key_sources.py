"""Global encryption keys: one usable key, the ``HAIVE_ENCRYPTION_KEYS`` list, key providers.

A :class:`CipherKey` is one key ready for use (its AEAD, frame header
prefixes, derived MAC keys); :class:`~haive_langgraph.codec.KeyRing` holds
them. Global keys come from a list (:func:`parse_encryption_keys`) or from a
:class:`KeyProvider`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haive_langgraph.codec._frame import (
    FLAG_COMPRESSED,
    FLAG_DICTIONARY,
    KEY_ID_RULE,
    encrypted_header_prefix,
    is_valid_key_id,
)
from haive_langgraph.errors import ConfigurationError

ENCRYPTION_KEYS_ENV = "HAIVE_ENCRYPTION_KEYS"
KEY_BYTES = 32
_MAX_MAC_KEYS_PER_KEY = 4096
_CONTENT_KEY_INFO = b"haive-langgraph content-key v1\x00"
_KEY_HELP = 'generate one with: python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'


class CipherKey:
    """One usable key: its AEAD, frame header prefixes and derived MAC keys."""

    __slots__ = (
        "_mac_keys",
        "_material",
        "aead",
        "key_id",
        "prefix_compressed",
        "prefix_dictionary",
        "prefix_plain",
    )

    def __init__(self, key_id: str, material: bytes) -> None:
        self.key_id = key_id
        self._material = material
        # AESGCM objects keep no per-operation state (each call builds its
        # own cipher context), so one per key is shared by all threads.
        self.aead = AESGCM(material)
        self.prefix_plain = encrypted_header_prefix(0, key_id)
        self.prefix_compressed = encrypted_header_prefix(FLAG_COMPRESSED, key_id)
        self.prefix_dictionary = encrypted_header_prefix(FLAG_COMPRESSED | FLAG_DICTIONARY, key_id)
        self._mac_keys: dict[str, bytes] = {}

    def mac_key(self, tenant_id: str) -> bytes:
        """The content-key MAC key of ``tenant_id`` under this key (HKDF, cached).

        HKDF costs ~5 us; a dict hit ~50 ns, so derived keys are cached.
        """
        mac = self._mac_keys.get(tenant_id)
        if mac is None:
            mac = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=_CONTENT_KEY_INFO + tenant_id.encode(),
            ).derive(self._material)
            if len(self._mac_keys) >= _MAX_MAC_KEYS_PER_KEY:
                self._mac_keys.clear()
            self._mac_keys[tenant_id] = mac
        return mac

    def __repr__(self) -> str:
        return f"<encryption key {self.key_id!r}>"


def check_material(material: object, key_id: str, source: str) -> bytes:
    """``material`` as bytes when it is a 32-byte key (else an error naming ``source`` and ``key_id``)."""
    if not isinstance(material, bytes | bytearray) or len(material) != KEY_BYTES:
        size = len(material) if isinstance(material, bytes | bytearray) else None
        got = f"{size} bytes" if size is not None else f"a {type(material).__name__}"
        raise ConfigurationError(
            f"{source}: key {key_id!r} is {got}; AES-256 needs exactly {KEY_BYTES} bytes"
        )
    return bytes(material)


# --------------------------------------------------------------------------
# Parsing HAIVE_ENCRYPTION_KEYS


def _decode_base64_key(text: str) -> bytes:
    standard = "+" in text or "/" in text
    urlsafe = "-" in text or "_" in text
    if standard and urlsafe:
        raise ValueError("mixed base64 alphabets")
    if urlsafe:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


def parse_encryption_keys(
    spec: str, *, source: str = ENCRYPTION_KEYS_ENV
) -> list[tuple[str, bytes]]:
    """Parse a key list such as ``"k2:BASE64KEY,k1:BASE64KEY"``.

    Entries are separated by commas; each is ``KEY_ID:BASE64`` where the key
    id is 1-32 characters of ``A-Z a-z 0-9 . _ -`` and the key is standard or
    URL-safe base64 (padding optional) of exactly 32 random bytes. The first
    entry is the primary key. Whitespace around entries is ignored.

    Args:
        spec: The key list.
        source: Where the list came from, named in error messages.

    Returns:
        ``(key_id, key)`` pairs, primary first.

    Raises:
        ConfigurationError: An entry is malformed. The message names the
            entry by position and (when valid) key id; it never contains key
            material.
    """
    entries = spec.split(",")
    pairs: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for position, raw in enumerate(entries, start=1):
        entry = raw.strip()
        where = f"{source}: entry {position}"
        if not entry:
            raise ConfigurationError(
                f"{where} is empty; expected comma-separated KEY_ID:BASE64_KEY entries"
            )
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep:
            raise ConfigurationError(
                f"{where} has no ':'; expected KEY_ID:BASE64_KEY "
                "(the entry is not shown: it may contain key material)"
            )
        if not is_valid_key_id(key_id):
            raise ConfigurationError(
                f"{where} has an invalid key id; a key id is {KEY_ID_RULE} "
                "(the entry is not shown: it may contain key material)"
            )
        where = f"{source}: key {key_id!r} (entry {position})"
        if key_id in seen:
            raise ConfigurationError(f"{where} repeats a key id; each key id must be unique")
        seen.add(key_id)
        if not encoded:
            raise ConfigurationError(f"{where} has no key after ':'; {_KEY_HELP}")
        try:
            material = _decode_base64_key(encoded)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"{where} is not valid base64 (standard or URL-safe); {_KEY_HELP}"
            ) from None
        if len(material) != KEY_BYTES:
            raise ConfigurationError(
                f"{where} decodes to {len(material)} bytes; AES-256 needs exactly "
                f"{KEY_BYTES}; {_KEY_HELP}"
            )
        pairs.append((key_id, material))
    return pairs


# --------------------------------------------------------------------------
# Providers


@runtime_checkable
class KeyProvider(Protocol):
    """A source of global keys, such as a KMS or secrets-manager client.

    Keys are fetched on first use and cached by the :class:`KeyRing` (a key
    id always names the same key); the primary key id is asked again after
    the ring's ``cache_ttl``, so rotating in the provider reaches running
    processes without a restart.
    """

    def primary_key_id(self) -> str:
        """The id of the key new frames are encrypted with."""
        ...

    def get_key(self, key_id: str) -> bytes | None:
        """The 32-byte key named ``key_id``, or ``None`` if the provider has no such key.

        Raise :class:`KeyDestroyedError` for a key known to be destroyed.
        """
        ...


class StaticProvider:
    """A :class:`KeyProvider` over a fixed dict of keys."""

    __slots__ = ("_keys", "_primary")

    def __init__(self, keys: dict[str, bytes], primary: str) -> None:
        self._keys = keys
        self._primary = primary

    def primary_key_id(self) -> str:
        return self._primary

    def get_key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)


class CallableProvider:
    """A :class:`KeyProvider` over a function fetching a key by id."""

    __slots__ = ("_fetch", "_primary")

    def __init__(self, fetch: Callable[[str], bytes | None], primary: str) -> None:
        self._fetch = fetch
        self._primary = primary

    def primary_key_id(self) -> str:
        return self._primary

    def get_key(self, key_id: str) -> bytes | None:
        return self._fetch(key_id)
