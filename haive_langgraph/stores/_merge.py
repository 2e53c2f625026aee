"""Concurrent calls merged into one batch: ordering and failures (no I/O).

The async store merges the single calls (``aget``, ``aput``, ``asearch``,
``adelete``, ``alist_namespaces``) issued in one event-loop tick into one
batch, as LangGraph's ``AsyncBatchedBaseStore`` does; the sync store merges
the single calls (``get``, ``put`` ...) that threads make while a batch runs
into the next one (:class:`ThreadMerger`). A merged batch runs as a batch
runs: reads, then every write in one statement. Two things differ from
LangGraph's, which runs all the merged reads before all the writes and gives
every call the batch's exception:

* **A read sees the writes issued before it.** A read issued after a write
  it could observe (a get of the key; a search whose prefix covers the
  namespace; any namespace listing) runs after the batch's write
  (:func:`after_writes`). Other reads run before it. Calls of one tick are
  concurrent, so this is a linearizable order; with LangGraph's store, a
  ``put`` then a ``get`` of the same key in one tick returns the old value.
* **Each call gets its own error.** An op that fails validation fails
  alone; when a stage of the merged batch fails on the server (a quota, a
  value the database refuses, a timeout), the server applied nothing of
  that stage (:func:`rolled_back`) and its calls are run again one by one,
  in the order they were issued (:func:`resolve`), so that each gets its
  own result or error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from langgraph.store.base import GetOp, ListNamespacesOp, Op, PutOp, Result, SearchOp

from haive_langgraph.stores._batch import BatchPlan

if TYPE_CHECKING:
    from haive_langgraph.stores._planning import MergedCall

# SQLSTATE classes after which the server may or may not have committed
# what was sent: the connection went away (08), the server shut it down (57P0x).
_UNKNOWN_OUTCOME = ("08", "57P01", "57P02", "57P03")


def after_writes(ops: Sequence[Op]) -> set[int]:
    """Indices of the reads issued after a write they could observe."""
    written: set[tuple[tuple[str, ...], str]] = set()
    prefixes: set[tuple[str, ...]] = set()
    late: set[int] = set()
    for i, op in enumerate(ops):
        try:
            if isinstance(op, PutOp):
                ns = tuple(op.namespace)
                written.add((ns, op.key))
                if ns not in prefixes:
                    prefixes.update(ns[:n] for n in range(len(ns) + 1))
            elif isinstance(op, GetOp):
                if (tuple(op.namespace), op.key) in written:
                    late.add(i)
            elif isinstance(op, SearchOp):
                if tuple(op.namespace_prefix) in prefixes:
                    late.add(i)
            elif isinstance(op, ListNamespacesOp) and written:
                late.add(i)
        except TypeError:
            continue  # an op that is not what it claims fails its own validation
    return late


def rolled_back(exc: BaseException) -> bool:
    """Whether the failed stage is known to have changed nothing.

    An exception raised before anything was sent, or an error the server
    reported for a statement (its transaction rolled back), is; a lost
    connection is not: the write may have committed before it was lost.
    """
    if not isinstance(exc, psycopg.Error):
        # Raised in Python (validation, embedding, decoding, a quota the
        # server reported); a cancellation is no failure of the batch's.
        return isinstance(exc, Exception)
    state = exc.sqlstate
    return state is not None and not state.startswith(_UNKNOWN_OUTCOME)


@dataclass(frozen=True, slots=True)
class Failed:
    """The error one call gets."""

    error: BaseException


Outcome = Result | Failed


def resolve(
    ops: Sequence[Op],
    plan: BatchPlan | None,
    errors: Mapping[int, BaseException],
    exc: BaseException | None,
) -> tuple[list[Outcome], list[int]]:
    """What each call gets from a merged batch, and which calls must run again alone.

    Args:
        ops: The calls' ops, in the order they were issued.
        plan: The batch as far as it ran (``None``: nothing was planned).
        errors: Ops refused before anything was sent, by index.
        exc: What the batch raised, or ``None``.

    Returns:
        An outcome per call (a result, or :class:`Failed`), and the indices
        (in issue order) of the calls to run again one by one; their
        outcomes are placeholders.
    """
    outcomes: list[Outcome] = [None] * len(ops)
    for i, err in errors.items():
        outcomes[i] = Failed(err)
    if exc is None:
        assert plan is not None
        for i, value in enumerate(plan.results):
            if i not in errors:
                outcomes[i] = value
        return outcomes, []
    stage = "reads" if plan is None else plan.stage
    late = set() if plan is None else _indices(plan, after=True)
    writes = {i for i, op in enumerate(ops) if isinstance(op, PutOp)}
    if stage in ("reads", "write"):
        # Nothing committed (or, on a lost connection, the write's fate is unknown).
        redo = [i for i in range(len(ops)) if i not in errors]
        if rolled_back(exc):
            return outcomes, redo
        done = set() if stage == "reads" or plan is None else _indices(plan, after=False)
        for i in redo:
            outcomes[i] = plan.results[i] if i in done and plan is not None else Failed(exc)
        return outcomes, []
    # The write committed: only the reads after it failed.
    assert plan is not None
    for i in range(len(ops)):
        if i not in errors and i not in late:
            outcomes[i] = None if i in writes else plan.results[i]
    redo = sorted(i for i in late if i not in errors)
    if rolled_back(exc):
        return outcomes, redo
    for i in redo:
        outcomes[i] = Failed(exc)
    return outcomes, []


def _indices(plan: BatchPlan, *, after: bool) -> set[int]:
    reads = plan.after if after else plan.reads
    out = {i for i, _ in reads.gets} | {i for i, _ in reads.lists}
    for sp in reads.searches:
        out.add(sp.index)
        out.update(sp.copies)
    return out


def unwrap(outcome: Any) -> Any:
    """A call's result, or its error raised."""
    if isinstance(outcome, Failed):
        raise outcome.error
    return outcome


def by_tenant(calls: Iterable[MergedCall]) -> list[list[MergedCall]]:
    """Waiting calls by the tenant of their store (a batch acts for one tenant),
    in the order they were issued; calls already done (cancelled) left out."""
    groups: dict[str, list[MergedCall]] = {}
    for call in calls:
        if not call.future.done():
            groups.setdefault(call.store.tenant_id, []).append(call)
    return list(groups.values())


class _Slot:
    """What a thread waiting on its merged call is woken for: its outcome, or the
    lead of the next batch. Duck-types the future a merged batch resolves."""

    __slots__ = ("_done", "_outcome", "_woken", "granted")

    def __init__(self) -> None:
        self._woken = threading.Event()
        self._done = False
        self._outcome: Outcome = None
        self.granted = False  # handed the lead (under the merger's lock)

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Result) -> None:
        self._outcome, self._done = value, True
        self._woken.set()

    def set_exception(self, exc: BaseException) -> None:
        self._outcome, self._done = Failed(exc), True
        self._woken.set()

    def result(self) -> Result:
        return unwrap(self._outcome)  # type: ignore[no-any-return]


class ThreadMerger:
    """Merges the single calls of concurrent threads into batches (the sync store's
    counterpart of the async store's per-tick merging).

    Up to ``leaders`` batches run at once (the connections the store may
    hold: one on a lent connection). A call that finds fewer running starts
    one at once, with the calls queued by then: nothing waits for company.
    Otherwise it queues, and when a batch ends the first queued call leads
    the next one, which holds every call queued by then. So a call waits
    where it would have waited for a connection anyway, and the calls that
    waited share one round trip and one commit. Each caller gets its own
    outcome.
    """

    def __init__(self, run: Callable[[list[MergedCall]], None], leaders: int) -> None:
        """``run(calls)`` runs calls of one tenant as a batch, resolving each call's future."""
        self._run = run
        self._limit = max(1, leaders)
        self._lock = threading.Lock()
        self._queue: list[MergedCall] = []
        self._leaders = 0

    def submit(self, call: MergedCall) -> Result:
        """Run ``call`` (checked, encoded and embedded) in a merged batch; its result."""
        slot = call.future = _Slot()
        with self._lock:
            self._queue.append(call)
            lead = self._leaders < self._limit
            if lead:
                self._leaders += 1
        while True:
            if lead:
                self._lead()
            if slot.done():
                return slot.result()
            slot._woken.wait()
            with self._lock:
                # Woken for its outcome, or handed the lead (its call may have
                # been taken by a batch meanwhile: it leads one all the same).
                lead, slot.granted = slot.granted, False
                slot._woken.clear()

    def _lead(self) -> None:
        with self._lock:
            calls, self._queue = self._queue, []
        try:
            for group in by_tenant(calls):
                try:
                    self._run(group)
                except Exception as exc:
                    for call in group:
                        if not call.future.done():
                            call.future.set_exception(exc)
        except BaseException as exc:
            # Interrupted: no caller of this batch may wait for ever.
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            raise
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0].future
                    nxt.granted = True
                    nxt._woken.set()
                else:
                    self._leaders -= 1


__all__ = [
    "Failed",
    "Outcome",
    "ThreadMerger",
    "after_writes",
    "by_tenant",
    "resolve",
    "rolled_back",
    "unwrap",
]
