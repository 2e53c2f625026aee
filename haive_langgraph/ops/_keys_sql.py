"""Schema of key management: wrapped tenant keys and key rotation's resume points."""

from __future__ import annotations

from haive_langgraph.db._features import Table
from haive_langgraph.db._migrations import Component, Migration

# The table of wrapped tenant keys; rotation re-wraps them under the global
# primary key, status counts them by wrapping key.
TENANT_KEYS = "tenant_keys"
# One row per entry being rotated: its resume point.
PROGRESS_TABLE = "key_rotation"

MIGRATIONS = (
    Migration(
        "tenant keys and key rotation progress",
        (
            """
                CREATE TABLE IF NOT EXISTS {schema}.tenant_keys (
                    tenant_id  text COLLATE "C" NOT NULL PRIMARY KEY,
                    keys       jsonb NOT NULL DEFAULT '[]',
                    destroyed  boolean NOT NULL DEFAULT false,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """,
            """
                CREATE TABLE IF NOT EXISTS {schema}.key_rotation (
                    table_name text COLLATE "C" NOT NULL PRIMARY KEY,
                    cursor     jsonb,
                    rewritten  bigint NOT NULL DEFAULT 0,
                    started_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """,
        ),
    ),
    Migration(
        "key rotation progress names the keys it rotates to",
        ("ALTER TABLE {schema}.key_rotation ADD COLUMN IF NOT EXISTS target text",),
    ),
)

COMPONENT = Component(
    name="keys",
    migrations=MIGRATIONS,
    tables=(
        # Keyed by tenant but not the tenant's data: erasure leaves a tenant's
        # keys (crypto-shredding destroys them), and no tenant reads them.
        Table(TENANT_KEYS, tenant=False),
        Table(PROGRESS_TABLE, tenant=False),
    ),
)
