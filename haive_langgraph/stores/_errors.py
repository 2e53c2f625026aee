"""How the store tells its errors (the classes are in :mod:`haive_langgraph.errors`)."""

from __future__ import annotations

import psycopg

from haive_langgraph.errors import InvalidFilterError, QuotaExceededError

__all__ = ["QUOTA_SQLSTATE", "InvalidFilterError", "QuotaExceededError", "quota_error"]

# SQLSTATE raised by the usage triggers when a write would exceed a quota.
QUOTA_SQLSTATE = "HQ429"


def quota_error(exc: psycopg.Error) -> QuotaExceededError | None:
    """The :class:`QuotaExceededError` a usage trigger's error stands for, if it is one."""
    if exc.sqlstate != QUOTA_SQLSTATE:
        return None
    return QuotaExceededError.from_diag(
        exc.diag.message_primary or str(exc), exc.diag.message_detail
    )
