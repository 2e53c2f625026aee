"""The sync and async conversation classes offer the same methods: each async
method is its sync twin's builder run on an async source, so the signature,
the docstring and the checks are the same (no database needed)."""

from __future__ import annotations

import inspect

import pytest

import haive_langgraph.memory as memory
from haive_langgraph.memory import (
    AsyncChatHistoryFactory,
    AsyncConversationStore,
    AsyncPostgresChatMessageHistory,
    AsyncSessionStore,
    AsyncSupabaseChatMessageHistory,
    AsyncVectorMemory,
    ConversationStore,
    SessionStore,
)

PAIRS = [(ConversationStore, AsyncConversationStore), (SessionStore, AsyncSessionStore)]


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and member.__qualname__ == name
    }


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda c: c.__name__)
def test_every_method_has_its_async_twin(sync: type, async_: type) -> None:
    methods = _public(sync)
    assert methods, sync
    for name, method in methods.items():
        twin = getattr(async_, f"a{name}")
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(method), name
        assert twin.__doc__ == method.__doc__ and method.__doc__, name
    assert {f"a{n}" for n in methods} == set(_public(async_))


def test_a_signature_shows_what_the_method_returns() -> None:
    sig = inspect.signature(SessionStore.get_session)
    assert sig.return_annotation == "Session"
    assert list(sig.parameters) == ["self", "session_id", "user_id"]


@pytest.mark.parametrize("cls", [ConversationStore, AsyncSessionStore], ids=lambda c: c.__name__)
def test_an_unknown_option_is_refused(cls: type) -> None:
    with pytest.raises(TypeError, match="colour"):
        cls("postgresql://nobody@127.0.0.1:1/none", colour="blue")


ASYNC_CLASSES = [
    AsyncChatHistoryFactory,
    AsyncConversationStore,
    AsyncPostgresChatMessageHistory,
    AsyncSessionStore,
    AsyncSupabaseChatMessageHistory,
    AsyncVectorMemory,
]


@pytest.mark.parametrize("cls", ASYNC_CLASSES, ids=lambda c: c.__name__)
def test_an_async_class_sets_up_with_await_setup(cls: type) -> None:
    # LangGraph's convention (AsyncPostgresSaver, AsyncPostgresStore); asetup is deprecated.
    assert inspect.iscoroutinefunction(cls.setup)
    assert inspect.iscoroutinefunction(cls.asetup)
    assert "deprecated" in (cls.asetup.__doc__ or "").lower()


def test_the_0_1_names_of_the_session_stores_still_import() -> None:
    assert memory.SessionManager is SessionStore
    assert memory.AsyncSessionManager is AsyncSessionStore
    assert "SessionManager" not in memory.__all__
