"""Retention: which checkpoints a policy removes (pure decisions), the sans-I/O
operations that remove them, and the calls that run them thread by thread."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from haive_langgraph.checkpointers import _sql as S
from haive_langgraph.checkpointers._ops import Statements
from haive_langgraph.checkpointers._threads import delete_except_op, gc_family_op, keep_params
from haive_langgraph.db._arrays import TextArray
from haive_langgraph.db._call import Call, Calls
from haive_langgraph.db._driver import Op, OpFactory, Step
from haive_langgraph.db._tenancy import TenantScope
from haive_langgraph.errors import ConfigurationError

if TYPE_CHECKING:
    from haive_langgraph.checkpointers._base import Saver


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What to keep of every thread.

    A checkpoint goes when it is beyond the newest ``max_checkpoints_per_thread``
    of its namespace, or older than ``retention_days`` — unless it is among the
    newest ``keep_minimum``, tagged (``keep_tagged``), recorded a failure
    (``keep_failed``), or needed by a kept checkpoint (a ``DeltaChannel``'s
    ancestors). The newest checkpoint of every namespace, which holds any
    pending interrupt, is always kept. A whole thread goes when it was not
    written for ``thread_ttl``.

    Attributes:
        max_checkpoints_per_thread: Newest checkpoints kept per namespace.
        retention_days: Age in days beyond which checkpoints go.
        keep_minimum: Newest checkpoints always kept per namespace (>= 1).
        keep_tagged: Keep tagged checkpoints.
        keep_failed: Keep checkpoints whose pending writes record an error.
        thread_ttl: Delete threads not written for this long.

    Raises:
        ConfigurationError: A policy that would keep fewer than ``keep_minimum``
            checkpoints, or a non-positive limit.
    """

    max_checkpoints_per_thread: int | None = None
    retention_days: float | None = None
    keep_minimum: int = 1
    keep_tagged: bool = True
    keep_failed: bool = True
    thread_ttl: dt.timedelta | None = None

    def __post_init__(self) -> None:
        if self.keep_minimum < 1:
            raise ConfigurationError(
                f"keep_minimum must be at least 1 (the head of a thread is always kept), "
                f"got {self.keep_minimum}"
            )
        if self.max_checkpoints_per_thread is not None and (
            self.max_checkpoints_per_thread < self.keep_minimum
        ):
            raise ConfigurationError(
                f"max_checkpoints_per_thread={self.max_checkpoints_per_thread} would keep fewer "
                f"than keep_minimum={self.keep_minimum} checkpoints; refused"
            )
        if self.retention_days is not None and self.retention_days <= 0:
            raise ConfigurationError(f"retention_days must be positive, got {self.retention_days}")
        if self.thread_ttl is not None and self.thread_ttl <= dt.timedelta(0):
            raise ConfigurationError(f"thread_ttl must be positive, got {self.thread_ttl}")
        if (
            self.max_checkpoints_per_thread is None
            and self.retention_days is None
            and self.thread_ttl is None
        ):
            raise ConfigurationError(
                "a retention policy needs max_checkpoints_per_thread, retention_days or thread_ttl"
            )


@dataclass(slots=True)
class RetentionReport:
    """What a retention run removed (or, dry, would remove).

    Attributes:
        dry_run: Nothing was changed.
        threads_deleted: Whole threads removed (``thread_ttl``).
        threads_trimmed: Threads that lost checkpoints.
        checkpoints: Checkpoints removed.
        writes: Pending writes removed.
        blobs: Stored values removed (no longer used by anything).
        bytes: Bytes of those values.
        skipped: Threads skipped because a writer held them.
    """

    dry_run: bool = False
    threads_deleted: int = 0
    threads_trimmed: int = 0
    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (for logs and JSON), field by field."""
        return asdict(self)


def doomed(
    policy: RetentionPolicy,
    rows: Sequence[tuple[Any, ...]],
    now: dt.datetime,
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Split a thread's checkpoints into (to keep, to remove), before DeltaChannel needs.

    ``rows`` are ``(ns, checkpoint_id, created_at, root, tagged, failed)``,
    newest first within each namespace.
    """
    cutoff = (
        now - dt.timedelta(days=policy.retention_days)
        if policy.retention_days is not None
        else None
    )
    keep: set[tuple[str, str]] = set()
    remove: set[tuple[str, str]] = set()
    rank: dict[str, int] = {}
    for ns, cid, created_at, _root, tagged, failed in rows:
        rank[ns] = position = rank.get(ns, 0) + 1
        too_many = (
            policy.max_checkpoints_per_thread is not None
            and position > policy.max_checkpoints_per_thread
        )
        too_old = cutoff is not None and created_at < cutoff
        protected = (
            position <= policy.keep_minimum
            or (policy.keep_tagged and tagged)
            or (policy.keep_failed and failed)
        )
        (remove if (too_many or too_old) and not protected else keep).add((ns, cid))
    # A subgraph call goes with the root checkpoint it started from.
    removed_roots = {cid for ns, cid in remove if ns == ""}
    for ns, cid, _created, root, _t, _f in rows:
        if ":" in ns and root in removed_roots and (ns, cid) in keep:
            keep.discard((ns, cid))
            remove.add((ns, cid))
    return keep, remove


# -- operations ------------------------------------------------------------------


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
        needed = yield Step(st.keep_closure, keep_params(t, th, keep), prepare=False)
        keep |= {(str(ns), str(cid)) for ns, cid in needed}
        if len(keep) == len(rows):
            return
        yield Step(st.detach_branches, {"t": t, "th": th}, fetch="none", prepare=False)
        cps, ws = yield from delete_except_op(st, t, th, keep)
        report.threads_trimmed += 1
        report.checkpoints += int(cps)
        report.writes += int(ws)
    gc = yield from gc_family_op(st, t, family)
    report.blobs += gc.blobs
    report.bytes += gc.blob_bytes


# -- calls -----------------------------------------------------------------------


def apply_retention(
    saver: Saver,
    policy: RetentionPolicy,
    dry_run: bool,
    thread_ids: Sequence[str] | None,
) -> Calls[RetentionReport]:
    """``apply_retention``: the threads to look at, then each in its own transaction
    (rolled back on a dry run)."""
    report, threads = yield from retention_calls(
        saver._statements, saver.tenant_id, policy, dry_run, thread_ids
    )
    if not dry_run:
        saver._forget_threads(threads)
    return report


def retention_calls(
    st: Statements,
    tenant_id: str,
    policy: RetentionPolicy,
    dry_run: bool,
    thread_ids: Sequence[str] | None,
    *,
    scope: TenantScope | None = None,
) -> Calls[tuple[RetentionReport, list[str]]]:
    """A retention run over one tenant's threads, with no saver (the tenant sweeper
    runs it with ``scope``, the tenant bound for row-level security): the report
    and the threads looked at."""
    now = dt.datetime.now(dt.UTC)
    report = RetentionReport(dry_run=dry_run)
    threads: list[tuple[str, str, bool]] = yield Call(
        lambda: retention_threads_op(st, tenant_id, policy, thread_ids, now),
        read=True,
        scope=scope,
    )
    for th, family, expired in threads:
        yield Call(
            _retain(st, tenant_id, th, family, expired, policy, now, report),
            transaction=True,
            rollback=dry_run,
            scope=scope,
        )
    return report, [t[0] for t in threads]


def _retain(
    st: Statements,
    tenant_id: str,
    th: str,
    family: str,
    expired: bool,
    policy: RetentionPolicy,
    now: dt.datetime,
    report: RetentionReport,
) -> OpFactory[None]:
    return lambda: retain_thread_op(
        st, S.LOCK_CLASS_FAMILY, tenant_id, th, family, expired, policy, now, report
    )
