"""A tenant's record, settings and quota, validated when built; what a compliance mode turns on.

Pure values: no I/O. :class:`TenantSettings` and :class:`TenantQuota` are
stored as JSON objects in the registry row (``settings`` and ``quota``);
:meth:`TenantSettings.effective` resolves the defaults a compliance mode
turns on into :class:`EffectiveSettings`, what a tenant context applies.
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from haive_langgraph.db._limits import has_lone_surrogate
from haive_langgraph.errors import ConfigurationError

__all__ = [
    "COMPLIANCE_DEFAULTS",
    "ComplianceDefaults",
    "EffectiveSettings",
    "Tenant",
    "TenantPage",
    "TenantQuota",
    "TenantSettings",
    "TenantStatus",
]

TenantStatus = Literal["active", "suspended"]
"""A tenant's status: ``"active"``, or ``"suspended"`` (its context refuses to open)."""
STATUSES: tuple[TenantStatus, ...] = ("active", "suspended")

MAX_DISPLAY_NAME = 255


@dataclass(frozen=True, slots=True)
class ComplianceDefaults:
    """What a compliance mode turns on.

    Attributes:
        require_encryption: Every component a tenant context opens encrypts
            what it writes and refuses to read plaintext frames; without a
            key ring the context refuses to open.
        audit_writes: Changes are recorded by the audit log (``haive-lg
            audit enable``); the context refuses to open while it is off.
        audit_reads: Reads are recorded too (``haive-lg audit enable
            --reads``); the context refuses to open while they are not.
        data_retention_days: The retention when the tenant's settings name
            none.
    """

    require_encryption: bool
    audit_writes: bool
    audit_reads: bool
    data_retention_days: int | None


COMPLIANCE_DEFAULTS: Mapping[str, ComplianceDefaults] = {
    # HIPAA: PHI encrypted at rest, access (reads included) audited; records
    # kept six years (45 CFR 164.316(b)(2)), then deleted.
    "HIPAA": ComplianceDefaults(
        require_encryption=True, audit_writes=True, audit_reads=True, data_retention_days=2190
    ),
    # GDPR: encryption as a security measure (Art. 32), changes audited for
    # accountability (Art. 5(2)), storage limitation (Art. 5(1)(e)): one year
    # unless the tenant sets its own retention.
    "GDPR": ComplianceDefaults(
        require_encryption=True, audit_writes=True, audit_reads=False, data_retention_days=365
    ),
}
"""The defaults each compliance mode turns on (see ``docs/tenants.md``)."""


def _check_limit(value: object, name: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise ConfigurationError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    """A tenant's settings with the defaults of its compliance mode applied.

    Attributes:
        timezone: IANA time zone of the tenant (reports, analytics).
        data_retention_days: Days its data is kept (its own setting, else
            its mode's default; ``None``: kept until deleted).
        compliance_mode: ``"HIPAA"``, ``"GDPR"`` or ``None``.
        require_encryption: See :class:`ComplianceDefaults`.
        audit_writes: See :class:`ComplianceDefaults`.
        audit_reads: See :class:`ComplianceDefaults`.
    """

    timezone: str
    data_retention_days: int | None
    compliance_mode: str | None
    require_encryption: bool
    audit_writes: bool
    audit_reads: bool

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """A tenant's settings.

    Attributes:
        timezone: IANA time zone name (``zoneinfo``), default ``"UTC"``.
        data_retention_days: Days its data is kept (at least 1), ``None``:
            its compliance mode's default, or until deleted.
        compliance_mode: ``"HIPAA"``, ``"GDPR"`` or ``None``; turns on the
            defaults of :data:`COMPLIANCE_DEFAULTS` (see :meth:`effective`).

    Raises:
        ConfigurationError: An unknown time zone, a retention below one
            day, or an unknown compliance mode.
    """

    timezone: str = "UTC"
    data_retention_days: int | None = None
    compliance_mode: str | None = None

    def __post_init__(self) -> None:
        if type(self.timezone) is not str or not self.timezone:
            raise ConfigurationError(f"timezone must be a time zone name, got {self.timezone!r}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as 'UTC' or "
                "'Europe/Paris'"
            ) from None
        _check_limit(self.data_retention_days, "data_retention_days", minimum=1)
        mode = self.compliance_mode
        if mode is not None:
            known = sorted(COMPLIANCE_DEFAULTS)
            if type(mode) is not str or mode.upper() not in COMPLIANCE_DEFAULTS:
                raise ConfigurationError(
                    f"unknown compliance mode {mode!r}: use one of {known} or None"
                )
            object.__setattr__(self, "compliance_mode", mode.upper())

    def effective(self) -> EffectiveSettings:
        """These settings with the defaults of the compliance mode filled in."""
        mode = COMPLIANCE_DEFAULTS.get(self.compliance_mode or "")
        retention = self.data_retention_days
        if retention is None and mode is not None:
            retention = mode.data_retention_days
        return EffectiveSettings(
            timezone=self.timezone,
            data_retention_days=retention,
            compliance_mode=self.compliance_mode,
            require_encryption=mode is not None and mode.require_encryption,
            audit_writes=mode is not None and mode.audit_writes,
            audit_reads=mode is not None and mode.audit_reads,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON object stored in the registry row."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TenantSettings:
        """Settings from a stored JSON object (keys this version does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """A tenant's limits; ``None`` (or absent from the stored JSON) is unlimited.

    Enforced by the database (see ``docs/tenants.md``, "Quotas").

    Attributes:
        max_conversations: Conversations and sessions of the tenant.
        max_sessions: Sessions of the tenant.
        max_checkpoints_per_thread: Checkpoints of one thread.
        max_storage_bytes: Bytes of the stored values over all of the tenant's rows
            (checkpoints, store, conversations).
        max_requests_per_minute: Write transactions per minute (deletes and reads
            are not counted).
        max_tokens_per_month: Tokens recorded per calendar month (UTC).

    Raises:
        ConfigurationError: A limit that is not an int, or is negative.
    """

    max_conversations: int | None = None
    max_sessions: int | None = None
    max_checkpoints_per_thread: int | None = None
    max_storage_bytes: int | None = None
    max_requests_per_minute: int | None = None
    max_tokens_per_month: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_limit(getattr(self, f.name), f.name)

    def as_dict(self) -> dict[str, int]:
        """The JSON object stored in the registry row (the limits that are set)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TenantQuota:
        """A quota from a stored JSON object (keys this version does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Tenant:
    """A registered tenant.

    Attributes:
        tenant_id: Its id, the ``tenant_id`` of all its rows.
        display_name: A name for people.
        status: ``"active"`` or ``"suspended"`` (its context refuses to open).
        settings: Its settings.
        quota: Its limits.
        created_at: When it was registered.
        updated_at: When its record last changed.
    """

    tenant_id: str
    display_name: str = ""
    status: TenantStatus = "active"
    settings: TenantSettings = field(default_factory=TenantSettings)
    quota: TenantQuota = field(default_factory=TenantQuota)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the tenant is active (not suspended)."""
        return self.status == "active"

    @property
    def effective(self) -> EffectiveSettings:
        """Its settings with its compliance mode's defaults applied."""
        return self.settings.effective()

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (``effective``: the settings in force)."""
        return {
            "tenant_id": self.tenant_id,
            "display_name": self.display_name,
            "status": self.status,
            "settings": self.settings.as_dict(),
            "effective": self.effective.as_dict(),
            "quota": self.quota.as_dict(),
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TenantPage:
    """A page of tenants, by id; pass ``next_cursor`` back for the next one."""

    tenants: list[Tenant]
    next_cursor: str | None


def check_display_name(value: object) -> str:
    """``value`` if it is a display name: a str of at most 255 characters, no control ones."""
    if type(value) is not str:
        raise ConfigurationError(f"display_name must be a str, got {type(value).__name__}")
    if len(value) > MAX_DISPLAY_NAME:
        raise ConfigurationError(
            f"display_name is {len(value)} characters long; at most {MAX_DISPLAY_NAME} are allowed"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigurationError(f"display_name {value!r} contains a control character")
    if has_lone_surrogate(value):
        raise ConfigurationError(f"display_name {value!r} contains a lone surrogate (not UTF-8)")
    return value


def check_status(value: object) -> TenantStatus | None:
    """A status filter: ``"active"``, ``"suspended"`` or ``None``."""
    if value is None:
        return None
    for status in STATUSES:
        if value == status:
            return status
    raise ConfigurationError(f"unknown tenant status {value!r}: use 'active' or 'suspended'")
