"""Invariants the scenarios check after faults: what was committed loads, nothing is partial.

Two kinds of checks:

* through the public API (a fresh saver, so every value is decoded from its
  rows): every acknowledged checkpoint loads with the messages it was written
  with, every acknowledged pending write is there, ``get_state_history`` is a
  closed chain;
* on the rows (as the database owner): no checkpoint or write refers to a
  value that is not stored, no list is shorter than a checkpoint says, and
  the thread registry counts exactly the checkpoints there are.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig

from haive_langgraph._demo import reply_text
from haive_langgraph.checkpointers import PostgresCheckpointer

from .writer_process import digest, human_text

Event = dict[str, Any]


@dataclass
class Acks:
    """What writers reported as committed, and what was in flight when they died."""

    puts: dict[str, dict[str, tuple[str, str | None]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    writes: dict[str, list[tuple[str, str, list[str]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    inflight: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    errors: list[Event] = field(default_factory=list)
    orphaned: int = 0  # acknowledged writes whose checkpoint was never committed

    def add(self, events: Iterable[Event], *, killed: bool) -> None:
        begun: dict[str, str] = {}
        for e in events:
            if e["ev"] == "begin":
                begun[e["id"]] = e["thread"]
            elif e["ev"] == "put":
                begun.pop(e["id"], None)
                self.puts[e["thread"]][e["id"]] = (e["digest"], e.get("parent"))
            elif e["ev"] == "writes":
                self.writes[e["thread"]].append((e["id"], e["task"], e["channels"]))
            elif e["ev"] == "error":
                self.errors.append(e)
        if killed:
            for cid, thread in begun.items():
                self.inflight[thread].add(cid)

    @property
    def put_count(self) -> int:
        return sum(len(v) for v in self.puts.values())

    @property
    def write_count(self) -> int:
        return sum(len(v) for v in self.writes.values())


def messages_of(tup: Any) -> list[Any]:
    return list(tup.checkpoint["channel_values"].get("messages", []))


def check_acknowledged(saver: PostgresCheckpointer, thread_id: str, acks: Acks) -> int:
    """Every acknowledged put and write of the thread loads as it was written.

    Reads the thread's whole history in one ``list`` (every value decoded
    from its rows), plus a ``get_tuple`` of the newest acknowledged
    checkpoint. Returns the number of acknowledged puts checked.
    """
    puts = acks.puts.get(thread_id, {})
    writes = acks.writes.get(thread_id, [])
    if not puts and not writes:
        return 0
    listed = {
        t.config["configurable"]["checkpoint_id"]: t
        for t in saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    }
    for cid, (expected, parent) in puts.items():
        tup = listed.get(cid)
        assert tup is not None, f"committed checkpoint {cid} of {thread_id!r} is lost"
        assert digest(messages_of(tup)) == expected, (
            f"checkpoint {cid} of {thread_id!r} loads other messages than were written"
        )
        loaded_parent = (
            tup.parent_config["configurable"]["checkpoint_id"] if tup.parent_config else None
        )
        assert loaded_parent == parent, f"checkpoint {cid} of {thread_id!r} lost its parent"
    if puts:
        newest = max(puts)
        tup = saver.get_tuple(_config(thread_id, newest))
        assert tup is not None and digest(messages_of(tup)) == puts[newest][0]
    for cid, task, channels in writes:
        tup = listed.get(cid)
        if tup is None:
            # LangGraph may save a step's writes while its checkpoint is still being
            # saved; if that save then failed, the writes belong to no checkpoint.
            assert cid not in puts, f"checkpoint {cid} of {thread_id!r} with writes is lost"
            acks.orphaned += 1
            continue
        stored = [ch for t, ch, _ in tup.pending_writes or [] if t == task]
        assert all(ch in stored for ch in channels), (
            f"committed writes of task {task} on checkpoint {cid} of {thread_id!r}: "
            f"expected channels {channels}, found {stored}"
        )
    return len(puts)


def check_linear_history(saver: PostgresCheckpointer, graph: Any, thread_id: str) -> int:
    """A single-writer thread's history: a closed chain, each state a prefix of the next.

    Returns the number of checkpoints.
    """
    cfg: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    history = list(graph.get_state_history(cfg))
    listed = list(saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}))
    ids = [s.config["configurable"]["checkpoint_id"] for s in history]
    assert ids == [t.config["configurable"]["checkpoint_id"] for t in listed]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    for newer, older in itertools.pairwise(history):
        assert newer.parent_config is not None
        assert (
            newer.parent_config["configurable"]["checkpoint_id"]
            == (older.config["configurable"]["checkpoint_id"])
        ), f"history of {thread_id!r} is not a chain at {newer.config}"
        new_ids = [m.id for m in newer.values.get("messages", [])]
        old_ids = [m.id for m in older.values.get("messages", [])]
        assert new_ids[: len(old_ids)] == old_ids, f"history of {thread_id!r} rewrote messages"
    if history:
        assert history[-1].parent_config is None
    info = saver.get_thread(thread_id)
    assert (info.checkpoint_count if info else 0) == len(history), (
        f"registry of {thread_id!r} counts {info and info.checkpoint_count}, "
        f"history has {len(history)}"
    )
    return len(history)


def check_conversation(messages: list[Any], label: str, big_every: int) -> None:
    """Messages alternate question and the demo model's reply to it, in turn order."""
    humans = 0
    for i, m in enumerate(messages):
        if i % 2 == 0:
            assert m.type == "human", f"message {i} of {label!r} is a {m.type}"
            assert m.content == human_text(label, humans, big_every), (
                f"message {i} of {label!r} is not turn {humans}"
            )
            humans += 1
        else:
            assert m.type == "ai"
            assert m.content == reply_text(messages[:i], 24), f"reply {i} of {label!r} is wrong"


def resume_and_continue(graph: Any, thread_id: str, label: str, big_every: int) -> bool:
    """Finish an interrupted superstep if any, then run one more turn; True if it had to resume."""
    from langchain_core.messages import HumanMessage

    cfg: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    state = graph.get_state(cfg)
    # An interrupted superstep shows as tasks of the latest checkpoint; those that
    # finished before the kill have their writes (and are not in ``next``).
    resumed = bool(state.next or state.tasks)
    if resumed:
        graph.invoke(None, cfg)
        state = graph.get_state(cfg)
        assert not (state.next or state.tasks), f"{thread_id!r} did not finish its step"
    before = list(state.values.get("messages", []))
    turn = sum(1 for m in before if m.type == "human")
    out = graph.invoke(
        {"messages": [HumanMessage(content=human_text(label, turn, big_every))]}, cfg
    )
    assert [m.id for m in out["messages"][: len(before)]] == [m.id for m in before]
    assert len(out["messages"]) == len(before) + 2
    check_conversation(out["messages"], label, big_every)
    return resumed


# -- on the rows ------------------------------------------------------------------

ROW_CHECKS: Mapping[str, str] = {
    "checkpoint values not stored": """
        SELECT count(*) FROM {schema}.checkpoints AS c, unnest(c.value_keys) AS k(key)
        WHERE NOT EXISTS (
            SELECT 1 FROM {schema}.blobs AS b
            WHERE b.tenant_id = c.tenant_id AND b.family_id = c.family_id AND b.key = k.key)
    """,
    "pending-write values not stored": """
        SELECT count(*) FROM {schema}.writes AS w, unnest(w.value_keys) AS k(key)
        WHERE NOT EXISTS (
            SELECT 1 FROM {schema}.blobs AS b
            WHERE b.tenant_id = w.tenant_id AND b.family_id = w.family_id AND b.key = k.key)
    """,
    "lists shorter than their checkpoint says": """
        SELECT count(*) FROM {schema}.checkpoints AS c,
            unnest(c.list_lineages, c.list_lengths) AS l(lineage, length)
        WHERE l.lineage <> 0 AND (
            SELECT count(*) FROM {schema}.lineage_items AS i
            WHERE i.tenant_id = c.tenant_id AND i.family_id = c.family_id
              AND i.lineage_id = l.lineage AND i.seq < l.length) <> l.length
    """,
    "list items not stored": """
        SELECT count(*) FROM {schema}.lineage_items AS i
        WHERE NOT EXISTS (
            SELECT 1 FROM {schema}.blobs AS b
            WHERE b.tenant_id = i.tenant_id AND b.family_id = i.family_id AND b.key = i.key)
    """,
    "registry counts that differ from the rows": """
        SELECT count(*) FROM {schema}.threads AS t
        WHERE t.checkpoint_count <> (
            SELECT count(*) FROM {schema}.checkpoints AS c
            WHERE c.tenant_id = t.tenant_id AND c.thread_id = t.thread_id)
    """,
    "checkpoints of threads missing from the registry": """
        SELECT count(*) FROM {schema}.checkpoints AS c
        WHERE NOT EXISTS (
            SELECT 1 FROM {schema}.threads AS t
            WHERE t.tenant_id = c.tenant_id AND t.thread_id = c.thread_id)
    """,
}


def row_problems(dsn: str, schema: str = "haive") -> dict[str, int]:
    """Counts of each kind of partial or dangling row (all zero when consistent)."""
    out: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, query in ROW_CHECKS.items():
            stmt = psycopg.sql.SQL(query).format(schema=psycopg.sql.Identifier(schema))
            row = conn.execute(stmt).fetchone()
            assert row is not None
            out[name] = int(row[0])
    return out


def orphan_writes(dsn: str, schema: str = "haive") -> int:
    """Pending writes whose checkpoint was never committed (invisible through the API)."""
    stmt = psycopg.sql.SQL(
        """
        SELECT count(*) FROM {schema}.writes AS w
        WHERE NOT EXISTS (
            SELECT 1 FROM {schema}.checkpoints AS c
            WHERE c.tenant_id = w.tenant_id AND c.thread_id = w.thread_id
              AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id)
        """
    ).format(schema=psycopg.sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(stmt).fetchone()
    assert row is not None
    return int(row[0])


def stored_checkpoint_ids(dsn: str, thread_id: str, schema: str = "haive") -> set[str]:
    stmt = psycopg.sql.SQL(
        "SELECT checkpoint_id FROM {schema}.checkpoints WHERE thread_id = %s"
    ).format(schema=psycopg.sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute(stmt, (thread_id,))}


def _config(thread_id: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": "",
            "checkpoint_id": checkpoint_id,
        }
    }
