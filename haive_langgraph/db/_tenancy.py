"""Tenant context for row-level security, shared by every table that carries ``tenant_id``.

Every table leads its primary key with ``tenant_id``. Our own statements
always filter on it explicitly; row-level security makes the database enforce
the same boundary for any SQL run by an application role, including
hand-written SQL:

* the policy (:func:`tenant_policy_statements`) admits a row when its
  ``tenant_id`` equals the transaction-local setting :data:`TENANT_SETTING`
  (``haive.tenant_id``). An unset or empty setting admits nothing, so a
  session that forgot to bind a tenant sees no rows at all;
* :func:`set_tenant_step` sets it with ``set_config(..., true)``: local to
  the current transaction, so it never leaks to the next user of a pooled
  connection and is safe behind transaction-mode poolers;
* :func:`row_security_step` asks whether row security applies to the
  connection's role at all. Table owners and superusers bypass it (unless
  the table is altered with ``FORCE ROW LEVEL SECURITY``); for them the
  setting is skipped and the explicit ``tenant_id`` filters do the work.

A feature adds ``tenant_policy_statements("its_table")`` to its migrations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from haive_langgraph.db._driver import Step
from haive_langgraph.db._limits import MAX_ID_BYTES, utf8_len
from haive_langgraph.db._limits import has_lone_surrogate as has_lone_surrogate
from haive_langgraph.errors import ConfigurationError

TENANT_SETTING = "haive.tenant_id"
"""The transaction-local setting row-level security policies read."""

POLICY_NAME = "haive_tenant_isolation"

# What a row's tenant must equal. ``nullif`` turns the empty value a custom
# setting reverts to after a transaction-local ``set_config`` into NULL,
# which equals nothing.
TENANT_PREDICATE = f"tenant_id = nullif(current_setting('{TENANT_SETTING}', true), '')"

MAX_TENANT_ID_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def tenant_policy_statements(table: str) -> tuple[str, ...]:
    """Migration statements that put ``{schema}.<table>`` under tenant isolation.

    Args:
        table: A table of ours (a constant, never user input) with a
            ``tenant_id`` column.

    Returns:
        Statements with the ``{schema}`` placeholder, for a :class:`Migration`.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
        raise ValueError(f"not a plain table name: {table!r}")
    return (
        f"ALTER TABLE {{schema}}.{table} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {{schema}}.{table}",
        f"""
        CREATE POLICY {POLICY_NAME} ON {{schema}}.{table}
            USING ({TENANT_PREDICATE})
            WITH CHECK ({TENANT_PREDICATE})
        """,
    )


@dataclass(frozen=True, slots=True)
class TenantScope:
    """The tenant a call acts for, for row-level security.

    Attributes:
        table: A qualified table of the feature (``schema.table``, quoted as
            needed) whose row security decides whether the database must be
            told the tenant: asked once per connection, and skipped for
            roles it does not apply to (table owners, superusers).
        tenant_id: The tenant; ``""`` (the default tenant) cannot be bound.
    """

    table: str
    tenant_id: str

    def prelude(self, active: bool) -> tuple[Step, ...]:
        """The statements to send before the call's statements."""
        if not active:
            return ()
        if not self.tenant_id:
            raise ConfigurationError(
                f"row-level security applies to this connection's role on {self.table}, and "
                "the default tenant ('') can read nothing under it: set tenant_id (or use "
                "for_tenant(...)), or connect as the tables' owner for admin work"
            )
        return (set_tenant_step(self.tenant_id),)


def set_tenant_step(tenant_id: str) -> Step:
    """The statement binding the current transaction to ``tenant_id``.

    Run it in the same transaction as the statements it guards (an explicit
    transaction, or a pipeline before its sync).
    """
    return Step("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant_id), fetch="none")


def row_security_step(qualified_table: str) -> Step:
    """One row: whether row security applies to this session on the table (NULL if absent)."""
    return Step(
        "SELECT CASE WHEN to_regclass(%s) IS NULL THEN NULL "
        "ELSE row_security_active(to_regclass(%s)) END",
        (qualified_table, qualified_table),
        fetch="one",
    )


def validate_tenant_id(value: object, *, allow_default: bool = False) -> str:
    """Return ``value`` if it is a plain tenant id, else raise.

    A plain tenant id is a ``str`` (not a subclass), 1-255 characters and at
    most 512 bytes of UTF-8 (``db._limits.MAX_ID_BYTES``), with no control
    characters and no lone surrogates (PostgreSQL stores UTF-8). ``""`` (the
    default tenant of single-tenant deployments) is accepted only with
    ``allow_default``.

    Raises:
        ConfigurationError: naming what is wrong with the value.
    """
    if type(value) is not str:
        raise ConfigurationError(
            f"tenant_id must be a plain str, got {type(value).__name__} ({value!r:.80})"
        )
    if not value:
        if allow_default:
            return value
        raise ConfigurationError("tenant_id must not be empty")
    if len(value) > MAX_TENANT_ID_LENGTH:
        raise ConfigurationError(
            f"tenant_id is {len(value)} characters long; at most {MAX_TENANT_ID_LENGTH} are allowed"
        )
    if len(value) * 4 > MAX_ID_BYTES and utf8_len(value) > MAX_ID_BYTES:
        raise ConfigurationError(
            f"tenant_id is {utf8_len(value):,} bytes long (UTF-8); at most {MAX_ID_BYTES} "
            "are allowed"
        )
    if _CONTROL.search(value):
        raise ConfigurationError(f"tenant_id {value!r} contains a control character")
    if has_lone_surrogate(value):
        raise ConfigurationError(f"tenant_id {value!r} contains a lone surrogate (not UTF-8)")
    return value
