"""A Supabase class's options, and the setup they imply: grants, policies, realtime.

:class:`SupabaseSettings` validates ``enable_rls`` / ``tenant_claim`` /
``enable_realtime`` / ``realtime_channels`` / ``replica_identity`` once, and
:meth:`SupabaseSettings.setup_op` runs the migration runner on the
``supabase`` component (its lock, its versioned DDL), then, in the same
transaction, reconciles what the options switch on or off: grants for
``authenticated`` and ``service_role`` (``anon`` gets nothing), policies keyed
by ``auth.uid()`` or a JWT claim, tables in the ``supabase_realtime``
publication, and the triggers that ``NOTIFY``.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from haive_langgraph.db._driver import Op, Step
from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.db._migrations import migrate_op
from haive_langgraph.errors import ConfigurationError
from haive_langgraph.supabase import _sql as S
from haive_langgraph.supabase._env import SupabaseWarning

logger = logging.getLogger(__name__)

CHANNEL_ALIASES: Mapping[str, str] = {
    "messages": "conversation_messages",
    "participants": "conversation_participants",
    "items": "store_items",
    "store": "store_items",
}

_CLAIM_SEGMENT = re.compile(r"[A-Za-z0-9_:\-]{1,64}")


def _claim_expression(claim: str) -> sql.Composable:
    if claim == "sub":
        return sql.SQL("(SELECT auth.uid())::text")
    path = "{" + ",".join(claim.split(".")) + "}"
    return sql.SQL("(SELECT auth.jwt() #>> {})").format(sql.Literal(path))


def _ddl(template: str, *parts: sql.Composable) -> Step:
    return Step(sql.SQL(template).format(*parts), fetch="none", prepare=False)


def _policy(
    name: str, table: sql.Composable, kind: str, role: str, predicate: sql.Composable
) -> Op[None]:
    policy = sql.Identifier(name)
    yield _ddl(S.DROP_POLICY, policy, table)
    yield _ddl(
        S.CREATE_POLICY, policy, table, sql.SQL(kind), sql.Identifier(role), predicate, predicate
    )


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
        allowed = [t for t in tables if t in S.REALTIME_KEYS]
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
            stacklevel=5,
        )

    def setup_op(self, schema: str) -> Op[None]:
        """The setup operation (run it in one transaction, after the feature's migrations)."""
        schema = validate_identifier(schema, what="schema name")
        yield from migrate_op([S.COMPONENT], schema)  # takes the migrations lock first
        found = yield Step(S.PRESENT_TABLES, (schema, list(self.tables)))
        present = {str(r[0]) for r in found}
        tables = [t for t in self.tables if t in present]
        rows = yield Step(S.PRESENT_ROLES, (list(S.ROLES),))
        roles = {str(r[0]) for r in rows}
        auth = yield Step(S.AUTH_FUNCTIONS, fetch="one")
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
        yield from self._grants_op(schema, tables, roles)
        yield from self._realtime_op(schema, tables)

    def _grants_op(self, schema: str, tables: list[str], roles: set[str]) -> Op[None]:
        ident = sql.Identifier(schema)
        if schema != "public":
            if "anon" in roles:
                yield _ddl(S.REVOKE_SCHEMA_FROM_ANON, ident)
            for role in ("service_role", "authenticated"):
                if role in roles and (role == "service_role" or self.enable_rls):
                    yield _ddl(S.GRANT_SCHEMA, ident, sql.Identifier(role))
            if "service_role" in roles:
                yield _ddl(S.GRANT_SEQUENCES, ident)
        claim = _claim_expression(self.tenant_claim)
        anon, authenticated = sql.Identifier("anon"), sql.Identifier("authenticated")
        for table in tables:
            qt = sql.Identifier(schema, table)
            yield _ddl(S.ENABLE_RLS, qt)
            if "anon" in roles:
                yield _ddl(S.REVOKE_TABLE, qt, anon)
                yield from _policy(S.NO_ANON_POLICY, qt, "RESTRICTIVE", "anon", sql.SQL("false"))
            if "service_role" in roles:
                yield _ddl(S.GRANT_TABLE, qt, sql.Identifier("service_role"))
            if "authenticated" not in roles:
                continue
            if self.enable_rls:
                yield _ddl(S.GRANT_TABLE, qt, authenticated)
                predicate = sql.SQL("tenant_id = {}").format(claim)
                yield from _policy(S.USER_POLICY, qt, "PERMISSIVE", "authenticated", predicate)
                # Restrictive too: `haive.tenant_id` (which any session can set)
                # must not widen what a user's request sees.
                yield from _policy(
                    S.USER_ONLY_POLICY, qt, "RESTRICTIVE", "authenticated", predicate
                )
            else:
                yield _ddl(S.REVOKE_TABLE, qt, authenticated)
                for name in (S.USER_POLICY, S.USER_ONLY_POLICY):
                    yield _ddl(S.DROP_POLICY, sql.Identifier(name), qt)

    def _realtime_op(self, schema: str, tables: list[str]) -> Op[None]:
        channels = [t for t in self.realtime_channels if t in tables]
        trigger = sql.Identifier(S.NOTIFY_TRIGGER)
        for table in tables:
            if table not in S.REALTIME_KEYS:
                continue
            qt = sql.Identifier(schema, table)
            if table in channels:
                fn = sql.Identifier(schema, S.notify_function(table))
                yield _ddl(S.CREATE_TRIGGER, trigger, qt, fn)
                identity = "FULL" if self.replica_identity == "full" else "DEFAULT"
                yield _ddl(S.REPLICA_IDENTITY, qt, sql.SQL(identity))
            else:
                yield _ddl(S.DROP_TRIGGER, trigger, qt)
        publication = yield Step(S.PUBLICATION_ALL_TABLES, (S.PUBLICATION,), fetch="one")
        if publication is None:
            if channels:
                logger.info(
                    "no %s publication in this database (not Supabase?): realtime channels "
                    "get NOTIFY triggers only",
                    S.PUBLICATION,
                )
            return None
        if publication[0]:
            return None  # FOR ALL TABLES: every table is published already
        rows = yield Step(S.PUBLISHED_TABLES, (S.PUBLICATION, schema))
        published = {str(r[0]) for r in rows}
        name = sql.Identifier(S.PUBLICATION)
        for table in tables:
            qt = sql.Identifier(schema, table)
            if table in channels and table not in published:
                yield _ddl(S.ADD_TO_PUBLICATION, name, qt)
            elif table not in channels and table in published:
                yield _ddl(S.DROP_FROM_PUBLICATION, name, qt)
        return None
