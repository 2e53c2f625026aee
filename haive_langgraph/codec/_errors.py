"""Errors specific to the codec (defined with every other error in :mod:`haive_langgraph.errors`)."""

from __future__ import annotations

from haive_langgraph.errors import DecompressionLimitError, KeyDestroyedError

__all__ = ["DecompressionLimitError", "KeyDestroyedError"]
