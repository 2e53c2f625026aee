"""``haive-lg branch``, ``branches``, ``restore``, ``prune``: a thread's history
changed (branched, rewound, trimmed by a retention policy)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from haive_langgraph.cli._checkpoints import (
    CheckpointArg,
    RefArg,
    ThreadArg,
    add_row,
    id_of,
    new_table,
    parse_json_object,
    parse_ref,
    pinned,
    to_json,
    when,
)
from haive_langgraph.cli._common import SaverOptions, command, console, err, print_json, usage
from haive_langgraph.errors import ConfigurationError

if TYPE_CHECKING:
    from haive_langgraph.checkpointers import RetentionReport

commands = typer.Typer()


@commands.command("branch")
@command
def branch(
    checkpoint: RefArg,
    name: Annotated[str, typer.Argument(help="Name of the branch (unique in the thread).")],
    thread_id: Annotated[
        str | None,
        typer.Option("--thread-id", help="Thread id of the branch (default: branch-<uuid>)."),
    ] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", help="Metadata of the branch thread, as JSON.")
    ] = None,
    *,
    options: SaverOptions,
) -> None:
    """Branch a thread at a checkpoint; prints the branch's thread id.

    The branch shares the history up to that checkpoint (nothing is copied
    but the branch point) and continues on its own thread.
    """
    ref = parse_ref(checkpoint, what="CHECKPOINT")
    meta = parse_json_object(metadata, "--metadata")
    if not name.strip():
        usage("the branch NAME must be non-empty")
    if thread_id is not None and not thread_id.strip():
        usage("--thread-id must be non-empty")
    with options.saver() as saver:
        ref = pinned(saver, ref)
        config = saver.create_branch(ref.config, name, thread_id=thread_id, metadata=meta)
    conf = config["configurable"]
    if options.as_json:
        print_json(
            {
                "name": name,
                "thread_id": conf["thread_id"],
                "parent_thread_id": ref.thread_id,
                "branch_point": ref.checkpoint_id,
            }
        )
        return
    err.print(Text(f"branch {name!r} of {ref.thread_id} at {ref.checkpoint_id}; its thread id:"))
    print(conf["thread_id"])


@commands.command("branches")
@command
def branches(
    thread: ThreadArg,
    *,
    options: SaverOptions,
) -> None:
    """The named branches made from a thread, oldest first."""
    with options.saver() as saver:
        found = saver.list_branches(thread)
    if options.as_json:
        print_json(
            [
                {
                    "name": b.name,
                    "thread_id": b.thread_id,
                    "branch_point": id_of(b.branch_point),
                    "created_at": b.created_at.isoformat(),
                    "updated_at": b.updated_at.isoformat(),
                    "checkpoint_count": b.checkpoint_count,
                    "metadata": to_json(b.metadata),
                }
                for b in found
            ]
        )
        return
    table = new_table(
        f"Branches of {thread} ({len(found)})",
        "name",
        "thread",
        "branch point",
        "checkpoints",
        "updated (UTC)",
        ids=("branch point",),
    )
    for b in found:
        add_row(
            table,
            b.name,
            b.thread_id,
            id_of(b.branch_point),
            b.checkpoint_count,
            when(b.updated_at),
        )
    console.print(table)


@commands.command("restore")
@command
def restore(
    checkpoint: CheckpointArg,
    *,
    options: SaverOptions,
) -> None:
    """Make a past checkpoint the head of its thread again (history is kept).

    Its pending writes are not carried over: the tasks after it run again on
    the next ``invoke(None, ...)`` (an interrupt asks again).
    """
    ref = parse_ref(checkpoint, what="CHECKPOINT", need_checkpoint=True)
    with options.saver() as saver:
        head = saver.restore(ref.config)
    new_id = head["configurable"]["checkpoint_id"]
    if options.as_json:
        print_json(
            {
                "thread_id": ref.thread_id,
                "checkpoint_id": new_id,
                "restored_from": ref.checkpoint_id,
            }
        )
        return
    console.print(Text(f"restored {ref}: new head {ref.thread_id}@{new_id}"))


def _report_table(report: RetentionReport) -> Table:
    title = "Retention (dry run: nothing removed)" if report.dry_run else "Retention"
    table = new_table(title, "what", "would be removed" if report.dry_run else "removed")
    add_row(table, "threads deleted", report.threads_deleted)
    add_row(table, "threads trimmed", report.threads_trimmed)
    add_row(table, "checkpoints", report.checkpoints)
    add_row(table, "pending writes", report.writes)
    add_row(table, "stored values", report.blobs)
    add_row(table, "bytes of values", report.bytes)
    if report.skipped:
        add_row(table, "skipped (busy)", ", ".join(report.skipped))
    return table


@commands.command("prune")
@command
def prune(
    max_checkpoints: Annotated[
        int | None,
        typer.Option("--max-checkpoints", min=1, help="Newest checkpoints kept per thread."),
    ] = None,
    retention_days: Annotated[
        float | None,
        typer.Option("--retention-days", help="Remove checkpoints older than this many days."),
    ] = None,
    thread_ttl_days: Annotated[
        float | None,
        typer.Option("--thread-ttl-days", help="Delete threads not written for this many days."),
    ] = None,
    keep_minimum: Annotated[
        int, typer.Option("--keep-minimum", min=1, help="Newest checkpoints always kept.")
    ] = 1,
    keep_tagged: Annotated[
        bool, typer.Option("--keep-tagged/--no-keep-tagged", help="Keep tagged checkpoints.")
    ] = True,
    keep_failed: Annotated[
        bool,
        typer.Option(
            "--keep-failed/--no-keep-failed", help="Keep checkpoints that recorded an error."
        ),
    ] = True,
    threads: Annotated[
        list[str] | None,
        typer.Option("--thread", help="Only this thread (repeatable; default: all threads)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would go; change nothing.")
    ] = False,
    *,
    options: SaverOptions,
) -> None:
    """Apply a retention policy: remove old checkpoints (and threads) it does not keep.

    Tagged checkpoints, checkpoints that recorded a failure, the newest
    --keep-minimum and each thread's head are kept; branches keep the history
    they inherit.
    """
    from haive_langgraph.checkpointers import RetentionPolicy

    try:
        policy = RetentionPolicy(
            max_checkpoints_per_thread=max_checkpoints,
            retention_days=retention_days,
            keep_minimum=keep_minimum,
            keep_tagged=keep_tagged,
            keep_failed=keep_failed,
            thread_ttl=dt.timedelta(days=thread_ttl_days) if thread_ttl_days is not None else None,
        )
    except ConfigurationError as exc:
        hint = (
            " (give --max-checkpoints, --retention-days or --thread-ttl-days)"
            if "needs" in str(exc)
            else ""
        )
        usage(f"{exc}{hint}")
    with options.saver() as saver:
        report = saver.apply_retention(policy, dry_run=dry_run, thread_ids=threads or None)
    if options.as_json:
        print_json(report.as_dict())
        return
    console.print(_report_table(report))
