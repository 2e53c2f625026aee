"""Encryption keys: the :class:`KeyRing`, key providers and per-tenant key stores.

Global keys come from ``HAIVE_ENCRYPTION_KEYS`` (or a list given in code) or
from a :class:`KeyProvider` (a KMS client, a secrets manager ...), fetched
lazily and cached. Tenant keys are random 32-byte keys, stored *wrapped*
(encrypted with the global primary key, bound to the tenant and key id) in a
:class:`TenantKeyStore`, and unwrapped on first use. Destroying a tenant's
wrapped keys (:meth:`KeyRing.forget_tenant`) makes every row encrypted with
them unreadable: crypto-shredding.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haive_langgraph.codec._base import RowContext
from haive_langgraph.codec._errors import KeyDestroyedError
from haive_langgraph.codec._frame import (
    FLAG_COMPRESSED,
    FLAG_DICTIONARY,
    KEY_ID_RULE,
    NONCE_BYTES,
    encrypted_header_prefix,
    is_valid_key_id,
    validate_key_id,
)
from haive_langgraph.errors import ConfigurationError, DecryptionError

__all__ = [
    "ENCRYPTION_KEYS_ENV",
    "InMemoryTenantKeyStore",
    "KeyProvider",
    "KeyRing",
    "TenantKeyRecord",
    "TenantKeyStore",
    "WrappedKey",
    "parse_encryption_keys",
]

ENCRYPTION_KEYS_ENV = "HAIVE_ENCRYPTION_KEYS"
KEY_BYTES = 32
DEFAULT_CACHE_TTL = 60.0
_MAX_CACHED_TENANTS = 4096
_MAX_MAC_KEYS_PER_KEY = 4096
_CONTENT_KEY_INFO = b"haive-langgraph content-key v1\x00"
_WRAP_AAD = b"haive-langgraph tenant-key v1\x00"
_KEY_HELP = 'generate one with: python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class _Key:
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


def _check_material(material: object, key_id: str, source: str) -> bytes:
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
# Providers and tenant key stores


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


class _StaticProvider:
    __slots__ = ("_keys", "_primary")

    def __init__(self, keys: dict[str, bytes], primary: str) -> None:
        self._keys = keys
        self._primary = primary

    def primary_key_id(self) -> str:
        return self._primary

    def get_key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)


class _CallableProvider:
    __slots__ = ("_fetch", "_primary")

    def __init__(self, fetch: Callable[[str], bytes | None], primary: str) -> None:
        self._fetch = fetch
        self._primary = primary

    def primary_key_id(self) -> str:
        return self._primary

    def get_key(self, key_id: str) -> bytes | None:
        return self._fetch(key_id)


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A tenant key encrypted ("wrapped") with a global key.

    Attributes:
        key_id: The tenant key's id, as written in frames.
        wrapping_key_id: Id of the global key that wrapped it.
        blob: 12-byte nonce + AES-GCM ciphertext of the key. The associated
            data binds it to the tenant, its key id and the wrapping key id,
            so a wrapped key moved to another tenant does not unwrap.
    """

    key_id: str
    wrapping_key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(key_id={self.key_id!r}, wrapping_key_id={self.wrapping_key_id!r})"


@dataclass(frozen=True, slots=True)
class TenantKeyRecord:
    """Everything stored about one tenant's keys.

    Attributes:
        keys: Wrapped keys, primary (newest) first.
        destroyed: The tenant was crypto-shredded: its keys are gone and
            must never be recreated under the same tenant id.
    """

    keys: tuple[WrappedKey, ...] = ()
    destroyed: bool = False


@runtime_checkable
class TenantKeyStore(Protocol):
    """Persistence for wrapped tenant keys (the database layer implements it).

    Only wrapped keys pass through a store; it never sees key material.
    Methods are called rarely (a tenant's first use, then once per cache
    TTL) and may do I/O.
    """

    def load(self, tenant_id: str) -> TenantKeyRecord | None:
        """The tenant's record, or ``None`` if it never had keys of its own."""
        ...

    def save(self, tenant_id: str, record: TenantKeyRecord) -> None:
        """Replace the tenant's record."""
        ...

    def destroy(self, tenant_id: str) -> int:
        """Delete the tenant's keys for good, keeping a "destroyed" marker.

        Returns:
            How many keys were destroyed.
        """
        ...


class InMemoryTenantKeyStore:
    """A :class:`TenantKeyStore` in a dict: for tests and single-process use."""

    def __init__(self) -> None:
        self._records: dict[str, TenantKeyRecord] = {}
        self._lock = threading.Lock()

    def load(self, tenant_id: str) -> TenantKeyRecord | None:
        """The tenant's record, or ``None`` if it never had keys of its own."""
        return self._records.get(tenant_id)

    def save(self, tenant_id: str, record: TenantKeyRecord) -> None:
        """Replace the tenant's record."""
        with self._lock:
            self._records[tenant_id] = record

    def destroy(self, tenant_id: str) -> int:
        """Forget the tenant's keys, keeping a "destroyed" marker; return how many."""
        with self._lock:
            old = self._records.get(tenant_id)
            self._records[tenant_id] = TenantKeyRecord(destroyed=True)
        return len(old.keys) if old is not None else 0


def _wrap_aad(tenant_id: str, key_id: str, wrapping_key_id: str) -> bytes:
    return _WRAP_AAD + b"".join(_lp(p.encode()) for p in (tenant_id, key_id, wrapping_key_id))


# --------------------------------------------------------------------------
# The key ring


class _TenantState:
    __slots__ = ("destroyed", "expires", "keys", "primary_id", "wrapped")

    def __init__(self, record: TenantKeyRecord | None, expires: float) -> None:
        keys = record.keys if record is not None else ()
        self.wrapped = {k.key_id: k for k in keys}
        self.primary_id = keys[0].key_id if keys else None
        self.destroyed = record is not None and record.destroyed
        self.expires = expires
        self.keys: dict[str, _Key] = {}


_ProviderArg = KeyProvider | Callable[[str], bytes | None]


class KeyRing:
    """The encryption keys a codec may use, by key id.

    New frames are encrypted with the primary key of the row's tenant when
    the tenant has keys of its own, else with the global primary key. Any
    key in the ring decrypts (key ids are written into each frame).

    Args:
        keys: Global ``(key_id, key)`` pairs (or a mapping), 32-byte keys.
        primary: Id of the global primary key; default the first of ``keys``.
            Required with a callable ``provider``.
        provider: Instead of ``keys``: a :class:`KeyProvider`, or a callable
            ``key_id -> bytes | None`` (then ``primary`` names the primary).
        tenant_store: Where wrapped tenant keys live; default an
            :class:`InMemoryTenantKeyStore`.
        cache_ttl: Seconds a provider's primary key id and a tenant's record
            are cached before being asked again. Keys themselves are cached
            until :meth:`invalidate`.

    Raises:
        ConfigurationError: No keys, a key of the wrong size, an invalid or
            unknown key id.

    Example:
        >>> ring = KeyRing([("k2", new_key), ("k1", old_key)])  # k2 is primary
        >>> ring.primary_key_id()
        'k2'
    """

    def __init__(
        self,
        keys: Mapping[str, bytes] | Iterable[tuple[str, bytes]] = (),
        *,
        primary: str | None = None,
        provider: _ProviderArg | None = None,
        tenant_store: TenantKeyStore | None = None,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        pairs = list(keys.items()) if isinstance(keys, Mapping) else list(keys)
        if not cache_ttl >= 0:
            raise ConfigurationError(f"cache_ttl {cache_ttl!r} must be >= 0 seconds")
        self._cache_ttl = cache_ttl
        self._lock = threading.RLock()
        self._global: dict[str, _Key] = {}
        self._tenants: dict[str, _TenantState] = {}
        self._store: TenantKeyStore = (
            tenant_store if tenant_store is not None else InMemoryTenantKeyStore()
        )
        self._primary_entry: tuple[_Key, float] | None = None
        # Told after each forget_tenant (caches drop the tenant at once); held weakly.
        self._forget_listeners: list[weakref.WeakMethod[Callable[[str], None]]] = []
        self._provider: KeyProvider
        if provider is not None:
            if pairs:
                raise ConfigurationError("give a KeyRing either keys or a provider, not both")
            if isinstance(provider, KeyProvider):
                if primary is not None:
                    raise ConfigurationError(
                        "a KeyProvider names its own primary key; do not pass primary="
                    )
                self._provider = provider
            elif callable(provider):
                if primary is None:
                    raise ConfigurationError(
                        "a callable key provider needs primary= (the id of the primary key)"
                    )
                self._provider = _CallableProvider(provider, validate_key_id(primary))
            else:
                raise ConfigurationError(
                    "provider must be a KeyProvider (primary_key_id() and get_key()) "
                    "or a callable key_id -> bytes"
                )
            self._static = False
            self._global_primary()  # fail early on a misconfigured provider
            return
        if not pairs:
            raise ConfigurationError(
                f"a KeyRing needs at least one key (set {ENCRYPTION_KEYS_ENV} or pass keys)"
            )
        material: dict[str, bytes] = {}
        for key_id, key in pairs:
            validate_key_id(key_id)
            if key_id in material:
                raise ConfigurationError(f"key id {key_id!r} appears twice in the key ring")
            material[key_id] = _check_material(key, key_id, "KeyRing")
        primary = pairs[0][0] if primary is None else primary
        if primary not in material:
            # Echo the id only when it is a valid one (so never key material).
            named = f" {primary!r}" if is_valid_key_id(primary) else ""
            raise ConfigurationError(
                f"primary key{named} is not one of the keys given "
                f"({', '.join(repr(k) for k in material)})"
            )
        self._provider = _StaticProvider(material, primary)
        self._static = True
        self._global = {kid: _Key(kid, m) for kid, m in material.items()}
        self._primary_entry = (self._global[primary], math.inf)

    # -- construction from configuration ------------------------------------

    @classmethod
    def from_string(
        cls,
        spec: str,
        *,
        source: str = ENCRYPTION_KEYS_ENV,
        tenant_store: TenantKeyStore | None = None,
    ) -> KeyRing:
        """A key ring from ``"k2:BASE64KEY,k1:BASE64KEY"`` (first = primary).

        Args:
            spec: The key list; see :func:`parse_encryption_keys`.
            source: Where it came from, named in error messages.
            tenant_store: Where wrapped tenant keys live.

        Raises:
            ConfigurationError: The list is malformed (never echoing key material).
        """
        return cls(parse_encryption_keys(spec, source=source), tenant_store=tenant_store)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        tenant_store: TenantKeyStore | None = None,
    ) -> KeyRing | None:
        """The key ring of ``HAIVE_ENCRYPTION_KEYS``, or ``None`` when it is unset or blank.

        Args:
            environ: Environment to read; default ``os.environ``.
            tenant_store: Where wrapped tenant keys live.

        Raises:
            ConfigurationError: The variable is malformed.
        """
        env = os.environ if environ is None else environ
        spec = env.get(ENCRYPTION_KEYS_ENV, "")
        if not spec.strip():
            return None
        return cls.from_string(spec, tenant_store=tenant_store)

    # -- public queries and admin operations ---------------------------------

    def primary_key_id(self, tenant_id: str = "") -> str:
        """The id of the key new frames of ``tenant_id`` are encrypted with.

        Raises:
            KeyDestroyedError: The tenant was crypto-shredded.
        """
        return self._encryption_key(tenant_id, None).key_id

    def has_tenant_keys(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` has keys of its own (rather than the global keys)."""
        return bool(tenant_id) and bool(self._tenant(tenant_id).wrapped)

    def is_tenant_destroyed(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` was crypto-shredded."""
        return bool(tenant_id) and self._tenant(tenant_id).destroyed

    def create_tenant_key(
        self, tenant_id: str, *, key: bytes | None = None, key_id: str | None = None
    ) -> str:
        """Give ``tenant_id`` a new key of its own, which becomes its primary key.

        The key is wrapped with the global primary key and saved in the
        tenant store; the tenant's older keys stay readable. Rows the tenant
        wrote before stay encrypted with whatever key they name; re-encode
        them (:meth:`HaiveCodec.reencode`) so that forgetting the tenant
        later shreds them too.

        Args:
            tenant_id: A non-default tenant.
            key: 32 bytes of key material; default a fresh random key.
            key_id: Id for the key; default a random ``t-`` id.

        Returns:
            The new key's id.

        Raises:
            ConfigurationError: The default tenant, a crypto-shredded tenant,
                a bad key, or a key id already in use.
        """
        if not tenant_id:
            raise ConfigurationError("the default tenant ('') uses the global keys")
        key_id = f"t-{secrets.token_hex(6)}" if key_id is None else validate_key_id(key_id)
        material = (
            os.urandom(KEY_BYTES) if key is None else _check_material(key, key_id, "tenant key")
        )
        with self._lock:
            record = self._store.load(tenant_id) or TenantKeyRecord()
            if record.destroyed:
                raise ConfigurationError(
                    f"tenant {tenant_id!r} was crypto-shredded; its id cannot get new keys"
                )
            if any(k.key_id == key_id for k in record.keys) or self._global_key(key_id) is not None:
                raise ConfigurationError(f"key id {key_id!r} is already in use")
            kek = self._global_primary()
            wrapped = self._wrap(kek, tenant_id, key_id, material)
            self._store.save(tenant_id, TenantKeyRecord(keys=(wrapped, *record.keys)))
            self._tenants.pop(tenant_id, None)
        return key_id

    def forget_tenant(self, tenant_id: str) -> int:
        """Crypto-shred ``tenant_id``: destroy its keys and refuse its rows from now on.

        Every frame encrypted with the tenant's keys becomes undecryptable,
        wherever copies of it live (replicas, backups). This codec also
        refuses to read or write any other row of the tenant. Other
        processes notice within ``cache_ttl`` seconds (or call
        :meth:`invalidate`).

        Args:
            tenant_id: A non-default tenant.

        Returns:
            How many keys were destroyed (0 if the tenant only used global
            keys: its rows are then refused here but not cryptographically
            erased).

        Raises:
            ConfigurationError: ``tenant_id`` is the default tenant.
        """
        if not tenant_id:
            raise ConfigurationError("the default tenant ('') cannot be forgotten")
        with self._lock:
            destroyed = self._store.destroy(tenant_id)
            self._tenants[tenant_id] = _TenantState(
                TenantKeyRecord(destroyed=True), time.monotonic() + self._cache_ttl
            )
            listeners = [m for ref in self._forget_listeners if (m := ref()) is not None]
        for listener in listeners:
            listener(tenant_id)
        return destroyed

    def add_forget_listener(self, listener: Callable[[str], None]) -> None:
        """Call the bound method ``listener(tenant_id)`` after each :meth:`forget_tenant`.

        Caches use it to drop a shredded tenant at once. The method is held
        weakly (its object is not kept alive by this ring) and must not
        raise: the keys are destroyed by then.
        """
        with self._lock:
            self._forget_listeners.append(weakref.WeakMethod(listener))  # type: ignore[arg-type]

    def rewrap_tenant_keys(self, tenant_id: str) -> int:
        """Re-wrap the tenant's keys with the current global primary key.

        Run this for every tenant after rotating the global key, before the
        old global key is removed from the ring (``rotate_keys`` does it for
        the tenants of a database tenant store).

        Returns:
            How many keys were re-wrapped.

        Raises:
            DecryptionError: A wrapped key could not be unwrapped.
            KeyDestroyedError: The tenant was crypto-shredded.
        """
        with self._lock:
            record = self._store.load(tenant_id)
            if record is None or not record.keys:
                return 0
            fresh, count = self.rewrapped(tenant_id, record)
            if count:
                self._store.save(tenant_id, fresh)
                self._tenants.pop(tenant_id, None)
        return count

    def rewrapped(self, tenant_id: str, record: TenantKeyRecord) -> tuple[TenantKeyRecord, int]:
        """``record`` with every key wrapped by the current global primary key (no I/O).

        Returns:
            The new record and how many keys were re-wrapped (0: unchanged).

        Raises:
            DecryptionError: A wrapped key could not be unwrapped (its wrapping
                key is not in the ring, or it is corrupt or another tenant's).
            KeyDestroyedError: The tenant was crypto-shredded.
        """
        if record.destroyed:
            raise self._shredded(tenant_id, None)
        kek = self._global_primary()
        count = 0
        keys: list[WrappedKey] = []
        for wrapped in record.keys:
            if wrapped.wrapping_key_id == kek.key_id:
                keys.append(wrapped)
                continue
            material = self._unwrap(tenant_id, wrapped, None)
            keys.append(self._wrap(kek, tenant_id, wrapped.key_id, material))
            count += 1
        return TenantKeyRecord(keys=tuple(keys)), count

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Drop cached state: one tenant's, or (``None``) everything cached.

        Use after changing keys in the tenant store or provider from another
        process when waiting for ``cache_ttl`` is not good enough.
        """
        with self._lock:
            if tenant_id is not None:
                self._tenants.pop(tenant_id, None)
                return
            self._tenants.clear()
            if not self._static:
                self._global.clear()
                self._primary_entry = None

    def __repr__(self) -> str:
        if self._static:
            ids = ", ".join(repr(k) for k in self._global)
            return f"KeyRing(primary={self._provider.primary_key_id()!r}, keys=[{ids}])"
        return f"KeyRing(provider={type(self._provider).__name__})"

    # -- used by the codec ---------------------------------------------------

    def _encryption_key(self, tenant_id: str, ctx: RowContext | None) -> _Key:
        if tenant_id:
            state = self._tenant(tenant_id)
            if state.destroyed:
                raise self._shredded(tenant_id, ctx)
            if state.primary_id is not None:
                key = self._tenant_key(tenant_id, state, state.primary_id, ctx)
                if key is not None:
                    return key
        return self._global_primary()

    def _decryption_key(self, ctx: RowContext, key_id: str) -> _Key:
        tenant_id = ctx.tenant_id
        if tenant_id:
            state = self._tenant(tenant_id)
            if state.destroyed:
                raise self._shredded(tenant_id, ctx)
            key = self._tenant_key(tenant_id, state, key_id, ctx)
            if key is not None:
                return key
        try:
            key = self._global_key(key_id)
        except KeyDestroyedError:
            raise KeyDestroyedError(
                f"{ctx.describe()} is encrypted with key {key_id!r}, which the key provider "
                "reports as destroyed; the row cannot be decrypted any more"
            ) from None
        if key is not None:
            return key
        if tenant_id:
            # The tenant may have got this key in another process since we
            # cached its record: look once more before giving up.
            state = self._tenant(tenant_id, refresh=True)
            if state.destroyed:
                raise self._shredded(tenant_id, ctx)
            key = self._tenant_key(tenant_id, state, key_id, ctx)
            if key is not None:
                return key
        raise DecryptionError(
            f"{ctx.describe()} is encrypted with key {key_id!r}, which is not in the key "
            f"ring; add that key ({ENCRYPTION_KEYS_ENV} or the key provider) to read it"
        )

    def _check_tenant(self, ctx: RowContext) -> None:
        if ctx.tenant_id and self._tenant(ctx.tenant_id).destroyed:
            raise self._shredded(ctx.tenant_id, ctx)

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _shredded(tenant_id: str, ctx: RowContext | None) -> KeyDestroyedError:
        what = ctx.describe() if ctx is not None else f"data of tenant {tenant_id!r}"
        return KeyDestroyedError(
            f"{what} cannot be used: the keys of tenant {tenant_id!r} were destroyed "
            "(crypto-shredded), so its rows can no longer be decrypted"
        )

    def _global_primary(self) -> _Key:
        entry = self._primary_entry
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        key_id = self._provider.primary_key_id()
        if not isinstance(key_id, str) or not is_valid_key_id(key_id):
            raise ConfigurationError(
                f"the key provider's primary key id is invalid; a key id is {KEY_ID_RULE}"
            )
        key = self._global_key(key_id)
        if key is None:
            raise ConfigurationError(f"the primary key {key_id!r} is not known to the key provider")
        self._primary_entry = (key, time.monotonic() + self._cache_ttl)
        return key

    def _global_key(self, key_id: str) -> _Key | None:
        key = self._global.get(key_id)
        if key is not None or self._static:
            return key
        material = self._provider.get_key(key_id)
        if material is None:
            return None
        key = _Key(key_id, _check_material(material, key_id, "key provider"))
        self._global[key_id] = key
        return key

    def _tenant(self, tenant_id: str, *, refresh: bool = False) -> _TenantState:
        state = self._tenants.get(tenant_id)
        now = time.monotonic()
        if state is not None and not refresh and state.expires > now:
            return state
        record = self._store.load(tenant_id)
        fresh = _TenantState(record, now + self._cache_ttl)
        if state is not None:
            # Keep keys already unwrapped: a key id always names the same key.
            fresh.keys = {k: v for k, v in state.keys.items() if k in fresh.wrapped}
        with self._lock:
            if len(self._tenants) >= _MAX_CACHED_TENANTS and tenant_id not in self._tenants:
                # Evict the oldest entry (dicts keep insertion order).
                self._tenants.pop(next(iter(self._tenants)))
            self._tenants[tenant_id] = fresh
        return fresh

    def _tenant_key(
        self, tenant_id: str, state: _TenantState, key_id: str, ctx: RowContext | None
    ) -> _Key | None:
        key = state.keys.get(key_id)
        if key is not None:
            return key
        wrapped = state.wrapped.get(key_id)
        if wrapped is None:
            return None
        key = _Key(key_id, self._unwrap(tenant_id, wrapped, ctx))
        state.keys[key_id] = key
        return key

    @staticmethod
    def _wrap(kek: _Key, tenant_id: str, key_id: str, material: bytes) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        aad = _wrap_aad(tenant_id, key_id, kek.key_id)
        return WrappedKey(key_id, kek.key_id, nonce + kek.aead.encrypt(nonce, material, aad))

    def _unwrap(self, tenant_id: str, wrapped: WrappedKey, ctx: RowContext | None) -> bytes:
        what = f" (needed by {ctx.describe()})" if ctx is not None else ""
        try:
            kek = self._global_key(wrapped.wrapping_key_id)
        except KeyDestroyedError:
            kek = None
        if kek is None:
            raise DecryptionError(
                f"key {wrapped.key_id!r} of tenant {tenant_id!r}{what} is wrapped with global "
                f"key {wrapped.wrapping_key_id!r}, which is not in the key ring"
            )
        blob = wrapped.blob
        aad = _wrap_aad(tenant_id, wrapped.key_id, wrapped.wrapping_key_id)
        try:
            material = kek.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"key {wrapped.key_id!r} of tenant {tenant_id!r}{what} failed to unwrap with "
                f"global key {wrapped.wrapping_key_id!r}: the wrapped key is corrupt or "
                "belongs to another tenant"
            ) from None
        if len(material) != KEY_BYTES:
            raise DecryptionError(
                f"key {wrapped.key_id!r} of tenant {tenant_id!r}{what} unwrapped to "
                f"{len(material)} bytes instead of {KEY_BYTES}"
            )
        return material
