"""Online migrations: one step at a time, data rewritten in batches, indexes built concurrently.

:func:`~haive_langgraph.db._migrations.migrate_op` applies everything in one
transaction: right for ``setup()`` on a new or small schema, wrong for a
migration that rewrites a large table (every row it touches stays locked
until the end) or builds an index on one (``CREATE INDEX`` blocks writes for
the whole build). :func:`online_migrate_op` runs on a connection in
autocommit mode and applies each pending migration on its own:

* a ``"transaction"`` migration: its statements and its record in one round
  (one implicit transaction);
* a ``"backfill"``: its statement again and again with ``LIMIT batch_size``,
  each batch its own transaction, until a batch touches no row, then its
  record. A crash between batches loses nothing: the statement changes only
  rows that still need it, so the next run continues where it stopped;
* a ``"concurrent"`` index: ``CREATE INDEX CONCURRENTLY`` outside any
  transaction, after dropping an invalid index of that name left by a build
  that failed (``IF NOT EXISTS`` would otherwise keep it).

It holds the migrations lock for the session (``pg_advisory_lock``, the key
``migrate_op`` takes per transaction), so no other runner or ``setup()``
applies migrations meanwhile; writers are not concerned by it. Nobody waits
for an online run, either: a session waiting for a lock holds a snapshot, and
``CREATE INDEX CONCURRENTLY`` waits for every such session, a deadlock. Another
online run is refused, and ``setup()`` returns at once when it has nothing to
apply, else is refused with a message (``LOCK_CLASS_ONLINE``).

Versions are per component (``checkpoints`` 5 and ``store`` 5 are unrelated);
a target names the components to stop, ``{"checkpoints": 3}``; the others
go to their latest version, but a component that ``requires`` a held one
stays where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from psycopg import sql

from haive_langgraph.db import _migrations_sql as SQL
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._migrations import (
    CONCURRENT_INDEX,
    LOCK_CLASS_ONLINE,
    Component,
    Migration,
    MigrationKind,
    Pending,
    bootstrap_steps,
    lock_step,
    partitions_op,
    pending_op,
    record_step,
)
from haive_langgraph.db._partitions import check_count, expand
from haive_langgraph.db._render import render, render_sql
from haive_langgraph.errors import MigrationError

DEFAULT_BATCH_SIZE = 1000
"""Rows per backfill batch: each batch locks this many rows until it commits."""


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    """Where an online migration is, as given to ``on_progress``.

    Attributes:
        step: The step's position in this run (1-based).
        steps: How many steps this run applies.
        component: The component of the migration.
        version: Its version.
        description: Its description.
        kind: ``"transaction"``, ``"backfill"`` or ``"concurrent"``.
        batches: Backfill batches committed so far (0 for other kinds).
        rows: Rows the backfill changed so far (0 for other kinds).
        done: The migration is applied and recorded.
    """

    step: int
    steps: int
    component: str
    version: int
    description: str
    kind: MigrationKind
    batches: int = 0
    rows: int = 0
    done: bool = False


ProgressCallback = Callable[[MigrationProgress], None]


def select_steps(
    pending: Pending, target: Mapping[str, int] | None
) -> list[tuple[Component, int, Migration]]:
    """The pending migrations up to ``target``, in order.

    Args:
        pending: What is not applied, per component (from ``pending_op``).
        target: ``{component: version}`` to stop at; components not named go
            to their latest version, except those that require a component
            held below its latest: they stay at their applied version.

    Raises:
        MigrationError: A target names an unknown component, a version that
            does not exist, or one older than the applied one (no downgrades).
    """
    target = dict(target or {})
    known = {c.name: (c, todo) for c, todo in pending}
    if unknown := sorted(set(target) - set(known)):
        raise MigrationError(f"unknown components {unknown} in the target; known: {sorted(known)}")
    steps = []
    held: set[str] = set()
    for component, todo in pending:
        applied = (todo[0][0] - 1) if todo else component.latest_version
        # A component that requires one held below its latest stays where it is:
        # its migrations may use what the held one's later versions create.
        default = applied if held.intersection(component.requires) else component.latest_version
        stop = target.get(component.name, default)
        if stop < component.latest_version:
            held.add(component.name)
        if not 0 <= stop <= component.latest_version:
            raise MigrationError(
                f"{component.name} has versions 1 to {component.latest_version}, not {stop}"
            )
        if stop < applied:
            raise MigrationError(
                f"{component.name} is at version {applied}, past the target {stop}: "
                "migrations are never undone"
            )
        steps += [(component, v, m) for v, m in todo if v <= stop]
    return steps


def online_migrate_op(
    components: Sequence[Component],
    schema: str,
    *,
    target: Mapping[str, int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
    partitions: int | None = None,
) -> Op[dict[str, list[int]]]:
    """Apply the pending migrations one by one; run it on an autocommit connection.

    Args:
        components: What to migrate, in dependency order.
        schema: Target schema.
        target: ``{component: version}`` to stop at (see :func:`select_steps`).
        batch_size: Rows per backfill batch.
        on_progress: Called after each backfill batch and each applied step.
        partitions: As for ``migrate_op``.

    Returns:
        The versions applied now, per component.

    Raises:
        MigrationError: As ``migrate_op``, or a bad target. An error leaves the
            steps before it applied; the caller closes the connection, which
            releases the session lock.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if partitions is not None:
        check_count(partitions)
    yield from _claim_op(schema)
    yield lock_step(schema, session=True)
    yield bootstrap_steps(schema)
    pending = yield from pending_op(components, schema, bootstrapped=True)
    steps = select_steps(pending, target)
    chosen = yield from partitions_op(pending, schema, partitions)
    applied: dict[str, list[int]] = {c.name: [] for c, _ in pending}
    for position, (component, version, migration) in enumerate(steps, start=1):
        progress = MigrationProgress(
            position, len(steps), component.name, version, migration.description, migration.kind
        )
        if migration.kind == "backfill":
            progress = yield from _backfill(migration, schema, batch_size, progress, on_progress)
            yield record_step(schema, component, version, migration)
        elif migration.kind == "concurrent":
            yield from _concurrent_index(migration, schema)
            yield record_step(schema, component, version, migration)
        else:
            yield [
                Step(render_sql(part, schema), fetch="none", prepare=False)
                for statement in migration.statements
                for part in expand(statement, component.partitioned, chosen)
            ] + [record_step(schema, component, version, migration)]
        applied[component.name].append(version)
        if on_progress is not None:
            on_progress(replace(progress, done=True))
    yield lock_step(schema, session=True, unlock=True)
    yield Step(SQL.UNLOCK_ONLINE, (LOCK_CLASS_ONLINE, schema), fetch="none")
    return applied


def _claim_op(schema: str) -> Op[None]:
    """Take the online-run lock of ``schema``, or refuse when another online run has it.

    Waiting would deadlock with that run's concurrent index builds (see
    ``LOCK_CLASS_ONLINE``); only one-transaction runners still at work are
    waited for (they hold it shared, and build no index concurrently).
    """
    key = (LOCK_CLASS_ONLINE, schema)
    got = yield Step(SQL.TRY_ONLINE, key, fetch="one")
    if got[0]:
        return
    holder = yield Step(SQL.ONLINE_HOLDER, key, fetch="one")
    if holder is not None:
        raise MigrationError(
            f"another online migration is running on schema {schema!r} (server process "
            f"{holder[0]}): wait for it to finish"
        )
    yield Step(SQL.WAIT_ONLINE, key, fetch="none")


def _backfill(
    migration: Migration,
    schema: str,
    batch_size: int,
    progress: MigrationProgress,
    on_progress: ProgressCallback | None,
) -> Op[MigrationProgress]:
    """Run the backfill statement, one committed batch at a time, until it touches no row."""
    statement = render(migration.statements[0], schema)
    while True:
        # Autocommit: each batch is its own transaction; its row locks end with it.
        touched = yield Step(statement, {"batch_size": batch_size}, fetch="rowcount")
        if not touched:
            return progress
        progress = replace(progress, batches=progress.batches + 1, rows=progress.rows + touched)
        if on_progress is not None:
            on_progress(progress)


def _concurrent_index(migration: Migration, schema: str) -> Op[None]:
    """Build the index without blocking writes (a partitioned table cannot: see below)."""
    match = CONCURRENT_INDEX.match(migration.statements[0])
    assert match is not None  # checked by Migration
    index, table = match.group(1), match.group(2)
    row = yield Step(SQL.INDEX_STATE, (f"{schema}.{table}", f"{schema}.{index}"), fetch="one")
    valid, relkind = row
    if valid is False:
        # A failed CONCURRENTLY build leaves an invalid index that IF NOT EXISTS would keep.
        drop = sql.SQL(SQL.DROP_INVALID_INDEX).format(
            schema=sql.Identifier(schema), index=sql.Identifier(index)
        )
        yield Step(drop, fetch="none")
    if relkind == "p":
        # PostgreSQL cannot build an index concurrently on a partitioned table;
        # it is built in one statement (SHARE lock on each partition).
        query, _ = migration.in_transaction(migration.statements[0])
        yield Step(render_sql(query, schema), fetch="none", prepare=False)
        return
    yield Step(render_sql(migration.statements[0], schema), fetch="none", prepare=False)


def check_target(components: Sequence[Component], target: Mapping[str, int] | None) -> None:
    """Refuse a target naming unknown components before connecting."""
    names = {c.name for c in components}
    if unknown := sorted(set(target or {}) - names):
        raise MigrationError(f"unknown components {unknown} in the target; known: {sorted(names)}")


def parse_target(values: Sequence[str]) -> dict[str, int]:
    """``["checkpoints:3", "store:2"]`` as ``{"checkpoints": 3, "store": 2}``.

    Raises:
        ValueError: A value is not ``component:version`` (with the reason).
    """
    target: dict[str, int] = {}
    for value in values:
        name, sep, version = value.partition(":")
        if not sep or not name or not version.strip().isdigit():
            raise ValueError(
                f"{value!r}: versions are per component, name one as COMPONENT:VERSION "
                "(e.g. checkpoints:3; `haive-lg migrate --plan` lists them)"
            )
        if name in target:
            raise ValueError(f"{name} is named twice")
        target[name.strip()] = int(version)
    return target
