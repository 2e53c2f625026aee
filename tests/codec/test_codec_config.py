"""codec_from_config / codec_from_env and the package exports."""

from __future__ import annotations

import base64
import os

import pytest

import haive_langgraph.codec as codec_pkg
from haive_langgraph.codec import (
    Compression,
    HaiveCodec,
    InMemoryTenantKeyStore,
    KeyRing,
    RowContext,
    codec_from_config,
    codec_from_env,
    default_codec,
    frame_key_id,
)
from haive_langgraph.errors import ConfigurationError

K1 = base64.b64encode(os.urandom(32)).decode()
K2 = base64.urlsafe_b64encode(os.urandom(32)).decode()


def test_defaults() -> None:
    codec = codec_from_env({})
    assert codec.compression == Compression()
    assert codec.keyring is None
    assert not codec.require_encryption


def test_everything_from_env(ctx: RowContext) -> None:
    codec = codec_from_env(
        {
            "HAIVE_COMPRESSION": "off",
            "HAIVE_COMPRESSION_LEVEL": "9",
            "HAIVE_COMPRESSION_THRESHOLD": "100",
            "HAIVE_MAX_DECOMPRESSED_SIZE": "1000000",
            "HAIVE_ENCRYPTION_KEYS": f"k2:{K2},k1:{K1}",
            "HAIVE_REQUIRE_ENCRYPTION": "true",
        }
    )
    assert codec.compression == Compression(
        enabled=False, level=9, threshold=100, max_decompressed_size=1_000_000
    )
    assert codec.keyring is not None
    assert codec.keyring.primary_key_id() == "k2"
    assert codec.require_encryption
    assert frame_key_id(codec.encode(b"x", ctx)) == "k2"


def test_arguments_override_env() -> None:
    env = {"HAIVE_COMPRESSION": "off", "HAIVE_ENCRYPTION_KEYS": f"k1:{K1}"}
    store = InMemoryTenantKeyStore()
    codec = codec_from_config(
        compression=True,
        compression_level=1,
        encryption_keys=f"k9:{K2}",
        tenant_store=store,
        environ=env,
    )
    assert codec.compression.enabled
    assert codec.compression.level == 1
    assert codec.keyring is not None
    assert codec.keyring.primary_key_id() == "k9"
    ring = KeyRing.from_string(f"kx:{K1}")
    assert codec_from_config(keyring=ring, environ=env).keyring is ring
    assert codec_from_config(encryption_keys="", environ=env).keyring is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HAIVE_COMPRESSION": "maybe"}, "HAIVE_COMPRESSION='maybe' is not a switch"),
        ({"HAIVE_REQUIRE_ENCRYPTION": "2"}, "HAIVE_REQUIRE_ENCRYPTION='2'"),
        ({"HAIVE_COMPRESSION_LEVEL": "high"}, "HAIVE_COMPRESSION_LEVEL='high' is not an integer"),
        ({"HAIVE_COMPRESSION_LEVEL": "99"}, "compression level 99 is out of range"),
        ({"HAIVE_COMPRESSION_THRESHOLD": "-5"}, "threshold -5"),
        ({"HAIVE_MAX_DECOMPRESSED_SIZE": "0"}, "max_decompressed_size 0"),
        ({"HAIVE_REQUIRE_ENCRYPTION": "on"}, "no encryption keys are configured"),
        ({"HAIVE_ENCRYPTION_KEYS": f"k1:{K1[:-4]}"}, "HAIVE_ENCRYPTION_KEYS: key 'k1'"),
    ],
)
def test_env_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        codec_from_env(env)
    assert message in str(info.value)
    assert K1[:12] not in str(info.value)


def test_keyring_and_keys_conflict() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        codec_from_config(keyring=KeyRing.from_string(f"k1:{K1}"), encryption_keys=f"k1:{K1}")


def test_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAIVE_ENCRYPTION_KEYS", f"envkey:{K1}")
    monkeypatch.setenv("HAIVE_COMPRESSION", "0")
    codec = codec_from_env()
    assert codec.keyring is not None
    assert codec.keyring.primary_key_id() == "envkey"
    assert not codec.compression.enabled


def test_exports() -> None:
    for name in ("Codec", "Kind", "PlainCodec", "RowContext", "default_codec"):
        assert name in codec_pkg.__all__
    for name in codec_pkg.__all__:
        assert hasattr(codec_pkg, name)
    assert isinstance(default_codec(), HaiveCodec)
    assert isinstance(codec_from_env({}), HaiveCodec)


def test_invalid_codec_arguments() -> None:
    with pytest.raises(ConfigurationError):
        HaiveCodec(compression="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        HaiveCodec(keyring="k1:abc")  # type: ignore[arg-type]
