"""Methods that call a model as well as the database: plans, and their two drivers.

Topic routing embeds a message before it picks a session; a model-assisted
merge asks a chat model for the merged transcript between reading the
sessions and writing the result. Such a method is written once, as a
builder returning a *plan*: a generator yielding database calls
(:class:`~haive_langgraph.db.Call`) and model requests (:class:`Embed`,
:class:`AskModel`) and receiving their results, with no I/O of its own.
:func:`sync_plan` makes the sync method (``embed_query`` / ``invoke``),
:func:`async_plan` the ``a``-prefixed one (``aembed_query`` / ``ainvoke``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from haive_langgraph.db._call import Call, adrive, drive
from haive_langgraph.db._methods import _publish

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Embed:
    """Embed one text with ``embeddings`` (the result: its vector)."""

    embeddings: Embeddings
    text: str


@dataclass(frozen=True, slots=True)
class AskModel:
    """Invoke ``model`` (a chat model, or what ``with_structured_output`` made of one)
    on ``messages`` (the result: what it returns)."""

    model: Any
    messages: list[BaseMessage]


Plan = Generator[Call[Any] | Embed | AskModel, Any, T]
"""A method's work: database calls and model requests, in order (no I/O)."""


def structured(model: BaseChatModel, schema: type[Any]) -> Any | None:
    """``model.with_structured_output(schema)``, or ``None`` when the model has no
    structured output (LangChain raises ``NotImplementedError`` when it cannot bind tools)."""
    try:
        return model.with_structured_output(schema)
    except NotImplementedError:
        return None


def run_plan(client: Any, plan: Plan[T]) -> T:
    """Run ``plan`` with the sync APIs: ``client._run`` for calls."""

    def handle(request: Call[Any] | Embed | AskModel) -> Any:
        if isinstance(request, Embed):
            return request.embeddings.embed_query(request.text)
        if isinstance(request, AskModel):
            return request.model.invoke(request.messages)
        return client._run(request)

    return drive(plan, handle)


async def arun_plan(client: Any, plan: Plan[T]) -> T:
    """Run ``plan`` with the async APIs: ``await client._arun`` for calls."""

    async def handle(request: Call[Any] | Embed | AskModel) -> Any:
        if isinstance(request, Embed):
            return await request.embeddings.aembed_query(request.text)
        if isinstance(request, AskModel):
            return await request.model.ainvoke(request.messages)
        return await client._arun(request)

    return await adrive(plan, handle)


def _publish_plan(method: Any, build: Callable[..., Any], name: str) -> None:
    _publish(method, build, name)
    sig = method.__signature__
    result = sig.return_annotation
    if isinstance(result, str) and result.startswith("Plan[") and result.endswith("]"):
        method.__signature__ = sig.replace(return_annotation=result[5:-1])


def sync_plan(build: Callable[Concatenate[S, P], Plan[T]]) -> Callable[Concatenate[S, P], T]:
    """The sync method (the builder's name without its leading ``_``) running its plan."""

    @functools.wraps(build)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_plan(self, build(self, *args, **kwargs))

    _publish_plan(method, build, build.__name__.lstrip("_"))
    return method


def async_plan(
    build: Callable[Concatenate[S, P], Plan[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The async method (``a`` + the builder's name without its ``_``) running its plan."""

    @functools.wraps(build)
    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await arun_plan(self, build(self, *args, **kwargs))

    _publish_plan(method, build, "a" + build.__name__.lstrip("_"))
    return method
