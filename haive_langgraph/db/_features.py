"""What a feature's tables need from everyone else: the one registry of tables.

Each feature declares, once, in its ``_sql.py``, its
:class:`~haive_langgraph.db._migrations.Component`: its migrations and the
:class:`Table` entries of every table they (or its ``setup()``) create, and
the :class:`FramedTable` entries of every column holding codec frames. The
list of components (``haive_langgraph.ops.all_components()``) is then the
one list that migration, tenant erasure, key rotation, backup and restore,
the cache and Supabase's grants and policies iterate (through
``ops._migrate``'s ``tenant_tables()``, ``framed_tables()`` and
``archived_tables()``, or a component's own ``tenant_tables``).
``tests/db/test_registry.py`` migrates every component and fails if a table
of the schema has no entry, or an entry names no table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haive_langgraph.codec import RowContext

__all__ = ["FramedTable", "Table"]


@dataclass(frozen=True, slots=True)
class Table:
    """A table of a component, and what each shared mechanism does with it.

    Attributes:
        name: Table name (in the schema).
        tenant: Its rows belong to tenants: ``tenant_id`` leads its key, its
            migration puts it under the tenant policy (row-level security),
            Supabase grants it to the ``authenticated`` role under that
            policy, and tenant erasure deletes the tenant's rows. Tables that
            merely record a tenant id (the audit log, wrapped tenant keys)
            are not.
        archived: Backups write it and restores accept it. The cache's
            versions are state, not data: no Redis entry may ever be checked
            against versions taken from an archive.
        migrated: Created by the component's migrations; ``False`` for a
            table its feature's ``setup()`` creates (the store's vectors,
            whose column type depends on the configured index).
    """

    name: str
    tenant: bool = True
    archived: bool = True
    migrated: bool = True


@dataclass(frozen=True, slots=True)
class FramedTable:
    """A column whose rows hold codec frames (or plaintext values to encrypt).

    Key rotation rewrites it, ``keys status`` counts its frames by key.
    Exactly one of ``frame_column``, ``json_column`` and ``inline_column``
    is set.

    Attributes:
        name: Table name (in the schema).
        key_columns: Primary key columns and their types (``text``,
            ``bytea``, ``bigint`` or ``text[]``), in order; the scan's cursor.
        context: Builds a frame's row context (its associated data: what it
            is bound to) from the key values (and, for a JSON column, the
            JSON key the sealed value sits under): the function the
            feature's writer uses.
        frame_column: The bytea column holding one frame per row.
        json_column: Or: a JSONB column whose values may be sealed frames.
        inline_column: Or: a JSONB column of plaintext values that an
            encrypting codec moves into encrypted frames (checkpoints'
            ``inline_values``, written by savers that did not encrypt).
        extra_columns: Columns read along and passed to ``context`` after
            the key values (what a frame is bound to besides its key).
        copy_column: A JSONB column that may hold a plaintext copy of the
            whole value (a store that does not encrypt keeps one to filter
            on; an encrypting one keeps none). When a plaintext value is
            encrypted, a copy equal to it is cleared, here and in the same
            column of ``copy_tables`` (same key columns).
        copy_tables: Other tables holding that copy.
        label: Name of this entry in reports and the progress table
            (default: the table's name; two entries may share a table).
    """

    name: str
    key_columns: tuple[tuple[str, str], ...]
    context: Callable[..., RowContext]
    frame_column: str | None = None
    json_column: str | None = None
    inline_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    copy_column: str | None = None
    copy_tables: tuple[str, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        columns = (self.frame_column, self.json_column, self.inline_column)
        if sum(c is not None for c in columns) != 1:
            raise ValueError(
                f"FramedTable {self.key!r} needs exactly one of frame_column, json_column and "
                "inline_column"
            )

    @property
    def key(self) -> str:
        """The entry's name in reports and the progress table."""
        return self.label or self.name

    @property
    def column(self) -> str:
        """The column this entry rewrites."""
        column = self.frame_column or self.json_column or self.inline_column
        assert column is not None
        return column
