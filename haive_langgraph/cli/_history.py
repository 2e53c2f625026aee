"""``haive-lg history``, ``show``, ``diff``, ``tag``, ``untag``, ``find``: reading a
thread's checkpoints and tagging them (see :mod:`._checkpoints` for how a
checkpoint is named on the command line)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from haive_langgraph.cli._checkpoints import (
    LimitOption,
    RefArg,
    TagsArg,
    ThreadArg,
    add_row,
    channels_summary,
    config_json,
    created_time,
    id_of,
    is_message_list,
    message_line,
    new_table,
    parse_bound,
    parse_json_object,
    parse_ref,
    pinned,
    resolve,
    summary_json,
    summary_of,
    to_json,
    value_summary,
    visible,
    when,
)
from haive_langgraph.cli._common import (
    SaverOptions,
    command,
    console,
    print_json,
    repeatable,
    usage,
)
from haive_langgraph.errors import NotFoundError

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from haive_langgraph.checkpointers import CheckpointDiff

commands = typer.Typer()


@commands.command("history")
@command
def history(
    thread: ThreadArg,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most checkpoints to show.")] = 50,
    *,
    options: SaverOptions,
) -> None:
    """A thread's checkpoints, newest first (a branch includes the history it inherits)."""
    with options.saver() as saver:
        config: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        tuples = list(saver.list(config, limit=limit))
        if not tuples:
            raise NotFoundError(f"thread {thread!r} has no checkpoints")
        summaries = {s.checkpoint_id: s for s in saver.find_checkpoints(thread, limit=limit)}
    rows = []
    for tup in tuples:
        cid = str(tup.config["configurable"]["checkpoint_id"])
        summary = summaries.get(cid)
        values = tup.checkpoint["channel_values"]
        messages = values.get("messages")
        created = created_time(tup, summary)
        rows.append(
            {
                "thread_id": tup.config["configurable"]["thread_id"],
                "checkpoint_id": cid,
                "parent_checkpoint_id": id_of(tup.parent_config),
                "step": tup.metadata.get("step"),
                "source": tup.metadata.get("source"),
                "created_at": created.isoformat() if created else None,
                "tags": summary.tags if summary else [],
                "messages": len(messages) if isinstance(messages, list) else None,
                "channels": {
                    name: value_summary(value)
                    for name, value in sorted(values.items())
                    if name != "messages" and visible(name)
                },
                "pending_writes": len(tup.pending_writes or []),
                "restored_from": tup.metadata.get("restored_from"),
            }
        )
    if options.as_json:
        print_json(rows)
        return
    table = new_table(
        f"History of {thread} (newest first)",
        "step",
        "source",
        "checkpoint",
        "created (UTC)",
        "tags",
        "msgs",
        "channels",
        ids=("checkpoint",),
    )
    for row, tup in zip(rows, tuples, strict=True):
        created = created_time(tup, summaries.get(row["checkpoint_id"]))
        source = str(row["source"] or "")
        if row["restored_from"]:
            source += " (restore)"
        add_row(
            table,
            row["step"],
            source,
            row["checkpoint_id"],
            when(created) if created else "",
            ", ".join(row["tags"]),
            "" if row["messages"] is None else row["messages"],
            channels_summary(tup.checkpoint["channel_values"]),
        )
    console.print(table)


@commands.command("show")
@command
def show(
    checkpoint: RefArg,
    *,
    options: SaverOptions,
) -> None:
    """One checkpoint: metadata, tags, parent, channel values and pending writes."""
    ref = parse_ref(checkpoint, what="CHECKPOINT")
    with options.saver() as saver:
        tup = resolve(saver, ref)
        cid = str(tup.config["configurable"]["checkpoint_id"])
        summary = summary_of(saver, ref.thread_id, cid, tup.parent_config)
    created = created_time(tup, summary)
    values = tup.checkpoint["channel_values"]
    writes = list(tup.pending_writes or [])
    if options.as_json:
        print_json(
            {
                **config_json(tup.config),
                "parent_checkpoint_id": id_of(tup.parent_config),
                "created_at": created.isoformat() if created else None,
                "metadata": to_json(tup.metadata),
                "tags": summary.tags if summary else [],
                "channels": {name: to_json(value) for name, value in sorted(values.items())},
                "pending_writes": [
                    {"task_id": task, "channel": channel, "value": to_json(value)}
                    for task, channel, value in writes
                ],
            }
        )
        return
    head = Text()
    head.append("checkpoint ", style="bold")
    head.append(f"{ref.thread_id}@{cid}\n", style="cyan")
    head.append(f"parent      {id_of(tup.parent_config) or '-'}\n")
    head.append(f"created     {when(created) + ' UTC' if created else '-'}\n")
    head.append(f"tags        {', '.join(summary.tags) if summary and summary.tags else '-'}")
    console.print(head)
    meta = new_table("Metadata", "key", "value")
    for key, value in sorted(tup.metadata.items()):
        add_row(meta, key, json.dumps(to_json(value), ensure_ascii=False))
    console.print(meta)
    chans = new_table("Channel values", "channel", "value")
    for name, value in sorted(values.items()):
        if is_message_list(value):
            lines = [f"{i}. {message_line(m)}" for i, m in enumerate(value)]
            add_row(chans, name, "\n".join(lines))
        else:
            add_row(chans, name, value_summary(value, 100))
    console.print(chans)
    if writes:
        pending = new_table("Pending writes", "task", "channel", "value")
        for task, channel, value in writes:
            add_row(pending, task, channel, value_summary(value))
        console.print(pending)
    else:
        console.print("no pending writes")


def _diff_json(result: CheckpointDiff) -> dict[str, Any]:
    changes = []
    for change in result.changes:
        item: dict[str, Any] = {"channel": change.channel, "kind": change.kind}
        if change.messages is None:
            item["before"] = to_json(change.before)
            item["after"] = to_json(change.after)
        else:
            m = change.messages
            item["messages"] = {
                "added": to_json(m.added),
                "removed": to_json(m.removed),
                "edited": [{"before": to_json(x), "after": to_json(y)} for x, y in m.edited],
            }
        changes.append(item)
    return {
        "a": config_json(result.a),
        "b": config_json(result.b),
        "same_thread": result.same_thread,
        "changes": changes,
    }


_DIFF_STYLES = {"+": "green", "-": "red", "~": "yellow"}


@commands.command("diff")
@command
def diff(
    a: Annotated[str, typer.Argument(help="First checkpoint: THREAD@CHECKPOINT_ID or THREAD.")],
    b: Annotated[str, typer.Argument(help="Second checkpoint: THREAD@CHECKPOINT_ID or THREAD.")],
    internal: Annotated[
        bool,
        typer.Option(
            "--internal", help="Also compare LangGraph's channels (__start__, branch:to:...)."
        ),
    ] = False,
    *,
    options: SaverOptions,
) -> None:
    """What changed from checkpoint A to checkpoint B, per channel (messages by id).

    In JSON, a message channel lists its added/removed/edited messages; other
    channels give their values before and after. LangGraph's bookkeeping
    channels are compared only with --internal.
    """
    ref_a, ref_b = parse_ref(a, what="A"), parse_ref(b, what="B")
    with options.saver() as saver:
        result = saver.diff(ref_a.config, ref_b.config, include_internal=internal)
    if options.as_json:
        print_json(_diff_json(result))
        return
    for i, line in enumerate(str(result).splitlines()):
        style = "bold" if i == 0 else _DIFF_STYLES.get(line.lstrip()[:1], "")
        console.print(Text(line, style=style))


def _tag_command(
    checkpoint: str,
    tags: list[str],
    *,
    remove: bool,
    options: SaverOptions,
) -> None:
    """``tag`` and ``untag``: change a checkpoint's tags, print what it carries now."""
    ref = parse_ref(checkpoint, what="CHECKPOINT")
    if any(not t.strip() for t in tags):
        usage("tags must be non-empty")
    with options.saver() as saver:
        ref = pinned(saver, ref)
        if remove:
            saver.untag(ref.config, *tags)
        else:
            saver.tag(ref.config, *tags)
        tup = resolve(saver, ref)
        assert ref.checkpoint_id is not None
        summary = summary_of(saver, ref.thread_id, ref.checkpoint_id, tup.parent_config)
    now = summary.tags if summary else []
    if options.as_json:
        print_json({"thread_id": ref.thread_id, "checkpoint_id": ref.checkpoint_id, "tags": now})
        return
    verb = "untagged" if remove else "tagged"
    console.print(
        Text(
            f"{verb} {ref}: {', '.join(sorted(set(tags)))}; its tags now: "
            f"{', '.join(now) if now else '(none)'}"
        )
    )


@commands.command("tag")
@command
def tag(
    checkpoint: RefArg,
    tags: TagsArg,
    *,
    options: SaverOptions,
) -> None:
    """Tag a checkpoint (retention keeps tagged checkpoints by default)."""
    _tag_command(checkpoint, tags, remove=False, options=options)


@commands.command("untag")
@command
def untag(
    checkpoint: RefArg,
    tags: TagsArg,
    *,
    options: SaverOptions,
) -> None:
    """Remove tags from a checkpoint."""
    _tag_command(checkpoint, tags, remove=True, options=options)


@commands.command("find")
@command
def find(
    thread: ThreadArg,
    tag: Annotated[list[str] | None, repeatable("--tag", "A tag every result carries")] = None,
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", help='Metadata to contain, as JSON: {"source": "input"}.'),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help='Channel values to match, as JSON: {"status": "done"}.'),
    ] = None,
    before: Annotated[
        str | None,
        typer.Option(
            "--before", help="Older than an ISO time (naive = UTC) or THREAD@CHECKPOINT_ID."
        ),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            "--after", help="Newer than an ISO time (naive = UTC) or THREAD@CHECKPOINT_ID."
        ),
    ] = None,
    limit: LimitOption = None,
    *,
    options: SaverOptions,
) -> None:
    """Checkpoints of a thread matching every condition given, newest first."""
    meta = parse_json_object(metadata, "--metadata")
    state_matching = parse_json_object(state, "--state")
    older, newer = parse_bound(before, "--before"), parse_bound(after, "--after")
    if tag and any(not t.strip() for t in tag):
        usage("--tag must be non-empty")
    with options.saver() as saver:
        found = saver.find_checkpoints(
            thread,
            tags=tag or None,
            metadata=meta,
            state_matching=state_matching,
            before=older,
            after=newer,
            limit=limit,
        )
    if options.as_json:
        print_json([summary_json(s) for s in found])
        return
    table = new_table(
        f"Checkpoints of {thread} found ({len(found)})",
        "step",
        "source",
        "checkpoint",
        "created (UTC)",
        "tags",
        ids=("checkpoint",),
    )
    for s in found:
        add_row(
            table,
            s.metadata.get("step"),
            s.metadata.get("source"),
            s.checkpoint_id,
            when(s.created_at),
            ", ".join(s.tags),
        )
    console.print(table)
