"""What :func:`haive_langgraph.ops.doctor.diagnose` reports: sizes, slow statements, findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from haive_langgraph.ops._fields import field_dict

Severity = Literal["critical", "warning", "info"]
"""How urgent a :class:`Finding` is: ``"critical"``, ``"warning"`` or ``"info"``."""
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the advisor found.

    Attributes:
        code: Stable identifier of the check (``invalid-index`` ...).
        severity: ``critical``, ``warning`` or ``info``.
        title: One line.
        explanation: What is wrong and why it matters.
        fix: SQL statements that fix it; lines starting with ``--`` are steps
            outside SQL.
        object: The table, index or setting concerned.
    """

    code: str
    severity: Severity
    title: str
    explanation: str
    fix: tuple[str, ...] = ()
    object: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self, fix=list(self.fix))


@dataclass(frozen=True, slots=True)
class TableSize:
    """Sizes of one table (bytes) and its row statistics."""

    table: str
    total_bytes: int
    table_bytes: int
    index_bytes: int
    toast_bytes: int
    rows: int
    dead_rows: int

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self)


@dataclass(frozen=True, slots=True)
class TenantSize:
    """Rows and bytes (row data as stored, before indexes) of one tenant in one table."""

    table: str
    tenant_id: str
    rows: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self)


@dataclass(frozen=True, slots=True)
class SlowStatement:
    """A statement from ``pg_stat_statements`` touching our schema."""

    query: str
    calls: int
    mean_ms: float
    total_ms: float
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return field_dict(self, mean_ms=round(self.mean_ms, 3), total_ms=round(self.total_ms, 3))


@dataclass(slots=True)
class DoctorReport:
    """What :func:`diagnose` found.

    Attributes:
        schema: The schema examined.
        server_version: PostgreSQL version.
        tables: Sizes per table, largest first.
        tenants: Sizes per tenant and table, largest first (top 50).
        statements: Slowest statements on our tables (when available).
        findings: Everything found, most severe first.
    """

    schema: str
    server_version: str
    tables: list[TableSize] = field(default_factory=list)
    tenants: list[TenantSize] = field(default_factory=list)
    statements: list[SlowStatement] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def worst(self) -> Severity | None:
        """The most severe finding's severity, or ``None`` when nothing was found."""
        if not self.findings:
            return None
        return min((f.severity for f in self.findings), key=SEVERITY_ORDER.__getitem__)

    @property
    def healthy(self) -> bool:
        """No warning and nothing critical."""
        return self.worst in (None, "info")

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "server_version": self.server_version,
            "healthy": self.healthy,
            "findings": [f.as_dict() for f in self.findings],
            "tables": [t.as_dict() for t in self.tables],
            "tenants": [t.as_dict() for t in self.tenants],
            "statements": [s.as_dict() for s in self.statements],
        }
