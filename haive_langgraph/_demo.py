"""A deterministic chat model and chat graph for the demo, docs and tests.

No network, no model download: replies are derived from the conversation so
far, with token usage, so runs are reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph

_VOCABULARY = [
    "memory",
    "checkpoint",
    "thread",
    "branch",
    "history",
    "state",
    "postgres",
    "durable",
    "linear",
    "storage",
    "agent",
    "graph",
    "message",
    "reply",
    "resume",
    "fork",
    "restore",
    "tag",
    "diff",
    "value",
    "answer",
    "context",
]


class DemoChatModel(BaseChatModel):
    """Replies deterministically to the last message, reporting token usage.

    Attributes:
        words: Length of each reply in words.
        model_name: Reported in ``response_metadata`` and usage accounting.
    """

    words: int = 24
    model_name: str = "demo-echo-1"

    @property
    def _llm_type(self) -> str:
        return "haive-demo"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = reply_text(messages, self.words)
        digest = hashlib.sha256(f"{len(messages)}|{text}".encode()).hexdigest()[:16]
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        completion_tokens = len(text.split())
        message = AIMessage(
            content=text,
            id=f"demo-{digest}",
            response_metadata={"model_name": self.model_name},
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def reply_text(messages: Sequence[BaseMessage], words: int) -> str:
    """The deterministic reply to a conversation."""
    last = str(messages[-1].content) if messages else ""
    seed = hashlib.sha256(f"{len(messages)}|{last}".encode()).digest()
    picked = [_VOCABULARY[seed[i % len(seed)] % len(_VOCABULARY)] for i in range(words)]
    return f"(reply to {last[:40]!r}) " + " ".join(picked)


def chat_graph(model: BaseChatModel | None = None) -> StateGraph[Any]:
    """A one-node ``MessagesState`` chat graph around ``model``."""
    llm = model or DemoChatModel()

    def assistant(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    builder: StateGraph[Any] = StateGraph(MessagesState)
    builder.add_node("assistant", assistant)
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    return builder
