"""``haive-lg cache warm|stats|flush``: the shared (Redis) level of the cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from haive_langgraph.cli._common import (
    JsonOption,
    SaverOptions,
    command,
    console,
    err,
    fail,
    human,
    print_json,
)

group = typer.Typer(
    help="The cache's shared Redis level: warm it, show what it holds, flush it.",
    no_args_is_help=True,
)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
RedisOption = Annotated[
    str,
    typer.Option("--redis", envvar="HAIVE_REDIS_URL", help="Redis URL (default HAIVE_REDIS_URL)."),
]
PrefixOption = Annotated[
    str, typer.Option("--prefix", help="Key prefix of the deployment's cache (default haive).")
]


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """``--redis`` and ``--prefix``: the deployment's Redis cache."""

    url: RedisOption = DEFAULT_REDIS
    prefix: PrefixOption = "haive"

    def layer(self) -> AbstractContextManager[Any]:
        """A cache layer with only this Redis level, checked reachable."""
        return _redis_layer(self.url, self.prefix)


@contextmanager
def _redis_layer(url: str, prefix: str) -> Iterator[Any]:
    """A layer with only the Redis level, checked reachable (exit 1 if not)."""
    import redis

    from haive_langgraph.errors import ConnectionFailedError
    from haive_langgraph.ops.cache import CacheLayer, RedisCache

    level = RedisCache(url, prefix=prefix, socket_timeout=2.0)
    try:
        level.client.ping()
    except redis.RedisError as exc:
        level.client.close()
        raise ConnectionFailedError(f"cannot reach Redis at {url}: {exc}") from None
    layer = CacheLayer([level])
    try:
        yield layer
    finally:
        layer.close()


@group.command("warm")
@command
def cache_warm(
    redis_url: RedisOption = DEFAULT_REDIS,
    threads: Annotated[
        list[str] | None, typer.Option("--thread", help="Thread to warm (repeatable).")
    ] = None,
    recent: Annotated[
        int, typer.Option("--recent", min=1, help="Else: the most recently updated threads.")
    ] = 100,
    prefix: PrefixOption = "haive",
    *,
    options: SaverOptions,
) -> None:
    """Load threads' latest checkpoints into Redis (after a deployment or a restore).

    The entries are authenticated with HAIVE_CACHE_SECRET, else a secret
    derived from HAIVE_ENCRYPTION_KEYS: the same as the application's.
    """
    with _redis_layer(redis_url, prefix) as layer, options.saver() as saver:
        cached = layer.wrap(saver)
        if not layer.wait_ready():
            fail(f"the Redis subscription at {redis_url} did not come up")
        ids = list(threads) if threads else [t.thread_id for t in saver.list_threads(limit=recent)]
        columns = (TextColumn("warming"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, disable=options.as_json) as bar:
            task = bar.add_task("warm", total=len(ids))
            for thread_id in ids:
                cached.warm([thread_id])
                bar.advance(task)
        m = layer.metrics()
    out = {"threads": len(ids), "stored": m.fills, "redis_errors": m.redis_errors}
    if options.as_json:
        print_json(out)
    else:
        console.print(f"warmed {len(ids)} threads ({m.fills} entries stored in Redis)")
    if m.redis_errors:
        raise typer.Exit(1)


@group.command("stats")
@command
def cache_stats(*, redis: RedisOptions, as_json: JsonOption = False) -> None:
    """What the shared level holds: entries, bytes, live processes, epoch."""
    with redis.layer() as layer:
        client = layer.redis.client
        entries = 0
        size = 0
        kinds: dict[str, int] = {}
        for key in client.scan_iter(match=f"{redis.prefix}:val:*", count=1000):
            entries += 1
            size += int(client.strlen(key))
            kind = key.decode(errors="replace")[len(redis.prefix) + 5 :].split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        members = client.zrange(f"{redis.prefix}:members", 0, -1)
        epoch = client.get(f"{redis.prefix}:epoch")
        me = layer.redis.me
    names = {"cp": "checkpoints", "st": "store items"}
    by_kind = {names.get(k, k): n for k, n in kinds.items()}
    out = {
        "entries": entries,
        "bytes": size,
        "by_kind": by_kind,
        "processes": len([m for m in members if m.decode() != me]),
        "epoch": int(epoch or 0),
    }
    if as_json:
        print_json(out)
        return
    table = Table(title=f"Redis cache {redis.url} (prefix {redis.prefix})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("entries", f"{entries:,}")
    for kind, n in by_kind.items():
        table.add_row(f"  {kind}", f"{n:,}")
    table.add_row("bytes", human(size))
    table.add_row("processes subscribed", str(out["processes"]))
    table.add_row("epoch (flushes)", str(out["epoch"]))
    console.print(table)


@group.command("flush")
@command
def cache_flush(*, redis: RedisOptions, as_json: JsonOption = False) -> None:
    """Invalidate every cached entry in Redis and in every subscribed process's memory.

    Use after writes made outside the cache (a restore, a manual fix).
    """
    with redis.layer() as layer:
        if not layer.wait_ready():
            fail(f"the Redis subscription at {redis.url} did not come up")
        layer.invalidate(None)
        errors = layer.metrics().redis_errors
    if errors:
        fail("the flush did not reach Redis")
    if as_json:
        print_json({"flushed": True})
    else:
        console.print("flushed: every process drops its cached entries")
