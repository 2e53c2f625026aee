"""A report dataclass as the dict its ``as_dict`` returns (for JSON output)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def field_dict(report: Any, **shown: Any) -> dict[str, Any]:
    """Every field of the dataclass instance ``report`` by name, in declaration order:
    its value as it is, or as ``shown`` gives it (a time as ISO text, a rounded
    number, a copy)."""
    return {
        f.name: shown[f.name] if f.name in shown else getattr(report, f.name)
        for f in fields(report)
    }
