"""Supabase's schema changes: the versioned migration, and the statements setup reconciles.

What does not depend on a class's options is a migration of the component
``supabase``, run by the one migration runner (versioned, checksummed,
printed by ``migration_script``): a ``NOTIFY`` trigger function per table
that realtime can publish. What does (grants and policies for
``authenticated``, which triggers are attached, the publication's tables,
replica identity) is switched on and off by each ``setup()``, so it cannot
be an append-only migration: :mod:`haive_langgraph.supabase._schema` applies
it with these statements in the runner's transaction, under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping

from haive_langgraph.db._migrations import Component, Migration

PUBLICATION = "supabase_realtime"
ROLES = ("anon", "authenticated", "service_role")

# Our policies, beside db/_tenancy's haive_tenant_isolation (which stays: it
# is what our own application roles use through `haive.tenant_id`).
USER_POLICY = "haive_supabase_user"
USER_ONLY_POLICY = "haive_supabase_user_only"
NO_ANON_POLICY = "haive_supabase_no_anon"
NOTIFY_TRIGGER = "haive_realtime_notify"

# A NOTIFY payload must stay below 8000 bytes, or the write that fires it
# fails; larger keys are sent as null with "truncated": true.
MAX_PAYLOAD_BYTES = 7900

# The key columns each table's notifications carry (never other columns).
REALTIME_KEYS: Mapping[str, tuple[str, ...]] = {
    "threads": ("thread_id",),
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id"),
    "conversations": ("conversation_id",),
    "conversation_messages": ("conversation_id", "seq"),
    "conversation_participants": ("conversation_id", "user_id"),
    "store_items": ("namespace", "key"),
}


def notify_function(table: str) -> str:
    """The name of ``table``'s trigger function (in the schema)."""
    return f"haive_notify_{table}"


def _notify_function_ddl(table: str) -> str:
    """A trigger function sending ``{schema, table, op, tenant, key}``, never other columns."""

    def keys(row: str) -> str:
        return ", ".join(f'{row}."{column}"' for column in REALTIME_KEYS[table])

    return f"""
        CREATE OR REPLACE FUNCTION {{schema}}.{notify_function(table)}() RETURNS trigger
        LANGUAGE plpgsql AS $haive$
        DECLARE
            tenant text;
            key jsonb;
            payload text;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                tenant := OLD.tenant_id;
                key := jsonb_build_array({keys("OLD")});
            ELSE
                tenant := NEW.tenant_id;
                key := jsonb_build_array({keys("NEW")});
            END IF;
            payload := jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                'op', lower(TG_OP), 'tenant', tenant, 'key', key)::text;
            IF octet_length(payload) > {MAX_PAYLOAD_BYTES} THEN
                payload := jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                    'op', lower(TG_OP), 'tenant', NULL, 'key', NULL, 'truncated', true)::text;
            END IF;
            PERFORM pg_notify('haive_' || left(md5(TG_TABLE_SCHEMA), 24), payload);
            PERFORM pg_notify(
                'haive_' || left(md5(TG_TABLE_SCHEMA || '/' || tenant), 24), payload);
            RETURN NULL;
        END
        $haive$
        """


# Append-only: the position is the version (see db/_migrations.py).
MIGRATIONS = (
    Migration(
        "realtime: a NOTIFY trigger function per table realtime can publish",
        tuple(_notify_function_ddl(table) for table in REALTIME_KEYS),
    ),
)

COMPONENT = Component(name="supabase", migrations=MIGRATIONS)

# Statements with {} slots filled by psycopg.sql (identifiers, never values).
REVOKE_SCHEMA_FROM_ANON = "REVOKE ALL ON SCHEMA {} FROM anon"
GRANT_SCHEMA = "GRANT USAGE ON SCHEMA {} TO {}"
GRANT_SEQUENCES = "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO service_role"
ENABLE_RLS = "ALTER TABLE {} ENABLE ROW LEVEL SECURITY"
REVOKE_TABLE = "REVOKE ALL ON {} FROM {}"
GRANT_TABLE = "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}"
DROP_POLICY = "DROP POLICY IF EXISTS {} ON {}"
CREATE_POLICY = "CREATE POLICY {} ON {} AS {} FOR ALL TO {} USING ({}) WITH CHECK ({})"
CREATE_TRIGGER = (
    "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} "
    "FOR EACH ROW EXECUTE FUNCTION {}()"
)
DROP_TRIGGER = "DROP TRIGGER IF EXISTS {} ON {}"
REPLICA_IDENTITY = "ALTER TABLE {} REPLICA IDENTITY {}"
ADD_TO_PUBLICATION = "ALTER PUBLICATION {} ADD TABLE {}"
DROP_FROM_PUBLICATION = "ALTER PUBLICATION {} DROP TABLE {}"

PRESENT_TABLES = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
"""
PRESENT_ROLES = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"
AUTH_FUNCTIONS = """
    SELECT to_regprocedure('auth.uid()') IS NOT NULL, to_regprocedure('auth.jwt()') IS NOT NULL
"""
PUBLICATION_ALL_TABLES = "SELECT puballtables FROM pg_publication WHERE pubname = %s"
PUBLISHED_TABLES = """
    SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s
"""
