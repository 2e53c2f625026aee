"""Topic threading (issue 23 part 1): purity, sessions opened and routing time.

A labelled stream of interleaved messages on ``--topics`` topics (each
message: two to four keywords of its topic, with probability ``--stray`` one
keyword of another topic, and filler words), routed for one user by
``SessionStore.route_message`` with an embedder that separates topics (one
dimension per topic, one per keyword: a stand-in for a real model, so the
figures measure the routing, not a model). For each threshold: purity (share
of messages in their session's majority topic), sessions opened, and the
time of a routing (embedding excluded: it is a lookup here), p50 and p95.

    python benchmarks/topic_threading.py [--topics 8] [--messages 400] [--stray 0.2]

Uses ``HAIVE_BENCH_DATABASE_URL`` or a fresh embedded server.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from langchain_core.embeddings import Embeddings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, p50, pct, print_table, server

from haive_langgraph.memory import SessionStore, TopicRouting

FILLER = [
    "the",
    "a",
    "my",
    "we",
    "could",
    "please",
    "about",
    "today",
    "again",
    "maybe",
    "also",
    "still",
    "really",
]


def lexicon(topics: int, per_topic: int = 12) -> dict[str, list[str]]:
    return {f"topic{t}": [f"t{t}w{w}" for w in range(per_topic)] for t in range(topics)}


class TopicBag(Embeddings):
    """One dimension per topic (how many of its keywords), one per keyword (half weight)."""

    def __init__(self, words: dict[str, list[str]]) -> None:
        self.words = words
        self.vocabulary = [w for ws in words.values() for w in ws]

    def embed_query(self, text: str) -> list[float]:
        seen = Counter(re.findall(r"\w+", text))
        topics = [float(sum(seen[w] for w in ws)) for ws in self.words.values()]
        return topics + [0.5 * seen[w] for w in self.vocabulary]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


def stream(words: dict[str, list[str]], n: int, stray: float, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = list(words)
    out = []
    for _ in range(n):
        topic = rng.choice(names)
        text = rng.sample(words[topic], rng.randint(2, 4)) + rng.sample(FILLER, 3)
        if rng.random() < stray:
            other = rng.choice([t for t in names if t != topic])
            text.append(rng.choice(words[other]))
        rng.shuffle(text)
        out.append((topic, " ".join(text)))
    return out


def purity(assigned: list[tuple[str, str]]) -> float:
    by_session: dict[str, Counter[str]] = {}
    for session, label in assigned:
        by_session.setdefault(session, Counter())[label] += 1
    return sum(c.most_common(1)[0][1] for c in by_session.values()) / len(assigned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=8)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--stray", type=float, default=0.2)
    parser.add_argument("--thresholds", default="0.2,0.4,0.6,0.8,0.9")
    args = parser.parse_args()
    words = lexicon(args.topics)
    messages = stream(words, args.messages, args.stray, seed=23)
    embedder = TopicBag(words)
    rows = []
    with server() as dsn_server, fresh_database(dsn_server, "topics") as dsn:
        with SessionStore(dsn) as setup:
            setup.setup()
        for threshold in map(float, args.thresholds.split(",")):
            routing = TopicRouting(embedder, threshold=threshold)
            user = f"u-{uuid.uuid4().hex[:8]}"
            assigned, times = [], []
            with SessionStore(dsn, topic_routing=routing) as store:
                for label, text in messages:
                    start = time.perf_counter()
                    r = store.route_message(text, user_id=user)
                    times.append((time.perf_counter() - start) * 1000)
                    assigned.append((r.session_id, label))
            sessions = len({s for s, _ in assigned})
            rows.append(
                (
                    threshold,
                    f"{purity(assigned):.3f}",
                    sessions,
                    f"{p50(times):.2f}",
                    f"{pct(times, 0.95):.2f}",
                )
            )
    print_table(
        f"{args.messages} messages, {args.topics} topics, stray word {args.stray:.0%} "
        "(routing time in ms, embedding included: a dictionary lookup here)",
        ("threshold", "purity", "sessions", "route p50", "route p95"),
        rows,
    )


if __name__ == "__main__":
    main()
