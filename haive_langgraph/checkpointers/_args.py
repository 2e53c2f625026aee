"""The checkpointer's arguments, checked (no I/O): configs, ids, filters.

Every public method checks what it is given here before anything is run, so
an error names the argument, never a database message.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointMetadata

from haive_langgraph.checkpointers._values import metadata_json
from haive_langgraph.db._limits import check_count, check_depth, check_text_id
from haive_langgraph.db._tenancy import has_lone_surrogate
from haive_langgraph.errors import ConfigurationError, SerializationError

PRUNE_STRATEGIES = ("keep_latest", "delete")

# A checkpoint id the time-travel API reads as "the thread's latest checkpoint"
# (as a config without checkpoint_id; LangGraph's ids are uuid6, never this).
LATEST = "latest"


def text_id(value: Any, what: str) -> str:
    """A thread id, namespace, tag or task id as text; what PostgreSQL cannot store is refused."""
    text = value if isinstance(value, str) else str(value)
    return check_text_id(text, what)  # the shared rule (db._limits)


def conf_of(config: object) -> Mapping[str, Any] | None:
    """``config["configurable"]``, or ``None`` if ``config`` has none."""
    conf = config.get("configurable") if isinstance(config, Mapping) else None
    return conf if isinstance(conf, Mapping) else None


def configurable(config: object) -> Mapping[str, Any]:
    """``config["configurable"]`` naming a thread, or an error saying so.

    LangGraph's ``InMemorySaver`` answers a config without them with a
    ``KeyError`` (``'configurable'``, ``'thread_id'``); ours names what is needed.
    """
    conf = conf_of(config)
    if conf is None or conf.get("thread_id") is None:
        missing = '"configurable"' if conf is None else 'configurable "thread_id"'
        raise ConfigurationError(
            'the config must name a thread, {"configurable": {"thread_id": ...}}; '
            f"it has no {missing}"
        )
    return conf


def checkpoint_id_in(conf: Mapping[str, Any]) -> str | None:
    """The checkpoint id a ``configurable`` names, checked as an id (``None`` if none).

    As LangGraph's ``get_checkpoint_id``: ``checkpoint_id``, else the legacy ``thread_ts``.
    """
    cid = conf.get("checkpoint_id", conf.get("thread_ts"))
    return None if cid is None else text_id(cid, "checkpoint_id")


def json_filter(value: Any, what: str) -> dict[str, Any] | None:
    """A metadata filter that PostgreSQL JSON can hold, or an error naming the bad part."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{what} must be a dict, got {type(value).__name__}")
    check_depth(value, what, error=ConfigurationError)

    def walk(item: Any, path: str) -> None:
        if isinstance(item, str):
            if "\x00" in item or has_lone_surrogate(item):
                raise ConfigurationError(
                    f"{what} {path} holds {item[:40]!r}, with a character PostgreSQL JSON "
                    "cannot store (NUL or a lone surrogate)"
                )
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ConfigurationError(f"{what} {path} is {item!r}: JSON has no such number")
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise ConfigurationError(f"{what} {path} has a non-string key {k!r}")
                walk(k, f"{path} key {k[:40]!r}")
                walk(v, f"{path}[{k[:40]!r}]")
        elif isinstance(item, list | tuple):
            for i, v in enumerate(item):
                walk(v, f"{path}[{i}]")
        elif item is not None and not isinstance(item, bool | int):
            raise ConfigurationError(
                f"{what} {path} holds a {type(item).__name__}; filters compare JSON values"
            )

    walk(value, "")
    return value


def target(config: RunnableConfig) -> tuple[str, str, str | None]:
    """(thread, namespace, checkpoint id or ``None``) that a read's ``config`` names."""
    conf = configurable(config)
    return (
        text_id(conf["thread_id"], "thread_id"),
        text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns"),
        checkpoint_id_in(conf),
    )


def list_args(
    config: RunnableConfig | None,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> dict[str, Any]:
    """Keyword arguments of ``list_op`` from ``list``'s."""
    conf = conf_of(config) or {}
    thread_id = conf.get("thread_id")
    ns = conf.get("checkpoint_ns")
    cid = conf.get("checkpoint_id")
    before_id = None
    if before:
        before_conf = conf_of(before)
        if before_conf is None:
            raise ConfigurationError(
                'before must be a checkpoint\'s config, {"configurable": {"checkpoint_id": '
                '...}}; it has no "configurable"'
            )
        before_id = checkpoint_id_in(before_conf)
    return {
        "thread_id": text_id(thread_id, "thread_id") if thread_id is not None else None,
        "checkpoint_ns": text_id(ns, "checkpoint_ns") if ns is not None else None,
        "checkpoint_id": text_id(cid, "checkpoint_id") if cid is not None else None,
        "filter": json_filter(filter, "filter"),
        "before_id": before_id,
        "limit": None if limit is None else check_count("limit", limit),
    }


def prune_args(thread_ids: Sequence[str], strategy: str) -> list[str]:
    """The thread ids of a delete or prune, checked with its strategy."""
    if isinstance(thread_ids, str):
        raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
    if strategy not in PRUNE_STRATEGIES:
        raise ValueError(
            f"unknown prune strategy {strategy!r}; use one of {', '.join(PRUNE_STRATEGIES)}"
        )
    return [text_id(t, "thread_id") for t in thread_ids]


def put_thread(config: RunnableConfig, metadata: CheckpointMetadata) -> str:
    """The thread a ``put`` writes to; its config and metadata checked before anything else.

    LangGraph's ``get_checkpoint_metadata`` strips NUL characters from the
    metadata's strings (which jsonb cannot store); they are refused instead,
    as a NUL anywhere else in metadata is, so that what a put accepts a read
    returns. (Values LangGraph copies from ``config["metadata"]`` and
    ``configurable`` are still stripped, as by its own savers.)
    """
    conf = configurable(config)
    thread_id = text_id(conf["thread_id"], "thread_id")
    text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns")
    checkpoint_id_in(conf)
    if not isinstance(metadata, Mapping):
        raise SerializationError(
            "checkpoint metadata must be a dict (LangGraph's CheckpointMetadata), "
            f"got {type(metadata).__name__}"
        )
    for value in metadata.values():
        if isinstance(value, str) and "\x00" in value:
            metadata_json(metadata)  # raises the documented error, naming the key
    return thread_id


def checkpoint_of(config: RunnableConfig, what: str) -> tuple[str, str, str]:
    """(thread, namespace, checkpoint id) of a config that must name a checkpoint."""
    conf = config.get("configurable", {})
    cid = conf.get("checkpoint_id")
    if "thread_id" not in conf or not cid:
        raise ConfigurationError(
            f"{what} needs a config naming a checkpoint: "
            '{"configurable": {"thread_id": ..., "checkpoint_id": ...}}'
        )
    return (
        text_id(conf["thread_id"], "thread_id"),
        text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns"),
        text_id(cid, "checkpoint_id"),
    )


def checkpoint_or_latest(
    config: RunnableConfig, what: str
) -> tuple[RunnableConfig, str, str | None]:
    """The config ``get_tuple`` reads for ``config``: the checkpoint it names, or
    the thread's latest when it names none (no ``checkpoint_id``, or ``"latest"``).

    Returns:
        That config, the thread id and the checkpoint id (``None`` for the latest).
    """
    conf = config.get("configurable", {}) if isinstance(config, Mapping) else {}
    if "thread_id" not in conf:
        raise ConfigurationError(
            f"{what} needs a config naming a thread: "
            '{"configurable": {"thread_id": ...}} for its latest checkpoint, with '
            '"checkpoint_id": ... for another one'
        )
    th = text_id(conf["thread_id"], "thread_id")
    ns = text_id(conf.get("checkpoint_ns", ""), "checkpoint_ns")
    raw = conf.get("checkpoint_id")
    cid = None if raw in (None, "", LATEST) else text_id(raw, "checkpoint_id")
    target: dict[str, Any] = {"thread_id": th, "checkpoint_ns": ns}
    if cid is not None:
        target["checkpoint_id"] = cid
    return {"configurable": target}, th, cid


def tag_names(tags: Sequence[str]) -> list[str]:
    """Tags as given to ``tag``/``find_checkpoints``: stripped, checked, sorted, unique."""
    if not tags or not all(isinstance(t, str) and t.strip() for t in tags):
        raise ConfigurationError("tags must be one or more non-empty strings")
    return sorted({text_id(t.strip(), "tag") for t in tags})


def branch_args(
    config: RunnableConfig, name: str, thread_id: str | None
) -> tuple[str, str | None, str]:
    """(thread, branch point or ``None`` for the latest, branch thread) of ``create_branch``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("a branch needs a non-empty name")
    text_id(name, "branch name")
    conf = config.get("configurable", {})
    if "thread_id" not in conf:
        raise ConfigurationError("create_branch needs a config with a thread_id")
    if conf.get("checkpoint_ns"):
        raise ConfigurationError(
            "branches start from a root-graph checkpoint, not from a subgraph's "
            f"(checkpoint_ns {conf['checkpoint_ns']!r})"
        )
    dst = text_id(thread_id, "thread_id") if thread_id else f"branch-{uuid.uuid4()}"
    point = conf.get("checkpoint_id")
    return (
        text_id(conf["thread_id"], "thread_id"),
        None if point in (None, "", LATEST) else text_id(point, "checkpoint_id"),
        dst,
    )
