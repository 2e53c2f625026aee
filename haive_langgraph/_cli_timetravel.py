"""``haive-lg`` time-travel commands: history, show, diff, tag, find, branches, restore, prune.

A checkpoint is written ``THREAD@CHECKPOINT_ID`` (the last ``@`` separates
them, so a thread id may contain ``@`` when a checkpoint follows it). A bare
``THREAD`` means its latest checkpoint where that makes sense (``show``,
``diff``, ``tag``, ``untag``, ``branch``); ``restore`` needs a checkpoint.

Importing this module adds the commands to :data:`haive_langgraph.cli.app`
(``cli.py`` imports it at its end).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from haive_langgraph.cli import (
    DsnOption,
    JsonOption,
    SchemaOption,
    TenantOption,
    _fail,
    _saver,
    app,
    console,
    err,
    handled,
)
from haive_langgraph.errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import CheckpointTuple

    from haive_langgraph.checkpointers import (
        CheckpointDiff,
        CheckpointSummary,
        PostgresCheckpointer,
        RetentionReport,
    )

REF_FORMAT = "THREAD@CHECKPOINT_ID"

ThreadArg = Annotated[str, typer.Argument(help="Thread id.", show_default=False)]
RefArg = Annotated[
    str,
    typer.Argument(
        help="THREAD@CHECKPOINT_ID, or THREAD for its latest checkpoint.", show_default=False
    ),
]
CheckpointArg = Annotated[
    str, typer.Argument(help="THREAD@CHECKPOINT_ID.", show_default=False, metavar="THREAD@CP")
]
TagsArg = Annotated[list[str], typer.Argument(help="One or more tags.", show_default=False)]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Most results to show.")]


# -- arguments ------------------------------------------------------------------------


def _usage(message: str) -> NoReturn:
    """Exit with code 2 (bad usage) and a one-line message."""
    _fail(message, 2)
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """A checkpoint named on the command line: a thread and, optionally, a checkpoint id."""

    thread_id: str
    checkpoint_id: str | None = None

    @property
    def config(self) -> RunnableConfig:
        conf: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": ""}
        if self.checkpoint_id:
            conf["checkpoint_id"] = self.checkpoint_id
        return {"configurable": conf}

    def __str__(self) -> str:
        return f"{self.thread_id}@{self.checkpoint_id}" if self.checkpoint_id else self.thread_id


def parse_ref(text: str, *, what: str, need_checkpoint: bool = False) -> CheckpointRef:
    """``THREAD@CHECKPOINT_ID`` (or a bare ``THREAD`` unless ``need_checkpoint``).

    Exits with code 2 and a message naming ``what`` when ``text`` is malformed.
    """
    thread, sep, checkpoint = text.rpartition("@")
    if not sep:
        thread, checkpoint = text, ""
    expected = REF_FORMAT if need_checkpoint else f"{REF_FORMAT} or THREAD"
    if not thread.strip() or (sep and not checkpoint.strip()):
        _usage(f"{what} {text!r} is malformed: expected {expected}")
    if need_checkpoint and not sep:
        _usage(f"{what} {text!r} names no checkpoint: expected {expected}")
    if thread != thread.strip() or checkpoint != checkpoint.strip():
        _usage(f"{what} {text!r} has spaces around its parts: expected {expected}")
    if checkpoint == "latest" and not need_checkpoint:
        checkpoint = ""  # THREAD@latest: as a bare THREAD
    return CheckpointRef(thread, checkpoint or None)


def parse_json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object given to ``option``; exits with code 2 if it is not one."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _usage(f"{option} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _usage(f'{option} must be a JSON object such as \'{{"key": "value"}}\', got {text!r}')
    return value


def parse_bound(text: str | None, option: str) -> dt.datetime | RunnableConfig | None:
    """An ISO datetime (naive means UTC) or a ``THREAD@CHECKPOINT_ID``, for ``--before``/``--after``."""
    if text is None:
        return None
    if "@" in text:
        return parse_ref(text, what=option, need_checkpoint=True).config
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        _usage(
            f"{option} {text!r} is neither an ISO date/time (2025-01-31T12:00:00+00:00) "
            f"nor {REF_FORMAT}"
        )
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def resolve(saver: PostgresCheckpointer, ref: CheckpointRef) -> CheckpointTuple:
    """The checkpoint ``ref`` names (a thread's latest for a bare thread).

    Raises:
        NotFoundError: No such checkpoint, or the thread has none.
    """
    tup = saver.get_tuple(ref.config)
    if tup is None:
        if ref.checkpoint_id:
            raise NotFoundError(
                f"checkpoint {ref.checkpoint_id} not found in thread {ref.thread_id!r}"
            )
        raise NotFoundError(f"thread {ref.thread_id!r} has no checkpoints")
    return tup


def _pinned(saver: PostgresCheckpointer, ref: CheckpointRef) -> CheckpointRef:
    """``ref`` with its checkpoint id filled in (the latest for a bare thread)."""
    if ref.checkpoint_id:
        return ref
    tup = resolve(saver, ref)
    return CheckpointRef(ref.thread_id, str(tup.config["configurable"]["checkpoint_id"]))


def _summary_of(
    saver: PostgresCheckpointer, thread_id: str, checkpoint_id: str, parent: RunnableConfig | None
) -> CheckpointSummary | None:
    """The find summary (tags, created time) of one checkpoint."""
    found = saver.find_checkpoints(thread_id, after=parent)
    return next((s for s in found if s.checkpoint_id == checkpoint_id), None)


# -- values as text and as JSON -----------------------------------------------------------


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p if isinstance(p, str) else str(p.get("text", f"<{p.get('type', 'part')}>"))
            for p in content
            if isinstance(p, str | dict)
        ]
        return " ".join(parts)
    return repr(content)


def _is_message(value: Any) -> bool:
    from langchain_core.messages import BaseMessage

    return isinstance(value, BaseMessage)


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_message(m) for m in value)


def message_line(message: Any, width: int = 60) -> str:
    """``type: first chars of the content`` of a message."""
    text = _content_text(message.content)
    calls = getattr(message, "tool_calls", None)
    if calls and not text:
        text = "calls " + ", ".join(str(c.get("name")) for c in calls)
    return f"{message.type}: {_clip(text, width)}"


def value_summary(value: Any, width: int = 60) -> str:
    """One line describing a channel value."""
    if _is_message_list(value):
        if len(value) == 1:
            return f"1 message: {message_line(value[0], width)}"
        return f"{len(value)} messages, last {message_line(value[-1], width)}"
    if _is_message(value):
        return message_line(value, width)
    if isinstance(value, Mapping) and any(
        _is_message(v) or _is_message_list(v) for v in value.values()
    ):
        inner = ", ".join(f"{k}: {value_summary(v, width)}" for k, v in value.items())
        return _clip("{" + inner + "}", width)
    return _clip(repr(value), width)


def _visible(channel: str) -> bool:
    # ``branch:to:<node>`` channels are LangGraph's trigger bookkeeping.
    return not channel.startswith("branch:")


def channels_summary(values: Mapping[str, Any], width: int = 40) -> str:
    """``name=summary`` of every visible channel but ``messages``."""
    return ", ".join(
        f"{name}={value_summary(value, width)}"
        for name, value in sorted(values.items())
        if name != "messages" and _visible(name)
    )


def to_json(value: Any) -> Any:
    """A JSON-compatible rendering of a stored value (messages as type/id/content)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if _is_message(value):
        out: dict[str, Any] = {
            "type": value.type,
            "id": value.id,
            "content": to_json(value.content),
        }
        if getattr(value, "tool_calls", None):
            out["tool_calls"] = to_json(value.tool_calls)
        if getattr(value, "tool_call_id", None):
            out["tool_call_id"] = value.tool_call_id
        return out
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_json(dump(mode="json"))
        except Exception:  # not every model is JSON-dumpable; fall back to repr
            pass
    return repr(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def _created(tup: CheckpointTuple, summary: CheckpointSummary | None) -> dt.datetime | None:
    if summary is not None:
        return summary.created_at
    try:
        return dt.datetime.fromisoformat(str(tup.checkpoint["ts"]))
    except (KeyError, ValueError):
        return None


def _id_of(config: RunnableConfig | None) -> str | None:
    if not config:
        return None
    cid = config["configurable"].get("checkpoint_id")
    return str(cid) if cid else None


def _config_json(config: RunnableConfig) -> dict[str, Any]:
    conf = config["configurable"]
    return {
        "thread_id": conf["thread_id"],
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
    }


def _table(title: str, *columns: str, ids: Sequence[str] = ()) -> Table:
    table = Table(title=title)
    for col in columns:
        if col in ids:
            table.add_column(col, no_wrap=True, min_width=36)
        else:
            table.add_column(col)
    return table


def _row(table: Table, *cells: object) -> None:
    # Text cells: stored values may contain [brackets] rich would read as markup.
    table.add_row(*(c if isinstance(c, Text) else Text("" if c is None else str(c)) for c in cells))


def _summary_json(s: CheckpointSummary) -> dict[str, Any]:
    return {
        "thread_id": s.config["configurable"]["thread_id"],
        "checkpoint_id": s.checkpoint_id,
        "parent_checkpoint_id": _id_of(s.parent_config),
        "created_at": s.created_at.isoformat(),
        "step": s.metadata.get("step"),
        "source": s.metadata.get("source"),
        "tags": s.tags,
        "metadata": to_json(s.metadata),
    }


# -- commands ---------------------------------------------------------------------------


@app.command("history")
@handled
def history(
    thread: ThreadArg,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most checkpoints to show.")] = 50,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """A thread's checkpoints, newest first (a branch includes the history it inherits)."""
    with _saver(dsn, schema, tenant) as saver:
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
        created = _created(tup, summary)
        rows.append(
            {
                "thread_id": tup.config["configurable"]["thread_id"],
                "checkpoint_id": cid,
                "parent_checkpoint_id": _id_of(tup.parent_config),
                "step": tup.metadata.get("step"),
                "source": tup.metadata.get("source"),
                "created_at": created.isoformat() if created else None,
                "tags": summary.tags if summary else [],
                "messages": len(messages) if isinstance(messages, list) else None,
                "channels": {
                    name: value_summary(value)
                    for name, value in sorted(values.items())
                    if name != "messages" and _visible(name)
                },
                "pending_writes": len(tup.pending_writes or []),
                "restored_from": tup.metadata.get("restored_from"),
            }
        )
    if as_json:
        _print_json(rows)
        return
    table = _table(
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
        created = _created(tup, summaries.get(row["checkpoint_id"]))
        source = str(row["source"] or "")
        if row["restored_from"]:
            source += " (restore)"
        _row(
            table,
            row["step"],
            source,
            row["checkpoint_id"],
            _when(created) if created else "",
            ", ".join(row["tags"]),
            "" if row["messages"] is None else row["messages"],
            channels_summary(tup.checkpoint["channel_values"]),
        )
    console.print(table)


@app.command("show")
@handled
def show(
    checkpoint: RefArg,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """One checkpoint: metadata, tags, parent, channel values and pending writes."""
    ref = parse_ref(checkpoint, what="CHECKPOINT")
    with _saver(dsn, schema, tenant) as saver:
        tup = resolve(saver, ref)
        cid = str(tup.config["configurable"]["checkpoint_id"])
        summary = _summary_of(saver, ref.thread_id, cid, tup.parent_config)
    created = _created(tup, summary)
    values = tup.checkpoint["channel_values"]
    writes = list(tup.pending_writes or [])
    if as_json:
        _print_json(
            {
                **_config_json(tup.config),
                "parent_checkpoint_id": _id_of(tup.parent_config),
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
    head.append(f"parent      {_id_of(tup.parent_config) or '-'}\n")
    head.append(f"created     {_when(created) + ' UTC' if created else '-'}\n")
    head.append(f"tags        {', '.join(summary.tags) if summary and summary.tags else '-'}")
    console.print(head)
    meta = _table("Metadata", "key", "value")
    for key, value in sorted(tup.metadata.items()):
        _row(meta, key, json.dumps(to_json(value), ensure_ascii=False))
    console.print(meta)
    chans = _table("Channel values", "channel", "value")
    for name, value in sorted(values.items()):
        if _is_message_list(value):
            lines = [f"{i}. {message_line(m)}" for i, m in enumerate(value)]
            _row(chans, name, "\n".join(lines))
        else:
            _row(chans, name, value_summary(value, 100))
    console.print(chans)
    if writes:
        pending = _table("Pending writes", "task", "channel", "value")
        for task, channel, value in writes:
            _row(pending, task, channel, value_summary(value))
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
        "a": _config_json(result.a),
        "b": _config_json(result.b),
        "same_thread": result.same_thread,
        "changes": changes,
    }


_DIFF_STYLES = {"+": "green", "-": "red", "~": "yellow"}


@app.command("diff")
@handled
def diff(
    a: Annotated[str, typer.Argument(help="First checkpoint: THREAD@CHECKPOINT_ID or THREAD.")],
    b: Annotated[str, typer.Argument(help="Second checkpoint: THREAD@CHECKPOINT_ID or THREAD.")],
    internal: Annotated[
        bool,
        typer.Option(
            "--internal", help="Also compare LangGraph's channels (__start__, branch:to:...)."
        ),
    ] = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """What changed from checkpoint A to checkpoint B, per channel (messages by id).

    In JSON, a message channel lists its added/removed/edited messages; other
    channels give their values before and after. LangGraph's bookkeeping
    channels are compared only with --internal.
    """
    ref_a, ref_b = parse_ref(a, what="A"), parse_ref(b, what="B")
    with _saver(dsn, schema, tenant) as saver:
        result = saver.diff(ref_a.config, ref_b.config, include_internal=internal)
    if as_json:
        _print_json(_diff_json(result))
        return
    for i, line in enumerate(str(result).splitlines()):
        style = "bold" if i == 0 else _DIFF_STYLES.get(line.lstrip()[:1], "")
        console.print(Text(line, style=style))


def _tag_command(
    checkpoint: str,
    tags: list[str],
    *,
    remove: bool,
    dsn: str | None,
    schema: str | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    ref = parse_ref(checkpoint, what="CHECKPOINT")
    if any(not t.strip() for t in tags):
        _usage("tags must be non-empty")
    with _saver(dsn, schema, tenant) as saver:
        ref = _pinned(saver, ref)
        if remove:
            saver.untag(ref.config, *tags)
        else:
            saver.tag(ref.config, *tags)
        tup = resolve(saver, ref)
        assert ref.checkpoint_id is not None
        summary = _summary_of(saver, ref.thread_id, ref.checkpoint_id, tup.parent_config)
    now = summary.tags if summary else []
    if as_json:
        _print_json({"thread_id": ref.thread_id, "checkpoint_id": ref.checkpoint_id, "tags": now})
        return
    verb = "untagged" if remove else "tagged"
    console.print(
        Text(
            f"{verb} {ref}: {', '.join(sorted(set(tags)))}; its tags now: "
            f"{', '.join(now) if now else '(none)'}"
        )
    )


@app.command("tag")
@handled
def tag(
    checkpoint: RefArg,
    tags: TagsArg,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tag a checkpoint (retention keeps tagged checkpoints by default)."""
    _tag_command(
        checkpoint, tags, remove=False, dsn=dsn, schema=schema, tenant=tenant, as_json=as_json
    )


@app.command("untag")
@handled
def untag(
    checkpoint: RefArg,
    tags: TagsArg,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove tags from a checkpoint."""
    _tag_command(
        checkpoint, tags, remove=True, dsn=dsn, schema=schema, tenant=tenant, as_json=as_json
    )


@app.command("find")
@handled
def find(
    thread: ThreadArg,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="A tag every result carries (repeatable)."),
    ] = None,
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
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Checkpoints of a thread matching every condition given, newest first."""
    meta = parse_json_object(metadata, "--metadata")
    state_matching = parse_json_object(state, "--state")
    older, newer = parse_bound(before, "--before"), parse_bound(after, "--after")
    if tag and any(not t.strip() for t in tag):
        _usage("--tag must be non-empty")
    with _saver(dsn, schema, tenant) as saver:
        found = saver.find_checkpoints(
            thread,
            tags=tag or None,
            metadata=meta,
            state_matching=state_matching,
            before=older,
            after=newer,
            limit=limit,
        )
    if as_json:
        _print_json([_summary_json(s) for s in found])
        return
    table = _table(
        f"Checkpoints of {thread} found ({len(found)})",
        "step",
        "source",
        "checkpoint",
        "created (UTC)",
        "tags",
        ids=("checkpoint",),
    )
    for s in found:
        _row(
            table,
            s.metadata.get("step"),
            s.metadata.get("source"),
            s.checkpoint_id,
            _when(s.created_at),
            ", ".join(s.tags),
        )
    console.print(table)


@app.command("branch")
@handled
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
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Branch a thread at a checkpoint; prints the branch's thread id.

    The branch shares the history up to that checkpoint (nothing is copied
    but the branch point) and continues on its own thread.
    """
    ref = parse_ref(checkpoint, what="CHECKPOINT")
    meta = parse_json_object(metadata, "--metadata")
    if not name.strip():
        _usage("the branch NAME must be non-empty")
    if thread_id is not None and not thread_id.strip():
        _usage("--thread-id must be non-empty")
    with _saver(dsn, schema, tenant) as saver:
        ref = _pinned(saver, ref)
        config = saver.create_branch(ref.config, name, thread_id=thread_id, metadata=meta)
    conf = config["configurable"]
    if as_json:
        _print_json(
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


@app.command("branches")
@handled
def branches(
    thread: ThreadArg,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """The named branches made from a thread, oldest first."""
    with _saver(dsn, schema, tenant) as saver:
        found = saver.list_branches(thread)
    if as_json:
        _print_json(
            [
                {
                    "name": b.name,
                    "thread_id": b.thread_id,
                    "branch_point": _id_of(b.branch_point),
                    "created_at": b.created_at.isoformat(),
                    "updated_at": b.updated_at.isoformat(),
                    "checkpoint_count": b.checkpoint_count,
                    "metadata": to_json(b.metadata),
                }
                for b in found
            ]
        )
        return
    table = _table(
        f"Branches of {thread} ({len(found)})",
        "name",
        "thread",
        "branch point",
        "checkpoints",
        "updated (UTC)",
        ids=("branch point",),
    )
    for b in found:
        _row(
            table,
            b.name,
            b.thread_id,
            _id_of(b.branch_point),
            b.checkpoint_count,
            _when(b.updated_at),
        )
    console.print(table)


@app.command("restore")
@handled
def restore(
    checkpoint: CheckpointArg,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a past checkpoint the head of its thread again (history is kept).

    Its pending writes are not carried over: the tasks after it run again on
    the next ``invoke(None, ...)`` (an interrupt asks again).
    """
    ref = parse_ref(checkpoint, what="CHECKPOINT", need_checkpoint=True)
    with _saver(dsn, schema, tenant) as saver:
        head = saver.restore(ref.config)
    new_id = head["configurable"]["checkpoint_id"]
    if as_json:
        _print_json(
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
    table = _table(title, "what", "would be removed" if report.dry_run else "removed")
    _row(table, "threads deleted", report.threads_deleted)
    _row(table, "threads trimmed", report.threads_trimmed)
    _row(table, "checkpoints", report.checkpoints)
    _row(table, "pending writes", report.writes)
    _row(table, "stored values", report.blobs)
    _row(table, "bytes of values", report.bytes)
    if report.skipped:
        _row(table, "skipped (busy)", ", ".join(report.skipped))
    return table


@app.command("prune")
@handled
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
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
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
        _usage(f"{exc}{hint}")
    with _saver(dsn, schema, tenant) as saver:
        report = saver.apply_retention(policy, dry_run=dry_run, thread_ids=threads or None)
    if as_json:
        _print_json(report.as_dict())
        return
    console.print(_report_table(report))
