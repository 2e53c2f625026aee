"""``with obj:`` / ``async with obj:`` for the classes that only need to close on the way out."""

from __future__ import annotations

from typing import Any, Self, cast


class ClosedOnExit:
    """``with obj:`` closes ``obj`` on the way out (its ``close()``)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        cast(Any, self).close()


class AsyncClosedOnExit:
    """``async with obj:`` closes ``obj`` on the way out (its ``aclose()``)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cast(Any, self).aclose()
