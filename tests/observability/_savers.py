"""Checkpointers for the observability tests: opened sync or async, and one put and get."""

from __future__ import annotations

import asyncio
from typing import Any

from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer

SECRET = "user-secret-value-93815"


def config_for(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def checkpoint(cid: str) -> dict[str, Any]:
    return {
        "v": 4,
        "id": cid,
        "ts": "2026-01-01T00:00:00+00:00",
        "channel_values": {"note": SECRET},
        "channel_versions": {"note": 1},
        "versions_seen": {},
        "updated_channels": ["note"],
    }


async def open_saver(kind: str, dsn: str, **options: Any) -> Any:
    if kind == "sync":
        saver: Any = await asyncio.to_thread(lambda: PostgresCheckpointer(dsn, **options))
        await asyncio.to_thread(saver.setup)
        return saver
    asaver = AsyncPostgresCheckpointer(dsn, **options)
    await asaver.setup()
    return asaver


async def close_saver(saver: Any) -> None:
    if isinstance(saver, AsyncPostgresCheckpointer):
        await saver.aclose() if hasattr(saver, "aclose") else await saver.close()
    else:
        await asyncio.to_thread(saver.close)


async def put_and_get(saver: Any, thread: str) -> None:
    config = config_for(SECRET + thread)
    if isinstance(saver, AsyncPostgresCheckpointer):
        config = await saver.aput(config, checkpoint("1"), {"source": "input"}, {"note": 1})
        assert await saver.aget_tuple(config) is not None
        return

    def run() -> None:
        got = saver.put(config, checkpoint("1"), {"source": "input"}, {"note": 1})
        assert saver.get_tuple(got) is not None

    await asyncio.to_thread(run)
