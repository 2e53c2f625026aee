"""What a connection source counts, and the public :func:`stats` that reads it.

Every saver, store, history and registry runs its statements through one
connection source; the source's plan (:mod:`haive_langgraph.db._call_plan`)
counts each database call it runs, those that failed and the reads it ran
again on a fresh connection, and its replica router counts where routed
reads went. :func:`stats` returns a snapshot of both for any object that has
a source, so nobody needs to reach for private attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from haive_langgraph.db._replicas import ReplicaStats
from haive_langgraph.errors import ConfigurationError


class CallTally:
    """The live counters of one source (plain ints: an increment is the only cost
    a call pays for them)."""

    __slots__ = ("calls", "errors", "retries")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.retries = 0


@dataclass(frozen=True, slots=True)
class CallStats:
    """A snapshot of what one connection source did since it was created.

    A public method may make several database calls (a checkpoint ``put``
    that meets a concurrent writer reads the thread again and writes once
    more), so ``calls`` counts calls, not methods. Counters are updated
    without a lock: under many threads at once an increment can be lost now
    and then (the replica counters are exact).

    Attributes:
        calls: Database calls run (each one operation, its retries included).
        errors: Calls that ended in an error (the library's own or the driver's).
        retries: Reads run again on a fresh connection after theirs died
            (a pooler restart, idle reaping); writes are never retried.
        replicas: Where routed reads went (see ``docs/scaling.md``), or
            ``None`` when the source has no read replicas.
    """

    calls: int
    errors: int
    retries: int
    replicas: ReplicaStats | None

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (``replicas`` as a dict too, or ``None``)."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "retries": self.retries,
            "replicas": None if self.replicas is None else self.replicas.as_dict(),
        }


def stats(obj: Any) -> CallStats:
    """What the connection source of ``obj`` did since it was created.

    Args:
        obj: A checkpointer, store, chat history, conversation store,
            tenant registry or key ring of this package (sync or async),
            or a connection source itself.

    Returns:
        A snapshot: later calls do not change it.

    Raises:
        ConfigurationError: ``obj`` runs no statements through a connection
            source of this package.

    Example:
        >>> from haive_langgraph.db import stats
        >>> s = stats(saver)
        >>> s.calls, s.errors, s.retries
        (42, 0, 0)
        >>> s.replicas.replica_reads if s.replicas else None
    """
    source = _source_of(obj)
    tally: CallTally = source.tally
    replicas = getattr(source, "replicas", None)
    return CallStats(
        calls=tally.calls,
        errors=tally.errors,
        retries=tally.retries,
        replicas=None if replicas is None else replace(replicas.stats),
    )


def _source_of(obj: Any) -> Any:
    for candidate in (obj, getattr(obj, "connection_source", None), getattr(obj, "_source", None)):
        if isinstance(getattr(candidate, "tally", None), CallTally):
            return candidate
    raise ConfigurationError(
        f"stats() needs a checkpointer, store, history or other object of haive_langgraph "
        f"that runs statements on a connection source; got {type(obj).__name__}"
    )
