"""The ``connection_source`` hook of the classes wrappers build on, written once."""

from __future__ import annotations

from typing import Generic, TypeVar

S = TypeVar("S")


class ConnectionSourceHook(Generic[S]):
    """Adds :attr:`connection_source` to a class that runs its statements on ``self._source``."""

    _source: S

    @property
    def connection_source(self) -> S:
        """The connection source this instance runs its statements on.

        For wrappers that run statements of their own on the same database
        (the cache layer keeps its versions table beside this instance's tables).
        """
        return self._source
