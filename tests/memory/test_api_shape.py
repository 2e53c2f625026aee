"""The sync and async conversation classes offer the same methods: each async
method is its sync twin's builder run on an async source, so the signature,
the docstring and the checks are the same (no database needed)."""

from __future__ import annotations

import inspect

import pytest

from haive_langgraph.memory import (
    AsyncConversationStore,
    AsyncSessionManager,
    ConversationStore,
    SessionManager,
)

PAIRS = [(ConversationStore, AsyncConversationStore), (SessionManager, AsyncSessionManager)]


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
    sig = inspect.signature(SessionManager.get_session)
    assert sig.return_annotation == "Session"
    assert list(sig.parameters) == ["self", "session_id", "user_id"]


@pytest.mark.parametrize("cls", [ConversationStore, AsyncSessionManager], ids=lambda c: c.__name__)
def test_an_unknown_option_is_refused(cls: type) -> None:
    with pytest.raises(TypeError, match="colour"):
        cls("postgresql://nobody@127.0.0.1:1/none", colour="blue")
