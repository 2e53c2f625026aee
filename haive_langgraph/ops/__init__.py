"""Operations on a whole database: the schema of every feature, and the tools beside it.

:func:`migrate` creates or upgrades the tables of every feature online, one
step at a time (what ``haive-lg migrate`` runs; :func:`migration_plan` lists
the steps and their locks), :func:`migrate_all` in one transaction,
:func:`check_schema` reports what is applied and what is pending, and
:func:`all_components` is the registry of features those iterate. The subpackages and modules hold the rest: :mod:`~haive_langgraph.ops.backup`
(archives, restore), :mod:`~haive_langgraph.ops.keys` (key rotation, tenant keys),
:mod:`~haive_langgraph.ops.audit` (audit log), :mod:`~haive_langgraph.ops.cache`
(read cache), :mod:`~haive_langgraph.ops.doctor` (health checks) and
:mod:`~haive_langgraph.ops.importers` (imports from other packages). See
``docs/operations.md``.
"""

from __future__ import annotations

from haive_langgraph.ops._migrate import (
    SchemaState,
    all_components,
    check_schema,
    migrate_all,
)
from haive_langgraph.ops._online import (
    MigrationProgress,
    PlannedStep,
    amigrate,
    amigration_plan,
    migrate,
    migration_plan,
)

__all__ = [
    "MigrationProgress",
    "PlannedStep",
    "SchemaState",
    "all_components",
    "amigrate",
    "amigration_plan",
    "check_schema",
    "migrate",
    "migrate_all",
    "migration_plan",
]
