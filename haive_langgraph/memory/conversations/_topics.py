"""Topic threading: a message goes to the user's open session whose topic is closest.

A session's topic is the running mean (centroid) of the embeddings of the
messages routed to it, kept in ``conversation_topics``. :meth:`route_message`
embeds an incoming message, compares it (cosine) with the topic of each open
session of the user (owned, live, below its limit, same agent), and appends
it to the best one if its similarity reaches the threshold, else opens a new
session for it. The decision and its score are recorded in the message's
metadata (``"topic_routing"``). Routings of one user are serialised by a
transaction-level advisory lock, so two concurrent messages on a new topic
open one session, not two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from psycopg.types.numeric import Int8

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory.conversations import _messages, _rows
from haive_langgraph.memory.conversations import _sql as S
from haive_langgraph.memory.conversations import _sql_topics as ST
from haive_langgraph.memory.conversations._checks import check_id, check_optional_id, new_id
from haive_langgraph.memory.conversations._client import _Client
from haive_langgraph.memory.conversations._plans import Embed, Plan
from haive_langgraph.memory.conversations._tables import SESSION, ConversationTables
from haive_langgraph.memory.conversations._types import StoredMessage

__all__ = ["RoutedMessage", "TopicRouting"]

METADATA_KEY = "topic_routing"
"""The key of the routing decision in a routed message's metadata."""


@dataclass(frozen=True, slots=True)
class TopicRouting:
    """How :meth:`SessionStore.route_message` threads messages by topic.

    Attributes:
        embeddings: Any LangChain ``Embeddings``; each routed message is
            embedded once (``embed_query`` / ``aembed_query``).
        threshold: Least cosine similarity between a message and a session's
            topic for the message to join that session, in [-1, 1]; below it
            (or with no open session) a new session is opened.
    """

    embeddings: Embeddings
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not callable(getattr(self.embeddings, "embed_query", None)):
            raise ConfigurationError(
                f"TopicRouting.embeddings must be a LangChain Embeddings, got {self.embeddings!r}"
            )
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not -1.0 <= t <= 1.0:
            raise ConfigurationError(f"TopicRouting.threshold must be in [-1, 1], got {t!r}")


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """Where :meth:`SessionStore.route_message` put a message, and why.

    Attributes:
        session_id: The session it was appended to.
        message: The stored message (its metadata holds the decision too).
        decision: ``"joined"`` (an open session's topic was close enough) or
            ``"opened"`` (a new session).
        score: Cosine similarity to the closest open session's topic (the
            chosen one when joined); ``None`` when the user had no open session.
        candidates: How many open sessions were compared.
    """

    session_id: str
    message: StoredMessage
    decision: Literal["joined", "opened"]
    score: float | None
    candidates: int


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _vector(value: Any, dims: int | None = None) -> list[float]:
    """A finite float vector from an embedder (checked)."""
    try:
        vec = [float(x) for x in value]
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"the embedder returned {type(value).__name__}, not a vector of numbers"
        ) from None
    if not vec or not all(math.isfinite(x) for x in vec):
        raise ConfigurationError("the embedder returned an empty vector or non-finite numbers")
    if dims is not None and len(vec) != dims:
        raise ConfigurationError(
            f"the embedder returned a {len(vec)}-dimensional vector, but the session topics "
            f"hold {dims}-dimensional ones: use the embedder the topics were built with"
        )
    return vec


def route(
    t: ConversationTables,
    vector: list[float],
    message: Any,
    *,
    user: str,
    agent: str | None,
    threshold: float,
    new_session: str,
    context: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    ttl: timedelta | None,
    max_messages: int | None,
) -> Op[RoutedMessage]:
    """Append ``message`` to the closest open session of ``user``, or to a new one
    (run in a transaction)."""
    base = {"t": t.tenant_id, "u": user}
    yield Step(
        S.q(ST.LOCK_USER_ROUTING, t.schema), {**base, "class": ST.ROUTING_LOCK_CLASS}, fetch="one"
    )
    rows = yield Step(S.q(ST.OPEN_TOPICS, t.schema), {**base, "agent": agent})
    best: tuple[float, str, list[float], int] | None = None
    for sid, centroid, n in rows:
        if len(centroid) != len(vector):
            _vector(vector, len(centroid))  # raises, naming both sizes
        score = cosine(vector, centroid)
        if best is None or score > best[0]:
            best = (score, sid, list(centroid), int(n))
    if best is not None and best[0] >= threshold:
        score, sid, centroid, n = best
        decision: Literal["joined", "opened"] = "joined"
        # The running mean: each routed message weighs the same.
        centroid = [c + (v - c) / (n + 1) for c, v in zip(centroid, vector, strict=True)]
        count = n + 1
    else:
        sid, decision, centroid, count = new_session, "opened", vector, 1
        yield from _rows.create(
            t,
            sid,
            what=SESSION,
            user_id=user,
            agent_id=agent,
            details=t.encode_details(sid, None, context or {}),
            ttl=ttl,
            max_messages=max_messages,
        )
    score_of = round(best[0], 6) if best is not None else None
    note = {
        "decision": decision,
        "score": score_of,
        "threshold": threshold,
        "candidates": len(rows),
    }
    meta = {**dict(metadata or {}), METADATA_KEY: note}
    plan = t.planner.plan(sid, [message], metadata=[meta], author=user)
    placed = yield from _messages.append(
        t, plan, upsert=False, what=SESSION, actor=user, check_actor=True, returning=True
    )
    (stored,) = _messages.stored(plan, placed)
    topic = {**base, "c": sid, "agent": agent, "centroid": centroid, "n": Int8(count)}
    yield Step(S.q(ST.UPSERT_TOPIC, t.schema), topic, fetch="none")
    return RoutedMessage(sid, stored, decision, score_of, len(rows))


def read_topic(t: ConversationTables, session_id: str) -> Op[tuple[list[float], int] | None]:
    """A session's topic centroid and how many messages built it (``None``: none routed)."""
    row = yield Step(S.q(ST.GET_TOPIC, t.schema), {"t": t.tenant_id, "c": session_id}, fetch="one")
    return (list(row[0]), int(row[1])) if row is not None else None


class TopicCalls(_Client):
    """The session store's topic-threading method, as a plan (see ``_plans.sync_plan``)."""

    _topic_routing: TopicRouting | None
    _default_ttl: timedelta | None
    _max_messages: int | None

    def _route_message(
        self,
        content: str | list[str | dict[str, Any]],
        *,
        user_id: str,
        role: str = "user",
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Plan[RoutedMessage]:
        """Append a message of ``user_id`` to their open session on its topic, or open one.

        The message is embedded (the store's ``topic_routing`` embedder) and
        compared with the topic (running centroid of routed messages) of each
        open session the user owns with ``agent_id``: live, below its
        message limit. It joins the most similar one if the cosine similarity
        reaches the threshold; otherwise a new session is created for it (with
        the store's TTL and limit and ``context``). The decision, score,
        threshold and number of candidates are recorded in the message's
        metadata under ``"topic_routing"``; the session's topic moves toward
        the message. All in one transaction.

        Args:
            content: The message text (or content blocks).
            user_id: The user writing it; owns any session opened.
            role: ``user`` (default), ``ai``, ``system`` ...
            agent_id: Route among this agent's sessions (``None``: sessions without an agent).
            metadata: More metadata for the message.
            message_id: Its id (a new one by default).
            context: Context of a session opened for it.
            session_id: Id of a session opened for it (a new UUID by default).

        Raises:
            ConfigurationError: The store has no ``topic_routing``, or the
                embedder returned a vector of another size than the topics'.
        """
        routing = self._topic_routing
        if routing is None:
            raise ConfigurationError(
                "route_message needs a store created with topic_routing=TopicRouting(embeddings, "
                "threshold=...)"
            )
        t = self._tables
        who = check_id(user_id, "user_id")
        agent = check_optional_id(agent_id, "agent_id")
        opened = check_id(session_id, "session_id") if session_id is not None else new_id()
        if context is not None and not isinstance(context, Mapping):
            raise ConfigurationError(f"context must be a mapping, got {type(context).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ConfigurationError(f"metadata must be a mapping, got {type(metadata).__name__}")
        message = _messages.message_of(role, content, None, message_id, None, None)
        text = message.text if isinstance(message.text, str) else str(message.content)
        ttl, limit = self._default_ttl, self._max_messages

        def plan() -> Plan[RoutedMessage]:
            vector = _vector((yield Embed(routing.embeddings, text)))

            def op() -> Op[RoutedMessage]:
                routed: RoutedMessage = yield from route(
                    t,
                    vector,
                    message,
                    user=who,
                    agent=agent,
                    threshold=float(routing.threshold),
                    new_session=opened,
                    context=context,
                    metadata=metadata,
                    ttl=ttl,
                    max_messages=limit,
                )
                return routed

            subject = f"topic routing of user {who!r}"
            result: RoutedMessage = yield t.call(op, transaction=True, subject=subject, actor=who)
            return result

        return plan()
