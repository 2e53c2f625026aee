"""List items met again: not serialised or decoded again, yet every edit stored, no object shared.

A put takes the content key of a list item it serialised (or returned from
``get_tuple``) when the item is the same object with the same shape; these
tests edit items in place in every way the guard sees, between puts and
after a read, and check that a fresh reader gets the edited values. Reads
hand out copies: nothing one caller changes reaches another or the store.
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from haive_langgraph.checkpointers import PostgresCheckpointer
from haive_langgraph.checkpointers._base import STRICT_SERIALISATION_ENV
from haive_langgraph.codec import KeyRing

from .conftest import Driver

META = {"source": "loop", "step": 0}


def checkpoint_of(messages: list[Any], version: int) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": messages}
    cp["channel_versions"] = {"messages": version}
    return cp


def rich_message() -> AIMessage:
    return AIMessage(
        content=[{"type": "text", "text": "hello"}],
        id=f"a-{uuid.uuid4().hex[:6]}",
        tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "call-1"}],
        additional_kwargs={"k": "v"},
        response_metadata={"model": "m1", "usage": {"in": 3}},
    )


def _set(attr: str, value: Any) -> Callable[[Any], None]:
    return lambda m: setattr(m, attr, value)


# Each edit changes the message in place, in a way the guard must see.
EDITS: dict[str, Callable[[Any], None]] = {
    "field set": _set("name", "bob"),
    "content replaced": _set("content", "edited"),
    "content appended to (list)": lambda m: m.content.append({"type": "text", "text": "more"}),
    "content block replaced": lambda m: m.content.__setitem__(0, {"type": "text", "text": "new"}),
    "additional_kwargs item added": lambda m: m.additional_kwargs.__setitem__("extra", 1),
    "additional_kwargs item replaced": lambda m: m.additional_kwargs.__setitem__("k", "w"),
    "response_metadata item replaced": lambda m: m.response_metadata.__setitem__("model", "m2"),
    "tool call appended": lambda m: m.tool_calls.append(
        {"name": "other", "args": {}, "id": "call-2", "type": "tool_call"}
    ),
    "tool call removed": lambda m: m.tool_calls.pop(),
    "extra field set": _set("note", "added"),
}


def plain_message() -> AIMessage:
    """A message whose containers are all empty (checked in place, see ``_objects.unchanged``)."""
    return AIMessage(content="hello", id=f"p-{uuid.uuid4().hex[:6]}")


PLAIN_EDITS: dict[str, Callable[[Any], None]] = {
    "field set": _set("name", "bob"),
    "content replaced": _set("content", "edited"),
    "content appended to": lambda m: setattr(m, "content", m.content + " more"),
    "additional_kwargs item added": lambda m: m.additional_kwargs.__setitem__("k", 1),
    "response_metadata item added": lambda m: m.response_metadata.__setitem__("model", "m"),
    "tool call appended": lambda m: m.tool_calls.append(
        {"name": "f", "args": {}, "id": "c1", "type": "tool_call"}
    ),
    "usage set": _set("usage_metadata", {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}),
    "extra field set": _set("note", "added"),
}


def new_thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"same-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}


async def fresh_read(dsn: str, config: Any) -> list[Any]:
    """The messages of ``config`` read by a saver that has nothing cached."""

    def read() -> list[Any]:
        with PostgresCheckpointer.from_conn_string(dsn) as reader:
            tup = reader.get_tuple(config)
            assert tup is not None
            return list(tup.checkpoint["channel_values"]["messages"])

    return await asyncio.to_thread(read)


def dumped(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [{"type": type(m).__name__, **m.model_dump()} for m in messages]


@pytest.mark.parametrize("edit", list(EDITS))
async def test_an_item_edited_in_place_after_a_put_is_stored(
    cp: Driver, dsn: str, edit: str
) -> None:
    config = new_thread()
    target = rich_message()
    messages = [HumanMessage(content="hi", id="h1"), target]
    saved = await cp.call("put", config, checkpoint_of(messages, 1), META, {"messages": 1})
    EDITS[edit](target)
    messages.append(HumanMessage(content="next", id="h2"))
    saved = await cp.call("put", saved, checkpoint_of(messages, 2), META, {"messages": 2})
    assert dumped(await fresh_read(dsn, saved)) == dumped(messages)


@pytest.mark.parametrize("edit", list(EDITS))
async def test_an_item_returned_by_get_tuple_and_edited_is_stored(
    cp: Driver, dsn: str, edit: str
) -> None:
    """A graph goes on with the objects get_tuple returned: an edit of one is stored."""
    config = new_thread()
    messages = [HumanMessage(content="hi", id="h1"), rich_message()]
    saved = await cp.call("put", config, checkpoint_of(messages, 1), META, {"messages": 1})
    tup = await cp.call("get_tuple", saved)
    loaded = tup.checkpoint["channel_values"]["messages"]
    EDITS[edit](loaded[1])
    state = [*loaded, HumanMessage(content="next", id="h2")]
    saved = await cp.call("put", saved, checkpoint_of(state, 2), META, {"messages": 2})
    assert dumped(await fresh_read(dsn, saved)) == dumped(state)


@pytest.mark.parametrize("edit", list(PLAIN_EDITS))
@pytest.mark.parametrize("source", ["put", "get_tuple"])
async def test_a_plain_message_edited_in_place_is_stored(
    cp: Driver, dsn: str, edit: str, source: str
) -> None:
    config = new_thread()
    target = plain_message()
    messages: list[Any] = [HumanMessage(content="hi", id="h1"), target]
    saved = await cp.call("put", config, checkpoint_of(messages, 1), META, {"messages": 1})
    saved = await cp.call("put", saved, checkpoint_of(messages, 2), META, {"messages": 2})
    if source == "get_tuple":  # the copies it returns, which a graph goes on with
        messages = list(
            (await cp.call("get_tuple", config)).checkpoint["channel_values"]["messages"]
        )
    PLAIN_EDITS[edit](messages[1])
    saved = await cp.call("put", saved, checkpoint_of(messages, 3), META, {"messages": 3})
    assert dumped(await fresh_read(dsn, saved)) == dumped(messages)


async def test_a_dict_item_edited_in_place_is_stored(cp: Driver, dsn: str) -> None:
    config = new_thread()
    item: dict[str, Any] = {"step": 1, "tags": ["a"]}
    items = [item]
    saved = await cp.call("put", config, checkpoint_of(items, 1), META, {"messages": 1})
    item["step"] = 2
    saved = await cp.call("put", saved, checkpoint_of(items, 2), META, {"messages": 2})
    item["tags"].append("b")
    saved = await cp.call("put", saved, checkpoint_of(items, 3), META, {"messages": 3})
    assert await fresh_read(dsn, saved) == [{"step": 2, "tags": ["a", "b"]}]


def deep_edit(m: AIMessage) -> None:
    m.tool_calls[0]["args"]["q"] = "changed"  # two levels below the message's fields


@pytest.mark.parametrize("how", ["argument", "environment"])
async def test_strict_serialisation_stores_edits_the_guard_does_not_see(
    dsn: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "environment":
        monkeypatch.setenv(STRICT_SERIALISATION_ENV, "1")
        kwargs: dict[str, Any] = {}
    else:
        monkeypatch.delenv(STRICT_SERIALISATION_ENV, raising=False)
        kwargs = {"strict_serialisation": True}

    def run() -> Any:
        with PostgresCheckpointer.from_conn_string(dsn, **kwargs) as saver:
            assert saver.strict_serialisation
            config = new_thread()
            target = rich_message()
            saved = saver.put(config, checkpoint_of([target], 1), META, {"messages": 1})
            deep_edit(target)
            saved = saver.put(saved, checkpoint_of([target], 2), META, {"messages": 2})
            tup = saver.get_tuple(config)
            assert tup is not None
            (loaded,) = tup.checkpoint["channel_values"]["messages"]
            assert loaded.tool_calls[0]["args"] == {"q": "changed"}
            loaded.tool_calls[0]["args"]["q"] = "after a read"
            return saver.put(saved, checkpoint_of([loaded], 3), META, {"messages": 3})

    saved = await asyncio.to_thread(run)
    (read,) = await fresh_read(dsn, saved)
    assert read.tool_calls[0]["args"] == {"q": "after a read"}


async def test_reads_share_no_object_with_each_other_or_the_store(cp: Driver, dsn: str) -> None:
    config = new_thread()
    messages = [HumanMessage(content="hi", id="h1"), rich_message()]
    saved = await cp.call("put", config, checkpoint_of(messages, 1), META, {"messages": 1})
    first = (await cp.call("get_tuple", saved)).checkpoint["channel_values"]["messages"]
    second = (await cp.call("get_tuple", saved)).checkpoint["channel_values"]["messages"]
    assert dumped(first) == dumped(second) == dumped(messages)
    for a, b in zip(first, second, strict=True):
        assert a is not b
        for field in ("content", "additional_kwargs", "response_metadata"):
            value = getattr(a, field)
            if isinstance(value, list | dict):
                assert value is not getattr(b, field)
    # Edit everything the first caller holds, at every depth...
    deep_edit(first[1])
    first[1].content[0]["text"] = "mutated"
    first[1].response_metadata["usage"]["in"] = 99
    first[0].content = "mutated"
    # ...nothing of it reaches the next reader, nor the store.
    third = (await cp.call("get_tuple", saved)).checkpoint["channel_values"]["messages"]
    assert dumped(third) == dumped(second)
    assert dumped(await fresh_read(dsn, saved)) == dumped(second)


async def test_copies_equal_what_a_fresh_reader_decodes(cp: Driver, dsn: str) -> None:
    """Copies of decoded items are indistinguishable from decoding them again."""
    config = new_thread()
    messages = [HumanMessage(content="hi", id="h1", name="ann"), rich_message()]
    saved = await cp.call("put", config, checkpoint_of(messages, 1), META, {"messages": 1})
    for _ in range(2):  # the second read copies what the first decoded
        cached = (await cp.call("get_tuple", saved)).checkpoint["channel_values"]["messages"]
    fresh = await fresh_read(dsn, saved)
    assert [type(m) for m in cached] == [type(m) for m in fresh]
    assert cached == fresh
    assert [m.model_fields_set for m in cached] == [m.model_fields_set for m in fresh]


async def test_remembered_objects_are_held_so_their_ids_stay_unique(cp: Driver) -> None:
    """An entry keeps its object alive: no other object can take its id meanwhile."""
    config = new_thread()
    message = HumanMessage(content="held", id="h1")
    ref = weakref.ref(message)
    await cp.call("put", config, checkpoint_of([message], 1), META, {"messages": 1})
    del message
    gc.collect()
    assert ref() is not None
    # The thread's next list replaces the entry, which then lets go.
    saved = await cp.call("get_tuple", config)
    await cp.call(
        "put",
        saved.config,
        checkpoint_of([HumanMessage(content="x", id="h2")], 2),
        META,
        {"messages": 2},
    )
    gc.collect()
    assert ref() is None


async def test_a_crypto_shredded_tenant_leaves_nothing_decoded_in_memory(dsn: str) -> None:
    ring = KeyRing({"g1": os.urandom(32)})
    ring.create_tenant_key("acme")

    def run() -> None:
        with PostgresCheckpointer.from_conn_string(dsn, keyring=ring, tenant_id="acme") as saver:
            saver.setup()
            config = new_thread()
            saver.put(config, checkpoint_of([rich_message()], 1), META, {"messages": 1})
            assert saver.get_tuple(config) is not None
            assert saver.get_tuple(config) is not None
            caches = [saver._objects, saver._written, saver._memo]
            assert all(len(c) for c in caches)  # type: ignore[arg-type]
            ring.forget_tenant("acme")
            assert not any(len(c) for c in caches)  # type: ignore[arg-type]

    await asyncio.to_thread(run)


class ReducerRace(JsonPlusSerializer):
    """Sets a message's id right after serialising it, as LangGraph's reducer does on the
    graph's thread while a task's writes are being stored on another."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        out = super().dumps_typed(obj)
        if isinstance(obj, HumanMessage) and obj.content == "racy" and obj.id is None:
            obj.id = "assigned-while-writing"
        return out


async def test_an_item_changed_while_its_write_is_stored_is_stored_as_changed(dsn: str) -> None:
    def run() -> Any:
        with PostgresCheckpointer.from_conn_string(dsn, serde=ReducerRace()) as saver:
            saver.setup()
            first = HumanMessage(content="hi", id="h1")
            saved = saver.put(new_thread(), checkpoint_of([first], 1), META, {"messages": 1})
            racy = HumanMessage(content="racy")
            saver.put_writes(saved, [("messages", [racy])], "task-1")
            assert racy.id == "assigned-while-writing"
            return saver.put(saved, checkpoint_of([first, racy], 2), META, {"messages": 2})

    saved = await asyncio.to_thread(run)
    assert [m.id for m in await fresh_read(dsn, saved)] == ["h1", "assigned-while-writing"]
