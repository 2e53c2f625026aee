"""What each migration statement locks, read from the statement itself (``migrate --plan``).

PostgreSQL takes a table lock whose mode depends on the command (see the
"Explicit Locking" chapter of its manual); what matters to an operator is
which table, which mode, what that mode blocks, and for how long. A
``CREATE INDEX`` holds ``SHARE`` (writes wait) for the whole build, its
``CONCURRENTLY`` form ``SHARE UPDATE EXCLUSIVE`` (writes go on); ``ALTER
TABLE ... ADD COLUMN`` takes ``ACCESS EXCLUSIVE`` but, without a volatile
default, only for a catalog change, while a volatile default, a type change
or ``SET NOT NULL`` keeps it for a rewrite or a scan of the table; an
``UPDATE`` in a migration's transaction keeps every row it changed locked
until the commit, a backfill only one batch's rows.

:func:`describe_statement` is a classifier over our migration statements'
shapes, not a SQL parser: a statement it does not recognise is reported as
``ACCESS EXCLUSIVE`` for as long as it runs, the worst case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from haive_langgraph.db._migrations import MigrationKind

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"

# What each mode makes others wait for (the modes we report, weakest first).
BLOCKS = {
    ROW_EXCLUSIVE: "no reader; writers of the rows it changes",
    SHARE_UPDATE_EXCLUSIVE: "schema changes, VACUUM and other index builds; not reads or writes",
    SHARE: "writes (reads go on)",
    SHARE_ROW_EXCLUSIVE: "writes (reads go on)",
    ACCESS_EXCLUSIVE: "reads and writes",
}
_STRENGTH = list(BLOCKS)

BRIEF = "brief (catalog change)"

# Defaults evaluated per row: adding a column with one rewrites the table.
_VOLATILE = re.compile(
    r"\b(random|gen_random_uuid|uuid_generate_v[14]|clock_timestamp|timeofday|nextval)\s*\(",
    re.IGNORECASE,
)
_NAME = r"(?:ONLY\s+)?(?:IF\s+(?:NOT\s+)?EXISTS\s+)?\{schema\}\.([a-z_][a-z0-9_]*)"


@dataclass(frozen=True, slots=True)
class StatementLock:
    """What one statement locks and for how long.

    Attributes:
        action: The command (``"CREATE INDEX"``, ``"ALTER TABLE ADD COLUMN"`` ...).
        table: The existing table it locks, ``None`` when it locks none.
        lock: The PostgreSQL lock mode taken on ``table`` (``None``: none).
        blocks: What waits while the lock is held.
        duration: How long the lock is held.
    """

    action: str
    table: str | None
    lock: str | None
    blocks: str
    duration: str


def _lock(action: str, table: str | None, mode: str, duration: str) -> StatementLock:
    return StatementLock(action, table, mode, BLOCKS[mode], duration)


def _free(action: str) -> StatementLock:
    return StatementLock(action, None, None, "nothing", "no table lock")


def _normal(statement: str) -> str:
    text = re.sub(r"--[^\n]*", " ", statement)
    return " ".join(text.split())


def describe_statement(statement: str, kind: MigrationKind = "transaction") -> StatementLock:
    """What ``statement`` (a migration template, ``{schema}.name``) locks when it runs.

    Args:
        statement: The statement.
        kind: Its migration's kind: a ``"backfill"`` holds row locks for one
            batch; a ``"transaction"`` data change holds them until the commit.
    """
    text = _normal(statement)
    upper = text.upper()
    if m := re.match(r"CREATE (?:UNIQUE )?INDEX CONCURRENTLY .*? ON " + _NAME, text, re.I):
        return _lock(
            "CREATE INDEX CONCURRENTLY",
            m.group(1),
            SHARE_UPDATE_EXCLUSIVE,
            "the build (two scans of the table; waits for older transactions first)",
        )
    if m := re.match(r"CREATE (?:UNIQUE )?INDEX .*? ON " + _NAME, text, re.I):
        return _lock("CREATE INDEX", m.group(1), SHARE, "the whole build (one scan and sort)")
    if m := re.match(r"CREATE (?:UNLOGGED )?TABLE " + _NAME, text, re.I):
        if ref := re.search(r"REFERENCES \{schema\}\.([a-z_][a-z0-9_]*)", text, re.I):
            return _lock(
                "CREATE TABLE (with a foreign key)", ref.group(1), SHARE_ROW_EXCLUSIVE, BRIEF
            )
        return _free("CREATE TABLE (a new table)")
    if m := re.match(r"ALTER TABLE " + _NAME + r" (.*)$", text, re.I):
        return _alter_table(m.group(1), m.group(2))
    if m := re.match(r"(?:CREATE (?:OR REPLACE )?|DROP )TRIGGER .*? ON " + _NAME, text, re.I):
        if upper.startswith("DROP"):
            return _lock("DROP TRIGGER", m.group(1), ACCESS_EXCLUSIVE, BRIEF)
        return _lock("CREATE TRIGGER", m.group(1), SHARE_ROW_EXCLUSIVE, BRIEF)
    if m := re.match(r"(?:CREATE|DROP|ALTER) POLICY .*? ON " + _NAME, text, re.I):
        return _lock(upper.split()[0] + " POLICY", m.group(1), ACCESS_EXCLUSIVE, BRIEF)
    if m := re.match(r"DROP TABLE " + _NAME, text, re.I):
        return _lock("DROP TABLE", m.group(1), ACCESS_EXCLUSIVE, BRIEF)
    if re.match(r"DROP INDEX CONCURRENTLY", text, re.I):
        return _lock("DROP INDEX CONCURRENTLY", None, SHARE_UPDATE_EXCLUSIVE, "the drop")
    if re.match(r"DROP INDEX", text, re.I):
        return _lock("DROP INDEX", None, ACCESS_EXCLUSIVE, BRIEF)
    if m := re.match(r"(?:UPDATE|DELETE FROM|INSERT INTO) " + _NAME, text, re.I):
        action = upper.split()[0]
        if kind == "backfill":
            return _lock(
                f"{action} in batches", m.group(1), ROW_EXCLUSIVE, "one batch's rows, per batch"
            )
        return _lock(
            action, m.group(1), ROW_EXCLUSIVE, "every row it changes, until the migration commits"
        )
    if m := re.match(
        r"(CREATE|ALTER|DROP) (?:OR REPLACE )?(FUNCTION|PROCEDURE|SEQUENCE|TYPE|SCHEMA|EXTENSION)"
        r"|(COMMENT|GRANT|REVOKE) ",
        upper,
    ):
        return _free(m.group(3) or f"{m.group(1)} {m.group(2)}")
    return _lock(upper.split()[0] if upper else "?", None, ACCESS_EXCLUSIVE, "unknown: assume all")


def _alter_table(table: str, actions: str) -> StatementLock:
    """The strongest lock of an ``ALTER TABLE``'s subcommands, and the longest hold."""
    found = [_subcommand(part.strip()) for part in _split_commas(actions)]
    mode = max((m for m, _, _ in found), key=_STRENGTH.index)
    names = ", ".join(dict.fromkeys(n for _, n, _ in found))
    slow = [d for _, _, d in found if d != BRIEF]
    return _lock(f"ALTER TABLE {names}", table, mode, slow[0] if slow else BRIEF)


def _subcommand(part: str) -> tuple[str, str, str]:
    upper = part.upper()
    if upper.startswith("ADD COLUMN") or (
        upper.startswith("ADD ")
        and not re.match(r"ADD (CONSTRAINT|CHECK|FOREIGN|UNIQUE|PRIMARY|EXCLUDE)", upper)
    ):
        rewrite = (
            bool(_VOLATILE.search(part))
            or " STORED" in upper
            or " IDENTITY" in upper
            or re.search(r"\b(BIG|SMALL)?SERIAL\b", upper) is not None
        )
        if rewrite:
            return ACCESS_EXCLUSIVE, "ADD COLUMN", "a rewrite of the whole table (volatile default)"
        return ACCESS_EXCLUSIVE, "ADD COLUMN", BRIEF
    if re.match(r"ALTER (COLUMN )?\S+ (SET DATA )?TYPE ", upper):
        return ACCESS_EXCLUSIVE, "ALTER COLUMN TYPE", "a rewrite of the whole table"
    if re.match(r"ALTER (COLUMN )?\S+ SET NOT NULL", upper):
        return (
            ACCESS_EXCLUSIVE,
            "SET NOT NULL",
            "a scan of the whole table (none with a valid CHECK)",
        )
    if re.match(r"ALTER (COLUMN )?\S+ SET (STATISTICS|STORAGE|COMPRESSION)", upper):
        return SHARE_UPDATE_EXCLUSIVE, "ALTER COLUMN SET", BRIEF
    if "FOREIGN KEY" in upper:
        scan = BRIEF if "NOT VALID" in upper else "a scan of both tables to validate"
        return SHARE_ROW_EXCLUSIVE, "ADD FOREIGN KEY", scan
    if upper.startswith("ADD") and " CHECK" in f" {upper}":
        scan = BRIEF if "NOT VALID" in upper else "a scan of the whole table to validate"
        return ACCESS_EXCLUSIVE, "ADD CHECK", scan
    if upper.startswith("ADD") and re.search(r"\b(UNIQUE|PRIMARY KEY)\b", upper):
        build = BRIEF if "USING INDEX" in upper else "the build of its index"
        return ACCESS_EXCLUSIVE, "ADD UNIQUE/PRIMARY KEY", build
    if upper.startswith("VALIDATE CONSTRAINT"):
        return SHARE_UPDATE_EXCLUSIVE, "VALIDATE CONSTRAINT", "a scan of the table (writes go on)"
    if re.match(r"(ENABLE|DISABLE) (ALWAYS |REPLICA )?TRIGGER", upper):
        return SHARE_ROW_EXCLUSIVE, "ENABLE/DISABLE TRIGGER", BRIEF
    if re.match(r"SET \(|RESET \(", upper):
        return SHARE_UPDATE_EXCLUSIVE, "SET (storage parameters)", BRIEF
    if re.match(r"SET (LOGGED|UNLOGGED)|SET TABLESPACE", upper):
        return ACCESS_EXCLUSIVE, " ".join(upper.split()[:2]), "a rewrite of the whole table"
    words = upper.split()
    return ACCESS_EXCLUSIVE, " ".join(words[:4] if "ROW" in words[:3] else words[:2]), BRIEF


def _split_commas(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "'":
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
        elif not quote and depth == 0 and char == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]
