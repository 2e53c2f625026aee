"""What an import did and what its verification found: the typed reports and progress events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from haive_langgraph.ops._fields import field_dict

SourceKind = Literal["langgraph", "chat-history", "pgvector"]

# Mismatches a verification keeps (with their total count): enough to see the
# pattern without printing a whole damaged database.
MAX_MISMATCHES = 50


@dataclass(slots=True)
class Counts:
    """Rows of one kind.

    Attributes:
        source: Found in the source (what the import reads).
        imported: Written into the target by this run.
        skipped: Already in the target (an earlier run): left as they are.
        dropped: Not importable, and so left out on purpose (an expired
            store item, a pending write whose checkpoint does not exist).
    """

    source: int = 0
    imported: int = 0
    skipped: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return field_dict(self)


@dataclass(slots=True)
class VerifyReport:
    """A comparison of the source with the target.

    Attributes:
        ok: Everything compared is identical.
        checked: Rows compared, per kind.
        mismatches: What differs (at most 50 described), each naming the row.
        mismatch_count: How many differences there are in all.
        seconds: Time taken.
    """

    ok: bool = True
    checked: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    mismatch_count: int = 0
    seconds: float = 0.0

    def count(self, kind: str, n: int = 1) -> None:
        self.checked[kind] = self.checked.get(kind, 0) + n

    def mismatch(self, text: str) -> None:
        self.ok = False
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_MISMATCHES:
            self.mismatches.append(text)

    def as_dict(self) -> dict[str, Any]:
        return field_dict(
            self,
            checked=dict(self.checked),
            mismatches=list(self.mismatches),
            seconds=round(self.seconds, 3),
        )


@dataclass(slots=True)
class ImportReport:
    """What an import did.

    Attributes:
        kind: ``"langgraph"``, ``"chat-history"`` or ``"pgvector"``.
        source: ``host:port/dbname`` of the source (never a password).
        tenant_id: Tenant the rows went to.
        dry_run: Nothing was written; ``imported`` counts what would be.
        counts: Per kind of row (``threads``, ``checkpoints``, ``writes``,
            ``store_items``, ``store_vectors``, ``sessions``, ``messages``,
            ``documents``).
        notes: What the reader noticed (the source's schema version, rows
            left out and why).
        seconds: Time the import took (verification excluded).
        verification: The comparison run after the import, when asked.
    """

    kind: SourceKind
    source: str
    tenant_id: str
    dry_run: bool = False
    counts: dict[str, Counts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    verification: VerifyReport | None = None

    def of(self, kind: str) -> Counts:
        """The counts of a kind of row (created at zero)."""
        counts = self.counts.get(kind)
        if counts is None:
            counts = self.counts[kind] = Counts()
        return counts

    @property
    def ok(self) -> bool:
        """No verification ran, or it found the target identical to the source."""
        return self.verification is None or self.verification.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "tenant_id": self.tenant_id,
            "dry_run": self.dry_run,
            "counts": {k: v.as_dict() for k, v in self.counts.items()},
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "verification": None if self.verification is None else self.verification.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """One progress report of an import or a verification.

    Attributes:
        phase: What is being done (``"checkpoints"``, ``"store"``,
            ``"messages"``, ``"documents"``; ``"verify checkpoints"`` ...).
        done: Source rows handled so far in this phase.
        total: Source rows of the phase, when known.
        detail: The thread, session or namespace being worked on.
    """

    phase: str
    done: int
    total: int | None
    detail: str = ""


ProgressCallback = Callable[[ImportProgress], None]
"""What ``progress=`` takes: a function called with an :class:`ImportProgress` as the import advances."""


def no_progress(event: ImportProgress) -> None:
    """The default progress callback: nothing."""
