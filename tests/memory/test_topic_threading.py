"""Topic threading: SessionStore.route_message on a labelled set of interleaved topics.

The embedder is a keyword bag defined here (one dimension per topic keyword),
so topics are separable and every figure is deterministic. The evaluation
prints purity and sessions opened per threshold (``pytest -s``); the figures
are quoted in docs/conversations.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from langchain_core.embeddings import Embeddings

from haive_langgraph.errors import ConfigurationError
from haive_langgraph.memory import AsyncSessionStore, RoutedMessage, SessionStore, TopicRouting

from .conftest import Side, new_id, rows

TOPICS = {
    "cooking": "recipe oven flour bake pasta sauce garlic dough",
    "travel": "flight hotel passport luggage train visa airport booking",
    "finance": "invoice tax budget loan bank mortgage salary refund",
}
VOCABULARY = [w for words in TOPICS.values() for w in words.split()]


class KeywordBag(Embeddings):
    """A keyword bag that separates topics: one dimension per topic (how many of its
    keywords the text holds), then one per keyword (its count, weighing half)."""

    def embed_query(self, text: str) -> list[float]:
        words = Counter(re.findall(r"[a-z]+", text.lower()))
        topics = [float(sum(words[w] for w in kw.split())) for kw in TOPICS.values()]
        return topics + [0.5 * words[w] for w in VOCABULARY]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


# Three topics, interleaved; some messages borrow a word of another topic.
LABELLED: list[tuple[str, str]] = [
    ("cooking", "I want a pasta recipe for tonight"),
    ("travel", "my flight to Lisbon leaves at nine"),
    ("finance", "the invoice from the plumber is wrong"),
    ("cooking", "should the oven be at 200 for the dough"),
    ("travel", "is my passport enough or do I need a visa"),
    ("finance", "can I deduct that invoice from my tax"),
    ("cooking", "how much flour goes in the dough"),
    ("travel", "the hotel booking shows the wrong date"),
    ("finance", "my bank refused the loan"),
    ("cooking", "add garlic to the sauce"),
    ("travel", "the airport train leaves every 20 minutes"),
    ("finance", "how do I plan a budget with my salary"),
    ("cooking", "bake it for 20 minutes"),
    ("travel", "the hotel lost my luggage and passport with my pasta recipe book"),
    ("finance", "a refund of the tax would help the budget"),
    ("cooking", "the sauce needs more garlic and a pasta recipe"),
    ("travel", "rebook the flight to the airport hotel"),
    ("finance", "the mortgage rate at my bank went up, the hotel invoice too"),
]


def execute(dsn: str, statement: str, *params: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def purity(assigned: list[tuple[str, str]]) -> float:
    """Share of messages in the majority topic of their session."""
    by_session: dict[str, Counter[str]] = {}
    for session, label in assigned:
        by_session.setdefault(session, Counter())[label] += 1
    return sum(c.most_common(1)[0][1] for c in by_session.values()) / len(assigned)


@pytest.fixture(scope="module")
def sync_router(migrated: str) -> Iterator[SessionStore]:
    routing = TopicRouting(KeywordBag(), threshold=0.3)
    with SessionStore(migrated, topic_routing=routing) as store:
        yield store


@pytest.fixture(scope="module")
async def async_router(migrated: str) -> AsyncIterator[AsyncSessionStore]:
    routing = TopicRouting(KeywordBag(), threshold=0.3)
    async with AsyncSessionStore(migrated, topic_routing=routing) as store:
        yield store


@pytest.fixture
def router(kind: str, request: pytest.FixtureRequest) -> Side:
    return Side(request.getfixturevalue(f"{kind}_router"), kind == "async")


async def test_interleaved_topics_are_threaded(router: Side, migrated: str) -> None:
    user = new_id("u")
    assigned: list[tuple[str, str]] = []
    routed: list[RoutedMessage] = []
    for label, text in LABELLED:
        r = await router("route_message", text, user_id=user)
        routed.append(r)
        assigned.append((r.session_id, label))
    sessions = {s for s, _ in assigned}
    print(f"\nthreshold 0.3: purity {purity(assigned):.3f}, sessions opened {len(sessions)}")
    assert len(sessions) == 3
    assert purity(assigned) == 1.0
    # The first message of each topic opened its session; the others joined.
    assert [r.decision for r in routed[:3]] == ["opened"] * 3
    assert all(r.decision == "joined" for r in routed[3:])
    assert routed[0].score is None and routed[0].candidates == 0
    assert routed[1].score == 0.0 and routed[1].candidates == 1
    # Decision and score are on the stored message too.
    page = await router("get_messages", routed[3].session_id, user_id=user)
    (stored,) = [m for m in page.messages if m.message_id == routed[3].message.message_id]
    meta = stored.metadata["topic_routing"]
    assert meta["decision"] == "joined" and meta["score"] == routed[3].score
    assert meta["threshold"] == 0.3 and meta["candidates"] == 3
    assert routed[3].score is not None and routed[3].score >= 0.3
    # The topic is stored with the session: a running mean over its messages.
    got = rows(
        migrated,
        "SELECT n FROM haive.conversation_topics WHERE conversation_id = %s",
        routed[0].session_id,
    )
    assert got == [(6,)]


async def test_sessions_of_other_users_and_agents_are_never_joined(router: Side) -> None:
    alice, bob = new_id("u"), new_id("u")
    a = await router("route_message", "a pasta recipe", user_id=alice)
    b = await router("route_message", "a pasta recipe", user_id=bob)
    c = await router("route_message", "a pasta recipe", user_id=alice, agent_id="chef")
    d = await router("route_message", "pasta sauce", user_id=alice)
    assert len({a.session_id, b.session_id, c.session_id}) == 3
    assert b.decision == c.decision == "opened"
    assert d.session_id == a.session_id and d.decision == "joined"
    assert d.score == pytest.approx(4.25 / 4.5, abs=1e-6)


async def test_expired_or_full_sessions_are_not_open(router: Side, migrated: str) -> None:
    user = new_id("u")
    first = await router("route_message", "a pasta recipe", user_id=user)
    execute(
        migrated,
        "UPDATE haive.conversations SET expires_at = now() - interval '1 second' "
        "WHERE conversation_id = %s",
        first.session_id,
    )
    second = await router("route_message", "a pasta recipe", user_id=user)
    assert second.decision == "opened" and second.candidates == 0
    execute(
        migrated,
        "UPDATE haive.conversations SET max_messages = 1 WHERE conversation_id = %s",
        second.session_id,
    )
    third = await router("route_message", "a pasta recipe", user_id=user)
    assert third.decision == "opened" and third.session_id != second.session_id


async def test_deleting_a_session_deletes_its_topic(router: Side, migrated: str) -> None:
    user = new_id("u")
    r = await router("route_message", "a flight and a hotel", user_id=user)
    await router("delete_session", r.session_id, user_id=user)
    got = rows(
        migrated,
        "SELECT count(*) FROM haive.conversation_topics WHERE conversation_id = %s",
        r.session_id,
    )
    assert got == [(0,)]


def test_evaluation_over_thresholds(migrated: str) -> None:
    """Purity and sessions opened per threshold (printed; the docs quote them)."""
    results = {}
    for threshold in (0.0, 0.3, 0.5, 0.7, 0.9):
        routing = TopicRouting(KeywordBag(), threshold=threshold)
        with SessionStore(migrated, topic_routing=routing) as store:
            user = new_id("u")
            assigned = [
                (store.route_message(text, user_id=user).session_id, label)
                for label, text in LABELLED
            ]
        results[threshold] = (purity(assigned), len({s for s, _ in assigned}))
    print("\nthreshold  purity  sessions (3 topics, 18 messages)")
    for threshold, (p, n) in results.items():
        print(f"{threshold:9}  {p:6.3f}  {n:8}")
    assert results[0.3] == results[0.5] == results[0.7] == (1.0, 3)
    # A high threshold keeps sessions pure by opening more of them: the messages
    # borrowing a word of another topic are too far from their own topic.
    assert results[0.9] == (1.0, 12)
    # Threshold 0: orthogonal topics (similarity 0) still join: one session.
    assert results[0.0] == (pytest.approx(1 / 3), 1)


def test_routing_needs_its_option_and_checks_arguments(migrated: str) -> None:
    with (
        SessionStore(migrated) as plain,
        pytest.raises(ConfigurationError, match="topic_routing"),
    ):
        plain.route_message("hello", user_id="u")
    with pytest.raises(ConfigurationError, match="threshold"):
        TopicRouting(KeywordBag(), threshold=1.5)
    with pytest.raises(ConfigurationError, match="Embeddings"):
        TopicRouting("not an embedder")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="TopicRouting"):
        SessionStore(migrated, topic_routing=0.5)  # type: ignore[arg-type]


def test_another_embedder_size_is_refused(migrated: str) -> None:
    class Short(KeywordBag):
        def embed_query(self, text: str) -> list[float]:
            return super().embed_query(text)[:5]

    user = new_id("u")
    with SessionStore(migrated, topic_routing=TopicRouting(KeywordBag(), 0.3)) as store:
        store.route_message("a pasta recipe", user_id=user)
    with (
        SessionStore(migrated, topic_routing=TopicRouting(Short(), 0.3)) as store,
        pytest.raises(ConfigurationError, match="5-dimensional"),
    ):
        store.route_message("a pasta recipe", user_id=user)


def test_concurrent_messages_on_a_new_topic_open_one_session(migrated: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    user = new_id("u")
    with SessionStore(migrated, topic_routing=TopicRouting(KeywordBag(), 0.3)) as store:

        def send(i: int) -> RoutedMessage:
            return store.route_message(f"pasta recipe number {i}", user_id=user)

        with ThreadPoolExecutor(8) as pool:
            routed = list(pool.map(send, range(8)))
    assert len({r.session_id for r in routed}) == 1
    assert sorted(r.decision for r in routed) == ["joined"] * 7 + ["opened"]
