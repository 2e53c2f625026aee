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

import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

from cryptography.exceptions import InvalidTag

from haive_langgraph.codec._base import RowContext
from haive_langgraph.codec._frame import (
    KEY_ID_RULE,
    NONCE_BYTES,
    is_valid_key_id,
    validate_key_id,
)
from haive_langgraph.codec._key_sources import (
    ENCRYPTION_KEYS_ENV,
    KEY_BYTES,
    CallableProvider,
    CipherKey,
    KeyProvider,
    StaticProvider,
    check_material,
    parse_encryption_keys,
)
from haive_langgraph.codec._tenant_keys import (
    InMemoryTenantKeyStore,
    TenantKeyRecord,
    TenantKeyStore,
    WrappedKey,
    wrap_aad,
)
from haive_langgraph.errors import ConfigurationError, DecryptionError, KeyDestroyedError

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

DEFAULT_CACHE_TTL = 60.0
_MAX_CACHED_TENANTS = 4096


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
        self.keys: dict[str, CipherKey] = {}


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
        self._global: dict[str, CipherKey] = {}
        self._tenants: dict[str, _TenantState] = {}
        self._store: TenantKeyStore = (
            tenant_store if tenant_store is not None else InMemoryTenantKeyStore()
        )
        self._primary_entry: tuple[CipherKey, float] | None = None
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
                self._provider = CallableProvider(provider, validate_key_id(primary))
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
            material[key_id] = check_material(key, key_id, "KeyRing")
        primary = pairs[0][0] if primary is None else primary
        if primary not in material:
            # Echo the id only when it is a valid one (so never key material).
            named = f" {primary!r}" if is_valid_key_id(primary) else ""
            raise ConfigurationError(
                f"primary key{named} is not one of the keys given "
                f"({', '.join(repr(k) for k in material)})"
            )
        self._provider = StaticProvider(material, primary)
        self._static = True
        self._global = {kid: CipherKey(kid, m) for kid, m in material.items()}
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
            os.urandom(KEY_BYTES) if key is None else check_material(key, key_id, "tenant key")
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

    def _encryption_key(self, tenant_id: str, ctx: RowContext | None) -> CipherKey:
        if tenant_id:
            state = self._tenant(tenant_id)
            if state.destroyed:
                raise self._shredded(tenant_id, ctx)
            if state.primary_id is not None:
                key = self._tenant_key(tenant_id, state, state.primary_id, ctx)
                if key is not None:
                    return key
        return self._global_primary()

    def _decryption_key(self, ctx: RowContext, key_id: str) -> CipherKey:
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

    def _global_primary(self) -> CipherKey:
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

    def _global_key(self, key_id: str) -> CipherKey | None:
        key = self._global.get(key_id)
        if key is not None or self._static:
            return key
        material = self._provider.get_key(key_id)
        if material is None:
            return None
        key = CipherKey(key_id, check_material(material, key_id, "key provider"))
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
    ) -> CipherKey | None:
        key = state.keys.get(key_id)
        if key is not None:
            return key
        wrapped = state.wrapped.get(key_id)
        if wrapped is None:
            return None
        key = CipherKey(key_id, self._unwrap(tenant_id, wrapped, ctx))
        state.keys[key_id] = key
        return key

    @staticmethod
    def _wrap(kek: CipherKey, tenant_id: str, key_id: str, material: bytes) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        aad = wrap_aad(tenant_id, key_id, kek.key_id)
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
        aad = wrap_aad(tenant_id, wrapped.key_id, wrapped.wrapping_key_id)
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
