"""The checkpointers' methods of the other flavour, made from the methods they run.

LangGraph's ``BaseCheckpointSaver`` has a sync and an async method for each
operation. :class:`PostgresCheckpointer` implements the sync ones and gets its
async ones with :func:`in_thread` (the sync method in a worker thread);
:class:`AsyncPostgresCheckpointer` implements the async ones and gets its sync
ones with :func:`on_loop` (the coroutine on the instance's event loop). Each
made method looks its source up by name on the instance, so a subclass that
overrides the source is followed, and carries the source's signature for
``inspect`` and ``help``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class LoopOwner(Protocol):
    """An async object whose sync methods run its coroutines on its event loop."""

    def _sync(self, coro: Coroutine[Any, Any, T], hint: str) -> T: ...


def _named(
    twin: Any, source: Callable[..., Any], name: str, doc: str, iterator: str | None = None
) -> None:
    """Name ``twin`` and give it ``source``'s signature (returning ``iterator`` of the items)."""
    twin.__name__ = name
    twin.__qualname__ = source.__qualname__.rpartition(".")[0] + "." + name
    twin.__doc__ = doc
    signature = inspect.signature(source)
    if iterator is not None:
        items = str(signature.return_annotation).partition("[")[2]
        signature = signature.replace(return_annotation=f"{iterator}[{items}")
    twin.__signature__ = signature


def in_thread(
    method: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """The async twin of a sync method: ``a<name>`` runs ``self.<name>`` in a worker thread."""
    name = method.__name__

    async def twin(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(getattr(self, name), *args, **kwargs)

    _named(twin, method, "a" + name, f"Async :meth:`{name}` (run in a worker thread).")
    return twin


def iter_in_thread(
    method: Callable[Concatenate[Any, P], Iterator[T]],
) -> Callable[Concatenate[Any, P], AsyncIterator[T]]:
    """The async twin of a sync generator: its items collected in a worker thread."""
    name = method.__name__

    async def twin(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        source = getattr(self, name)
        for item in await asyncio.to_thread(lambda: list(source(*args, **kwargs))):
            yield item

    _named(
        twin, method, "a" + name, f"Async :meth:`{name}` (run in a worker thread).", "AsyncIterator"
    )
    return twin


def on_loop(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Any, P], R]:
    """The sync twin of an async method: ``<name>`` runs ``self.a<name>`` on the instance's loop."""
    hint = method.__name__

    def twin(self: LoopOwner, /, *args: P.args, **kwargs: P.kwargs) -> R:
        coro: Coroutine[Any, Any, R] = getattr(self, hint)(*args, **kwargs)
        return self._sync(coro, hint)

    _named(twin, method, hint[1:], f"Sync :meth:`{hint}` (from a thread other than the loop's).")
    return twin


def iter_on_loop(
    method: Callable[Concatenate[Any, P], AsyncIterator[T]],
) -> Callable[Concatenate[Any, P], Iterator[T]]:
    """The sync twin of an async generator: its items collected on the instance's loop."""
    hint = method.__name__

    def twin(self: LoopOwner, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        async def collect() -> list[T]:
            return [item async for item in getattr(self, hint)(*args, **kwargs)]

        yield from self._sync(collect(), hint)

    _named(
        twin,
        method,
        hint[1:],
        f"Sync :meth:`{hint}` (from a thread other than the loop's).",
        "Iterator",
    )
    return twin
