"""Schema, migrations and statements of the tenant registry (component ``tenants``).

* ``tenants``: one row per registered tenant: its display name, status
  (``active`` or ``suspended``), settings and quota (JSON objects, see
  ``tenants/_types.py``) and timestamps.

An admin table (``Table(..., tenant=False)``): not under the tenant policy
of row-level security (a tenant context reads its own row before binding
anything) and not emptied by tenant erasure (the registry deletes the row
itself, after erasing the tenant's rows); backups archive it.
"""

from __future__ import annotations

from haive_langgraph.db._features import Table
from haive_langgraph.db._migrations import Component, Migration

TENANTS = "tenants"

MIGRATIONS = (
    Migration(
        "tenant registry",
        (
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{TENANTS} (
                tenant_id    text COLLATE "C" PRIMARY KEY CHECK (tenant_id <> ''),
                display_name text NOT NULL DEFAULT '',
                status       text NOT NULL DEFAULT 'active'
                             CHECK (status IN ('active', 'suspended')),
                settings     jsonb NOT NULL DEFAULT '{{{{}}}}',
                quota        jsonb NOT NULL DEFAULT '{{{{}}}}',
                created_at   timestamptz NOT NULL DEFAULT now(),
                updated_at   timestamptz NOT NULL DEFAULT now()
            )
            """,
            f"""
            CREATE INDEX IF NOT EXISTS tenants_status_idx
                ON {{schema}}.{TENANTS} (status, tenant_id)
            """,
        ),
    ),
)

COMPONENT = Component(
    name="tenants",
    migrations=MIGRATIONS,
    tables=(Table(TENANTS, tenant=False),),
)

_COLUMNS = "tenant_id, display_name, status, settings, quota, created_at, updated_at"

INSERT = f"""
INSERT INTO {{schema}}.{TENANTS} (tenant_id, display_name, settings, quota)
VALUES (%(t)s, %(name)s, %(settings)s, %(quota)s)
ON CONFLICT (tenant_id) DO NOTHING
RETURNING {_COLUMNS}
"""

GET = f"""
SELECT {_COLUMNS} FROM {{schema}}.{TENANTS} WHERE tenant_id = %(t)s
"""

# The row of a tenant being erased, locked so no context opens meanwhile.
LOCK = f"""
SELECT {_COLUMNS} FROM {{schema}}.{TENANTS} WHERE tenant_id = %(t)s FOR UPDATE
"""

# One page by id; %(status)s NULL: any status; %(after)s NULL: from the first.
LIST = f"""
SELECT {_COLUMNS} FROM {{schema}}.{TENANTS}
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after)s::text IS NULL OR tenant_id > %(after)s::text COLLATE "C")
ORDER BY tenant_id
LIMIT %(limit)s
"""

# Each of display name, settings and quota changes only when given (not NULL).
UPDATE = f"""
UPDATE {{schema}}.{TENANTS} SET
    display_name = coalesce(%(name)s, display_name),
    settings = coalesce(%(settings)s, settings),
    quota = coalesce(%(quota)s, quota),
    updated_at = now()
WHERE tenant_id = %(t)s
RETURNING {_COLUMNS}
"""

SET_STATUS = f"""
UPDATE {{schema}}.{TENANTS} SET
    status = %(status)s,
    updated_at = CASE WHEN status = %(status)s THEN updated_at ELSE now() END
WHERE tenant_id = %(t)s
RETURNING {_COLUMNS}
"""

DELETE = f"""
DELETE FROM {{schema}}.{TENANTS} WHERE tenant_id = %(t)s
"""

# Whether the audit log records changes and reads (a compliance mode may ask for both).
AUDIT_SETTINGS = """
SELECT to_regclass(%(table)s) IS NOT NULL
"""
AUDIT_FLAGS = """
SELECT coalesce(bool_or(enabled), false), coalesce(bool_or(enabled AND reads), false)
FROM {schema}.audit_settings
"""
