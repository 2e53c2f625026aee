"""Attacks on each trust boundary (see docs/security.md)."""
