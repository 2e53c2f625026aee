"""Scenario 5: a sustained mixed workload for a bounded time.

Every workload in ``_workloads.WORKLOADS`` (checkpointer, chat histories,
store) runs as one weighted mix on 8
concurrent workers: 20 s in CI, 10 minutes in soak mode. Throughput and p50 /
p99 latency per operation are reported (not asserted: speed belongs to the
benchmarks). Asserted: no operation fails, and the client's memory stays
flat once warm: from the end of the warm-up (the first quarter) to the end,
RSS grows by less than ``MAX_GROWTH``: the checkpointer's payload memo may
still be filling up to its 32 MiB bound (in a long soak), plus 16 MiB of
allocator slack; keeping every checkpoint, message or connection would cost
far more over the run.
"""

from __future__ import annotations

from ._workloads import WORKLOADS, describe, run_load
from .conftest import Budget, Figures

MIB = 1024 * 1024
MAX_GROWTH = (32 + 16) * MIB


async def test_sustained_mixed_load_keeps_memory_flat(
    dsn: str, budget: Budget, figures: Figures
) -> None:
    seconds = budget.pick(20.0, 600.0)
    workloads = [factory(dsn) for factory in WORKLOADS.values()]
    for w in workloads:
        await w.start()
    try:
        result = await run_load(workloads, seconds=seconds, concurrency=8)
    finally:
        for w in workloads:
            await w.stop()
    assert not result.errors, f"{len(result.errors)} operations failed, e.g. {result.errors[0]!r}"

    warm, middle, end = result.rss_at(0.25), result.rss_at(0.6), result.rss[-1][1]
    stats = describe(result)
    ops = "; ".join(
        f"{op} {s['n']} ({s['per_s']:.0f}/s) p50 {s['p50_ms']:.1f} ms p99 {s['p99_ms']:.1f} ms"
        for op, s in stats.items()
    )
    figures.record(
        "5 load",
        f"{seconds:g}s, 8 workers, {result.operations} operations "
        f"({result.operations / seconds:.0f}/s), 0 errors: {ops}; client RSS "
        f"{warm / MIB:.0f} MiB after warm-up, {middle / MIB:.0f} MiB at 60%, "
        f"{end / MIB:.0f} MiB at the end ({(end - warm) / MIB:+.1f} MiB)",
    )
    assert end - warm < MAX_GROWTH, (
        f"client memory grew {(end - warm) / MIB:.1f} MiB after warm-up "
        f"({warm / MIB:.0f} -> {end / MIB:.0f} MiB)"
    )
