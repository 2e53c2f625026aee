"""Audit log: an opt-in, append-only record of changes (and reads) to our tables.

One mechanism for every feature: :func:`enable` attaches statement-level
triggers to every table of the schema (found in the live catalog, so the
tables of any feature are covered; run it again after adding a feature). For
each statement that changes rows, the trigger writes one entry per row in
the same transaction: tenant, user, operation, table, the row's primary key,
time and transaction id. An entry exists exactly when the change committed.

* **User**: the transaction-local setting ``haive.user_id`` when set
  (:func:`set_user_step`, or ``SELECT set_config('haive.user_id', 'u1',
  false)`` on a connection you lend), else the database role.
* **Reads** cannot be seen by triggers. Code that reads on someone's behalf
  calls :func:`record_read_op` (sans-I/O, for a feature's own driver) or
  :meth:`AuditLog.record_read`, which records only when reads are enabled
  (:func:`enable` with ``reads=True``); the flag is cached, so a disabled
  audit log costs one dictionary lookup per read.
* **Append-only**: ``UPDATE``, ``DELETE`` and ``TRUNCATE`` on the log are
  refused by triggers; entries leave only through :func:`prune` (the
  retention function). The owner of the schema can still drop triggers:
  ship the log elsewhere if it must be tamper-proof against its owner.
* **Retention**: its own, set with :func:`enable` (``retention=``) and applied
  by :func:`prune` (``haive-lg audit prune``).

``haive-lg audit`` queries the log; ``haive-lg audit enable|disable|status|prune``.
"""

from __future__ import annotations

from haive_langgraph.ops.audit._log import AuditLog, disable, enable, prune, query, status
from haive_langgraph.ops.audit._ops import (
    AuditEvent,
    AuditStatus,
    record_op,
    record_read_op,
    set_user_step,
)

__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditStatus",
    "disable",
    "enable",
    "prune",
    "query",
    "record_op",
    "record_read_op",
    "set_user_step",
    "status",
]
