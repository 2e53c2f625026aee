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
``SessionManager``, the tracker, erasure), so every read is checked against
the conversation's version in PostgreSQL (one round trip; a trigger renews
it in every transaction that changes the conversation's messages). What
follows about invalidation does not bear on their correctness.

Redis is not trusted: every entry is authenticated (HMAC-SHA256 over its
key, version and payload, see :class:`RedisCache`) before anything is
deserialised; an entry that fails is a miss, never loaded.

Correctness comes first: a read never returns what a write that has already
returned replaced, in this process or any other sharing the Redis server.

* **In this process**, a write drops the thread's entries and bumps its
  generation; a read that loaded from PostgreSQL stores its result only if
  the generation did not move meanwhile (a write that raced the read wins).
* **Redis entries** carry the thread's version (a Redis counter the writer
  increments); an entry whose version is not the current one is a miss, and
  a read stores its result only if the version is still the one it saw
  before loading (a compare-and-set script).
* **Other processes' memory**: the writer publishes the invalidation and
  waits until every subscribed process acknowledges it has dropped the
  entries (about one round trip). A process serves from memory only while
  its subscription is provably live: it pings through the subscription
  every ``lease / 4`` and trusts its memory for ``lease`` seconds after each
  ping was sent, since every invalidation published before the ping reached
  it first. A writer whose acknowledgements do not all arrive waits out
  ``lease`` before returning, by which time a process that did not see the
  message has stopped serving from memory.
* **Redis down or unreachable from one process**: every process keeps a
  heartbeat in Redis; when one stops (it cannot reach Redis and may be
  writing), the others stop serving cached entries until it is back (it then
  flushes every cache) or gone for ``member_grace`` seconds. The process
  that lost Redis serves from PostgreSQL, logs one warning, and delays its
  first writes by a lease or so until the others have noticed. A call never
  fails because of the cache.

What remains: a process cut off from Redis for longer than ``member_grace``
(default 60 s) that keeps writing, while the others still reach Redis, can
have its writes served stale by the others until it reconnects or the
entries' ``ttl`` runs out. ``InMemoryCache`` alone (no Redis level) is for a
single process: nothing tells it about other processes' writes.

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
