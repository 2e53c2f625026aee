"""Checkpointer operations, written once as sans-I/O generators.

Each function yields :class:`~haive_langgraph.db.Step` values and returns a
result; ``PostgresCheckpointer`` runs them with the sync driver,
``AsyncPostgresCheckpointer`` with the async one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._decoding import Row
from haive_langgraph.checkpointers._retention import RetentionPolicy, RetentionReport, doomed
from haive_langgraph.checkpointers._values import EMPTY_LINEAGE
from haive_langgraph.db import Op, Step
from haive_langgraph.db._arrays import BigintArray, IntArray, TextArray

R = TypeVar("R")

RawLineages = dict[tuple[str, int], tuple[list[bytes], list[bytes | None]]]


class Statements:
    """The checkpointer's statements, rendered once for one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

        def r(template: str) -> str:
            return S.q(template, schema).as_string(None)

        self._put_checkpoint: dict[tuple[frozenset[str], bool], str] = {}
        # Set once a write finds the checkpoints table partitioned.
        self.partitioned = False
        self.put_writes_keep = r(S.PUT_WRITES.replace("{conflict}", S.WRITES_KEEP))
        self.put_writes_replace = r(S.PUT_WRITES.replace("{conflict}", S.WRITES_UPSERT))
        self.thread_family = r(S.THREAD_FAMILY)
        self.get_checkpoint = r(S.GET_CHECKPOINT)
        self.get_latest_checkpoint = r(S.GET_LATEST_CHECKPOINT)
        self.probe_latest = r(S.PROBE_LATEST)
        self.list_template = S.LIST_CHECKPOINTS
        self.lineage_items = r(S.LINEAGE_ITEMS)
        self.lock_exclusive = r(S.LOCK_FAMILY_EXCLUSIVE)
        self.lock_shared = r(S.LOCK_FAMILY_SHARED)
        self.families_of_threads = r(S.FAMILIES_OF_THREADS)
        self.delete_thread_rows = r(S.DELETE_THREAD_ROWS)
        self.family_in_use = r(S.FAMILY_IN_USE)
        self.drop_family_content = r(S.DROP_FAMILY_CONTENT)
        self.gc_lineage_items = r(S.GC_LINEAGE_ITEMS)
        self.gc_blobs = r(S.GC_BLOBS)
        self.copy_thread_check = r(S.COPY_THREAD_CHECK)
        self.copy_thread = r(S.COPY_THREAD)
        self.run_checkpoints = r(S.RUN_CHECKPOINTS)
        self.delete_runs = r(S.DELETE_RUNS)
        self.recount_threads = r(S.RECOUNT_THREADS)
        self.prune_keep = r(S.PRUNE_KEEP)
        self.prune_calls = r(S.PRUNE_CALLS)
        self.prune_delete = r(S.PRUNE_DELETE)
        self.delta_history = r(S.DELTA_HISTORY)
        self.get_thread = r(S.GET_THREAD)
        self.tag = r(S.TAG)
        self.untag = r(S.UNTAG)
        self.branch_check = r(S.BRANCH_CHECK)
        self.create_branch = r(S.CREATE_BRANCH)
        self.list_branches = r(S.LIST_BRANCHES)
        self.restore = r(S.RESTORE)
        self.detach_branches = r(S.DETACH_BRANCHES)
        self.keep_closure = r(S.KEEP_CLOSURE)
        self.retention_rows = r(S.RETENTION_ROWS)
        self.retention_threads = r(S.RETENTION_THREADS)
        self.try_lock_family = r(S.TRY_LOCK_FAMILY)
        self.list_threads = r(S.LIST_THREADS)

    def put_checkpoint(self, parts: frozenset[str]) -> str:
        """The checkpoint write statement with the given parts (rendered once each)."""
        key = (parts, self.partitioned)
        query = self._put_checkpoint.get(key)
        if query is None:
            template = S.put_checkpoint_template(parts, partitioned=self.partitioned)
            query = S.q(template, self.schema).as_string(None)
            self._put_checkpoint[key] = query
        return query

    def learn_partitioned(self, exc: BaseException) -> bool:
        """Switch to the partitioned-table write if ``exc`` asks for it; whether it did.

        The layout is learned from the first write it fails (one failed
        statement per instance) rather than asked for on every start. The
        SQLSTATE decides, not the message, which the server may translate;
        the partitioned form is valid on any table of PostgreSQL 18.
        """
        if self.partitioned or not isinstance(exc, psycopg.errors.FeatureNotSupported):
            return False
        self.partitioned = True
        return True

    def list_checkpoints(self, where: Sequence[str], limit: bool, *, thread: bool) -> str:
        """The history query with the given WHERE fragments (fixed SQL, values as params).

        With ``thread``, the thread's branch ancestry is included (``CHAIN``).
        """
        limit_sql = "LIMIT %(limit)s" if limit else ""
        source = (S.CHAIN_SOURCE if thread else S.PLAIN_SOURCE).replace(
            "{where}", " AND ".join(where)
        )
        template = (
            self.list_template.replace("{source}", source.replace("{limit}", limit_sql))
            .replace("{limit}", limit_sql)
            .replace("{chain}", S.CHAIN if thread else "")
        )
        return S.q(template, self.schema).as_string(None)


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


# -- reads -------------------------------------------------------------------


def get_op(
    st: Statements,
    t: str,
    th: str,
    ns: str,
    cid: str | None,
    known: tuple[str, Sequence[tuple[int, int]]] | None = None,
) -> Op[Row | None]:
    """One checkpoint (or the latest), with values, list items and pending writes.

    ``known`` is (family, [(lineage, length) ...]): list items the caller holds
    the payloads of, which are then returned without data.
    """
    params = {
        "t": t,
        "th": th,
        "ns": ns,
        "cid": cid,
        "known_f": known[0] if known else None,
        "known_l": BigintArray(k[0] for k in known[1]) if known else BigintArray(),
        "known_n": IntArray(k[1] for k in known[1]) if known else IntArray(),
    }
    row = yield Step(
        st.get_checkpoint if cid else st.get_latest_checkpoint, params, fetch="one", prepare=True
    )
    return Row.from_tuple(row) if row is not None else None


def probe_op(st: Statements, t: str, th: str, ns: str, row: dict[str, Any]) -> Op[bool | None]:
    """Whether the thread's latest checkpoint is the one ``row`` describes (the
    columns of ``PROBE_LATEST``), without pending writes; None if the thread has
    no checkpoint."""
    found = yield Step(
        st.probe_latest, {**row, "t": t, "th": th, "ns": ns}, fetch="one", prepare=True
    )
    return None if found is None else bool(found[0])


def family_op(st: Statements, t: str, th: str) -> Op[str | None]:
    row = yield Step(st.thread_family, (t, th), fetch="one")
    return str(row[0]) if row is not None else None


def list_op(
    st: Statements,
    t: str,
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    filter: dict[str, Any] | None,
    before_id: str | None,
    limit: int | None,
) -> Op[tuple[list[Row], RawLineages]]:
    where = ["c.tenant_id = %(t)s"]
    params: dict[str, Any] = {"t": t, "th": thread_id}
    if checkpoint_ns is not None:
        where.append("c.checkpoint_ns = %(ns)s")
        params["ns"] = checkpoint_ns
    if checkpoint_id:
        where.append("c.checkpoint_id = %(cid)s")
        params["cid"] = checkpoint_id
    if filter:
        where.append("c.metadata @> %(filter)s")
        params["filter"] = Jsonb(filter)
    if before_id:
        where.append("c.checkpoint_id < %(before)s")
        params["before"] = before_id
    if limit is not None:
        params["limit"] = limit
    query = st.list_checkpoints(where, limit is not None, thread=thread_id is not None)
    return (
        yield from _rows_with_items(
            st,
            t,
            Step(query, params),
            Row.from_tuple,
            lambda row: (
                ((row.family_id, lineage), length)
                for lineage, length in zip(row.list_lineages, row.list_lengths, strict=True)
            ),
        )
    )


# Reads of checkpoints and then of their list items are two statements, each
# with its own snapshot: a thread deleted (or pruned) in between leaves rows
# whose items are gone. Such a read is run again (the deleted rows are then
# gone too); items missing on the last attempt are reported as corruption.
CONSISTENT_READ_ATTEMPTS = 3


def _rows_with_items(
    st: Statements,
    t: str,
    step: Step,
    decode: Callable[[Any], R],
    lists_of: Callable[[R], Iterable[tuple[tuple[str, int], int]]],
) -> Op[tuple[list[R], RawLineages]]:
    """Rows of ``step`` and the items of the lists they use (``lists_of`` a row:
    ((family, lineage), length) pairs), read again while items are missing."""
    for attempt in range(CONSISTENT_READ_ATTEMPTS):
        rows = [decode(r) for r in (yield step)]
        longest: dict[tuple[str, int], int] = {}
        for row in rows:
            for key, length in lists_of(row):
                if length > longest.get(key, 0):
                    longest[key] = length
        lineages = yield from lineage_items_op(st, t, longest)
        if _complete(longest, lineages) or attempt == CONSISTENT_READ_ATTEMPTS - 1:
            break
    return rows, lineages


def _complete(longest: dict[tuple[str, int], int], lineages: RawLineages) -> bool:
    """Whether every lineage read has at least the items the checkpoints use."""
    return all(
        len(lineages.get(key, ((), ()))[0]) >= n
        for key, n in longest.items()
        if key[1] != EMPTY_LINEAGE and n > 0
    )


def lineage_items_op(
    st: Statements, t: str, longest: dict[tuple[str, int], int]
) -> Op[RawLineages]:
    """Items of the given lineages, each read once, up to the longest length used."""
    lineages: RawLineages = {}
    longest = {k: n for k, n in longest.items() if k[1] != EMPTY_LINEAGE and n > 0}
    if not longest:
        return lineages
    items = yield Step(
        st.lineage_items,
        {
            "t": t,
            "families": TextArray(k[0] for k in longest),
            "lineages": BigintArray(k[1] for k in longest),
            "lengths": IntArray(longest.values()),
        },
    )
    for family, lineage, seq, key, data in items:
        keys, datas = lineages.setdefault((family, lineage), ([], []))
        if seq == len(keys):  # a gap stops the list; the length check then reports it
            keys.append(bytes(key))
            datas.append(data)
    return lineages


def delta_history_op(
    st: Statements, t: str, th: str, ns: str, cid: str | None, channels: Sequence[str]
) -> Op[tuple[list[tuple[Any, ...]], RawLineages]]:
    """The parent chain rows (oldest first) and the items of list seeds."""
    params = {"t": t, "th": th, "ns": ns, "cid": cid, "channels": TextArray(channels)}
    return (
        yield from _rows_with_items(
            st,
            t,
            Step(st.delta_history, params, prepare=False),
            tuple,
            lambda row: (
                ((str(row[2]), int(lineage)), int(length))
                for lineage, length in zip(row[8] or [], row[9] or [], strict=True)
            ),
        )
    )


# -- writes ------------------------------------------------------------------


def put_op(st: Statements, params: dict[str, Any]) -> Op[None]:
    parts = frozenset(
        part
        for part, param in (
            ("blobs", "blob_keys"),
            ("check", "check_keys"),
            ("upd", "upd_l"),
            ("new", "new_l"),
            ("items", "item_l"),
            ("tags", "tags"),
        )
        if params[param]
    )
    yield Step(st.put_checkpoint(parts), params, fetch="none", prepare=True)


def put_writes_op(st: Statements, params: dict[str, Any], replace: bool) -> Op[None]:
    yield Step(
        st.put_writes_replace if replace else st.put_writes_keep,
        params,
        fetch="none",
        prepare=True,
    )


# -- maintenance (run each inside one transaction) ----------------------------


def _lock(st: Statements, lock: int, t: str, family: str, *, exclusive: bool) -> Step:
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
    report = DeleteReport()
    by_family = yield from _families(st, t, threads)
    for family in sorted(by_family):  # one lock order for every deleter: no deadlocks
        yield _lock(st, lock, t, family, exclusive=True)
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
    family, dst_used = yield Step(
        st.copy_thread_check, {"t": t, "src": src, "dst": dst}, fetch="one"
    )
    if family is None:
        return 0
    if dst_used:
        from haive_langgraph.errors import ConfigurationError

        raise ConfigurationError(
            f"copy_thread: target thread {dst!r} already has checkpoints; "
            "copy into a new thread or delete the target first"
        )
    yield _lock(st, lock, t, str(family), exclusive=False)
    _, cps, _ = yield Step(st.copy_thread, {"t": t, "src": src, "dst": dst}, fetch="one")
    return int(cps)


def delete_for_runs_op(st: Statements, lock: int, t: str, runs: Sequence[str]) -> Op[DeleteReport]:
    report = DeleteReport()
    rows = yield Step(st.run_checkpoints, {"t": t, "runs": TextArray(runs)})
    by_family: dict[str, list[str]] = {}
    for thread_id, family in rows:
        by_family.setdefault(str(family), []).append(str(thread_id))
    for family in sorted(by_family):
        yield _lock(st, lock, t, family, exclusive=True)
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
    yield _lock(st, lock, t, family, exclusive=True)
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
    cps, ws = yield Step(
        st.prune_delete,
        {
            "t": t,
            "th": th,
            "keep_ns": TextArray(k[0] for k in keep),
            "keep_ids": TextArray(k[1] for k in keep),
        },
        fetch="one",
        prepare=False,
    )
    report.checkpoints = int(cps)
    report.writes = int(ws)
    yield Step(st.recount_threads, {"t": t, "threads": TextArray([th])}, fetch="none")
    report.gc = yield from gc_family_op(st, t, family)
    return report


# -- thread registry -----------------------------------------------------------


def get_thread_op(st: Statements, t: str, th: str) -> Op[tuple[Any, ...] | None]:
    row = yield Step(st.get_thread, {"t": t, "th": th}, fetch="one")
    return tuple(row) if row is not None else None


def list_threads_op(
    st: Statements,
    t: str,
    *,
    filter: dict[str, Any] | None,
    limit: int | None,
    after: tuple[Any, str] | None,
) -> Op[list[tuple[Any, ...]]]:
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
    return [tuple(r) for r in rows]


__all__ = ["DeleteReport", "GcReport", "Statements", "sql"]


# -- time travel ---------------------------------------------------------------


def tag_op(
    st: Statements, t: str, th: str, ns: str, cid: str, tags: Sequence[str], *, remove: bool
) -> Op[tuple[bool, int]]:
    """Tag (or untag) a checkpoint: (checkpoint found, tags changed)."""
    found, changed = yield Step(
        st.untag if remove else st.tag,
        {"t": t, "th": th, "ns": ns, "cid": cid, "tags": TextArray(tags)},
        fetch="one",
    )
    return bool(found), int(changed)


def find_op(
    st: Statements,
    t: str,
    th: str,
    ns: str,
    *,
    tags: Sequence[str],
    metadata: dict[str, Any] | None,
    inline: dict[str, Any],
    keyed: Sequence[tuple[str, bytes]],
    before: str | None,
    after: str | None,
    limit: int | None,
) -> Op[list[tuple[Any, ...]]]:
    """Checkpoints of a thread (and the history it inherits), newest first."""
    params: dict[str, Any] = {"t": t, "th": th, "ns": ns, "tags": TextArray(tags)}
    where = ["true"]
    if metadata:
        where.append("c.metadata @> %(meta)s")
        params["meta"] = Jsonb(metadata)
    if inline:
        where.append("c.inline_values @> %(inline)s")
        params["inline"] = Jsonb(inline)
    for i, (channel, key) in enumerate(keyed):
        params[f"kch{i}"], params[f"kkey{i}"] = channel, key
        where.append(
            f"c.value_keys[array_position(c.value_channels, %(kch{i})s::text)] = %(kkey{i})s"
        )
    for bound, op, name in ((before, "<", "before"), (after, ">", "after")):
        if bound is not None:
            where.append(f"c.checkpoint_id {op} %({name})s")
            params[name] = bound
    query = S.CHAIN + (
        S.FIND_SELECT.replace("{tagged}", S.FIND_TAGGED if tags else "")
        .replace("{where}", " AND ".join(where))
        .replace("{limit}", "LIMIT %(limit)s" if limit is not None else "")
    )
    params["limit"] = limit
    rows = yield Step(S.q(query, st.schema).as_string(None), params)
    return [tuple(r) for r in rows]


class BranchError(Exception):
    """Raised inside create_branch_op; turned into the public errors by the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def create_branch_op(
    st: Statements,
    lock: int,
    t: str,
    th: str,
    cid: str,
    name: str,
    dst: str,
    meta: dict[str, Any],
) -> Op[None]:
    params = {"t": t, "th": th, "ns": "", "cid": cid, "dst": dst, "name": name}
    owner, family, dst_exists, name_taken = yield Step(st.branch_check, params, fetch="one")
    if owner is None:
        raise BranchError("missing")
    if name_taken:
        raise BranchError("name")
    if dst_exists:
        raise BranchError("thread")
    yield _lock(st, lock, t, str(family), exclusive=False)
    yield Step(st.create_branch, {**params, "owner": owner, "meta": Jsonb(meta)}, fetch="one")


def list_branches_op(st: Statements, t: str, th: str) -> Op[list[tuple[Any, ...]]]:
    rows = yield Step(st.list_branches, {"t": t, "th": th})
    return [tuple(r) for r in rows]


def restore_op(
    st: Statements,
    lock: int,
    t: str,
    th: str,
    ns: str,
    cid: str,
    new_id: str,
    body: bytes,
    meta: dict[str, Any],
) -> Op[bool]:
    inserted, _ = yield Step(
        st.restore,
        {
            "t": t,
            "th": th,
            "ns": ns,
            "cid": cid,
            "new_id": new_id,
            "body": body,
            "meta": Jsonb(meta),
            "lock": lock,
        },
        fetch="one",
    )
    return bool(inserted)


# -- retention -------------------------------------------------------------------


def retention_threads_op(
    st: Statements,
    t: str,
    policy: RetentionPolicy,
    threads: Sequence[str] | None,
    now: Any,
) -> Op[list[tuple[str, str, bool]]]:
    """(thread, family, past thread_ttl) of the threads retention looks at."""
    expired = now - policy.thread_ttl if policy.thread_ttl is not None else None
    rows = yield Step(
        st.retention_threads,
        {
            "t": t,
            "expired": expired,
            "threads": TextArray(threads) if threads is not None else None,
        },
    )
    return [(str(th), str(family), bool(old)) for th, family, old in rows]


def retain_thread_op(
    st: Statements,
    lock: int,
    t: str,
    th: str,
    family: str,
    expired: bool,
    policy: RetentionPolicy,
    now: Any,
    report: RetentionReport,
) -> Op[None]:
    """Apply ``policy`` to one thread, in the caller's transaction; skip it if busy."""
    (got,) = yield Step(st.try_lock_family, {"lock": lock, "t": t, "family": family}, fetch="one")
    if not got:
        report.skipped.append(th)
        return
    if expired:
        yield Step(st.detach_branches, {"t": t, "th": th}, fetch="none", prepare=False)
        cps, ws = yield Step(st.delete_thread_rows, {"t": t, "th": th}, fetch="one")
        report.threads_deleted += 1
        report.checkpoints += int(cps)
        report.writes += int(ws)
    else:
        if policy.max_checkpoints_per_thread is None and policy.retention_days is None:
            return
        rows = yield Step(st.retention_rows, {"t": t, "th": th})
        keep, remove = doomed(policy, rows, now)
        if not remove:
            return
        needed = yield Step(
            st.keep_closure,
            {
                "t": t,
                "th": th,
                "keep_ns": TextArray(k[0] for k in keep),
                "keep_ids": TextArray(k[1] for k in keep),
            },
            prepare=False,
        )
        keep |= {(str(ns), str(cid)) for ns, cid in needed}
        if len(keep) == len(rows):
            return
        yield Step(st.detach_branches, {"t": t, "th": th}, fetch="none", prepare=False)
        cps, ws = yield Step(
            st.prune_delete,
            {
                "t": t,
                "th": th,
                "keep_ns": TextArray(k[0] for k in keep),
                "keep_ids": TextArray(k[1] for k in keep),
            },
            fetch="one",
            prepare=False,
        )
        yield Step(st.recount_threads, {"t": t, "threads": TextArray([th])}, fetch="none")
        report.threads_trimmed += 1
        report.checkpoints += int(cps)
        report.writes += int(ws)
    gc = yield from gc_family_op(st, t, family)
    report.blobs += gc.blobs
    report.bytes += gc.blob_bytes
