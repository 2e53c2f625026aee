"""Automatic conversation tracking: a LangChain callback handler.

Attach :class:`ConversationTracker` (or :class:`AsyncConversationTracker`)
to a chat model, a chain or a graph through ``config={"callbacks": [...]}``
and every chat model call below it is recorded into a conversation: the new
input messages, the output message with its token usage, model name,
latency (and time to first token when streaming) and run id. Nothing else
needs to change in the application.

Which conversation: the tracker's ``conversation_id`` if given, else the
run's ``conversation_id`` or ``thread_id`` (from the config's ``metadata`` or
``configurable``), else one conversation per top-level run. (Not
``session_id``: that is ``RunnableWithMessageHistory``'s history, which the
tracker must not write into.)
Conversations are created on first use. Input messages a conversation
already holds (by id; messages without one get an id from their position
and content) are not recorded again, so a multi-turn agent's growing prompt
is stored once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, LLMResult

from haive_langgraph.db._call import Call
from haive_langgraph.memory.conversations._checks import check_optional_id
from haive_langgraph.memory.conversations._codec import fingerprint_id, model_of, usage_of
from haive_langgraph.memory.conversations._messages import append_new
from haive_langgraph.memory.conversations._plan import AppendPlan
from haive_langgraph.memory.conversations._store import AsyncConversationStore, ConversationStore
from haive_langgraph.memory.conversations._types import TokenUsage

__all__ = ["AsyncConversationTracker", "ConversationTracker"]

CONVERSATION_KEYS = ("conversation_id", "thread_id")

StoreT = TypeVar("StoreT", ConversationStore, AsyncConversationStore)
S = TypeVar("S")
P = ParamSpec("P")


@dataclass(slots=True)
class _Pending:
    """A chat model call between its start and its end."""

    conversation_id: str
    user_id: str | None
    agent_id: str | None
    prompts: list[list[BaseMessage]]
    model: str | None
    parent_run_id: UUID | None
    tags: list[str]
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    """What one finished call appends to its conversation."""

    conversation_id: str
    user_id: str | None
    agent_id: str | None
    messages: list[BaseMessage]
    usages: list[TokenUsage | None]
    metadata: list[Mapping[str, Any] | None]
    run_ids: list[str | None]
    latencies: list[float | None]


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


class _TrackerState:
    """Run bookkeeping shared by the sync and async tracker (no I/O)."""

    def __init__(
        self, conversation_id: str | None, user_id: str | None, agent_id: str | None
    ) -> None:
        self.conversation_id = check_optional_id(conversation_id, "conversation_id")
        self.user_id = check_optional_id(user_id, "user_id")
        self.agent_id = check_optional_id(agent_id, "agent_id")
        self._lock = threading.Lock()
        self._parents: dict[UUID, UUID | None] = {}
        self._pending: dict[UUID, _Pending] = {}

    def child(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            self._parents[run_id] = parent_run_id

    def done(self, run_id: UUID) -> None:
        with self._lock:
            self._parents.pop(run_id, None)

    def _root(self, run_id: UUID, parent: UUID | None) -> UUID:
        seen = 0
        while parent is not None and seen < 1000:
            run_id, parent = parent, self._parents.get(parent)
            seen += 1
        return run_id

    def start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        prompts: list[list[BaseMessage]],
        tags: list[str] | None,
        metadata: Mapping[str, Any] | None,
        invocation: Mapping[str, Any] | None,
    ) -> None:
        meta = dict(metadata or {})
        with self._lock:
            self._parents[run_id] = parent_run_id
            conversation = self.conversation_id
            if conversation is None:
                for key in CONVERSATION_KEYS:
                    if (value := _text(meta.get(key))) is not None:
                        conversation = value
                        break
            if conversation is None:
                conversation = f"run-{self._root(run_id, parent_run_id)}"
            params = dict(invocation or {})
            model = _text(meta.get("ls_model_name")) or _text(
                params.get("model") or params.get("model_name")
            )
            self._pending[run_id] = _Pending(
                conversation_id=conversation,
                user_id=self.user_id or _text(meta.get("user_id")),
                agent_id=self.agent_id or _text(meta.get("agent_id")),
                prompts=[list(p) for p in prompts],
                model=model,
                parent_run_id=parent_run_id,
                tags=list(tags or []),
            )

    def token(self, run_id: UUID) -> None:
        with self._lock:
            pending = self._pending.get(run_id)
            if pending is not None and pending.first_token is None:
                pending.first_token = time.perf_counter()

    def error(self, run_id: UUID) -> None:
        with self._lock:
            self._pending.pop(run_id, None)
            self._parents.pop(run_id, None)

    def end(self, run_id: UUID, response: LLMResult) -> list[_Record]:
        now = time.perf_counter()
        with self._lock:
            pending = self._pending.pop(run_id, None)
            self._parents.pop(run_id, None)
        if pending is None:
            return []
        latency = (now - pending.started) * 1000.0
        run = str(run_id)
        records = []
        llm_usage = (response.llm_output or {}).get("token_usage") or {}
        for i, prompt in enumerate(pending.prompts):
            generations = response.generations[i] if i < len(response.generations) else []
            messages: list[BaseMessage] = []
            for j, message in enumerate(prompt):
                if not message.id:
                    message = message.model_copy(update={"id": fingerprint_id(j, message)})
                messages.append(message)
            n_inputs = len(messages)
            usages: list[TokenUsage | None] = [None] * n_inputs
            metadata: list[Mapping[str, Any] | None] = [None] * n_inputs
            latencies: list[float | None] = [None] * n_inputs
            for generation in generations[:1]:
                if not isinstance(generation, ChatGeneration):
                    continue
                output = generation.message
                if isinstance(output, BaseMessageChunk):
                    output = message_chunk_to_message(output)
                if not output.id:
                    output = output.model_copy(update={"id": f"run-{run_id}-{i}"})
                usage = usage_of(output)
                if usage is None and llm_usage and len(pending.prompts) == 1:
                    usage = TokenUsage(
                        input_tokens=int(llm_usage.get("prompt_tokens") or 0),
                        output_tokens=int(llm_usage.get("completion_tokens") or 0),
                    )
                model = model_of(output) or pending.model
                if usage is None:
                    usage = TokenUsage(model=model)
                elif usage.model is None and model is not None:
                    usage = TokenUsage(
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.total_tokens,
                        model,
                        usage.cost,
                    )
                meta: dict[str, Any] = {}
                if pending.parent_run_id is not None:
                    meta["parent_run_id"] = str(pending.parent_run_id)
                if pending.tags:
                    meta["tags"] = pending.tags
                if pending.first_token is not None:
                    meta["time_to_first_token_ms"] = (
                        pending.first_token - pending.started
                    ) * 1000.0
                messages.append(output)
                usages.append(usage)
                metadata.append(meta or None)
                latencies.append(latency)
            records.append(
                _Record(
                    conversation_id=pending.conversation_id,
                    user_id=pending.user_id,
                    agent_id=pending.agent_id,
                    messages=messages,
                    usages=usages,
                    metadata=metadata,
                    run_ids=[run] * len(messages),
                    latencies=latencies,
                )
            )
        return records


def _record_call(store: ConversationStore | AsyncConversationStore, record: _Record) -> Call[Any]:
    """Append the call's messages the conversation does not hold yet."""
    t = store._tables

    def plan_for(known: set[str]) -> AppendPlan:
        keep = [i for i, m in enumerate(record.messages) if m.id not in known]
        return t.planner.plan(
            record.conversation_id,
            [record.messages[i] for i in keep],
            usages=[record.usages[i] for i in keep],
            metadata=[record.metadata[i] for i in keep],
            run_ids=[record.run_ids[i] for i in keep],
            latencies=[record.latencies[i] for i in keep],
            user_id=record.user_id,
            agent_id=record.agent_id,
        )

    plan = plan_for(set())
    return t.call(
        lambda: append_new(t, plan, plan_for, upsert=True),
        transaction=True,
        subject=t.describe("conversation", record.conversation_id),
    )


class _Tracker(Generic[StoreT]):
    """What both trackers share: the store check and the callbacks that only keep
    run bookkeeping (no I/O; the async tracker awaits them, see :func:`_awaited`)."""

    _store_class: ClassVar[type]
    _twin: ClassVar[str]

    def __init__(
        self,
        store: StoreT,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        raise_error: bool = False,
    ) -> None:
        if not isinstance(store, self._store_class):
            other = isinstance(store, (ConversationStore, AsyncConversationStore))
            raise TypeError(
                f"{type(self).__name__} needs {_article(self._store_class.__name__)}"
                + (f"; use {self._twin}" if other else "")
            )
        self.store: StoreT = store
        self.raise_error = raise_error
        self._state = _TrackerState(conversation_id, user_id, agent_id)
        self._locks: dict[str, Any] = {}
        self._locks_guard = threading.Lock()

    def on_chat_model_start(
        self,
        /,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._state.start(
            run_id, parent_run_id, messages, tags, metadata, kwargs.get("invocation_params")
        )

    def on_llm_new_token(self, /, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._state.token(run_id)

    def on_llm_error(self, /, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._state.error(run_id)

    def on_chain_start(
        self,
        /,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._state.child(run_id, parent_run_id)

    def on_chain_end(self, /, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._state.done(run_id)

    def on_chain_error(self, /, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._state.done(run_id)

    def on_tool_start(
        self,
        /,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._state.child(run_id, parent_run_id)

    def on_tool_end(self, /, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._state.done(run_id)

    def on_tool_error(self, /, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._state.done(run_id)


def _article(name: str) -> str:
    return ("an " if name[0] in "AEIOU" else "a ") + name


def _awaited(
    callback: Callable[Concatenate[S, P], None],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, None]]:
    """The async callback of the async tracker that runs ``callback`` (no I/O)."""

    @functools.wraps(callback)
    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> None:
        callback(self, *args, **kwargs)

    return method


class ConversationTracker(_Tracker[ConversationStore], BaseCallbackHandler):
    """Records every chat model call under it into a conversation (sync store).

    Works on sync and async runs (LangChain runs a sync handler's callbacks in
    a worker thread under asyncio) and with streaming.

    Args:
        store: Where conversations are written.
        conversation_id: Record everything into this conversation.
        user_id: Owner of conversations it creates (else the run's
            ``user_id`` metadata).
        agent_id: Agent of conversations it creates (else ``agent_id``
            metadata).
        raise_error: Let a failure to record abort the run (default: LangChain
            logs it and the run goes on).

    Example:
        >>> tracker = ConversationTracker(store, user_id="u1", agent_id="helper")
        >>> graph.invoke(inputs, {"configurable": {"thread_id": "t1"}, "callbacks": [tracker]})
        >>> store.get_conversation("t1").messages
    """

    _store_class = ConversationStore
    _twin = "AsyncConversationTracker with an AsyncConversationStore"

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        for record in self._state.end(run_id, response):
            with self._locks_guard:
                lock = self._locks.setdefault(record.conversation_id, threading.Lock())
            with lock:
                self.store._run(_record_call(self.store, record))


class AsyncConversationTracker(_Tracker[AsyncConversationStore], AsyncCallbackHandler):
    """Asyncio twin of :class:`ConversationTracker`, writing through an
    :class:`~haive_langgraph.memory.AsyncConversationStore`.

    Args:
        store: Where conversations are written.
        **options: As :class:`ConversationTracker`.
    """

    _store_class = AsyncConversationStore
    _twin = "ConversationTracker with a ConversationStore"

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        for record in self._state.end(run_id, response):
            lock = self._locks.setdefault(record.conversation_id, asyncio.Lock())
            async with lock:
                await self.store._arun(_record_call(self.store, record))

    # LangChain awaits an async handler's callbacks: the shared ones, awaitable here
    # (hence the overrides of _Tracker's sync methods).
    on_chat_model_start = _awaited(_Tracker.on_chat_model_start)  # type: ignore[assignment]
    on_llm_new_token = _awaited(_Tracker.on_llm_new_token)  # type: ignore[assignment]
    on_llm_error = _awaited(_Tracker.on_llm_error)  # type: ignore[assignment]
    on_chain_start = _awaited(_Tracker.on_chain_start)  # type: ignore[assignment]
    on_chain_end = _awaited(_Tracker.on_chain_end)  # type: ignore[assignment]
    on_chain_error = _awaited(_Tracker.on_chain_error)  # type: ignore[assignment]
    on_tool_start = _awaited(_Tracker.on_tool_start)  # type: ignore[assignment]
    on_tool_end = _awaited(_Tracker.on_tool_end)  # type: ignore[assignment]
    on_tool_error = _awaited(_Tracker.on_tool_error)  # type: ignore[assignment]
