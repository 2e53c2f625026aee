"""The summaries of hierarchical consolidation: a chat model (or a function) asked once per cluster.

A :class:`~haive_langgraph.memory.vector._steps.Summarize` step is answered
here by the memory's drivers: ``model.invoke`` / ``await model.ainvoke`` for
a LangChain chat model, or the caller's function ``texts -> text``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from haive_langgraph.errors import ConfigurationError, InvalidMemoryError
from haive_langgraph.memory.vector._steps import Summarize
from haive_langgraph.memory.vector._values import check_text

Summarizer = BaseChatModel | Callable[[Sequence[str]], str]
"""What writes a summary: a LangChain chat model, or a function ``texts -> text``."""

SYSTEM = (
    "You consolidate the long-term memory of one user. The numbered memories below "
    "are related. Write one short memory (one to three sentences) that keeps every "
    "fact they state and adds nothing else. Answer with that memory only."
)


def check_summarizer(summarizer: object) -> Summarizer:
    """``summarizer`` if it is a chat model or a function.

    Raises:
        ConfigurationError: Anything else.
    """
    if isinstance(summarizer, BaseChatModel) or callable(summarizer):
        return summarizer  # type: ignore[return-value]
    raise ConfigurationError(
        "summarizer must be a LangChain chat model (BaseChatModel) or a function "
        f"texts -> text, got {type(summarizer).__name__}"
    )


def summarizer_name(summarizer: Summarizer) -> str:
    """How the audit record names the summarizer (the model's name when it has one)."""
    for attr in ("model_name", "model"):
        value = getattr(summarizer, attr, None)
        if isinstance(value, str) and value:
            return value
    return getattr(summarizer, "__name__", type(summarizer).__name__)


def prompt(texts: Sequence[str], level: int) -> list[BaseMessage]:
    """The messages asking for the summary of ``texts`` (summaries themselves above level 1)."""
    what = "memories" if level <= 1 else "summaries of memories"
    body = "\n".join(f"{n}. {t}" for n, t in enumerate(texts, 1))
    return [SystemMessage(SYSTEM), HumanMessage(f"Related {what}:\n{body}\n\nOne memory:")]


def _text(answer: Any) -> str:
    if isinstance(answer, BaseMessage):
        answer = str(answer.text)
    if not isinstance(answer, str):
        raise InvalidMemoryError(
            f"the summarizer returned {type(answer).__name__}, not a text; nothing was written"
        )
    try:
        return check_text(answer.strip(), "the summary the model returned")
    except InvalidMemoryError as exc:
        raise InvalidMemoryError(f"{exc}; nothing was written") from None


def summarize(step: Summarize) -> str:
    """Answer a step with the sync API."""
    s = step.summarizer
    if isinstance(s, BaseChatModel):
        return _text(s.invoke(prompt(step.texts, step.level)))
    return _text(s(list(step.texts)))


async def asummarize(step: Summarize) -> str:
    """Answer a step with the async API (a function runs in a worker thread)."""
    s = step.summarizer
    if isinstance(s, BaseChatModel):
        return _text(await s.ainvoke(prompt(step.texts, step.level)))
    return _text(await asyncio.to_thread(s, list(step.texts)))
