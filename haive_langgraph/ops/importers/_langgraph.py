"""Checkpoints of a ``langgraph-checkpoint-postgres`` database into a ``PostgresCheckpointer``.

Each source checkpoint goes through the target's public ``put`` (same
checkpoint id, parent, metadata and values) and its pending writes through
``put_writes``, oldest first per namespace, so that the target stores them
as it stores its own (values once, lists as items, encrypted if configured).
The run is resumable and idempotent: a checkpoint the target holds is
skipped, and so is a task's group of writes whose rows are all there; an
interrupted run leaves whole checkpoints and whole groups, and the next run
adds what is missing. The source's ``ts`` of each checkpoint becomes its
``created_at`` (and a thread's first and last ones its registry times).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP, get_serializable_checkpoint_metadata

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.ops.importers import _sql as Q
from haive_langgraph.ops.importers import _target as T
from haive_langgraph.ops.importers._langgraph_read import (
    RawWrite,
    SourceCheckpoint,
    ThreadReader,
    write_groups,
)
from haive_langgraph.ops.importers._report import (
    ImportProgress,
    ImportReport,
    ProgressCallback,
    VerifyReport,
)

Key = tuple[str, str]  # (checkpoint_ns, checkpoint_id)
WriteKey = tuple[str, str, str, int]  # (checkpoint_ns, checkpoint_id, task_id, idx)


def _chunks(items: Sequence[SourceCheckpoint], size: int) -> Iterator[list[SourceCheckpoint]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _namespaces(cps: list[SourceCheckpoint]) -> Iterator[list[SourceCheckpoint]]:
    for _, group in groupby(cps, key=lambda c: c.ns):
        yield list(group)


def _existing(saver: PostgresCheckpointer, thread_id: str) -> tuple[set[Key], set[WriteKey]]:
    schema, tenant = saver.schema, saver.tenant_id
    cps = T.rows(saver._source, Q.q(Q.OUR_CHECKPOINT_IDS, schema=schema), (tenant, thread_id))
    writes = T.rows(saver._source, Q.q(Q.OUR_WRITE_KEYS, schema=schema), (tenant, thread_id))
    return (
        {(str(ns), str(cid)) for ns, cid in cps},
        {(str(ns), str(cid), str(task), int(idx)) for ns, cid, task, idx in writes},
    )


def _target_keys(
    cp: SourceCheckpoint, task_id: str, ws: list[RawWrite], special: bool
) -> set[WriteKey]:
    if special:
        return {(cp.ns, cp.cid, task_id, WRITES_IDX_MAP[w.channel]) for w in ws}
    return {(cp.ns, cp.cid, task_id, i) for i in range(len(ws))}


def _config(thread_id: str, ns: str, cid: str | None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _new_versions(cp: SourceCheckpoint, parent_versions: dict[str, Any] | None) -> dict[str, Any]:
    """The channels whose version moved since the parent (all of them without one)."""
    versions: dict[str, Any] = dict(cp.body.get("channel_versions") or {})
    if parent_versions is None:
        return versions
    moved = {ch: v for ch, v in versions.items() if parent_versions.get(ch) != v}
    if Q.TASKS in cp.values and int(cp.body.get("v", 4)) < 4:
        moved[Q.TASKS] = versions[Q.TASKS]  # moved from the parent's writes: always its own
    return moved


def _timestamp(cp: SourceCheckpoint) -> datetime | None:
    ts = cp.ts()
    if ts is None:
        return None
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def import_checkpoints(
    reader: ThreadReader,
    saver: PostgresCheckpointer,
    report: ImportReport,
    *,
    dry_run: bool,
    chunk_size: int,
    progress: ProgressCallback,
) -> None:
    """Import every thread of the source; see the module docstring."""
    threads = reader.threads()
    writes_total, orphans = reader.write_counts()
    reader.conn.commit()
    total = sum(n for _, n in threads)
    report.of("threads").source = len(threads)
    report.of("checkpoints").source = total
    report.of("writes").source = writes_total - orphans
    if orphans:
        report.of("writes").dropped = orphans
        report.notes.append(
            f"{orphans} pending write(s) belong to no checkpoint of the source (saved by a run "
            "whose checkpoint never committed, or left by a deletion): not imported"
        )
    ready = not dry_run or T.table_exists(saver._source, saver.schema, "checkpoints")
    done = 0
    for thread_id, _ in threads:
        have, have_writes = _existing(saver, thread_id) if ready else (set(), set())
        cps = reader.checkpoints(thread_id)
        imported_before = report.of("checkpoints").imported
        for ns_cps in _namespaces(cps):
            reader.reset()
            versions: dict[str, dict[str, Any]] = {}
            for chunk in _chunks(ns_cps, chunk_size):
                reader.load_values(thread_id, [c for c in chunk if (c.ns, c.cid) not in have])
                reader.load_writes(thread_id, chunk)
                for cp in chunk:
                    _import_one(
                        reader, saver, report, thread_id, cp, have, have_writes, versions, dry_run
                    )
                    versions[cp.cid] = dict(cp.body.get("channel_versions") or {})
                    done += 1
                    progress(ImportProgress("checkpoints", done, total, thread_id))
        if not dry_run:
            _keep_times(saver, thread_id, cps)
        reader.conn.commit()
        kind = "imported" if report.of("checkpoints").imported > imported_before else "skipped"
        setattr(report.of("threads"), kind, getattr(report.of("threads"), kind) + 1)


def _import_one(
    reader: ThreadReader,
    saver: PostgresCheckpointer,
    report: ImportReport,
    thread_id: str,
    cp: SourceCheckpoint,
    have: set[Key],
    have_writes: set[WriteKey],
    versions: dict[str, dict[str, Any]],
    dry_run: bool,
) -> None:
    counts = report.of("checkpoints")
    if (cp.ns, cp.cid) in have:
        counts.skipped += 1
    else:
        if not dry_run:
            parent_versions = versions.get(cp.parent) if cp.parent is not None else None
            saver.put(
                _config(thread_id, cp.ns, cp.parent),
                cp.checkpoint(),  # type: ignore[arg-type]
                cp.metadata,  # type: ignore[arg-type]
                _new_versions(cp, parent_versions),
            )
        counts.imported += 1
    wcounts = report.of("writes")
    for task_id, task_path, ws, special in write_groups(cp.writes):
        if _target_keys(cp, task_id, ws, special) <= have_writes:
            wcounts.skipped += len(ws)
            continue
        writes = reader.decode_writes(thread_id, cp, ws)
        if not dry_run:
            saver.put_writes(_config(thread_id, cp.ns, cp.cid), writes, task_id, task_path)  # type: ignore[arg-type]
        wcounts.imported += len(ws)


def _keep_times(saver: PostgresCheckpointer, thread_id: str, cps: list[SourceCheckpoint]) -> None:
    stamped = [(cp, ts) for cp in cps if (ts := _timestamp(cp)) is not None]
    if not stamped:
        return
    schema, tenant = saver.schema, saver.tenant_id
    T.execute(
        saver._source,
        [
            (
                Q.q(Q.OUR_SET_CREATED_AT, schema=schema),
                (
                    [cp.ns for cp, _ in stamped],
                    [cp.cid for cp, _ in stamped],
                    [ts for _, ts in stamped],
                    tenant,
                    thread_id,
                ),
            ),
            (Q.q(Q.OUR_THREAD_TIMES, schema=schema), (tenant, thread_id, tenant, thread_id)),
        ],
    )


# -- verification -------------------------------------------------------------------------------


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two values first differ (a dotted path), for a readable mismatch."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a:
                return f"{path}[{key!r}] only in the target"
            if key not in b:
                return f"{path}[{key!r}] missing from the target"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}[{key!r}]")
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path or "the value"


def source_metadata(cp: SourceCheckpoint, thread_id: str) -> dict[str, Any]:
    """The source metadata as any LangGraph saver stores it today (no ``writes``, no NUL)."""
    config = _config(thread_id, cp.ns, cp.cid)
    return dict(get_serializable_checkpoint_metadata(config, cp.metadata))  # type: ignore[arg-type]


def verify_checkpoints(
    reader: ThreadReader,
    saver: PostgresCheckpointer,
    result: VerifyReport,
    *,
    chunk_size: int,
    progress: ProgressCallback,
) -> None:
    """Compare every source checkpoint with the target's ``list()`` of its thread."""
    threads = reader.threads()
    reader.conn.commit()
    total = sum(n for _, n in threads)
    done = 0
    for thread_id, _ in threads:
        cps = reader.checkpoints(thread_id)
        for ns_cps in _namespaces(cps):
            reader.reset()
            for chunk in _chunks(ns_cps, chunk_size):
                reader.load(thread_id, chunk)
        reader.conn.commit()
        target = {
            (
                str(t.config["configurable"]["checkpoint_ns"]),
                str(t.config["configurable"]["checkpoint_id"]),
            ): t
            for t in saver.list({"configurable": {"thread_id": thread_id}})
        }
        for cp in cps:
            _compare(reader, thread_id, cp, target.get((cp.ns, cp.cid)), result)
            done += 1
            progress(ImportProgress("verify checkpoints", done, total, thread_id))
        result.count("threads")


def _compare(
    reader: ThreadReader, thread_id: str, cp: SourceCheckpoint, tup: Any, result: VerifyReport
) -> None:
    where = f"thread {thread_id!r} namespace {cp.ns!r} checkpoint {cp.cid}"
    result.count("checkpoints")
    if tup is None:
        result.mismatch(f"{where}: missing from the target")
        return
    parent = tup.parent_config["configurable"]["checkpoint_id"] if tup.parent_config else None
    if parent != cp.parent:
        result.mismatch(f"{where}: parent {parent!r} in the target, {cp.parent!r} in the source")
    checkpoint = cp.checkpoint()
    if dict(tup.checkpoint) != checkpoint:
        spot = _first_difference(checkpoint, dict(tup.checkpoint))
        result.mismatch(f"{where}: the checkpoint differs at {spot}")
    metadata = source_metadata(cp, thread_id)
    if dict(tup.metadata or {}) != metadata:
        spot = _first_difference(metadata, dict(tup.metadata or {}))
        result.mismatch(f"{where}: the metadata differs at {spot}")
    writes = reader.pending_writes(thread_id, cp)
    result.count("writes", len(writes))
    if list(tup.pending_writes or []) != writes:
        got = list(tup.pending_writes or [])
        detail = (
            f"{len(got)} in the target, {len(writes)} in the source"
            if len(got) != len(writes)
            else f"they differ at {_first_difference(writes, got)}"
        )
        result.mismatch(f"{where}: pending writes differ ({detail})")
