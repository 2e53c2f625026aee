"""Supabase: pooler-safe connections, row-level security with Supabase auth, realtime.

What the ``Supabase*`` classes (``checkpointers.SupabaseCheckpointer``,
``stores.SupabaseStore``, ``memory.SupabaseChatMessageHistory`` and their
async twins) add to the PostgreSQL classes lives here, once:

* :func:`supabase_dsn` resolves the server from the environment:
  ``SUPABASE_DB_URL``, or ``SUPABASE_URL`` + ``SUPABASE_DB_PASSWORD`` (a DSN
  for the transaction pooler on port 6543 is built from them);
* :func:`supabase_config` gives settings tuned for Supabase: transaction
  pooler safety on port 6543 (no prepared statements, no session state,
  tenant bound with transaction-local ``set_config``), pooled connections
  recycled well below idle reaping, the ``haive`` schema (never ``public``
  by default);
* :class:`SupabaseSettings` turns ``enable_rls`` / ``tenant_claim`` /
  ``enable_realtime`` / ``realtime_channels`` into one idempotent setup
  operation: grants for ``authenticated`` and ``service_role`` (``anon``
  gets nothing), policies keyed by ``auth.uid()`` or a JWT claim, tables in
  the ``supabase_realtime`` publication, and triggers that ``NOTIFY``;
* :func:`subscribe` / :func:`asubscribe` deliver those notifications to
  Python consumers as :class:`ChangeEvent` values.

See ``docs/supabase.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import AsyncConnection, Connection, sql
from psycopg import conninfo as _conninfo

from haive_langgraph.db import (
    Op,
    PersistenceConfig,
    Step,
    connection_kwargs,
    validate_identifier,
)
from haive_langgraph.db._connections import connect_error
from haive_langgraph.db._dsn import TRANSACTION_POOLER_PORT, normalize_dsn, parse_dsn
from haive_langgraph.db._migrations import LOCK_CLASS_MIGRATIONS
from haive_langgraph.db._tenancy import validate_tenant_id
from haive_langgraph.errors import ConfigurationError

__all__ = [
    "ENV_DB_PASSWORD",
    "ENV_DB_URL",
    "ENV_POOLER_HOST",
    "ENV_REGION",
    "ENV_URL",
    "AsyncSubscription",
    "ChangeEvent",
    "Subscription",
    "SupabaseSettings",
    "SupabaseWarning",
    "asubscribe",
    "channel_name",
    "subscribe",
    "supabase_config",
    "supabase_dsn",
]

logger = logging.getLogger(__name__)

ENV_DB_URL = "SUPABASE_DB_URL"
ENV_URL = "SUPABASE_URL"
ENV_DB_PASSWORD = "SUPABASE_DB_PASSWORD"
ENV_POOLER_HOST = "SUPABASE_POOLER_HOST"
ENV_REGION = "SUPABASE_REGION"

# Supavisor's session mode listens on 5432 of the same host as its
# transaction mode (6543); LISTEN needs a session.
SESSION_POOLER_PORT = "5432"

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

# Pooled connections are recycled after this many idle seconds, well below
# the 5-10 minute idle reaping of the load balancers and proxies in front of
# hosted PostgreSQL (AWS NLB: 350 s); a connection idle for more than 30 s is
# pinged before use, and one the server closed is replaced without an error.
SUPABASE_POOL_MAX_IDLE = 120.0

# The key columns each table's notifications carry (never other columns).
REALTIME_KEYS: Mapping[str, tuple[str, ...]] = {
    "threads": ("thread_id",),
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id"),
    "conversations": ("conversation_id",),
    "conversation_messages": ("conversation_id", "seq"),
    "conversation_participants": ("conversation_id", "user_id"),
    "store_items": ("namespace", "key"),
}
CHANNEL_ALIASES: Mapping[str, str] = {
    "messages": "conversation_messages",
    "participants": "conversation_participants",
    "items": "store_items",
    "store": "store_items",
}

_CLAIM_SEGMENT = re.compile(r"[A-Za-z0-9_:\-]{1,64}")
_PROJECT_HOST = re.compile(r"([a-z0-9]{6,40})\.supabase\.(?:co|in|net)")
_REGION = re.compile(r"[a-z]{2}-[a-z]+-\d")


class SupabaseWarning(UserWarning):
    """A Supabase setting that works but is likely to hurt: read the message."""


# -- connection settings -------------------------------------------------------------


def supabase_dsn(env: Mapping[str, str] | None = None) -> str:
    """The Supabase database DSN from the environment.

    ``SUPABASE_DB_URL`` (the connection string from the dashboard's
    *Connect* panel) wins. Otherwise ``SUPABASE_URL``
    (``https://<ref>.supabase.co``) and ``SUPABASE_DB_PASSWORD`` build a DSN
    for the transaction pooler on port 6543: on ``SUPABASE_POOLER_HOST``
    (e.g. ``aws-0-eu-central-1.pooler.supabase.com``) or
    ``aws-0-<SUPABASE_REGION>.pooler.supabase.com`` as user
    ``postgres.<ref>`` (Supavisor), else on the project's dedicated pooler
    ``db.<ref>.supabase.co:6543`` as user ``postgres``; always with
    ``sslmode=require``.

    Args:
        env: Variables to read (default ``os.environ``).

    Raises:
        ConfigurationError: naming every missing variable, or a
            ``SUPABASE_URL`` that does not name a project.
    """
    env = os.environ if env is None else env
    if url := env.get(ENV_DB_URL, "").strip():
        return normalize_dsn(url, where=f"the variable {ENV_DB_URL}")
    missing = [name for name in (ENV_URL, ENV_DB_PASSWORD) if not env.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"Supabase connection settings missing: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Set {ENV_DB_URL} to the "
            f"connection string from the dashboard (Connect > Transaction pooler), or set "
            f"{ENV_URL} (https://<project-ref>.supabase.co) and {ENV_DB_PASSWORD}"
        )
    host = (urlsplit(env[ENV_URL].strip()).hostname or "").lower()
    match = _PROJECT_HOST.fullmatch(host)
    if match is None:
        raise ConfigurationError(
            f"{ENV_URL} must look like https://<project-ref>.supabase.co (the API URL of a "
            f"hosted project), got host {host or '(none)'!r}; for a local or self-hosted "
            f"Supabase set {ENV_DB_URL} instead"
        )
    ref = match.group(1)
    password = quote(env[ENV_DB_PASSWORD], safe="")
    pooler = env.get(ENV_POOLER_HOST, "").strip()
    region = env.get(ENV_REGION, "").strip().lower()
    if not pooler and region:
        if not _REGION.fullmatch(region):
            raise ConfigurationError(
                f"{ENV_REGION} must be a region such as 'eu-central-1', got {region!r}"
            )
        pooler = f"aws-0-{region}.pooler.supabase.com"
    if pooler:
        user, host = f"postgres.{ref}", pooler
    else:
        user, host = "postgres", f"db.{ref}.supabase.co"
    return (
        f"postgresql://{user}:{password}@{host}:{TRANSACTION_POOLER_PORT}/postgres?sslmode=require"
    )


def supabase_config(config: PersistenceConfig | None = None) -> PersistenceConfig:
    """Settings for Supabase: ``config`` as given, or the defaults tuned for it.

    The defaults are :class:`PersistenceConfig`'s (``HAIVE_*`` variables
    apply) with pooled connections recycled after
    :data:`SUPABASE_POOL_MAX_IDLE` seconds unless ``HAIVE_POOL_MAX_IDLE`` says
    otherwise. Pooler safety follows ``pooler_mode`` (``auto``: on for port
    6543).
    """
    if config is not None:
        return config
    if "HAIVE_POOL_MAX_IDLE" in os.environ:
        return PersistenceConfig()
    return PersistenceConfig(pool_max_idle=SUPABASE_POOL_MAX_IDLE)


def check_pooler(conn: object, config: PersistenceConfig) -> None:
    """Warn when a connection to the transaction pooler (port 6543) may prepare statements."""
    if isinstance(conn, str):
        port = parse_dsn(conn).get("port", "")
        unsafe = config.pooler_mode in ("none", "session")
        how = f"pooler_mode={config.pooler_mode!r}"
    elif isinstance(conn, Connection | AsyncConnection):
        port = str(conn.info.port)
        unsafe = conn.prepare_threshold is not None
        how = f"the connection's prepare_threshold={conn.prepare_threshold}"
    else:
        return
    if unsafe and TRANSACTION_POOLER_PORT in port.split(","):
        warnings.warn(
            f"port 6543 is Supabase's transaction pooler, but {how} turns pooler safety off. "
            "psycopg then prepares statements on the server (after 5 executions; LangGraph's "
            "own savers at once), and a transaction pooler runs each transaction on whichever "
            "server connection is free, so those statements fail with 'prepared statement "
            "\"_pg3_0\" does not exist' or 'already exists'. Use pooler_mode='auto' or "
            "'transaction' (prepare_threshold=None), or the session pooler on port 5432",
            SupabaseWarning,
            stacklevel=4,
        )


# -- setup: grants, policies, realtime -----------------------------------------------


def channel_name(schema: str, tenant_id: str | None = None) -> str:
    """The ``NOTIFY`` channel of a schema's changes, all tenants or one tenant's.

    Hashed so that any schema and tenant id fit PostgreSQL's 63-byte channel
    names; the triggers compute the same (``md5`` in SQL).
    """
    text = schema if tenant_id is None else f"{schema}/{tenant_id}"
    return "haive_" + hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:24]


def _claim_expression(claim: str) -> sql.Composable:
    if claim == "sub":
        return sql.SQL("(SELECT auth.uid())::text")
    path = "{" + ",".join(claim.split(".")) + "}"
    return sql.SQL("(SELECT auth.jwt() #>> {})").format(sql.Literal(path))


@dataclass(frozen=True, slots=True)
class SupabaseSettings:
    """The Supabase options of one class, and the setup operation they imply.

    Attributes:
        tables: Tables of the feature (each with ``tenant_id``); those that
            exist when :meth:`setup_op` runs are set up.
        enable_rls: Let role ``authenticated`` (a user's request, JWT claims
            in ``request.jwt.claims``) use the tables, seeing only rows whose
            ``tenant_id`` equals its claim. ``False`` revokes that again.
        tenant_claim: ``"sub"`` (``auth.uid()``) or a dotted claim path
            (``"org_id"``, ``"app_metadata.org_id"``) read with ``auth.jwt()``.
        enable_realtime: Publish ``realtime_channels`` to Supabase Realtime
            and ``NOTIFY`` their changes (see :func:`subscribe`).
        realtime_channels: Tables (or aliases: ``messages``,
            ``participants``, ``items``) whose changes are published.
        replica_identity: ``"full"`` sends old rows of updates and deletes
            to Realtime (more WAL); ``"default"`` the primary key.
    """

    tables: tuple[str, ...]
    enable_rls: bool = False
    tenant_claim: str = "sub"
    enable_realtime: bool = False
    realtime_channels: tuple[str, ...] = ()
    replica_identity: Literal["default", "full"] = "default"

    @classmethod
    def build(
        cls,
        tables: Sequence[str],
        *,
        enable_rls: bool = False,
        tenant_claim: str = "sub",
        enable_realtime: bool = False,
        realtime_channels: Sequence[str] | None = None,
        default_channels: Sequence[str] = (),
        replica_identity: Literal["default", "full"] = "default",
    ) -> SupabaseSettings:
        """Validate the options of a class whose tables are ``tables``.

        Raises:
            ConfigurationError: an unknown channel, a malformed claim path,
                or channels given without ``enable_realtime``.
        """
        if not isinstance(tenant_claim, str) or not all(
            _CLAIM_SEGMENT.fullmatch(part) for part in tenant_claim.split(".")
        ):
            raise ConfigurationError(
                f"tenant_claim must be 'sub' or a dotted claim path such as "
                f"'app_metadata.org_id' (letters, digits, _ - :), got {tenant_claim!r}"
            )
        if replica_identity not in ("default", "full"):
            raise ConfigurationError(
                f"replica_identity must be 'default' or 'full', got {replica_identity!r}"
            )
        if realtime_channels is not None and not enable_realtime:
            raise ConfigurationError("realtime_channels needs enable_realtime=True")
        if isinstance(realtime_channels, str):
            raise ConfigurationError(
                f"realtime_channels must be a list of channels, got the string {realtime_channels!r}"
            )
        allowed = [t for t in tables if t in REALTIME_KEYS]
        chosen: list[str] = []
        if enable_realtime:
            for name in default_channels if realtime_channels is None else realtime_channels:
                table = CHANNEL_ALIASES.get(name, name) if isinstance(name, str) else name
                if table not in allowed:
                    names = sorted(
                        {a for a, t in CHANNEL_ALIASES.items() if t in allowed} | set(allowed)
                    )
                    raise ConfigurationError(
                        f"unknown realtime channel {name!r} for this class; choose from "
                        f"{', '.join(names)}"
                    )
                if table not in chosen:
                    chosen.append(table)
        return cls(
            tables=tuple(tables),
            enable_rls=bool(enable_rls),
            tenant_claim=tenant_claim,
            enable_realtime=bool(enable_realtime),
            realtime_channels=tuple(chosen),
            replica_identity=replica_identity,
        )

    def connect_args(
        self, conn: Any, config: PersistenceConfig | None
    ) -> tuple[Any, PersistenceConfig]:
        """``conn`` (``None``: :func:`supabase_dsn`) and the Supabase config, checked."""
        config = supabase_config(config)
        if conn is None:
            conn = supabase_dsn()
        check_pooler(conn, config)
        return conn, config

    def check_schema(self, schema: str, *, force: bool) -> None:
        """Refuse ``public`` without ``enable_rls`` unless ``force``; warn when forced."""
        if schema != "public" or self.enable_rls:
            return
        message = (
            "the tables are to be created in schema 'public', which Supabase's REST API "
            "(PostgREST) exposes to every client holding the anon key, and enable_rls is off, "
            "so no Supabase auth policy protects them"
        )
        if not force:
            raise ConfigurationError(
                f"refusing to set up: {message}. Use the default schema 'haive' (not exposed), "
                "pass enable_rls=True, or call setup(force=True) if you really mean it"
            )
        warnings.warn(
            f"!!! {message}. Proceeding because force=True; anon gets no privileges on them, "
            "but review your grants !!!",
            SupabaseWarning,
            stacklevel=3,
        )

    def setup_op(self, schema: str) -> Op[None]:
        """The setup operation (run it in one transaction, after the feature's migrations)."""
        schema = validate_identifier(schema, what="schema name")
        yield Step(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            (LOCK_CLASS_MIGRATIONS, schema),
            fetch="none",
        )
        found = yield Step(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
            (schema, list(self.tables)),
        )
        present = {str(r[0]) for r in found}
        tables = [t for t in self.tables if t in present]
        rows = yield Step("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),))
        roles = {str(r[0]) for r in rows}
        auth = yield Step(
            "SELECT to_regprocedure('auth.uid()') IS NOT NULL, "
            "to_regprocedure('auth.jwt()') IS NOT NULL",
            fetch="one",
        )
        if self.enable_rls:
            needed = "auth.uid()" if self.tenant_claim == "sub" else "auth.jwt()"
            has_fn = bool(auth[0] if self.tenant_claim == "sub" else auth[1])
            gaps = [r for r in ("authenticated",) if r not in roles]
            if not has_fn:
                gaps.append(f"function {needed}")
            if gaps:
                raise ConfigurationError(
                    f"enable_rls needs Supabase's auth setup, missing here: {', '.join(gaps)}. "
                    "Is this a Supabase database? (tests/supabase/supabase_fixture.sql prepares "
                    "a local PostgreSQL like one)"
                )
        ident = sql.Identifier(schema)
        if schema != "public":
            if "anon" in roles:
                yield _ddl("REVOKE ALL ON SCHEMA {} FROM anon", ident)
            for role in ("service_role", "authenticated"):
                if role in roles and (role == "service_role" or self.enable_rls):
                    yield _ddl("GRANT USAGE ON SCHEMA {} TO {}", ident, sql.Identifier(role))
            if "service_role" in roles:
                yield _ddl("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO service_role", ident)
        claim = _claim_expression(self.tenant_claim)
        for table in tables:
            qt = sql.SQL("{}.{}").format(ident, sql.Identifier(table))
            yield _ddl("ALTER TABLE {} ENABLE ROW LEVEL SECURITY", qt)
            if "anon" in roles:
                yield _ddl("REVOKE ALL ON {} FROM anon", qt)
                yield from _policy(NO_ANON_POLICY, qt, "RESTRICTIVE", "anon", sql.SQL("false"))
            if "service_role" in roles:
                yield _ddl("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO service_role", qt)
            if "authenticated" in roles:
                if self.enable_rls:
                    yield _ddl("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO authenticated", qt)
                    predicate = sql.SQL("tenant_id = {}").format(claim)
                    yield from _policy(USER_POLICY, qt, "PERMISSIVE", "authenticated", predicate)
                    # Restrictive too: `haive.tenant_id` (which any session can set)
                    # must not widen what a user's request sees.
                    yield from _policy(
                        USER_ONLY_POLICY, qt, "RESTRICTIVE", "authenticated", predicate
                    )
                else:
                    yield _ddl("REVOKE ALL ON {} FROM authenticated", qt)
                    for name in (USER_POLICY, USER_ONLY_POLICY):
                        yield _ddl("DROP POLICY IF EXISTS {} ON {}", sql.Identifier(name), qt)
        yield from self._realtime_op(schema, tables)

    def _realtime_op(self, schema: str, tables: list[str]) -> Op[None]:
        ident = sql.Identifier(schema)
        channels = [t for t in self.realtime_channels if t in tables]
        for table in tables:
            if table not in REALTIME_KEYS:
                continue
            qt = sql.SQL("{}.{}").format(ident, sql.Identifier(table))
            if table in channels:
                fn = sql.SQL("{}.{}").format(ident, sql.Identifier(f"haive_notify_{table}"))
                yield Step(_notify_function(fn, table), fetch="none", prepare=False)
                yield _ddl(
                    "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} "
                    "FOR EACH ROW EXECUTE FUNCTION {}()",
                    sql.Identifier(NOTIFY_TRIGGER),
                    qt,
                    fn,
                )
                identity = "FULL" if self.replica_identity == "full" else "DEFAULT"
                yield _ddl(f"ALTER TABLE {{}} REPLICA IDENTITY {identity}", qt)
            else:
                yield _ddl("DROP TRIGGER IF EXISTS {} ON {}", sql.Identifier(NOTIFY_TRIGGER), qt)
        publication = yield Step(
            "SELECT puballtables FROM pg_publication WHERE pubname = %s",
            (PUBLICATION,),
            fetch="one",
        )
        if publication is None:
            if channels:
                logger.info(
                    "no %s publication in this database (not Supabase?): realtime channels "
                    "get NOTIFY triggers only",
                    PUBLICATION,
                )
            return None
        if publication[0]:
            return None  # FOR ALL TABLES: every table is published already
        rows = yield Step(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
            (PUBLICATION, schema),
        )
        published = {str(r[0]) for r in rows}
        for table in tables:
            qt = sql.SQL("{}.{}").format(ident, sql.Identifier(table))
            if table in channels and table not in published:
                yield _ddl(f"ALTER PUBLICATION {PUBLICATION} ADD TABLE {{}}", qt)
            elif table not in channels and table in published:
                yield _ddl(f"ALTER PUBLICATION {PUBLICATION} DROP TABLE {{}}", qt)
        return None


def _ddl(template: str, *parts: sql.Composable) -> Step:
    return Step(sql.SQL(template).format(*parts), fetch="none", prepare=False)


def _policy(
    name: str, table: sql.Composable, kind: str, role: str, predicate: sql.Composable
) -> Op[None]:
    policy = sql.Identifier(name)
    yield _ddl("DROP POLICY IF EXISTS {} ON {}", policy, table)
    yield _ddl(
        f"CREATE POLICY {{}} ON {{}} AS {kind} FOR ALL TO {{}} USING ({{}}) WITH CHECK ({{}})",
        policy,
        table,
        sql.Identifier(role),
        predicate,
        predicate,
    )


def _notify_function(fn: sql.Composable, table: str) -> sql.Composed:
    """A trigger function sending ``{schema, table, op, tenant, key}``, never other columns."""

    def keys(row: str) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(c)) for c in REALTIME_KEYS[table]
        )

    return sql.SQL(
        """
        CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $haive$
        DECLARE
            tenant text;
            key jsonb;
            payload text;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                tenant := OLD.tenant_id;
                key := jsonb_build_array({old_keys});
            ELSE
                tenant := NEW.tenant_id;
                key := jsonb_build_array({new_keys});
            END IF;
            payload := jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                'op', lower(TG_OP), 'tenant', tenant, 'key', key)::text;
            IF octet_length(payload) > {limit} THEN
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
    ).format(
        fn=fn, old_keys=keys("OLD"), new_keys=keys("NEW"), limit=sql.Literal(MAX_PAYLOAD_BYTES)
    )


# -- subscribe --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change notified by a realtime channel's trigger.

    Attributes:
        schema: Schema of the table.
        table: The table (``threads``, ``conversation_messages`` ...).
        op: ``"insert"``, ``"update"`` or ``"delete"``.
        tenant_id: Tenant of the row (``None`` when ``truncated``).
        key: The row's key columns (``thread_id``; ``conversation_id`` and
            ``seq``; ``namespace`` and ``key`` ...); ``None`` when ``truncated``.
        truncated: The key was too large for a notification.
    """

    schema: str
    table: str
    op: str
    tenant_id: str | None
    key: tuple[Any, ...] | None
    truncated: bool = False


def _event(payload: str) -> ChangeEvent | None:
    try:
        data = json.loads(payload)
        key = data.get("key")
        return ChangeEvent(
            schema=str(data["schema"]),
            table=str(data["table"]),
            op=str(data["op"]),
            tenant_id=data.get("tenant"),
            key=tuple(key) if isinstance(key, list) else None,
            truncated=bool(data.get("truncated", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("ignoring a malformed change notification: %.200r", payload)
        return None


def listen_dsn(dsn: str, config: PersistenceConfig) -> str:
    """A DSN on which ``LISTEN`` works: Supabase's transaction pooler (6543) becomes its
    session pooler (5432); a DSN forced to transaction mode otherwise is refused."""
    params = parse_dsn(dsn)
    ports = params.get("port", "").split(",")
    if config.pooler_mode in ("none", "session"):
        return dsn
    if TRANSACTION_POOLER_PORT in ports:
        port = ",".join(SESSION_POOLER_PORT if p == TRANSACTION_POOLER_PORT else p for p in ports)
        return _conninfo.make_conninfo(dsn, port=port)
    if config.pooler_mode == "transaction":
        raise ConfigurationError(
            "subscribe needs a session (LISTEN does not survive a transaction-mode pooler): "
            "pass the direct or session-pooler DSN (Supabase: port 5432)"
        )
    return dsn


class _Listener:
    """What the sync and async subscriptions share: channel, filters, DSN."""

    def __init__(
        self,
        conn: str | None,
        schema: str,
        tenant_id: str | None,
        tables: Sequence[str] | None,
        config: PersistenceConfig | None,
    ) -> None:
        self.config = supabase_config(config)
        self.schema = validate_identifier(schema, what="schema name")
        if tenant_id is not None:
            tenant_id = validate_tenant_id(tenant_id, allow_default=True)
        self.tenant_id = tenant_id
        if isinstance(tables, str):
            raise ConfigurationError(f"tables must be a list of tables, got the string {tables!r}")
        self.tables = (
            None if tables is None else frozenset(CHANNEL_ALIASES.get(t, t) for t in tables)
        )
        dsn = supabase_dsn() if conn is None else normalize_dsn(conn, where="the argument conn")
        self.dsn = listen_dsn(dsn, self.config)
        self.channel = channel_name(self.schema, tenant_id)
        kwargs = connection_kwargs(self.dsn, self.config.model_copy(update={"pooler_mode": "none"}))
        kwargs.pop("options", None)  # a session pooler may refuse startup options
        self.kwargs = kwargs
        self.listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        self.pending: deque[ChangeEvent] = deque()

    def take(self, payload: str) -> None:
        """Queue the change ``payload`` describes, if it is one this subscription wants."""
        event = _event(payload)
        if event is None or event.schema != self.schema:
            return
        if self.tables is not None and event.table not in self.tables:
            return
        self.pending.append(event)


class Subscription:
    """Changes of a schema's realtime channels, as :class:`ChangeEvent` values (sync).

    Iterate over it (blocks until the next change) or call :meth:`get` with
    a timeout. A dropped connection is reopened and the channel listened to
    again; changes committed while it was down are not replayed.
    """

    def __init__(
        self,
        conn: str | None = None,
        *,
        schema: str = "haive",
        tenant_id: str | None = None,
        tables: Sequence[str] | None = None,
        config: PersistenceConfig | None = None,
    ) -> None:
        self._l = _Listener(conn, schema, tenant_id, tables, config)
        self._conn: Connection[Any] | None = None
        self._connect()

    @property
    def channel(self) -> str:
        """The ``NOTIFY`` channel listened to."""
        return self._l.channel

    def _connect(self) -> None:
        try:
            conn = psycopg.connect(self._l.dsn, **self._l.kwargs)
        except psycopg.Error as exc:
            raise connect_error(self._l.dsn, exc) from None
        conn.execute(self._l.listen)
        self._conn = conn

    def get(self, timeout: float | None = None) -> ChangeEvent | None:
        """The next change, or ``None`` if none arrives within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reconnected = False
        while not self._l.pending:
            if self._conn is None:
                raise ConfigurationError("this subscription is closed")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                # One packet may hold several notifications: take them all.
                for notify in self._conn.notifies(timeout=left, stop_after=1):
                    self._l.take(notify.payload)
            except psycopg.OperationalError:
                if reconnected:
                    raise
                reconnected = True
                self._conn.close()
                self._connect()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self._l.pending.popleft() if self._l.pending else None

    def __iter__(self) -> Iterator[ChangeEvent]:
        while True:
            event = self.get()
            if event is not None:
                yield event

    def close(self) -> None:
        """Stop listening and close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSubscription:
    """Async twin of :class:`Subscription` (``async for event in sub``; ``await sub.get()``).

    Open it with ``await asubscribe(...)`` or ``async with AsyncSubscription(...)``.
    """

    def __init__(
        self,
        conn: str | None = None,
        *,
        schema: str = "haive",
        tenant_id: str | None = None,
        tables: Sequence[str] | None = None,
        config: PersistenceConfig | None = None,
    ) -> None:
        self._l = _Listener(conn, schema, tenant_id, tables, config)
        self._conn: AsyncConnection[Any] | None = None

    @property
    def channel(self) -> str:
        """The ``NOTIFY`` channel listened to."""
        return self._l.channel

    async def open(self) -> Self:
        """Connect and ``LISTEN`` (idempotent)."""
        if self._conn is None:
            try:
                conn = await AsyncConnection.connect(self._l.dsn, **self._l.kwargs)
            except psycopg.Error as exc:
                raise connect_error(self._l.dsn, exc) from None
            await conn.execute(self._l.listen)
            self._conn = conn
        return self

    async def get(self, timeout: float | None = None) -> ChangeEvent | None:  # noqa: ASYNC109
        """The next change, or ``None`` if none arrives within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reconnected = False
        while not self._l.pending:
            await self.open()
            assert self._conn is not None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                async for notify in self._conn.notifies(timeout=left, stop_after=1):
                    self._l.take(notify.payload)
            except psycopg.OperationalError:
                if reconnected:
                    raise
                reconnected = True
                await self._conn.close()
                self._conn = None
                continue
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self._l.pending.popleft() if self._l.pending else None

    async def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        while True:
            event = await self.get()
            if event is not None:
                yield event

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def subscribe(
    conn: str | None = None,
    *,
    schema: str = "haive",
    tenant_id: str | None = None,
    tables: Sequence[str] | None = None,
    config: PersistenceConfig | None = None,
) -> Subscription:
    """Listen to the changes of the tables set up with ``enable_realtime=True``.

    Args:
        conn: A DSN (``None``: :func:`supabase_dsn`). Supabase's transaction
            pooler (6543) is swapped for its session pooler (5432): ``LISTEN``
            needs a session.
        schema: Schema of the tables.
        tenant_id: Only this tenant's changes (filtered by the server: each
            tenant has its own channel); ``None``: every tenant's.
        tables: Only these tables (or aliases ``messages``, ``items`` ...).
        config: Connection settings.

    Returns:
        An open :class:`Subscription` (close it, or use it in ``with``).

    Example:
        >>> with subscribe(tenant_id=user_id, tables=["messages"]) as changes:
        ...     for change in changes:
        ...         print(change.op, change.key)
    """
    return Subscription(conn, schema=schema, tenant_id=tenant_id, tables=tables, config=config)


async def asubscribe(
    conn: str | None = None,
    *,
    schema: str = "haive",
    tenant_id: str | None = None,
    tables: Sequence[str] | None = None,
    config: PersistenceConfig | None = None,
) -> AsyncSubscription:
    """Async :func:`subscribe`: an open :class:`AsyncSubscription`."""
    sub = AsyncSubscription(conn, schema=schema, tenant_id=tenant_id, tables=tables, config=config)
    return await sub.open()
