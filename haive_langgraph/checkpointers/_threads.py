"""Threads: the registry's results, and deleting, copying and pruning threads.

The sans-I/O operations (each run inside one transaction, under the family's
advisory lock) and the :class:`~haive_langgraph.db.Call` values the sync and
async checkpointers run them with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._args import json_filter, prune_args, text_id
from haive_langgraph.checkpointers._ops import Statements
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._call import Call, Calls
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._limits import check_count
from haive_langgraph.errors import ConfigurationError

if TYPE_CHECKING:
    from haive_langgraph.checkpointers._base import Saver


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread in the registry.

    Attributes:
        thread_id: The thread.
        created_at: When its first checkpoint (or copy) was written.
        updated_at: When it was last written.
        checkpoint_count: Checkpoints it holds, across namespaces.
        metadata: Merged metadata of its root checkpoints (keys such as
            ``user_id`` given in ``config["metadata"]`` or ``configurable``),
            without per-checkpoint keys (``step``, ``source``, ``parents`` ...).
        family_id: The thread whose stored values it shares (itself, unless
            it was copied from another thread).
    """

    thread_id: str
    created_at: datetime
    updated_at: datetime
    checkpoint_count: int
    metadata: dict[str, Any]
    family_id: str


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """One page of :meth:`list_threads`; pass ``next_cursor`` to get the next."""

    threads: list[ThreadInfo]
    next_cursor: str | None

    def __iter__(self) -> Iterator[ThreadInfo]:
        return iter(self.threads)

    def __len__(self) -> int:
        return len(self.threads)


def thread_info(row: Sequence[Any]) -> ThreadInfo:
    """A registry row as a :class:`ThreadInfo`."""
    thread_id, family_id, created_at, updated_at, count, metadata = row
    return ThreadInfo(
        thread_id=str(thread_id),
        created_at=created_at,
        updated_at=updated_at,
        checkpoint_count=int(count),
        metadata=dict(metadata or {}),
        family_id=str(family_id),
    )


def thread_page(rows: Sequence[Sequence[Any]], limit: int | None) -> ThreadPage:
    """A :meth:`list_threads` page: a full page has a cursor to the next one."""
    threads = [thread_info(r) for r in rows]
    full = bool(threads) and len(threads) == limit
    return ThreadPage(threads, encode_cursor(threads[-1]) if full else None)


def encode_cursor(info: ThreadInfo) -> str:
    """The cursor of the page after ``info``."""
    return f"{info.updated_at.isoformat()}|{info.thread_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(updated_at, thread id) a cursor names; ``ConfigurationError`` if malformed."""
    try:
        ts, _, thread_id = cursor.partition("|")
        return datetime.fromisoformat(ts), thread_id
    except ValueError as exc:
        raise ConfigurationError(f"invalid list_threads cursor {cursor!r}") from exc


@dataclass(slots=True)
class GcReport:
    """What one garbage collection removed."""

    blobs: int = 0
    blob_bytes: int = 0
    items: int = 0
    lineages: int = 0

    def add(self, other: GcReport) -> None:
        self.blobs += other.blobs
        self.blob_bytes += other.blob_bytes
        self.items += other.items
        self.lineages += other.lineages


@dataclass(slots=True)
class DeleteReport:
    """Rows removed by a delete, prune or retention run."""

    threads: int = 0
    checkpoints: int = 0
    writes: int = 0
    gc: GcReport = field(default_factory=GcReport)


# -- maintenance (run each inside one transaction) ----------------------------


def lock_step(st: Statements, lock: int, t: str, family: str, *, exclusive: bool) -> Step:
    """The statement taking a family's advisory lock (until the transaction ends)."""
    return Step(
        st.lock_exclusive if exclusive else st.lock_shared,
        {"lock": lock, "t": t, "family": family},
        fetch="none",
    )


def gc_family_op(st: Statements, t: str, family: str) -> Op[GcReport]:
    """Remove the family's content nothing refers to any more (lock held by caller)."""
    params = {"t": t, "family": family}
    in_use = yield Step(st.family_in_use, params, fetch="one")
    if not in_use[0]:
        blobs, nbytes, items = yield Step(st.drop_family_content, params, fetch="one")
        return GcReport(blobs=int(blobs), blob_bytes=int(nbytes), items=int(items))
    items, lineages = yield Step(st.gc_lineage_items, params, fetch="one", prepare=False)
    blobs, nbytes = yield Step(st.gc_blobs, params, fetch="one", prepare=False)
    return GcReport(
        blobs=int(blobs), blob_bytes=int(nbytes), items=int(items), lineages=int(lineages)
    )


def _families(st: Statements, t: str, threads: Sequence[str]) -> Op[dict[str, list[str]]]:
    rows = yield Step(st.families_of_threads, {"t": t, "threads": TextArray(threads)})
    by_family: dict[str, list[str]] = {}
    for thread_id, family in rows:
        by_family.setdefault(str(family), []).append(str(thread_id))
    return by_family


def delete_threads_op(
    st: Statements, lock: int, t: str, threads: Sequence[str]
) -> Op[DeleteReport]:
    """Delete threads with their checkpoints and writes, then their families' unused content."""
    report = DeleteReport()
    by_family = yield from _families(st, t, threads)
    for family in sorted(by_family):  # one lock order for every deleter: no deadlocks
        yield lock_step(st, lock, t, family, exclusive=True)
    for family, members in sorted(by_family.items()):
        for th in members:
            yield Step(st.detach_branches, {"t": t, "th": th}, fetch="none", prepare=False)
            cps, ws = yield Step(st.delete_thread_rows, {"t": t, "th": th}, fetch="one")
            report.checkpoints += int(cps)
            report.writes += int(ws)
            report.threads += 1 if cps else 0
        report.gc.add((yield from gc_family_op(st, t, family)))
    return report


def copy_thread_op(st: Statements, lock: int, t: str, src: str, dst: str) -> Op[int]:
    """Copy a thread into a new one (sharing its family); checkpoints copied."""
    family, dst_used = yield Step(
        st.copy_thread_check, {"t": t, "src": src, "dst": dst}, fetch="one"
    )
    if family is None:
        return 0
    if dst_used:
        raise ConfigurationError(
            f"copy_thread: target thread {dst!r} already has checkpoints; "
            "copy into a new thread or delete the target first"
        )
    yield lock_step(st, lock, t, str(family), exclusive=False)
    _, cps, _ = yield Step(st.copy_thread, {"t": t, "src": src, "dst": dst}, fetch="one")
    return int(cps)


def delete_for_runs_op(st: Statements, lock: int, t: str, runs: Sequence[str]) -> Op[DeleteReport]:
    """Delete the checkpoints of the given runs, then unused content."""
    report = DeleteReport()
    rows = yield Step(st.run_checkpoints, {"t": t, "runs": TextArray(runs)})
    by_family: dict[str, list[str]] = {}
    for thread_id, family in rows:
        by_family.setdefault(str(family), []).append(str(thread_id))
    for family in sorted(by_family):
        yield lock_step(st, lock, t, family, exclusive=True)
    for family, members in sorted(by_family.items()):
        cps, ws = yield Step(
            st.delete_runs,
            {"t": t, "threads": TextArray(members), "runs": TextArray(runs)},
            fetch="one",
        )
        report.checkpoints += int(cps)
        report.writes += int(ws)
        yield Step(st.recount_threads, {"t": t, "threads": TextArray(members)}, fetch="none")
        report.gc.add((yield from gc_family_op(st, t, family)))
    return report


def prune_keep_latest_op(st: Statements, lock: int, t: str, th: str) -> Op[DeleteReport]:
    """Keep each namespace's head (and what a DeltaChannel needs to rebuild it)."""
    report = DeleteReport()
    family = (yield from _families(st, t, [th])).popitem()[0]
    yield lock_step(st, lock, t, family, exclusive=True)
    yield Step(st.detach_branches, {"t": t, "th": th}, fetch="none", prepare=False)
    kept = yield Step(st.prune_keep, {"t": t, "th": th}, prepare=False)
    keep = {(str(ns), str(cid)) for ns, cid in kept}
    root_kept = {cid for ns, cid in keep if ns == ""}
    calls = yield Step(st.prune_calls, {"t": t, "th": th})
    for ns, root, root_saved in calls:
        # A subgraph call goes with the root checkpoint it started from, once
        # that one is saved (runs save in the background: a call can commit first).
        if root_saved and root not in root_kept:
            keep = {k for k in keep if k[0] != ns}
    report.checkpoints, report.writes = yield from delete_except_op(st, t, th, keep)
    report.gc = yield from gc_family_op(st, t, family)
    return report


def keep_params(t: str, th: str, keep: set[tuple[str, str]]) -> dict[str, Any]:
    """Parameters naming a thread and the (namespace, checkpoint id) pairs it keeps."""
    return {
        "t": t,
        "th": th,
        "keep_ns": TextArray(k[0] for k in keep),
        "keep_ids": TextArray(k[1] for k in keep),
    }


def delete_except_op(
    st: Statements, t: str, th: str, keep: set[tuple[str, str]]
) -> Op[tuple[int, int]]:
    """Delete a thread's checkpoints (and their writes) but ``keep``, recount it;
    (checkpoints, writes) removed. Branches are detached by the caller."""
    cps, ws = yield Step(st.prune_delete, keep_params(t, th, keep), fetch="one", prepare=False)
    yield Step(st.recount_threads, {"t": t, "threads": TextArray([th])}, fetch="none")
    return int(cps), int(ws)


# -- registry --------------------------------------------------------------------


def get_thread_op(st: Statements, t: str, th: str) -> Op[ThreadInfo | None]:
    """A thread's registry entry, or ``None``."""
    row = yield Step(st.get_thread, {"t": t, "th": th}, fetch="one")
    return thread_info(row) if row is not None else None


def list_threads_op(
    st: Statements,
    t: str,
    *,
    filter: dict[str, Any] | None,
    limit: int | None,
    after: tuple[Any, str] | None,
) -> Op[ThreadPage]:
    """A page of threads, most recently updated first."""
    rows = yield Step(
        st.list_threads,
        {
            "t": t,
            "filter": Jsonb(filter) if filter else None,
            "after_ts": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return thread_page(rows, limit)


# -- calls ---------------------------------------------------------------------


def get_thread(saver: Saver, thread_id: str) -> Call[ThreadInfo | None]:
    """``get_thread``."""
    th = text_id(thread_id, "thread_id")
    return Call(
        lambda: get_thread_op(saver._statements, saver.tenant_id, th), read=True, route="fresh"
    )


def list_threads(
    saver: Saver, filter: dict[str, Any] | None, limit: int | None, cursor: str | None
) -> Call[ThreadPage]:
    """``list_threads``."""
    limit = None if limit is None else check_count("limit", limit)
    after = decode_cursor(cursor) if cursor else None
    where = json_filter(filter, "filter")
    return Call(
        lambda: list_threads_op(
            saver._statements, saver.tenant_id, filter=where, limit=limit, after=after
        ),
        read=True,
        route="replica",
    )


def delete_threads(saver: Saver, thread_ids: Sequence[str]) -> Calls[DeleteReport]:
    """``delete_threads``: one transaction; the saver then forgets what it held of them."""
    threads = prune_args(thread_ids, "delete")
    report: DeleteReport = yield Call(
        lambda: delete_threads_op(saver._statements, S.LOCK_CLASS_FAMILY, saver.tenant_id, threads),
        transaction=True,
    )
    saver._forget_threads(threads)
    return report


def copy_thread(saver: Saver, source_thread_id: str, target_thread_id: str) -> Calls[None]:
    """``copy_thread``."""
    src = text_id(source_thread_id, "source_thread_id")
    dst = text_id(target_thread_id, "target_thread_id")
    yield Call(
        lambda: copy_thread_op(saver._statements, S.LOCK_CLASS_FAMILY, saver.tenant_id, src, dst),
        transaction=True,
    )
    saver._families.discard(dst)


def delete_for_runs(saver: Saver, run_ids: Sequence[str]) -> Calls[None]:
    """``delete_for_runs``."""
    if isinstance(run_ids, str):
        raise TypeError("run_ids must be a sequence of run IDs, not a str")
    runs = [text_id(r, "run_id") for r in run_ids]
    if not runs:
        return
    yield Call(
        lambda: delete_for_runs_op(saver._statements, S.LOCK_CLASS_FAMILY, saver.tenant_id, runs),
        transaction=True,
    )
    saver._forget_threads([])


def prune(saver: Saver, thread_ids: Sequence[str], strategy: str) -> Calls[None]:
    """``prune``: each thread in its own transaction (``"delete"``: all in one)."""
    threads = prune_args(thread_ids, strategy)
    if not threads:
        return
    if strategy == "delete":
        yield from delete_threads(saver, threads)
        return
    for th in threads:
        yield _prune_thread(saver, th)
    saver._forget_threads(threads)


def _prune_thread(saver: Saver, th: str) -> Call[DeleteReport]:
    return Call(
        lambda: prune_keep_latest_op(saver._statements, S.LOCK_CLASS_FAMILY, saver.tenant_id, th),
        transaction=True,
    )
