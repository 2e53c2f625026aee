"""What ``store_conversation`` adds to a conversation's chunks: a summary and keywords.

* A **summary** written by the chat model the caller passes (``invoke`` /
  ``ainvoke``), stored as one more memory of the conversation
  (``kind="conversation_summary"``) covering all its messages.
* **Keywords** from PostgreSQL's full-text statistics (``ts_stat``) over the
  conversation's messages, no model: the most frequent words that are not
  stop words of a text-search configuration, with their counts, in every
  chunk's (and the summary's) metadata under ``"keywords"`` as
  ``{word: occurrences}``, so that ``filters={"keywords.vacuum": {"$exists":
  True}}`` (or ``{"$gte": 2}``) finds them.

Each is a :class:`~haive_langgraph.memory.vector._steps.StoreTask` the
memory's drivers run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from haive_langgraph.db._call import Call
from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError, InvalidMemoryError
from haive_langgraph.memory.vector import _sql as S
from haive_langgraph.memory.vector._chunks import Line
from haive_langgraph.memory.vector._steps import Op as VectorOp
from haive_langgraph.memory.vector._steps import StoreTask
from haive_langgraph.memory.vector._values import NewMemory

DEFAULT_KEYWORDS = 10
KEYWORDS_KEY = "keywords"

SYSTEM = (
    "You write the long-term memory of a conversation. Summarise the conversation "
    "below in at most five sentences: who wanted what, the facts stated, what was "
    "decided and what is still open. Answer with the summary only."
)

# A text-search configuration name (travels as a parameter cast to regconfig).
_REGCONFIG = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


def check_notes(
    summarize: bool, keywords: bool | int, model: Any, config: str, metadata: dict[str, Any]
) -> int:
    """How many keywords to extract (0: none), after checking the arguments.

    Raises:
        ConfigurationError: ``summarize`` without a chat model, a bad count or
            configuration name, or metadata that already has ``"keywords"``.
    """
    if summarize and not isinstance(model, BaseChatModel):
        raise ConfigurationError(
            f"summarize=True needs model=, a LangChain chat model, got {model!r}"
        )
    if not summarize and model is not None:
        raise ConfigurationError("model= writes the summary: pass summarize=True with it")
    if keywords is True:
        count = DEFAULT_KEYWORDS
    elif keywords is False:
        count = 0
    elif isinstance(keywords, int) and keywords > 0:
        count = keywords
    else:
        raise ConfigurationError(
            f"keywords must be True, False or a positive number of keywords, got {keywords!r}"
        )
    if count and KEYWORDS_KEY in metadata:
        raise ConfigurationError(
            'metadata has a "keywords" key and keywords= would replace it: rename it, '
            "or leave keywords= off"
        )
    if not isinstance(config, str) or not _REGCONFIG.fullmatch(config):
        raise ConfigurationError(
            f"keywords_config must be a text-search configuration name such as 'english', "
            f"got {config!r}"
        )
    return count


def message_body(line_text: str) -> str:
    """A transcript line's text without its ``role:`` prefix."""
    return line_text.split(":", 1)[-1].strip()


def _sql_store(store: Any, what: str) -> Any:
    source = getattr(store, "_source", None)
    if source is None:
        raise ConfigurationError(
            f"{what} runs in PostgreSQL: it needs a memory on the PostgreSQL store "
            f"(a DSN, connection or pool), not on {type(store).__name__}"
        )
    return source


@dataclass(slots=True)
class Keywords(StoreTask):
    """The ``limit`` most frequent non-stop words of ``documents`` (``ts_stat``):
    ``{word: occurrences}``, most frequent first."""

    documents: list[str]
    config: str
    limit: int

    def _call(self) -> Call[dict[str, int]]:
        docs = json.dumps(self.documents, ensure_ascii=False)
        params = {"cfg": self.config, "k": self.limit}

        def op() -> Op[dict[str, int]]:
            yield Step(S.SET_DOCUMENTS, {"docs": docs}, fetch="one")
            rows = yield Step(S.KEYWORDS, params)
            return {str(word): int(n) for word, n, _ in rows}

        return Call(op, transaction=True, read=True)

    def run(self, store: Any) -> dict[str, int]:
        result: dict[str, int] = _sql_store(store, "keywords=").call(self._call())
        return result

    async def arun(self, store: Any) -> dict[str, int]:
        result: dict[str, int] = await _sql_store(store, "keywords=").call(self._call())
        return result


def summary_prompt(lines: Sequence[str]) -> list[BaseMessage]:
    """The messages asking for a conversation's summary."""
    return [SystemMessage(SYSTEM), HumanMessage("Conversation:\n" + "\n".join(lines))]


def _summary_text(answer: Any) -> str:
    text = answer.text if isinstance(answer, BaseMessage) else answer
    if not isinstance(text, str) or not text.strip():
        raise InvalidMemoryError(
            "the model returned no summary text (got "
            f"{type(answer).__name__}); nothing of the conversation was written"
        )
    return text.strip()


@dataclass(slots=True)
class ConversationSummary(StoreTask):
    """Ask ``model`` for the summary of a transcript (the result: its text)."""

    model: BaseChatModel
    lines: list[str]

    def run(self, store: Any) -> str:
        return _summary_text(self.model.invoke(summary_prompt(self.lines)))

    async def arun(self, store: Any) -> str:
        return _summary_text(await self.model.ainvoke(summary_prompt(self.lines)))


def with_notes(
    news: list[NewMemory],
    lines: Sequence[Line],
    conversation_id: str | None,
    *,
    model: BaseChatModel | None,
    keywords: int,
    config: str,
    importance: float,
) -> VectorOp[list[NewMemory]]:
    """The chunks of a conversation with its keywords, and its summary after them."""
    said = [line for line in lines if message_body(line.text)]
    out = list(news)
    if keywords and said:
        words = yield Keywords([message_body(line.text) for line in said], config, keywords)
        out = [replace(n, metadata={**n.metadata, KEYWORDS_KEY: words}) for n in out]
    if model is not None and said:
        text = yield ConversationSummary(model, [line.text for line in said])
        out.append(
            NewMemory(
                text=text,
                metadata=out[0].metadata,
                importance=importance,
                created_at=max(n.created_at for n in news),
                kind="conversation_summary",
                conversation_id=conversation_id,
                episode_id=conversation_id,
                message_ids=tuple(line.message_id for line in said),
                message_range=(said[0].seq, said[-1].seq),
            )
        )
    return out
