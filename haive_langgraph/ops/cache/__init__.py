"""A read cache in front of the checkpointer and the store: memory, then Redis, then PostgreSQL.

::

    layer = CacheLayer([InMemoryCache(max_bytes=64 << 20, ttl=300),
                        RedisCache("redis://127.0.0.1:6379/0", ttl=300)])
    saver = layer.wrap(PostgresCheckpointer(dsn))      # a CachedCheckpointer
    graph = builder.compile(checkpointer=saver)

:class:`CachedCheckpointer` caches ``get_tuple``: a thread's latest
checkpoint (what every ``invoke`` and ``get_state`` reads first) and
checkpoints read by id. Every write through it (``put``, ``put_writes``,
deletes, copies, branches, prunes, retention) invalidates what it changes
before it returns, and ``put`` reads the new latest checkpoint back into the
cache (write-through), so the next read of an active thread is a hit.

:class:`CachedStore` (``layer.wrap_store(store)``) does the same for a
store's ``get``, through the public ``BaseStore`` batch API (no TTLs, see
its docstring).

:class:`CachedChatHistory` / :class:`AsyncCachedChatHistory`
(``layer.wrap_history(history)``, ``layer.wrap_history_factory(factory)``)
cache a chat history's messages differently: conversations are written by
much that does not go through a history (``ConversationStore``,
``SessionStore``, the tracker, erasure), so every read is checked against
the conversation's version in PostgreSQL (one round trip; a trigger renews
it in every transaction that changes the conversation's messages). What
follows about invalidation does not bear on their correctness.

Entries are keyed by the database (its system identifier, oid and name),
schema, tenant and thread or item: one layer can front several databases.

Redis is not trusted: every entry is authenticated (HMAC-SHA256 over its
key, the counters it was written under, the version it was read at, and its
payload, see :class:`RedisCache`) before anything is deserialised, and an
authentic entry is served only after PostgreSQL confirmed that the thread or
item still has that version (a one-row lookup in ``cache_versions``; every
write through a wrapper gives what it changed a new random version). So
whoever can write to Redis can make reads miss, never make them return an
old, replayed, forged or foreign value.

Correctness comes first: a read never returns what a write that has already
returned replaced, in this process or any other sharing the Redis server.

* **In this process**, a write drops the thread's entries and bumps its
  generation; a read that loaded from PostgreSQL stores its result only if
  the generation did not move meanwhile (a write that raced the read wins).
* **Redis entries** carry the version PostgreSQL gave their thread or item
  (asked before loading, so what is loaded is at least that new) and are
  served only while it is still the current one. Redis's own counters (a
  version per thread, an epoch, a version per tenant) make outdated entries
  cheap misses and keep a slow reader from overwriting a newer entry.
* **Other processes' memory** is served without a round trip: the writer
  publishes the invalidation and waits until every subscribed process
  acknowledges it has dropped the entries (about one round trip; an
  acknowledgement carries a MAC over the message and its random nonce, and
  counts once per process). A process serves from memory only while its
  subscription is provably live: it pings through the subscription every
  ``lease / 4`` and trusts its memory for ``lease`` seconds after each ping
  was sent, since every invalidation published before the ping reached it
  first. A writer whose acknowledgements do not all arrive waits out
  ``lease`` before returning, by which time a process that did not see the
  message has stopped serving from memory.
* **Redis down or unreachable from one process**: every process keeps a
  heartbeat in Redis; when one stops (it cannot reach Redis and may be
  writing), the others stop serving cached entries until it is back (it then
  flushes every cache) or gone for ``member_grace`` seconds. The process
  that lost Redis serves from PostgreSQL, logs one warning, and delays its
  first writes by a lease or so until the others have noticed. A call never
  fails because of the cache.
* **A crypto-shredded tenant** (``KeyRing.forget_tenant``) is dropped from
  every level of every process before the call returns, and the other
  processes' keyrings are told; a process that was not told (the tenant
  shredded by another program) stops serving it from memory as soon as its
  keyring knows, as the uncached read does.

What remains: the memory level of other processes depends on the
invalidation channel. A process cut off from Redis for longer than
``member_grace`` (default 60 s) that keeps writing, while the others still
reach Redis, can have its writes served stale by the others' memory until
it reconnects or the entries' ``ttl`` runs out; the heartbeats live in
Redis, so whoever writes to Redis can also keep a cut-off process looking
alive. The Redis level is not affected (it asks PostgreSQL).
``InMemoryCache`` alone (no Redis level) is for a single process: nothing
tells it about other processes' writes.

Returned tuples are shallow copies of the cached ones: their dicts are new,
the channel values (messages) are shared; treat them as read-only, as
LangGraph does.
"""

from haive_langgraph.ops.cache._checkpointer import CachedCheckpointer
from haive_langgraph.ops.cache._checkpointer import _TupleFormat as _TupleFormat
from haive_langgraph.ops.cache._history import (
    AsyncCachedChatHistory,
    CachedChatHistory,
    CachedHistoryFactory,
)
from haive_langgraph.ops.cache._layer import CacheLayer
from haive_langgraph.ops.cache._levels import CACHE_SECRET_ENV as CACHE_SECRET_ENV
from haive_langgraph.ops.cache._levels import CacheMetrics, InMemoryCache, RedisCache
from haive_langgraph.ops.cache._levels import secret_from_codec as secret_from_codec
from haive_langgraph.ops.cache._store import CachedStore

__all__ = [
    "AsyncCachedChatHistory",
    "CacheLayer",
    "CacheMetrics",
    "CachedChatHistory",
    "CachedCheckpointer",
    "CachedHistoryFactory",
    "CachedStore",
    "InMemoryCache",
    "RedisCache",
]
