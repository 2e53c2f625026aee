"""Conversation memory: LangChain chat histories, conversations with token usage
and cost, sessions (TTL, limits, branches, merges, participants) and automatic
tracking of model calls.

Everything lives in the ``conversations``, ``conversation_messages`` and
``conversation_participants`` tables (migrations component ``"conversations"``,
see ``_sql.py``); a history's ``session_id``, a conversation id and a session id
name the same kind of row. The operations are written once as sans-I/O
generators, grouped by what they act on (``_rows``, ``_messages``,
``_erasure``, ``_participants``, ``_branches``); the public classes only build
and run :class:`~haive_langgraph.db.Call` values. See ``docs/conversations.md``.

The public classes and types are exported by :mod:`haive_langgraph.memory`
(import them from there); this package holds their modules.
"""
