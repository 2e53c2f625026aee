"""Statements of the online migration runner and its plan (the locks, an index's state)."""

from __future__ import annotations

# The online-run lock (``LOCK_CLASS_ONLINE``, hash of the schema): the runner's,
# exclusive for its session; the one-transaction runner's, shared, never waited for.
TRY_ONLINE = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
WAIT_ONLINE = "SELECT pg_advisory_lock(%s, hashtext(%s))"
UNLOCK_ONLINE = "SELECT pg_advisory_unlock(%s, hashtext(%s))"
TRY_ONLINE_SHARED = "SELECT pg_try_advisory_xact_lock_shared(%s, hashtext(%s))"

# The session holding the online-run lock of a schema exclusively: another online run.
ONLINE_HOLDER = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted
  AND classid = %s::integer::oid AND objid = hashtext(%s)::oid
"""

# Whether an index is valid (NULL: absent), and the kind of its table ('p': partitioned).
INDEX_STATE = """
SELECT i.indisvalid, (SELECT relkind FROM pg_class WHERE oid = to_regclass(%s))
FROM (SELECT 1) AS one
LEFT JOIN pg_index AS i ON i.indexrelid = to_regclass(%s)
"""

DROP_INVALID_INDEX = "DROP INDEX CONCURRENTLY IF EXISTS {schema}.{index}"

# The partitioned tables of a schema.
PARTITIONED = """
SELECT c.relname::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'p'
"""
