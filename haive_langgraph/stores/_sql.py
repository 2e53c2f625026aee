"""Schema, migrations and statements of the store.

Storage model (see ``docs/store.md``):

* ``store_items``: one row per item. The namespace is a ``text[]`` (segments
  compared exactly, bytewise); the value is a codec frame (``value``), and
  ``doc`` is the JSON document filters run on (the value itself, or the
  fields kept searchable when values are encrypted). ``expires_at`` is
  checked by every read, so an expired item is never returned, swept or not.
* ``store_vectors`` (created by ``setup()`` when an index is configured,
  since its type depends on the dimensions): one row per embedded field of an
  item, referencing the item (deleting an item deletes its vectors).
* ``store_tenants``: quotas and usage counters of tenants that have a quota,
  maintained by statement-level triggers, so limits hold for every writer.
* ``store_vector_config``: the vector index the schema was set up with.

Every table leads its primary key with ``tenant_id`` and is under the
row-level security policy of :mod:`haive_langgraph.db._tenancy`.
"""

from __future__ import annotations

from psycopg import sql

from haive_langgraph.db._features import FramedTable, Table
from haive_langgraph.db._migrations import Component, Migration
from haive_langgraph.db._render import render_sql
from haive_langgraph.db._tenancy import tenant_policy_statements
from haive_langgraph.stores._config import VectorIndexSpec
from haive_langgraph.stores._sql_maintenance import ann_index_ddl as ann_index_ddl
from haive_langgraph.stores._values import row_context

ITEMS = "store_items"
VECTORS = "store_vectors"
TENANTS = "store_tenants"
VECTOR_CONFIG = "store_vector_config"

# The usage trigger: per statement, per tenant with a quota row, the change in
# items, bytes and puts; then the limits, checked only for what grew.
USAGE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.haive_store_usage() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenants  text[];
    d_items  bigint[];
    d_bytes  bigint[];
    d_writes bigint[];
    r        record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.store_tenants) THEN
        RETURN NULL;
    END IF;
    -- Each branch reads only the transition tables its event has.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(x.tenant_id), array_agg(x.n), array_agg(x.b), array_agg(x.n)
        INTO tenants, d_items, d_bytes, d_writes
        FROM (
            SELECT n.tenant_id, count(*) AS n, sum(octet_length(n.value)) AS b
            FROM new_rows AS n
            WHERE n.tenant_id IN (SELECT tenant_id FROM {schema}.store_tenants)
            GROUP BY n.tenant_id
        ) AS x;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(x.tenant_id), array_agg(-x.n), array_agg(-x.b), array_agg(0::bigint)
        INTO tenants, d_items, d_bytes, d_writes
        FROM (
            SELECT o.tenant_id, count(*) AS n, sum(octet_length(o.value)) AS b
            FROM old_rows AS o
            WHERE o.tenant_id IN (SELECT tenant_id FROM {schema}.store_tenants)
            GROUP BY o.tenant_id
        ) AS x;
    ELSE
        -- A put sets updated_at; a TTL refresh on read does not, and is no write.
        SELECT array_agg(x.tenant_id), array_agg(0::bigint), array_agg(x.b), array_agg(x.w)
        INTO tenants, d_items, d_bytes, d_writes
        FROM (
            SELECT n.tenant_id,
                   sum(octet_length(n.value) - octet_length(o.value)) AS b,
                   count(*) FILTER (WHERE n.updated_at IS DISTINCT FROM o.updated_at) AS w
            FROM new_rows AS n
            JOIN old_rows AS o
              ON o.tenant_id = n.tenant_id AND o.namespace = n.namespace AND o.key = n.key
            WHERE n.tenant_id IN (SELECT tenant_id FROM {schema}.store_tenants)
            GROUP BY n.tenant_id
        ) AS x;
    END IF;
    IF tenants IS NULL THEN
        RETURN NULL;
    END IF;
    FOR r IN
        WITH delta AS (
            SELECT * FROM unnest(tenants, d_items, d_bytes, d_writes) AS d(tenant_id, items, bytes, writes)
        )
        UPDATE {schema}.store_tenants AS t SET
            items = t.items + delta.items,
            bytes = t.bytes + delta.bytes,
            window_start = CASE
                WHEN delta.writes > 0 AND t.window_start <= now() - interval '1 minute' THEN now()
                ELSE t.window_start END,
            window_writes = CASE
                WHEN delta.writes > 0 AND t.window_start <= now() - interval '1 minute' THEN delta.writes
                ELSE t.window_writes + delta.writes END
        FROM delta
        WHERE t.tenant_id = delta.tenant_id
        RETURNING t.*, delta.items AS d_items, delta.bytes AS d_bytes, delta.writes AS d_writes
    LOOP
        IF r.d_items > 0 AND r.max_items IS NOT NULL AND r.items > r.max_items THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ429',
                MESSAGE = format('tenant %s would hold %s items, over its quota of %s',
                                 quote_literal(r.tenant_id), r.items, r.max_items),
                DETAIL = json_build_object('tenant_id', r.tenant_id, 'resource', 'items',
                                           'limit', r.max_items, 'value', r.items)::text;
        END IF;
        IF r.d_bytes > 0 AND r.max_bytes IS NOT NULL AND r.bytes > r.max_bytes THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ429',
                MESSAGE = format('tenant %s would hold %s bytes, over its quota of %s',
                                 quote_literal(r.tenant_id), r.bytes, r.max_bytes),
                DETAIL = json_build_object('tenant_id', r.tenant_id, 'resource', 'bytes',
                                           'limit', r.max_bytes, 'value', r.bytes)::text;
        END IF;
        IF r.d_writes > 0 AND r.max_writes_per_minute IS NOT NULL
                AND r.window_writes > r.max_writes_per_minute THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ429',
                MESSAGE = format('tenant %s would make %s writes this minute, over its quota of %s',
                                 quote_literal(r.tenant_id), r.window_writes, r.max_writes_per_minute),
                DETAIL = json_build_object('tenant_id', r.tenant_id, 'resource', 'writes_per_minute',
                                           'limit', r.max_writes_per_minute,
                                           'value', r.window_writes)::text;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$
"""

MIGRATIONS = (
    Migration(
        "store tables",
        (
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{ITEMS} (
                tenant_id   text COLLATE "C" NOT NULL DEFAULT '',
                namespace   text[] COLLATE "C" NOT NULL,
                key         text COLLATE "C" NOT NULL,
                value       bytea NOT NULL,
                doc         jsonb,
                created_at  timestamptz NOT NULL DEFAULT now(),
                updated_at  timestamptz NOT NULL DEFAULT now(),
                ttl_minutes double precision,
                expires_at  timestamptz,
                PRIMARY KEY (tenant_id, namespace, key),
                CHECK (cardinality(namespace) > 0)
            )
            """,
            f"""
            CREATE INDEX IF NOT EXISTS store_items_expires_idx
                ON {{schema}}.{ITEMS} (expires_at) WHERE expires_at IS NOT NULL
            """,
            f"""
            CREATE INDEX IF NOT EXISTS store_items_doc_idx
                ON {{schema}}.{ITEMS} USING gin (doc jsonb_path_ops)
            """,
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{TENANTS} (
                tenant_id             text COLLATE "C" NOT NULL,
                max_items             bigint,
                max_bytes             bigint,
                max_writes_per_minute bigint,
                items                 bigint NOT NULL DEFAULT 0,
                bytes                 bigint NOT NULL DEFAULT 0,
                window_start          timestamptz NOT NULL DEFAULT '-infinity',
                window_writes         bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id)
            )
            """,
            f"""
            CREATE TABLE IF NOT EXISTS {{schema}}.{VECTOR_CONFIG} (
                name       text COLLATE "C" NOT NULL,
                config     jsonb NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (name)
            )
            """,
            USAGE_FUNCTION,
            f"""
            CREATE OR REPLACE TRIGGER store_items_usage_insert AFTER INSERT ON {{schema}}.{ITEMS}
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.haive_store_usage()
            """,
            f"""
            CREATE OR REPLACE TRIGGER store_items_usage_update AFTER UPDATE ON {{schema}}.{ITEMS}
                REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.haive_store_usage()
            """,
            f"""
            CREATE OR REPLACE TRIGGER store_items_usage_delete AFTER DELETE ON {{schema}}.{ITEMS}
                REFERENCING OLD TABLE AS old_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.haive_store_usage()
            """,
            *tenant_policy_statements(ITEMS),
            *tenant_policy_statements(TENANTS),
        ),
    ),
    # Hybrid search: the words of an item's indexed fields, written by the
    # upsert of stores configured with index["hybrid"] (NULL otherwise, so
    # the partial index costs other stores nothing).
    Migration(
        "store text search",
        (
            f"ALTER TABLE {{schema}}.{ITEMS} ADD COLUMN IF NOT EXISTS tsv tsvector",
            f"""
            CREATE INDEX IF NOT EXISTS store_items_tsv_idx
                ON {{schema}}.{ITEMS} USING gin (tsv) WHERE tsv IS NOT NULL
            """,
        ),
    ),
)

# The store's entry in the registry of tables (db/_features.py), in the order
# tenant erasure empties them: vectors reference their items.
TABLES = (
    Table(VECTORS, migrated=False),  # created by setup() for a configured index
    Table(ITEMS),
    Table(TENANTS),
    Table(VECTOR_CONFIG, tenant=False),
)
# `doc` holds the whole value when written without encryption and without
# filter_fields (a projection is the user's declared plaintext and is kept);
# vector rows carry the same doc. Vector memory keeps its memories here too.
FRAMED = (
    FramedTable(
        ITEMS,
        (("tenant_id", "text"), ("namespace", "text[]"), ("key", "text")),
        row_context,
        frame_column="value",
        copy_column="doc",
        copy_tables=(VECTORS,),
    ),
)

COMPONENT = Component(name="store", migrations=MIGRATIONS, tables=TABLES, framed=FRAMED)


def q(template: str, schema: str) -> sql.Composed:
    """Fill ``{schema}`` in a statement template (the db renderer, cached)."""
    return sql.Composed([render_sql(template, schema)])


# -- the vector table (its column type depends on the configuration) ----------------


def vector_ddl(spec: VectorIndexSpec) -> list[str]:
    """Statements creating ``store_vectors`` and its index for ``spec`` (``{schema}`` placeholders).

    Only integers and names of ours (validated against fixed lists) are
    interpolated; nothing here comes from free-form user input.
    """
    column = f"{spec.vector_type}({int(spec.dims)})"
    statements = [
        f"""
        CREATE TABLE IF NOT EXISTS {{schema}}.{VECTORS} (
            tenant_id text COLLATE "C" NOT NULL DEFAULT '',
            namespace text[] COLLATE "C" NOT NULL,
            key       text COLLATE "C" NOT NULL,
            field     text COLLATE "C" NOT NULL,
            indexed   boolean NOT NULL DEFAULT true,
            doc       jsonb,
            embedding {column} NOT NULL,
            PRIMARY KEY (tenant_id, namespace, key, field),
            FOREIGN KEY (tenant_id, namespace, key)
                REFERENCES {{schema}}.{ITEMS} (tenant_id, namespace, key) ON DELETE CASCADE
        )
        """,
        f"""
        CREATE INDEX IF NOT EXISTS store_vectors_pending_idx
            ON {{schema}}.{VECTORS} (tenant_id, namespace) WHERE NOT indexed
        """,
    ]
    if spec.kind != "flat":
        statements.append(ann_index_ddl(spec, concurrently=False))
    statements += list(tenant_policy_statements(VECTORS))
    return statements


CREATE_VECTOR_EXTENSION = "CREATE EXTENSION IF NOT EXISTS vector"

VECTOR_TYPE_OIDS = """
SELECT t.oid::int, t.typarray::int FROM pg_type t WHERE t.oid = to_regtype(%s)
"""

# Whether a text-search configuration (as regconfig would resolve it: a
# schema-qualified name, or one visible on the search path) exists.
TEXT_CONFIG_EXISTS = """
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_ts_config AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.cfgnamespace
    WHERE c.cfgname = %(name)s
      AND CASE WHEN %(schema)s::text IS NULL THEN pg_catalog.pg_ts_config_is_visible(c.oid)
               ELSE n.nspname = %(schema)s END
)
"""

GET_VECTOR_CONFIG = "SELECT config FROM {schema}.store_vector_config WHERE name = %s"

PUT_VECTOR_CONFIG = """
INSERT INTO {schema}.store_vector_config (name, config) VALUES (%s, %s::jsonb)
"""


# The statements, one module per side; importing them here keeps
# ``from haive_langgraph.stores import _sql as S`` the one way to name them.
from haive_langgraph.stores._sql_items import *  # noqa: E402, F403
from haive_langgraph.stores._sql_maintenance import *  # noqa: E402, F403
