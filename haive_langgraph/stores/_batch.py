"""A batch of store operations as one sans-I/O operation.

A batch runs its reads first, all sent together (one round trip), then every
write in one statement. Calls merged by the async store (see
:mod:`haive_langgraph.stores._merge`) may add reads that run after the
write: those issued after a write they could observe.

:func:`batch_op` records how far it got (:attr:`BatchPlan.stage`), so a
caller whose batch failed knows what the server applied: nothing of a stage
that raised a server error (each round, and the write, is one transaction).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.store.base import GetOp, ListNamespacesOp, Result

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.stores._ops import (
    Context,
    PutPlan,
    get_results,
    get_step,
    list_namespaces_step,
    put_step,
)
from haive_langgraph.stores._search_ops import (
    SearchPlan,
    copy_items,
    grouped_search_results,
    grouped_search_step,
    plain_search_results,
    plain_search_step,
    search_shape,
)
from haive_langgraph.stores._vector_search import (
    search_settings_step,
    unscored_step,
    vector_search_done,
    vector_search_step,
)

Stage = Literal["reads", "write", "after", "done"]


@dataclass(slots=True)
class Reads:
    """Reads that go out together, by kind."""

    gets: list[tuple[int, GetOp]] = field(default_factory=list)
    searches: list[SearchPlan] = field(default_factory=list)
    lists: list[tuple[int, ListNamespacesOp]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.gets or self.searches or self.lists)


@dataclass(slots=True)
class BatchPlan:
    """A batch split by kind and stage; :func:`batch_op` fills in ``results``.

    Attributes:
        reads: Reads that see the state before the batch's writes.
        put: Every write of the batch (one statement), if any.
        after: Reads that see the writes (only in merged calls).
        stage: Where :func:`batch_op` is: ``"reads"``, ``"write"`` (the
            write was sent), ``"after"`` (the write committed), ``"done"``.
    """

    size: int
    reads: Reads = field(default_factory=Reads)
    put: PutPlan | None = None
    after: Reads = field(default_factory=Reads)
    stage: Stage = "reads"
    results: list[Result] = field(init=False)

    def __post_init__(self) -> None:
        self.results = [None] * self.size

    def searches(self) -> Iterator[SearchPlan]:
        yield from self.reads.searches
        yield from self.after.searches


def reads_op(ctx: Context, reads: Reads, results: list[Result]) -> Op[None]:
    """Run reads in one round: gets, filter searches and namespace listings, then
    the vector searches behind their settings (transaction-local: they hold for
    the rest of the round, so they come last, and end with it)."""
    plain: list[list[SearchPlan]] = []  # alone, or grouped by shape
    shapes: dict[Hashable, list[SearchPlan]] = {}
    for sp in reads.searches:
        if sp.vector is None:
            shape = search_shape(ctx, sp.op)
            if shape is None:
                plain.append([sp])
            elif shape in shapes:
                shapes[shape].append(sp)
            else:
                plain.append(shapes.setdefault(shape, [sp]))
    vector_plans = [sp for sp in reads.searches if sp.vector is not None]
    steps: list[Step] = []
    if reads.gets:
        steps.append(get_step(ctx, reads.gets))
    steps += [
        plain_search_step(ctx, group[0].op) if len(group) == 1 else grouped_search_step(ctx, group)
        for group in plain
    ]
    steps += [list_namespaces_step(ctx, lop) for _, lop in reads.lists]
    if vector_plans:
        assert ctx.spec is not None
        steps.append(search_settings_step(ctx.spec))
        steps += [vector_search_step(ctx, sp) for sp in vector_plans]
    if not steps:
        return
    # A lone read (the hot path: one get, one filter search) needs no pipeline.
    rows = iter([(yield steps[0])] if len(steps) == 1 else (yield steps))
    if reads.gets:
        get_results(ctx, reads.gets, next(rows), results)
    for group in plain:
        found = next(rows)
        pages = (
            [plain_search_results(ctx, found)]
            if len(group) == 1
            else grouped_search_results(ctx, group, found)
        )
        for sp, items in zip(group, pages, strict=True):
            results[sp.index] = items
            for idx in sp.copies:
                results[idx] = copy_items(items)
    for idx, _ in reads.lists:
        results[idx] = [tuple(r[0]) for r in next(rows)]
    if vector_plans:
        next(rows)  # the settings
    pending = [sp for sp in vector_plans if not vector_search_done(ctx, sp, next(rows))]
    while pending:
        assert ctx.spec is not None
        exact = any(sp.force_exact for sp in pending)
        again = yield [
            search_settings_step(ctx.spec, exact=exact),
            *(vector_search_step(ctx, sp) for sp in pending),
        ]
        pending = [
            sp
            for sp, r in zip(pending, again[1:], strict=True)
            if not vector_search_done(ctx, sp, r)
        ]
    short = [sp for sp in vector_plans if len(sp.scored) < sp.op.limit]
    fills: list[Any] = []
    if short:
        fills = yield [unscored_step(ctx, sp, sp.scored_total) for sp in short]
    filled = dict(zip(map(id, short), fills, strict=True))
    for sp in vector_plans:
        fill = filled.get(id(sp))
        results[sp.index] = items = sp.scored + (plain_search_results(ctx, fill) if fill else [])
        for idx in sp.copies:
            results[idx] = copy_items(items)


def batch_op(ctx: Context, plan: BatchPlan) -> Op[list[Result]]:
    """Reads first (they see the state before the batch's writes), then one write,
    then the reads that follow it (see :class:`BatchPlan`)."""
    yield from reads_op(ctx, plan.reads, plan.results)
    if plan.put is not None:
        plan.stage = "write"
        # The search settings ended with their round's (implicit) transaction.
        yield put_step(ctx, plan.put, indexed=ctx.spec is None or not ctx.spec.deferred)
    plan.stage = "after"
    yield from reads_op(ctx, plan.after, plan.results)
    plan.stage = "done"
    return plan.results


__all__ = ["BatchPlan", "Reads", "batch_op", "reads_op"]
