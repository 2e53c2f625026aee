"""Settings shared by every saver, store and history: :class:`PersistenceConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from haive_langgraph.db._identifiers import validate_identifier

PoolerMode = Literal["auto", "none", "session", "transaction"]


class PersistenceConfig(BaseSettings):
    """Connection and server settings, read from arguments or ``HAIVE_*`` variables.

    Every field can be given as a keyword argument or as an environment
    variable named ``HAIVE_<FIELD>`` (``HAIVE_DATABASE_URL``,
    ``HAIVE_POOL_MAX_SIZE`` ...). ``DATABASE_URL`` is read as a fallback for
    ``database_url``.

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
    """

    model_config = SettingsConfigDict(
        env_prefix="HAIVE_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
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
