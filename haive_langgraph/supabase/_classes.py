"""What turns a PostgreSQL class into its Supabase class, written once.

A Supabase class is its PostgreSQL class with :class:`SupabaseSync` (or
:class:`SupabaseAsync`) in front and a :class:`SupabaseFeature` saying which
feature it is::

    class SupabaseStore(SupabaseSync, PostgresStore):
        feature = SupabaseFeature(S.COMPONENT, default_channels=("items",), ...)

The mixin adds the Supabase options to the constructor (``conn=None`` reads
the environment), ``from_env``, and a ``setup(force=...)`` that runs the
feature's own setup and then the Supabase one; ``from_conn_string`` is the
PostgreSQL class's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, cast

from haive_langgraph.db._call import Call
from haive_langgraph.db._config import PersistenceConfig
from haive_langgraph.db._migrations import Component
from haive_langgraph.supabase._env import connect_args
from haive_langgraph.supabase._schema import SupabaseSettings


@dataclass(frozen=True, slots=True)
class SupabaseFeature:
    """The feature a Supabase class sets up.

    Attributes:
        component: The feature's entry in the registry of tables: its
            migrations, and its tables (those whose rows belong to tenants
            get the grants, policies and realtime setup).
        default_channels: Realtime channels published when
            ``enable_realtime=True`` names none.
        leading_args: Constructor arguments before ``conn`` (a chat
            history's ``session_id``).
    """

    component: Component
    default_channels: tuple[str, ...]
    leading_args: int = 0

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables whose grants, policies and realtime setup manages."""
        return self.component.tenant_tables


class _SupabaseOptions:
    """The constructor and ``from_env`` of every Supabase class."""

    feature: ClassVar[SupabaseFeature]
    supabase: SupabaseSettings
    """The validated Supabase options of this instance."""

    def __init__(
        self,
        *args: Any,
        enable_rls: bool = False,
        tenant_claim: str = "sub",
        enable_realtime: bool = False,
        realtime_channels: Sequence[str] | None = None,
        replica_identity: Literal["default", "full"] = "default",
        config: PersistenceConfig | None = None,
        **options: Any,
    ) -> None:
        feature, n = self.feature, self.feature.leading_args
        self.supabase = SupabaseSettings.build(
            feature.tables,
            enable_rls=enable_rls,
            tenant_claim=tenant_claim,
            enable_realtime=enable_realtime,
            realtime_channels=realtime_channels,
            default_channels=feature.default_channels,
            replica_identity=replica_identity,
        )
        if len(args) > n + 1:
            raise TypeError(
                f"{type(self).__name__}() takes {n + 1} positional arguments; pass the "
                "others by name"
            )
        conn = args[n] if len(args) > n else options.pop("conn", None)
        conn, config = connect_args(conn, config)
        cast(Any, super()).__init__(*args[:n], conn=conn, config=config, **options)

    @classmethod
    def from_env(cls, *args: Any, **options: Any) -> Self:
        """An instance on the Supabase database the environment names (close it).

        Args:
            *args: Positional arguments before ``conn`` (a history's ``session_id``).
            **options: Keyword arguments of the constructor.

        Raises:
            ConfigurationError: naming each missing variable (see
                :func:`~haive_langgraph.supabase.supabase_dsn`).
        """
        return cls(*args, conn=None, **options)

    def _supabase_call(self, force: bool) -> Call[None]:
        """The Supabase setup; refuses schema ``public`` without RLS before anything runs."""
        schema: str = cast(Any, self).schema
        self.supabase.check_schema(schema, force=force)
        return Call(lambda: self.supabase.setup_op(schema), transaction=True)


class SupabaseSync(_SupabaseOptions):
    """Supabase options and setup for a sync PostgreSQL class (put it first in the bases)."""

    def setup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime.

        Args:
            force: Set up in schema ``public`` without ``enable_rls``
                (refused otherwise, with a loud warning when forced).

        Raises:
            ConfigurationError: ``public`` without RLS and not forced, or
                ``enable_rls`` on a database without Supabase's auth schema.
        """
        call = self._supabase_call(force)
        cast(Any, super()).setup()
        cast(Any, self)._source.call(call)  # the feature's ConnectionSource


class SupabaseAsync(_SupabaseOptions):
    """Supabase options and setup for an async PostgreSQL class (put it first in the bases)."""

    async def setup(self, *, force: bool = False) -> None:
        """Create or upgrade the tables, then apply grants, policies and realtime
        (see :meth:`SupabaseSync.setup`)."""
        call = self._supabase_call(force)
        await cast(Any, super()).setup()
        await cast(Any, self)._source.call(call)  # the feature's AsyncConnectionSource
