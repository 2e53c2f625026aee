"""Tenant keys as stored: wrapped keys, a tenant's record, the store protocol.

Tenant keys are random 32-byte keys, stored *wrapped* (encrypted with the
global primary key, bound to the tenant and key id by :func:`wrap_aad`) in a
:class:`TenantKeyStore`; :class:`~haive_langgraph.codec.KeyRing` wraps and
unwraps them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

_WRAP_AAD = b"haive-langgraph tenant-key v1\x00"


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


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


def wrap_aad(tenant_id: str, key_id: str, wrapping_key_id: str) -> bytes:
    """The associated data binding a wrapped key to its tenant, key id and wrapping key."""
    return _WRAP_AAD + b"".join(_lp(p.encode()) for p in (tenant_id, key_id, wrapping_key_id))
