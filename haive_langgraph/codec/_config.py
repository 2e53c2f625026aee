"""Building a codec from arguments and ``HAIVE_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from haive_langgraph.codec._codec import HaiveCodec
from haive_langgraph.codec._compression import (
    DEFAULT_LEVEL,
    DEFAULT_MAX_DECOMPRESSED_SIZE,
    DEFAULT_THRESHOLD,
    Compression,
)
from haive_langgraph.codec._guard import ALLOWED_MODULES_ENV, parse_allowed_modules
from haive_langgraph.codec._keys import ENCRYPTION_KEYS_ENV, KeyRing, TenantKeyStore
from haive_langgraph.errors import ConfigurationError

__all__ = ["codec_from_config", "codec_from_env"]

COMPRESSION_ENV = "HAIVE_COMPRESSION"
COMPRESSION_LEVEL_ENV = "HAIVE_COMPRESSION_LEVEL"
COMPRESSION_THRESHOLD_ENV = "HAIVE_COMPRESSION_THRESHOLD"
MAX_DECOMPRESSED_SIZE_ENV = "HAIVE_MAX_DECOMPRESSED_SIZE"
REQUIRE_ENCRYPTION_ENV = "HAIVE_REQUIRE_ENCRYPTION"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a switch; use on/off, true/false, 1/0")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None


def codec_from_config(
    *,
    compression: bool | None = None,
    compression_level: int | None = None,
    compression_threshold: int | None = None,
    max_decompressed_size: int | None = None,
    encryption_keys: str | None = None,
    keyring: KeyRing | None = None,
    require_encryption: bool | None = None,
    tenant_store: TenantKeyStore | None = None,
    allowed_modules: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> HaiveCodec:
    """A :class:`HaiveCodec` from arguments, falling back to the environment.

    Each argument left ``None`` is read from its variable, then defaults:

    ============================  ==============================  ==========
    argument                      variable                        default
    ============================  ==============================  ==========
    ``compression``               ``HAIVE_COMPRESSION`` (on/off)  on
    ``compression_level``         ``HAIVE_COMPRESSION_LEVEL``     3
    ``compression_threshold``     ``HAIVE_COMPRESSION_THRESHOLD`` 64 bytes
    ``max_decompressed_size``     ``HAIVE_MAX_DECOMPRESSED_SIZE`` 64 MiB
    ``encryption_keys``           ``HAIVE_ENCRYPTION_KEYS``       none
    ``require_encryption``        ``HAIVE_REQUIRE_ENCRYPTION``    off
    ``allowed_modules``           ``HAIVE_ALLOWED_MODULES``       none
    ============================  ==============================  ==========

    Args:
        compression: Compress new frames.
        compression_level: zstd level.
        compression_threshold: Compress payloads longer than this many bytes.
        max_decompressed_size: Refuse frames that expand beyond this.
        encryption_keys: ``"k2:BASE64KEY,k1:BASE64KEY"``, first = primary.
        keyring: A ready key ring (for example over a KMS provider); the
            environment's keys are then ignored.
        require_encryption: Refuse unencrypted frames.
        tenant_store: Where wrapped tenant keys live, for a key ring built
            from ``encryption_keys`` or the environment.
        allowed_modules: Module prefixes of your own state types that
            plaintext stored values may rebuild (``HAIVE_ALLOWED_MODULES``:
            comma-separated), see :class:`HaiveCodec`.
        environ: Environment to read; default ``os.environ``.

    Returns:
        The codec.

    Raises:
        ConfigurationError: A value is malformed or out of range, or
            encryption is required without keys. Messages never contain key
            material.
    """
    env = os.environ if environ is None else environ
    if keyring is not None and encryption_keys is not None:
        raise ConfigurationError("pass either keyring or encryption_keys, not both")
    settings = Compression(
        enabled=_env_bool(env, COMPRESSION_ENV, True) if compression is None else compression,
        level=(
            _env_int(env, COMPRESSION_LEVEL_ENV, DEFAULT_LEVEL)
            if compression_level is None
            else compression_level
        ),
        threshold=(
            _env_int(env, COMPRESSION_THRESHOLD_ENV, DEFAULT_THRESHOLD)
            if compression_threshold is None
            else compression_threshold
        ),
        max_decompressed_size=(
            _env_int(env, MAX_DECOMPRESSED_SIZE_ENV, DEFAULT_MAX_DECOMPRESSED_SIZE)
            if max_decompressed_size is None
            else max_decompressed_size
        ),
    )
    if keyring is None:
        if encryption_keys is not None:
            if encryption_keys.strip():
                keyring = KeyRing.from_string(
                    encryption_keys, source="encryption_keys", tenant_store=tenant_store
                )
        else:
            keyring = KeyRing.from_env(env, tenant_store=tenant_store)
    require = (
        _env_bool(env, REQUIRE_ENCRYPTION_ENV, False)
        if require_encryption is None
        else require_encryption
    )
    if require and keyring is None:
        raise ConfigurationError(
            f"{REQUIRE_ENCRYPTION_ENV} is on but no encryption keys are configured; "
            f"set {ENCRYPTION_KEYS_ENV}"
        )
    allowed = parse_allowed_modules(
        env.get(ALLOWED_MODULES_ENV, "") if allowed_modules is None else allowed_modules,
        source=ALLOWED_MODULES_ENV if allowed_modules is None else "allowed_modules",
    )
    return HaiveCodec(
        compression=settings,
        keyring=keyring,
        require_encryption=require,
        allowed_modules=allowed,
    )


def codec_from_env(environ: Mapping[str, str] | None = None) -> HaiveCodec:
    """A :class:`HaiveCodec` configured only by ``HAIVE_*`` variables.

    See :func:`codec_from_config` for the variables.

    Raises:
        ConfigurationError: A variable is malformed.
    """
    return codec_from_config(environ=environ)
