"""Checkpoints as the time-travel commands name and print them.

A checkpoint is written ``THREAD@CHECKPOINT_ID`` (the last ``@`` separates
them, so a thread id may contain ``@`` when a checkpoint follows it). A bare
``THREAD`` means its latest checkpoint where that makes sense (``show``,
``diff``, ``tag``, ``untag``, ``branch``); ``restore`` needs a checkpoint.
Values print as one-line summaries in tables and as plain JSON with ``--json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from haive_langgraph.cli._common import usage
from haive_langgraph.errors import NotFoundError

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import CheckpointTuple

    from haive_langgraph.checkpointers import (
        CheckpointSummary,
        PostgresCheckpointer,
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


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """A checkpoint named on the command line: a thread and, optionally, a checkpoint id."""

    thread_id: str
    checkpoint_id: str | None = None

    @property
    def config(self) -> RunnableConfig:
        """The config LangGraph reads the checkpoint with."""
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
        usage(f"{what} {text!r} is malformed: expected {expected}")
    if need_checkpoint and not sep:
        usage(f"{what} {text!r} names no checkpoint: expected {expected}")
    if thread != thread.strip() or checkpoint != checkpoint.strip():
        usage(f"{what} {text!r} has spaces around its parts: expected {expected}")
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
        usage(f"{option} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        usage(f'{option} must be a JSON object such as \'{{"key": "value"}}\', got {text!r}')
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
        usage(
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


def pinned(saver: PostgresCheckpointer, ref: CheckpointRef) -> CheckpointRef:
    """``ref`` with its checkpoint id filled in (the latest for a bare thread)."""
    if ref.checkpoint_id:
        return ref
    tup = resolve(saver, ref)
    return CheckpointRef(ref.thread_id, str(tup.config["configurable"]["checkpoint_id"]))


def summary_of(
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


def is_message(value: Any) -> bool:
    """Whether ``value`` is a LangChain message."""
    from langchain_core.messages import BaseMessage

    return isinstance(value, BaseMessage)


def is_message_list(value: Any) -> bool:
    """Whether ``value`` is a non-empty list of LangChain messages."""
    return isinstance(value, list) and bool(value) and all(is_message(m) for m in value)


def message_line(message: Any, width: int = 60) -> str:
    """``type: first chars of the content`` of a message."""
    text = _content_text(message.content)
    calls = getattr(message, "tool_calls", None)
    if calls and not text:
        text = "calls " + ", ".join(str(c.get("name")) for c in calls)
    return f"{message.type}: {_clip(text, width)}"


def value_summary(value: Any, width: int = 60) -> str:
    """One line describing a channel value."""
    if is_message_list(value):
        if len(value) == 1:
            return f"1 message: {message_line(value[0], width)}"
        return f"{len(value)} messages, last {message_line(value[-1], width)}"
    if is_message(value):
        return message_line(value, width)
    if isinstance(value, Mapping) and any(
        is_message(v) or is_message_list(v) for v in value.values()
    ):
        inner = ", ".join(f"{k}: {value_summary(v, width)}" for k, v in value.items())
        return _clip("{" + inner + "}", width)
    return _clip(repr(value), width)


def visible(channel: str) -> bool:
    """Whether a channel is shown (LangGraph's bookkeeping channels are not)."""
    # ``branch:to:<node>`` channels are LangGraph's trigger bookkeeping.
    return not channel.startswith("branch:")


def channels_summary(values: Mapping[str, Any], width: int = 40) -> str:
    """``name=summary`` of every visible channel but ``messages``."""
    return ", ".join(
        f"{name}={value_summary(value, width)}"
        for name, value in sorted(values.items())
        if name != "messages" and visible(name)
    )


def to_json(value: Any) -> Any:
    """A JSON-compatible rendering of a stored value (messages as type/id/content)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if is_message(value):
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


def when(moment: dt.datetime) -> str:
    """A moment as ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def created_time(tup: CheckpointTuple, summary: CheckpointSummary | None) -> dt.datetime | None:
    """When a checkpoint was written (its summary's time, else its ``ts``)."""
    if summary is not None:
        return summary.created_at
    try:
        return dt.datetime.fromisoformat(str(tup.checkpoint["ts"]))
    except (KeyError, ValueError):
        return None


def id_of(config: RunnableConfig | None) -> str | None:
    """The checkpoint id a config names, if any."""
    if not config:
        return None
    cid = config["configurable"].get("checkpoint_id")
    return str(cid) if cid else None


def config_json(config: RunnableConfig) -> dict[str, Any]:
    """The thread, namespace and checkpoint id of a config, for JSON."""
    conf = config["configurable"]
    return {
        "thread_id": conf["thread_id"],
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
    }


def new_table(title: str, *columns: str, ids: Sequence[str] = ()) -> Table:
    """A table with these columns; those in ``ids`` hold whole checkpoint ids."""
    table = Table(title=title)
    for col in columns:
        if col in ids:
            table.add_column(col, no_wrap=True, min_width=36)
        else:
            table.add_column(col)
    return table


def add_row(table: Table, *cells: object) -> None:
    """Add a row of cells shown as plain text."""
    # Text cells: stored values may contain [brackets] rich would read as markup.
    table.add_row(*(c if isinstance(c, Text) else Text("" if c is None else str(c)) for c in cells))


def summary_json(s: CheckpointSummary) -> dict[str, Any]:
    """A ``find`` result as JSON."""
    return {
        "thread_id": s.config["configurable"]["thread_id"],
        "checkpoint_id": s.checkpoint_id,
        "parent_checkpoint_id": id_of(s.parent_config),
        "created_at": s.created_at.isoformat(),
        "step": s.metadata.get("step"),
        "source": s.metadata.get("source"),
        "tags": s.tags,
        "metadata": to_json(s.metadata),
    }
