"""Schema and migrations of tenant quotas (component ``tenant_quotas``).

Quotas are enforced by the database, in the writing transaction, the way the
store's own quota is (``stores/_sql.py``, ``haive_store_usage``): statement-level
triggers with transition tables charge each statement's change to a per-tenant
counters row, whose update locks it, and refuse with SQLSTATE ``HQ429`` and a
JSON ``DETAIL`` (tenant, resource, limit, current value, attempted value) when a
limit would be passed. The error rolls the statement (and its transaction)
back, so nothing of the refused write remains; writers of one tenant with a
quota queue on its counters row, so concurrent writers never overshoot.

* ``tenant_usage``: one row per *guarded* tenant, a registered tenant whose
  quota sets a limit or that is suspended; it copies the limits from the
  registry row (``tenants.quota``, kept in step by a trigger on ``tenants``)
  and holds the counters: conversation rows, session rows, stored bytes per
  component, tokens of the current calendar month (UTC). Tenants without a
  row (the default tenant ``''``, unregistered tenants, tenants with an empty
  quota) cost nothing as long as no tenant of the schema was ever guarded
  (the triggers' ``WHEN`` reads the sequence numbering these rows, and the
  trigger functions are not called), and one semi-join of the statement's
  rows with this small table afterwards.
* ``tenant_requests``: requests (write transactions) per guarded tenant per
  minute; ``max_requests_per_minute`` is checked against it.

Suspended tenants: inserts of their rows, and updates that change a stored
value's size or put a store item, are refused with SQLSTATE ``HQ403``
(:class:`~haive_langgraph.errors.TenantSuspendedError`); deletes pass, so
erasure and retention still work.

Both tables are admin tables (``Table(..., tenant=False)``): no tenant policy
(a tenant must not edit its own counters), not emptied by tenant erasure
(deleting the registry row deletes them); archived by backups, whose restore
writes data with the triggers disabled, so counters and data stay in step, and
moves the guards' sequence past the restored rows.
"""

from __future__ import annotations

from haive_langgraph.db._features import Table
from haive_langgraph.db._migrations import Component, Migration

USAGE = "tenant_usage"
REQUESTS = "tenant_requests"

# SQLSTATEs of the quota triggers (class "HQ"; HQ429 is also the store's).
QUOTA_SQLSTATE = "HQ429"
SUSPENDED_SQLSTATE = "HQ403"

# The limits of TenantQuota (tenants/_types.py), as stored in ``tenants.quota``.
LIMITS = (
    "max_conversations",
    "max_sessions",
    "max_checkpoints_per_thread",
    "max_storage_bytes",
    "max_requests_per_minute",
    "max_tokens_per_month",
)

_LIMIT_COLUMNS = ",\n".join(f"    {name} bigint" for name in LIMITS)

# Whether a tenant was ever guarded in the schema: the sequence numbering the
# counters rows. The triggers' WHEN reads it (see MAYBE_GUARDED). A restore
# moves it past the restored rows (ops/_restore.py: a column defaulting to
# nextval), so a schema restored with guarded tenants is guarded again.
GUARDS = "tenant_quota_guards"

CREATE_USAGE = f"""
CREATE TABLE IF NOT EXISTS {{schema}}.{USAGE} (
    tenant_id          text COLLATE "C" NOT NULL,
    guard              bigint NOT NULL DEFAULT nextval('{{schema}}.{GUARDS}'),
    suspended          boolean NOT NULL DEFAULT false,
{_LIMIT_COLUMNS},
    conversations      bigint NOT NULL DEFAULT 0,
    sessions           bigint NOT NULL DEFAULT 0,
    checkpoint_bytes   bigint NOT NULL DEFAULT 0,
    store_bytes        bigint NOT NULL DEFAULT 0,
    conversation_bytes bigint NOT NULL DEFAULT 0,
    token_month        timestamptz NOT NULL DEFAULT '-infinity',
    tokens             bigint NOT NULL DEFAULT 0,
    request_xact       xid8,
    new_request        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id)
)
"""

CREATE_REQUESTS = f"""
CREATE TABLE IF NOT EXISTS {{schema}}.{REQUESTS} (
    tenant_id text COLLATE "C" NOT NULL,
    minute    timestamptz NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (tenant_id, minute)
)
"""

# Refuse a write: HQ429 with the JSON detail QuotaExceededError.from_diag reads.
REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.haive_quota_refuse(
    p_tenant text, p_resource text, p_limit bigint, p_current bigint, p_value bigint
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'HQ429',
        MESSAGE = format('tenant %s would reach %s %s, over its quota of %s (it has %s); '
                         'nothing was written',
                         quote_literal(p_tenant), p_value, replace(p_resource, '_', ' '),
                         p_limit, p_current),
        DETAIL = json_build_object('tenant_id', p_tenant, 'resource', p_resource,
                                   'limit', p_limit, 'current', p_current,
                                   'value', p_value)::text;
END
$$
"""

# Charge one statement's change, per guarded tenant, and check the limits of
# what grew. The UPDATE locks each tenant's counters row: concurrent writers
# of a guarded tenant queue here, and each sees the previous one's counts.
# A write transaction counts as one request of the minute: the row remembers
# the transaction it last counted (request_xact; new_request says whether this
# statement is its first). Deletes are not counted nor refused as requests:
# erasure and retention must pass whatever the tenant's rate.
#
# Only the trigger functions are SECURITY DEFINER (they run this as the
# tables' owner); a role calling this, the refresh or the refusal directly
# runs them as itself, with no right to write the counters.
CHARGE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.haive_quota_charge(
    p_kind text, p_op text, p_tenants text[],
    p_conv bigint[], p_sess bigint[], p_bytes bigint[], p_tokens bigint[]
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r        record;
    v_month  timestamptz := date_trunc('month', now(), 'UTC');
    v_conv   bigint;
    v_sess   bigint;
    v_bytes  bigint;
    v_tokens bigint;
    v_n      bigint;
BEGIN
    FOR i IN 1 .. cardinality(p_tenants) LOOP
        v_conv := p_conv[i];
        v_sess := p_sess[i];
        v_bytes := p_bytes[i];
        v_tokens := p_tokens[i];
        UPDATE {schema}.tenant_usage AS u SET
            conversations = u.conversations + v_conv,
            sessions = u.sessions + v_sess,
            checkpoint_bytes = u.checkpoint_bytes
                + CASE WHEN p_kind = 'checkpoints' THEN v_bytes ELSE 0 END,
            store_bytes = u.store_bytes + CASE WHEN p_kind = 'store' THEN v_bytes ELSE 0 END,
            conversation_bytes = u.conversation_bytes
                + CASE WHEN p_kind = 'conversations' THEN v_bytes ELSE 0 END,
            tokens = CASE WHEN v_tokens = 0 THEN u.tokens
                          WHEN u.token_month < v_month THEN v_tokens
                          ELSE u.tokens + v_tokens END,
            token_month = CASE WHEN v_tokens = 0 THEN u.token_month
                               ELSE greatest(u.token_month, v_month) END,
            new_request = p_op <> 'DELETE'
                AND u.request_xact IS DISTINCT FROM pg_current_xact_id(),
            request_xact = CASE WHEN p_op = 'DELETE' THEN u.request_xact
                                ELSE pg_current_xact_id() END
        WHERE u.tenant_id = p_tenants[i]
        RETURNING u.* INTO r;
        CONTINUE WHEN NOT FOUND;
        IF r.suspended AND p_op <> 'DELETE' THEN
            RAISE EXCEPTION USING ERRCODE = 'HQ403',
                MESSAGE = format('tenant %s is suspended: its writes are refused (resume it '
                                 'first); nothing was written', quote_literal(r.tenant_id)),
                DETAIL = json_build_object('tenant_id', r.tenant_id)::text;
        END IF;
        IF v_conv > 0 AND r.conversations > r.max_conversations THEN
            PERFORM {schema}.haive_quota_refuse(r.tenant_id, 'conversations',
                r.max_conversations, r.conversations - v_conv, r.conversations);
        END IF;
        IF v_sess > 0 AND r.sessions > r.max_sessions THEN
            PERFORM {schema}.haive_quota_refuse(r.tenant_id, 'sessions',
                r.max_sessions, r.sessions - v_sess, r.sessions);
        END IF;
        IF v_bytes > 0 AND r.checkpoint_bytes + r.store_bytes + r.conversation_bytes
                > r.max_storage_bytes THEN
            PERFORM {schema}.haive_quota_refuse(r.tenant_id, 'storage_bytes',
                r.max_storage_bytes,
                r.checkpoint_bytes + r.store_bytes + r.conversation_bytes - v_bytes,
                r.checkpoint_bytes + r.store_bytes + r.conversation_bytes);
        END IF;
        IF v_tokens > 0 AND r.tokens > r.max_tokens_per_month THEN
            PERFORM {schema}.haive_quota_refuse(r.tenant_id, 'tokens_per_month',
                r.max_tokens_per_month, r.tokens - v_tokens, r.tokens);
        END IF;
        IF r.new_request THEN
            INSERT INTO {schema}.tenant_requests AS q (tenant_id, minute, n)
            VALUES (r.tenant_id, date_trunc('minute', now()), 1)
            ON CONFLICT (tenant_id, minute) DO UPDATE SET n = q.n + 1
            RETURNING q.n INTO v_n;
            IF v_n > r.max_requests_per_minute THEN
                PERFORM {schema}.haive_quota_refuse(r.tenant_id, 'requests_per_minute',
                    r.max_requests_per_minute, v_n - 1, v_n);
            END IF;
        END IF;
    END LOOP;
END
$$
"""


def _rows_function(
    table: str,
    kind: str,
    *,
    size: str = "0",
    conv: str = "0",
    sess: str = "0",
    tokens: str = "0",
    after: str = "",
) -> str:
    """The statement trigger function of one table's inserts and deletes.

    The expressions (ours, constant) read a transition row as ``r``: ``size``
    its stored bytes, ``conv``/``sess`` whether it is a conversation/session,
    ``tokens`` the tokens an insert records. ``after`` runs after the charge
    (the checkpoints' per-thread limit).

    The trigger's WHEN has let it run only if a tenant was ever guarded; its
    first check is whether a tenant of the statement (one, but for admin work)
    is guarded: one semi-join of the statement's rows with ``tenant_usage``.
    Only then are the rows summed.
    """
    return f"""
CREATE OR REPLACE FUNCTION {{schema}}.haive_quota_{table}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenants text[];
    v_conv    bigint[];
    v_sess    bigint[];
    v_bytes   bigint[];
    v_tokens  bigint[];
    rec       record;
    v_held    bigint;
BEGIN
    -- Each branch reads only the transition table its event has.
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (
            SELECT 1 FROM new_rows AS r
            WHERE r.tenant_id IN (SELECT u.tenant_id FROM {{schema}}.tenant_usage AS u)
        ) THEN
            RETURN NULL;
        END IF;
        SELECT array_agg(x.tenant_id), array_agg(x.c), array_agg(x.s), array_agg(x.b),
               array_agg(x.t)
        INTO v_tenants, v_conv, v_sess, v_bytes, v_tokens
        FROM (
            SELECT r.tenant_id, sum({conv})::bigint AS c, sum({sess})::bigint AS s,
                   sum({size})::bigint AS b, sum({tokens})::bigint AS t
            FROM new_rows AS r
            WHERE r.tenant_id IN (SELECT u.tenant_id FROM {{schema}}.tenant_usage AS u)
            GROUP BY r.tenant_id
        ) AS x;
    ELSE
        IF NOT EXISTS (
            SELECT 1 FROM old_rows AS r
            WHERE r.tenant_id IN (SELECT u.tenant_id FROM {{schema}}.tenant_usage AS u)
        ) THEN
            RETURN NULL;
        END IF;
        SELECT array_agg(x.tenant_id), array_agg(-x.c), array_agg(-x.s), array_agg(-x.b),
               array_agg(0::bigint)
        INTO v_tenants, v_conv, v_sess, v_bytes, v_tokens
        FROM (
            SELECT r.tenant_id, sum({conv})::bigint AS c, sum({sess})::bigint AS s,
                   sum({size})::bigint AS b
            FROM old_rows AS r
            WHERE r.tenant_id IN (SELECT u.tenant_id FROM {{schema}}.tenant_usage AS u)
            GROUP BY r.tenant_id
        ) AS x;
    END IF;
    IF v_tenants IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM {{schema}}.haive_quota_charge(
        '{kind}', TG_OP, v_tenants, v_conv, v_sess, v_bytes, v_tokens);{after}
    RETURN NULL;
END
$$
"""  # noqa: S608 (constants of this module, no values)


def _update_function(table: str, kind: str, size: str) -> str:
    """The row trigger function of one table's updates that change a row's size.

    A row trigger, not a statement one, so that the inserts of an upsert
    (``INSERT ... ON CONFLICT DO UPDATE``, every checkpoint put) fire nothing
    for updates they did not make; its ``WHEN`` skips updates that keep the size.
    """
    delta = f"({size.format(r='NEW')}) - ({size.format(r='OLD')})"
    return f"""
CREATE OR REPLACE FUNCTION {{schema}}.haive_quota_{table}_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM {{schema}}.tenant_usage AS u WHERE u.tenant_id = NEW.tenant_id
    ) THEN
        RETURN NULL;
    END IF;
    PERFORM {{schema}}.haive_quota_charge(
        '{kind}', 'UPDATE', ARRAY[NEW.tenant_id], ARRAY[0::bigint], ARRAY[0::bigint],
        ARRAY[({delta})::bigint], ARRAY[0::bigint]);
    RETURN NULL;
END
$$
"""  # noqa: S608 (constants of this module, no values)


# After a checkpoint insert is charged (the tenant's counters row is locked,
# so inserts of the tenant are serialised), the threads it wrote into are
# checked: their count as the checkpointer keeps it in the thread's registry
# row (updated by the same statement: one key lookup, however long the
# thread), or, for rows written without one, counted.
_PER_THREAD = """
    IF TG_OP = 'INSERT' THEN
        FOR rec IN
            SELECT x.*, (
                SELECT th.checkpoint_count FROM {schema}.threads AS th
                WHERE th.tenant_id = x.tenant_id AND th.thread_id = x.thread_id
            ) AS held
            FROM (
                SELECT n.tenant_id, n.thread_id, count(*) AS added,
                       min(u.max_checkpoints_per_thread) AS lim
                FROM new_rows AS n
                JOIN {schema}.tenant_usage AS u ON u.tenant_id = n.tenant_id
                WHERE u.max_checkpoints_per_thread IS NOT NULL
                GROUP BY n.tenant_id, n.thread_id
            ) AS x
        LOOP
            v_held := rec.held;
            IF v_held IS NULL THEN
                SELECT count(*) INTO v_held FROM {schema}.checkpoints AS c
                WHERE c.tenant_id = rec.tenant_id AND c.thread_id = rec.thread_id;
            END IF;
            IF v_held > rec.lim THEN
                PERFORM {schema}.haive_quota_refuse(rec.tenant_id, 'checkpoints_per_thread',
                    rec.lim, v_held - rec.added, v_held);
            END IF;
        END LOOP;
    END IF;"""

# Tokens an insert records: message rows an append wrote (created in this
# transaction, so ``created_at = now()``), not positions copied or written
# again by clears, branches and merges (they keep their first time).
_TOKENS = """CASE WHEN r.copied OR r.created_at <> now() THEN 0 ELSE (
        SELECT coalesce(sum(coalesce(u.tt, coalesce(u.it, 0) + coalesce(u.ot, 0))), 0)
        FROM unnest(r.input_tokens, r.output_tokens, r.total_tokens) AS u(it, ot, tt)
    ) END"""

# What each table's rows weigh ({r}: the row), and what else they count.
_SIZES = {
    "checkpoints": "octet_length({r}.checkpoint) + octet_length({r}.inline_values::text)",
    "blobs": "octet_length({r}.data)",
    "store_items": "octet_length({r}.value)",
    "conversation_messages": "octet_length({r}.body)",
}
# Updates that fire the row trigger besides those changing the size: a store
# put (it sets updated_at; a TTL refresh on read does not), so a suspended
# tenant cannot overwrite its items with values of the same size.
_ALSO_UPDATED = {"store_items": "OLD.updated_at IS DISTINCT FROM NEW.updated_at"}
# table -> (kind of bytes, the insert/delete function's expressions)
_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "checkpoints": ("checkpoints", {"after": _PER_THREAD}),
    "blobs": ("checkpoints", {}),
    "store_items": ("store", {}),
    "conversations": (
        "conversations",
        {"conv": "1", "sess": "(r.kind IS NOT DISTINCT FROM 'session')::int"},
    ),
    "conversation_messages": ("conversations", {"tokens": _TOKENS}),
}


# The triggers' WHEN: whether a tenant was ever guarded (a counters row ever
# numbered; nextval is not undone by a rollback, so this errs on the side of
# checking). Until then the trigger functions are not even called: the
# executor reads the sequence (readable by every role: granted to PUBLIC; it
# tells nothing but this; a role it was revoked from reads NULL, so it counts
# as guarded) and queues nothing. From then on they run and stop at their
# first check when no tenant is guarded any more.
MAYBE_GUARDED = (
    f"(pg_catalog.pg_sequence_last_value('{{schema}}.{GUARDS}'::regclass) IS NOT NULL "
    f"OR NOT pg_catalog.has_sequence_privilege('{{schema}}.{GUARDS}'::regclass, 'SELECT'))"
)


def _trigger_statements() -> tuple[str, ...]:
    out: list[str] = []
    for table, (kind, exprs) in _TABLES.items():
        size = _SIZES.get(table)
        rows = {"size": size.format(r="r")} if size else {}
        out.append(_rows_function(table, kind, **rows, **exprs))
        for event, transition in (
            ("insert", "NEW TABLE AS new_rows"),
            ("delete", "OLD TABLE AS old_rows"),
        ):
            out.append(
                f"""
CREATE OR REPLACE TRIGGER {table}_quota_{event}
    AFTER {event.upper()} ON {{schema}}.{table} REFERENCING {transition}
    FOR EACH STATEMENT WHEN ({MAYBE_GUARDED})
    EXECUTE FUNCTION {{schema}}.haive_quota_{table}()
"""
            )
        if size:
            when = f"({size.format(r='NEW')}) IS DISTINCT FROM ({size.format(r='OLD')})"
            if table in _ALSO_UPDATED:
                when = f"{when} OR {_ALSO_UPDATED[table]}"
            out.append(_update_function(table, kind, size))
            out.append(
                f"""
CREATE OR REPLACE TRIGGER {table}_quota_update
    AFTER UPDATE ON {{schema}}.{table} FOR EACH ROW
    WHEN ({MAYBE_GUARDED} AND ({when}))
    EXECUTE FUNCTION {{schema}}.haive_quota_{table}_update()
"""
            )
    return tuple(out)


# Recount a guarded tenant's counters from its rows (when it becomes guarded).
REFRESH_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.haive_quota_refresh(p_tenant text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_month timestamptz := date_trunc('month', now(), 'UTC');
BEGIN
    UPDATE {schema}.tenant_usage SET
        conversations = (SELECT count(*) FROM {schema}.conversations AS r
                         WHERE r.tenant_id = p_tenant),
        sessions = (SELECT count(*) FROM {schema}.conversations AS r
                    WHERE r.tenant_id = p_tenant AND r.kind = 'session'),
        checkpoint_bytes = (
            SELECT coalesce(sum(octet_length(r.checkpoint) + octet_length(r.inline_values::text)), 0)
            FROM {schema}.checkpoints AS r WHERE r.tenant_id = p_tenant
        ) + (
            SELECT coalesce(sum(octet_length(r.data)), 0)
            FROM {schema}.blobs AS r WHERE r.tenant_id = p_tenant
        ),
        store_bytes = (SELECT coalesce(sum(octet_length(r.value)), 0)
                       FROM {schema}.store_items AS r WHERE r.tenant_id = p_tenant),
        conversation_bytes = (SELECT coalesce(sum(octet_length(r.body)), 0)
                              FROM {schema}.conversation_messages AS r
                              WHERE r.tenant_id = p_tenant),
        token_month = v_month,
        tokens = (
            SELECT coalesce(sum(coalesce(u.tt, coalesce(u.it, 0) + coalesce(u.ot, 0))), 0)
            FROM {schema}.conversation_messages AS r
            CROSS JOIN LATERAL unnest(r.input_tokens, r.output_tokens, r.total_tokens)
                AS u(it, ot, tt)
            WHERE r.tenant_id = p_tenant AND NOT r.copied AND r.created_at >= v_month
        )
    WHERE tenant_id = p_tenant;
END
$$
"""

# Keep tenant_usage in step with the registry: a tenant whose quota sets a
# limit, or that is suspended, has a row (counted from its rows when it is
# created); any other has none. Deleting a tenant deletes its request counts.
GUARD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {{schema}}.haive_quota_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fresh boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM {{schema}}.tenant_usage WHERE tenant_id = OLD.tenant_id;
        DELETE FROM {{schema}}.tenant_requests WHERE tenant_id = OLD.tenant_id;
        RETURN NULL;
    END IF;
    IF NEW.status <> 'suspended' AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(NEW.quota) AS q
        WHERE q.key = ANY(ARRAY[{", ".join(f"'{name}'" for name in LIMITS)}])
          AND jsonb_typeof(q.value) = 'number'
    ) THEN
        DELETE FROM {{schema}}.tenant_usage WHERE tenant_id = NEW.tenant_id;
        RETURN NULL;
    END IF;
    INSERT INTO {{schema}}.tenant_usage AS u (
        tenant_id, suspended, {", ".join(LIMITS)}
    )
    VALUES (
        NEW.tenant_id, NEW.status = 'suspended',
        {", ".join(f"(NEW.quota ->> '{name}')::bigint" for name in LIMITS)}
    )
    ON CONFLICT (tenant_id) DO UPDATE SET
        suspended = excluded.suspended,
        {", ".join(f"{name} = excluded.{name}" for name in LIMITS)}
    RETURNING (u.xmax = 0) INTO v_fresh;
    IF v_fresh THEN
        PERFORM {{schema}}.haive_quota_refresh(NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$
"""  # noqa: S608 (the names of LIMITS, no values)

MIGRATIONS = (
    Migration(
        "tenant quotas: usage counters, request counts, triggers on every component's tables",
        (
            f"CREATE SEQUENCE IF NOT EXISTS {{schema}}.{GUARDS}",
            CREATE_USAGE,
            f"ALTER SEQUENCE {{schema}}.{GUARDS} OWNED BY {{schema}}.{USAGE}.guard",
            f"GRANT SELECT ON SEQUENCE {{schema}}.{GUARDS} TO PUBLIC",
            CREATE_REQUESTS,
            REFUSE_FUNCTION,
            CHARGE_FUNCTION,
            *_trigger_statements(),
            REFRESH_FUNCTION,
            GUARD_FUNCTION,
            """
            CREATE OR REPLACE TRIGGER tenants_quota
                AFTER INSERT OR UPDATE OR DELETE ON {schema}.tenants
                FOR EACH ROW EXECUTE FUNCTION {schema}.haive_quota_guard()
            """,
            # Tenants registered before this migration.
            """
            UPDATE {schema}.tenants SET quota = quota
            WHERE status = 'suspended' OR quota <> '{{}}'::jsonb
            """,
        ),
    ),
)

COMPONENT = Component(
    name="tenant_quotas",
    migrations=MIGRATIONS,
    requires=("checkpoints", "store", "conversations", "tenants"),
    tables=(Table(USAGE, tenant=False), Table(REQUESTS, tenant=False)),
)
