"""Deterministic chat models for the memory tests (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult


def _usage(messages: list[BaseMessage], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.content).split()) for m in messages)
    completion = len(text.split())
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    }


class CountingChatModel(BaseChatModel):
    """Replies ``seen <number of input messages>: <last message>``."""

    model_name: str = "demo-echo-1"

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = f"seen {len(messages)}: {messages[-1].content}"
        message = AIMessage(
            content=text,
            response_metadata={"model_name": self.model_name},
            usage_metadata=_usage(messages, text),  # type: ignore[arg-type]
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


class StreamingChatModel(BaseChatModel):
    """Streams ``streamed reply to '<last>' after <n> messages`` word by word."""

    model_name: str = "gpt-x-stream"

    @property
    def _llm_type(self) -> str:
        return "streaming"

    def _reply(self, messages: list[BaseMessage]) -> str:
        return f"streamed reply to {messages[-1].content!r} after {len(messages)} messages"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self._reply(messages)
        message = AIMessage(
            content=text,
            response_metadata={"model_name": self.model_name},
            usage_metadata=_usage(messages, text),  # type: ignore[arg-type]
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text = self._reply(messages)
        words = text.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk = AIMessageChunk(
                content=word if i == 0 else " " + word,
                response_metadata={"model_name": self.model_name} if last else {},
                usage_metadata=_usage(messages, text) if last else None,  # type: ignore[arg-type]
            )
            if run_manager is not None:
                run_manager.on_llm_new_token(
                    str(chunk.content), chunk=ChatGenerationChunk(message=chunk)
                )
            yield ChatGenerationChunk(message=chunk)
