"""Errors of the store (they all derive from :class:`~haive_langgraph.errors.HaiveError`)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from haive_langgraph.errors import HaiveError

# SQLSTATE raised by the usage triggers when a write would exceed a quota.
QUOTA_SQLSTATE = "HQ429"


class QuotaExceededError(HaiveError, RuntimeError):
    """A write would take a tenant over its :class:`ResourceQuota`; nothing was written.

    Attributes:
        tenant_id: The tenant.
        resource: ``"items"``, ``"bytes"`` or ``"writes_per_minute"``.
        limit: The quota.
        value: What the tenant would have reached with the write.
    """

    def __init__(
        self,
        message: str,
        *,
        tenant_id: str = "",
        resource: str = "",
        limit: int | None = None,
        value: int | None = None,
    ) -> None:
        super().__init__(message)
        self.tenant_id = tenant_id
        self.resource = resource
        self.limit = limit
        self.value = value

    @classmethod
    def from_diag(cls, message: str, detail: str | None) -> QuotaExceededError:
        """Build the error from the trigger's message and its JSON detail."""
        info: dict[str, Any] = {}
        if detail:
            try:
                info = json.loads(detail)
            except ValueError:
                info = {}
        return cls(
            message,
            tenant_id=str(info.get("tenant_id", "")),
            resource=str(info.get("resource", "")),
            limit=info.get("limit"),
            value=info.get("value"),
        )


class InvalidFilterError(HaiveError, ValueError):
    """A search filter uses an unsupported operator, path or value."""


def quota_error(exc: psycopg.Error) -> QuotaExceededError | None:
    """The :class:`QuotaExceededError` a usage trigger's error stands for, if it is one."""
    if exc.sqlstate != QUOTA_SQLSTATE:
        return None
    return QuotaExceededError.from_diag(
        exc.diag.message_primary or str(exc), exc.diag.message_detail
    )
