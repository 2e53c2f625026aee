"""Shared pieces of the vector memory tests: a clock, a driver over sync/async, embedders."""

from __future__ import annotations

import asyncio
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

DIMS = 64
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Side:
    """Calls ``memory.<method>`` (sync, in a worker thread) or ``memory.a<method>`` (async)."""

    def __init__(self, memory: Any, is_async: bool) -> None:
        self.memory = memory
        self.is_async = is_async

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await getattr(self.memory, f"a{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.memory, method), *args, **kwargs)

    def for_tenant(self, tenant_id: str) -> Side:
        return Side(self.memory.for_tenant(tenant_id), self.is_async)


def user() -> str:
    return f"user.{uuid.uuid4().hex[:8]}"


def cluster_embedder(centres: dict[str, list[float]]) -> Any:
    """Texts ``"<word> ..."`` embed to their first word's centre (plus a tiny per-text offset)."""

    def embed(texts: list[str]) -> list[list[float]]:
        out = []
        for t in texts:
            base = np.asarray(centres[t.split()[0]], dtype=np.float64)
            rng = np.random.default_rng(zlib.crc32(t.encode()))
            v = base + rng.normal(0, 1e-3, len(base))
            out.append((v / np.linalg.norm(v)).tolist())
        return out

    return embed
