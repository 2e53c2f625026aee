"""Settings shared by every saver, store and history: :class:`PersistenceConfig`."""

from __future__ import annotations

import difflib
import inspect
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from haive_langgraph.db._identifiers import validate_identifier
from haive_langgraph.errors import ConfigurationError

PoolerMode = Literal["auto", "none", "session", "transaction"]
"""Which connection pooler sits in front of the server: ``"auto"`` (guessed from
the DSN: Supabase's port 6543 is its transaction pooler), ``"none"``,
``"session"`` or ``"transaction"`` (no prepared statements, no startup options)."""

# Where one replica DSN of a comma-separated list ends: at a comma followed by
# the start of another DSN (a URI or a key=value pair), so that the host lists
# of multi-host DSNs ("postgresql://h1,h2/db", "host=h1,h2") stay whole.
_NEXT_DSN = re.compile(r",\s*(?=postgres(?:ql)?(?:\+\w+)?://|[A-Za-z_]+\s*=)", re.IGNORECASE)


class PersistenceConfig(BaseSettings):
    """Connection and server settings, read from arguments or ``HAIVE_*`` variables.

    Every field can be given as a keyword argument or as an environment
    variable named ``HAIVE_<FIELD>`` (``HAIVE_DATABASE_URL``,
    ``HAIVE_POOL_MAX_SIZE`` ...). ``DATABASE_URL`` is read as a fallback for
    ``database_url``.

    An unknown keyword argument (``pool_max_sise=99``) raises
    :class:`~haive_langgraph.errors.ConfigurationError` naming it and the
    closest option. Unknown ``HAIVE_*`` variables are ignored: the prefix is
    shared with settings other parts read (``HAIVE_ENCRYPTION_KEYS``,
    ``HAIVE_CACHE_SECRET`` ...), and a process's environment is not ours to
    police.

    Attributes:
        database_url: PostgreSQL DSN. ``None`` uses the embedded server.
        schema_name: Schema our tables live in (``HAIVE_SCHEMA``). A plain
            identifier; default ``haive``.
        pool_min_size: Connections a pool keeps open.
        pool_max_size: Most connections a pool opens.
        pool_timeout: Seconds to wait for a pooled connection before failing.
        pool_max_idle: Seconds an idle pooled connection is kept; below the
            idle reaping of typical cloud poolers and load balancers.
        connect_timeout: Seconds to wait for a new connection.
        statement_timeout: Server ``statement_timeout`` in milliseconds.
        lock_timeout: Server ``lock_timeout`` in milliseconds.
        idle_in_transaction_session_timeout: Server setting, in milliseconds.
        application_name: Reported in ``pg_stat_activity``.
        pooler_mode: ``"auto"`` treats port 6543 (Supabase's transaction
            pooler) as a transaction-mode pooler; ``"transaction"`` forces
            pooler safety (no prepared statements, no session state),
            ``"session"`` or ``"none"`` turn it off.
        tenant_id: Default tenant for savers and stores built from this config.
        replica_urls: DSNs of streaming read replicas of ``database_url``
            (``HAIVE_REPLICA_URLS``: comma-separated, or a JSON list). Reads
            that may lag go to them; see ``docs/scaling.md``.
        max_replica_lag: Seconds a replica may be behind before reads skip it.
        replica_wait: Seconds a read that must see this instance's own
            writes waits for a replica to replay them before it goes to the
            primary instead.
        replica_retry_after: Seconds a replica that failed is left alone
            before it is tried again (also the period of its warning).
        replica_timeout: Seconds to wait for a replica connection before
            skipping that replica: what a replica that stops costs the one
            read that finds it gone.
        embedded_data_dir: Where the embedded server keeps its data
            (``HAIVE_EMBEDDED_DATA_DIR``; default: the user data directory).
        strict_serialisation: Checkpointers serialise every value on each
            put instead of skipping list items they wrote before
            (``HAIVE_STRICT_SERIALISATION``: ``1``, ``true``, ``yes`` or ``on``).
        echo_sql: Log every call and statement of the objects built from this
            config at INFO on their component's logger, with the SQL text
            (never parameter values), whatever the loggers' levels
            (``HAIVE_ECHO_SQL``); see ``docs/observability.md``.
    """

    model_config = SettingsConfigDict(
        env_prefix="HAIVE_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        # A validation error quotes the value it refused; DSNs hold passwords.
        hide_input_in_errors=True,
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HAIVE_DATABASE_URL", "DATABASE_URL"),
    )
    schema_name: str = Field(
        default="haive", validation_alias=AliasChoices("HAIVE_SCHEMA", "HAIVE_SCHEMA_NAME")
    )
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    pool_timeout: float = Field(default=30.0, gt=0)
    pool_max_idle: float = Field(default=240.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    statement_timeout: int | None = Field(default=None, ge=0)
    lock_timeout: int | None = Field(default=None, ge=0)
    idle_in_transaction_session_timeout: int | None = Field(default=60_000, ge=0)
    application_name: str = "haive-langgraph"
    pooler_mode: PoolerMode = "auto"
    tenant_id: str = ""
    replica_urls: Annotated[tuple[str, ...], NoDecode] = ()
    max_replica_lag: float = Field(default=10.0, gt=0)
    replica_wait: float = Field(default=0.5, ge=0)
    replica_retry_after: float = Field(default=30.0, gt=0)
    replica_timeout: float = Field(default=1.0, gt=0)
    embedded_data_dir: Path | None = None
    strict_serialisation: bool = False
    echo_sql: bool = False

    def __init__(self, **values: Any) -> None:
        _reject_unknown_options(type(self), values)
        super().__init__(**values)

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_replicas(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"HAIVE_REPLICA_URLS is not a valid JSON list: {exc}") from None
        return tuple(part.strip() for part in _NEXT_DSN.split(text) if part.strip())

    @field_validator("embedded_data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: Any) -> Any:
        # An empty variable means "not set", as it always has.
        if isinstance(value, str):
            return Path(value).expanduser() if value else None
        return value

    @field_validator("strict_serialisation", "echo_sql", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        # Any other text turns it off, as the variable always did.
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return value

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        return validate_identifier(value, what="schema name")

    @model_validator(mode="after")
    def _check_pool_sizes(self) -> PersistenceConfig:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"pool_min_size ({self.pool_min_size}) is larger than "
                f"pool_max_size ({self.pool_max_size})"
            )
        return self


# BaseSettings' own keyword arguments (``_env_file``, ``_secrets_dir`` ...).
_SETTINGS_ARGUMENTS = frozenset(
    name for name in inspect.signature(BaseSettings.__init__).parameters if name.startswith("_")
)


def _reject_unknown_options(cls: type[BaseSettings], values: dict[str, Any]) -> None:
    """Refuse keyword arguments that are no option, naming each and its closest match
    (the values are never shown: a DSN holds a password)."""
    options = sorted(cls.model_fields)
    known = set(options) | _SETTINGS_ARGUMENTS
    for info in cls.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, str):
            known.add(alias)
        elif isinstance(alias, AliasChoices):
            known.update(c for c in alias.choices if isinstance(c, str))
    unknown = [name for name in values if name not in known]
    if not unknown:
        return
    named = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
        named.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigurationError(
        f"{cls.__name__} has no option{'s' if len(named) > 1 else ''} {', '.join(named)}; "
        f"its options are: {', '.join(options)}"
    )
