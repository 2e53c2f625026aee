"""Errors specific to the codec, refining the package-wide ones."""

from __future__ import annotations

from haive_langgraph.errors import CorruptDataError, DecryptionError

__all__ = ["DecompressionLimitError", "KeyDestroyedError"]


class KeyDestroyedError(DecryptionError):
    """The key a row needs has been destroyed (crypto-shredded) and is gone for good.

    Raised when a tenant's keys were forgotten (:meth:`KeyRing.forget_tenant`)
    or a key provider reports a key as destroyed. Unlike a plain
    :class:`DecryptionError`, retrying with another configuration cannot help.
    """


class DecompressionLimitError(CorruptDataError):
    """A compressed frame would expand beyond the configured maximum size.

    Raised before (or while, for frames without a declared size) the payload
    is expanded, so a small hostile frame cannot exhaust memory.
    """
