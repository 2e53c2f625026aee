"""The run every import shares: open the source read-only, open the target, import in
batches, time it, verify; or only verify.

Each importer brings a :class:`Job`: what it opens on the target for one source
connection (a checkpointer, a store, a vector store), how it imports into it and how
it compares it with the source. Resuming is the job's: every import skips what
the target already holds, so a run after an interruption continues.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from haive_langgraph.ops.importers._report import (
    ImportReport,
    ProgressCallback,
    SourceKind,
    VerifyReport,
    no_progress,
)
from haive_langgraph.ops.importers._source import check_batch, open_source, source_name
from haive_langgraph.ops.importers._target import import_dsn


class Job(Protocol):
    """One import's target instances, opened on the source connection."""

    @property
    def tenant_id(self) -> str:
        """The tenant the rows go to."""
        ...

    def import_into(
        self, report: ImportReport, *, dry_run: bool, batch_size: int, progress: ProgressCallback
    ) -> None:
        """Import every source row the target lacks (setting up the target's tables
        unless ``dry_run``), counting in ``report``."""
        ...

    def verify(self, result: VerifyReport, *, batch_size: int, progress: ProgressCallback) -> None:
        """Compare every source row with the target, recording what differs in ``result``."""
        ...

    def close(self) -> None:
        """Close what the job opened on the target."""
        ...


# Opens a job on a source connection and the target's DSN (``None``: the default server).
OpenJob = Callable[[psycopg.Connection[Any], str | None], Job]


def run_import(
    kind: SourceKind,
    source_dsn: str,
    target: str | None,
    open_job: OpenJob,
    dry_run: bool,
    verify: bool,
    batch_size: int,
    progress: ProgressCallback | None,
) -> ImportReport:
    """Import with the job ``open_job`` opens, then verify unless ``dry_run`` or not ``verify``."""
    batch = check_batch(batch_size)
    progress = progress or no_progress
    target_dsn = import_dsn(target)
    report = ImportReport(kind, source_name(source_dsn), "", dry_run=dry_run)
    started = time.perf_counter()
    with open_source(source_dsn) as conn:
        job = open_job(conn, target_dsn)
        try:
            report.tenant_id = job.tenant_id
            job.import_into(report, dry_run=dry_run, batch_size=batch, progress=progress)
            report.seconds = time.perf_counter() - started
            if verify and not dry_run:
                report.verification = _verification(job, batch, progress)
        finally:
            job.close()
    return report


def run_verify(
    source_dsn: str,
    target: str | None,
    open_job: OpenJob,
    batch_size: int,
    progress: ProgressCallback | None,
) -> VerifyReport:
    """Only compare the source with the target (writes nothing)."""
    batch = check_batch(batch_size)
    with open_source(source_dsn) as conn:
        job = open_job(conn, target)
        try:
            return _verification(job, batch, progress or no_progress)
        finally:
            job.close()


def _verification(job: Job, batch_size: int, progress: ProgressCallback) -> VerifyReport:
    result = VerifyReport()
    started = time.perf_counter()
    job.verify(result, batch_size=batch_size, progress=progress)
    result.seconds = time.perf_counter() - started
    return result
