"""Shared fixtures for the codec tests (pure Python, no database)."""

from __future__ import annotations

import os

import pytest

from haive_langgraph.codec import HaiveCodec, KeyRing, Kind, RowContext


@pytest.fixture
def k1() -> bytes:
    return os.urandom(32)


@pytest.fixture
def k2() -> bytes:
    return os.urandom(32)


@pytest.fixture
def ring(k1: bytes) -> KeyRing:
    return KeyRing([("k1", k1)])


@pytest.fixture
def ctx() -> RowContext:
    return RowContext("acme", "thread-1", Kind.BLOB, "channel:v1", namespace="ns")


@pytest.fixture
def encrypting(ring: KeyRing) -> HaiveCodec:
    return HaiveCodec(keyring=ring)
